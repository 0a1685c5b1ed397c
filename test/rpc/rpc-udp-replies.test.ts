// What becomes of each UDP reply, on the batched socket and on the dgram fallback (udpBatch 0): counted in
// stats().udpReplies as sent, failed or dropped; an answer that comes after close() is dropped and counted, where
// dgram would throw from the Promise's callback and take the process down; and a call whose answering throws
// (onHandlerError) still frees its slot. Real sockets on ::1; what must not crash runs in a child process.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { RpcClient, RpcServer } from '../../src/rpc';
import { NULL_AUTH, writeCallHeader } from '../../src/rpc/message';
import { batchedUdpAvailable } from '../../src/rpc/udp-batch';
import { XdrWriter } from '../../src/rpc/xdr/runtime';
import { tsArgv } from '../support/dstm-procs';
import { skipIf } from '../support/skip';
import { ADD1, ECHO, TEST_PROGRAM, testService, udpExchange } from './util';

const ROOT = join(__dirname, '../..');

/** Runs `script` (JavaScript that may require TypeScript, from the repository root); its last output line is JSON. */
function child(script: string): Promise<{ code: number | null; out: Record<string, unknown>; stderr: string }> {
  const [cmd, ...args] = tsArgv('-e', script);
  return new Promise((resolve) =>
    execFile(cmd, args, { cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({
        code: err ? ((err as { code?: number }).code ?? null) : 0,
        out: JSON.parse(stdout.trim().split('\n').pop() || '{}') as Record<string, unknown>,
        stderr,
      }),
    ),
  );
}

/**
 * A child's server gets a call of SLOW (150 ms unless `handlers` say otherwise) and is closed 50 ms later with
 * `graceMs`; the child prints how long close() took and the server's stats 200 ms after.
 */
const callThenClose = (o: { udpBatch: number; graceMs: number; options?: string; handlers?: string }): string => `
  const dgram = require('node:dgram');
  const { RpcServer } = require('./src/rpc');
  const { NULL_AUTH, writeCallHeader } = require('./src/rpc/message');
  const { XdrWriter } = require('./src/rpc/xdr/runtime');
  const { testService, SLOW, TEST_PROGRAM } = require('./test/rpc/util');
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  (async () => {
    const server = new RpcServer({ udpBatch: ${o.udpBatch}, ${o.options ?? ''} }).register(testService(${o.handlers ?? ''}));
    const [{ port }] = await server.listen({ host: '::1', port: 0, transport: 'udp' });
    const w = new XdrWriter();
    writeCallHeader(w, { xid: 1, program: TEST_PROGRAM, version: 1, procedure: SLOW.number, credential: NULL_AUTH, verifier: NULL_AUTH });
    w.uint(150);
    const c = dgram.createSocket('udp6');
    c.send(w.toBytes(), port, '::1');
    await sleep(50);
    const t0 = Date.now();
    await server.close(${o.graceMs});
    const closeMs = Date.now() - t0;
    c.close();
    await sleep(200);
    const st = server.stats();
    console.log(JSON.stringify({ closeMs, inFlight: st.inFlight, udpReplies: st.udpReplies }));
  })();`;

describe('UDP replies: counted, and never sent after close()', function () {
  this.timeout(30_000);
  const servers: RpcServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close(100)));
  });

  for (const udpBatch of [64, 0]) {
    describe(udpBatch ? 'batched socket' : 'dgram (udpBatch 0)', () => {
      before(function () {
        skipIf(
          this,
          udpBatch && !batchedUdpAvailable() ? 'the addon has no batched UDP (npm ci builds it)' : undefined,
        );
      });

      it('counts replies sent, and a reply longer than a datagram as failed', async () => {
        // ECHO answers 70000 bytes: over the largest UDP payload, yet within a 10x ratio of a 7 KiB call.
        const server = new RpcServer({ udpBatch, udpReplyRatio: 10 }).register(
          testService({ ECHO: () => new Uint8Array(70_000) }),
        );
        servers.push(server);
        const [{ port }] = await server.listen({ host: '::1', port: 0, transport: 'udp' });
        const c = await RpcClient.connect({ host: '::1', port, transport: 'udp', program: TEST_PROGRAM, version: 1 });
        try {
          for (let i = 0; i < 3; i++) expect(await c.call(TEST_PROGRAM, 1, ADD1, i)).to.equal(i + 1);
        } finally {
          await c.close();
        }
        expect(server.stats().udpReplies).to.deep.equal({ sent: 3, failed: 0, dropped: 0, stalls: 0 });
        const w = new XdrWriter();
        writeCallHeader(w, {
          xid: 9,
          program: TEST_PROGRAM,
          version: 1,
          procedure: ECHO.number,
          credential: NULL_AUTH,
          verifier: NULL_AUTH,
        });
        w.varOpaque(new Uint8Array(7000));
        expect(await udpExchange(port, w.toBytes())).to.equal(null);
        expect(server.stats().udpReplies).to.deep.equal({ sent: 3, failed: 1, dropped: 0, stalls: 0 });
      });

      it('drops and counts an answer that comes after close(), and the process carries on', async () => {
        const r = await child(callThenClose({ udpBatch, graceMs: 20 }));
        expect(r.code, r.stderr).to.equal(0);
        expect(r.out).to.deep.include({ inFlight: 0 });
        expect(r.out.udpReplies).to.deep.equal({ sent: 0, failed: 0, dropped: 1, stalls: 0 });
      });
    });
  }

  it('frees the call slot of a call whose answering throws (onHandlerError), so close() does not wait for it', async () => {
    // What onHandlerError throws escapes as an unhandled rejection (the child keeps it); the call is still done.
    const r = await child(
      `process.on('unhandledRejection', () => {});` +
        callThenClose({
          udpBatch: batchedUdpAvailable() ? 64 : 0, // either socket: this is about the call slot
          graceMs: 3000,
          options: `onHandlerError: () => { throw new Error('onHandlerError fails'); }`,
          handlers: `{ SLOW: () => Promise.reject(new Error('the handler fails')) }`,
        }),
    );
    expect(r.code, r.stderr).to.equal(0);
    expect(r.out).to.deep.include({ inFlight: 0 });
    expect(r.out.closeMs).to.be.below(1000);
  });
});
