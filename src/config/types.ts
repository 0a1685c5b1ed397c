// Configuration types for network values, shared by every section's schema.
import { formatEndpoint, parseEndpoint, type Endpoint } from '../lib/endpoint';
import { LEVELS } from '../lib/log';
import {
  formatIPv4,
  formatIPv6,
  formatPrefix4,
  formatPrefix6,
  parseIPv4,
  parseIPv6,
  parsePrefix4,
  parsePrefix6,
  parseRoute4,
  prefixContains4,
  prefixSize4,
  tunnelEndProblem,
  type Prefix4,
  type Prefix6,
} from '../lib/addr';
import { boolean, ConfigError, field, integer, oneOf, textual, type Type } from './schema';
import { flag } from './settings';

export const ipv4: Type<number> = textual('ipv4', 'an IPv4 address like "192.0.2.1"', parseIPv4, formatIPv4);
export const ipv6: Type<Uint8Array> = textual('ipv6', 'an IPv6 address like "2001:db8::1"', parseIPv6, formatIPv6);
/** A TEP's IPv6 address: one a DTI can tunnel to (tunnelEndProblem). */
export const tunnelEnd6: Type<Uint8Array> = textual(
  'ipv6',
  'a unicast IPv6 address like "2001:db8::1" (not ::, ::1, multicast or IPv4-mapped)',
  (s) => {
    const b = parseIPv6(s);
    const problem = tunnelEndProblem(b);
    if (problem) throw new Error(problem);
    return b;
  },
  formatIPv6,
);
export const prefix4: Type<Prefix4> = textual(
  'ipv4-prefix',
  'an IPv4 prefix like "192.0.2.0/24" (or one address)',
  parsePrefix4,
  formatPrefix4,
);

/** Address ranges no pool may touch: they cannot be a host's unicast source on the IPv4 side. */
const NOT_LEASABLE: readonly [string, string][] = [
  ['0.0.0.0/8', '"this network"'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved (class E and the broadcast address)'],
];
const notLeasable = NOT_LEASABLE.map(([p, why]) => ({ prefix: parsePrefix4(p), text: p, why }));

/** The range no pool may touch that holds `a`, if one does. */
function notLeasableRange(a: number): (typeof notLeasable)[number] | undefined {
  return notLeasable.find((r) => prefixContains4(r.prefix, a));
}

/** Whether `a` may be leased: outside the ranges no pool may touch (what a TEP takes from the server's feed). */
export function leasable4(a: number): boolean {
  return notLeasableRange(a) === undefined;
}

/** A node's own IPv4 address (dstm static's): one that could be leased (leasable4). */
export const host4: Type<number> = textual(
  'ipv4',
  'a unicast IPv4 address like "192.0.2.1", outside 0/8, 127/8, 169.254/16, 224/4 and 240/4',
  (s) => {
    const a = parseIPv4(s);
    const r = notLeasableRange(a);
    if (r) throw new Error(`it is in ${r.text}, ${r.why}`);
    return a;
  },
  formatIPv4,
);

/** A pool prefix: an IPv4 prefix that overlaps none of the ranges a unicast host address cannot come from. */
export const pool4: Type<Prefix4> = textual(
  'ipv4-prefix',
  'an IPv4 unicast prefix like "192.0.2.0/24", outside 0/8, 127/8, 169.254/16, 224/4 and 240/4',
  (s) => {
    const p = parsePrefix4(s);
    const end = p.base + prefixSize4(p.len);
    for (const r of notLeasable) {
      if (p.base < r.prefix.base + prefixSize4(r.prefix.len) && r.prefix.base < end)
        throw new Error(`it overlaps ${r.text}, ${r.why}`);
    }
    return p;
  },
  formatPrefix4,
);

/** Pools that share an address are refused (`key`: how the error names the list); returns them in address order. */
export function disjointPools(pools: readonly Prefix4[], key: string): Prefix4[] {
  const sorted = [...pools].sort((a, b) => a.base - b.base);
  sorted.forEach((p, i) => {
    const prev = sorted[i - 1];
    if (prev && p.base < prev.base + prefixSize4(prev.len))
      throw new ConfigError(
        key,
        formatPrefix4(p),
        `prefixes that do not overlap (${formatPrefix4(p)} overlaps ${formatPrefix4(prev)})`,
      );
  });
  return sorted;
}

/**
 * Largest path MTU: the DTI's receive slots are 2048 bytes with 48 of headroom (src/dti/device.ts), so a tunnel
 * MTU (path MTU less 40) above 2000 fails when the device opens. test/docs checks this against src/dti.
 */
export const MAX_PATH_MTU = 2040;

/** Linux's limit on an interface name (IFNAMSIZ less the terminating NUL). */
export const IFNAME_MAX = 15;

/** A network interface name as the kernel takes it: 1 to 15 bytes, no "/", ":" or white space, not "." or "..". */
export const ifname: Type<string> = textual(
  'string',
  `an interface name of 1 to ${IFNAME_MAX} bytes without "/", ":" or white space`,
  (s) => {
    if (s.length === 0 || Buffer.byteLength(s) > IFNAME_MAX) throw new Error(`${Buffer.byteLength(s)} bytes`);
    if (/[\s/:]/.test(s) || s === '.' || s === '..') throw new Error('not a valid name');
    return s;
  },
);
export const prefix6: Type<Prefix6> = textual(
  'ipv6-prefix',
  'an IPv6 prefix like "2001:db8::/32" (or one address)',
  parsePrefix6,
  formatPrefix6,
);
export const route4: Type<string> = textual(
  'ipv4-route',
  '"default" or an IPv4 prefix like "203.0.113.0/24"',
  parseRoute4,
);
export const port: Type<number> = { ...integer(0, 65535), name: 'port' };

/**
 * "[IPV6]:PORT"; `family` 6 refuses IPv4 (the DSTM server and clients speak only IPv6, draft section 6); `peer`: an
 * address to call, which port 0 (a listener's "any port") cannot be.
 */
export function endpoint(defaultPort: number, family?: 6, peer = false): Type<Endpoint> {
  const expected =
    family === 6 ? `an IPv6 endpoint like "[::]:${defaultPort}"` : `an endpoint like "[::1]:${defaultPort}"`;
  return textual(
    'endpoint',
    expected,
    (s) => {
      const e = parseEndpoint(s, defaultPort);
      if (family === 6 && e.family !== 6) throw new Error('IPv4 is not allowed here: DSTM runs over IPv6 only');
      if (peer && e.port === 0) throw new Error("port 0 is no server's port");
      return e;
    },
    formatEndpoint,
  );
}

/** Servers to call: one endpoint or a list of them, in the order to try (failover); read as a list either way. */
export function endpoints(defaultPort: number, family?: 6): Type<Endpoint[]> {
  const one = endpoint(defaultPort, family, true);
  const expected = `${one.expected}, or a list of them`;
  return {
    name: 'endpoint or list of endpoint',
    expected,
    show: (v) => v.map(formatEndpoint),
    parse(v, path) {
      if (!Array.isArray(v)) return [one.parse(v, path)];
      if (v.length === 0) throw new ConfigError(path, v, expected + ' (at least one)');
      return v.map((e, i) => one.parse(e, `${path}[${i}]`));
    },
  };
}

export const path: Type<string> = textual('path', 'a non-empty file or directory path', (s) => {
  if (s.length === 0) throw new Error('empty');
  return s;
});

/**
 * A store URL as logs, errors and --check may show it: the password replaced, the rest as written. Everything between
 * "//" and the last "@" is the user and password, whatever a URL parser makes of it: a "/", "?", "#" or "@" left
 * unencoded in a password ends the URL's authority early, and the parser would show what follows as host or path.
 */
export function redactUrl(url: string): string {
  // The user name ends at the first ":" and holds no unencoded "@" (without a ":" before an "@", no password).
  const user = url.replace(/^([^:/?#]+:\/\/[^:@]*):.*@/s, '$1:***@');
  return user.replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***');
}

/** server.store: "postgresql://..." (or "postgres://...") or "sqlite:[DIR]"; errors never show a password. */
export const storeUrl: Type<string> = {
  name: 'store-url',
  expected: 'postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE or sqlite:[DIR]',
  show: redactUrl,
  parse(value, path) {
    const bad = (why: string): never => {
      throw new ConfigError(path, typeof value === 'string' ? redactUrl(value) : value, `${this.expected} (${why})`);
    };
    if (typeof value !== 'string') return bad('not a string');
    if (value.startsWith('sqlite:')) return value;
    if (!/^postgres(ql)?:\/\//.test(value)) return bad('unknown scheme');
    let u: URL;
    try {
      // An empty host, as in postgresql://USER@/DATABASE?host=/run/postgresql (a unix socket), as node-postgres reads it.
      u = new URL(value.replace('@/', '@localhost/'));
    } catch {
      return bad('not a valid URL');
    }
    // A password's "@", "/" or "#" left unencoded: the URL would name part of the password as host or database.
    if (u.hash || u.pathname.includes('@'))
      return bad('"@", "/", "?" and "#" in a user name or password must be percent-encoded: %40, %2F, %3F, %23');
    // dstm leases import tells a server's connections by it (no restore under a running server)
    if (u.searchParams.has('application_name')) return bad('application_name is set by dstm');
    return value;
  },
};

/** log_level, as every daemon's section has it; `man` adds what dstm.conf(5) says for that daemon. */
export function logLevel(man?: string) {
  return field(oneOf(LEVELS), 'info', 'Least severe log level written; --log-level or DSTM_LOG_LEVEL win over it.', {
    flag: flag.string('log-level', {
      env: 'DSTM_LOG_LEVEL',
      helpValue: 'LEVEL',
      summary:
        "Least severe log level written (default: DSTM_LOG_LEVEL, else the configuration's log_level, else info).",
    }),
    man,
  });
}

/** offload, as the TEP's and the static DTI's sections have it. */
export function offloadField() {
  return field(
    boolean,
    true,
    'TUN offloads: the kernel hands the data plane TCP super-packets of up to 64 KiB, which it segments before encapsulation, and takes coalesced ones (IFF_VNET_HDR with checksum, TSO and, where the kernel has it, USO); falls back to the plain device when the kernel refuses them, and the offload_active counter says which path runs; false: the plain device.',
    {
      flag: flag.boolean('offload', {
        allowNo: true,
        summary:
          'TUN offloads: segment and coalesce TCP super-packets in the data plane (default on where the kernel has them; --no-offload: the plain device).',
      }),
    },
  );
}
