// The torture test's checker: from every reply the nodes recorded, and the bindings the servers list once the faults
// have stopped, it proves the three safety properties of issue 9 or names each violation:
//  - no IPv4 address held by two nodes over overlapping lease intervals, according to the replies;
//  - no node holding two addresses at once;
//  - every acknowledged grant still in force is present after recovery.
// A grant proves that its node holds the address from the moment the reply arrived (the commit came before it) until
// the lease's end, or until the node next tried to release it, whichever is first: a release whose reply was lost may
// still have happened, so only the time before it was sent is certain. Times are seconds on this machine's clock,
// which the servers and their database share here.

/** One call as a node saw it. `t0`/`t1`: seconds when it was sent and when its reply (or failure) arrived. */
export interface Call {
  node: string;
  server: string;
  op: 'request' | 'release';
  t0: number;
  t1: number;
  /** The address granted (request) or released (release); absent when the call failed. */
  ipv4?: string;
  /** Absolute seconds when the granted lease ends (request only). */
  ends?: number;
  /** Why the call failed: a refusal's status or an error's message. */
  error?: string;
}

/** One binding as the servers list it after recovery. */
export interface Listed {
  ipv6: string;
  ipv4: string;
  state: string;
  ends: number;
}

/** What a grant proves: `node` held `ipv4` over [from, to]. */
export interface Holding {
  node: string;
  ipv4: string;
  from: number;
  to: number;
}

export interface Report {
  calls: number;
  grants: number;
  refusals: number;
  failures: number;
  violations: string[];
}

/**
 * Clock granularity: lease ends are whole seconds, so intervals touching within this much are not an overlap.
 * Longer than any honest rounding, far shorter than the lease and hold times the torture uses.
 */
export const SLACK = 1;

/** The certain holding intervals the grants among `calls` prove. */
export function holdings(calls: readonly Call[]): Holding[] {
  const byNode = new Map<string, Call[]>();
  for (const c of calls) (byNode.get(c.node) ?? byNode.set(c.node, []).get(c.node)!).push(c);
  const out: Holding[] = [];
  for (const [node, list] of byNode) {
    list.sort((a, b) => a.t0 - b.t0);
    list.forEach((c, i) => {
      if (c.op !== 'request' || c.ipv4 === undefined || c.ends === undefined) return;
      const release = list.slice(i + 1).find((r) => r.op === 'release' && r.t0 >= c.t1);
      const to = Math.min(c.ends, release ? release.t0 : Infinity);
      if (to > c.t1) out.push({ node, ipv4: c.ipv4, from: c.t1, to });
    });
  }
  return out;
}

function overlap(a: Holding, b: Holding): number {
  return Math.min(a.to, b.to) - Math.max(a.from, b.from);
}

/** Pairs of holdings that share `key` but differ in `other` and overlap by more than SLACK. */
function conflicts(
  hs: readonly Holding[],
  key: 'ipv4' | 'node',
  describe: (a: Holding, b: Holding) => string,
): string[] {
  const other = key === 'ipv4' ? 'node' : 'ipv4';
  const groups = new Map<string, Holding[]>();
  for (const h of hs) (groups.get(h[key]) ?? groups.set(h[key], []).get(h[key])!).push(h);
  const found: string[] = [];
  for (const group of groups.values()) {
    group.sort((a, b) => a.from - b.from);
    for (let i = 0; i < group.length; i++) {
      for (let j = i + 1; j < group.length && group[j].from < group[i].to; j++) {
        if (group[i][other] !== group[j][other] && overlap(group[i], group[j]) > SLACK)
          found.push(describe(group[i], group[j]));
      }
    }
  }
  return found;
}

const span = (h: Holding): string => `[${h.from.toFixed(3)}, ${h.to.toFixed(3)}]`;

/** Checks the recorded `calls` and, when given, the bindings `listed` at time `at` once every fault is over. */
export function check(calls: readonly Call[], listed?: { at: number; rows: readonly Listed[] }): Report {
  const hs = holdings(calls);
  const violations = [
    ...conflicts(hs, 'ipv4', (a, b) => `${a.ipv4} held by ${a.node} ${span(a)} and by ${b.node} ${span(b)}`),
    ...conflicts(hs, 'node', (a, b) => `${a.node} held ${a.ipv4} ${span(a)} and ${b.ipv4} ${span(b)}`),
  ];
  if (listed) {
    const live = new Map(listed.rows.filter((r) => r.state === 'active').map((r) => [r.ipv6, r]));
    // The last holding of each node that is certain to be in force at `at` must be there, with the same address.
    const last = new Map<string, Holding>();
    for (const h of hs) if (h.to > listed.at + SLACK && (last.get(h.node)?.from ?? -1) < h.from) last.set(h.node, h);
    for (const h of last.values()) {
      const row = live.get(h.node);
      if (!row) violations.push(`${h.node}'s grant of ${h.ipv4} ${span(h)} is missing after recovery`);
      else if (row.ipv4 !== h.ipv4)
        violations.push(`${h.node}'s grant of ${h.ipv4} ${span(h)} shows ${row.ipv4} after recovery`);
    }
  }
  const grants = calls.filter((c) => c.op === 'request' && c.ipv4 !== undefined).length;
  const refusals = calls.filter((c) => c.error !== undefined && /^[a-z_]+$/.test(c.error)).length;
  const failures = calls.filter((c) => c.error !== undefined).length - refusals;
  return { calls: calls.length, grants, refusals, failures, violations };
}
