// The load of bench/rpc-tls.bench.ts, run in its own process so that the server's event loop is not the client's:
//   calls PORT CALLERS SECONDS [CA_FILE]: CALLERS connections (one RpcClient each, over RPC-with-TLS when CA_FILE is
//     given) are opened and warmed up, "ready" is printed; after a line on stdin each makes REQUEST calls one after
//     another for SECONDS; prints {"calls": N, "seconds": S}. (The parent measures its server between the two.)
//   connect PORT SECONDS [CA_FILE]: new connections one after another for SECONDS, each made ready (TCP, and with
//     CA_FILE the probe and TLS handshake) then answered one NULL call and closed; prints
//     {"connections": N, "seconds": S, "p50": MS, "p99": MS} (milliseconds to ready, not counting the NULL call).
import { readFileSync } from 'node:fs';
import { RPC_ONE_Client } from '../src/generated/dstm';
import { RpcClient, type TlsClientOptions } from '../src/rpc';
import { cClientPacket } from '../test/rpc/util';

const PROGRAM = 0x2d53544d;

async function connect(port: number, tls: TlsClientOptions | undefined): Promise<RpcClient> {
  return RpcClient.connect({ host: '::1', port, transport: 'tcp', program: PROGRAM, version: 1, timeoutMs: 10_000, tls });
}

async function calls(port: number, callers: number, seconds: number, tls: TlsClientOptions | undefined): Promise<void> {
  const clients = await Promise.all(Array.from({ length: callers }, () => connect(port, tls)));
  const p = cClientPacket(1, 1);
  // warm up each connection, then measure
  await Promise.all(clients.map((c) => new RPC_ONE_Client(c, PROGRAM).REQUEST(p)));
  console.log('ready');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.pause();
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(
    clients.map(async (c) => {
      const stub = new RPC_ONE_Client(c, PROGRAM);
      while (performance.now() < end) {
        await stub.REQUEST(p);
        n++;
      }
    }),
  );
  const took = (performance.now() - t0) / 1000;
  await Promise.all(clients.map((c) => c.close()));
  console.log(JSON.stringify({ calls: n, seconds: took }));
}

async function connections(port: number, seconds: number, tls: TlsClientOptions | undefined): Promise<void> {
  const times: number[] = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    const s = performance.now();
    const c = await connect(port, tls);
    times.push(performance.now() - s);
    await c.ping();
    await c.close();
  }
  const took = (performance.now() - t0) / 1000;
  times.sort((a, b) => a - b);
  const q = (f: number): number => times[Math.min(times.length - 1, Math.floor(times.length * f))];
  console.log(JSON.stringify({ connections: times.length, seconds: took, p50: q(0.5), p99: q(0.99) }));
}

async function main(): Promise<void> {
  const [mode, port, ...rest] = process.argv.slice(2);
  if (mode === 'calls') {
    const [callers, seconds, ca] = rest;
    await calls(Number(port), Number(callers), Number(seconds), ca ? { ca: readFileSync(ca) } : undefined);
  } else {
    const [seconds, ca] = rest;
    await connections(Number(port), Number(seconds), ca ? { ca: readFileSync(ca) } : undefined);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
