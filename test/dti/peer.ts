// One end of a DTI for the device tests, run inside a namespace the test made (`ip netns exec NS node --import
// tsx test/dti/peer.ts JSON`): a TUN device with a point-to-point IPv4 address, a raw IPIP socket and an ICMPv6
// error socket, wired by the shared Tunnel pipeline. Prints "ready", then its counters as JSON on SIGTERM.
import { Drop } from '../../src/dti/counters';
import { Icmp6ErrorSocket, RawIpipSocket, TunDevice } from '../../src/dti/device';
import { ip, runIp } from '../../src/dti/netconfig';
import { EncapConfig, OK, bytesEqual } from '../../src/dti/packet';
import { parseIPv4, parseIPv6 } from '../../src/lib/addr';
import { Tunnel } from '../../src/dti/tunnel';

interface PeerConfig {
  tun: string;
  addr4: string;
  peer4: string;
  local6: string;
  remote6: string;
  tunMtu: number;
  pathMtu: number;
  encapLimit?: number;
  /** Open the TUN device with offloads (IFF_VNET_HDR), as the node and the TEP do by default. */
  offload?: boolean;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]) as PeerConfig;
  const local6 = parseIPv6(cfg.local6);
  const remote6 = parseIPv6(cfg.remote6);
  const tun = TunDevice.open({ name: cfg.tun, mtu: cfg.tunMtu, offload: cfg.offload ?? false });
  await runIp([ip.noLinkLocal(tun.name), ip.addrAdd(tun.name, `${cfg.addr4}/32`, cfg.peer4), ip.linkUp(tun.name)]);
  const raw = RawIpipSocket.open({ bind: local6 });
  const icmp = Icmp6ErrorSocket.open();
  const tunnel = new Tunnel({
    encap: new EncapConfig(local6, { encapLimit: cfg.encapLimit ?? -1 }),
    route: () => remote6,
    accept: (buf, srcOff) => (bytesEqual(buf, srcOff, remote6, 0, 16) ? OK : Drop.outside_prefix),
    icmpSource: parseIPv4(cfg.peer4),
    pathMtu: cfg.pathMtu,
  });
  tunnel.attach(tun, raw, icmp);
  process.on('SIGTERM', () => {
    process.stdout.write(JSON.stringify(tunnel.counters.snapshot()) + '\n');
    tun.close();
    raw.close();
    icmp.close();
  });
  process.stdout.write('ready\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`peer failed: ${(err as Error).message}\n`);
  process.exit(1);
});
