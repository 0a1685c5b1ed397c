// The counters the metrics read instead of passing over the pool or the store per scrape: per-pool counts of the
// allocator, and the store's bindings per state (kept in memory by the store), checked against a recount through
// seeded runs.
import Database from 'better-sqlite3';
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatPrefix4, parsePrefix4, prefixSize4 } from '../../src/lib/addr';
import { AddressPool } from '../../src/server/pool';
import { SqliteStore } from '../../src/server/sqlite-store';
import { seeded } from '../support/random';

describe('address pool: per-pool counters', () => {
  it('size, dynamic and free per pool match a count over the addresses after every step', () => {
    const pools = ['198.51.100.0/28', '192.0.2.0/30', '203.0.113.64/27'].map(parsePrefix4);
    const pool = new AddressPool({
      pools,
      exclude: [parsePrefix4('203.0.113.80/30')],
      reserved: [parsePrefix4('198.51.100.5/32').base],
    });
    const all = pools.flatMap((p) => Array.from({ length: prefixSize4(p.len) }, (_, i) => p.base + i));
    pool.load([all[3], all[20]]);
    const rnd = seeded(13);
    const held: number[] = [];
    const check = (): void => {
      const expected = pools
        .map((p) => {
          const addrs = all.filter((a) => a >= p.base && a < p.base + prefixSize4(p.len));
          return {
            pool: formatPrefix4(p),
            size: addrs.length,
            dynamic: addrs.filter((a) => pool.isDynamic(a)).length,
            free: addrs.filter((a) => pool.isFree(a)).length,
          };
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

describe('SQLite store: bindings per state without a table scan', () => {
  it('counts() follows grants, releases, revokes and sweeps, rolled-back batches excluded, and is rebuilt at open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-counts-'));
    let now = 1_000_000;
    const clock = (): number => now;
    try {
      let store = new SqliteStore(dir, { clock });
      // the truth: a count over the table, which counts() must match without making one
      const recount = (s: SqliteStore): Record<string, number> => {
        const out = { active: 0, held: 0, revoked: 0 };
        for (const r of s.db.prepare('SELECT state, count(*) AS n FROM bindings GROUP BY state').all() as {
          state: number;
          n: number;
        }[])
          out[(['active', 'held', 'revoked'] as const)[r.state]] = r.n;
        return out;
      };
      const ip6 = (n: number, len = 16): Buffer =>
        Buffer.from(`20010db8000000000000000000000${n.toString(16).padStart(3, '0')}`, 'hex').subarray(0, len);
      const free = Array.from({ length: 64 }, (_, i) => 0xc6336400 + i);
      const candidates = { next: () => free.shift(), unused: (a: number) => void free.unshift(a) };
      const grant = (node: number, len = 16): Promise<unknown> =>
        store.grant({ ip6: ip6(node, len), duration: 30, candidates });
      const rnd = seeded(7);
      let rolledBack = 0;
      for (let step = 0; step < 300; step++) {
        const node = Math.floor(rnd() * 40);
        const r = rnd();
        if (r < 0.4) await grant(node);
        else if (r < 0.6) await store.release(ip6(node), 0);
        else if (r < 0.7) await store.revoke(ip6(node), 0);
        else if (r < 0.8) {
          now += Math.floor(rnd() * 40);
          free.push(...(await store.sweep(20)).reclaimed);
        } else {
          // one batch: a good grant, then one the table's CHECK refuses (a 15-byte address), which rolls the batch
          // back; each is then run alone
          const results = await Promise.allSettled([grant(node), grant(node + 100, 15)]);
          expect(results[1].status).to.equal('rejected');
          rolledBack++;
        }
        expect(await store.counts()).to.deep.equal(recount(store));
      }
      expect(rolledBack).to.be.above(10);
      // one binding in each state for certain, whatever the walk left, so that the rebuild below counts all three
      for (const node of [200, 201, 202]) await grant(node);
      await store.release(ip6(201), 0);
      await store.revoke(ip6(202), 0);
      expect(await store.counts()).to.deep.equal(recount(store));
      expect(Object.values(recount(store)).every((n) => n > 0)).to.equal(true);
      // a store an older dstm wrote keeps its counts in a table with triggers: they go, and the counts are made at open
      await store.close();
      const old = new Database(join(dir, 'dstm.sqlite'));
      old.exec(`CREATE TABLE state_counts (state INTEGER PRIMARY KEY, n INTEGER NOT NULL);
        INSERT INTO state_counts VALUES (0, 999), (1, 999), (2, 999);
        CREATE TRIGGER bindings_count_insert AFTER INSERT ON bindings BEGIN
          UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
        END;`);
      old.close();
      store = new SqliteStore(dir, { clock });
      const objects = store.db
        .prepare("SELECT name FROM sqlite_master WHERE name IN ('state_counts', 'bindings_count_insert')")
        .all();
      expect(objects).to.deep.equal([]);
      expect(await store.counts()).to.deep.equal(recount(store));
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
