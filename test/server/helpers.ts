// Test helpers: real `dstm` processes and real IPv6 source addresses on the loopback interface.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = resolve(__dirname, '../..');
export const RUN = join(ROOT, 'bin/run.js');

/**
 * `n` different ports nothing uses, TCP or UDP, on any address: the kernel picks each (a socket bound to port 0),
 * all are held until the last is picked, then closed. As ports that refuse calls they are sure at the time of the
 * call; for a server that must be told its port up front they are the best available (something else could take
 * one before the server binds it).
 */
export async function freePorts(n: number): Promise<number[]> {
  const held: { close(done: () => void): unknown }[] = [];
  const ports: number[] = [];
  try {
    while (ports.length < n) {
      const tcp = createServer();
      await new Promise<void>((res, rej) => tcp.once('error', rej).listen(0, '::', res));
      held.push(tcp);
      const { port } = tcp.address() as AddressInfo;
      const udp = createSocket('udp6');
      const free = await new Promise<boolean>((res) => {
        udp.once('error', () => res(false));
        udp.bind(port, '::', () => res(true));
      });
      if (!free) {
        udp.close(); // the kernel picks another port next time: the TCP socket stays held
        continue;
      }
      held.push(udp);
      ports.push(port);
    }
  } finally {
    await Promise.all(held.map((s) => new Promise<void>((res) => s.close(() => res()))));
  }
  return ports;
}

/** One port nothing uses (freePorts). */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}

/** The port of the metrics endpoint a server started with `--metrics [::1]:0` bound, read from its log. */
export async function metricsPortOf(server: ServerProcess): Promise<number> {
  const { address } = await server.waitFor('metrics');
  return Number(/:(\d+)$/.exec(String(address))?.[1]);
}

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `dstm-${tag}-`));
}

let loopbackSets = 0;

/**
 * `n` addresses in a /96 of fd53:544d::/32 of this call's own, added to lo; remove() takes them away again. The /96
 * carries the pid, this process's start time and a count: other runs at the same time (or a killed one's leftovers,
 * under a pid used again) have other ones. The count comes first, so that this process's sets are in /64s of their
 * own: a server admits only so many TCP connections from one /64.
 */
export function loopbackAddresses(n: number): { addresses: string[]; remove(): void } {
  const hex = (v: number): string => (v & 0xffff).toString(16);
  const started = Math.floor(performance.timeOrigin / 1000);
  const prefix = `fd53:544d:${hex(++loopbackSets)}:${hex(process.pid)}:${hex(process.pid >>> 16)}:${hex(started)}`;
  const addresses = Array.from({ length: n }, (_, i) => `${prefix}:0:${(i + 1).toString(16)}`);
  const batch = (verb: string): string =>
    addresses.map((a) => `addr ${verb} ${a}/128 dev lo${verb === 'add' ? ' nodad' : ''}`).join('\n') + '\n';
  execFileSync('ip', ['-6', '-batch', '-'], { input: batch('add') });
  return {
    addresses,
    remove: () => {
      try {
        execFileSync('ip', ['-6', '-force', '-batch', '-'], {
          input: batch('del'),
          stdio: ['pipe', 'ignore', 'ignore'],
        });
      } catch {
        // already gone
      }
    },
  };
}

export interface ServerProcess {
  proc: ChildProcess;
  port: number;
  /** Every log record the server wrote (JSON lines on stderr). */
  logs: Record<string, unknown>[];
  /** Wait for a log record whose msg is `msg`. */
  waitFor(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Start `dstm server` and resolve once it listens. `args` are extra flags. It listens on [::1] (a bound address, so
 * UDP replies leave from the address the clients called, whatever their source address on lo).
 */
export async function startServer(
  args: string[],
  opts: { port?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ServerProcess> {
  const port = opts.port ?? (await freePort());
  const hasListen = args.includes('--listen');
  const proc = spawn(process.execPath, [RUN, 'server', ...(hasListen ? [] : ['--listen', `[::1]:${port}`]), ...args], {
    env: cleanEnv({ DSTM_LOG_LEVEL: 'debug', ...opts.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (r: Record<string, unknown>) => void }[] = [];
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      rec = { msg: line };
    }
    logs.push(rec);
    for (const w of waiters.splice(0)) {
      if (w.msg === rec.msg) w.resolve(rec);
      else waiters.push(w);
    }
  });
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const waitFor = (msg: string, timeoutMs = 15000): Promise<Record<string, unknown>> => {
    const seen = logs.find((r) => r.msg === msg);
    if (seen) return Promise.resolve(seen);
    return new Promise((res, rej) => {
      const t = setTimeout(
        () =>
          rej(
            new Error(
              `server did not log "${msg}" within ${timeoutMs} ms; logs: ${JSON.stringify(logs).slice(0, 2000)}`,
            ),
          ),
        timeoutMs,
      );
      waiters.push({ msg, resolve: (r) => (clearTimeout(t), res(r)) });
      void exited.then((code) =>
        rej(new Error(`server exited (${code}) before logging "${msg}": ${JSON.stringify(logs).slice(0, 2000)}`)),
      );
    });
  };
  await waitFor('listening');
  return {
    proc,
    port,
    logs,
    waitFor,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Run `dstm ARGS` to completion. */
export function runDstm(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [RUN, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => res({ code, stdout, stderr }));
  });
}

/** The test's environment without the variables that would point dstm at someone else's server or config. */
function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  for (const k of ['DSTM_CONFIG', 'DSTM_SERVER']) if (!(k in extra)) delete env[k];
  return env;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export { sleep } from '../support/wait';
