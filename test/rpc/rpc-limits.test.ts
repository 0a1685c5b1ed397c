// The server's abuse limits, one block per finding of the security review (issue 13): tiny TCP fragments
// (finding 3), one host taking every TCP slot (finding 4), UDP amplification (finding 5), and the duplicate request
// cache keyed by a 32-bit hash of the peer address. Real sockets on loopback throughout.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  authStatName,
  RpcAuthError,
  RpcClient,
  RpcServer,
  type CallContext,
  type RegisterOptions,
  type RpcServerOptions,
  type Service,
} from '../../src/rpc';
import { DRC_NEW, DRC_REPLAY, DuplicateCache } from '../../src/rpc/drc';
import { ConnectionLimits } from '../../src/rpc/server-tcp-limits';
import { NULL_AUTH, readReplyHeader, writeCallHeader } from '../../src/rpc/message';
import { frameRecord, MAX_FRAGMENT } from '../../src/rpc/record';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';
import { sleep, until } from '../support/wait';
import { ADD1, ECHO, MISSING, SLOW, TEST_PROGRAM, tcpConnect, testService } from './util';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** A call of the test program (NULL by default), with a uint argument when given. */
function call(xid: number, procedure = 0, arg?: number): Buffer {
  const w = new XdrWriter();
  writeCallHeader(w, {
    xid,
    program: TEST_PROGRAM,
    version: 1,
    procedure,
    credential: NULL_AUTH,
    verifier: NULL_AUTH,
  });
  if (arg !== undefined) w.uint(arg);
  return Buffer.from(w.toBytes());
}

/** `body` as a record of one-byte fragments, the last one left open unless `close`. */
function oneByteFragments(body: Uint8Array, close: boolean): Buffer {
  const out = Buffer.alloc(body.length * 5 + (close ? 4 : 0));
  for (let i = 0; i < body.length; i++) {
    out.writeUInt32BE(1, i * 5);
    out[i * 5 + 4] = body[i];
  }
  if (close) out.writeUInt32BE(0x80000000, body.length * 5); // an empty last fragment
  return out;
}

/** Whether `p` settles within `ms`. */
function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true), sleep(ms).then(() => false)]);
}

/** The xid and uint result of each reply record (one fragment each) in a TCP byte stream. */
function uintReplies(stream: Buffer): [number, number][] {
  const out: [number, number][] = [];
  for (let o = 0; o + 4 <= stream.length; o += 4 + (stream.readUInt32BE(o) & 0x7fffffff)) {
    const r = new XdrReader(stream.subarray(o + 4, o + 4 + (stream.readUInt32BE(o) & 0x7fffffff)));
    const h = readReplyHeader(r);
    out.push([h.xid, h.status === 'SUCCESS' ? r.uint() : -1]);
  }
  return out;
}

function memory(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

async function serve(options: RpcServerOptions): Promise<{ server: RpcServer; port: number }> {
  const server = new RpcServer(options).register(testService());
  const [{ port }] = await server.listen({ host: '::1', port: 0, transport: 'tcp' });
  return { server, port };
}

describe('rpc server limits (issue 13)', function () {
  this.timeout(60_000);
  const servers: RpcServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close(0);
  });

  describe('finding 3: tiny TCP fragments', () => {
    it('keeps memory flat under 400,000 one-byte fragments of an open record, then serves the record', async () => {
      const { server, port } = await serve({ maxFragmentsPerRecord: 1_000_000 });
      servers.push(server);
      const body = Buffer.alloc(400_000);
      call(7).copy(body); // a NULL call and zeros after it (NULL ignores its arguments)
      const c = await tcpConnect(port);
      const before = memory();
      await new Promise<void>((r) => c.sock.write(oneByteFragments(body, false), () => r()));
      // The server reads the 2 MB at loopback speed; take the highest figure while it does.
      let peak = 0;
      for (let i = 0; i < 10; i++) {
        await sleep(50);
        peak = Math.max(peak, memory() - before);
      }
      expect(peak, 'heap and buffers held for the open record').to.be.below(4 << 20);
      c.sock.write(Buffer.from([0x80, 0, 0, 0]));
      for (let i = 0; i < 100 && c.received().length < 28; i++) await sleep(20);
      const reply = c.received();
      expect(reply.readUInt32BE(0)).to.equal((0x80000000 | 24) >>> 0);
      expect(readReplyHeader(new XdrReader(reply.subarray(4))).status).to.equal('SUCCESS');
      c.sock.destroy();
    });

    it('cuts off a record of more fragments than maxFragmentsPerRecord (default 4096), and counts it', async () => {
      const { server, port } = await serve({});
      servers.push(server);
      const ok = await tcpConnect(port);
      ok.sock.write(oneByteFragments(Buffer.concat([call(1), Buffer.alloc(4095 - 40)]), true)); // 4096 with the last
      const flood = await tcpConnect(port);
      flood.sock.write(oneByteFragments(Buffer.alloc(4097), false));
      await flood.closed;
      for (let i = 0; i < 100 && ok.received().length < 28; i++) await sleep(20);
      expect(ok.received().length, 'a record of 4096 fragments is served').to.equal(28);
      expect(server.stats().tcpCutoffs.tooManyFragments).to.equal(1);
      ok.sock.destroy();
    });
  });
});

/** The peers (address:port) of the connections `server` holds now: read from its private set, nothing says it. */
function heldPeers(server: RpcServer): Set<string> {
  const { conns } = (server as unknown as { tcp: { conns: Set<{ socket: net.Socket }> } }).tcp;
  return new Set([...conns].map((c) => `${c.socket.remoteAddress}:${c.socket.remotePort}`));
}

/**
 * Open `n` connections from `local` to `server` and wait until the server holds each or has closed it (refused at
 * accept, or evicted for a newcomer, by this batch or one made at the same time).
 */
async function connectMany(
  server: RpcServer,
  port: number,
  local: string,
  n: number,
  host = '127.0.0.1',
): Promise<{ kept: net.Socket[]; refused: number }> {
  const closed = new Set<net.Socket>();
  const socks = await Promise.all(
    Array.from({ length: n }, () => {
      const s = net.connect({ host, port, localAddress: local });
      s.on('error', () => {});
      s.once('close', () => closed.add(s));
      return new Promise<{ s: net.Socket; peer: string }>((r) =>
        s.once('connect', () => r({ s, peer: `${s.localAddress}:${s.localPort}` })),
      );
    }),
  );
  const settled = (): boolean => {
    const held = heldPeers(server);
    return socks.every(({ s, peer }) => closed.has(s) || held.has(peer));
  };
  await until('the server held or closed every connection', settled);
  const held = heldPeers(server);
  const kept = socks.filter(({ s, peer }) => !closed.has(s) && held.has(peer)).map(({ s }) => s);
  for (const { s } of socks) if (!kept.includes(s)) s.destroy();
  return { kept, refused: n - kept.length };
}

/** A NULL call over a fresh connection from `local`; resolves with whether it was answered. */
async function nullCallFrom(port: number, local: string, host = '127.0.0.1'): Promise<boolean> {
  const s = net.connect({ host, port, localAddress: local });
  s.on('error', () => {});
  const got: Buffer[] = [];
  s.on('data', (d) => got.push(d));
  s.write(frameRecord(call(9), MAX_FRAGMENT));
  for (let i = 0; i < 50 && Buffer.concat(got).length < 28; i++) await sleep(20);
  s.destroy();
  return Buffer.concat(got).length === 28;
}

describe('rpc server limits (issue 13), TCP slots', function () {
  this.timeout(60_000);
  let server: RpcServer;
  const open: net.Socket[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) s.destroy();
    await server?.close(0);
  });

  async function serve4(options: RpcServerOptions, service = testService()): Promise<number> {
    server = new RpcServer(options).register(service);
    const [{ port }] = await server.listen({ host: '127.0.0.1', port: 0, transport: 'tcp' });
    return port;
  }

  describe('finding 4: one host takes every TCP slot', () => {
    it('limits the connections of one peer (default 32), so a host with more than maxConnections idle ones locks no one out, its own network included', async () => {
      const port = await serve4({ maxConnections: 64 });
      const flood = await connectMany(server, port, '127.0.0.2', 70);
      open.push(...flood.kept);
      expect(flood.kept).to.have.length(32);
      // Each newcomer over the peer's limit took the slot of the peer's connection longest without a call.
      expect(server.stats().tcpCutoffs).to.include({ refusedPerPeer: 0, evictedIdle: 38 });
      expect(await nullCallFrom(port, '127.0.0.3'), 'another host is served').to.equal(true);
      // The peer is a whole network (a LAN's /64 for IPv6): its idle connections do not lock its other hosts out.
      expect(await nullCallFrom(port, '127.0.0.2'), 'a newcomer of the same peer is served').to.equal(true);
      expect(server.stats().tcpCutoffs).to.include({ refusedPerPeer: 0, evictedIdle: 39, refusedFull: 0 });
    });

    it('counts a peer by prefix (peerPrefix4 / peerPrefix6)', async () => {
      const port = await serve4({ maxConnectionsPerPeer: 3, peerPrefix4: 24 });
      const a = await connectMany(server, port, '127.0.0.2', 2);
      const b = await connectMany(server, port, '127.0.0.3', 2);
      open.push(...a.kept, ...b.kept);
      // .2 and .3 are one peer: its fourth connection took the slot of its idlest, the first of .2.
      expect(server.stats().tcpCutoffs.evictedIdle).to.equal(1);
      await until('three connections left', () => server.stats().connections === 3);
      expect(await nullCallFrom(port, '127.0.1.2'), 'another /24 is another peer').to.equal(true);
      expect(server.stats().tcpCutoffs.evictedIdle, 'which took no slot of the first').to.equal(1);
    });

    it('counts an IPv6 peer by its /64 (with its zone: fe80::/64 on two links is two peers)', () => {
      const limits = new ConnectionLimits({
        maxConnections: 100,
        maxConnectionsPerPeer: 2,
        peerPrefix6: 64,
        peerPrefix4: 32,
        reservedPeers: ['2001:db8:ff::/48'],
        reservedConnections: 10,
      });
      const admit = (a: string) => (typeof limits.admit(a) === 'string' ? 'refused' : 'admitted');
      expect(['2001:db8::1', '2001:db8::ffff:1', '2001:db8::2'].map(admit)).to.deep.equal([
        'admitted',
        'admitted',
        'refused',
      ]);
      expect(admit('2001:db8:0:1::1')).to.equal('admitted');
      expect(['fe80::1%eth0', 'fe80::2%eth0', 'fe80::3%eth0', 'fe80::1%eth1'].map(admit)).to.deep.equal([
        'admitted',
        'admitted',
        'refused',
        'admitted',
      ]);
      expect(
        ['2001:db8:ff::1', '2001:db8:ff::1', '2001:db8:ff::1'].map(admit),
        'reserved peers are not limited per peer',
      ).to.deep.equal(['admitted', 'admitted', 'admitted']);
      expect(
        () =>
          new ConnectionLimits({
            maxConnections: 4,
            maxConnectionsPerPeer: 2,
            peerPrefix6: 129,
            peerPrefix4: 32,
            reservedPeers: [],
            reservedConnections: 0,
          }),
      ).to.throw(/peerPrefix6/);
    });

    it('keeps reservedConnections slots for reserved peers (the TEP feed) however many other peers connect', async () => {
      const port = await serve4(
        {
          maxConnections: 12,
          maxConnectionsPerPeer: 4,
          reservedPeers: ['127.0.0.9', '127.0.1.0/24'],
          reservedConnections: 3,
        },
        testService({ SLOW: () => new Promise(() => {}) }),
      );
      const floods = await Promise.all(
        ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((a) => connectMany(server, port, a, 4)),
      );
      for (const f of floods) open.push(...f.kept);
      expect(floods.map((f) => f.kept.length).reduce((x, y) => x + y)).to.equal(9);
      // Each with a call in progress, so that no newcomer can take its slot (an idle one it could).
      for (const s of open) s.write(frameRecord(call(1, SLOW.number, 0), MAX_FRAGMENT));
      await until('9 calls in progress', () => server.stats().inFlight === 9);
      expect(await nullCallFrom(port, '127.0.0.5'), 'the unreserved slots are full').to.equal(false);
      expect(server.stats().tcpCutoffs.refusedFull).to.be.greaterThan(0);
      const tep = await connectMany(server, port, '127.0.0.9', 2);
      const tep2 = await connectMany(server, port, '127.0.1.7', 1);
      open.push(...tep.kept, ...tep2.kept);
      expect(tep.kept.length + tep2.kept.length, 'reserved peers get the reserved slots').to.equal(3);
      expect(server.stats().reservedConnections).to.equal(3);
      // Reserved peers are not limited per peer, only by maxConnections: all 12 slots are now taken.
      expect(await nullCallFrom(port, '127.0.0.9')).to.equal(false);
      tep.kept.pop()!.destroy();
      await until('the server saw it close', () => server.stats().connections === 11);
      expect(await nullCallFrom(port, '127.0.0.9'), 'a slot freed by a reserved peer').to.equal(true);
    });

    it('counts a connection its peer reset before it was accepted (no address to judge) as refused', async () => {
      const port = await serve4({});
      // Our event loop is blocked while a child connects and resets: the connections wait in the accept queue, and
      // are accepted with no peer address once it exits.
      const reset = `const net = require('node:net'); let left = 5;
        for (let i = 0; i < 5; i++) {
          const s = net.connect(${port}, '127.0.0.1', () => s.resetAndDestroy());
          s.on('error', () => {});
          s.on('close', () => --left || process.exit(0));
        }`;
      expect(spawnSync(process.execPath, ['-e', reset], { timeout: 10_000 }).status).to.equal(0);
      for (let i = 0; i < 50 && server.stats().tcpCutoffs.refusedNoAddress < 5; i++) await sleep(20);
      expect(server.stats().tcpCutoffs.refusedNoAddress).to.equal(5);
      expect(server.stats().connections).to.equal(0);
    });

    it('closes a connection whose record is not complete within recordTimeoutMs, however it trickles', async () => {
      const port = await serve4({ recordTimeoutMs: 400 });
      const c = await tcpConnect(port, '127.0.0.1');
      const rec = frameRecord(call(3), MAX_FRAGMENT);
      const t0 = Date.now();
      let i = 0;
      const trickle = setInterval(() => {
        if (i < rec.length - 1) c.sock.write(rec.subarray(i, ++i));
      }, 50);
      await c.closed;
      clearInterval(trickle);
      expect(Date.now() - t0).to.be.within(350, 2000);
      expect(server.stats().tcpCutoffs.recordTimeouts).to.equal(1);
    });

    it('does not cut a connection whose records each complete in time, split across chunks', async () => {
      const port = await serve4({ recordTimeoutMs: 300 });
      const c = await tcpConnect(port, '127.0.0.1');
      for (let k = 0; k < 6; k++) {
        const rec = frameRecord(call(100 + k), MAX_FRAGMENT);
        // This record's tail and the next one's head in one write: a record is always in progress.
        c.sock.write(rec.subarray(0, 10));
        await sleep(100);
        c.sock.write(rec.subarray(10));
      }
      await sleep(100);
      expect(c.received().length).to.equal(6 * 28);
      expect(c.sock.destroyed).to.equal(false);
      expect(server.stats().tcpCutoffs.recordTimeouts).to.equal(0);
      c.sock.destroy();
    });
  });

  describe('TCP slots held without calls', () => {
    const hung = () => testService({ SLOW: () => new Promise(() => {}) });

    it('closes a connection after idleTimeoutMs without a call served, whatever garbage or refused calls it sends', async () => {
      const port = await serve4({ idleTimeoutMs: 400 });
      const noise = await tcpConnect(port, '127.0.0.1');
      const calls = await tcpConnect(port, '127.0.0.1');
      const t0 = Date.now();
      let k = 0;
      const send = setInterval(() => {
        k++;
        // An empty record (garbage, dropped) or a call of a procedure the server lacks (refused: PROC_UNAVAIL).
        noise.sock.write(k % 2 ? Buffer.from([0x80, 0, 0, 0]) : frameRecord(call(k, MISSING.number), MAX_FRAGMENT));
        calls.sock.write(frameRecord(call(k, ADD1.number, k), MAX_FRAGMENT));
      }, 100);
      try {
        expect(await within(noise.closed, 3000), 'the noisy connection is closed').to.equal(true);
        expect(Date.now() - t0).to.be.within(350, 3000);
        await sleep(300);
        expect(calls.sock.destroyed, 'the connection making calls stays').to.equal(false);
      } finally {
        clearInterval(send);
        calls.sock.destroy();
      }
      const s = server.stats();
      expect(s.tcpCutoffs.idleTimeouts).to.equal(1);
      expect(s.garbageRecords.tcp).to.be.greaterThan(0);
      expect(s.calls['TESTPROG.TESTVERS1.(unknown procedure)'].tcp!.PROC_UNAVAIL).to.be.greaterThan(0);
    });

    it('keeps no clock for a connection closed while its call runs', async () => {
      const port = await serve4({ idleTimeoutMs: 200 });
      const c = await tcpConnect(port, '127.0.0.1');
      c.sock.write(frameRecord(call(1, SLOW.number, 300), MAX_FRAGMENT));
      await until('call in progress', () => server.stats().inFlight === 1);
      c.sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff])); // a 2 GiB record: the server closes the connection
      await c.closed;
      await sleep(800); // the call ends at 300 ms; an idle clock started then would expire at 500
      expect(server.stats().tcpCutoffs).to.include({ oversizedRecords: 1, idleTimeouts: 0 });
    });

    it('when full, admits a newcomer in the slot of the connection longest without a call (none in progress)', async () => {
      const port = await serve4({ maxConnections: 4, maxConnectionsPerPeer: 4 }, hung());
      const conns = [];
      for (let i = 0; i < 4; i++) conns.push(await tcpConnect(port, '127.0.0.1', '127.0.0.2'));
      open.push(...conns.map((c) => c.sock));
      const [a, b, c, d] = conns;
      b.sock.write(frameRecord(call(1, SLOW.number, 0), MAX_FRAGMENT)); // in progress: b keeps its slot
      await until('call in progress', () => server.stats().inFlight === 1);
      a.sock.write(frameRecord(call(2, ADD1.number, 1), MAX_FRAGMENT)); // served: a is no longer the idlest
      await until('reply', () => a.received().length === 32);
      // The peer is at its own limit: a newcomer of its takes the slot of its idlest connection, c.
      const over = await connectMany(server, port, '127.0.0.2', 1);
      open.push(...over.kept);
      expect(over.kept).to.have.length(1);
      expect(await within(c.closed, 1000), 'c, the idlest of the peer, is closed').to.equal(true);
      expect(server.stats().tcpCutoffs).to.include({ refusedPerPeer: 0, evictedIdle: 1 });
      // The server is full: a newcomer of another peer takes the slot of the idlest connection, now d.
      expect(await nullCallFrom(port, '127.0.0.3'), 'the newcomer is served').to.equal(true);
      expect(await within(d.closed, 1000), 'd, the idlest, is closed').to.equal(true);
      expect([a.sock, b.sock, over.kept[0]].map((x) => x.destroyed)).to.deep.equal([false, false, false]);
      expect(server.stats().tcpCutoffs).to.include({ evictedIdle: 2, refusedFull: 0 });
    });

    it('refuses a newcomer of a peer whose every connection has a call in progress, and takes no other peer’s slot for it', async () => {
      const port = await serve4({ maxConnections: 4, maxConnectionsPerPeer: 2 }, hung());
      const other = await tcpConnect(port, '127.0.0.1', '127.0.0.3');
      open.push(other.sock);
      const busy = [await tcpConnect(port, '127.0.0.1', '127.0.0.2'), await tcpConnect(port, '127.0.0.1', '127.0.0.2')];
      open.push(...busy.map((x) => x.sock));
      busy.forEach((x, i) => x.sock.write(frameRecord(call(i + 1, SLOW.number, 0), MAX_FRAGMENT)));
      await until('calls in progress', () => server.stats().inFlight === 2);
      const over = await connectMany(server, port, '127.0.0.2', 1);
      expect(over.kept).to.have.length(0);
      expect(server.stats().tcpCutoffs).to.include({ refusedPerPeer: 1, evictedIdle: 0 });
      expect(other.sock.destroyed, 'the idle connection of another peer keeps its slot').to.equal(false);
    });

    it('answers the calls of a peer that shut down its sending side (half-close), then ends the connection', async () => {
      const port = await serve4({});
      const c = await tcpConnect(port, '127.0.0.1');
      c.sock.write(frameRecord(call(5, SLOW.number, 50), MAX_FRAGMENT)); // answered in 50 ms
      c.sock.end();
      expect(await within(c.closed, 3000), 'the server ends the connection').to.equal(true);
      expect(uintReplies(c.received())).to.deep.equal([[5, 50]]);
      await until('connection closed', () => server.stats().connections === 0);
    });

    it('holds no more than the bytes a waiting connection sent, however many records they are (maxInFlight)', async () => {
      let release = (): void => {};
      const port = await serve4(
        { maxInFlight: 1 },
        testService({ SLOW: () => new Promise<number>((r) => (release = () => r(0))) }),
      );
      const holder = await tcpConnect(port, '127.0.0.1');
      holder.sock.write(frameRecord(call(1, SLOW.number, 0), MAX_FRAGMENT));
      await until('call in progress', () => server.stats().inFlight === 1);
      // 64 KiB of empty records (a 4-byte header each), then a NULL call, from each of 8 connections.
      const nul = frameRecord(call(2), MAX_FRAGMENT);
      const flood = Buffer.alloc(65536 - nul.length);
      for (let o = 0; o < flood.length; o += 4) flood.writeUInt32BE(0x80000000, o);
      const stream = Buffer.concat([flood, nul]);
      const conns = await Promise.all(Array.from({ length: 8 }, () => tcpConnect(port, '127.0.0.1')));
      const before = memory();
      await Promise.all(conns.map((c) => new Promise<void>((r) => c.sock.write(stream, () => r()))));
      await sleep(300);
      // A record that waits for a slot must not cost an object each: 8 x 16,000 of them were about 15 MB.
      expect(memory() - before, 'heap and buffers held for the waiting records').to.be.below(5 << 20);
      release();
      await until('every connection answered', () => conns.every((c) => c.received().length === 28));
      expect(server.stats().garbageRecords.tcp).to.equal((8 * flood.length) / 4);
      holder.sock.destroy();
      for (const c of conns) c.sock.destroy();
    });

    it('stops the record and idle clocks of a connection whose records wait for a call slot (maxInFlight)', async () => {
      let release = (): void => {};
      const port = await serve4(
        { maxInFlight: 1, recordTimeoutMs: 300, idleTimeoutMs: 300 },
        testService({ SLOW: () => new Promise<number>((r) => (release = () => r(0))) }),
      );
      const holder = await tcpConnect(port, '127.0.0.1');
      holder.sock.write(frameRecord(call(1, SLOW.number, 0), MAX_FRAGMENT));
      await until('call in progress', () => server.stats().inFlight === 1);
      const held = await tcpConnect(port, '127.0.0.1');
      const next = frameRecord(call(3, ADD1.number, 2), MAX_FRAGMENT);
      // A call, which waits for the slot, and the beginning of another.
      held.sock.write(Buffer.concat([frameRecord(call(2, ADD1.number, 1), MAX_FRAGMENT), next.subarray(0, 10)]));
      expect(await within(held.closed, 1000), 'the held connection is closed').to.equal(false);
      release();
      await until('reply to the waiting call', () => held.received().length === 32);
      held.sock.write(next.subarray(10)); // the record clock starts again when the server reads the connection
      await until('reply to the second call', () => held.received().length === 64);
      expect(uintReplies(held.received())).to.deep.equal([
        [2, 2],
        [3, 3],
      ]);
      expect(server.stats().tcpCutoffs).to.include({ recordTimeouts: 0, idleTimeouts: 0 });
      holder.sock.destroy();
      held.sock.destroy();
    });
  });
});

describe('rpc server limits (issue 13), UDP', function () {
  this.timeout(30_000);
  let server: RpcServer;
  const clients: RpcClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    await server?.close(0);
  });

  async function serveBoth(
    service: Service,
    options: RpcServerOptions = {},
    register?: RegisterOptions,
  ): Promise<(t: 'udp' | 'tcp') => Promise<RpcClient>> {
    server = new RpcServer(options).register(service, TEST_PROGRAM, register);
    const [{ port }] = await server.listen({ host: '::1', port: 0 });
    return async (transport) => {
      const c = await RpcClient.connect({
        host: '::1',
        port,
        transport,
        program: TEST_PROGRAM,
        version: 1,
        timeoutMs: 2000,
      });
      clients.push(c);
      return c;
    };
  }

  async function authStat(p: Promise<unknown>): Promise<string> {
    const e = await p.then(
      () => null,
      (err: unknown) => err,
    );
    return e instanceof RpcAuthError ? authStatName(e.stat) : String(e);
  }

  /** ECHO answers `n` bytes for an n given as the first 4 bytes of its argument: a small call, a large reply. */
  const amplifier = testService({ ECHO: (b: Uint8Array) => new Uint8Array(Buffer.from(b).readUInt32BE(0)) });
  const ask = (n: number) => Uint8Array.from(Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]));

  describe('finding 5: UDP amplification', () => {
    it('answers no UDP call with more than 3 times its bytes (AUTH_TOOWEAK instead), and TCP in full', async () => {
      const connect = await serveBoth(amplifier);
      const udp = await connect('udp');
      // The call is 40 bytes of header and 8 of argument: up to 144 bytes of reply, i.e. 144 - 28 of opaque.
      expect((await udp.call(TEST_PROGRAM, 1, ECHO, ask(116))).length).to.equal(116);
      expect(await authStat(udp.call(TEST_PROGRAM, 1, ECHO, ask(120)))).to.equal('AUTH_TOOWEAK');
      expect(await authStat(udp.call(TEST_PROGRAM, 1, ECHO, ask(52_000)))).to.equal('AUTH_TOOWEAK');
      const tcp = await connect('tcp');
      expect((await tcp.call(TEST_PROGRAM, 1, ECHO, ask(52_000))).length).to.equal(52_000);
      const s = server.stats().calls['TESTPROG.TESTVERS1.ECHO'];
      expect(s.udp).to.deep.equal({ SUCCESS: 1, REPLY_TOO_LARGE: 2 });
      expect(s.tcp).to.deep.equal({ SUCCESS: 1 });
    });

    it('lets a handler fit its reply to ctx.maxReplySize, and a procedure or server choose its ratio', async () => {
      const seen: number[] = [];
      const fitting = testService({
        ECHO: (b: Uint8Array, ctx: CallContext) => {
          seen.push(ctx.maxReplySize);
          return new Uint8Array(Math.min(Buffer.from(b).readUInt32BE(0), ctx.maxReplySize - 28));
        },
      });
      let connect = await serveBoth(fitting);
      expect((await (await connect('udp')).call(TEST_PROGRAM, 1, ECHO, ask(8000))).length).to.equal(144 - 28);
      expect((await (await connect('tcp')).call(TEST_PROGRAM, 1, ECHO, ask(8000))).length).to.equal(8000);
      expect(seen).to.deep.equal([144, Infinity]);
      await server.close(0);
      connect = await serveBoth(amplifier, { udpReplyRatio: 1 }, { procedures: { ECHO: { udpReplyRatio: 200 } } });
      expect((await (await connect('udp')).call(TEST_PROGRAM, 1, ECHO, ask(8000))).length).to.equal(8000);
      expect(
        await (await connect('udp')).call(TEST_PROGRAM, 1, ADD1, 5),
        'ADD1 at the server ratio 1: 44 bytes in, 28 out',
      ).to.equal(6);
      expect(
        await authStat((await connect('udp')).call(TEST_PROGRAM, 1, ECHO, ask(60_000))),
        'over the ratio of 200',
      ).to.equal('AUTH_TOOWEAK');
    });

    it('refuses a TCP-only procedure over UDP with AUTH_TOOWEAK, without running it', async () => {
      let runs = 0;
      const connect = await serveBoth(
        testService({ ADD1: (n: number) => (runs++, n + 1) }),
        {},
        { procedures: { ADD1: { tcpOnly: true } } },
      );
      expect(await authStat((await connect('udp')).call(TEST_PROGRAM, 1, ADD1, 1))).to.equal('AUTH_TOOWEAK');
      expect(runs).to.equal(0);
      expect(await (await connect('tcp')).call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      expect(runs).to.equal(1);
      expect(server.stats().calls['TESTPROG.TESTVERS1.ADD1']).to.deep.equal({
        udp: { TCP_ONLY: 1 },
        tcp: { SUCCESS: 1 },
      });
      expect(() =>
        new RpcServer().register(testService(), TEST_PROGRAM, { procedures: { NOPE: { tcpOnly: true } } }),
      ).to.throw(/no procedure NOPE/);
    });
  });
});

describe('the duplicate request cache keyed by a 32-bit hash of the peer address (issue 13)', () => {
  /** FNV-1a of a string's UTF-16 code units: the 32-bit hash the cache used as the peer's identity. */
  function fnv(s: string): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h >>> 0;
  }

  /** Two distinct IPv6 addresses with the same hash (a birthday search, deterministic). */
  function collision(): [string, string] {
    const seen = new Map<number, string>();
    for (let i = 0; ; i++) {
      const a = `2001:db8::${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
      const other = seen.get(fnv(a));
      if (other !== undefined) return [other, a];
      seen.set(fnv(a), a);
    }
  }

  it('neither replays one peer’s reply to a colliding address nor lets it poison the entry', () => {
    const [victim, forger] = collision();
    expect(victim).to.not.equal(forger);
    const cache = new DuplicateCache(64, 1 << 16);
    const c = call(42);
    expect(cache.lookup(victim, 700, 42, c)).to.equal(DRC_NEW);
    cache.complete(cache.begin(700, 42), Buffer.from('the victim’s reply'));
    expect(cache.lookup(forger, 700, 42, c), 'the forger does not read the victim’s reply').to.equal(DRC_NEW);
    cache.complete(cache.begin(700, 42), Buffer.from('poison'));
    // Both entries are kept (the index chains colliding keys): the victim is answered its own reply, not the forger's.
    const seen = cache.lookup(victim, 700, 42, c);
    expect(
      seen === DRC_REPLAY ? cache.replay!.toString() : seen,
      'the victim is answered its own reply, not the forger’s',
    ).to.equal('the victim’s reply');
    expect(cache.lookup(forger, 700, 42, c)).to.equal(DRC_REPLAY);
    expect(cache.replay!.toString()).to.equal('poison');
  });
});
