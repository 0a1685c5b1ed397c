// The torture test's load: many nodes, each with an IPv6 address of its own, request, renew and release against the
// servers (any of them, at random) for a fixed time, recording every call as the node saw it. Run as a child process
// inside the test's namespace (where the node addresses exist): `node --import tsx driver.ts '<json Options>'`;
// writes the calls as one JSON array to Options.out.
import { writeFileSync } from 'node:fs';
import { DstmClient, DstmRefusal } from '../../src/protocol/client';
import { parseIPv4 } from '../../src/lib/addr';
import type { Call, Listed } from './checker';
import { seeded } from '../support/random';
import { sleep } from '../support/wait';

export interface Options {
  servers: { host: string; port: number }[];
  nodes: string[];
  program: number;
  seconds: number;
  seed: number;
  out: string;
  /** The address the final admin LIST is called from (the servers' admin_allow). */
  admin: string;
}

const now = (): number => Date.now() / 1000;

async function node(o: Options, local: string, rnd: () => number, calls: Call[], deadline: number): Promise<void> {
  const clients = new Map<number, DstmClient>();
  const client = async (i: number): Promise<DstmClient> => {
    let c = clients.get(i);
    if (!c) {
      c = await DstmClient.connect({ ...o.servers[i], program: o.program, transport: 'udp', timeoutMs: 700, local });
      clients.set(i, c);
    }
    return c;
  };
  let held: number | undefined;
  while (now() < deadline) {
    const i = Math.floor(rnd() * o.servers.length);
    const server = `[${o.servers[i].host}]:${o.servers[i].port}`;
    const release = held !== undefined && rnd() < 0.25;
    const t0 = now();
    try {
      const c = await client(i);
      if (release) {
        const l = await c.release(held);
        calls.push({ node: local, server, op: 'release', t0, t1: now(), ipv4: l.address });
        held = undefined;
      } else {
        const l = await c.request(held ?? 0);
        calls.push({ node: local, server, op: 'request', t0, t1: now(), ipv4: l.address, ends: l.ends });
        held = parseIPv4(l.address);
      }
    } catch (err) {
      const error = err instanceof DstmRefusal ? err.status : (err as Error).message || String(err);
      calls.push({ node: local, server, op: release ? 'release' : 'request', t0, t1: now(), error });
      // What the server did is unknown, or it refused: ask afresh next time; it returns any binding the node keeps.
      held = undefined;
    }
    await sleep(20 + rnd() * 80);
  }
  await Promise.all([...clients.values()].map((c) => c.close()));
}

/** Every binding, as the first server that answers lists it (admin LIST over TCP), with the time it was asked. */
async function list(o: Options): Promise<{ at: number; rows: Listed[] }> {
  for (let attempt = 0; attempt < 10; attempt++) {
    for (const s of o.servers) {
      const at = now();
      try {
        const c = await DstmClient.connect({
          ...s,
          program: o.program,
          transport: 'tcp',
          timeoutMs: 3000,
          local: o.admin,
        });
        try {
          const rows: Listed[] = [];
          for await (const r of c.list()) rows.push({ ipv6: r.ipv6, ipv4: r.ipv4, state: r.state, ends: r.ends });
          return { at, rows };
        } finally {
          await c.close();
        }
      } catch {
        // that server is not back yet: the next one, or another round
      }
    }
    await sleep(500);
  }
  throw new Error('no server answered the final LIST');
}

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2]) as Options;
  const rnd = seeded(o.seed);
  const calls: Call[] = [];
  const deadline = now() + o.seconds;
  await Promise.all(o.nodes.map((n) => node(o, n, rnd, calls, deadline)));
  const listed = await list(o);
  writeFileSync(o.out, JSON.stringify({ calls, listed }));
  console.log(`driver done: ${calls.length} calls, ${listed.rows.length} bindings listed`);
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
