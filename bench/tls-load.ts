// The load of bench/rpc-tls.bench.ts, run in its own process so that the server's event loop is not the client's:
//   calls PORT CALLERS DEPTH PROC SECONDS [CA_FILE]: CALLERS connections (one RpcClient each, over RPC-with-TLS when
//     CA_FILE is given) are opened and warmed up, "ready" is printed; after a line on stdin each keeps DEPTH calls of
//     PROC (REQUEST or RELEASE) in flight, each made when one is answered, for SECONDS; prints
//     {"calls": N, "seconds": S, "cpu": µs of this process's CPU time while calling}. (The parent measures its
//     server between the two.)
//   connect PORT SECONDS [CA_FILE]: new connections one after another for SECONDS, each made ready (TCP, and with
//     CA_FILE the probe and TLS handshake) then answered one NULL call and closed; prints
//     {"connections": N, "seconds": S, "p50": MS, "p99": MS} (milliseconds to ready, not counting the NULL call).
//   tls-connect PORT SECONDS CA_FILE: the baseline of that, Node's own tls.connect (TCP and TLS 1.3 handshake, no
//     probe, no RPC) to a bare tls.Server, one after another; prints the same.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { RPC_ONE_Client } from '../src/protocol/generated/dstm';
import { RpcClient, type TlsClientOptions } from '../src/rpc';
import { cClientPacket } from '../test/rpc/util';

const PROGRAM = 0x2d53544d;

async function connect(port: number, tls: TlsClientOptions | undefined): Promise<RpcClient> {
  return RpcClient.connect({
    host: '::1',
    port,
    transport: 'tcp',
    program: PROGRAM,
    version: 1,
    timeoutMs: 10_000,
    tls,
  });
}

async function calls(
  port: number,
  callers: number,
  depth: number,
  proc: 'REQUEST' | 'RELEASE',
  seconds: number,
  tls: TlsClientOptions | undefined,
): Promise<void> {
  const clients = await Promise.all(Array.from({ length: callers }, () => connect(port, tls)));
  const p = cClientPacket(1, 1);
  // warm up each connection, then measure
  await Promise.all(clients.map((c) => new RPC_ONE_Client(c, PROGRAM).REQUEST(p)));
  console.log('ready');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.pause();
  let n = 0;
  const u0 = process.cpuUsage();
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    clients.flatMap((c) =>
      Array.from({ length: depth }, async () => {
        const stub = new RPC_ONE_Client(c, PROGRAM);
        while (performance.now() < end) {
          await stub[proc](p);
          n++;
        }
      }),
    ),
  );
  const took = (performance.now() - t0) / 1000;
  const u = process.cpuUsage(u0);
  await Promise.all(clients.map((c) => c.close()));
  console.log(JSON.stringify({ calls: n, seconds: took, cpu: u.user + u.system }));
}

/** Make connections one after another for `seconds`: `open` resolves once one is ready, with how to finish it. */
async function connections(seconds: number, open: () => Promise<() => Promise<void>>): Promise<void> {
  const times: number[] = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    const s = performance.now();
    const finish = await open();
    times.push(performance.now() - s);
    await finish();
  }
  const took = (performance.now() - t0) / 1000;
  times.sort((a, b) => a - b);
  const q = (f: number): number => times[Math.min(times.length - 1, Math.floor(times.length * f))];
  console.log(JSON.stringify({ connections: times.length, seconds: took, p50: q(0.5), p99: q(0.99) }));
}

async function main(): Promise<void> {
  const [mode, port, ...rest] = process.argv.slice(2);
  if (mode === 'calls') {
    const [callers, depth, proc, seconds, ca] = rest;
    if (proc !== 'REQUEST' && proc !== 'RELEASE') throw new Error(`PROC is REQUEST or RELEASE, not ${proc}`);
    const o = ca ? { ca: readFileSync(ca) } : undefined;
    await calls(Number(port), Number(callers), Number(depth), proc, Number(seconds), o);
  } else if (mode === 'connect') {
    const [seconds, ca] = rest;
    const o = ca ? { ca: readFileSync(ca) } : undefined;
    await connections(Number(seconds), async () => {
      const c = await connect(Number(port), o);
      return async () => {
        await c.ping();
        await c.close();
      };
    });
  } else {
    const [seconds, ca] = rest;
    const pem = readFileSync(ca);
    await connections(
      Number(seconds),
      () =>
        new Promise((resolve, reject) => {
          const s = tls.connect({ host: '::1', port: Number(port), ca: pem, minVersion: 'TLSv1.3' }, () =>
            resolve(async () => void s.destroy()),
          );
          s.once('error', reject);
        }),
    );
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
