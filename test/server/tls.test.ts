// dstm server with RPC-with-TLS (RFC 9289) as a real process, called by the real dstm commands from real IPv6
// source addresses on lo, by the binding feed, and by a Python ssl peer (test/rpc/support/tls_peer.py): the
// policies, the certificate identities of nodes, administrators and TEPs, the exit codes of each failure, and the
// certificate reload on SIGHUP.
import { expect } from 'chai';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BindingFeed } from '../../src/protocol/binding-feed';
import { DEFAULT_PROGRAM as DSTM_PROGRAM } from '../../src/config/server-schema';
import { EXIT } from '../../src/cli/exit-codes';
import { createLogger } from '../../src/lib/log';
import { RpcError } from '../../src/rpc';
import { checkFeedTls, loadTepConfig } from '../../src/tep/daemon';
import { certDir, type Issued, type TestCa } from '../support/certs';
import { run } from '../rpc/util';
import {
  metricsPortOf,
  loopbackAddresses,
  removeDir,
  runDstm,
  sleep,
  startServer,
  tempDir,
  type ServerProcess,
} from './helpers';

const PEER = join(__dirname, '..', 'rpc', 'support', 'tls_peer.py');

describe('dstm server with RPC-with-TLS (process)', function () {
  this.timeout(60_000);
  const certs = certDir();
  let lo: ReturnType<typeof loopbackAddresses>;
  let A: string;
  let B: string;
  let ca: TestCa;
  let other: TestCa;
  let srv: Issued;
  const id: Record<string, Issued> = {};
  let dir: string;
  let server: ServerProcess | undefined;

  before(() => {
    lo = loopbackAddresses(2);
    [A, B] = lo.addresses;
    ca = certs.ca('dstm test CA');
    other = certs.ca('other CA');
    srv = ca.issue({ cn: 'dstm-server', san: ['IP:::1'] });
    id.nodeA = ca.issue({ cn: 'node-a', san: [`IP:${A}`] });
    id.nodeB = ca.issue({ cn: 'node-b', san: [`IP:${B}`] });
    id.group = ca.issue({ cn: 'lab-nodes' });
    id.admin = ca.issue({ cn: 'ops', san: ['DNS:ops.example'] });
    id.tep = ca.issue({ cn: 'tep1' });
    id.expired = ca.issue({ cn: 'node-a', san: [`IP:${A}`], expired: true });
    id.stranger = other.issue({ cn: 'node-a', san: [`IP:${A}`] });
    id.dnsOnly = ca.issue({ cn: 'dstm-server', san: ['DNS:dstm.example'] });
  });
  after(() => {
    lo.remove();
    certs.remove();
  });
  beforeEach(() => {
    dir = tempDir('tls');
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    server = undefined;
    removeDir(dir);
  });

  async function serve(
    policy: string,
    extra: string[] = [],
    tls: Record<string, unknown> = {},
  ): Promise<ServerProcess> {
    const cfg = join(dir, 'dstm.json');
    writeFileSync(cfg, JSON.stringify({ server: { tls } }));
    const flags =
      policy === 'off'
        ? []
        : ['--tls', policy, '--tls-cert', srv.certFile, '--tls-key', srv.keyFile, '--tls-ca', ca.certFile];
    server = await startServer([
      '--state-dir',
      join(dir, 'state'),
      '--pool',
      '10.93.0.0/24',
      '--config',
      cfg,
      ...flags,
      ...extra,
    ]);
    return server;
  }

  const where = (): string => `[::1]:${server!.port}`;
  const tlsArgs = (who?: Issued, caFile = ca.certFile): string[] => [
    '--tls',
    '--tls-ca',
    caFile,
    ...(who ? ['--tls-cert', who.certFile, '--tls-key', who.keyFile] : []),
  ];
  const request = (local: string, args: string[]) =>
    runDstm(['request', '--server', where(), '--local', local, '--json', ...args]);

  it("mutual: a node whose certificate names its address gets a lease and releases it; another node's certificate is refused", async () => {
    await serve('mutual');
    const ok = await request(A, tlsArgs(id.nodeA));
    expect(ok.code, ok.stderr).to.equal(EXIT.ok);
    expect(JSON.parse(ok.stdout)).to.include({ ipv6: A });
    const wrong = await request(A, tlsArgs(id.nodeB));
    expect(wrong.code, wrong.stderr).to.equal(EXIT.notAllowed);
    const refusal = server!.logs.find((l) => l.msg === 'request refused');
    expect(String(refusal?.why)).to.match(/certificate "CN=node-b" does not name node/);
    const rel = await runDstm(['release', '--server', where(), '--local', A, ...tlsArgs(id.nodeA)]);
    expect(rel.code, rel.stderr).to.equal(EXIT.ok);
  });

  it('mutual: server.tls.nodes lets a certificate act for a prefix; admin and TEP certificates by name', async () => {
    await serve('mutual', [], {
      nodes: [{ name: 'lab-nodes', prefix: `${B}/128` }],
      admin: ['ops.example'],
      teps: ['tep1'],
    });
    expect((await request(B, tlsArgs(id.group))).code).to.equal(EXIT.ok);
    expect((await request(A, tlsArgs(id.group))).code).to.equal(EXIT.notAllowed);
    const list = await runDstm(['leases', 'list', '--server', where(), '--json', ...tlsArgs(id.admin)]);
    expect(list.code, list.stderr).to.equal(EXIT.ok);
    expect(JSON.stringify(JSON.parse(list.stdout))).to.include(B);
    const notAdmin = await runDstm(['leases', 'list', '--server', where(), ...tlsArgs(id.nodeA)]);
    expect(notAdmin.code, notAdmin.stderr).to.equal(EXIT.notAllowed);
    // the binding feed: a TEP certificate follows it, a node's is refused
    const follow = async (who: Issued): Promise<string> => {
      const feed = new BindingFeed({
        servers: [{ host: '::1', port: server!.port }],
        program: DSTM_PROGRAM,
        local: '::1',
        waitMs: 100,
        retryMs: 50,
        tls: { ca: ca.cert, cert: who.cert, key: who.key },
      });
      try {
        return await new Promise<string>((resolve) => {
          feed.once('resync', (info: { size: number }) => resolve(`synced ${info.size}`));
          feed.once('error', (e: Error) => resolve(`error ${e.message}`));
          void feed.start();
        });
      } finally {
        await feed.stop();
      }
    };
    expect(await follow(id.tep)).to.equal('synced 1');
    expect(await follow(id.nodeA)).to.match(/^error .*not allowed/);
  });

  for (const [what, who, pattern] of [
    ['no certificate', undefined, /did not accept this client's certificate|certificate required/],
    ['an expired certificate', 'expired', /did not accept this client's certificate/],
    ['a certificate from another CA', 'stranger', /did not accept this client's certificate/],
  ] as const) {
    it(`mutual: ${what} fails with exit 9 and says why`, async () => {
      await serve('mutual');
      const r = await request(A, tlsArgs(who && id[who]));
      expect(r.code, r.stderr).to.equal(EXIT.tls);
      expect(r.stderr).to.match(pattern);
    });
  }

  it('required: a plain request (UDP or TCP) fails with exit 9 naming --tls; over TLS without a certificate it is served', async () => {
    await serve('required');
    for (const transport of ['udp', 'tcp']) {
      const plain = await request(A, ['--transport', transport]);
      expect(plain.code, plain.stderr).to.equal(EXIT.tls);
      expect(plain.stderr).to.match(/AUTH_TOOWEAK.*requires RPC-with-TLS \(--tls\)/);
    }
    const r = await request(A, tlsArgs());
    expect(r.code, r.stderr).to.equal(EXIT.ok);
  });

  it('opportunistic: plain and TLS requests are both served', async () => {
    await serve('opportunistic');
    expect((await request(A, [])).code).to.equal(EXIT.ok);
    expect((await request(B, tlsArgs())).code).to.equal(EXIT.ok);
  });

  it('a server without TLS, a server certificate for another name, a CA that did not sign it: exit 9 each', async () => {
    await serve('off');
    const off = await request(A, tlsArgs());
    expect(off.code).to.equal(EXIT.tls);
    expect(off.stderr).to.match(/does not offer RPC-with-TLS/);
    await server!.stop('SIGKILL');
    srv = id.dnsOnly;
    try {
      await serve('opportunistic');
    } finally {
      srv = ca.issue({ cn: 'dstm-server', san: ['IP:::1'] });
    }
    const name = await request(A, tlsArgs());
    expect(name.code).to.equal(EXIT.tls);
    expect(name.stderr).to.match(/certificate does not name ::1/);
    const wrongCa = await request(A, tlsArgs(undefined, other.certFile));
    expect(wrongCa.code).to.equal(EXIT.tls);
    expect(wrongCa.stderr).to.match(/does not verify against the CA/);
  });

  it('SIGHUP re-reads the certificate files: new connections get the new certificate', async () => {
    const certFile = join(dir, 'server.pem');
    const keyFile = join(dir, 'server.key');
    copyFileSync(srv.certFile, certFile);
    copyFileSync(srv.keyFile, keyFile);
    const issued = srv;
    srv = { ...srv, certFile, keyFile };
    try {
      await serve('required');
    } finally {
      srv = issued;
    }
    expect((await request(A, tlsArgs())).code).to.equal(EXIT.ok);
    const renewed = other.issue({ cn: 'dstm-server', san: ['IP:::1'] });
    copyFileSync(renewed.certFile, certFile);
    copyFileSync(renewed.keyFile, keyFile);
    server!.proc.kill('SIGHUP');
    await server!.waitFor('configuration reloaded');
    expect((await request(A, tlsArgs())).code).to.equal(EXIT.tls);
    expect((await request(A, tlsArgs(undefined, other.certFile))).code).to.equal(EXIT.ok);
  });

  it('dstm tep --tls checks the server once before starting: a TLS failure is an error, an unreachable server is not', async () => {
    await serve('mutual');
    const log = createLogger({ level: 'error' });
    const tep = (who: Issued | undefined, port = server!.port) =>
      loadTepConfig({
        ipv6: '::1',
        ipv4: '192.0.2.1',
        pool: ['10.93.0.0/24'],
        server: [`[::1]:${port}`],
        tls: true,
        'tls-ca': ca.certFile,
        'tls-cert': who?.certFile,
        'tls-key': who?.keyFile,
      });
    await checkFeedTls(tep(id.tep), log);
    const err = await checkFeedTls(tep(undefined), log).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(RpcError);
    expect((err as RpcError).kind).to.equal('TLS');
    await server!.stop('SIGKILL');
    await checkFeedTls(tep(id.tep), log); // nothing listens: left to the feed's retries
  });

  it('a Python ssl client: probe, STARTTLS, TLS 1.3, then NULL of DSTM version 2 inside TLS; a plain call is refused', async () => {
    const metrics = await metricsPortOf(await serve('mutual', ['--metrics', '[::1]:0']));
    const py = async (args: string[]) => {
      const r = await run(
        'python3',
        [PEER, 'client', '::1', String(server!.port), String(DSTM_PROGRAM), '2', ...args],
        15_000,
      );
      expect(r.code, r.stderr).to.equal(0);
      return JSON.parse(r.stdout);
    };
    const ok = await py(['--ca', ca.certFile, '--cert', id.nodeA.certFile, '--key', id.nodeA.keyFile]);
    expect(ok).to.deep.include({ stage: 'call', version: 'TLSv1.3', alpn: 'sunrpc' });
    expect(ok.reply).to.include({ denied: false, accept: 0 });
    const plain = await py(['--plain']);
    expect(plain.reply).to.include({ denied: true, stat: 5 }); // AUTH_TOOWEAK
    const garbage = await py(['--garbage']);
    expect(garbage).to.include({ stage: 'after-starttls', closed: true });
    await sleep(100);
    const text = await (await fetch(`http://[::1]:${metrics}/metrics`)).text();
    const count = (event: string): number =>
      Number(new RegExp(`^dstm_server_tls_total\\{event="${event}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    expect([count('probe'), count('handshake'), count('failed_error'), count('plain_refused_tcp')]).to.deep.equal([
      2, 1, 1, 1,
    ]);
  });
});
