// The "tep" section of the configuration file (dstm tep). Every key is documented in dstm.conf(5) and dstm-tep(8).
import { DEFAULT_CONTROL_PATH } from '../lib/control';
import { formatIPv6 } from '../lib/addr';
import { boolean, describe, field, integer, list, optional, record, required, type Infer, type KeyDoc } from './schema';
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { clientTls } from './client-schema';
import { flag } from './settings';
import {
  endpoint,
  endpoints,
  host4,
  ifname,
  ipv4,
  ipv6,
  logLevel,
  offloadField,
  MAX_PATH_MTU,
  path,
  pool4,
  prefix6,
  tunnelEnd6,
} from './types';

/** "IPV4=IPV6" as given to --static, in the configuration file's shape. */
function staticFlag(text: string): { ipv4: string; ipv6: string } {
  const [ipv4, ipv6, extra] = text.split('=');
  if (ipv6 === undefined || extra !== undefined) throw new Error(`--static: "${text}" is not IPV4=IPV6`);
  return { ipv4, ipv6 };
}

/** The TUN device's transmit queue: the kernel's 500 lost packets while the TEP was off CPU (dataplane-tep bench). */
export const DEFAULT_TX_QUEUE_LEN = 5000;
export const MAX_TX_QUEUE_LEN = 100_000;
/** The raw sockets' buffers (the range src/dti/device.ts accepts). */
export const DEFAULT_SOCKET_BUFFER = 4 << 20;
const SOCKET_BUFFER_MIN = 64 << 10;
const SOCKET_BUFFER_MAX = 1 << 30;
/** Largest binding_capacity: the pools hold at most 2^24 addresses in all, staged once more during a resync. */
export const MAX_BINDING_CAPACITY = 1 << 25;

export const staticMapping = record(
  {
    ipv4: required(host4, "The node's fixed IPv4 address: a unicast one, as dstm static's (static.address)."),
    ipv6: required(tunnelEnd6, "The node's IPv6 address (its tunnel source): a unicast one, as static.tep."),
  },
  'static-mapping',
);

export const tepFields = {
  server: optional(
    endpoints(DEFAULT_PORT, 6),
    'DSTM server whose binding feed tells which node holds which pool address, or a list of servers sharing one store: the feed follows one and moves to the next when a call fails, keeping its bindings; without it only static mappings are forwarded.',
    {
      flag: flag.strings('server', {
        helpValue: '[IPV6]:PORT',
        summary:
          "DSTM server to follow the binding feed of, '[IPV6]:PORT'; repeatable: servers sharing one store, the next followed when one fails.",
      }),
    },
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server.', {
    flag: flag.uint32('program', {
      summary: 'ONC RPC program number of the DSTM server, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).',
    }),
  }),
  address: required(
    ipv6,
    "The TEP's IPv6 address: nodes tunnel to it, and it is the source of what it tunnels to them.",
    {
      flag: flag.string('ipv6', {
        aliases: ['address'],
        helpValue: 'IPV6',
        summary: 'IPv6 address of this TEP: nodes tunnel to it (--address until 0.2).',
      }),
    },
  ),
  feed_source: optional(
    ipv6,
    "IPv6 address the binding feed is called from; default: address. Give the TEP's own unicast address when address is an anycast address several TEPs share, so the servers' replies come back to this TEP.",
    {
      flag: flag.string('feed-source', {
        helpValue: 'IPV6',
        summary:
          "IPv6 address to call the servers' binding feed from (default: --ipv6; a unicast address when --ipv6 is anycast).",
      }),
    },
  ),
  ipv4: required(ipv4, "The TEP's IPv4 address, the peer of the nodes' DTIs and the source of its ICMPv4 errors.", {
    flag: flag.string('ipv4', { helpValue: 'IPV4', summary: "IPv4 address of this TEP, the peer of the nodes' DTIs." }),
  }),
  pools: field(list(pool4), [], "IPv4 prefixes routed into the TEP's TUN device: the DSTM server's pools.", {
    man: 'Prefixes touching 0/8, 127/8, 169.254/16, 224/4 or 240/4 are refused. The TEP refuses a binding from the server (one by one or in a complete state) for its own IPv4 address, any address of its host, or an address in those ranges. Prefixes must not overlap.',
    flag: flag.strings('pool', { helpValue: 'CIDR', summary: 'IPv4 pool prefix routed to this TEP (repeatable).' }),
  }),
  prefixes: field(
    list(prefix6),
    [],
    'IPv6 prefixes of the DSTM domain; tunnelled packets from other sources are dropped. Empty: any source.',
    {
      flag: flag.strings('prefix', {
        helpValue: 'IPV6PREFIX',
        summary: 'IPv6 prefix of the DSTM domain to accept tunnelled packets from (repeatable).',
      }),
    },
  ),
  static: field(
    list(staticMapping, {
      unique: [
        { field: 'ipv4', key: (m) => String(m.ipv4) },
        { field: 'ipv6', key: (m) => formatIPv6(m.ipv6) },
      ],
    }),
    [],
    'Annex A mappings, IPv4 address to node IPv6 address, forwarded without a server.',
    {
      man: "A mapping of the TEP's own IPv4 address (tep.ipv4) is refused (its node could send as the TEP), and so are two mappings of the same IPv4 address or of the same IPv6 address.",
      flag: flag.strings('static', {
        helpValue: 'IPV4=IPV6',
        summary: 'Static mapping IPV4=IPV6 (Annex A; repeatable).',
        toValue: (v) => v.map(staticFlag),
      }),
    },
  ),
  device: field(ifname, 'dstm-tep0', 'Name of the TUN device the pools are routed to, at most 15 bytes.', {
    flag: flag.string('device', {
      helpValue: 'NAME',
      summary: 'Name of the TUN device, at most 15 bytes (default dstm-tep0).',
    }),
  }),
  path_mtu: field(
    integer(1280, MAX_PATH_MTU),
    1500,
    `Path MTU towards the nodes, 1280 to ${MAX_PATH_MTU} (the receive slots hold 2000-byte IPv4 packets); the TUN device's MTU is 40 less.`,
    {
      flag: flag.integer('path-mtu', {
        helpValue: 'BYTES',
        summary: `Path MTU towards the nodes, 1280 to ${MAX_PATH_MTU} (default 1500).`,
      }),
    },
  ),
  unreachable: field(
    boolean,
    true,
    "Answer IPv4 packets for pool addresses no node holds with ICMPv4 host unreachable from the TEP's IPv4 address, at most 100 a second to each IPv4 host, as a router does; false drops them silently (counted as no_binding either way).",
    {
      flag: flag.boolean('unreachable', {
        allowNo: true,
        summary:
          'Answer IPv4 for pool addresses no node holds with ICMPv4 host unreachable (default on; --no-unreachable drops it silently).',
      }),
    },
  ),
  offload: offloadField(),
  batch: field(integer(1, 1024), 64, 'Packets read or written per system call.'),
  queues: field(
    integer(1, 64),
    1,
    'Forwarding queues, 1 to 64, one thread each: the TUN device gets one queue per thread (IFF_MULTI_QUEUE) and each thread its own raw socket, which keeps the tunnel packets whose inner flow hashes to it; every thread runs the same pipeline with its own copy of the binding table (104 to 208 bytes per binding per queue). Default 1: on the 2-core machine measured, 2 queues were not reliably faster than 1 (the gain stayed within the noise; see dstm-tep(8)).',
    {
      flag: flag.integer('queues', {
        helpValue: 'N',
        summary: 'Forwarding queues, one thread each, 1 to 64 (default 1; one TUN queue and raw socket per thread).',
      }),
    },
  ),
  tx_queue_len: field(
    integer(1, MAX_TX_QUEUE_LEN),
    DEFAULT_TX_QUEUE_LEN,
    `Packets the TUN device's transmit queue holds for the TEP to read (txqueuelen, 1 to ${MAX_TX_QUEUE_LEN}, per queue); what arrives while it is full is dropped by the kernel and counted as tun_tx_dropped. Default ${DEFAULT_TX_QUEUE_LEN}, not the kernel's 500, which lost packets under scheduling jitter.`,
    {
      flag: flag.integer('tx-queue-len', {
        helpValue: 'PACKETS',
        summary: `Transmit queue length of the TUN device, 1 to ${MAX_TX_QUEUE_LEN} (default ${DEFAULT_TX_QUEUE_LEN}).`,
      }),
    },
  ),
  socket_buffer: field(
    integer(SOCKET_BUFFER_MIN, SOCKET_BUFFER_MAX),
    DEFAULT_SOCKET_BUFFER,
    `Receive and send buffer of each raw IPv6 socket, in bytes (${SOCKET_BUFFER_MIN} to ${SOCKET_BUFFER_MAX}): tunnel packets that arrive while the TEP is off the CPU wait there; what arrives while it is full is dropped by the kernel and counted as kernel_rx_overflow. Default ${DEFAULT_SOCKET_BUFFER} (4 MiB).`,
    {
      flag: flag.integer('socket-buffer', {
        helpValue: 'BYTES',
        summary: `Receive and send buffer of the raw sockets, ${SOCKET_BUFFER_MIN} to ${SOCKET_BUFFER_MAX} bytes (default ${DEFAULT_SOCKET_BUFFER}).`,
      }),
    },
  ),
  binding_capacity: field(
    integer(0, MAX_BINDING_CAPACITY),
    0,
    `Slots the binding table starts with, rounded up to a power of two, at most ${MAX_BINDING_CAPACITY} (104 bytes each, per queue); 0: 16, doubled when full.`,
    {
      man: 'Doubling rebuilds the table in one step that stops forwarding (0.9 s from 2^20 to 2^21 slots on the 2-CPU test machine, most of it allocating the 220 MB), and the table never shrinks; give the bindings expected, plus those a complete state from the server may bring beside them while it is staged, to pay for it once, at start.',
    },
  ),
  feed_wait: field(
    integer(0, 300000),
    30000,
    'Milliseconds the server may hold each binding feed call when nothing changes.',
    {
      man: 'A followed server that stops answering without closing the connection (its host vanished, a partition) is given up when this wait plus 10 s has passed without a reply; the feed then moves to the next server. (A server that cannot reach its store answers UNAVAILABLE at once.)',
    },
  ),
  control: field(path, DEFAULT_CONTROL_PATH, 'Unix socket that `dstm tep stats` reads the counters from.', {
    flag: flag.string('control', {
      helpValue: 'PATH',
      summary: `Unix socket for \`dstm tep stats\` (default ${DEFAULT_CONTROL_PATH}).`,
    }),
  }),
  metrics: optional(endpoint(9787), 'Serve Prometheus metrics on this address (GET /metrics); off when not given.', {
    flag: flag.string('metrics', {
      helpValue: '[IPV6]:PORT',
      summary: 'Serve Prometheus metrics on [IPV6]:PORT (GET /metrics; default off).',
    }),
  }),
  log_level: logLevel('At debug every discarded packet is logged with its first bytes.'),
  tls: field(clientTls, {}, 'RPC-with-TLS (RFC 9289) towards the server, for the binding feed; see dstm-rpc(7).'),
};

export type TepConfig = Infer<typeof tepFields>;
export const tepSchema = record(tepFields, 'tep');

export function tepKeys(): KeyDoc[] {
  return describe(tepFields, 'tep');
}
