// RPC server throughput: NULL and REQUEST (Annex B packet, the test transform) calls/s over udp6 and tcp6 with N
// concurrent callers, our server vs an rpcgen-generated C server (libtirpc, svc_run), both on ::1 in the same run.
// The load comes from one C load generator (bench/c/rpc_load.c: N threads, one libtirpc client handle each), the
// same for every server, so what differs is the server. Target: ours >= 0.8x the C server.
//
// A third server, "node floor", answers each call with canned reply bytes and no RPC work at all (no decoding,
// checks, cache or handler) through Node's dgram and net: the most a Node server can do on those sockets.
//
// Over UDP our server reads and answers calls in batches through the addon's batched socket (src/rpc/udp-batch.ts:
// one recvmmsg and one sendmmsg per batch, one JavaScript call per batch); the last column is the same server with
// udpBatch: 0, i.e. Node's dgram one datagram at a time, as it was before and as it falls back to without the addon.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { RPC_ONE_service } from '../src/protocol/generated/dstm';
import { RpcServer } from '../src/rpc';
import { buildCPeers, startCServer, transformPacket } from '../test/rpc/util';

const PROGRAM = 0x2d53544d;
const SECONDS = Number(process.env.RPC_BENCH_SECONDS ?? 1.2);
const ROUNDS = Number(process.env.RPC_BENCH_ROUNDS ?? 2);
const CALLERS = (process.env.RPC_BENCH_CALLERS ?? '1,16,64').split(',').map(Number);

function load(
  bin: string,
  netid: string,
  port: number,
  proc: number,
  callers: number,
): Promise<{ rate: number; errors: number }> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      [netid, '::1', String(port), String(PROGRAM), String(proc), String(callers), String(SECONDS)],
      { timeout: (SECONDS + 30) * 1000 },
      (err, stdout) => {
        if (err) return reject(err);
        const m = /calls (\d+) errors (\d+) seconds ([\d.]+)/.exec(stdout);
        if (!m) return reject(new Error(`unexpected load generator output: ${stdout}`));
        resolve({ rate: Number(m[1]) / Number(m[3]), errors: Number(m[2]) });
      },
    );
  });
}

/**
 * The Node floor: a reply is the call's XID, REPLY, MSG_ACCEPTED, an AUTH_NONE verifier, SUCCESS, then the call's
 * arguments echoed (the call header is 40 bytes with AUTH_NONE, as the load generator sends).
 */
async function nodeFloor(): Promise<{ port: number; close: () => Promise<void> }> {
  const reply = (call: Buffer, at: number, mark: boolean): Buffer => {
    const body = call.length - at - 40;
    const out = Buffer.allocUnsafe((mark ? 4 : 0) + 24 + body);
    let o = 0;
    if (mark) out.writeUInt32BE((0x80000000 | (24 + body)) >>> 0, (o += 4) - 4);
    out.writeUInt32BE(call.readUInt32BE(at), o);
    out.writeUInt32BE(1, o + 4);
    out.fill(0, o + 8, o + 24);
    call.copy(out, o + 24, at + 40);
    return out;
  };
  const udp = dgram.createSocket({ type: 'udp6', ipv6Only: true, lookup: (a, _f, cb) => cb(null, a, 6) });
  udp.on('message', (m, r) => udp.send(reply(m, 0, false), r.port, r.address));
  await new Promise<void>((r) => udp.bind(0, '::1', () => r()));
  const port = udp.address().port;
  // One record per chunk is all the load generator sends (one call in flight per connection).
  const tcp = net.createServer({ noDelay: true }, (s) => s.on('data', (m: Buffer) => s.write(reply(m, 4, true))));
  await new Promise<void>((r) => tcp.listen(port, '::1', () => r()));
  return {
    port,
    close: async () => {
      await new Promise<void>((r) => udp.close(() => r()));
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}

export async function run(): Promise<void> {
  const peers = await buildCPeers(true);
  if (typeof peers === 'string') {
    console.log(`skipped: ${peers}`);
    return;
  }
  // Every caller is on ::1: one peer, with up to 64 connections (over the default maxConnectionsPerPeer of 32).
  const ours = new RpcServer({ maxConnectionsPerPeer: 64 }).register(
    RPC_ONE_service({ REQUEST: transformPacket, RELEASE: transformPacket }),
  );
  const [{ port: ourPort }] = await ours.listen({ host: '::1', port: 0 });
  const dgramOurs = new RpcServer({ udpBatch: 0 }).register(
    RPC_ONE_service({ REQUEST: transformPacket, RELEASE: transformPacket }),
  );
  const [{ port: dgramPort }] = await dgramOurs.listen({ host: '::1', port: 0, transport: 'udp' });
  const floor = await nodeFloor();
  const c = await startCServer(peers, PROGRAM);
  try {
    console.log(
      `best of ${ROUNDS} rounds of ${SECONDS} s, servers taking turns; load: N threads of rpc_load, one libtirpc client each`,
    );
    console.log(
      '| call | transport | callers | ours (calls/s) | rpcgen C (calls/s) | ours/C | node floor (calls/s) | ours/floor | ours, dgram (calls/s) | dgram/C |',
    );
    console.log('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [name, proc] of [
      ['NULL', 0],
      ['REQUEST', 1],
    ] as const) {
      for (const netid of ['udp6', 'tcp6']) {
        const servers = [ourPort, netid === 'udp6' ? c.udp : c.tcp, floor.port];
        if (netid === 'udp6') servers.push(dgramPort);
        for (const n of CALLERS) {
          // Take turns and keep each server's best round: the machine is shared, and a burst of someone else's
          // work should not decide the ratio.
          const best = servers.map(() => ({ rate: 0, errors: 0 }));
          for (let round = 0; round < ROUNDS; round++) {
            for (let i = 0; i < servers.length; i++) {
              const r = await load(peers.load!, netid, servers[i], proc, n);
              best[i].rate = Math.max(best[i].rate, r.rate);
              best[i].errors += r.errors;
            }
          }
          const [a, b, f, d] = best;
          const errors = best.reduce((sum, x) => sum + x.errors, 0);
          const errs =
            errors > 0
              ? ` errors: ours ${a.errors}, C ${b.errors}, floor ${f.errors}${d ? `, dgram ${d.errors}` : ''}`
              : '';
          const dg = d ? `${Math.round(d.rate)} | ${(d.rate / b.rate).toFixed(2)}x` : '— | —';
          console.log(
            `| ${name} | ${netid} | ${n} | ${Math.round(a.rate)} | ${Math.round(b.rate)} | ${(a.rate / b.rate).toFixed(2)}x | ${Math.round(f.rate)} | ${(a.rate / f.rate).toFixed(2)}x | ${dg} |${errs}`,
          );
        }
      }
    }
  } finally {
    await c.stop();
    await floor.close();
    await ours.close(100);
    await dgramOurs.close(100);
    rmSync(peers.dir, { recursive: true, force: true });
  }
}
