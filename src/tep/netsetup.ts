// The TEP's side of the kernel: its TUN device up at the tunnel MTU with its transmit queue length, the pools routed
// into it, IPv4 forwarding on.
import { ifSysctl, ip, readSysctl, runIp, writeSysctl } from '../dti/netconfig';
import type { Logger } from '../lib/log';

export interface TepDevice {
  name: string;
  mtu: number;
  /** txqueuelen: for a TUN device, the packets each queue holds until the TEP reads them (tun_tx_dropped beyond). */
  txQueueLen: number;
}

export async function setupTepNetwork(dev: TepDevice, prefixes: string[], log: Logger): Promise<void> {
  // IPv6 on the TUN device would only send router solicitations and MLD reports into the IPv4 data path
  writeSysctl(ifSysctl('ipv6', dev.name, 'disable_ipv6'), '1');
  // The ICMPv4 errors the TEP writes to its TUN device come from its own IPv4 address: without accept_local the
  // kernel drops them as martians instead of routing them to the IPv4 host.
  writeSysctl(ifSysctl('ipv4', dev.name, 'accept_local'), '1');
  await runIp([
    ip.linkMtu(dev.name, dev.mtu),
    ip.linkTxQueueLen(dev.name, dev.txQueueLen),
    ip.linkUp(dev.name),
    ...prefixes.map((p) => ip.routeReplace(p, dev.name)),
  ]);
  if (readSysctl('net.ipv4.ip_forward') !== '1') {
    writeSysctl('net.ipv4.ip_forward', '1');
    log.warn('enabled IPv4 forwarding in this network namespace (net.ipv4.ip_forward=1)');
  }
}

export async function teardownTepNetwork(dev: string, prefixes: string[]): Promise<void> {
  await runIp(prefixes.map((p) => ip.routeDel(p, dev)));
}
