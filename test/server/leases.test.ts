import { expect } from 'chai';
import { copyFileSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIPv4, parsePrefix4 } from '../../src/lib/addr';
import { LeaseService, StoreUnavailable } from '../../src/server/leases';
import { AddressPool } from '../../src/server/pool';
import { SqliteStore, type SqliteOptions } from '../../src/server/sqlite-store';
import type { StoreHealth } from '../../src/server/store';
import { node, policy } from './store-conformance';

/** The real store, counting the WAL syncs that have completed. */
class CountingStore extends SqliteStore {
  synced = 0;

  override syncWal(done: (err: Error | null) => void): void {
    super.syncWal((err) => {
      this.synced++;
      done(err);
    });
  }
}

describe('address pool', () => {
  it('hands out every dynamic address once, skips network, broadcast, exclusions and reservations', () => {
    const pool = new AddressPool({
      pools: [parsePrefix4('10.0.0.0/28')],
      exclude: [parsePrefix4('10.0.0.4/31')],
      reserved: [parseIPv4('10.0.0.9')],
    });
    pool.load([parseIPv4('10.0.0.1')]);
    const got: number[] = [];
    for (let a = pool.take(); a !== undefined; a = pool.take()) got.push(a & 255);
    expect(got).to.deep.equal([2, 3, 6, 7, 8, 10, 11, 12, 13, 14]);
  });

  it('reuses the address released longest ago, and skips one taken out specifically', () => {
    const pool = new AddressPool({ pools: [parsePrefix4('10.0.0.0/30')], skipNetworkBroadcast: false });
    pool.load([]);
    const [a, b, c, d] = [pool.take(), pool.take(), pool.take(), pool.take()];
    expect(pool.take()).to.equal(undefined);
    pool.give(c!);
    pool.give(a!);
    pool.give(b!);
    expect(pool.takeSpecific(a!)).to.equal(true);
    expect(pool.takeSpecific(d!)).to.equal(false);
    expect([pool.take(), pool.take(), pool.take()]).to.deep.equal([c, b, undefined]);
  });
});

describe('lease service on the SQLite store: group commit and durability', () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  let svc: LeaseService;
  const clock = (): number => now;
  const open = (opts: SqliteOptions = {}): SqliteStore => new SqliteStore(dir, { clock, ...opts });
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dstm-leases-'));
    now = 1_800_000_000;
    store = open();
    svc = await LeaseService.open(store, policy());
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('commits requests that arrive together in one transaction (group commit), each settled after it', async () => {
    const batches: number[] = [];
    store.on('batch', (n: number) => batches.push(n));
    const grants = await Promise.all([1, 2, 3, 4, 5].map((n) => svc.request(node(n), 0, 0)));
    expect(batches).to.deep.equal([5]);
    // Every promise settled after the commit: a second connection already sees all five rows.
    const reader = open({ readonly: true });
    expect((await reader.counts()).active).to.equal(5);
    await reader.close();
    expect(grants.every((g) => g.status === 'ok')).to.equal(true);
  });

  it('keeps uniqueness in the store: an address bound behind its back is skipped, never given twice', async () => {
    const insert = store.db.prepare('INSERT INTO bindings (ip4, ip6, state, starts, ends) VALUES (?, ?, 0, ?, ?)');
    insert.run(parseIPv4('192.0.2.1'), node(99), now, now + 60);
    expect(() => insert.run(parseIPv4('192.0.2.1'), node(98), now, now + 60)).to.throw(/UNIQUE/);
    expect(() => insert.run(parseIPv4('192.0.2.2'), node(99), now, now + 60)).to.throw(/UNIQUE/);
    const g = await svc.request(node(1), 0, 0);
    expect(g).to.include({ status: 'ok', ip4: parseIPv4('192.0.2.2') });
  });

  it('fails only what it must when the store cannot commit, and undoes the pool', async () => {
    const free = svc.available;
    store.db.pragma('query_only = ON');
    const failed = await Promise.allSettled([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
    expect(failed.map((r) => r.status)).to.deep.equal(['rejected', 'rejected', 'rejected']);
    expect((failed[0] as PromiseRejectedResult).reason).to.be.instanceOf(StoreUnavailable);
    expect(svc.available).to.equal(free);
    store.db.pragma('query_only = OFF');
    const ok = await Promise.all([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
    expect(ok.map((g) => g.status)).to.deep.equal(['ok', 'ok', 'ok']);
    expect(new Set(ok.map((g) => g.ip4)).size).to.equal(3);
    expect(svc.available).to.equal(free - 3);
  });

  it('holds a sync back briefly for as many callers as the last one answered, so that they share it', async () => {
    await store.close();
    // A disk whose flush takes 20 ms: the wait for more callers (a fraction of a flush) is long enough not to race.
    const slow = new (class extends CountingStore {
      override syncWal(done: (err: Error | null) => void): void {
        setTimeout(() => super.syncWal(done), 20);
      }
    })(dir, { clock });
    store = slow;
    svc = await LeaseService.open(store, policy());
    const round = (nodes: number[]): Promise<unknown> => Promise.all(nodes.map((n) => svc.request(node(n), 0, 0)));
    for (let i = 0; i < 3; i++) await round([1, 2, 3, 4]);
    expect(slow.synced).to.equal(3);
    // Two of the four call back, then two more a couple of event-loop turns later: one sync for all four.
    const early = round([1, 2]);
    for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    await Promise.all([early, round([3, 4])]);
    expect(slow.synced).to.equal(4);
    // Fewer callers than expected: the sync starts anyway once the wait is over.
    await round([1]);
    expect(slow.synced).to.equal(5);
  });

  it('answers an allocation only after a WAL sync that followed its commit, a release at its commit; the feed shows only synced changes', async () => {
    await store.close();
    const counting = new CountingStore(dir, { clock });
    store = counting;
    svc = await LeaseService.open(store, policy());
    const since = svc.lastSeq;
    const g = await svc.request(node(1), 0, 0);
    expect(counting.synced).to.equal(1);
    expect((await svc.changes(since, 10)).changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, true]]);
    const afterRequest = svc.lastSeq;
    expect((await svc.release(node(1), g.ip4)).status).to.equal('ok');
    expect(counting.synced, 'the release was answered before any sync').to.equal(1);
    expect((await svc.changes(afterRequest, 10)).changes, 'a change not yet durable is not in the feed').to.have.length(
      0,
    );
    await svc.waitForChange(afterRequest, 2000);
    expect(counting.synced).to.equal(2);
    expect((await svc.changes(afterRequest, 10)).changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, false]]);
    // Renewals and admin operations wait for a sync too.
    await svc.request(node(2), 0, 0);
    expect(counting.synced).to.equal(3);
    await svc.request(node(2), 0, 0);
    expect(counting.synced).to.equal(4);
    await svc.revoke(node(2), 0);
    expect(counting.synced).to.equal(5);
  });

  it('a release lost in a crash before its sync leaves the address with its node until the lease and hold end, never with another', async () => {
    svc = await LeaseService.open(store, policy({ pools: [parsePrefix4('192.0.2.0/30')] }));
    const a = await svc.request(node(1), 0, 0);
    expect((await svc.request(node(2), 0, 0)).status).to.equal('ok');
    // What the disk holds for sure once the release has been answered: everything synced before it, not the release.
    const disk = mkdtempSync(join(tmpdir(), 'dstm-leases-disk-'));
    try {
      for (const f of ['dstm.sqlite', 'dstm.sqlite-wal']) copyFileSync(join(dir, f), join(disk, f));
      expect((await svc.release(node(1), a.ip4)).status).to.equal('ok');
      // Power loss; the server restarts on what the disk held.
      const restarted = new SqliteStore(disk, { clock });
      try {
        const after = await LeaseService.open(restarted, policy({ pools: [parsePrefix4('192.0.2.0/30')] }));
        expect((await restarted.list(-1, 10)).find((b) => b.ip6.equals(node(1)))).to.include({
          ip4: a.ip4,
          state: 0,
          ends: a.ends,
        });
        expect((await after.request(node(3), 0, 0)).status, 'the address is not handed to another node').to.equal(
          'no_address',
        );
        now = a.ends;
        await after.sweep();
        expect((await after.request(node(3), 0, 0)).status, 'nor during the hold time').to.equal('no_address');
        now += 30;
        await after.sweep();
        expect((await after.request(node(3), 0, 0)).ip4).to.equal(a.ip4);
      } finally {
        await restarted.close();
      }
    } finally {
      rmSync(disk, { recursive: true, force: true });
    }
  });

  it('finding 6: a restored backup keeps its epoch — a copied store file opens with a new epoch, the same file keeps its own', async () => {
    await svc.request(node(1), 0, 0);
    const epoch = store.epoch;
    await store.close();
    store = open();
    expect(store.epoch, 'reopened in place').to.equal(epoch);
    await store.close();
    // A backup copied back over the store (a new file: another inode) is another history.
    const backup = join(dir, 'backup.sqlite');
    copyFileSync(join(dir, 'dstm.sqlite'), backup);
    renameSync(backup, join(dir, 'dstm.sqlite'));
    store = open();
    expect(store.epoch).to.not.equal(epoch);
    expect((await store.list(-1, 10)).map((b) => b.ip6)).to.deep.equal([node(1)]);
    const second = store.epoch;
    await store.close();
    store = open();
    expect(store.epoch, 'and keeps the new one from then on').to.equal(second);
  });

  it('refuses a store whose schema is newer than this dstm, naming both versions', async () => {
    store.db.pragma('user_version = 7');
    await store.close();
    expect(() => open()).to.throw(/schema version 7, newer than this dstm's 1/);
    store = open({ readonly: true });
  });

  it('finding 13: after an fsync failure the store reports itself unavailable once and refuses every call', async () => {
    await store.close();
    let failNext = false;
    store = new (class extends SqliteStore {
      override syncWal(done: (err: Error | null) => void): void {
        if (failNext)
          queueMicrotask(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
        else super.syncWal(done);
      }
    })(dir, { clock });
    svc = await LeaseService.open(store, policy());
    const health: StoreHealth[] = [];
    store.on('health', (h) => health.push(h));
    expect((await svc.request(node(1), 0, 0)).status).to.equal('ok');
    failNext = true;
    const failed = await Promise.allSettled([2, 3].map((n) => svc.request(node(n), 0, 0)));
    expect(failed.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
    failNext = false;
    expect(await svc.request(node(4), 0, 0).catch((e: Error) => e.name)).to.equal('StoreUnavailable');
    expect(health).to.have.length(1);
    expect(health[0].ok).to.equal(false);
    expect(health[0].reason).to.match(/EIO/);
    expect(store.health().ok).to.equal(false);
  });
});
