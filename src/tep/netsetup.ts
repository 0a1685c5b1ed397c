// The TEP's side of the kernel: its TUN device up at the tunnel MTU, the pools routed into it, IPv4 forwarding on.
import { readFileSync, writeFileSync } from 'node:fs';
import { ip, runIp, type RunOptions } from '../dti/netconfig';
import type { Logger } from '../log';

/** Writes a sysctl of this network namespace (/proc/sys/net is per namespace). */
export function writeSysctl(key: string, value: string): void {
  writeFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, value);
}

export function readSysctl(key: string): string {
  return readFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, 'utf8').trim();
}

export async function setupTepNetwork(dev: string, mtu: number, prefixes: string[], log: Logger, opts: RunOptions = {}): Promise<void> {
  // IPv6 on the TUN device would only send router solicitations and MLD reports into the IPv4 data path
  if (!opts.print) writeSysctl(`net.ipv6.conf.${dev}.disable_ipv6`, '1');
  await runIp([ip.linkMtu(dev, mtu), ip.linkUp(dev), ...prefixes.map((p) => ip.routeReplace(p, dev))], opts);
  if (!opts.print && readSysctl('net.ipv4.ip_forward') !== '1') {
    writeSysctl('net.ipv4.ip_forward', '1');
    log.warn('enabled IPv4 forwarding in this network namespace (net.ipv4.ip_forward=1)');
  }
}

export async function teardownTepNetwork(dev: string, prefixes: string[]): Promise<void> {
  await runIp(prefixes.map((p) => ip.routeDel(p, dev)));
}
