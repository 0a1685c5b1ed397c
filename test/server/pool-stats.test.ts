// The per-pool counters the metrics read (no pass over the pool or the store per scrape) stay equal to a count
// over the bitmap through a seeded random run of take, takeSpecific, give and load.
import { expect } from 'chai';
import { formatPrefix4, parsePrefix4, prefixSize4 } from '../../src/lib/addr';
import { AddressPool } from '../../src/server/pool';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe('address pool: per-pool counters', () => {
  it('size, dynamic and free per pool match a count over the addresses after every step', () => {
    const pools = ['198.51.100.0/28', '192.0.2.0/30', '203.0.113.64/27'].map(parsePrefix4);
    const pool = new AddressPool({ pools, exclude: [parsePrefix4('203.0.113.80/30')], reserved: [parsePrefix4('198.51.100.5/32').base] });
    const all = pools.flatMap((p) => Array.from({ length: prefixSize4(p.len) }, (_, i) => p.base + i));
    pool.load([all[3], all[20]]);
    const rnd = lcg(13);
    const held: number[] = [];
    const check = (): void => {
      const expected = pools
        .map((p) => {
          const addrs = all.filter((a) => a >= p.base && a < p.base + prefixSize4(p.len));
          return { pool: formatPrefix4(p), size: addrs.length, dynamic: addrs.filter((a) => pool.isDynamic(a)).length, free: addrs.filter((a) => pool.isFree(a)).length };
        })
        .sort((x, y) => parsePrefix4(x.pool).base - parsePrefix4(y.pool).base);
      expect(pool.stats().map((s) => ({ ...s, pool: formatPrefix4(s.pool) }))).to.deep.equal(expected);
    };
    check();
    expect(pool.stats().find((s) => formatPrefix4(s.pool) === '198.51.100.0/28')).to.include({ size: 16, dynamic: 13 });
    for (let step = 0; step < 400; step++) {
      const r = rnd();
      if (r < 0.4) {
        const a = pool.take();
        if (a !== undefined) held.push(a);
      } else if (r < 0.6) {
        const a = all[Math.floor(rnd() * all.length)];
        if (pool.takeSpecific(a)) held.push(a);
      } else if (held.length) {
        pool.give(held.splice(Math.floor(rnd() * held.length), 1)[0]);
      }
      check();
    }
    pool.load(held);
    check();
  });
});
