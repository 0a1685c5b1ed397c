// RPC-with-TLS (RFC 9289) against plain TCP, on the same server in the same run: REQUEST (the Annex B packet, the
// test transform) calls/s with N callers on long-lived connections (one connection each), TLS 1.3 vs plain TCP
// (target >= 0.7x), and the CPU time per call of the server and of the load over the same window (connections made
// and warmed up before it: figures that a busy machine disturbs less than calls/s; on a machine with few cores the
// two processes share them, so their sum is what bounds calls/s); and a row of pipelined calls answered by an
// asynchronous handler (replies coalesced per tick: one write, one TLS record); then new connections/s made one after
// another with the probe and the handshake, and the time to a ready connection (p50, p99), against plain TCP. The
// server is ours under the opportunistic policy (TLS and plain served alike); the load is our RpcClient in a child
// process (bench/tls-load.ts), since the C load generator has no TLS. Certificates: EC P-256, made with openssl
// (test/support/certs.ts).
import { execFile, spawn } from 'node:child_process';
import tls from 'node:tls';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { RPC_ONE_service } from '../src/protocol/generated/dstm';
import { RpcServer, RpcTlsServer } from '../src/rpc';
import { certDir } from '../test/support/certs';
import { transformPacket } from '../test/rpc/util';

const SECONDS = Number(process.env.RPC_BENCH_SECONDS ?? 1.2);
const ROUNDS = Number(process.env.RPC_BENCH_ROUNDS ?? 2);
const CALLERS = (process.env.RPC_BENCH_CALLERS ?? '1,16,64').split(',').map(Number);
/** Rows: procedure, callers, calls in flight per connection. RELEASE has an asynchronous handler (as the DSTM
 * server's, which wait for their store): its replies leave after the chunk of calls was served, coalesced per tick. */
const ROWS: [proc: 'REQUEST' | 'RELEASE', callers: number, depth: number][] = [
  ...CALLERS.map((n) => ['REQUEST', n, 1] as ['REQUEST', number, number]),
  ['RELEASE', 16, 8],
];

function load(args: string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...process.execArgv, join(__dirname, 'tls-load.ts'), ...args],
      { timeout: (SECONDS + 60) * 1000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${err.message}\n${stderr}`));
        resolve(JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, number>);
      },
    );
  });
}

/** One `calls` run of the load: calls/s, and the CPU microseconds per call of this process and the load's. */
function callLoad(args: string[]): Promise<{ rate: number; cpuPerCall: number; loadCpuPerCall: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, join(__dirname, 'tls-load.ts'), 'calls', ...args], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let u0: NodeJS.CpuUsage | null = null;
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'ready') {
        u0 = process.cpuUsage();
        child.stdin.write('go\n');
        return;
      }
      const u = process.cpuUsage(u0 ?? undefined);
      const r = JSON.parse(line) as { calls: number; seconds: number; cpu: number };
      resolve({
        rate: r.calls / r.seconds,
        cpuPerCall: (u.user + u.system) / r.calls,
        loadCpuPerCall: r.cpu / r.calls,
      });
    });
    child.once('exit', (code) => code !== 0 && reject(new Error(`load exited with ${code}`)));
  });
}

export async function run(): Promise<void> {
  const certs = certDir();
  const ca = certs.ca('bench CA');
  const cert = ca.issue({ cn: 'bench', san: ['IP:::1'] });
  const policy = new RpcTlsServer({ policy: 'opportunistic', cert: cert.cert, key: cert.key });
  // Every caller connects from ::1: the per-peer connection cap (32 by default) would refuse most of 64.
  const server = new RpcServer({ tls: policy, maxConnectionsPerPeer: 256 }).register(
    RPC_ONE_service({ REQUEST: transformPacket, RELEASE: async (x) => transformPacket(x) }),
  );
  const [{ port }] = await server.listen({ host: '::1', port: 0, transport: 'tcp' });
  const p = String(port);
  // The handshake's baseline: Node's own TLS server and client, same certificate, no probe and no RPC.
  const bare = tls.createServer({ cert: cert.cert, key: cert.key, minVersion: 'TLSv1.3' }, (s) =>
    s.on('error', () => undefined).end(),
  );
  await new Promise<void>((resolve) => bare.listen(0, '::1', () => resolve()));
  const bareP = String((bare.address() as { port: number }).port);
  try {
    console.log(
      `best of ${ROUNDS} rounds of ${SECONDS} s, plain and TLS taking turns; load: our RpcClient in a child process, one TCP connection per caller`,
    );
    console.log(
      '| call | callers × in flight | plain TCP (calls/s) | TLS 1.3 (calls/s) | TLS/plain | CPU/call plain, server + load (µs) | TLS (µs) | plain/TLS server | plain/TLS both |',
    );
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const [proc, n, depth] of ROWS) {
      const rate = [0, 0];
      const cpu = [Infinity, Infinity];
      const loadCpu = [Infinity, Infinity];
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, extra] of [
          [0, []],
          [1, [ca.certFile]],
        ] as const) {
          const r = await callLoad([p, String(n), String(depth), proc, String(SECONDS), ...extra]);
          rate[i] = Math.max(rate[i], r.rate);
          cpu[i] = Math.min(cpu[i], r.cpuPerCall);
          loadCpu[i] = Math.min(loadCpu[i], r.loadCpuPerCall);
        }
      }
      const both = [cpu[0] + loadCpu[0], cpu[1] + loadCpu[1]];
      const shown = [0, 1].map((i) => `${cpu[i].toFixed(1)} + ${loadCpu[i].toFixed(1)}`);
      console.log(
        `| ${proc}${proc === 'RELEASE' ? ' (async handler)' : ''} | ${n} × ${depth} | ${Math.round(rate[0])} | ${Math.round(rate[1])} | ${(rate[1] / rate[0]).toFixed(2)}x | ${shown[0]} | ${shown[1]} | ${(cpu[0] / cpu[1]).toFixed(2)}x | ${(both[0] / both[1]).toFixed(2)}x |`,
      );
    }
    console.log('\n| new connections, one at a time | connections/s | ready p50 (ms) | ready p99 (ms) |');
    console.log('|---|---:|---:|---:|');
    for (const [name, args] of [
      ['plain TCP (connect)', ['connect', p, String(SECONDS)]],
      ['RPC-with-TLS (connect + probe + TLS 1.3 handshake)', ['connect', p, String(SECONDS), ca.certFile]],
      [
        'baseline: Node tls.connect to a bare tls.Server (no probe, no RPC)',
        ['tls-connect', bareP, String(SECONDS), ca.certFile],
      ],
    ] as const) {
      let best = { rate: 0, p50: Infinity, p99: Infinity };
      for (let round = 0; round < ROUNDS; round++) {
        const r = await load([...args]);
        const rate = r.connections / r.seconds;
        if (rate > best.rate) best = { rate, p50: r.p50, p99: r.p99 };
      }
      console.log(`| ${name} | ${Math.round(best.rate)} | ${best.p50.toFixed(2)} | ${best.p99.toFixed(2)} |`);
    }
    const s = server.stats().tls!;
    console.log(`\nserver: ${s.handshakes} handshakes, failed ${JSON.stringify(s.failed)}`);
  } finally {
    await server.close(100);
    bare.close();
    certs.remove();
  }
}
