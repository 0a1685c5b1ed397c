// DSTM server benchmark.
// 1. REQUEST+RELEASE calls/s from 1, 8 and 64 nodes (each its own IPv6 source address on lo, one libtirpc client
//    each: bench/c/server_load.c), `dstm server` with its durable store vs the rpcgen-generated C server with a
//    hand-written in-memory allocator (bench/c/server_mem.c), same load, same run. Every REQUEST reply of ours
//    follows a WAL flush (a RELEASE reply leaves at its commit), so the best any durable server can do is the C
//    server's time per call plus one flush per REQUEST: the table shows that ceiling too. With few nodes it is below
//    0.5x of the in-memory server, since 0.5x leaves a node 2 x (its time per call with C) for a flush. The flush is
//    the median durable commit of one row on the same disk, measured before each row (idle) and during an extra,
//    unreported run of the C server under the same load (the contention any durable server would meet).
// 2. The shared store: REQUEST+RELEASE calls/s from 8 and 64 nodes, two servers on one PostgreSQL (half the nodes
//    each) vs one server on SQLite, same run, same disk; then p50/p99 REQUEST latency on each store. Beside them,
//    a reference for what PostgreSQL itself does on this machine: pgbench with as many clients as nodes, each
//    committing a one-row UPDATE of its own row durably per call (no lease logic, no RPC, no numbering).
//    Each store's servers first get SERVER_BENCH_WARMUP seconds (default 8; half over UDP, half over TCP, 64 nodes)
//    of untimed load, as a server that has run for a while has had: freshly started servers and database sessions
//    serve at about half speed for their first seconds of load (V8 compiling the hot paths, PostgreSQL planning
//    each session's statements and filling its caches), and the runs, 2 s each, would measure that.
// 3. Allocation latency and memory per binding with 1k, 100k and 1M active bindings in a /12 pool.
// 4. Start-up time with 1M bindings (store open + pool index rebuilt; and the whole process until it listens).
// SERVER_BENCH_PARTS (e.g. "store") runs only the named parts: throughput, store, scaling.
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { parseIPv6, parsePrefix4 } from '../src/lib/addr';
import { LeaseService, type LeasePolicy } from '../src/server/leases';
import { SqliteStore } from '../src/server/sqlite-store';
import { DstmClient } from '../src/protocol/client';
import { loopbackAddresses, startServer, tempDir, type ServerProcess } from '../test/server/helpers';
import { PG_BIN, PostgresCluster, postgresMissing } from '../test/support/postgres';

const PROGRAM = 0x2d53544d;
const SECONDS = Number(process.env.SERVER_BENCH_SECONDS ?? 2);
/** Untimed load that each server set of the shared-store comparison gets before its runs (see the header), seconds. */
const WARMUP_SECONDS = Number(process.env.SERVER_BENCH_WARMUP ?? 8);
const NODES = [1, 8, 64];
/** Nodes of the shared-store comparison. */
const STORE_NODES = [8, 64];
const execFileP = promisify(execFile);
const OUT = join(__dirname, 'out/server-c');
/** The server half shared with the rpcgen peers of the RPC tests (test/rpc/c/dstm_serve.c). */
const PEERS = join(__dirname, '../test/rpc/c');

function buildC(): { mem: string; load: string } {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  execFileSync('cp', [join(__dirname, '../xdr/dstm.x'), OUT]);
  for (const [flag, file] of [
    ['-h', 'dstm.h'],
    ['-c', 'dstm_xdr.c'],
    ['-m', 'dstm_svc.c'],
  ])
    execFileSync('rpcgen', [flag, 'dstm.x', '-o', file], { cwd: OUT });
  const cc = (out: string, srcs: string[], libs: string[]): string => {
    execFileSync('gcc', ['-O2', '-I.', '-I/usr/include/tirpc', `-I${PEERS}`, '-o', out, ...srcs, '-ltirpc', ...libs], {
      cwd: OUT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    return join(OUT, out);
  };
  return {
    mem: cc(
      'server_mem',
      [join(__dirname, 'c/server_mem.c'), join(PEERS, 'dstm_serve.c'), 'dstm_svc.c', 'dstm_xdr.c'],
      [],
    ),
    load: cc('server_load', [join(__dirname, 'c/server_load.c'), 'dstm_xdr.c'], ['-lpthread']),
  };
}

function load(
  bin: string,
  netid: string,
  port: number,
  nodes: number,
  prefix: string,
  seconds = SECONDS,
): Promise<{ rate: number; errors: number }> {
  return new Promise((resolve, reject) => {
    execFile(
      bin,
      [netid, String(port), String(PROGRAM), String(nodes), String(seconds), prefix],
      { timeout: (seconds + 30) * 1000 },
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
 * `load` with the nodes spread evenly over `prefixes` (one generator each, calling `ports` in turn): a server takes at
 * most 32 TCP connections from one /64, and each prefix is a /64 of its own.
 */
async function spread(
  bin: string,
  netid: string,
  ports: number[],
  nodes: number,
  prefixes: string[],
  seconds = SECONDS,
): Promise<{ rate: number; errors: number }> {
  const share = (i: number): number => Math.floor(nodes / prefixes.length) + (i < nodes % prefixes.length ? 1 : 0);
  const runs = prefixes
    .map((prefix, i) => ({ prefix, port: ports[i % ports.length], n: share(i) }))
    .filter((r) => r.n > 0)
    .map((r) => load(bin, netid, r.port, r.n, r.prefix, seconds));
  const results = await Promise.all(runs);
  return results.reduce((t, r) => ({ rate: t.rate + r.rate, errors: t.errors + r.errors }), { rate: 0, errors: 0 });
}

/** The part of `loopbackAddresses`' addresses before the node number (it numbers them 1..n in hex). */
function prefixOf(lo: { addresses: string[] }): string {
  return lo.addresses[0].slice(0, -1);
}

function startC(bin: string): Promise<{ udp: number; tcp: number; stop(): void }> {
  return new Promise((resolve, reject) => {
    const p = execFile(bin, [String(PROGRAM), '10.0.0.0', '16']);
    p.stdout!.once('data', (d: Buffer) => {
      const m = /ready (\d+) (\d+)/.exec(d.toString());
      if (!m) return reject(new Error(`C server: ${d.toString()}`));
      resolve({ udp: Number(m[1]), tcp: Number(m[2]), stop: () => p.kill('SIGKILL') });
    });
    p.once('error', reject);
  });
}

/**
 * Milliseconds per durable commit of one small row, on the disk the stores use, committing for `forMs` (median: the
 * disk's latency varies). Blocks this thread: the servers and the load generator are other processes.
 */
function commitLatency(dir: string, forMs: number): number {
  const file = join(dir, 'probe.sqlite');
  rmSync(file, { force: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)');
  const ins = db.prepare('INSERT OR REPLACE INTO t VALUES (?, ?)');
  for (let i = 0; i < 50; i++) ins.run(i, Buffer.alloc(16));
  const ms: number[] = [];
  for (let i = 0, end = performance.now() + forMs; i < 50 || performance.now() < end; i++) {
    const t0 = performance.now();
    ins.run(i % 50, Buffer.alloc(16));
    ms.push(performance.now() - t0);
  }
  db.close();
  return percentile(ms, 0.5);
}

async function throughput(c: { mem: string; load: string }): Promise<void> {
  const los = [loopbackAddresses(32), loopbackAddresses(32)];
  const prefixes = los.map(prefixOf);
  const dir = tempDir('bench-server');
  try {
    const cServer = await startC(c.mem);
    const ours = await startServer(['--state-dir', join(dir, 'state'), '--pool', '10.0.0.0/16'], {
      env: { DSTM_LOG_LEVEL: 'info' },
    });
    try {
      console.log(
        `\nREQUEST+RELEASE, version 1 packets, ${SECONDS} s per run, best of 2 alternating runs; flush: median durable commit of one row on the same disk, ` +
          'measured while the C server is under the same load (the contention any durable server would meet), and idle',
      );
      console.log(
        '| transport | nodes | dstm server, durable (calls/s) | rpcgen C, in memory (calls/s) | ours/C | flush under load (ms) | idle (ms) | durable ceiling (calls/s) | ceiling/C | ours/ceiling |',
      );
      console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
      const bounded: string[] = [];
      for (const netid of ['udp6', 'tcp6']) {
        for (const n of NODES) {
          const cPort = netid === 'udp6' ? cServer.udp : cServer.tcp;
          const idleMs = commitLatency(dir, 100);
          // The flush under load comes from a run of its own, so that the probe takes nothing from the measured ones.
          const probed = spread(c.load, netid, [cPort], n, prefixes);
          const commitMs = commitLatency(dir, SECONDS * 500);
          await probed;
          const a = { rate: 0, errors: 0 };
          const b = { rate: 0, errors: 0 };
          for (let round = 0; round < 2; round++) {
            for (const [best, port] of [
              [a, ours.port],
              [b, cPort],
            ] as const) {
              const r = await spread(c.load, netid, [port], n, prefixes);
              best.rate = Math.max(best.rate, r.rate);
              best.errors += r.errors;
            }
          }
          const errs = a.errors + b.errors > 0 ? ` errors: ours ${a.errors}, C ${b.errors}` : '';
          // Each node: a REQUEST and a RELEASE in the C server's time per call (2n / C seconds per pair), plus a flush.
          const ceiling = (2 * n) / ((2 * n) / b.rate + commitMs / 1000);
          console.log(
            `| ${netid} | ${n} | ${Math.round(a.rate)} | ${Math.round(b.rate)} | ${(a.rate / b.rate).toFixed(2)}x | ${commitMs.toFixed(2)} | ${idleMs.toFixed(2)} | ${Math.round(ceiling)} | ${(ceiling / b.rate).toFixed(2)}x | ${(a.rate / ceiling).toFixed(2)} |${errs}`,
          );
          // 0.5x of C leaves each pair 4n / C seconds: 2n / C for the calls, 2n / C for the flush.
          if (ceiling < b.rate / 2)
            bounded.push(
              `${netid} ${n} needs a flush under ${((2000 * n) / b.rate).toFixed(3)} ms, the disk's was ${commitMs.toFixed(2)} ms under load`,
            );
        }
      }
      if (bounded.length)
        console.log(`0.5x is out of reach of any durable server on this disk where: ${bounded.join('; ')}`);
    } finally {
      cServer.stop();
      await ours.stop();
    }
  } finally {
    for (const lo of los) lo.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** REQUEST latency from `nodes` clients (split over `ports`), each calling REQUEST then RELEASE for `ms`. */
async function requestLatency(
  ports: number[],
  addresses: string[],
  ms: number,
): Promise<{ p50: number; p99: number; n: number }> {
  const clients = await Promise.all(
    addresses.map((local, i) =>
      DstmClient.connect({ host: '::1', port: ports[i % ports.length], program: PROGRAM, local, timeoutMs: 5000 }),
    ),
  );
  const lat: number[] = [];
  const end = performance.now() + ms;
  try {
    await Promise.all(
      clients.map(async (c) => {
        while (performance.now() < end) {
          const t0 = performance.now();
          await c.request();
          lat.push(performance.now() - t0);
          await c.release();
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
  return { p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), n: lat.length };
}

async function sharedStore(c: { load: string }): Promise<void> {
  const missing = postgresMissing();
  if (missing) {
    console.log(`\nshared store: skipped (${missing})`);
    return;
  }
  const cluster = await PostgresCluster.start();
  const loA = loopbackAddresses(64);
  const loB = loopbackAddresses(64);
  const dir = tempDir('bench-store');
  const servers: ServerProcess[] = [];
  try {
    const url = await cluster.createDatabase();
    const quiet = { env: { DSTM_LOG_LEVEL: 'info' } };
    const sqlite = await startServer(['--state-dir', join(dir, 'state'), '--pool', '10.0.0.0/16'], quiet);
    servers.push(sqlite);
    const pgA = await startServer(['--store', url, '--pool', '10.0.0.0/16'], quiet);
    servers.push(pgA);
    const pgB = await startServer(['--store', url, '--pool', '10.0.0.0/16'], quiet);
    servers.push(pgB);
    console.log(
      `\nREQUEST+RELEASE, version 1 packets, ${SECONDS} s per run, best of 2 alternating runs after ${WARMUP_SECONDS} s of untimed load on each store: two servers on one PostgreSQL 15 (half the nodes each, distinct nodes) vs one server on SQLite (all of them), same disk, same two load generators`,
    );
    const pgbenchScript = await pgbenchTable(cluster, url, Math.max(...STORE_NODES), dir);
    // The same two load generators for every run, each with half the nodes.
    const prefixes = [prefixOf(loA), prefixOf(loB)];
    for (const ports of [[sqlite.port], [pgA.port, pgB.port]])
      for (const netid of ['udp6', 'tcp6'])
        await spread(c.load, netid, ports, Math.max(...STORE_NODES), prefixes, WARMUP_SECONDS / 2);
    console.log(
      '| transport | nodes | SQLite, one server (calls/s) | PostgreSQL, two servers (calls/s) | PostgreSQL/SQLite | pgbench, one-row durable commit per call (commits/s) | pgbench/SQLite | PostgreSQL/pgbench |',
    );
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const netid of ['udp6', 'tcp6']) {
      for (const n of STORE_NODES) {
        let one = 0;
        let two = 0;
        let reference = 0;
        let errors = 0;
        for (let round = 0; round < 2; round++) {
          const s1 = await spread(c.load, netid, [sqlite.port], n, prefixes);
          one = Math.max(one, s1.rate);
          const s2 = await spread(c.load, netid, [pgA.port, pgB.port], n, prefixes);
          two = Math.max(two, s2.rate);
          reference = Math.max(reference, await pgbenchCommits(url, n, pgbenchScript));
          errors += s1.errors + s2.errors;
        }
        console.log(
          `| ${netid} | ${n} | ${Math.round(one)} | ${Math.round(two)} | ${(two / one).toFixed(2)}x | ${Math.round(reference)} | ${(reference / one).toFixed(2)}x | ${(two / reference).toFixed(2)}x |${errors ? ` errors ${errors}` : ''}`,
        );
      }
    }
    console.log(
      '\nREQUEST latency, 8 nodes over UDP each calling REQUEST then RELEASE for 2 s (DstmClient, in this process)',
    );
    console.log('| store | requests | p50 (ms) | p99 (ms) |');
    console.log('|---|---:|---:|---:|');
    for (const [name, ports] of [
      ['SQLite, one server', [sqlite.port]],
      ['PostgreSQL, two servers', [pgA.port, pgB.port]],
    ] as const) {
      const r = await requestLatency([...ports], loA.addresses.slice(0, 8), 2000);
      console.log(`| ${name} | ${r.n} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`);
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    loA.remove();
    loB.remove();
    rmSync(dir, { recursive: true, force: true });
    await cluster.stop();
  }
}

/**
 * The pgbench reference's table, one row per pgbench client (so clients never wait on each other's row locks), and the pgbench
 * script (written into `dir`) that updates the client's row.
 */
async function pgbenchTable(cluster: PostgresCluster, url: string, clients: number, dir: string): Promise<string> {
  await cluster.sql(
    url,
    `CREATE TABLE bench_commit (id int PRIMARY KEY, v bigint NOT NULL);
     INSERT INTO bench_commit SELECT g, 0 FROM generate_series(1, ${clients}) g`,
  );
  const script = join(dir, 'commit.sql');
  writeFileSync(script, '\\set id :client_id + 1\nUPDATE bench_commit SET v = v + 1 WHERE id = :id;\n');
  return script;
}

/** Durable one-row commits per second from `clients` pgbench clients, each updating its own row (see the header). */
async function pgbenchCommits(url: string, clients: number, script: string): Promise<number> {
  const { stdout } = await execFileP(
    join(PG_BIN, 'pgbench'),
    ['-n', '-c', String(clients), '-j', '2', '-T', String(SECONDS), '-f', script, url],
    { env: { ...process.env, PGOPTIONS: '-c synchronous_commit=on' } },
  );
  const tps = /^tps = ([0-9.]+)/m.exec(stdout);
  if (!tps) throw new Error(`pgbench printed no tps: ${stdout}`);
  return Number(tps[1]);
}

const POOL = parsePrefix4('10.0.0.0/12');

function policy(): LeasePolicy {
  return {
    lease: 86400,
    maxLease: 86400,
    hold: 600,
    pools: [POOL],
    exclude: [],
    skipNetworkBroadcast: true,
    reservations: [],
    teps: [],
  };
}

/** Bindings for nodes 2001:db8::[from+1 .. to], written straight into the store (the fixture, not the measurement). */
function fill(dir: string, from: number, to: number): void {
  const s = new SqliteStore(dir);
  const now = Math.floor(Date.now() / 1000);
  const ins = s.db.prepare('INSERT INTO bindings (ip4, ip6, state, starts, ends) VALUES (?, ?, 0, ?, ?)');
  const feed = s.db.prepare('INSERT INTO feed (ip4, ip6, starts, ends, active) VALUES (?, ?, ?, ?, 1)');
  const ip6 = Buffer.from(parseIPv6('2001:db8::'));
  s.db.transaction(() => {
    for (let i = from + 1; i <= to; i++) {
      ip6.writeUInt32BE(i, 12);
      ins.run(POOL.base + i, ip6, now, now + 86400);
      feed.run(POOL.base + i, ip6, now, now + 86400);
    }
  })();
  void s.close();
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

async function scaling(): Promise<void> {
  const dir = tempDir('bench-scale');
  try {
    console.log(
      '\nAllocation with N active bindings in a /12 pool (durable store; one allocation at a time, then 1000 at once)',
    );
    console.log(
      '| active bindings | start-up (ms) | alloc p50 (ms) | alloc p99 (ms) | 1000 at once (µs/alloc) | process RSS (MB) | store (B/binding) |',
    );
    console.log('|---:|---:|---:|---:|---:|---:|---:|');
    const rss: [number, number][] = [];
    let have = 0;
    let node = 10_000_000; // nodes allocated by the measurement, outside the fixture's numbering
    for (const n of [1_000, 100_000, 1_000_000]) {
      fill(dir, have, n);
      have = n;
      const t0 = performance.now();
      const store = new SqliteStore(dir);
      const svc = await LeaseService.open(store, policy());
      const startMs = performance.now() - t0;
      const ip6 = (): Buffer => {
        const b = Buffer.from(parseIPv6('2001:db8:1::'));
        b.writeUInt32BE(++node, 12);
        return b;
      };
      const lat: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t = performance.now();
        const g = await svc.request(ip6(), 0, 0);
        lat.push(performance.now() - t);
        if (g.status !== 'ok') throw new Error(`allocation failed: ${g.status}`);
      }
      const tb = performance.now();
      await Promise.all(Array.from({ length: 1000 }, () => svc.request(ip6(), 0, 0)));
      const batchUs = ((performance.now() - tb) * 1000) / 1000;
      const mem = process.memoryUsage().rss;
      rss.push([n, mem]);
      const bytes = statSync(join(dir, 'dstm.sqlite')).size;
      await store.close();
      have += 1200; // the measurement's nodes took the next addresses; the fixture continues after them
      console.log(
        `| ${n.toLocaleString('en')} | ${startMs.toFixed(0)} | ${percentile(lat, 0.5).toFixed(2)} | ${percentile(lat, 0.99).toFixed(2)} | ${batchUs.toFixed(1)} | ${(mem / 1e6).toFixed(0)} | ${Math.round(bytes / n)} |`,
      );
    }
    const [[n0, m0], , [n1, m1]] = rss;
    console.log(
      `process memory per binding, 1k -> 1M: ${((m1 - m0) / (n1 - n0)).toFixed(1)} B (the pool index is fixed: 4 B + 2 bits per pool address)`,
    );
    const t0 = performance.now();
    const s = await startServer(['--state-dir', dir, '--pool', '10.0.0.0/12', '--lease', '86400']);
    const processMs = performance.now() - t0;
    const loaded = s.logs.find((r) => r.msg === 'store loaded') as { ms: number; active: number };
    await s.stop();
    console.log(
      `\nstart-up with ${loaded.active.toLocaleString('en')} bindings: store + pool index ${loaded.ms} ms; whole process until it listens ${processMs.toFixed(0)} ms (target < 2000 ms)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  let c: { mem: string; load: string };
  try {
    c = buildC();
  } catch (err) {
    console.log(`skipped: cannot build the C baseline (rpcgen, gcc, libtirpc-dev): ${(err as Error).message}`);
    return;
  }
  const parts = (process.env.SERVER_BENCH_PARTS ?? 'throughput,store,scaling').split(',');
  if (parts.includes('throughput')) await throughput(c);
  if (parts.includes('store')) await sharedStore(c);
  if (parts.includes('scaling')) await scaling();
}
