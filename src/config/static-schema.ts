// The "static" section of the configuration file (dstm static, Annex A): a fixed IPv4 address tunnelled to a fixed
// TEP, without a DSTM server. Every key is documented in dstm.conf(5) and dstm-static(8).
import { boolean, describe, field, integer, list, oneOf, optional, required, type Infer, type KeyDoc } from './schema';
import { ifname, ipv4, ipv6, MAX_PATH_MTU, route4 } from './types';

export const staticFields = {
  tep: required(ipv6, 'IPv6 address of the TEP the DTI tunnels to (--tep).'),
  address: required(ipv4, 'The fixed IPv4 address of this node, given to the DTI as a /32 (--address).'),
  peer: optional(
    ipv4,
    'IPv4 address of the TEP, the point-to-point peer of the DTI (--peer); without it routes point at the device.',
  ),
  local: optional(
    ipv6,
    "IPv6 source of the tunnel, the address in the TEP's static mapping; default: the address the kernel uses towards the TEP (--local).",
  ),
  routes: field(
    list(route4, { min: 1 }),
    ['default'],
    'IPv4 prefixes routed through the DTI; "default" routes everything (--routes).',
  ),
  device: field(ifname, 'dti0', 'Name of the DTI, a TUN device, at most 15 bytes (--device).'),
  path_mtu: field(
    integer(1280, MAX_PATH_MTU),
    1500,
    `Path MTU towards the TEP, at most ${MAX_PATH_MTU} (the receive slots hold 2000-byte IPv4 packets); the DTI's MTU is 40 less (--path-mtu).`,
  ),
  offload: field(
    boolean,
    true,
    'TUN offloads: the kernel hands the data plane TCP super-packets of up to 64 KiB, which it segments before encapsulation, and takes coalesced ones (IFF_VNET_HDR with checksum, TSO and, where the kernel has it, USO); falls back to the plain device when the kernel refuses them, and the offload_active counter says which path runs; false: the plain device (--no-offload).',
  ),
  log_level: field(oneOf(['debug', 'info', 'warn', 'error'] as const), 'info', 'Least severe log level written.'),
};

export type StaticConfig = Infer<typeof staticFields>;

export function staticKeys(): KeyDoc[] {
  return describe(staticFields, 'static');
}
