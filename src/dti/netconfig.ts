// Interface configuration for the DTI through iproute2: a builder of `ip` argument lists (pure, testable, and
// printable for `dstm static --print`) and a runner. Addresses and routes are the kernel's business; the data
// plane only reads and writes packets, so nothing here is on a hot path.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** One iproute2 invocation: the arguments after `ip`. */
export interface IpCommand {
  readonly args: readonly string[];
  /** iproute2 errors that mean "nothing to do" for this command (e.g. a removal whose target is already gone). */
  readonly ignore?: RegExp;
}

/** What iproute2 says when a removal finds nothing to remove (e.g. the device vanished with its process). */
const GONE = /Cannot find device|No such process|Cannot assign requested address|No such device|does not exist/;

const family = (addr: string): string => (addr.includes(':') ? '-6' : '-4');

export interface RouteOptions {
  via?: string;
  /** Preferred source address for locally originated packets (the leased IPv4 address on a node). */
  src?: string;
  metric?: number;
  mtu?: number;
}

function routeArgs(prefix: string, dev: string, o: RouteOptions): string[] {
  const a = [prefix];
  if (o.via) a.push('via', o.via);
  a.push('dev', dev);
  if (o.src) a.push('src', o.src);
  if (o.metric !== undefined) a.push('metric', String(o.metric));
  if (o.mtu !== undefined) a.push('mtu', String(o.mtu));
  return a;
}

/** Builders for the few commands a DTI needs. `cidr` is "ADDR/LEN"; `peer` makes a point-to-point address. */
export const ip = {
  linkUp: (dev: string): IpCommand => ({ args: ['link', 'set', 'dev', dev, 'up'] }),
  linkDown: (dev: string): IpCommand => ({ args: ['link', 'set', 'dev', dev, 'down'], ignore: GONE }),
  /** No IPv6 link-local address on the DTI: it carries IPv4 only, so no ND/MLD chatter reaches the tunnel. */
  // A device whose MTU is below 1280 has IPv6 off already, and the kernel then refuses the setting.
  noLinkLocal: (dev: string): IpCommand => ({
    args: ['link', 'set', 'dev', dev, 'addrgenmode', 'none'],
    ignore: /Address family not supported/,
  }),
  linkMtu: (dev: string, mtu: number): IpCommand => ({ args: ['link', 'set', 'dev', dev, 'mtu', String(mtu)] }),
  linkTxQueueLen: (dev: string, packets: number): IpCommand => ({
    args: ['link', 'set', 'dev', dev, 'txqueuelen', String(packets)],
  }),
  addrAdd: (dev: string, cidr: string, peer?: string): IpCommand => ({
    args: [family(cidr), 'addr', 'add', cidr, ...(peer ? ['peer', peer] : []), 'dev', dev],
  }),
  addrDel: (dev: string, cidr: string, peer?: string): IpCommand => ({
    args: [family(cidr), 'addr', 'del', cidr, ...(peer ? ['peer', peer] : []), 'dev', dev],
    ignore: GONE,
  }),
  routeAdd: (prefix: string, dev: string, o: RouteOptions = {}): IpCommand => ({
    args: [family(prefix), 'route', 'add', ...routeArgs(prefix, dev, o)],
  }),
  /** Adds or replaces (idempotent, for routes that may exist from an earlier run). */
  routeReplace: (prefix: string, dev: string, o: RouteOptions = {}): IpCommand => ({
    args: [family(prefix), 'route', 'replace', ...routeArgs(prefix, dev, o)],
  }),
  routeDel: (prefix: string, dev: string, o: RouteOptions = {}): IpCommand => ({
    args: [family(prefix), 'route', 'del', ...routeArgs(prefix, dev, o)],
    ignore: GONE,
  }),
};

const SAFE = /^[\w@%+=:,./-]+$/;

/** The shell line for a command, as `--print` shows it (quoted only where needed). */
export function formatIp(cmd: IpCommand, netns?: string): string {
  const argv = [...(netns ? ['-n', netns] : []), ...cmd.args];
  return ['ip', ...argv.map((a) => (SAFE.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`))].join(' ');
}

export interface RunOptions {
  /** Run in this network namespace (`ip -n NS …`). */
  netns?: string;
  /** Instead of running, hand each command line to this function (the `--print` mode). */
  print?: (line: string) => void;
}

/** Runs the commands in order; the first failure (other than one the command ignores) throws. */
export async function runIp(cmds: readonly IpCommand[], opts: RunOptions = {}): Promise<void> {
  for (const cmd of cmds) {
    if (opts.print) {
      opts.print(formatIp(cmd, opts.netns));
      continue;
    }
    const argv = [...(opts.netns ? ['-n', opts.netns] : []), ...cmd.args];
    try {
      await execFileP('ip', argv);
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? '').trim();
      if (cmd.ignore?.test(stderr)) continue;
      throw new Error(`${formatIp(cmd, opts.netns)} failed: ${stderr || (err as Error).message}`);
    }
  }
}

/**
 * The file of a sysctl key, as sysctl(8) reads keys: parts separated by dots ("net.ipv4.ip_forward") or, when the key
 * holds a slash, by slashes, dots then being part of a name (an interface "dti.0": see ifSysctl).
 */
export function sysctlPath(key: string): string {
  return `/proc/sys/${key.includes('/') ? key : key.replace(/\./g, '/')}`;
}

/** The key of a per-interface setting, e.g. net/ipv6/conf/DEV/disable_ipv6: slashes, as DEV may hold dots. */
export function ifSysctl(family: 'ipv4' | 'ipv6', dev: string, setting: string): string {
  return `net/${family}/conf/${dev}/${setting}`;
}

/** Writes a sysctl of the current network namespace (/proc/sys/net is per namespace), e.g. "net.ipv4.ip_forward". */
export function writeSysctl(key: string, value: string): void {
  writeFileSync(sysctlPath(key), value);
}

export function readSysctl(key: string): string {
  return readFileSync(sysctlPath(key), 'utf8').trim();
}
