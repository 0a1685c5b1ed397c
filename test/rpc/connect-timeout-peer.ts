// Run by rpc-connect-timeout.test.ts inside a namespace it made, where BLACKHOLE6 is a neighbour on a veth whose
// frames nobody takes: SYNs to it vanish. Connects over TCP with the given timeoutMs and prints one JSON line: how
// the connect ended and after how long. The process must then exit by itself (no socket left open).
import { RpcClient, RpcError } from '../../src/rpc';

export const BLACKHOLE6 = '2001:db8:99::2';

async function main(): Promise<void> {
  const timeoutMs = Number(process.argv[2]);
  const t0 = performance.now();
  let kind = 'connected';
  try {
    const c = await RpcClient.connect({
      host: BLACKHOLE6,
      port: 111,
      transport: 'tcp',
      program: 100000,
      version: 2,
      timeoutMs,
    });
    await c.close();
  } catch (e) {
    kind = e instanceof RpcError ? e.kind : String(e);
  }
  console.log(JSON.stringify({ kind, ms: performance.now() - t0 }));
}

if (require.main === module) void main();
