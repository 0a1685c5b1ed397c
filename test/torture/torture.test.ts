// Torture (issue 9): 64 nodes with distinct IPv6 sources request, renew and release against the servers for a fixed
// time while the test kill -9s and restarts them; every reply is recorded, and the checker (./checker.ts) then proves
// that no address was held by two nodes at once, no node held two addresses, and every acknowledged grant survived.
// Everything runs inside a namespace the test makes (the node addresses live on its loopback).
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Topology, output, waitForOutput } from '../support/netns';
import { cliUnavailable, dstmArgv } from '../support/dstm-procs';
import { netnsUnavailable } from '../support/netns';
import { PostgresCluster, needPostgres } from '../support/postgres';
import { skipIf } from '../support/skip';
import { type Call, type Listed, check } from './checker';
import type { Options } from './driver';
import { seeded } from '../support/random';
import { sleep } from '../support/wait';

const PREFIX = '2001:db8:77::';
const ADMIN = `${PREFIX}ad`;
const NODES = Array.from({ length: 64 }, (_, i) => `${PREFIX}${(0x1000 + i).toString(16)}`);
const PROGRAM = 0x2d53544d;
const SECONDS = 24;
/** Faults stop this long before the end, so every server is up for the last calls and the final listing. */
const QUIET = 6;

interface Cluster {
  t: Topology;
  ns: string;
  servers: { host: string; port: number; args: string[]; child?: ChildProcess }[];
}

async function startServer(c: Cluster, i: number): Promise<void> {
  const s = c.servers[i];
  s.child = c.t.spawn(c.ns, dstmArgv('server', ...s.args));
  await waitForOutput(s.child, /listening|serving|ready/i, 20_000);
}

async function killServer(c: Cluster, i: number): Promise<void> {
  const child = c.servers[i].child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

async function stopAll(c: Cluster): Promise<void> {
  for (let i = 0; i < c.servers.length; i++) await killServer(c, i);
}

/** Makes the namespace's node and server addresses; `count` servers share `config` (a "server" section). */
async function cluster(t: Topology, count: number, config: (i: number) => object): Promise<Cluster> {
  const ns = t.ns.s;
  const hosts = Array.from({ length: count }, (_, i) => `${PREFIX}a${i + 1}`);
  const batch = [...NODES, ...hosts, ADMIN].map((a) => `address replace ${a}/128 dev lo nodad`).join('\n');
  writeFileSync(join(t.dir, 'addrs.batch'), `${batch}\n`);
  await t.exec(ns, ['ip', '-6', '-batch', join(t.dir, 'addrs.batch')]);
  const servers = hosts.map((host, i) => {
    const file = join(t.dir, `server${i}.json`);
    writeFileSync(file, JSON.stringify({ server: { listen: [`[${host}]:3786`], ...config(i) } }));
    return { host, port: 3786, args: ['--config', file] };
  });
  return { t, ns, servers };
}

/** Runs the driver for SECONDS while `fault` is called at random moments until QUIET seconds before the end. */
async function torture(
  c: Cluster,
  seed: number,
  fault: (rnd: () => number, n: number) => Promise<string>,
): Promise<{ calls: Call[]; listed: { at: number; rows: Listed[] }; faults: string[] }> {
  const out = join(c.t.dir, `calls-${seed}.json`);
  const options: Options = {
    servers: c.servers.map(({ host, port }) => ({ host, port })),
    nodes: NODES,
    program: PROGRAM,
    seconds: SECONDS,
    seed,
    out,
    admin: ADMIN,
  };
  const driver = c.t.spawn(c.ns, [
    process.execPath,
    '--import',
    'tsx',
    join(__dirname, 'driver.ts'),
    JSON.stringify(options),
  ]);
  const done = new Promise<number | null>((r) => driver.once('exit', r));
  const rnd = seeded(seed);
  const faults: string[] = [];
  const quietAt = Date.now() + (SECONDS - QUIET) * 1000;
  while (Date.now() < quietAt && driver.exitCode === null) {
    await sleep(800 + rnd() * 1500);
    if (Date.now() < quietAt) faults.push(await fault(rnd, faults.length));
  }
  // Recovery: every server runs again before the quiet period's calls and the final listing.
  for (let i = 0; i < c.servers.length; i++) {
    const child = c.servers[i].child;
    if (!child || child.exitCode !== null || child.signalCode !== null) await startServer(c, i);
  }
  const code = await done;
  expect(code, output(driver)).to.equal(0);
  const result = JSON.parse(readFileSync(out, 'utf8')) as { calls: Call[]; listed: { at: number; rows: Listed[] } };
  return { ...result, faults };
}

function tally(calls: readonly Call[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of calls) if (c.error !== undefined) out[c.error] = (out[c.error] ?? 0) + 1;
  return out;
}

function report(name: string, r: ReturnType<typeof check>, faults: string[]): void {
  console.log(
    `      ${name}: ${r.calls} calls (${r.grants} grants, ${r.refusals} refusals, ${r.failures} failed), ` +
      `${faults.length} faults (${[...new Set(faults)].map((f) => `${faults.filter((x) => x === f).length} ${f}`).join(', ')}), ` +
      `${r.violations.length} violations`,
  );
}

/** The servers' shared settings: a /27 pool for 64 nodes (so some are refused), short holds, admin from ADMIN. */
function serverSection(extra: object): object {
  return {
    pools: ['198.51.100.0/27'],
    tep: { ipv6: '2001:db8:1::1', ipv4: '192.0.2.1' },
    lease: 60,
    hold: 2,
    admin_allow: [`${ADMIN}/128`],
    ...extra,
  };
}

describe('torture (namespaces, root)', function () {
  this.timeout(240_000);
  let t: Topology | undefined;
  let db: PostgresCluster | undefined;

  before(async function () {
    skipIf(this, netnsUnavailable() ?? cliUnavailable());
    t = await Topology.create();
  });

  after(async () => {
    await t?.destroy();
    await db?.stop();
  });

  it('one server on SQLite, kill -9 and restarted under 64 nodes: no violation', async () => {
    const c = await cluster(t!, 1, () => serverSection({ state_dir: join(t!.dir, 'sqlite') }));
    await startServer(c, 0);
    const r = await torture(c, 1, async () => {
      await killServer(c, 0);
      await startServer(c, 0);
      return 'server kill -9';
    });
    await stopAll(c);
    const result = check(r.calls, r.listed);
    report('sqlite', result, r.faults);
    expect(r.faults.length).to.be.at.least(2);
    expect(result.grants).to.be.greaterThan(200);
    expect(result.violations).to.deep.equal([]);
  });

  it('three servers on one PostgreSQL, servers kill -9ed and PostgreSQL crashed under 64 nodes: no violation', async function () {
    needPostgres(this);
    db = await PostgresCluster.start();
    // The servers, in the namespace, reach the database through its socket directory, which crosses namespaces.
    const url = new URL(await db.createDatabase());
    const store = `postgresql://${url.username}@localhost${url.pathname}?host=${encodeURIComponent(db.dir)}&port=${db.port}`;
    const c = await cluster(t!, 3, (i) => serverSection({ store, state_dir: join(t!.dir, `pg${i}`) }));
    for (let i = 0; i < 3; i++) await startServer(c, i);
    const r = await torture(c, 2, async (rnd, n) => {
      if (n % 3 === 1) {
        await db!.restart('immediate');
        return 'postgresql crash and restart';
      }
      const i = Math.floor(rnd() * 3);
      await killServer(c, i);
      await startServer(c, i);
      return 'server kill -9';
    });
    await stopAll(c);
    const result = check(r.calls, r.listed);
    report('postgresql', result, r.faults);
    console.log(`      refusals and failures: ${JSON.stringify(tally(r.calls))}`);
    expect(r.faults).to.include('postgresql crash and restart').and.to.include('server kill -9');
    expect(new Set(r.calls.filter((x) => x.ipv4 !== undefined).map((x) => x.server)).size).to.equal(3);
    expect(result.grants).to.be.greaterThan(200);
    expect(result.violations).to.deep.equal([]);
  });
});
