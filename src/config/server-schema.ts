// The "server" section of the configuration file (dstm server). Every key is documented in dstm.conf(5); the man
// page test compares that page with serverKeys().
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
  string,
  textual,
  type Infer,
  type KeyDoc,
} from './schema';
import { formatIPv6, formatPrefix6, parseIPv6 } from '../lib/addr';
import { flag } from './settings';
import { endpoint, ipv4, logLevel, path, pool4, prefix4, prefix6, storeUrl, tunnelEnd6 } from './types';

/** RPC-with-TLS policies (RFC 9289), as src/rpc/tls names them (config imports only lib: the list is repeated). */
export const TLS_POLICY_NAMES = ['off', 'opportunistic', 'required', 'mutual'] as const;

const certName =
  'a certificate name: its subject common name, one of its DNS subjectAltNames, or "sha256:" and the hex SHA-256 of its public key (SubjectPublicKeyInfo)';

const serverTlsFields = {
  policy: field(
    oneOf(TLS_POLICY_NAMES),
    'off',
    'RPC-with-TLS (RFC 9289): "off"; "opportunistic" (TLS offered, plain calls served); "required" (every call over TLS; UDP and plain TCP calls refused with AUTH_TOOWEAK); "mutual" (required, and clients present a certificate the CA signed, which then identifies them).',
    {
      man: 'Under "off" the AUTH_TLS probe is refused as an unknown flavor; under "required" and "mutual" UDP and plain TCP calls are refused with AUTH_ERROR, AUTH_TOOWEAK. A change needs a restart.',
      flag: flag.string('tls', { summary: 'RPC-with-TLS policy (default off; see dstm-rpc(7)).' }),
    },
  ),
  cert: optional(path, "PEM file of the server's certificate (and chain), needed unless the policy is off.", {
    man: "Nodes check it against the server's IPv6 address: give it that address as a subjectAltName IP. Read again on SIGHUP.",
    flag: flag.string('tls-cert', { helpValue: 'FILE', summary: "PEM file of the server's certificate." }),
  }),
  key: optional(path, 'PEM file of its private key.', {
    man: 'Read again on SIGHUP.',
    flag: flag.string('tls-key', { helpValue: 'FILE', summary: 'PEM file of its private key.' }),
  }),
  ca: optional(path, 'PEM file of the CA(s) that sign client certificates, needed by the mutual policy.', {
    man: 'Read again on SIGHUP.',
    flag: flag.string('tls-ca', {
      helpValue: 'FILE',
      summary: 'PEM file of the CA that signs client certificates (mutual policy).',
    }),
  }),
  handshake_timeout: field(
    integer(100, 300000),
    10000,
    'Milliseconds a connection may take from the STARTTLS reply to the end of its handshake before it is closed.',
    { man: 'From 100 to 300000. A change needs a restart.' },
  ),
  nodes: field(
    list(
      record(
        {
          name: required(string, `The certificate, by ${certName}.`, {
            man: 'The SHA-256 form survives the renewal of a certificate with the same key.',
          }),
          prefix: required(prefix6, 'IPv6 address or prefix of the nodes that certificate may act for.'),
        },
        'tls-node',
      ),
    ),
    [],
    'Mutual policy: certificates that may REQUEST and RELEASE for nodes other than the IPv6 addresses in their subjectAltName.',
  ),
  admin: field(
    list(string),
    [],
    `Mutual policy: certificates allowed to call the admin procedures (LIST, REVOKE, ALLOCATE; dstm leases), each by ${certName}; the caller must also be in admin_allow.`,
    { man: 'Empty: no administration under the mutual policy.' },
  ),
  teps: field(
    list(string),
    [],
    `Mutual policy: TEP certificates allowed to read the binding feed, each by ${certName}, besides those whose subjectAltName names a configured TEP's IPv6 address; the caller must also be in tep_allow or be a configured TEP.`,
  ),
};

/** Port the DSTM server listens on and clients call when none is given ("DSTM" on a phone keypad). */
export const DEFAULT_PORT = 3786;
/** ONC RPC program number of the DSTM program (xdr/dstm.x); --program overrides it. */
export const DEFAULT_PROGRAM = 0x2d53544d;

/** "LEN:MAX" (server.per_prefix): at most MAX nodes with an active binding in each IPv6 /LEN. */
export interface PrefixCap {
  len: number;
  max: number;
}

/** "LEN:RATE[:BURST]" (server.rate_limit): REQUEST and RELEASE calls per second from each IPv6 /LEN. */
export interface PrefixRate {
  len: number;
  rate: number;
  burst: number;
}

function prefixLength(text: string): number {
  const len = Number(text);
  if (!/^\d{1,3}$/.test(text) || len < 1 || len > 128) throw new Error(`prefix length "${text}" is not 1-128`);
  return len;
}

const prefixCap = textual<PrefixCap>(
  'prefix-cap',
  '"LEN:MAX", e.g. "64:16" (an IPv6 prefix length 1-128 and a count 1-1000000)',
  (s) => {
    const [len, max, extra] = s.split(':');
    if (max === undefined || extra !== undefined || !/^\d{1,7}$/.test(max) || Number(max) < 1 || Number(max) > 1e6)
      throw new Error('not LEN:MAX');
    return { len: prefixLength(len), max: Number(max) };
  },
  (c) => `${c.len}:${c.max}`,
);

const prefixRate = textual<PrefixRate>(
  'prefix-rate',
  '"LEN:RATE" or "LEN:RATE:BURST", e.g. "64:10:50" (calls per second, 0.001-1000000; burst 1-1000000, default twice the rate)',
  (s) => {
    const [len, rate, burst, extra] = s.split(':');
    const num = (t: string | undefined, min: number): number => {
      const n = Number(t);
      if (t === undefined || !/^\d+(\.\d+)?$/.test(t) || !(n >= min && n <= 1e6))
        throw new Error(`"${t}" is not a number from ${min} to 1000000`);
      return n;
    };
    if (rate === undefined || extra !== undefined) throw new Error('not LEN:RATE[:BURST]');
    const r = num(rate, 0.001);
    return { len: prefixLength(len), rate: r, burst: burst === undefined ? Math.max(1, 2 * r) : num(burst, 1) };
  },
  (r) => `${r.len}:${r.rate}:${r.burst}`,
);

/** Which procedures are served over TCP only (server.tcp_only). */
export const TCP_ONLY = ['none', 'admin', 'changes'] as const;
export type TcpOnly = (typeof TCP_ONLY)[number];

const tepIPv6 = required(
  tunnelEnd6,
  'IPv6 address of the TEP, where nodes send their tunnelled IPv4 packets: a unicast address (::, ::1, a multicast group or an IPv4-mapped address is refused).',
);
const tepIPv4 = required(ipv4, 'IPv4 address of the TEP, given to nodes as the point-to-point peer of their DTI.');
const tepType = record({ ipv6: tepIPv6, ipv4: tepIPv4 }, 'tep');

/** --tep IPV6,IPV4 in the file's shape. */
function tepFlag(text: string): { ipv6: string; ipv4: string } {
  const parts = text.split(',');
  if (parts.length !== 2)
    throw new Error(`--tep: "${text}" is not valid: expected IPV6,IPV4 (e.g. 2001:db8::1,192.0.2.1)`);
  return { ipv6: parts[0].trim(), ipv4: parts[1].trim() };
}

export const serverFields = {
  listen: field(
    list(endpoint(DEFAULT_PORT, 6), {
      min: 1,
      unique: { key: (e) => `[${formatIPv6(parseIPv6(e.host))}${/%.*/.exec(e.host)?.[0] ?? ''}]:${e.port}` },
    }),
    [`[::]:${DEFAULT_PORT}`],
    'IPv6 addresses and ports to serve on, over each of server.transports.',
    {
      man: 'Each must be an IPv6 address (IPv4 is refused); port 3786 when none is given. The same address and port twice (however spelt) is refused, and so is any other entry on the port of [::] (which takes it on every address).',
      flag: flag.strings('listen', {
        helpValue: '[IPV6]:PORT',
        summary: `IPv6 address and port to serve on, [IPV6]:PORT (repeatable; default [::]:${DEFAULT_PORT}).`,
      }),
    },
  ),
  transports: field(
    list(oneOf(['udp', 'tcp'] as const), { min: 1, unique: { key: (t) => t } }),
    ['udp', 'tcp'],
    'RPC transports to serve on each listen address.',
    { man: 'Each at most once.' },
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number; 760435789 is 0x2D53544D.', {
    flag: flag.uint32('program', {
      summary: 'ONC RPC program number, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).',
    }),
  }),
  rpcbind: field(
    oneOf(['auto', 'on', 'off'] as const),
    'auto',
    'Register with rpcbind: "auto" when it runs, "on" fails the start when it does not, "off" never.',
  ),
  pools: field(
    list(pool4, { min: 1 }),
    ['192.0.2.0/24'],
    'IPv4 prefixes whose addresses are leased; they must be routed to the TEPs. Prefixes touching 0/8, 127/8, 169.254/16, 224/4 or 240/4 are refused; TEP addresses inside a pool are never leased.',
    {
      man: "Prefixes must not overlap; at most 2^24 addresses in all. A TEP's IPv4 address (server.tep.ipv4, server.teps[].ipv4) inside a pool is taken out of it, with a warning (a node holding it could send as the TEP); a reservation of one is refused.",
      flag: flag.strings('pool', {
        helpValue: 'CIDR',
        summary: 'IPv4 prefix to lease addresses from (repeatable; default 192.0.2.0/24).',
      }),
    },
  ),
  exclude: field(list(prefix4), [], 'IPv4 addresses or prefixes inside the pools that are never leased.'),
  skip_network_broadcast: field(
    boolean,
    true,
    'Never lease the first and last address of each pool prefix shorter than /31.',
  ),
  reservations: field(
    list(
      record(
        {
          ipv6: required(prefix6, 'IPv6 address or prefix of the node(s).'),
          ipv4: required(ipv4, 'The fixed IPv4 address they get.'),
        },
        'reservation',
      ),
      {
        unique: [
          { field: 'ipv6', key: (r) => formatPrefix6(r.ipv6) },
          { field: 'ipv4', key: (r) => String(r.ipv4) },
        ],
      },
    ),
    [],
    'Fixed bindings: a node whose IPv6 address is in "ipv6" always gets "ipv4" (one node at a time); the address leaves the dynamic pool.',
    {
      man: 'A node asks as usual and gets its reserved address; if another node of the same prefix holds it, it gets a dynamic one. The IPv4 address must be inside server.pools, outside server.exclude, and not the first or last address of a pool prefix shorter than /31 when server.skip_network_broadcast is on; two reservations may not give the same IPv6 prefix or the same IPv4 address.',
    },
  ),
  tep: optional(tepType, 'Default TEP for nodes no "teps" entry matches.', {
    man: 'Both addresses are required. Without any TEP, replies carry zero TEP addresses (a warning is logged at start).',
    flag: flag.string('tep', { helpValue: 'IPV6,IPV4', summary: 'Default TEP as IPV6,IPV4.', toValue: tepFlag }),
  }),
  teps: field(
    list(record({ prefix: required(prefix6, 'Client IPv6 prefix.'), ipv6: tepIPv6, ipv4: tepIPv4 }, 'tep-route'), {
      unique: { field: 'prefix', key: (t) => formatPrefix6(t.prefix) },
    }),
    [],
    'Per-prefix TEPs: a node gets the TEP of the longest prefix containing its IPv6 address.',
    {
      man: 'Every configured TEP address may also read the binding feed. Two entries with the same prefix are refused.',
    },
  ),
  lease: field(
    integer(1, 0x7fffffff),
    3600,
    'Lease duration in seconds, when the node asks for none; at least server.min_lease.',
    { flag: flag.integer('lease', { helpValue: 'SECONDS', summary: 'Lease duration in seconds (default 3600).' }) },
  ),
  min_lease: field(
    integer(1, 0x7fffffff),
    60,
    'Shortest lease in seconds: a node asking for less gets this much, and server.lease may not be less.',
    {
      flag: flag.integer('min-lease', {
        helpValue: 'SECONDS',
        summary: 'Shortest lease in seconds: a node asking for less gets this much (default 60).',
      }),
    },
  ),
  max_lease: field(integer(1, 0x7fffffff), 86400, 'Longest lease in seconds a node may ask for.', {
    man: 'Must be at least server.lease.',
  }),
  hold: field(
    integer(0, 0x7fffffff),
    600,
    'Seconds an expired or revoked address stays unassigned before it is reused (the old node may still use it).',
    {
      man: 'With the SQLite store it also bounds how fast lease times catch up with a wall clock stepped forward (server.hold / server.max_lease, at least 1/1000; dstm-server(8), Leases): below server.max_lease / 1000, 0 included, an address may be reclaimed up to lease / 1000 seconds early while they do.',
    },
  ),
  state_dir: field(path, '/var/lib/dstm', 'Directory of the SQLite store.', {
    man: 'Created if missing; holds dstm.sqlite and its dstm.sqlite-wal and dstm.sqlite-shm files, and dstm.lock, which the running server holds locked (one server per directory).',
    flag: flag.string('state-dir', {
      helpValue: 'DIR',
      summary: 'Directory of the SQLite store (default /var/lib/dstm).',
    }),
  }),
  store: optional(
    storeUrl,
    'Binding store: "postgresql://USER@HOST:PORT/DATABASE" shares one PostgreSQL database between several servers; "sqlite:DIR" or nothing keeps the embedded SQLite store (in state_dir when DIR is empty). The password may be in the URL, PGPASSFILE or PGPASSWORD; it is never logged.',
    {
      man: '"postgres://" is accepted too, and a unix socket as "postgresql://USER@/DATABASE?host=/run/postgresql". A "@", "/", "?" or "#" in the user name or password must be percent-encoded (%40, %2F, %3F, %23): a URL that would take part of the password for its host or database is refused. --check and errors show the URL with its password replaced by ***. URL parameters reach node-postgres (sslmode, options, ...); dstm appends -c synchronous_commit=on to options, so no setting of the URL, the database or the role makes a reply leave before its commit is durable, and refuses application_name, by which dstm leases import tells a running server. See dstm-server(8), PostgreSQL and several servers.',
      flag: flag.string('store', {
        helpValue: 'URL',
        summary:
          'Binding store: postgresql://USER@HOST:PORT/DATABASE (shared by several servers) or sqlite:[DIR] (default: SQLite in the state directory).',
      }),
    },
  ),
  store_pool: field(
    integer(1, 100),
    4,
    'Connections each server keeps to a PostgreSQL store (one more listens for feed changes).',
    { man: 'From 1 to 100; ignored for SQLite.' },
  ),
  allow: field(list(prefix6), ['::/0'], 'IPv6 prefixes of nodes allowed to request addresses.', {
    man: 'Applies to REQUEST; a node may always release its own binding.',
    flag: flag.strings('allow', {
      helpValue: 'PREFIX',
      summary: 'IPv6 prefix of nodes allowed to request (repeatable; default ::/0).',
    }),
  }),
  tep_allow: field(
    list(prefix6),
    ['::1/128'],
    'IPv6 prefixes allowed to read the binding feed (BINDINGS), besides the configured TEP addresses.',
    { man: 'The binding feed reveals which node holds which address.' },
  ),
  admin_allow: field(
    list(prefix6),
    ['::1/128'],
    'IPv6 prefixes allowed to call the admin procedures (LIST, REVOKE and ALLOCATE: dstm leases).',
  ),
  tcp_only: field(
    oneOf(TCP_ONLY),
    'admin',
    'Procedures served over TCP only, where the handshake proves the caller receives at its address: "admin" LIST, REVOKE and ALLOCATE; "changes" those and REQUEST and RELEASE (version 1 included); "none" nothing.',
    {
      man: 'Over UDP they are refused (DSTM_NOT_ALLOWED; version 1: AUTH_ERROR). What each setting stops is in dstm-rpc(7), SECURITY.',
      flag: flag.string('tcp-only', {
        helpValue: 'WHAT',
        summary:
          'Procedures served over TCP only: admin (LIST, REVOKE, ALLOCATE), changes (those, REQUEST and RELEASE) or none (default admin).',
      }),
    },
  ),
  per_prefix: optional(
    prefixCap,
    'At most MAX nodes with an active binding in each IPv6 /LEN, as "LEN:MAX", e.g. "64:16" (LEN 1-128, MAX 1-1000000); a renewal is never refused, and a node whose lease expired counts as a new one. Off when not given.',
    {
      man: 'Refusals: DSTM_NOT_ALLOWED (version 1: AUTH_ERROR), reason prefix_cap.',
      flag: flag.string('per-prefix', {
        helpValue: 'LEN:MAX',
        summary: 'At most MAX nodes with an active binding in each IPv6 /LEN, as LEN:MAX, e.g. 64:16 (default off).',
      }),
    },
  ),
  rate_limit: optional(
    prefixRate,
    'REQUEST and RELEASE calls per second from each IPv6 /LEN, as "LEN:RATE" or "LEN:RATE:BURST", e.g. "64:10:50" (RATE 0.001-1000000, BURST 1-1000000, default twice RATE and at least 1); calls over it are refused with DSTM_UNAVAILABLE. Off when not given.',
    {
      man: 'Version 1 refuses with SYSTEM_ERR; the reason counted is rate_limited. At most 65536 prefixes are remembered at once.',
      flag: flag.string('rate-limit', {
        helpValue: 'LEN:RATE[:BURST]',
        summary:
          'REQUEST and RELEASE calls per second from each IPv6 /LEN, as LEN:RATE[:BURST], e.g. 64:10 (default off).',
      }),
    },
  ),
  feed_max_wait: field(
    integer(0, 300000),
    30000,
    'Longest time in milliseconds a BINDINGS call is held waiting for a change.',
  ),
  metrics: optional(endpoint(9786), 'Serve Prometheus metrics on this address (GET /metrics); off when not given.', {
    man: 'An endpoint like "[::1]:9786".',
    flag: flag.string('metrics', {
      helpValue: '[IPV6]:PORT',
      summary: 'Serve Prometheus metrics on [IPV6]:PORT (GET /metrics; default off).',
    }),
  }),
  log_level: logLevel(),
  tls: field(
    record(serverTlsFields, 'tls'),
    {},
    'RPC-with-TLS (RFC 9289): the policy, the certificate, and the identities client certificates give; see dstm-rpc(7).',
  ),
};

export type ServerConfig = Infer<typeof serverFields>;
export const serverSchema = record(serverFields, 'server');

/** The machine-readable key table of the "server" section ({key, type, default, doc}). */
export function serverKeys(): KeyDoc[] {
  return describe(serverFields, 'server');
}
