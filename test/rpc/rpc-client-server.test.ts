// Our RPC client against our RPC server over real sockets on ::1 (udp6 and tcp6): every reply status end to end,
// authentication, timeouts, AbortSignal, pipelining, UDP retransmission with the duplicate request cache,
// reconnecting, the cap on calls in progress, and multi-fragment records.
import { expect } from 'chai';
import dgram from 'node:dgram';
import {
  AuthStat,
  AuthSys,
  authNone,
  NULL_AUTH,
  RpcAuthError,
  RpcClient,
  RpcError,
  RpcServer,
  type ClientAuth,
  type RpcClientOptions,
  type RpcServerOptions,
  type ServerAuth,
} from '../../src/rpc';
import { writeCallHeader, writeRpcMismatchReply } from '../../src/rpc/message';
import type { Procedure, Service, Transport } from '../../src/rpc/types';
import { XdrWriter } from '../../src/rpc/xdr/runtime';
import {
  ADD1,
  bytesCodec,
  ECHO,
  FAIL,
  MISSING,
  sleep,
  SLOW,
  TEST_PROGRAM,
  testCall,
  testService,
  udpExchange,
} from './util';

async function expectRpcError(p: Promise<unknown>, kind: string): Promise<RpcError> {
  try {
    await p;
  } catch (e) {
    expect(e).to.be.instanceOf(RpcError);
    expect((e as RpcError).kind, (e as Error).message).to.equal(kind);
    return e as RpcError;
  }
  throw new Error(`expected RpcError ${kind}, got success`);
}

describe('rpc client and server over ::1', function () {
  const servers: RpcServer[] = [];
  const clients: RpcClient[] = [];

  async function serve(
    services: Service[] = [testService()],
    options: RpcServerOptions = {},
    port = 0,
    transport?: Transport,
  ): Promise<{ server: RpcServer; port: number }> {
    const server = new RpcServer(options);
    servers.push(server);
    for (const s of services) server.register(s);
    const bound = await server.listen({ host: '::1', port, transport });
    return { server, port: bound[0].port };
  }

  async function connect(
    port: number,
    transport: Transport,
    extra: Partial<Parameters<typeof RpcClient.connect>[0]> = {},
  ): Promise<RpcClient> {
    const c = await RpcClient.connect({
      host: '::1',
      port,
      transport,
      program: TEST_PROGRAM,
      version: 1,
      timeoutMs: 3000,
      ...extra,
    });
    clients.push(c);
    return c;
  }

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await Promise.all(servers.splice(0).map((s) => s.close(100)));
  });

  for (const transport of ['udp', 'tcp'] as const) {
    describe(`${transport}6`, () => {
      it('answers NULL and typed procedures', async () => {
        const { port } = await serve();
        const c = await connect(port, transport);
        await c.ping();
        expect(await c.call(TEST_PROGRAM, 1, ADD1, 41)).to.equal(42);
        expect(Array.from(await c.call(TEST_PROGRAM, 1, ECHO, new Uint8Array([1, 2, 3])))).to.deep.equal([1, 2, 3]);
      });

      it('turns every reply status into a typed error in plain words', async () => {
        const authFail = testService({ ADD1: () => Promise.reject(new RpcAuthError(AuthStat.AUTH_TOOWEAK)) }, 3);
        const { server, port } = await serve([testService(), authFail, testService({}, 5)]);
        const c = await connect(port, transport);

        await expectRpcError(c.call(TEST_PROGRAM + 1, 1, ADD1, 1), 'PROG_UNAVAIL');
        const mm = await expectRpcError(c.call(TEST_PROGRAM, 2, ADD1, 1), 'PROG_MISMATCH');
        expect([mm.low, mm.high]).to.deep.equal([1, 5]);
        expect(mm.message).to.match(/does not serve version 2 of program .*; it serves versions 1 to 5/);
        const pu = await expectRpcError(c.call(TEST_PROGRAM, 1, MISSING, undefined), 'PROC_UNAVAIL');
        expect(pu.message).to.match(/procedure MISSING \(99\)/);
        // ADD1 with an opaque argument: the server's uint decoder leaves bytes over
        const badArgs: Procedure<Uint8Array, number> = { ...ADD1, args: bytesCodec };
        await expectRpcError(c.call(TEST_PROGRAM, 1, badArgs, new Uint8Array(8)), 'GARBAGE_ARGS');
        // and one that is too short to decode at all
        const noArgs: Procedure<void, number> = { ...ADD1, args: { encode() {}, decode() {} } };
        await expectRpcError(c.call(TEST_PROGRAM, 1, noArgs, undefined), 'GARBAGE_ARGS');
        await expectRpcError(c.call(TEST_PROGRAM, 1, FAIL, undefined), 'SYSTEM_ERR');
        const ae = (await expectRpcError(c.call(TEST_PROGRAM, 3, ADD1, 1), 'AUTH_ERROR')) as RpcAuthError;
        expect(ae).to.be.instanceOf(RpcAuthError);
        expect(ae.stat).to.equal(AuthStat.AUTH_TOOWEAK);
        expect(ae.message).to.match(/refused ADD1: authentication failed: .*too weak.*AUTH_TOOWEAK/);

        const stats = server.stats();
        expect(stats.calls['TESTPROG.TESTVERS1.ADD1'][transport]).to.deep.equal({ GARBAGE_ARGS: 2 });
        expect(stats.calls['TESTPROG.TESTVERS1.FAIL'][transport]).to.deep.equal({ SYSTEM_ERR: 1 });
        expect(stats.calls['TESTPROG.TESTVERS3.ADD1'][transport]).to.deep.equal({ AUTH_ERROR: 1 });
        expect(stats.rejected[transport]).to.deep.include({ PROG_UNAVAIL: 1, PROG_MISMATCH: 1 });
      });

      it('hands handlers opaque arguments as copies, not views of the receive buffer', async () => {
        let own = false;
        const { port } = await serve([
          testService({ ECHO: (b: Uint8Array) => ((own = b.buffer.byteLength === b.byteLength), b) }),
        ]);
        const c = await connect(port, transport);
        const back = await c.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(10).fill(7));
        expect(own).to.equal(true);
        expect(back.buffer.byteLength).to.equal(10);
      });

      it('reports a result that does not decode as BAD_REPLY', async () => {
        const { port } = await serve();
        const c = await connect(port, transport);
        const wrongResult: Procedure<number, Uint8Array> = { ...ADD1, result: bytesCodec };
        await expectRpcError(c.call(TEST_PROGRAM, 1, wrongResult, 1000), 'BAD_REPLY');
      });

      it('passes the AUTH_SYS principal to handlers and refuses unknown flavors', async () => {
        const { port } = await serve([
          testService({ ADD1: (_n: number, ctx) => (ctx.principal as { uid: number }).uid }),
        ]);
        const c = await connect(port, transport, {
          auth: new AuthSys({ uid: 4242, gid: 7, machinename: 'tester', gids: [1, 2] }),
        });
        expect(await c.call(TEST_PROGRAM, 1, ADD1, 0)).to.equal(4242);
        const weird: ClientAuth = {
          flavor: 390003,
          credential: () => ({ flavor: 390003, body: new Uint8Array(4) }),
          verifier: () => ({ flavor: 0, body: new Uint8Array(0) }),
        };
        const c2 = await connect(port, transport, { auth: weird });
        const e = (await expectRpcError(c2.call(TEST_PROGRAM, 1, ADD1, 0), 'AUTH_ERROR')) as RpcAuthError;
        expect(e.stat).to.equal(AuthStat.AUTH_REJECTEDCRED);
        // AUTH_NONE's body is undefined (RFC 5531 10.1): a non-empty one is accepted, as libtirpc does
        const noneWithBody: ClientAuth = {
          flavor: 0,
          credential: () => ({ flavor: 0, body: new Uint8Array(4) }),
          verifier: () => ({ flavor: 0, body: new Uint8Array(0) }),
        };
        const c3 = await connect(port, transport, { auth: noneWithBody });
        expect([...(await c3.call(TEST_PROGRAM, 1, ECHO, new Uint8Array([5])))]).to.deep.equal([5]);
      });

      it('times out per call, and aborts on an AbortSignal', async () => {
        const { port } = await serve();
        const c = await connect(port, transport);
        const t0 = Date.now();
        const e = await expectRpcError(c.call(TEST_PROGRAM, 1, SLOW, 1000, { timeoutMs: 100 }), 'TIMEOUT');
        expect(Date.now() - t0).to.be.within(90, 1500);
        expect(e.message).to.match(/no reply from \[::1\]:\d+\/(udp|tcp) to SLOW within 100 ms/);
        const ac = new AbortController();
        setTimeout(() => ac.abort(), 50);
        await expectRpcError(c.call(TEST_PROGRAM, 1, SLOW, 1000, { signal: ac.signal }), 'ABORTED');
        await expectRpcError(c.call(TEST_PROGRAM, 1, SLOW, 1000, { signal: ac.signal }), 'ABORTED');
        expect(c.inFlight).to.equal(0);
        // the client is still usable
        expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      });

      it('pipelines many calls on one socket, answered out of order', async () => {
        const { server, port } = await serve();
        const c = await connect(port, transport);
        const order: number[] = [];
        const slow = c.call(TEST_PROGRAM, 1, SLOW, 200).then((v) => order.push(v));
        const fast = c.call(TEST_PROGRAM, 1, SLOW, 10).then((v) => order.push(v));
        const many = Array.from({ length: 300 }, (_, i) => c.call(TEST_PROGRAM, 1, ADD1, i));
        expect(await Promise.all(many)).to.deep.equal(Array.from({ length: 300 }, (_, i) => i + 1));
        await Promise.all([slow, fast]);
        expect(order).to.deep.equal([10, 200]);
        if (transport === 'tcp') expect(server.stats().connections).to.equal(1);
      });

      it('caps the calls in progress; the rest wait (TCP) or are retransmitted (UDP)', async () => {
        let running = 0;
        let most = 0;
        const svc = testService({
          SLOW: async (ms: number) => {
            most = Math.max(most, ++running);
            await sleep(ms);
            running--;
            return ms;
          },
        });
        const { server, port } = await serve([svc], { maxInFlight: 2 });
        const c = await connect(port, transport, { retransmitMs: 40, retransmitMaxMs: 80 });
        const results = await Promise.all(Array.from({ length: 8 }, () => c.call(TEST_PROGRAM, 1, SLOW, 60)));
        expect(results).to.deep.equal(new Array(8).fill(60));
        expect(most).to.equal(2);
        if (transport === 'udp') expect(server.stats().overloadDrops).to.be.greaterThan(0);
        if (transport === 'udp') {
          // NULL is answered even at the cap (over TCP it waits its turn on the connection)
          const busy = [c.call(TEST_PROGRAM, 1, SLOW, 200), c.call(TEST_PROGRAM, 1, SLOW, 200)];
          await sleep(20);
          await c.ping({ timeoutMs: 150 }); // well before the SLOW calls end
          await Promise.all(busy);
        }
      });
    });
  }

  it('takes a new authentication flavor plugged into both halves', async () => {
    // A toy flavor: the credential body is a token; the server knows one, and signs its replies with the XID.
    const FLAVOR = 0x4000_0001;
    const token = (t: string, signer = 'alice'): ClientAuth => ({
      flavor: FLAVOR,
      credential: () => ({ flavor: FLAVOR, body: Buffer.from(t.padEnd(8)) }),
      verifier: () => NULL_AUTH,
      checkReplyVerifier: (v) => v.flavor === FLAVOR && Buffer.from(v.body).toString().trim() === signer,
    });
    const seenVerifiers: number[] = [];
    const server: ServerAuth = {
      flavor: FLAVOR,
      validate: (cred) =>
        Buffer.from(cred.body).toString().trim() === 'sesame' ? { principal: 'alice' } : AuthStat.AUTH_BADCRED,
      replyVerifier: (principal, xid) => (
        seenVerifiers.push(xid),
        { flavor: FLAVOR, body: Buffer.from(`${principal}`.padEnd(8)) }
      ),
    };
    const { port } = await serve([testService({ ECHO: (_b: Uint8Array, ctx) => Buffer.from(String(ctx.principal)) })], {
      auth: [authNone, server],
    });
    const good = await connect(port, 'tcp', { auth: token('sesame') });
    expect(Buffer.from(await good.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(0))).toString()).to.equal('alice');
    expect(seenVerifiers).to.have.length(1);
    const suspicious = await connect(port, 'tcp', { auth: token('sesame', 'bob') });
    expect(
      ((await expectRpcError(suspicious.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(0)), 'AUTH_ERROR')) as RpcAuthError)
        .stat,
    ).to.equal(AuthStat.AUTH_INVALIDRESP);
    const bad = await connect(port, 'tcp', { auth: token('guess') });
    expect(
      ((await expectRpcError(bad.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(0)), 'AUTH_ERROR')) as RpcAuthError).stat,
    ).to.equal(AuthStat.AUTH_BADCRED);
    // AUTH_SYS is not among this server's flavors
    const sys = await connect(port, 'tcp', { auth: new AuthSys() });
    expect(((await expectRpcError(sys.ping(), 'AUTH_ERROR')) as RpcAuthError).stat).to.equal(
      AuthStat.AUTH_REJECTEDCRED,
    );
  });

  describe('UDP retransmission and the duplicate request cache', () => {
    it('runs a retransmitted call once: duplicates in progress are dropped, later ones get the cached reply', async () => {
      let runs = 0;
      const { server, port } = await serve([
        testService({
          SLOW: async (ms: number) => {
            runs++;
            await sleep(ms);
            return ms;
          },
        }),
      ]);
      const c = await connect(port, 'udp', { retransmitMs: 20, retransmitMaxMs: 40 });
      expect(await c.call(TEST_PROGRAM, 1, SLOW, 250)).to.equal(250);
      expect(runs).to.equal(1);
      const s = server.stats().calls['TESTPROG.TESTVERS1.SLOW'].udp!;
      expect(s.SUCCESS).to.equal(1);
      expect(s.DUPLICATE_DROPPED).to.be.greaterThan(2);

      // A reply lost on the way: the same datagram again gets the cached reply without running the handler.
      const w = new XdrWriter();
      writeCallHeader(w, {
        xid: 777,
        program: TEST_PROGRAM,
        version: 1,
        procedure: SLOW.number,
        credential: { flavor: 0, body: new Uint8Array(0) },
        verifier: { flavor: 0, body: new Uint8Array(0) },
      });
      w.uint(30);
      const sock = dgram.createSocket('udp6');
      await new Promise<void>((r) => sock.bind(0, '::1', () => r()));
      const replies: Buffer[] = [];
      sock.on('message', (m) => replies.push(m));
      const send = () => sock.send(w.toBytes(), port, '::1');
      send();
      await sleep(150);
      send();
      await sleep(100);
      expect(replies).to.have.length(2);
      expect(replies[0].equals(replies[1])).to.equal(true);
      expect(runs).to.equal(2);
      expect(server.stats().calls['TESTPROG.TESTVERS1.SLOW'].udp!.DUPLICATE_REPLAYED).to.equal(1);
      // The same XID with other arguments is another call, not a retransmission.
      w.pos -= 4;
      w.uint(31);
      send();
      await sleep(150);
      expect(runs).to.equal(3);
      sock.close();
    });

    it('runs a call once even when many calls pass while it runs, and tells calls apart past a long credential', async () => {
      let slowRuns = 0;
      // A cache of 2 entries: the ring comes round to the slow call's entry at every other call.
      const { server, port } = await serve(
        [
          testService({
            SLOW: async (ms: number) => {
              slowRuns++;
              await sleep(ms);
              return ms;
            },
          }),
        ],
        { duplicateCacheSize: 2 },
      );
      const sock = dgram.createSocket('udp6');
      await new Promise<void>((r) => sock.bind(0, '::1', () => r()));
      const replies: Buffer[] = [];
      sock.on('message', (m) => replies.push(m));
      const datagram = (xid: number, proc: number, arg: number, credential = NULL_AUTH) =>
        testCall(xid, proc, (w) => w.uint(arg), credential);
      const send = (b: Uint8Array) => sock.send(b, port, '::1');
      try {
        const slow = datagram(1, SLOW.number, 300);
        send(slow);
        await sleep(50);
        for (let x = 2; x < 8; x++) send(datagram(x, ADD1.number, x));
        await sleep(50);
        send(slow);
        await sleep(400);
        expect(slowRuns, 'the retransmission during the call is dropped').to.equal(1);
        expect(server.stats().calls['TESTPROG.TESTVERS1.SLOW'].udp).to.deep.equal({
          SUCCESS: 1,
          DUPLICATE_DROPPED: 1,
        });
        // The same XID and port with another argument after a 340-byte AUTH_SYS credential is another call.
        const cred = new AuthSys({ machinename: 'm'.repeat(255), gids: new Array(16).fill(1) }).credential();
        replies.length = 0;
        send(datagram(9, ADD1.number, 1, cred));
        await sleep(100);
        send(datagram(9, ADD1.number, 41, cred));
        await sleep(100);
        expect(replies.map((r) => r.readUInt32BE(r.length - 4))).to.deep.equal([2, 42]);
      } finally {
        sock.close();
      }
    });

    it('retransmits with backoff until the server answers', async () => {
      // Nothing listens at first; the server comes up on that port while the call is being retransmitted.
      const probe = dgram.createSocket('udp6');
      await new Promise<void>((r) => probe.bind(0, '::1', () => r()));
      const port = probe.address().port;
      probe.close();
      const c = await connect(port, 'udp', { retransmitMs: 30, retransmitMaxMs: 100 });
      const call = c.call(TEST_PROGRAM, 1, ADD1, 9);
      await sleep(250);
      await serve(undefined, {}, port, 'udp');
      expect(await call).to.equal(10);
    });

    it('with failOnIcmpError, gives a call up at once when the port is closed (ICMP port unreachable)', async () => {
      const probe = dgram.createSocket('udp6');
      await new Promise<void>((r) => probe.bind(0, '::1', () => r()));
      const port = probe.address().port;
      probe.close();
      const c = await connect(port, 'udp', { failOnIcmpError: true, timeoutMs: 5000 });
      const t0 = performance.now();
      const e = await expectRpcError(c.call(TEST_PROGRAM, 1, ADD1, 9), 'UNREACHABLE');
      expect(performance.now() - t0).to.be.lessThan(1000);
      expect(e.message).to.match(/ECONNREFUSED/);
    });

    it('a UDP connect the kernel refuses (multicast, link-local without a zone) is UNREACHABLE, naming why', async () => {
      for (const host of ['ff02::1', 'fe80::1']) {
        const e = await expectRpcError(
          RpcClient.connect({ host, port: 3786, transport: 'udp', program: TEST_PROGRAM, version: 1 }),
          'UNREACHABLE',
        );
        expect(e.message).to.match(/cannot reach .*: connect EINVAL/);
      }
    });

    it('decodes an RPC_MISMATCH reply', async () => {
      const fake = dgram.createSocket('udp6');
      await new Promise<void>((r) => fake.bind(0, '::1', () => r()));
      fake.on('message', (m, ri) => {
        const w = new XdrWriter();
        writeRpcMismatchReply(w, m.readUInt32BE(0), 3, 4);
        fake.send(w.toBytes(), ri.port, ri.address);
      });
      const c = await connect(fake.address().port, 'udp');
      const e = await expectRpcError(c.ping(), 'RPC_MISMATCH');
      expect([e.low, e.high]).to.deep.equal([3, 4]);
      expect(e.message).to.match(/does not speak ONC RPC version 2 \(it speaks 3 to 4\)/);
      fake.close();
    });
  });

  describe('TCP', () => {
    it('reconnects and re-sends the calls in flight when the connection is lost', async () => {
      const first = await serve(undefined, {}, 0, 'tcp');
      const c = await connect(first.port, 'tcp', { timeoutMs: 5000 });
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      const inFlight = [
        c.call(TEST_PROGRAM, 1, SLOW, 300),
        c.call(TEST_PROGRAM, 1, SLOW, 301),
        c.call(TEST_PROGRAM, 1, ADD1, 5),
      ];
      await sleep(50);
      await first.server.close(0); // drops the connection with the SLOW calls unanswered
      await sleep(100);
      const second = await serve(undefined, {}, first.port, 'tcp');
      expect(await Promise.all(inFlight)).to.deep.equal([300, 301, 6]);
      expect(second.server.stats().calls['TESTPROG.TESTVERS1.SLOW'].tcp!.SUCCESS).to.equal(2);
    });

    it('fails calls in flight with CLOSED when reconnecting is off, and on close()', async () => {
      const { server, port } = await serve(undefined, {}, 0, 'tcp');
      const c = await connect(port, 'tcp', { reconnect: false });
      const p = c.call(TEST_PROGRAM, 1, SLOW, 500);
      await sleep(50);
      await server.close(0);
      await expectRpcError(p, 'CLOSED');
      const { port: port2 } = await serve(undefined, {}, 0, 'tcp');
      const c2 = await connect(port2, 'tcp');
      const q = c2.call(TEST_PROGRAM, 1, SLOW, 500);
      await c2.close();
      await expectRpcError(q, 'CLOSED');
      await expectRpcError(c2.ping(), 'CLOSED');
    });

    it('fails the calls in flight at once on a reply over maxRecordSize, without sending them again', async () => {
      let runs = 0;
      const { port } = await serve([testService({ ECHO: (b: Uint8Array) => (runs++, b) })], {}, 0, 'tcp');
      const c = await connect(port, 'tcp', { maxRecordSize: 1000 });
      const t0 = performance.now();
      const e = await expectRpcError(c.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(2000)), 'BAD_REPLY');
      expect(e.message).to.match(/too large.*over the maximum of 1000/);
      expect(performance.now() - t0, 'failed at once, not at the timeout').to.be.below(1500);
      expect(runs, 'the call ran once').to.equal(1);
      expect(await c.call(TEST_PROGRAM, 1, ECHO, new Uint8Array(10))).to.deep.equal(new Uint8Array(10));
    });

    it('refuses a fragmentSize no record header can carry when the server is made, not at its first reply', () => {
      for (const fragmentSize of [0, -1, 1.5, 0x80000000, NaN])
        expect(() => new RpcServer({ fragmentSize }), String(fragmentSize)).to.throw(RangeError, /fragmentSize/);
    });

    it('refuses client timings and a fragmentSize that cannot work before connecting: 0 would re-send a UDP call in a tight loop', async () => {
      const bad: [Partial<RpcClientOptions>, RegExp][] = [
        [{ retransmitMs: 0 }, /retransmitMs must be above 0/],
        [{ retransmitMaxMs: -1 }, /retransmitMaxMs/],
        [{ timeoutMs: NaN }, /timeoutMs/],
        [{ fragmentSize: 0 }, /fragmentSize/],
      ];
      for (const [options, why] of bad) {
        const err = await RpcClient.connect({
          host: '::1',
          port: 9,
          transport: 'udp',
          program: TEST_PROGRAM,
          version: 1,
          ...options,
        }).then(
          (c) => (void c.close(), undefined),
          (e: unknown) => e,
        );
        expect(err, JSON.stringify(options)).to.be.instanceOf(RangeError);
        expect((err as Error).message).to.match(why);
      }
    });

    it('sends and receives records in many small fragments', async () => {
      const { port } = await serve(undefined, { fragmentSize: 64 });
      const c = await connect(port, 'tcp', { fragmentSize: 100 });
      const big = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) & 255);
      const back = await c.call(TEST_PROGRAM, 1, ECHO, big);
      expect(Buffer.from(back).equals(Buffer.from(big))).to.equal(true);
    });

    it('refuses to connect where nothing listens, in plain words', async () => {
      const { server, port } = await serve(undefined, {}, 0, 'tcp');
      await server.close(0);
      const e = await expectRpcError(
        RpcClient.connect({ host: '::1', port, transport: 'tcp', program: TEST_PROGRAM, version: 1 }),
        'UNREACHABLE',
      );
      expect(e.message).to.match(/cannot connect to \[::1\]:\d+\/tcp: .*ECONNREFUSED/);
    });
  });

  it('serves IPv4 where an IPv4 address is configured', async () => {
    const server = new RpcServer().register(testService());
    servers.push(server);
    const [udp, tcp] = await server.listen({ host: '127.0.0.1', port: 0 });
    expect(udp.family).to.equal('IPv4');
    for (const [transport, port] of [
      ['udp', udp.port],
      ['tcp', tcp.port],
    ] as const) {
      const c = await RpcClient.connect({ host: '127.0.0.1', port, transport, program: TEST_PROGRAM, version: 1 });
      clients.push(c);
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
    }
  });

  it('answers a call with another RPC version with RPC_MISMATCH', async () => {
    const { port } = await serve();
    const w = new XdrWriter();
    for (const v of [99, 0, 3, TEST_PROGRAM, 1, 0, 0, 0, 0, 0]) w.uint(v);
    const reply = await udpExchange(port, w.toBytes());
    expect(reply).to.not.equal(null);
    expect([0, 4, 8, 12, 16, 20].map((o) => reply!.readUInt32BE(o))).to.deep.equal([99, 1, 1, 0, 2, 2]);
  });

  it('closes gracefully, letting calls in progress finish', async () => {
    const { server, port } = await serve();
    const c = await connect(port, 'tcp');
    const p = c.call(TEST_PROGRAM, 1, SLOW, 150);
    await sleep(30);
    await server.close(2000);
    expect(await p).to.equal(150);
  });
});
