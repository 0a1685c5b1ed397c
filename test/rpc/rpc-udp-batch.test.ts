// The batched UDP path of the RPC server (src/rpc/udp-batch.ts, native/udp.c): many calls drained and answered per
// system call, each call still judged on its own (its reply, its counters, the duplicate request cache), a datagram
// that is cut short or malformed dropped without losing its neighbours, and replies sent from the address the call
// came to on a wildcard socket (IPv4 here on 127.0.0.0/8; IPv6 in a throwaway network namespace with two addresses).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { closeSync, existsSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon } from '../../src/lib/addon';
import { RpcClient, RpcServer } from '../../src/rpc';
import { readReplyHeader } from '../../src/rpc/message';
import { BatchUdpSocket, batchedUdpAvailable } from '../../src/rpc/udp-batch';
import { XdrReader } from '../../src/rpc/xdr/runtime';
import { ADD1, ECHO, sleep, SLOW, TEST_PROGRAM, testCall, testService } from './util';
import { tsArgv } from '../support/dstm-procs';
import { skipIf } from '../support/skip';

const call = testCall;

interface Reply {
  xid: number;
  status: string;
  /** The uint result of a SUCCESS reply with one (ADD1, SLOW). */
  value?: number;
  from: string;
}

function parse(m: Buffer, from: string): Reply {
  const r = new XdrReader(m);
  const h = readReplyHeader(r);
  return {
    xid: h.xid,
    status: h.status,
    value: h.status === 'SUCCESS' && r.remaining === 4 ? r.uint() : undefined,
    from,
  };
}

/**
 * Sends every datagram from one socket in the same tick (so they wait in the server's receive queue together and
 * are drained as one batch), then collects replies until `want` have come or `ms` have passed.
 */
async function burst(
  port: number,
  msgs: Uint8Array[],
  want: number,
  opts: { to?: string; from?: string; ms?: number } = {},
): Promise<Reply[]> {
  const to = opts.to ?? '::1';
  const from = opts.from ?? (to.includes(':') ? '::1' : '127.0.0.1');
  const s = dgram.createSocket(to.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((r) => s.bind(0, from, () => r()));
  const replies: Reply[] = [];
  try {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, opts.ms ?? 2000);
      s.on('message', (m, rinfo) => {
        replies.push(parse(m, rinfo.address));
        if (replies.length >= want) {
          clearTimeout(t);
          // a little longer: a reply too many would show
          setTimeout(resolve, 50);
        }
      });
      for (const m of msgs) s.send(m, port, to);
    });
  } finally {
    s.close();
  }
  return replies;
}

describe('rpc server over batched UDP', function () {
  this.timeout(30_000);
  const servers: RpcServer[] = [];

  before(function () {
    skipIf(this, batchedUdpAvailable() ? undefined : 'the addon has no batched UDP (npm ci builds it)');
  });

  async function serve(
    options: ConstructorParameters<typeof RpcServer>[0] = {},
    host = '::1',
    service = testService(),
  ): Promise<{ server: RpcServer; port: number }> {
    const server = new RpcServer(options).register(service);
    servers.push(server);
    const [{ port }] = await server.listen({ host, port: 0, transport: 'udp' });
    return { server, port };
  }

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close(100)));
  });

  describe('the batched socket', () => {
    it('is refused, with its errno, an fd that cannot be watched (as is the device reader), and the event loop carries on', async () => {
      const addon = loadAddon() as {
        udpStart(
          fd: number,
          rx: Uint8Array,
          slot: number,
          meta: Uint32Array,
          lens: Uint32Array,
          batch: number,
          v6: boolean,
          cb: () => void,
        ): unknown;
        startReader(
          fd: number,
          kind: number,
          slots: Uint8Array,
          slot: number,
          headroom: number,
          lens: Uint32Array,
          batch: number,
          proto: number,
          uring: boolean,
          cb: () => void,
        ): unknown;
      };
      const closed = openSync('/dev/null', 'r');
      closeSync(closed);
      expect(() =>
        addon.udpStart(closed, new Uint8Array(8192), 2048, new Uint32Array(64), new Uint32Array(4), 4, true, () => {}),
      )
        .to.throw()
        .with.property('code', 'EBADF');
      const file = openSync(__filename, 'r');
      try {
        // epoll cannot watch a regular file.
        expect(() =>
          addon.startReader(file, 0, new Uint8Array(8192), 2048, 0, new Uint32Array(4), 4, 4, false, () => {}),
        )
          .to.throw()
          .with.property('code', 'EPERM');
      } finally {
        closeSync(file);
      }
      await sleep(20);
    });

    it('drains up to a batch of datagrams per callback, and sends the replies queued by it', async () => {
      const s = await BatchUdpSocket.bind('::1', 0, { batch: 16, slotSize: 2048 });
      const batches: number[] = [];
      const peers = new Set<string>();
      s.onBatch(
        (count) => {
          batches.push(count);
          for (let i = 0; i < count; i++) {
            peers.add(`${s.peerAddress(i)} ${s.peerPort(i)}`);
            s.reply(i, s.datagram(i)); // echo
          }
        },
        (e) => {
          throw e;
        },
      );
      const c = dgram.createSocket('udp6');
      await new Promise<void>((r) => c.bind(0, '::1', () => r()));
      const got: string[] = [];
      const all = new Promise<void>((resolve) =>
        c.on('message', (m, rinfo) => {
          expect([rinfo.address, rinfo.port]).to.deep.equal(['::1', s.port]);
          got.push(m.toString());
          if (got.length === 100) resolve();
        }),
      );
      for (let i = 0; i < 100; i++) c.send(`datagram ${i}`, s.port, '::1');
      await all;
      const cport = c.address().port;
      c.close();
      s.close();
      expect(got.sort()).to.deep.equal(Array.from({ length: 100 }, (_, i) => `datagram ${i}`).sort());
      expect(batches.reduce((a, b) => a + b, 0)).to.equal(100);
      expect(Math.max(...batches)).to.equal(16);
      expect(batches.length).to.be.below(100);
      expect([...peers]).to.deep.equal([`::1 ${cport}`]);
      expect(s.counters).to.deep.equal({ sent: 100, failed: 0, dropped: 0, stalls: 0 });
    });

    it('marks a datagram longer than a slot as truncated, its neighbours intact', async () => {
      const s = await BatchUdpSocket.bind('127.0.0.1', 0, { slotSize: 256 });
      const seen: [number, boolean, string][] = [];
      const done = new Promise<void>((resolve) =>
        s.onBatch(
          (count) => {
            for (let i = 0; i < count; i++)
              seen.push([s.rxLengths[i], s.truncated(i), Buffer.from(s.datagram(i).subarray(0, 5)).toString()]);
            if (seen.length === 3) resolve();
          },
          (e) => {
            throw e;
          },
        ),
      );
      const c = dgram.createSocket('udp4');
      for (const m of ['first', 'x'.repeat(1000), 'third']) c.send(m, s.port, '127.0.0.1');
      await done;
      c.close();
      s.close();
      expect(seen).to.deep.equal([
        [5, false, 'first'],
        [256, true, 'xxxxx'],
        [5, false, 'third'],
      ]);
    });

    it('keeps what the kernel has no room for, and sends it once the socket drains (two namespaces, a slow link)', async function () {
      skipIf(
        this,
        process.getuid?.() !== 0 ? 'needs root' : existsSync('/usr/sbin/tc') ? undefined : 'tc (iproute2) is missing',
      );
      // A: the sender, whose link to B is shaped to 8 Mbit/s, so its send buffer fills; B only has to exist.
      const tag = `rpcub${process.pid.toString(36)}`;
      const [a, b] = [`${tag}a`, `${tag}b`];
      const sh = (cmd: string) =>
        new Promise<string>((resolve, reject) =>
          execFile('sh', ['-c', cmd], { timeout: 20_000 }, (err, stdout, stderr) =>
            err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve(stdout),
          ),
        );
      const sender = `
        const { BatchUdpSocket } = require(${JSON.stringify(join(__dirname, '../../src/rpc/udp-batch'))});
        (async () => {
          const s = await BatchUdpSocket.bind('2001:db8:9::1', 0, { batch: 32, sendQueue: 400 });
          s.onBatch(() => {}, (e) => { throw e; });
          const meta = new Uint32Array(16);
          new Uint8Array(meta.buffer).set(Buffer.from('20010db8000900000000000000000002', 'hex'));
          meta[5] = 9; // discard
          meta[7] = 6;
          for (let i = 0; i < 400; i++) s.send(new Uint8Array(1400), meta);
          const t0 = Date.now();
          while (s.counters.sent + s.counters.dropped + s.counters.failed < 400 && Date.now() - t0 < 10000) await new Promise((r) => setTimeout(r, 20));
          console.log(JSON.stringify(s.counters));
          s.close();
        })();`;
      try {
        await sh(
          [
            `ip netns add ${a}`,
            `ip netns add ${b}`,
            `ip link add va netns ${a} type veth peer name vb netns ${b}`,
            `ip -n ${a} -6 addr add 2001:db8:9::1/64 dev va nodad`,
            `ip -n ${b} -6 addr add 2001:db8:9::2/64 dev vb nodad`,
            `ip -n ${a} link set va up`,
            `ip -n ${b} link set vb up`,
            `ip netns exec ${a} tc qdisc add dev va root tbf rate 8mbit burst 4000 limit 4000000`,
            // resolve B's link-layer address first: datagrams waiting for it would be dropped, not held
            `ip netns exec ${a} ping -6 -c 1 -W 3 2001:db8:9::2 >/dev/null`,
          ].join(' && '),
        );
        const out = await new Promise<string>((resolve, reject) =>
          execFile(
            'ip',
            ['netns', 'exec', a, ...tsArgv('-e', sender)],
            { cwd: join(__dirname, '../..'), timeout: 20_000 },
            (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
          ),
        );
        const counters = JSON.parse(out.trim().split('\n').pop()!);
        expect(counters.stalls, 'the send buffer filled up').to.be.greaterThan(0);
        expect(counters).to.deep.include({ sent: 400, failed: 0, dropped: 0 });
      } finally {
        await sh(`ip netns del ${a}; ip netns del ${b}`).catch(() => undefined);
      }
    });

    it('refuses a port in use like dgram (EADDRINUSE), and frees its port on close', async () => {
      const a = await BatchUdpSocket.bind('::1', 0);
      const err = await BatchUdpSocket.bind('::1', a.port).then(
        () => null,
        (e: NodeJS.ErrnoException) => e,
      );
      expect(err?.code).to.equal('EADDRINUSE');
      expect(err?.message).to.equal(`bind EADDRINUSE ::1:${a.port}`);
      a.close();
      const b = await BatchUdpSocket.bind('::1', a.port);
      expect(b.port).to.equal(a.port);
      b.close();
    });
  });

  it('answers a burst of calls drained together, each with its own reply and counted once', async () => {
    const { server, port } = await serve();
    const msgs: Buffer[] = [];
    for (let i = 1; i <= 300; i++) {
      if (i % 50 === 0)
        msgs.push(call(i, 0)); // NULL
      else if (i % 50 === 1)
        msgs.push(call(i, 77)); // no such procedure
      else msgs.push(call(i, ADD1.number, (w) => w.uint(i)));
    }
    const replies = await burst(port, msgs, 300);
    expect(replies).to.have.length(300);
    const byXid = new Map(replies.map((r) => [r.xid, r]));
    expect(byXid.size).to.equal(300);
    for (let i = 1; i <= 300; i++) {
      const r = byXid.get(i)!;
      if (i % 50 === 0) expect(r.status).to.equal('SUCCESS');
      else if (i % 50 === 1) expect(r.status).to.equal('PROC_UNAVAIL');
      else expect([r.status, r.value]).to.deep.equal(['SUCCESS', i + 1]);
    }
    const st = server.stats();
    expect(st.calls['TESTPROG.TESTVERS1.ADD1'].udp).to.deep.equal({ SUCCESS: 288 });
    expect(st.calls['TESTPROG.TESTVERS1.NULL'].udp).to.deep.equal({ SUCCESS: 6 });
    expect(st.calls['TESTPROG.TESTVERS1.(unknown procedure)'].udp).to.deep.equal({ PROC_UNAVAIL: 6 });
    expect(st.inFlight).to.equal(0);
  });

  it('answers the Promise handlers of a batch after it, and the synchronous ones with it', async () => {
    const { server, port } = await serve();
    const msgs: Buffer[] = [];
    for (let i = 1; i <= 120; i++)
      msgs.push(i % 2 ? call(i, SLOW.number, (w) => w.uint(i % 7)) : call(i, ADD1.number, (w) => w.uint(i)));
    const replies = await burst(port, msgs, 120);
    expect(replies).to.have.length(120);
    for (const r of replies) expect([r.status, r.value]).to.deep.equal(['SUCCESS', r.xid % 2 ? r.xid % 7 : r.xid + 1]);
    expect(server.stats().calls['TESTPROG.TESTVERS1.SLOW'].udp).to.deep.equal({ SUCCESS: 60 });
  });

  it('drops a call cut short (longer than udpRecvSize) or malformed in the middle of a batch, counts it, and answers its neighbours', async () => {
    const { server, port } = await serve({ udpRecvSize: 512 });
    const msgs = [
      call(1, ADD1.number, (w) => w.uint(1)),
      call(2, ECHO.number, (w) => w.varOpaque(new Uint8Array(1000))), // cut to 512 bytes by the kernel
      call(3, ADD1.number, (w) => w.uint(3)),
      call(4, ADD1.number).subarray(0, 7), // not even a call header
      call(5, ADD1.number, (w) => w.uint(5)),
      call(6, ECHO.number, (w) => w.varOpaque(new Uint8Array(400))), // fits
    ];
    const replies = await burst(port, msgs, 4);
    expect(replies.map((r) => [r.xid, r.status]).sort()).to.deep.equal([
      [1, 'SUCCESS'],
      [3, 'SUCCESS'],
      [5, 'SUCCESS'],
      [6, 'SUCCESS'],
    ]);
    expect(server.stats().garbageRecords.udp).to.equal(2);
    expect(server.stats().calls['TESTPROG.TESTVERS1.ECHO'].udp).to.deep.equal({ SUCCESS: 1 });
  });

  it('keeps the duplicate request cache within a batch: a copy of a call in progress is dropped, of a finished one replayed', async () => {
    let runs = 0;
    const { server, port } = await serve(
      {},
      '::1',
      testService({ SLOW: (ms: number) => (runs++, sleep(ms).then(() => ms)), ADD1: (n: number) => (runs++, n + 1) }),
    );
    const slow = call(10, SLOW.number, (w) => w.uint(50));
    const add = call(11, ADD1.number, (w) => w.uint(41));
    const replies = await burst(port, [slow, add, slow, add], 3);
    expect(runs).to.equal(2);
    expect(replies.map((r) => [r.xid, r.value]).sort()).to.deep.equal([
      [10, 50],
      [11, 42],
      [11, 42],
    ]);
    const st = server.stats().calls;
    expect(st['TESTPROG.TESTVERS1.SLOW'].udp).to.deep.equal({ SUCCESS: 1, DUPLICATE_DROPPED: 1 });
    expect(st['TESTPROG.TESTVERS1.ADD1'].udp).to.deep.equal({ SUCCESS: 1, DUPLICATE_REPLAYED: 1 });
  });

  it('drops calls over the cap on calls in progress, as before', async () => {
    const { server, port } = await serve({ maxInFlight: 5 });
    const msgs = Array.from({ length: 20 }, (_, i) => call(i + 1, SLOW.number, (w) => w.uint(30)));
    const replies = await burst(port, msgs, 5, { ms: 500 });
    expect(replies).to.have.length(5);
    expect(server.stats().overloadDrops).to.equal(15);
  });

  it('sends a reply that comes during a graceful close', async () => {
    const { server, port } = await serve();
    const pending = burst(port, [call(1, SLOW.number, (w) => w.uint(100))], 1);
    await sleep(30);
    await server.close(2000);
    expect((await pending).map((r) => [r.xid, r.value])).to.deep.equal([[1, 100]]);
  });

  it('replies from the address the call came to on an IPv4 wildcard socket (127.0.0.2 on a server at 0.0.0.0)', async () => {
    const { port } = await serve({}, '0.0.0.0');
    const replies = await burst(port, [call(1, ADD1.number, (w) => w.uint(1)), call(2, 0)], 2, {
      to: '127.0.0.2',
      from: '127.0.0.1',
    });
    expect(replies.map((r) => [r.xid, r.from]).sort()).to.deep.equal([
      [1, '127.0.0.2'],
      [2, '127.0.0.2'],
    ]);
    // a connected client (ours) hears only replies from the address it called
    const c = await RpcClient.connect({
      host: '127.0.0.2',
      port,
      transport: 'udp',
      program: TEST_PROGRAM,
      version: 1,
      timeoutMs: 2000,
    });
    try {
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 9)).to.equal(10);
    } finally {
      await c.close();
    }
  });

  it('serves UDP through dgram with udpBatch 0', async () => {
    const { server, port } = await serve({ udpBatch: 0 });
    const replies = await burst(
      port,
      [call(1, ADD1.number, (w) => w.uint(1)), call(2, ADD1.number, (w) => w.uint(2))],
      2,
    );
    expect(replies.map((r) => r.value).sort()).to.deep.equal([2, 3]);
    expect(server.stats().calls['TESTPROG.TESTVERS1.ADD1'].udp).to.deep.equal({ SUCCESS: 2 });
  });

  describe('in a network namespace with several IPv6 addresses', () => {
    const root = join(__dirname, '../..');
    // Runs in the namespace: a server on [::] (batched, then dgram) whose ECHO answers with ctx.peerAddress, called
    // from and to each pair of local addresses; prints what each reply said and where it came from.
    const child = `
      const dgram = require('node:dgram');
      const os = require('node:os');
      const { RpcServer } = require(${JSON.stringify(join(root, 'src/rpc'))});
      const { NULL_AUTH, writeCallHeader, readReplyHeader } = require(${JSON.stringify(join(root, 'src/rpc/message'))});
      const { XdrReader, XdrWriter } = require(${JSON.stringify(join(root, 'src/rpc/xdr/runtime'))});
      const { testService, TEST_PROGRAM } = require(${JSON.stringify(join(root, 'test/rpc/util'))});
      const ll = (dev) => os.networkInterfaces()[dev].find((a) => a.family === 'IPv6' && a.address.startsWith('fe80')).address + '%' + dev;
      const pairs = [['2001:db8::1', '2001:db8::2'], ['2001:db8::2', '2001:db8::1'], ['::1', '::1'], ['2001:db8::1', '::1'], [ll('va'), ll('vb')]];
      (async () => {
        const out = {};
        for (const udpBatch of [64, 0]) {
          const server = new RpcServer({ udpBatch }).register(testService({ ECHO: (_b, ctx) => new TextEncoder().encode(ctx.peerAddress) }));
          const [{ port }] = await server.listen({ host: '::', port: 0, transport: 'udp' });
          out[udpBatch] = [];
          for (const [from, to] of pairs) {
            const s = dgram.createSocket('udp6');
            await new Promise((r) => s.bind(0, from, r));
            const w = new XdrWriter();
            writeCallHeader(w, { xid: 5, program: TEST_PROGRAM, version: 1, procedure: 1, credential: NULL_AUTH, verifier: NULL_AUTH });
            w.varOpaque(new Uint8Array(0));
            const got = await new Promise((resolve) => {
              const t = setTimeout(() => resolve(null), 1000);
              s.on('message', (m, rinfo) => {
                clearTimeout(t);
                const r = new XdrReader(m);
                readReplyHeader(r);
                resolve({ replyFrom: rinfo.address, peerAddress: Buffer.from(r.varOpaque()).toString() });
              });
              s.send(w.toBytes(), port, to);
            });
            s.close();
            out[udpBatch].push({ from, to, got });
          }
          await server.close(0);
        }
        console.log(JSON.stringify(out));
        process.exit(0);
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const setup = [
      'ip link set lo up',
      'sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0',
      'ip -6 addr add 2001:db8::1/128 dev lo nodad',
      'ip -6 addr add 2001:db8::2/128 dev lo nodad',
      'ip link add va type veth peer name vb',
      'ip link set va up',
      'ip link set vb up',
    ].join(' && ');

    let results: Record<string, { from: string; to: string; got: { replyFrom: string; peerAddress: string } | null }[]>;

    before(async function () {
      skipIf(
        this,
        process.getuid?.() !== 0
          ? 'needs root'
          : existsSync('/usr/bin/unshare')
            ? undefined
            : 'unshare (util-linux) is missing',
      );
      const script = `${setup} && for i in 1 2 3 4 5 6 7 8 9 10; do ip -6 addr show dev va | grep -q fe80 && ip -6 addr show dev vb | grep -q fe80 && break; sleep 0.1; done && exec "$0" --import tsx -e "$1"`;
      const out = await new Promise<string>((resolve, reject) =>
        execFile(
          'unshare',
          ['--net', 'sh', '-c', script, process.execPath, child],
          { cwd: root, timeout: 20_000 },
          (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
        ),
      );
      results = JSON.parse(out.trim().split('\n').pop()!);
    });

    it('replies from the address each call came to on a server at [::], link-local included', () => {
      // (the client's socket names the scope of a link-local source after its own interface: compare addresses)
      for (const r of results['64'])
        expect(r.got?.replyFrom.replace(/%.*/, ''), `${r.from} -> ${r.to}`).to.equal(r.to.replace(/%.*/, ''));
    });

    it('gives handlers the peer address exactly as dgram reports it (link-local with its %interface)', () => {
      expect(results['64'].map((r) => r.got?.peerAddress)).to.deep.equal(results['0'].map((r) => r.got?.peerAddress));
      const ll = results['64'][4].got!.peerAddress;
      expect(ll).to.match(/^fe80::[0-9a-f:]+%v[ab]$/);
      expect(results['64'].map((r) => r.got?.peerAddress.replace(/%.*/, ''))).to.deep.equal(
        results['64'].map((r) => r.from.replace(/%.*/, '')),
      );
    });
  });
});
