// The "static" section of the configuration file (dstm static, Annex A): a fixed IPv4 address tunnelled to a fixed
// TEP, without a DSTM server. Every key is documented in dstm.conf(5) and dstm-static(8).
import { describe, field, integer, list, optional, required, type Infer, type KeyDoc } from './schema';
import { flag } from './settings';
import { host4, ifname, ipv4, ipv6, logLevel, MAX_PATH_MTU, offloadField, route4, tunnelEnd6 } from './types';

export const staticFields = {
  tep: required(tunnelEnd6, 'IPv6 address of the TEP the DTI tunnels to.', {
    flag: flag.string('tep', {
      helpValue: 'IPV6',
      summary: 'IPv6 address of the TEP to tunnel to (required here or as static.tep).',
    }),
  }),
  address: required(
    host4,
    'The fixed IPv4 address of this node, given to the DTI as a /32: a unicast address (not in 0/8, 127/8, 169.254/16, 224/4 or 240/4).',
    {
      flag: flag.string('address', {
        helpValue: 'IPV4',
        summary: 'The fixed IPv4 address of this node (required here or as static.address).',
      }),
    },
  ),
  peer: optional(
    ipv4,
    'IPv4 address of the TEP, the point-to-point peer of the DTI; without it routes point at the device.',
    {
      flag: flag.string('peer', {
        helpValue: 'IPV4',
        summary: 'IPv4 address of the TEP, the point-to-point peer of the DTI.',
      }),
    },
  ),
  local: optional(
    ipv6,
    "IPv6 source of the tunnel, the address in the TEP's static mapping; default: the address the kernel uses towards the TEP.",
    {
      flag: flag.string('local', {
        helpValue: 'IPV6',
        summary: 'IPv6 source of the tunnel (default: the address the kernel uses towards --tep).',
      }),
    },
  ),
  routes: field(
    list(route4, { min: 1 }),
    ['default'],
    'IPv4 prefixes routed through the DTI; "default" routes everything.',
    {
      flag: flag.strings('routes', {
        helpValue: 'PREFIX',
        summary: 'IPv4 prefixes to route through the DTI, comma-separated or repeated (default: default).',
        // each --routes value may be comma-separated
        toValue: (v) =>
          v
            .flatMap((r) => r.split(','))
            .map((r) => r.trim())
            .filter((r) => r !== ''),
      }),
    },
  ),
  device: field(ifname, 'dti0', 'Name of the DTI, a TUN device, at most 15 bytes.', {
    flag: flag.string('device', { helpValue: 'NAME', summary: 'Name of the DTI (TUN device; default dti0).' }),
  }),
  path_mtu: field(
    integer(1280, MAX_PATH_MTU),
    1500,
    `Path MTU towards the TEP, 1280 to ${MAX_PATH_MTU} (the receive slots hold 2000-byte IPv4 packets); the DTI's MTU is 40 less.`,
    {
      flag: flag.integer('path-mtu', {
        helpValue: 'BYTES',
        summary: `Path MTU towards the TEP, 1280 to ${MAX_PATH_MTU}; the DTI's MTU is 40 less (default 1500).`,
      }),
    },
  ),
  offload: offloadField(),
  log_level: logLevel(),
};

export type StaticConfig = Infer<typeof staticFields>;

export function staticKeys(): KeyDoc[] {
  return describe(staticFields, 'static');
}
