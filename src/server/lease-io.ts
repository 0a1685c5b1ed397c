// dstm leases export and import: a store's bindings as JSON lines, one binding a line in the one JSON form of
// dstm(1) ({ipv4, ipv6, tep4, tep6, starts, ends, state}, as `dstm leases --json` prints them), for backups and for
// moving between stores (SQLite to PostgreSQL). An import checks every line before it writes anything, against
// what the server itself would accept, then writes them all in one transaction (Store.restore).
import { createInterface } from 'node:readline';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../lib/addr';
import type { LeaseRow } from '../protocol/client';
import { STATE, STATE_NAMES, stateName, type StateName } from '../protocol/status';
import { TepMap, type LeasePolicy } from './leases';
import { AddressPool } from './pool';
import { identityProblem } from './rpc';
import { MAX_LEASE_TIME, RestoreConflict, type Binding, type State, type Store } from './store';

/** Longest line read: a binding takes under 200 characters. */
export const MAX_LINE = 4096;

const KEYS = ['ipv4', 'ipv6', 'tep4', 'tep6', 'starts', 'ends', 'state'] as const;
const REQUIRED = ['ipv4', 'ipv6', 'starts', 'ends', 'state'] as const;

/** A line of an import that is refused; nothing was written. */
export class LeaseLineError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
    this.name = 'LeaseLineError';
  }
}

/** A stored binding in the one JSON form, with its TEP from the configuration (the store does not keep TEPs). */
export function bindingRow(b: Binding, teps: TepMap): LeaseRow {
  const tep = teps.lookup(b.ip6);
  return {
    ipv6: formatIPv6(b.ip6),
    ipv4: formatIPv4(b.ip4),
    tep6: formatIPv6(tep?.ipv6 ?? new Uint8Array(16)),
    tep4: formatIPv4(tep?.ipv4 ?? 0),
    starts: b.starts,
    ends: b.ends,
    state: stateName(b.state),
  };
}

/** What a line is checked against: the addresses the server leases (its pools, less what it never leases). */
export class ImportRules {
  private readonly pool: AddressPool;
  private readonly reserved: Set<number>;

  constructor(policy: LeasePolicy) {
    this.pool = new AddressPool({
      pools: policy.pools,
      exclude: policy.exclude,
      skipNetworkBroadcast: policy.skipNetworkBroadcast,
    });
    this.reserved = new Set(policy.reservations.map((r) => r.ipv4));
  }

  /** Why the server would never bind `ip4`, or undefined (ALLOCATE's rule: a dynamic or reserved address). */
  addressProblem(ip4: number): string | undefined {
    if (this.pool.index(ip4) < 0) return 'is in no pool (server.pools)';
    if (this.pool.isDynamic(ip4) || this.reserved.has(ip4)) return undefined;
    return "is never leased (a TEP's address, in server.exclude, or a pool's network or broadcast address)";
  }
}

/**
 * Read JSON lines (blank lines skipped) into bindings, each checked, with its line number; throws LeaseLineError
 * at the first bad line, naming the earlier line for a duplicate.
 */
export async function readLeaseLines(
  input: Readable,
  rules: ImportRules,
): Promise<{ rows: Binding[]; lines: number[] }> {
  const rows: Binding[] = [];
  const lines: number[] = [];
  const byIp4 = new Map<number, number>();
  const liveByIp6 = new Map<string, number>();
  let n = 0;
  const limited = input.pipe(new LineLimit());
  input.once('error', (err) => limited.destroy(err));
  for await (const text of createInterface({ input: limited, crlfDelay: Infinity })) {
    n++;
    if (text.trim() === '') continue;
    const b = parseLine(text, n, rules);
    const dup = byIp4.get(b.ip4);
    if (dup !== undefined) throw new LeaseLineError(n, `${formatIPv4(b.ip4)} is bound on line ${dup} already`);
    byIp4.set(b.ip4, n);
    if (b.state !== STATE.revoked) {
      const key = Buffer.from(b.ip6).toString('hex');
      const other = liveByIp6.get(key);
      if (other !== undefined)
        throw new LeaseLineError(
          n,
          `${formatIPv6(b.ip6)} has a live (active or held) binding on line ${other} already: a node has one at most`,
        );
      liveByIp6.set(key, n);
    }
    rows.push(b);
    lines.push(n);
  }
  return { rows, lines };
}

/** Passes the input on, failing at the first line longer than MAX_LINE bytes before readline buffers it whole. */
class LineLimit extends Transform {
  private line = 1;
  private length = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    for (let from = 0; from < chunk.length;) {
      const nl = chunk.indexOf(10, from);
      const end = nl < 0 ? chunk.length : nl;
      this.length += end - from;
      if (this.length > MAX_LINE)
        return done(new LeaseLineError(this.line, `longer than ${MAX_LINE} bytes: not a binding`));
      if (nl < 0) break;
      this.line++;
      this.length = 0;
      from = nl + 1;
    }
    done(null, chunk);
  }
}

function parseLine(text: string, n: number, rules: ImportRules): Binding {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new LeaseLineError(n, `not JSON (${(err as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new LeaseLineError(n, 'not a JSON object (one binding per line)');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!(KEYS as readonly string[]).includes(k))
      throw new LeaseLineError(n, `unknown key "${k}" (a binding has ${KEYS.join(', ')})`);
  for (const k of REQUIRED) if (!(k in o)) throw new LeaseLineError(n, `no "${k}"`);
  const addr = <T>(key: string, parse: (s: string) => T): T => {
    const s = o[key];
    if (typeof s !== 'string') throw new LeaseLineError(n, `"${key}" is not a string`);
    try {
      return parse(s);
    } catch (err) {
      throw new LeaseLineError(n, `"${key}": ${(err as Error).message}`);
    }
  };
  const ip4 = addr('ipv4', parseIPv4);
  const ip6 = Buffer.from(
    addr('ipv6', (s) => {
      if (s.includes('%')) throw new Error(`"${s}" has a zone: a node is a global or unique local address`);
      return parseIPv6(s);
    }),
  );
  // Informational (the TEP comes from the configuration), but a line is either a binding or refused.
  if ('tep4' in o) addr('tep4', parseIPv4);
  if ('tep6' in o) addr('tep6', parseIPv6);
  const problem = identityProblem(ip6);
  if (problem) throw new LeaseLineError(n, `"ipv6": ${formatIPv6(ip6)} cannot be a node (${problem})`);
  const where = rules.addressProblem(ip4);
  if (where) throw new LeaseLineError(n, `"ipv4": ${formatIPv4(ip4)} ${where}`);
  const time = (key: 'starts' | 'ends'): number => {
    const t = o[key];
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0)
      throw new LeaseLineError(n, `"${key}" is not a time (whole seconds since 1970, not negative)`);
    // Replies carry times in 32 bits: one row beyond would make every LIST and full feed read fail.
    if (t > MAX_LEASE_TIME)
      throw new LeaseLineError(n, `"${key}": ${t} is after ${MAX_LEASE_TIME} (2106-02-07), the last time DSTM carries`);
    return t;
  };
  const state = o.state;
  if (typeof state !== 'string' || !(STATE_NAMES as readonly string[]).includes(state))
    throw new LeaseLineError(n, `"state" is not one of ${STATE_NAMES.join(', ')}`);
  return { ip4, ip6, state: STATE[state as StateName] as State, starts: time('starts'), ends: time('ends') };
}

/**
 * Write the bindings readLeaseLines() checked in one transaction (or nothing), naming the line that collides with
 * the store; the store's new epoch.
 */
export async function restoreLeases(
  store: Store,
  { rows, lines }: { rows: Binding[]; lines: number[] },
  replace: boolean,
): Promise<{ imported: number; epoch: bigint }> {
  try {
    return { imported: rows.length, epoch: await store.restore(rows, replace) };
  } catch (err) {
    if (!(err instanceof RestoreConflict)) throw err;
    const e = err.existing;
    const what =
      err.why === 'address'
        ? `${formatIPv4(e.ip4)} is bound in the store already (to ${formatIPv6(e.ip6)}, ${stateName(e.state)})`
        : `${formatIPv6(e.ip6)} has a live binding in the store already (${formatIPv4(e.ip4)}, ${stateName(e.state)})`;
    throw new LeaseLineError(lines[err.index], `${what}: nothing imported (--replace empties the store first)`);
  }
}

/** Check every line, then write them all in one transaction (or nothing); the store's new epoch. */
export async function importLeases(
  store: Store,
  input: Readable,
  rules: ImportRules,
  replace: boolean,
): Promise<{ imported: number; epoch: bigint }> {
  return restoreLeases(store, await readLeaseLines(input, rules), replace);
}

/** Every binding of the store as JSON lines, in address order, from one snapshot. */
export async function* exportLeases(store: Store, policy: LeasePolicy): AsyncGenerator<string> {
  const teps = new TepMap(policy);
  for await (const b of store.dump()) yield JSON.stringify(bindingRow(b, teps));
}
