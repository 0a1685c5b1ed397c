// The counters the metrics read instead of passing over the pool or the store per scrape: per-pool counts of the
// allocator, and the store's bindings per state (kept by triggers), checked against a recount through seeded runs.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatPrefix4, parsePrefix4, prefixSize4 } from '../../src/lib/addr';
import { AddressPool } from '../../src/server/pool';
import { STATE } from '../../src/protocol/status';
import { SqliteStore } from '../../src/server/sqlite-store';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

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
    const rnd = lcg(13);
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
  it('state_counts follows inserts, state changes and removals, rolled-back ones excluded, and is rebuilt at open', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-counts-'));
    try {
      let store = new SqliteStore(dir);
      // the rows are written straight, as every engine transaction does: the triggers must follow any writer
      const sql = (s: SqliteStore) => ({
        insert: s.db.prepare<[number, Buffer, number]>(
          'INSERT INTO bindings (ip4, ip6, state, starts, ends) VALUES (?, ?, ?, 1, 2)',
        ),
        update: s.db.prepare<[number, number]>('UPDATE bindings SET state = ?, ends = 3 WHERE ip4 = ?'),
        remove: s.db.prepare<[number]>('DELETE FROM bindings WHERE ip4 = ?'),
        state: s.db.prepare<[number]>('SELECT state FROM bindings WHERE ip4 = ?').pluck(),
      });
      const q = sql(store);
      const ip6 = (n: number): Buffer =>
        Buffer.from(`20010db8000000000000000000000${n.toString(16).padStart(3, '0')}`, 'hex');
      const rnd = lcg(7);
      const model = new Map<number, number>();
      const wanted = (): Record<string, number> => {
        const want = { active: 0, held: 0, revoked: 0 };
        for (const st of model.values()) want[(['active', 'held', 'revoked'] as const)[st]]++;
        return want;
      };
      for (let step = 0; step < 300; step++) {
        const ip4 = 0xc6336400 + Math.floor(rnd() * 40);
        const cur = model.get(ip4);
        const rollback = rnd() < 0.1;
        try {
          store.db.transaction(() => {
            if (cur === undefined) q.insert.run(ip4, ip6(ip4 & 0xff), STATE.active);
            else if (rnd() < 0.5) q.remove.run(ip4);
            else q.update.run([STATE.active, STATE.held, STATE.revoked][Math.floor(rnd() * 3)], ip4);
            if (rollback) throw new Error('rollback');
          })();
        } catch (err) {
          if ((err as Error).message !== 'rollback') throw err;
        }
        const after = q.state.get(ip4) as number | undefined;
        if (after !== undefined) model.set(ip4, after);
        else model.delete(ip4);
        expect(await store.counts()).to.deep.equal(wanted());
      }
      // a store whose counts drifted (or predate the triggers) is recounted when opened
      store.db.exec('UPDATE state_counts SET n = 999');
      await store.close();
      store = new SqliteStore(dir);
      expect(await store.counts()).to.deep.equal(wanted());
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
