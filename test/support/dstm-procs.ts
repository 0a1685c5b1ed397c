// Running the real dstm commands inside the topology's namespaces, for the end-to-end tests, the demo and the
// benchmark: each is `node bin/run.js ...` (the compiled CLI, built by `npm run build`) in its own namespace.
import { spawnSync, type ChildProcess, type SpawnSyncOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ADDR, Topology, waitForOutput } from './netns';
import { queryControl } from '../../src/lib/control';
import type { TepStats } from '../../src/tep/tep';

export const ROOT = join(__dirname, __dirname.split('/').includes('dist') ? '../../..' : '../..');

/** The argv that runs `dstm ARGS` with this checkout's compiled CLI. */
export function dstmArgv(...args: string[]): string[] {
  return [process.execPath, join(ROOT, 'bin', 'run.js'), ...args];
}

/**
 * The argv that runs the TypeScript file `script` (a test's peer or packet sender) in a child node. tsx's CommonJS
 * hook alone, not `--import tsx`: that one also starts tsx's ESM loader thread, twice the start-up (0.6 s against 0.3).
 */
export function tsArgv(script: string, ...args: string[]): string[] {
  return [process.execPath, '--require', require.resolve('tsx/cjs'), script, ...args];
}

/**
 * `dstm ARGS` (the compiled CLI) to completion, without the caller's DSTM_CONFIG and DSTM_SERVER, which would point
 * it at someone else's configuration or server.
 */
export function runDstmSync(
  args: string[],
  opts: SpawnSyncOptions = {},
): { code: number | null; stdout: string; stderr: string } {
  const [cmd, ...argv] = dstmArgv(...args);
  const env = { ...process.env, ...(opts.env ?? {}) };
  delete env.DSTM_CONFIG;
  delete env.DSTM_SERVER;
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 60_000, ...opts, env });
  return { code: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Why the compiled CLI cannot run, or undefined. */
export function cliUnavailable(): string | undefined {
  if (!existsSync(join(ROOT, 'dist', 'src', 'commands'))) return 'the CLI is not compiled: run `npm run build` first';
  if (!existsSync(join(ROOT, 'build', 'Release', 'dstm_native.node')))
    return 'the device addon is not built: run `npm ci` or `npm rebuild`';
  return undefined;
}

/** Where a TEP in this topology serves its counters (a unix socket, reachable from every namespace). */
export function tepControlPath(t: Topology): string {
  return `${t.dir}/tep.sock`;
}

/** Starts `dstm tep` in Y with the topology's addresses plus `extra` flags; resolves once it is forwarding. */
export async function startTep(t: Topology, extra: string[]): Promise<ChildProcess> {
  const tep = spawnTep(t, extra);
  await waitForOutput(tep, /tep ready/);
  return tep;
}

/** Spawns `dstm tep` in Y as startTep does, without waiting for it (for a TEP that is expected not to start). */
export function spawnTep(t: Topology, extra: string[]): ChildProcess {
  return t.spawn(
    t.ns.y,
    dstmArgv(
      'tep',
      '--ipv6',
      ADDR.y6,
      '--ipv4',
      ADDR.y4,
      '--pool',
      ADDR.pool4,
      '--control',
      tepControlPath(t),
      ...ADDR.domain6.flatMap((p) => ['--prefix', p]),
      ...extra,
    ),
    { env: { ...process.env, DSTM_LOG_LEVEL: process.env.DSTM_LOG_LEVEL ?? 'info' } },
  );
}

/** Starts `dstm static` in X with the Annex A address and Y as TEP; resolves once the DTI is up. */
export async function startStaticNode(t: Topology, extra: string[] = []): Promise<ChildProcess> {
  const node = t.spawn(
    t.ns.x,
    dstmArgv('static', '--tep', ADDR.y6, '--address', ADDR.static4, '--peer', ADDR.y4, ...extra),
  );
  await waitForOutput(node, /dti up/);
  return node;
}

/** The data-plane modes every forwarding e2e suite runs in: TUN offloads (the default) and without. */
export const OFFLOAD_MODES: [label: string, flags: string[]][] = [
  ['offloads', []],
  ['--no-offload', ['--no-offload']],
];

export const SERVER = `[${ADDR.s6}]:3786`;

/** Where the node in X (`dstm request --hold`) serves `dstm status`. */
export function nodeControlPath(t: Topology): string {
  return `${t.dir}/node.sock`;
}

/** Starts `dstm server` in S leasing the topology's pool with Y as TEP; `extra` flags are added. */
export async function startServer(t: Topology, extra: string[] = []): Promise<ChildProcess> {
  const server = t.spawn(
    t.ns.s,
    dstmArgv(
      'server',
      '--listen',
      SERVER,
      '--pool',
      ADDR.pool4,
      '--tep',
      `${ADDR.y6},${ADDR.y4}`,
      '--state-dir',
      `${t.dir}/server`,
      ...extra,
    ),
  );
  await waitForOutput(server, /listening|serving|ready/i);
  return server;
}

/** Starts `dstm request --hold --device dti0 --json` in X (plus `extra`); resolves when it runs (not yet leased). */
export function startNode(t: Topology, extra: string[] = []): ChildProcess {
  return t.spawn(
    t.ns.x,
    dstmArgv(
      'request',
      '--server',
      SERVER,
      '--hold',
      '--device',
      'dti0',
      '--json',
      '--control',
      nodeControlPath(t),
      ...extra,
    ),
  );
}

/** What the topology's TEP answers on its control socket (what `dstm tep stats --json` prints). */
export function tepStats(t: Topology): Promise<TepStatsJson> {
  return tepStatsAt(tepControlPath(t));
}

/**
 * The stats document of the TEP serving `control`, read from the socket in this process: the tests poll it in loops,
 * where a `dstm tep stats --json` process each time would cost 0.3 s of CPU a poll. The command prints this very
 * document (test/cli/json.test.ts; the e2e server test runs it against a real TEP too).
 */
export async function tepStatsAt(control: string): Promise<TepStatsJson> {
  return (await queryControl(control)) as TepStatsJson;
}

/** What `dstm tep stats --json` prints: the TEP's own stats document. */
export type TepStatsJson = TepStats;
