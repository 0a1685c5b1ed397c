import { expect } from 'chai';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { LeaseService, StoreUnavailable, type LeasePolicy } from '../../src/server/leases';
import { AddressPool } from '../../src/server/pool';
import { Store } from '../../src/server/store';

/** The real store, counting the WAL syncs that have completed. */
class CountingStore extends Store {
  synced = 0;

  override sync(done: (err: Error | null) => void): void {
    super.sync((err) => {
      this.synced++;
      done(err);
    });
  }
}

const node = (n: number): Buffer => Buffer.from(parseIPv6(`2001:db8::${n.toString(16)}`));

function policy(over: Partial<LeasePolicy> = {}): LeasePolicy {
  return {
    lease: 60,
    maxLease: 600,
    hold: 30,
    pools: [parsePrefix4('192.0.2.0/29')],
    exclude: [],
    skipNetworkBroadcast: true,
    reservations: [],
    teps: [{ prefix: parsePrefix6('2001:db8::/120'), ipv6: parseIPv6('2001:db8::fe'), ipv4: parseIPv4('198.51.100.1') }],
    tep: { ipv6: parseIPv6('2001:db8:1::1'), ipv4: parseIPv4('198.51.100.2') },
    ...over,
  };
}

describe('address pool', () => {
  it('hands out every dynamic address once, skips network, broadcast, exclusions and reservations', () => {
    const pool = new AddressPool({ pools: [parsePrefix4('10.0.0.0/28')], exclude: [parsePrefix4('10.0.0.4/31')], reserved: [parseIPv4('10.0.0.9')] });
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

describe('lease service', () => {
  let dir: string;
  let store: Store;
  let now: number;
  let svc: LeaseService;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dstm-leases-'));
    store = new Store(dir);
    now = 1_800_000_000;
    svc = new LeaseService(store, policy(), () => now);
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is idempotent per node, renews, and gives the TEP of the longest prefix', async () => {
    const g1 = await svc.request(node(1), 0, 0);
    expect(g1).to.include({ status: 'ok', ip4: parseIPv4('192.0.2.1'), starts: now, ends: now + 60, duration: 60 });
    expect(g1.tep!.ipv4).to.equal(parseIPv4('198.51.100.1'));
    now += 10;
    const g2 = await svc.request(node(1), 0, 10_000);
    expect(g2).to.include({ ip4: g1.ip4, starts: g1.starts, ends: now + 600 });
    const other = await svc.request(Buffer.from(parseIPv6('2001:db8:5::1')), 0, 0);
    expect(other.ip4).to.not.equal(g1.ip4);
    expect(other.tep!.ipv4).to.equal(parseIPv4('198.51.100.2'));
  });

  it('exhausts a tiny pool with a refusal, and release frees only the caller binding', async () => {
    const grants = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((n) => svc.request(node(n), 0, 0)));
    expect(grants.slice(0, 6).map((g) => g.status)).to.deep.equal(Array(6).fill('ok'));
    expect(new Set(grants.slice(0, 6).map((g) => g.ip4)).size).to.equal(6);
    expect(grants[6].status).to.equal('no_address');
    expect((await svc.release(node(1), grants[1].ip4)).status).to.equal('no_binding');
    expect(store.byIp6(node(2))!.ip4).to.equal(grants[1].ip4);
    expect((await svc.release(node(1), grants[0].ip4)).status).to.equal('ok');
    expect((await svc.request(node(7), 0, 0)).ip4).to.equal(grants[0].ip4);
  });

  it('expires, holds for the same node, then reclaims after the hold time; the feed follows', async () => {
    const g = await svc.request(node(1), 0, 0);
    now += 61;
    expect(svc.sweepDue()).to.equal(true);
    await svc.sweep();
    expect(store.byIp6(node(1))!.state).to.equal(1);
    const feed = svc.changes(0, 10);
    expect(feed.changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, false]]);
    // Held: not given to anyone else, but the same node gets it back.
    const fill = await Promise.all([2, 3, 4, 5, 6].map((n) => svc.request(node(n), 0, 0)));
    expect(fill.map((x) => x.ip4)).to.not.include(g.ip4);
    expect((await svc.request(node(9), 0, 0)).status).to.equal('no_address');
    now += 31;
    await svc.sweep();
    expect((await svc.request(node(9), 0, 0)).ip4).to.equal(g.ip4);
  });

  it('revoke quarantines the address and the node starts over; allocate binds a node that did not ask', async () => {
    const g = await svc.allocate(node(1), parseIPv4('192.0.2.5'), 0);
    expect(g).to.include({ status: 'ok', ip4: parseIPv4('192.0.2.5') });
    expect((await svc.allocate(node(2), parseIPv4('192.0.2.5'), 0)).status).to.equal('conflict');
    expect((await svc.allocate(node(2), parseIPv4('10.9.9.9'), 0)).status).to.equal('bad_request');
    expect((await svc.request(node(1), 0, 0)).ip4).to.equal(g.ip4);
    expect((await svc.revoke(node(1), 0)).status).to.equal('ok');
    const again = await svc.request(node(1), 0, 0);
    expect(again.ip4).to.not.equal(g.ip4);
    expect(store.byIp4(g.ip4)!.state).to.equal(2);
  });

  it('honours reservations and persists across a restart with the same epoch', async () => {
    svc = new LeaseService(store, policy({ reservations: [{ ipv6: parsePrefix6('2001:db8::7/128'), ipv4: parseIPv4('192.0.2.3') }] }), () => now);
    const r = await svc.request(node(7), 0, 0);
    expect(r.ip4).to.equal(parseIPv4('192.0.2.3'));
    const a = await svc.request(node(1), 0, 0);
    expect(a.ip4).to.not.equal(r.ip4);
    const epoch = store.epoch;
    store.close();
    store = new Store(dir);
    expect(store.epoch).to.equal(epoch);
    svc = new LeaseService(store, policy(), () => now);
    expect((await svc.request(node(1), 0, 0)).ip4).to.equal(a.ip4);
    expect(svc.available).to.equal(6 - 2);
  });

  it('commits requests that arrive together in one transaction (group commit), each settled after it', async () => {
    const batches: number[] = [];
    svc.on('batch', (n: number) => batches.push(n));
    const grants = await Promise.all([1, 2, 3, 4, 5].map((n) => svc.request(node(n), 0, 0)));
    expect(batches).to.deep.equal([5]);
    // Every promise settled after the commit: a second connection already sees all five rows.
    const reader = new Store(dir, { readonly: true });
    expect(reader.counts().active).to.equal(5);
    reader.close();
    expect(grants.every((g) => g.status === 'ok')).to.equal(true);
  });

  it('keeps uniqueness in the store: an address bound behind its back is skipped, never given twice', async () => {
    const other = new Store(dir);
    other.insert({ ip4: parseIPv4('192.0.2.1'), ip6: node(99), state: 0, starts: now, ends: now + 60 });
    expect(() => other.insert({ ip4: parseIPv4('192.0.2.1'), ip6: node(98), state: 0, starts: now, ends: now + 60 })).to.throw(/UNIQUE/);
    expect(() => other.insert({ ip4: parseIPv4('192.0.2.2'), ip6: node(99), state: 0, starts: now, ends: now + 60 })).to.throw(/UNIQUE/);
    other.close();
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

  it('wakes a feed waiter on a change', async () => {
    const since = svc.lastSeq;
    const t0 = Date.now();
    const waiting = svc.waitForChange(since, 5000);
    setTimeout(() => void svc.request(node(1), 0, 0), 50);
    await waiting;
    expect(Date.now() - t0).to.be.lessThan(2000);
    expect(svc.changes(since, 10).changes).to.have.length(1);
  });

  it('holds a sync back briefly for as many callers as the last one answered, so that they share it', async () => {
    store.close();
    // A disk whose flush takes 20 ms: the wait for more callers (a fraction of a flush) is long enough not to race.
    const slow = new (class extends CountingStore {
      override sync(done: (err: Error | null) => void): void {
        setTimeout(() => super.sync(done), 20);
      }
    })(dir);
    store = slow;
    svc = new LeaseService(store, policy(), () => now);
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
    store.close();
    const counting = new CountingStore(dir);
    store = counting;
    svc = new LeaseService(store, policy(), () => now);
    const since = svc.lastSeq;
    const g = await svc.request(node(1), 0, 0);
    expect(counting.synced).to.equal(1);
    expect(svc.changes(since, 10).changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, true]]);
    const afterRequest = svc.lastSeq;
    expect((await svc.release(node(1), g.ip4)).status).to.equal('ok');
    expect(counting.synced, 'the release was answered before any sync').to.equal(1);
    expect(svc.changes(afterRequest, 10).changes, 'a change not yet durable is not in the feed').to.have.length(0);
    await svc.waitForChange(afterRequest, 2000);
    expect(counting.synced).to.equal(2);
    expect(svc.changes(afterRequest, 10).changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, false]]);
    // Renewals and admin operations wait for a sync too.
    await svc.request(node(2), 0, 0);
    expect(counting.synced).to.equal(3);
    await svc.request(node(2), 0, 0);
    expect(counting.synced).to.equal(4);
    await svc.revoke(node(2), 0);
    expect(counting.synced).to.equal(5);
  });

  it('a release lost in a crash before its sync leaves the address with its node until the lease and hold end, never with another', async () => {
    svc = new LeaseService(store, policy({ pools: [parsePrefix4('192.0.2.0/30')] }), () => now);
    const a = await svc.request(node(1), 0, 0);
    expect((await svc.request(node(2), 0, 0)).status).to.equal('ok');
    // What the disk holds for sure once the release has been answered: everything synced before it, not the release.
    const disk = mkdtempSync(join(tmpdir(), 'dstm-leases-disk-'));
    try {
      for (const f of ['dstm.sqlite', 'dstm.sqlite-wal']) copyFileSync(join(dir, f), join(disk, f));
      expect((await svc.release(node(1), a.ip4)).status).to.equal('ok');
      // Power loss; the server restarts on what the disk held.
      const restarted = new Store(disk);
      try {
        const after = new LeaseService(restarted, policy({ pools: [parsePrefix4('192.0.2.0/30')] }), () => now);
        expect(restarted.byIp6(node(1))).to.include({ ip4: a.ip4, state: 0, ends: a.ends });
        expect((await after.request(node(3), 0, 0)).status, 'the address is not handed to another node').to.equal('no_address');
        now = a.ends;
        await after.sweep();
        expect((await after.request(node(3), 0, 0)).status, 'nor during the hold time').to.equal('no_address');
        now += 30;
        await after.sweep();
        expect((await after.request(node(3), 0, 0)).ip4).to.equal(a.ip4);
      } finally {
        restarted.close();
      }
    } finally {
      rmSync(disk, { recursive: true, force: true });
    }
  });
});
