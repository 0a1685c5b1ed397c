// RPC server throughput: NULL and REQUEST (Annex B packet, the test transform) calls/s over udp6 and tcp6 with N
// concurrent callers, our server vs an rpcgen-generated C server (libtirpc, svc_run), both on ::1 in the same run.
// The load comes from one C load generator (bench/c/rpc_load.c: N threads, one libtirpc client handle each), the
// same for both servers, so what differs is the server. Target: ours >= 0.8x the C server.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { RPC_ONE_service } from '../src/generated/dstm';
import { RpcServer } from '../src/rpc';
import { buildCPeers, startCServer, transformPacket } from '../test/rpc/util';

const PROGRAM = 0x2d53544d;
const SECONDS = Number(process.env.RPC_BENCH_SECONDS ?? 1.5);
const ROUNDS = Number(process.env.RPC_BENCH_ROUNDS ?? 2);
const CALLERS = (process.env.RPC_BENCH_CALLERS ?? '1,16,64').split(',').map(Number);

function load(bin: string, netid: string, port: number, proc: number, callers: number): Promise<{ rate: number; errors: number }> {
  return new Promise((resolve, reject) => {
    execFile(bin, [netid, '::1', String(port), String(PROGRAM), String(proc), String(callers), String(SECONDS)], { timeout: (SECONDS + 30) * 1000 }, (err, stdout) => {
      if (err) return reject(err);
      const m = /calls (\d+) errors (\d+) seconds ([\d.]+)/.exec(stdout);
      if (!m) return reject(new Error(`unexpected load generator output: ${stdout}`));
      resolve({ rate: Number(m[1]) / Number(m[3]), errors: Number(m[2]) });
    });
  });
}

export async function run(): Promise<void> {
  const peers = await buildCPeers(true);
  if (typeof peers === 'string') {
    console.log(`skipped: ${peers}`);
    return;
  }
  const ours = new RpcServer().register(RPC_ONE_service({ REQUEST: transformPacket, RELEASE: transformPacket }));
  const [{ port: ourPort }] = await ours.listen({ host: '::1', port: 0 });
  const c = await startCServer(peers, PROGRAM);
  try {
    console.log(`best of ${ROUNDS} rounds of ${SECONDS} s, alternating servers; load: ${peers.load} (N threads, one libtirpc client each)`);
    console.log('| call | transport | callers | ours (calls/s) | rpcgen C (calls/s) | ours/C |');
    console.log('|---|---|---:|---:|---:|---:|');
    for (const [name, proc] of [['NULL', 0], ['REQUEST', 1]] as const) {
      for (const netid of ['udp6', 'tcp6']) {
        for (const n of CALLERS) {
          // Alternate the two servers and keep each one's best round: the machine is shared, and a burst of
          // someone else's work should not decide the ratio.
          const a = { rate: 0, errors: 0 };
          const b = { rate: 0, errors: 0 };
          for (let round = 0; round < ROUNDS; round++) {
            for (const [best, port] of [[a, ourPort], [b, netid === 'udp6' ? c.udp : c.tcp]] as const) {
              const r = await load(peers.load!, netid, port, proc, n);
              best.rate = Math.max(best.rate, r.rate);
              best.errors += r.errors;
            }
          }
          const errs = a.errors + b.errors > 0 ? ` (errors: ours ${a.errors}, C ${b.errors})` : '';
          console.log(`| ${name} | ${netid} | ${n} | ${Math.round(a.rate)} | ${Math.round(b.rate)} | ${(a.rate / b.rate).toFixed(2)}x |${errs}`);
        }
      }
    }
  } finally {
    await c.stop();
    await ours.close(100);
    rmSync(peers.dir, { recursive: true, force: true });
  }
}
