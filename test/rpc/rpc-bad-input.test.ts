// Bad input to the RPC server over UDP and TCP: truncated, oversized, garbage and mutated records get the RFC 5531
// error reply or are dropped where no reply is possible; a TCP peer announcing a 2 GiB fragment is cut off without
// the server buffering it; after thousands of bad records a normal call still works and memory stays flat.
import { expect } from 'chai';
import dgram from 'node:dgram';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RpcClient, RpcServer } from '../../src/rpc';
import { readReplyHeader, writeCallHeader, NULL_AUTH } from '../../src/rpc/message';
import { frameRecord } from '../../src/rpc/record';
import { XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';
import { seeded } from '../support/random';
import { ADD1, ECHO, sleep, TEST_PROGRAM, tcpConnect, testService, udpExchange } from './util';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Runs 2000 records to warm up, then 6000 more, and asserts heap and rss stayed flat across the 6000. */
async function expectFlatMemory(batch: (n: number) => Promise<void>): Promise<void> {
  await batch(2000);
  gc();
  const before = process.memoryUsage();
  await batch(6000);
  gc();
  const after = process.memoryUsage();
  expect(after.heapUsed - before.heapUsed, 'heapUsed growth').to.be.below(4 << 20);
  expect(after.rss - before.rss, 'rss growth').to.be.below(24 << 20);
}

function call(xid: number, proc: number, args: (w: XdrWriter) => void, program = TEST_PROGRAM, version = 1): Buffer {
  const w = new XdrWriter();
  writeCallHeader(w, { xid, program, version, procedure: proc, credential: NULL_AUTH, verifier: NULL_AUTH });
  args(w);
  return Buffer.from(w.toBytes());
}

function status(reply: Buffer | null): string | null {
  return reply === null ? null : readReplyHeader(new XdrReader(reply)).status;
}

/** Split a TCP byte stream into the reply records it carries (each assumed to be one fragment). */
function records(stream: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o + 4 <= stream.length;) {
    const len = stream.readUInt32BE(o) & 0x7fffffff;
    out.push(stream.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return out;
}

describe('rpc server under bad input', function () {
  this.timeout(60_000);
  let server: RpcServer;
  let port: number;

  beforeEach(async () => {
    server = new RpcServer({ maxRecordSize: 64 * 1024 }).register(testService());
    [{ port }] = await server.listen({ host: '::1', port: 0 });
  });
  afterEach(() => server.close(100));

  describe('over UDP', () => {
    it('drops every truncated call header and counts it', async () => {
      const good = call(1, ADD1.number, (w) => w.uint(1));
      const headerLen = good.length - 4;
      for (let n = 0; n < headerLen; n++)
        expect(await udpExchange(port, good.subarray(0, n), 30), `${n} bytes`).to.equal(null);
      expect(server.stats().garbageRecords.udp).to.equal(headerLen); // a zero-byte datagram counts too
      expect(status(await udpExchange(port, good))).to.equal('SUCCESS');
    });

    it('answers truncated, oversized and trailing arguments with GARBAGE_ARGS', async () => {
      expect(status(await udpExchange(port, call(2, ADD1.number, (w) => w.uint(1)).subarray(0, -2)))).to.equal(
        'GARBAGE_ARGS',
      );
      expect(
        status(
          await udpExchange(
            port,
            call(3, ADD1.number, (w) => (w.uint(1), w.uint(2))),
          ),
        ),
      ).to.equal('GARBAGE_ARGS');
      // an opaque<> whose length runs past the datagram
      expect(
        status(
          await udpExchange(
            port,
            call(4, ECHO.number, (w) => w.uint(60_000)),
          ),
        ),
      ).to.equal('GARBAGE_ARGS');
      // non-zero padding
      expect(
        status(
          await udpExchange(
            port,
            call(5, ECHO.number, (w) => (w.uint(1), w.uint(0x01010101))),
          ),
        ),
      ).to.equal('GARBAGE_ARGS');
      // a datagram near the UDP maximum
      const big = call(6, ADD1.number, (w) => w.varOpaque(new Uint8Array(65_000)));
      expect(status(await udpExchange(port, big))).to.equal('GARBAGE_ARGS');
    });

    it('gives each malformed header its RFC reply, or drops it', async () => {
      const w = new XdrWriter();
      const cases: [string, number[], string | null][] = [
        ['a REPLY instead of a CALL', [7, 1, 0, 0, 0, 0], null],
        ['RPC version 1', [7, 0, 1, TEST_PROGRAM, 1, 1, 0, 0, 0, 0], 'RPC_MISMATCH'],
        ['RPC version 0xffffffff, nothing else', [7, 0, 0xffffffff], 'RPC_MISMATCH'],
        ['unknown program', [7, 0, 2, 12345, 1, 1, 0, 0, 0, 0], 'PROG_UNAVAIL'],
        ['unknown version', [7, 0, 2, TEST_PROGRAM, 9, 1, 0, 0, 0, 0], 'PROG_MISMATCH'],
        ['unknown procedure', [7, 0, 2, TEST_PROGRAM, 1, 77, 0, 0, 0, 0], 'PROC_UNAVAIL'],
        ['credential of 401 bytes', [7, 0, 2, TEST_PROGRAM, 1, 0, 1, 401, ...new Array(101).fill(0), 0, 0], null],
        ['credential length past the datagram', [7, 0, 2, TEST_PROGRAM, 1, 0, 1, 300, 0, 0], null],
        ['unknown flavor', [7, 0, 2, TEST_PROGRAM, 1, 0, 77, 0, 0, 0], 'AUTH_ERROR'],
        ['AUTH_SYS credential that does not decode', [7, 0, 2, TEST_PROGRAM, 1, 0, 1, 4, 1, 0, 0], 'AUTH_ERROR'],
        // RFC 5531 10.1: AUTH_NONE's body is undefined, so any body up to the 400-byte limit is accepted
        [
          'AUTH_NONE credential of 400 bytes',
          [7, 0, 2, TEST_PROGRAM, 1, 0, 0, 400, ...new Array(100).fill(7), 0, 0],
          'SUCCESS',
        ],
        // machinename "\xe9" (Latin-1 e-acute, not UTF-8), uid, gid, no groups
        [
          'AUTH_SYS machinename in Latin-1',
          [7, 0, 2, TEST_PROGRAM, 1, 0, 1, 24, 0, 1, 0xe9000000, 0, 0, 0, 0, 0],
          'SUCCESS',
        ],
        ['NULL with arguments (ignored, as libtirpc does)', [7, 0, 2, TEST_PROGRAM, 1, 0, 0, 0, 0, 0, 5, 6], 'SUCCESS'],
      ];
      for (const [what, ws, expected] of cases) {
        w.reset();
        for (const v of ws) w.uint(v);
        expect(status(await udpExchange(port, w.toBytes(), 60)), what).to.equal(expected);
      }
    });

    it('survives thousands of mutated and random datagrams with well-formed replies only, memory flat', async () => {
      const rnd = seeded(0xd57);
      const sock = dgram.createSocket('udp6');
      await new Promise<void>((r) => sock.bind(0, '::1', () => r()));
      let bad = 0;
      let replies = 0;
      sock.on('message', (m) => {
        replies++;
        try {
          readReplyHeader(new XdrReader(m));
        } catch {
          bad++;
        }
      });
      const good = call(9, ECHO.number, (w) => w.varOpaque(new Uint8Array(40)));
      const batch = async (n: number) => {
        for (let i = 0; i < n; i++) {
          let m: Buffer;
          if (i % 3 === 0)
            m = Buffer.from(Array.from({ length: Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)));
          else {
            m = Buffer.from(good);
            for (let k = 1 + Math.floor(rnd() * 4); k > 0; k--)
              m[Math.floor(rnd() * m.length)] = Math.floor(rnd() * 256);
            if (i % 3 === 2) m = m.subarray(0, Math.floor(rnd() * m.length));
          }
          sock.send(m, port, '::1');
          if (i % 100 === 99) await sleep(5);
        }
        await sleep(100);
      };
      try {
        await expectFlatMemory(batch);
      } finally {
        sock.close();
      }
      expect(bad).to.equal(0);
      expect(replies, 'replies to the datagrams that can have one').to.be.greaterThan(0);
      expect(server.stats().garbageRecords.udp).to.be.greaterThan(1000);
      const c = await RpcClient.connect({ host: '::1', port, transport: 'udp', program: TEST_PROGRAM, version: 1 });
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      await c.close();
    });
  });

  describe('over TCP', () => {
    it('answers records on one connection in turn: dropped, RPC_MISMATCH, GARBAGE_ARGS, then SUCCESS', async () => {
      const { sock, received } = await tcpConnect(port);
      const w = new XdrWriter();
      for (const v of [1, 0, 2, TEST_PROGRAM]) w.uint(v); // cut short: dropped
      sock.write(frameRecord(w.toBytes(), 1000));
      w.reset();
      for (const v of [2, 0, 3]) w.uint(v);
      sock.write(frameRecord(w.toBytes(), 1000));
      sock.write(
        frameRecord(
          call(3, ADD1.number, () => {}),
          1000,
        ),
      );
      sock.write(
        frameRecord(
          call(4, ADD1.number, (w2) => w2.uint(41)),
          7,
        ),
      ); // in 7-byte fragments
      sock.write(frameRecord(Buffer.alloc(0), 10)); // an empty record: dropped
      await sleep(200);
      const replies = records(received()).map((r) => readReplyHeader(new XdrReader(r)));
      expect(replies.map((r) => [r.xid, r.status])).to.deep.equal([
        [2, 'RPC_MISMATCH'],
        [3, 'GARBAGE_ARGS'],
        [4, 'SUCCESS'],
      ]);
      expect(server.stats().garbageRecords.tcp).to.equal(2);
      sock.destroy();
    });

    it('cuts off a peer announcing a 2 GiB fragment without buffering it', async () => {
      gc();
      const before = process.memoryUsage();
      const { sock, closed } = await tcpConnect(port);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(0xffffffff);
      sock.write(head);
      sock.write(Buffer.alloc(32 * 1024, 0x41)); // the start of the "fragment": never buffered
      await closed;
      expect(server.stats().oversizedRecords).to.equal(1);
      // a record of several fragments adding up to more than the maximum is cut off too
      const second = await tcpConnect(port);
      second.sock.write(frameRecord(Buffer.alloc(100 * 1024), 40 * 1024).subarray(0, 2 * (40 * 1024 + 4) + 4));
      await second.closed;
      expect(server.stats().oversizedRecords).to.equal(2);
      gc();
      expect(process.memoryUsage().heapUsed - before.heapUsed).to.be.below(4 << 20);
      const c = await RpcClient.connect({ host: '::1', port, transport: 'tcp', program: TEST_PROGRAM, version: 1 });
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      await c.close();
    });

    it('closes a connection stalled in the middle of a record', async () => {
      const s2 = new RpcServer({ idleTimeoutMs: 200 }).register(testService());
      const [{ port: p2 }] = await s2.listen({ host: '::1', port: 0, transport: 'tcp' });
      const { sock, closed } = await tcpConnect(p2);
      sock.write(
        frameRecord(
          call(1, ADD1.number, (w) => w.uint(1)),
          1000,
        ).subarray(0, 20),
      );
      const t0 = Date.now();
      await closed;
      expect(Date.now() - t0).to.be.within(150, 2000);
      await s2.close(0);
    });

    it('stops reading a peer that does not read its replies (backpressure), and loses nothing', async () => {
      const n = 8000;
      const { sock, received } = await tcpConnect(port);
      sock.pause(); // read nothing: the replies pile up in the kernel, then the server must stop taking calls
      const payload = new Uint8Array(2048);
      const calls = Buffer.concat(
        Array.from({ length: n }, (_, i) =>
          frameRecord(
            call(i, ECHO.number, (w) => w.varOpaque(payload)),
            1 << 20,
          ),
        ),
      );
      sock.write(calls);
      await sleep(700);
      const served = server.stats().calls['TESTPROG.TESTVERS1.ECHO']?.tcp?.SUCCESS ?? 0;
      expect(served).to.be.below(n);
      sock.resume();
      for (let t = 0; t < 200 && records(received()).length < n; t++) await sleep(25);
      const replies = records(received());
      expect(replies).to.have.length(n);
      expect(replies.map((r) => r.readUInt32BE(0))).to.deep.equal(Array.from({ length: n }, (_, i) => i));
      sock.destroy();
    });

    it('survives thousands of mutated records and garbage streams, memory flat', async () => {
      const rnd = seeded(0x7c9);
      const good = call(9, ECHO.number, (w) => w.varOpaque(new Uint8Array(40)));
      const batch = async (n: number) => {
        // mutated calls, correctly framed, on one connection: each gets a well-formed reply or is dropped
        const { sock, received } = await tcpConnect(port);
        for (let i = 0; i < n; i++) {
          let m = Buffer.from(good);
          for (let k = 1 + Math.floor(rnd() * 4); k > 0; k--) m[Math.floor(rnd() * m.length)] = Math.floor(rnd() * 256);
          if (i % 2) m = m.subarray(0, Math.floor(rnd() * m.length));
          sock.write(frameRecord(m, 1 + Math.floor(rnd() * 64)));
        }
        sock.write(
          frameRecord(
            call(0xabc, ADD1.number, (w) => w.uint(1)),
            100,
          ),
        );
        for (let t = 0; t < 100 && !records(received()).some((r) => r.readUInt32BE(0) === 0xabc); t++) await sleep(20);
        const replies = records(received());
        for (const r of replies) readReplyHeader(new XdrReader(r));
        expect(replies[replies.length - 1].readUInt32BE(0)).to.equal(0xabc);
        sock.destroy();
        // raw garbage streams: the server answers, drops, or cuts off, and lives on
        for (let i = 0; i < n / 100; i++) {
          const g = net.connect({ host: '::1', port });
          g.on('error', () => {});
          g.end(Buffer.from(Array.from({ length: 500 }, () => Math.floor(rnd() * 256))));
        }
        await sleep(100);
      };
      await expectFlatMemory(batch);
      expect(server.stats().garbageRecords.tcp).to.be.greaterThan(1000);
      const c = await RpcClient.connect({ host: '::1', port, transport: 'tcp', program: TEST_PROGRAM, version: 1 });
      expect(await c.call(TEST_PROGRAM, 1, ADD1, 1)).to.equal(2);
      await c.close();
    });
  });
});
