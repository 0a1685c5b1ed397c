// The "tep" section of the configuration file (dstm tep). Every key is documented in dstm.conf(5) and dstm-tep(8).
import { DEFAULT_CONTROL_PATH } from '../lib/control';
import { boolean, describe, field, integer, list, oneOf, optional, record, required, string, type Infer, type KeyDoc } from './schema';
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { endpoint, ipv4, ipv6, path, prefix4, prefix6 } from './types';

export const staticMapping = record(
  { ipv4: required(ipv4, 'The node\'s fixed IPv4 address.'), ipv6: required(ipv6, 'The node\'s IPv6 address (its tunnel source).') },
  'static-mapping',
);

export const tepFields = {
  server: optional(endpoint(DEFAULT_PORT, 6), 'DSTM server whose binding feed tells which node holds which pool address (--server); without it only static mappings are forwarded.'),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server (--program).'),
  address: required(ipv6, 'The TEP\'s IPv6 address: nodes tunnel to it, and it is the source of what it tunnels to them (--ipv6).'),
  ipv4: required(ipv4, 'The TEP\'s IPv4 address, the peer of the nodes\' DTIs and the source of its ICMPv4 errors (--ipv4).'),
  pools: field(list(prefix4), [], 'IPv4 prefixes routed into the TEP\'s TUN device: the DSTM server\'s pools (--pool).'),
  prefixes: field(list(prefix6), [], 'IPv6 prefixes of the DSTM domain; tunnelled packets from other sources are dropped. Empty: any source (--prefix).'),
  static: field(list(staticMapping), [], 'Annex A mappings, IPv4 address to node IPv6 address, forwarded without a server (--static IPV4=IPV6).'),
  device: field(string, 'dstm-tep0', 'Name of the TUN device the pools are routed to (--device).'),
  path_mtu: field(integer(1280, 65535), 1500, 'Path MTU towards the nodes; the TUN device\'s MTU is 40 less (--path-mtu).'),
  unreachable: field(
    boolean,
    true,
    'Answer IPv4 packets for pool addresses no node holds with ICMPv4 host unreachable from the TEP\'s IPv4 address, at most 100 a second, as a router does; false drops them silently (counted as no_binding either way; --no-unreachable).',
  ),
  batch: field(integer(1, 1024), 64, 'Packets read or written per system call.'),
  feed_wait: field(integer(0, 300000), 30000, 'Milliseconds the server may hold each binding feed call when nothing changes.'),
  control: field(path, DEFAULT_CONTROL_PATH, 'Unix socket that `dstm tep stats` reads the counters from (--control).'),
  metrics: optional(endpoint(9787), 'Serve Prometheus metrics on this address (GET /metrics); off when not given (--metrics).'),
  log_level: field(oneOf(['debug', 'info', 'warn', 'error'] as const), 'info', 'Least severe log level written.'),
};

export type TepConfig = Infer<typeof tepFields>;
export const tepSchema = record(tepFields, 'tep');

export function tepKeys(): KeyDoc[] {
  return describe(tepFields, 'tep');
}
