// The "tep" section of the configuration file (dstm tep). Every key is documented in dstm.conf(5) and dstm-tep(8).
import { DEFAULT_CONTROL_PATH } from '../lib/control';
import {
  boolean,
  describe,
  field,
  integer,
  list,
  oneOf,
  optional,
  record,
  required,
  type Infer,
  type KeyDoc,
} from './schema';
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { clientTls } from './client-schema';
import { endpoint, endpoints, ifname, ipv4, ipv6, MAX_PATH_MTU, path, pool4, prefix6 } from './types';

export const staticMapping = record(
  {
    ipv4: required(ipv4, "The node's fixed IPv4 address."),
    ipv6: required(ipv6, "The node's IPv6 address (its tunnel source)."),
  },
  'static-mapping',
);

export const tepFields = {
  server: optional(
    endpoints(DEFAULT_PORT, 6),
    'DSTM server whose binding feed tells which node holds which pool address, or a list of servers sharing one store: the feed follows one and moves to the next when a call fails, keeping its bindings (--server, repeatable); without it only static mappings are forwarded.',
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server (--program).'),
  address: required(
    ipv6,
    "The TEP's IPv6 address: nodes tunnel to it, and it is the source of what it tunnels to them (--ipv6).",
  ),
  feed_source: optional(
    ipv6,
    "IPv6 address the binding feed is called from (--feed-source); default: address. Give the TEP's own unicast address when address is an anycast address several TEPs share, so the servers' replies come back to this TEP.",
  ),
  ipv4: required(
    ipv4,
    "The TEP's IPv4 address, the peer of the nodes' DTIs and the source of its ICMPv4 errors (--ipv4).",
  ),
  pools: field(list(pool4), [], "IPv4 prefixes routed into the TEP's TUN device: the DSTM server's pools (--pool)."),
  prefixes: field(
    list(prefix6),
    [],
    'IPv6 prefixes of the DSTM domain; tunnelled packets from other sources are dropped. Empty: any source (--prefix).',
  ),
  static: field(
    list(staticMapping),
    [],
    'Annex A mappings, IPv4 address to node IPv6 address, forwarded without a server (--static IPV4=IPV6).',
  ),
  device: field(ifname, 'dstm-tep0', 'Name of the TUN device the pools are routed to, at most 15 bytes (--device).'),
  path_mtu: field(
    integer(1280, MAX_PATH_MTU),
    1500,
    `Path MTU towards the nodes, at most ${MAX_PATH_MTU} (the receive slots hold 2000-byte IPv4 packets); the TUN device's MTU is 40 less (--path-mtu).`,
  ),
  unreachable: field(
    boolean,
    true,
    "Answer IPv4 packets for pool addresses no node holds with ICMPv4 host unreachable from the TEP's IPv4 address, at most 100 a second, as a router does; false drops them silently (counted as no_binding either way; --no-unreachable).",
  ),
  offload: field(
    boolean,
    true,
    'TUN offloads: the kernel hands the data plane TCP super-packets of up to 64 KiB, which it segments before encapsulation, and takes coalesced ones (IFF_VNET_HDR with checksum, TSO and, where the kernel has it, USO); falls back to the plain device when the kernel refuses them, and the offload_active counter says which path runs; false: the plain device (--no-offload).',
  ),
  batch: field(integer(1, 1024), 64, 'Packets read or written per system call.'),
  queues: field(
    integer(1, 64),
    1,
    'Forwarding queues, one thread each (--queues): the TUN device gets one queue per thread (IFF_MULTI_QUEUE) and each thread its own raw socket, which keeps the tunnel packets whose inner flow hashes to it; every thread runs the same pipeline with its own copy of the binding table (104–208 bytes per binding per queue). Default 1: on the 2-core machine measured, 2 queues were not reliably faster than 1 (the gain stayed within the noise).',
  ),
  feed_wait: field(
    integer(0, 300000),
    30000,
    'Milliseconds the server may hold each binding feed call when nothing changes.',
  ),
  control: field(path, DEFAULT_CONTROL_PATH, 'Unix socket that `dstm tep stats` reads the counters from (--control).'),
  metrics: optional(
    endpoint(9787),
    'Serve Prometheus metrics on this address (GET /metrics); off when not given (--metrics).',
  ),
  log_level: field(oneOf(['debug', 'info', 'warn', 'error'] as const), 'info', 'Least severe log level written.'),
  tls: field(clientTls, {}, 'RPC-with-TLS towards the server, for the binding feed.'),
};

export type TepConfig = Infer<typeof tepFields>;
export const tepSchema = record(tepFields, 'tep');

export function tepKeys(): KeyDoc[] {
  return describe(tepFields, 'tep');
}
