// The torture checker on histories made by a model of a correct server (seeded), and on the same histories with one
// fault planted: each fault must be named, and honest uncertainty (a lost release reply) must not be.
import { expect } from 'chai';
import { type Call, type Listed, check, holdings } from './checker';
import { seeded } from '../support/random';

/**
 * A correct server: `nodes` nodes share `pool` addresses, leases of `lease` s, a released or expired address waits
 * `hold` s. Returns every call and the bindings live at the end.
 */
function history(
  seed: number,
  nodes = 16,
  pool = 8,
  lease = 30,
  hold = 5,
  steps = 2000,
): { calls: Call[]; listed: { at: number; rows: Listed[] } } {
  const rnd = seeded(seed);
  const calls: Call[] = [];
  const held = new Map<string, { ipv4: string; ends: number }>();
  const freeAt = new Map<string, number>(Array.from({ length: pool }, (_, i) => [`198.51.100.${i + 1}`, 0]));
  let now = 1_000_000;
  const expire = (): void => {
    for (const [node, b] of held) {
      if (b.ends > now) continue;
      held.delete(node);
      freeAt.set(b.ipv4, b.ends + hold);
    }
  };
  for (let s = 0; s < steps; s++) {
    now += rnd() * 0.5;
    expire();
    const node = `2001:db8::${1 + Math.floor(rnd() * nodes)}`;
    const t0 = now;
    const t1 = now + 0.001 + rnd() * 0.01;
    const mine = held.get(node);
    if (mine && rnd() < 0.3) {
      held.delete(node);
      freeAt.set(mine.ipv4, t1 + hold);
      const lost = rnd() < 0.1; // the release happened but its reply never came
      calls.push({ node, server: 's', op: 'release', t0, t1, ...(lost ? { error: 'timeout' } : { ipv4: mine.ipv4 }) });
      continue;
    }
    if (mine) {
      mine.ends = Math.floor(t1) + lease;
      calls.push({ node, server: 's', op: 'request', t0, t1, ipv4: mine.ipv4, ends: mine.ends });
      continue;
    }
    const free = [...freeAt].find(([ip, at]) => at <= t0 && ![...held.values()].some((b) => b.ipv4 === ip));
    if (!free) {
      calls.push({ node, server: 's', op: 'request', t0, t1, error: 'no_address' });
      continue;
    }
    held.set(node, { ipv4: free[0], ends: Math.floor(t1) + lease });
    calls.push({ node, server: 's', op: 'request', t0, t1, ipv4: free[0], ends: Math.floor(t1) + lease });
  }
  now += 1;
  expire();
  const rows = [...held].map(([ipv6, b]) => ({ ipv6, ipv4: b.ipv4, state: 'active', ends: b.ends }));
  return { calls, listed: { at: now, rows } };
}

describe('torture checker', () => {
  it('finds nothing in the histories of a correct server', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const h = history(seed);
      const r = check(h.calls, h.listed);
      expect(r.violations, `seed ${seed}`).to.deep.equal([]);
      expect(r.grants).to.be.greaterThan(100);
      expect(r.refusals).to.be.greaterThan(0);
      expect(r.calls).to.equal(2000);
    }
  });

  it('names an address granted to a second node while the first still holds it', () => {
    const h = history(7);
    const g = h.calls.find((c) => c.op === 'request' && c.ipv4 !== undefined && c.t1 > h.calls[200].t1)!;
    h.calls.push({
      node: '2001:db8::99',
      server: 's2',
      op: 'request',
      t0: g.t1 + 2,
      t1: g.t1 + 2.01,
      ipv4: g.ipv4,
      ends: g.ends!,
    });
    const v = check(h.calls).violations;
    expect(v.some((m) => m.startsWith(`${g.ipv4} held by`) && m.includes('2001:db8::99'))).to.equal(true, v.join('\n'));
  });

  it('names a node that holds two addresses at once', () => {
    const h = history(8);
    const g = h.calls.find((c) => c.op === 'request' && c.ipv4 !== undefined)!;
    h.calls.push({
      node: g.node,
      server: 's2',
      op: 'request',
      t0: g.t1 + 1,
      t1: g.t1 + 1.01,
      ipv4: '203.0.113.7',
      ends: g.ends!,
    });
    const v = check(h.calls).violations;
    expect(v.some((m) => m.startsWith(`${g.node} held`) && m.includes('203.0.113.7'))).to.equal(true, v.join('\n'));
  });

  it('names an acknowledged grant that is missing, or different, after recovery', () => {
    const h = history(9);
    const [gone, changed] = h.listed.rows;
    const rows = h.listed.rows
      .filter((r) => r !== gone)
      .map((r) => (r === changed ? { ...r, ipv4: '203.0.113.9' } : r));
    const v = check(h.calls, { at: h.listed.at, rows }).violations;
    expect(v.filter((m) => m.includes(`${gone.ipv6}'s grant`) && m.endsWith('missing after recovery'))).to.have.length(
      1,
    );
    expect(
      v.filter((m) => m.includes(`${changed.ipv6}'s grant`) && m.endsWith('shows 203.0.113.9 after recovery')),
    ).to.have.length(1);
  });

  it('a release whose reply was lost ends what the grant proves when it was sent', () => {
    const calls: Call[] = [
      { node: 'a', server: 's', op: 'request', t0: 10, t1: 10.1, ipv4: '192.0.2.1', ends: 100 },
      { node: 'a', server: 's', op: 'release', t0: 20, t1: 25, error: 'timeout' },
      { node: 'b', server: 's', op: 'request', t0: 30, t1: 30.1, ipv4: '192.0.2.1', ends: 120 },
    ];
    expect(holdings(calls).map((h) => [h.node, h.from, h.to])).to.deep.equal([
      ['a', 10.1, 20],
      ['b', 30.1, 120],
    ]);
    expect(check(calls).violations).to.deep.equal([]);
    // Without the release, a's lease runs to 100 and b's grant at 30 is a double holding.
    expect(check([calls[0], calls[2]]).violations).to.have.length(1);
  });
});
