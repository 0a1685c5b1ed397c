// The DSTM topology of draft §4 in throwaway network namespaces, shared by the end-to-end tests, `npm run demo`
// and the data-plane benchmark:
//
//   S (DSTM server, IPv6) --- Y (TEP, dual stack) --- X (DSTM node, IPv6 only)
//                              |
//                              Z (IPv4-only host)
//
// Every name carries a per-run id (with the creating pid, so a later run can remove namespaces left by a killed
// one); destroy() kills what was spawned and deletes the namespaces. Addresses are documentation prefixes, used
// only inside these namespaces.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ADDR = {
  x6: '2001:db8:1::10',
  y6: '2001:db8:1::1', // the TEP address nodes tunnel to
  ys6: '2001:db8:2::1',
  s6: '2001:db8:2::10',
  domain6: ['2001:db8:1::/64', '2001:db8:2::/64'], // the DSTM domain
  y4: '192.0.2.1', // the TEP's IPv4 address, the DTI's peer
  z4: '192.0.2.2',
  pool4: '198.51.100.0/28',
  static4: '198.51.100.200', // Annex A address outside the pool
  // plain routed IPv6 to Z, only for the benchmark's kernel baseline
  yz6: '2001:db8:3::1',
  z6: '2001:db8:3::2',
} as const;

export type NodeName = 'x' | 'y' | 'z' | 's';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

const PREFIX = 'dstmt-';
let ids = 0; // Namespaces.newId's count

/** Why the namespace tests cannot run here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (run as root, e.g. sudo)';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  return undefined;
}

/** The Debian package of each tool the topology runs in its namespaces, beyond ip(8). */
const TOOLS = { ping: 'iputils-ping', tcpdump: 'tcpdump' } as const;

/** Which of `tools` are not on PATH, as one sentence naming the packages, or undefined when all are there. */
export function toolsMissing(tools: readonly (keyof typeof TOOLS)[]): string | undefined {
  const dirs = (process.env.PATH ?? '').split(':').filter((d) => d !== '');
  const missing = tools.filter((t) => !dirs.some((d) => existsSync(join(d, t))));
  if (missing.length === 0) return undefined;
  const are = missing.length > 1 ? 'are' : 'is';
  return `${missing.join(' and ')} ${are} missing (apt-get install ${missing.map((t) => TOOLS[t]).join(' ')})`;
}

/** Deletes namespaces and scratch directories left by runs whose process is gone (killed before its after()). */
async function removeStale(): Promise<void> {
  const alive = (pid36: string): boolean => {
    try {
      process.kill(parseInt(pid36, 36), 0);
      return true;
    } catch {
      return false;
    }
  };
  const { stdout } = await run('ip', ['netns', 'list']);
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0];
    const m = new RegExp(`^${PREFIX}([0-9a-z]+)-[0-9a-z]+-[0-9a-z]+$`).exec(name);
    if (m && !alive(m[1])) await run('ip', ['netns', 'del', name]).catch(() => undefined);
  }
  for (const name of readdirSync('/tmp')) {
    const m = new RegExp(`^${PREFIX}([0-9a-z]+)-`).exec(name);
    if (m && !alive(m[1])) rmSync(`/tmp/${name}`, { recursive: true, force: true });
  }
}

/**
 * Throwaway network namespaces named `dstmt-ID-SUFFIX` (ID carries the creating pid), a scratch directory, and the
 * processes started in them; destroy() removes all of it. Subclasses lay out their hosts and links in build().
 */
export class Namespaces {
  /** A scratch directory for this run (state directories, sockets), removed by destroy(). */
  readonly dir: string;
  private readonly made: string[] = [];
  private readonly children = new Set<ChildProcess>();

  protected constructor(readonly id: string) {
    this.dir = mkdtempSync(`/tmp/${PREFIX}${id}-`);
  }

  /**
   * A fresh id for a run: the pid (so a later run can tell a dead run's leftovers), then this process's start time
   * and a count, so that no other id of this process, nor a dead one's that had the same pid, is the same.
   */
  protected static newId(): string {
    return `${process.pid.toString(36)}-${Math.floor(performance.timeOrigin).toString(36)}${(++ids).toString(36)}`;
  }

  /** Creates namespaces in `self` via `build`, after removing dead runs' leftovers; on failure removes them again. */
  protected static async make<T extends Namespaces>(self: T, build: () => Promise<void>): Promise<T> {
    try {
      await build();
    } catch (err) {
      await self.destroy();
      throw err;
    }
    return self;
  }

  /** The name of host `suffix` (one lowercase letter or digit) in this run. */
  name(suffix: string): string {
    return `${PREFIX}${this.id}-${suffix}`;
  }

  /** Adds the namespace of host `suffix` with loopback up and no duplicate address detection; returns its name. */
  async add(suffix: string): Promise<string> {
    const n = this.name(suffix);
    await run('ip', ['netns', 'add', n]);
    this.made.push(n);
    await this.ip(n, 'link', 'set', 'lo', 'up');
    // no duplicate address detection: addresses are usable at once, and links made later inherit "default"
    await this.sysctl(n, 'net.ipv6.conf.all.accept_dad', '0');
    await this.sysctl(n, 'net.ipv6.conf.default.accept_dad', '0');
    return n;
  }

  /** A veth pair between two namespaces, created directly inside them (short fixed names never clash between runs). */
  async link(a: string, aDev: string, b: string, bDev: string): Promise<void> {
    await run('ip', ['link', 'add', aDev, 'netns', a, 'type', 'veth', 'peer', 'name', bDev, 'netns', b]);
    await this.ip(a, 'link', 'set', aDev, 'up');
    await this.ip(b, 'link', 'set', bDev, 'up');
  }

  async addr(ns: string, dev: string, cidr: string): Promise<void> {
    await this.ip(ns, '-6', 'addr', 'add', cidr, 'dev', dev, 'nodad');
  }

  async sysctl(ns: string, key: string, value: string): Promise<void> {
    await this.exec(ns, ['sysctl', '-q', '-w', `${key}=${value}`]);
  }

  async ip(ns: string, ...args: string[]): Promise<ExecResult> {
    return this.exec(ns, ['ip', ...args]);
  }

  /** Runs a command to completion inside a namespace; rejects with its stderr on a non-zero exit. */
  async exec(ns: string, cmd: string[], timeoutMs = 60_000): Promise<ExecResult> {
    try {
      const r = await run('ip', ['netns', 'exec', ns, ...cmd], { timeout: timeoutMs, maxBuffer: 16 << 20 });
      return { stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as Error & { stderr?: string; stdout?: string };
      throw new Error(`${ns}: ${cmd.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
    }
  }

  /**
   * Starts a long-running process inside a namespace; destroy() kills it if it is still running. Its output is
   * always read (a full pipe would stall it) and the last 64 KiB kept for diagnostics (output(child)).
   */
  spawn(ns: string, cmd: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    let kept = '';
    const keep = (d: Buffer): void => {
      kept = (kept + d.toString()).slice(-65536);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    outputs.set(child, () => kept);
    return child;
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => stopChild(c)));
    for (const n of this.made) await run('ip', ['netns', 'del', n]).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Throws why the namespace tests cannot run here, if they cannot; removes what dead runs left behind. */
export async function prepareNamespaces(): Promise<void> {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  await removeStale();
}

/** The draft's X, Y, Z and S (see the top of this file). */
export class Topology extends Namespaces {
  readonly ns: Record<NodeName, string>;

  private constructor(id: string) {
    super(id);
    this.ns = { x: this.name('x'), y: this.name('y'), z: this.name('z'), s: this.name('s') };
  }

  /** Builds the four namespaces, links and addresses; on failure removes whatever it made. */
  static async create(): Promise<Topology> {
    await prepareNamespaces();
    // build() pings across every link: say so before making anything, not as a failed exec halfway
    const why = toolsMissing(['ping']);
    if (why) throw new Error(why);
    const t = new Topology(Namespaces.newId());
    return Namespaces.make(t, () => t.build());
  }

  private async build(): Promise<void> {
    const { x, y, z, s } = this.ns;
    for (const k of ['x', 'y', 'z', 's']) await this.add(k);
    await this.link(x, 'eth-y', y, 'eth-x');
    await this.link(s, 'eth-y', y, 'eth-s');
    await this.link(z, 'eth-y', y, 'eth-z');

    await this.sysctl(x, 'net.ipv4.conf.all.forwarding', '0');
    await this.sysctl(z, 'net.ipv6.conf.all.disable_ipv6', '1');
    await this.sysctl(z, 'net.ipv6.conf.default.disable_ipv6', '1');
    await this.sysctl(y, 'net.ipv6.conf.all.forwarding', '1');
    await this.sysctl(y, 'net.ipv4.ip_forward', '1');

    await this.addr(x, 'eth-y', `${ADDR.x6}/64`);
    await this.addr(y, 'eth-x', `${ADDR.y6}/64`);
    await this.addr(s, 'eth-y', `${ADDR.s6}/64`);
    await this.addr(y, 'eth-s', `${ADDR.ys6}/64`);
    await this.ip(y, 'addr', 'add', `${ADDR.y4}/24`, 'dev', 'eth-z');
    await this.ip(z, 'addr', 'add', `${ADDR.z4}/24`, 'dev', 'eth-y');
    await this.ip(x, '-6', 'route', 'add', 'default', 'via', ADDR.y6);
    await this.ip(s, '-6', 'route', 'add', 'default', 'via', ADDR.ys6);
    await this.ip(z, 'route', 'add', 'default', 'via', ADDR.y4);
    // resolve the neighbours now (the first solicitation on a fresh veth is often lost, costing a 1 s retry later)
    await Promise.all([
      this.exec(x, ['ping', '-c', '1', '-W', '3', ADDR.y6]),
      this.exec(s, ['ping', '-c', '1', '-W', '3', ADDR.ys6]),
      this.exec(z, ['ping', '-c', '1', '-W', '3', ADDR.y4]),
    ]);
  }

  /** Adds plain IPv6 between Y and Z (the benchmark's kernel baseline); Z stays IPv4-only otherwise. */
  async enableIpv6ToZ(): Promise<void> {
    const { y, z } = this.ns;
    await this.sysctl(z, 'net.ipv6.conf.all.disable_ipv6', '0');
    await this.sysctl(z, 'net.ipv6.conf.eth-y.disable_ipv6', '0');
    await this.sysctl(z, 'net.ipv6.conf.lo.disable_ipv6', '0');
    await this.addr(z, 'eth-y', `${ADDR.z6}/64`);
    await this.addr(y, 'eth-z', `${ADDR.yz6}/64`);
    await this.ip(z, '-6', 'route', 'add', 'default', 'via', ADDR.yz6);
  }
}

const outputs = new WeakMap<ChildProcess, () => string>();

/** The last output (stdout and stderr) of a process started by Topology.spawn. */
export function output(child: ChildProcess): string {
  return outputs.get(child)?.() ?? '';
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill('SIGTERM');
  });
}

/** Resolves with the first line of the child's output (stdout or stderr) matching `re`. */
export function waitForOutput(child: ChildProcess, re: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (d: Buffer): void => {
      seen += d.toString();
      const m = seen.split('\n').find((l) => re.test(l));
      if (m !== undefined) finish(undefined, m);
    };
    const onExit = (code: number | null): void => finish(new Error(`exited (${code}) before ${re}; output:\n${seen}`));
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${re}; output:\n${seen}`)), timeoutMs);
    const finish = (err?: Error, line?: string): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(line as string);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}
