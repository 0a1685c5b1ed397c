// RPC-with-TLS (RFC 9289) in the RPC runtime, for a program that knows nothing of it: our client against our server
// under each policy, the probe's refusals on the wire, independent peers (test/rpc/support/tls_peer.py, Python's
// ssl module over OpenSSL, as client against our server and as server against our client; gnutls-cli --starttls,
// GnuTLS, as client), a client that sends garbage or nothing after STARTTLS, and a certificate reload that keeps
// established connections.
import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import {
  AuthStat,
  RpcAuthError,
  RpcClient,
  RpcError,
  RpcServer,
  RpcTlsServer,
  type TlsClientOptions,
  type TlsPolicy,
} from '../../src/rpc';
import { AUTH_NONE, AUTH_SYS, readReplyHeader, writeCallHeader } from '../../src/rpc/message';
import { beginRecord, endRecord } from '../../src/rpc/record';
import { AUTH_TLS } from '../../src/rpc/tls';
import type { CallContext } from '../../src/rpc/types';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';
import { certDir, type Issued, type TestCa } from '../support/certs';
import { skipIf } from '../support/skip';
import { until } from '../support/wait';
import { ADD1, ECHO, run, sleep, SLOW, TEST_PROGRAM, tcpConnect, testService, udpExchange } from './util';

const PEER = join(__dirname, 'support', 'tls_peer.py');

function probe(procedure = 0, credBody = new Uint8Array(0), verifierFlavor = AUTH_NONE, xid = 77): Buffer {
  const w = new XdrWriter(128);
  beginRecord(w);
  writeCallHeader(w, {
    xid,
    program: TEST_PROGRAM,
    version: 1,
    procedure,
    credential: { flavor: AUTH_TLS, body: credBody },
    verifier: { flavor: verifierFlavor, body: new Uint8Array(0) },
  });
  if (procedure === 2) w.uint(1);
  return endRecord(w, 1 << 20);
}

function replyOf(rec: Buffer, framed = true) {
  const body = framed ? rec.subarray(4) : rec;
  return readReplyHeader(new XdrReader(new Uint8Array(body.buffer, body.byteOffset, body.length)));
}

async function expectKind(p: Promise<unknown>, kind: string, match?: RegExp): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).to.be.instanceOf(RpcError);
    expect((e as RpcError).kind, (e as Error).message).to.equal(kind);
    if (match) expect((e as Error).message).to.match(match);
    return e as RpcError;
  }
  throw new Error(`expected RpcError ${kind}, got success`);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the Python peer's JSON report, read field by field
async function python(args: string[], timeoutMs = 15_000): Promise<any> {
  const r = await run('python3', [PEER, ...args], timeoutMs);
  expect(r.code, r.stderr).to.equal(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe('RPC-with-TLS (RFC 9289)', function () {
  this.timeout(30_000);
  const certs = certDir();
  let ca: TestCa;
  let other: TestCa;
  let serverCert: Issued;
  let client: Issued;
  let expired: Issued;
  let stranger: Issued;
  const servers: RpcServer[] = [];
  const clients: RpcClient[] = [];
  let seen: CallContext[] = [];

  before(() => {
    ca = certs.ca('test CA');
    other = certs.ca('other CA');
    serverCert = ca.issue({ cn: 'server', san: ['IP:::1', 'IP:127.0.0.1', 'DNS:localhost'] });
    client = ca.issue({ cn: 'node1', san: ['IP:2001:db8::42', 'DNS:node1.example'], subjectExtra: '/OU=nodes' });
    expired = ca.issue({ cn: 'old', san: ['IP:::1'], expired: true });
    stranger = other.issue({ cn: 'stranger', san: ['IP:::1'] });
  });
  after(() => certs.remove());
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await Promise.all(servers.splice(0).map((s) => s.close(100)));
    seen = [];
  });

  async function serve(
    policy: TlsPolicy | null,
    extra: { handshakeTimeoutMs?: number } = {},
  ): Promise<{ server: RpcServer; tls: RpcTlsServer | null; port: number }> {
    const tls =
      policy === null
        ? null
        : new RpcTlsServer({ policy, cert: serverCert.cert, key: serverCert.key, ca: ca.cert, ...extra });
    const server = new RpcServer({ tls: tls ?? undefined }).register(
      testService({
        ADD1: (n: number, ctx: CallContext) => {
          seen.push(ctx);
          return (n + 1) >>> 0;
        },
      }),
    );
    servers.push(server);
    const [b] = await server.listen({ host: '::1', port: 0 });
    return { server, tls, port: b.port };
  }

  async function connect(port: number, tls?: TlsClientOptions, transport: 'tcp' | 'udp' = 'tcp'): Promise<RpcClient> {
    const c = await RpcClient.connect({
      host: '::1',
      port,
      transport,
      program: TEST_PROGRAM,
      version: 1,
      timeoutMs: 3000,
      tls,
    });
    clients.push(c);
    return c;
  }

  describe('our client and our server', () => {
    it('opportunistic: a TLS client and a plain one are both served; the context tells them apart', async () => {
      const { port, server } = await serve('opportunistic');
      const secure = await connect(port, { ca: ca.cert });
      const plain = await connect(port);
      expect(await secure.call(TEST_PROGRAM, 1, ADD1, 41)).to.equal(42);
      expect(await plain.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      expect(seen[0].tls?.protocol).to.equal('TLSv1.3');
      expect(seen[0].tls?.peer).to.equal(null); // no client certificate asked for below mutual
      expect(seen[1].tls ?? null).to.equal(null);
      // pipelined calls inside TLS, records split across TLS records
      const big = new Uint8Array(200_000).map((_, i) => i * 7);
      const results = await Promise.all([
        secure.call(TEST_PROGRAM, 1, ECHO, big),
        ...Array.from({ length: 50 }, (_, i) => secure.call(TEST_PROGRAM, 1, ADD1, i)),
      ]);
      expect(Buffer.from(results[0] as Uint8Array).equals(Buffer.from(big))).to.equal(true);
      expect(results.slice(1)).to.deep.equal(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(server.stats().tls).to.include({ probes: 1, handshakes: 1 });
    });

    it('replies of handlers that finish in the same tick leave in one TLS record', async () => {
      // A relay between client and server counts the TLS records the server sends (5-byte record headers).
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      let waiting = 0;
      const server = new RpcServer({
        tls: new RpcTlsServer({ policy: 'required', cert: serverCert.cert, key: serverCert.key }),
      }).register(testService({ SLOW: async (n: number) => (waiting++, await gate, n) }));
      servers.push(server);
      const [{ port }] = await server.listen({ host: '::1', port: 0, transport: 'tcp' });
      let records = 0;
      const relay = net.createServer((down) => {
        const up = net.connect(port, '::1');
        let pending = Buffer.alloc(0);
        let plain = true; // first the probe's reply, one record-marked RPC record in plain text
        up.on('data', (d: Buffer) => {
          pending = Buffer.concat([pending, d]);
          if (plain && pending.length >= 4 && pending.length >= 4 + (pending.readUInt32BE(0) & 0x7fffffff)) {
            pending = pending.subarray(4 + (pending.readUInt32BE(0) & 0x7fffffff));
            plain = false;
          }
          while (!plain && pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
            if (pending[0] === 23) records++; // application data: every record after the ServerHello in TLS 1.3
            pending = pending.subarray(5 + pending.readUInt16BE(3));
          }
          down.write(d);
        });
        down.on('data', (d) => up.write(d));
        for (const [a, b] of [
          [up, down],
          [down, up],
        ]) {
          a.on('error', () => b.destroy());
          a.on('close', () => b.destroy());
        }
      });
      await new Promise<void>((resolve) => relay.listen(0, '::1', resolve));
      try {
        const c = await connect((relay.address() as net.AddressInfo).port, { ca: ca.cert });
        // the NULL call lets the handshake's session tickets pass before counting
        await c.ping();
        await sleep(50);
        records = 0;
        const calls = Array.from({ length: 20 }, (_, i) => c.call(TEST_PROGRAM, 1, SLOW, i));
        while (waiting < 20) await sleep(5);
        open();
        expect(await Promise.all(calls)).to.deep.equal(Array.from({ length: 20 }, (_, i) => i));
        expect(records).to.equal(1);
      } finally {
        relay.close();
      }
    });

    it('required: plain calls over TCP and UDP are refused with AUTH_TOOWEAK, TLS calls served', async () => {
      const { port, server } = await serve('required');
      const tcp = await connect(port);
      const udp = await connect(port, undefined, 'udp');
      const e1 = (await expectKind(tcp.call(TEST_PROGRAM, 1, ADD1, 1), 'AUTH_ERROR')) as RpcAuthError;
      const e2 = (await expectKind(udp.call(TEST_PROGRAM, 1, ADD1, 1), 'AUTH_ERROR')) as RpcAuthError;
      expect([e1.stat, e2.stat]).to.deep.equal([AuthStat.AUTH_TOOWEAK, AuthStat.AUTH_TOOWEAK]);
      await expectKind(tcp.ping(), 'AUTH_ERROR'); // a plain NULL too: only the probe passes
      const secure = await connect(port, { ca: ca.cert });
      expect(await secure.call(TEST_PROGRAM, 1, ADD1, 9)).to.equal(10);
      expect(server.stats().tls!.plainRefused).to.deep.equal({ udp: 1, tcp: 2 });
    });

    it('mutual: the verified client certificate reaches the handler (subject, SAN, key fingerprint)', async () => {
      const { port } = await serve('mutual');
      const c = await connect(port, { ca: ca.cert, cert: client.cert, key: client.key });
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      const spki = new X509Certificate(client.cert).publicKey.export({ type: 'spki', format: 'der' });
      expect(seen[0].tls?.peer).to.deep.equal({
        subject: 'CN=node1\nOU=nodes',
        commonName: 'node1',
        dnsNames: ['node1.example'],
        ipAddresses: ['2001:db8::42'],
        keyFingerprint: createHash('sha256').update(spki).digest('hex'),
      });
    });

    for (const [what, cert, alert, reason] of [
      ['no client certificate', null, /certificate required/i, 'error'],
      ['an expired client certificate', 'expired', /did not accept this client's certificate/, 'certificate'],
      ['a client certificate from another CA', 'stranger', /did not accept this client's certificate/, 'certificate'],
    ] as const) {
      it(`mutual: ${what} is refused with a TLS error naming the alert`, async () => {
        const { port, server } = await serve('mutual');
        const id = cert === 'expired' ? expired : cert === 'stranger' ? stranger : null;
        const c = await connect(port, { ca: ca.cert, cert: id?.cert, key: id?.key }).catch((e) => e);
        // TLS 1.3: the client finishes its half first; the refusal comes as an alert with the first call, or at once.
        const err = c instanceof RpcClient ? await expectKind(c.call(TEST_PROGRAM, 1, ADD1, 1), 'TLS') : c;
        expect(err).to.be.instanceOf(RpcError);
        expect((err as RpcError).kind).to.equal('TLS');
        expect((err as Error).message).to.match(alert);
        expect(seen).to.have.length(0);
        // A refusal without an alert is believed the second time in a row (the first may be a server going away).
        const tries = reason === 'certificate' ? 2 : 1;
        await until('the failure counted', () => server.stats().tls!.failed[reason] >= tries);
        expect(server.stats().tls!.failed[reason]).to.equal(tries);
      });
    }

    it('TLS asked for over UDP is refused, not made in plain text', async () => {
      const { port } = await serve('opportunistic');
      let err: unknown = null;
      await connect(port, { ca: ca.cert }, 'udp')
        .then((c) => c.call(TEST_PROGRAM, 1, ADD1, 1))
        .catch((e) => (err = e));
      expect(err, 'a call was made').to.be.instanceOf(RangeError);
      expect((err as Error).message).to.match(/TCP only/);
      expect(seen).to.have.length(0);
    });

    it('a server certificate that does not name the address, or from another CA, fails the connect', async () => {
      const { port } = await serve('opportunistic');
      await expectKind(connect(port, { ca: other.cert }), 'TLS', /does not verify against the CA/);
      await expectKind(connect(port, { ca: ca.cert, serverName: 'dstm.example' }), 'TLS', /does not name dstm.example/);
    });

    it('a server without TLS: the probe is refused and the client says so', async () => {
      const { port } = await serve(null);
      await expectKind(
        connect(port, { ca: ca.cert }),
        'TLS',
        /does not offer RPC-with-TLS: it refused the AUTH_TLS probe \(auth_stat 2\)/,
      );
    });

    it('the probe is refused unless on NULL with empty bodies (AUTH_BADCRED / AUTH_BADVERF), and over UDP', async () => {
      const { port } = await serve('opportunistic');
      const cases: [Buffer, number][] = [
        [probe(2), AuthStat.AUTH_BADCRED],
        [probe(0, new Uint8Array([0, 0, 0, 1])), AuthStat.AUTH_BADCRED],
        [probe(0, new Uint8Array(0), AUTH_SYS), AuthStat.AUTH_BADVERF],
      ];
      for (const [msg, stat] of cases) {
        const t = await tcpConnect(port);
        t.sock.write(msg);
        // the whole reply record, as long as its mark says
        const whole = (b: Buffer): boolean => b.length >= 4 && b.length >= 4 + (b.readUInt32BE(0) & 0x7fffffff);
        await until('the whole reply', () => whole(t.received()));
        expect(replyOf(t.received())).to.deep.include({ status: 'AUTH_ERROR', stat });
        t.sock.destroy();
      }
      const udp = await udpExchange(port, probe().subarray(4));
      expect(replyOf(udp!, false)).to.deep.include({ status: 'AUTH_ERROR', stat: AuthStat.AUTH_REJECTEDCRED });
    });

    it('a server that goes away before its first reply is a lost connection (reconnect, resend), not a refusal', async () => {
      // A server that closed a TLS session before any reply on it, once, may have crashed or restarted: the call is
      // sent again on a new connection, as without TLS. (Only a second such close in a row is taken for a refusal of
      // this client's certificate, which Node's servers signal by closing without an alert.)
      let arrived!: () => void;
      const inFlight = new Promise<void>((resolve) => (arrived = resolve));
      const tls = new RpcTlsServer({ policy: 'mutual', cert: serverCert.cert, key: serverCert.key, ca: ca.cert });
      const first = new RpcServer({ tls }).register(
        testService({
          ADD1: () => {
            arrived();
            return new Promise<number>(() => {}); // never answers: the server goes away first
          },
        }),
      );
      servers.push(first);
      const [b] = await first.listen({ host: '::1', port: 0, transport: 'tcp' });
      const c = await connect(b.port, { ca: ca.cert, cert: client.cert, key: client.key });
      const answer = c.call(TEST_PROGRAM, 1, ADD1, 41);
      await inFlight;
      await first.close(0);
      const second = new RpcServer({
        tls: new RpcTlsServer({ policy: 'mutual', cert: serverCert.cert, key: serverCert.key, ca: ca.cert }),
      }).register(testService());
      servers.push(second);
      await second.listen({ host: '::1', port: b.port, transport: 'tcp' });
      expect(await answer).to.equal(42);
    });

    it('reload: new connections get the new certificate, established ones go on', async () => {
      const { port, tls } = await serve('opportunistic');
      const before = await connect(port, { ca: ca.cert });
      expect(await before.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      const renewed = other.issue({ cn: 'server', san: ['IP:::1'] });
      tls!.reload({ cert: renewed.cert, key: renewed.key, ca: other.cert });
      expect(await before.call(TEST_PROGRAM, 1, ADD1, 2)).to.equal(3);
      await expectKind(connect(port, { ca: ca.cert }), 'TLS', /does not verify/);
      const after = await connect(port, { ca: other.cert });
      expect(await after.call(TEST_PROGRAM, 1, ADD1, 3)).to.equal(4);
      expect(() => tls!.reload({ cert: 'garbage', key: renewed.key })).to.throw();
      expect(await (await connect(port, { ca: other.cert })).call(TEST_PROGRAM, 1, ADD1, 4)).to.equal(5);
    });
  });

  describe('a Python ssl peer as client against our server', () => {
    const add1 = ['--proc', '2', '--args', '00000029'];
    for (const policy of ['opportunistic', 'required', 'mutual'] as const) {
      it(`${policy}: probe, STARTTLS, TLS 1.3 with ALPN sunrpc, then a call inside TLS`, async () => {
        const { port } = await serve(policy);
        const withCert = policy === 'mutual' ? ['--cert', client.certFile, '--key', client.keyFile] : [];
        const r = await python([
          'client',
          '::1',
          String(port),
          String(TEST_PROGRAM),
          '1',
          ...add1,
          '--ca',
          ca.certFile,
          ...withCert,
        ]);
        expect(r).to.deep.include({ stage: 'call', version: 'TLSv1.3', alpn: 'sunrpc' });
        expect(r.reply).to.include({ denied: false, accept: 0, results: '0000002a' });
        if (policy === 'mutual') expect(seen[0].tls?.peer?.commonName).to.equal('node1');
      });
    }

    it('mutual without a client certificate: the server ends the session, the call is not served', async () => {
      const { port } = await serve('mutual');
      const r = await python(['client', '::1', String(port), String(TEST_PROGRAM), '1', ...add1, '--ca', ca.certFile]);
      expect(r.stage).to.equal('tls');
      expect(r.error).to.match(/certificate required|EOF|closed/i);
      expect(seen).to.have.length(0);
    });

    it('required and mutual: a plain call is refused with AUTH_TOOWEAK; opportunistic serves it', async () => {
      for (const policy of ['required', 'mutual', 'opportunistic'] as const) {
        const { port } = await serve(policy);
        const r = await python(['client', '::1', String(port), String(TEST_PROGRAM), '1', ...add1, '--plain']);
        if (policy === 'opportunistic') expect(r.reply).to.include({ denied: false, results: '0000002a' });
        else expect(r.reply).to.include({ denied: true, reject: 1, stat: AuthStat.AUTH_TOOWEAK });
      }
    });

    it('garbage instead of a ClientHello: the connection is closed and counted', async () => {
      const { port, server } = await serve('required');
      const r = await python(['client', '::1', String(port), String(TEST_PROGRAM), '1', '--garbage']);
      expect(r).to.include({ stage: 'after-starttls', closed: true });
      await until('the failure counted', () => server.stats().tls!.failed.error > 0);
      expect(server.stats().tls!.failed.error).to.equal(1);
      expect(server.stats().connections).to.equal(0);
    });

    it('a handshake never finished: closed at the deadline', async () => {
      const { port, server } = await serve('required', { handshakeTimeoutMs: 400 });
      const r = await python(['client', '::1', String(port), String(TEST_PROGRAM), '1', '--stall']);
      expect(r).to.include({ stage: 'after-starttls', closed: true });
      expect(r.seconds).to.be.within(0.3, 2);
      expect(server.stats().tls!.failed.timeout).to.equal(1);
    });
  });

  describe("gnutls-cli --starttls (GnuTLS: another TLS stack than Node's OpenSSL) as client against our server", () => {
    before(function () {
      // Without it, spawn's 'error' event would be thrown out of the test and end the whole run.
      skipIf(
        this,
        spawnSync('gnutls-cli', ['--version']).error ? 'gnutls-cli is not installed (gnutls-bin)' : undefined,
      );
    });

    /** A record-marked call of ADD1 (n) or of the probe, as 32-bit words. */
    const record = (words: number[]): Buffer => {
      const b = Buffer.alloc(4 + words.length * 4);
      b.writeUInt32BE((0x80000000 | (words.length * 4)) >>> 0, 0);
      words.forEach((w, i) => b.writeUInt32BE(w >>> 0, 4 + 4 * i));
      return b;
    };

    /**
     * Send the probe in plain text through gnutls-cli's stdin, start TLS with SIGALRM once the reply is out, then
     * send ADD1(41) inside TLS. gnutls-cli writes what it receives to stdout among its own messages: replies are
     * found by their XID and REPLY words.
     */
    async function gnutls(
      port: number,
      extra: string[],
    ): Promise<{ probe: Buffer | null; call: Buffer | null; text: string }> {
      const g = spawn(
        'gnutls-cli',
        ['--starttls', '--alpn=sunrpc', '--x509cafile', ca.certFile, ...extra, '-p', String(port), '::1'],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = Buffer.alloc(0);
      g.stdout.on('data', (b: Buffer) => (out = Buffer.concat([out, b])));
      g.stderr.on('data', (b: Buffer) => (out = Buffer.concat([out, b])));
      const reply = (xid: number): Buffer | null => {
        const at = out.indexOf(Buffer.from([0, 0, 0, xid, 0, 0, 0, 1]));
        return at < 4 ? null : out.subarray(at, at + (out.readUInt32BE(at - 4) & 0x7fffffff));
      };
      // gives up quietly when gnutls-cli is gone or the time is over: the caller checks what came
      const settle = async (what: () => unknown, ms = 5000): Promise<void> => {
        for (const end = Date.now() + ms; !what() && Date.now() < end && g.exitCode === null;) await sleep(20);
      };
      try {
        await settle(() => /Simple Client Mode/.test(String(out)));
        g.stdin.write(record([1, 0, 2, TEST_PROGRAM, 1, 0, AUTH_TLS, 0, AUTH_NONE, 0]));
        await settle(() => reply(1));
        g.kill('SIGALRM');
        await settle(() => /Application protocol|Handshake has failed|Error/i.test(String(out)));
        if (g.exitCode === null) g.stdin.write(record([2, 0, 2, TEST_PROGRAM, 1, 2, AUTH_NONE, 0, AUTH_NONE, 0, 41]));
        await settle(() => reply(2), 2000);
        return { probe: reply(1), call: reply(2), text: String(out) };
      } finally {
        g.kill();
      }
    }

    it('required: STARTTLS, TLS 1.3 with ALPN sunrpc, then ADD1 inside TLS', async () => {
      const { port } = await serve('required');
      const r = await gnutls(port, []);
      expect(replyOf(r.probe!, false)).to.deep.include({ status: 'SUCCESS' });
      expect(
        Buffer.from((replyOf(r.probe!, false) as { verifier: { body: Uint8Array } }).verifier.body).toString(),
      ).to.equal('STARTTLS');
      expect(r.text)
        .to.match(/TLS1\.3/)
        .and.match(/Application protocol: sunrpc/)
        .and.match(/The certificate is trusted/);
      expect(r.call!.readUInt32BE(r.call!.length - 4)).to.equal(42);
    });

    it('mutual: with a client certificate ADD1 is served; without one the server ends the session', async () => {
      const { port } = await serve('mutual');
      const ok = await gnutls(port, ['--x509certfile', client.certFile, '--x509keyfile', client.keyFile]);
      expect(ok.call!.readUInt32BE(ok.call!.length - 4)).to.equal(42);
      expect(seen[0].tls?.peer?.commonName).to.equal('node1');
      const refused = await gnutls(port, []);
      expect(refused.call).to.equal(null);
      expect(seen).to.have.length(1);
    });
  });

  describe('our client against a Python ssl server', () => {
    let peer: ChildProcess | null = null;
    afterEach(() => peer?.kill());

    async function pythonServer(args: string[]): Promise<number> {
      peer = spawn('python3', [PEER, 'server', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      return new Promise((resolve, reject) => {
        peer!.stdout!.on('data', (d: Buffer) => {
          const m = /listening (\d+)\n/.exec((text += String(d)));
          if (m) resolve(Number(m[1]));
        });
        peer!.once('exit', (code) => reject(new Error(`python server exited (${code})`)));
      });
    }

    it('probe, handshake, then calls inside TLS', async () => {
      const port = await pythonServer(['--cert', serverCert.certFile, '--key', serverCert.keyFile]);
      const c = await connect(port, { ca: ca.cert });
      const data = new Uint8Array([1, 2, 3, 4, 5]);
      expect(Buffer.from(await c.call(TEST_PROGRAM, 1, ECHO, data))).to.deep.equal(Buffer.from(data));
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 7)).to.equal(7); // the peer echoes arguments as results
    });

    it('a server that accepts the probe with an empty verifier does not offer TLS', async () => {
      const port = await pythonServer(['--no-tls']);
      await expectKind(connect(port, { ca: ca.cert }), 'TLS', /no STARTTLS verifier/);
    });
  });
});
