// One conformance suite for every Store engine: the lease policy (LeaseService) on the engine, as the server runs
// it. store.test.ts runs it against SQLite and PostgreSQL alike. Lease times come from the store's clock, which
// the tests drive.
import { expect } from 'chai';
import type { Context } from 'mocha';
import { parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { LeaseService, type LeasePolicy } from '../../src/server/leases';
import { StoreInUse, type Store } from '../../src/server/store';
import { seeded } from '../support/random';

export interface EngineUnderTest {
  name: string;
  /** Several servers may run on one database at once (Store.shared); a store that may not refuses the second. */
  shared: boolean;
  /** Once for the suite (start a database server); may skip the suite. */
  setUp?(ctx: Context): Promise<void>;
  tearDown?(): Promise<void>;
  /** A new, empty database; the function opens one more handle (one more "server") on it. */
  fresh(): Promise<(clock: () => number) => Promise<Store>>;
}

export const node = (n: number): Buffer => Buffer.from(parseIPv6(`2001:db8::${n.toString(16)}`));

export function policy(over: Partial<LeasePolicy> = {}): LeasePolicy {
  return {
    lease: 60,
    maxLease: 600,
    hold: 30,
    pools: [parsePrefix4('192.0.2.0/29')],
    exclude: [],
    skipNetworkBroadcast: true,
    reservations: [],
    teps: [
      { prefix: parsePrefix6('2001:db8::/120'), ipv6: parseIPv6('2001:db8::fe'), ipv4: parseIPv4('198.51.100.1') },
    ],
    tep: { ipv6: parseIPv6('2001:db8:1::1'), ipv4: parseIPv4('198.51.100.2') },
    ...over,
  };
}

export function storeConformance(engine: EngineUnderTest): void {
  describe(`store conformance: ${engine.name}`, function () {
    this.timeout(30000);
    let open: (clock: () => number) => Promise<Store>;
    let stores: Store[];
    let now: number;
    const clock = (): number => now;
    let store: Store;
    let svc: LeaseService;
    /** One more server on the same database. */
    const server = async (p = policy()): Promise<LeaseService> => {
      const s = await open(clock);
      stores.push(s);
      return LeaseService.open(s, p);
    };
    /** Until the feed shows every change committed so far, on every handle. */
    const settled = async (): Promise<void> => {
      await Promise.all(stores.map((s) => s.settled?.()));
    };

    before(async function () {
      await engine.setUp?.(this);
    });
    after(async () => engine.tearDown?.());
    beforeEach(async () => {
      now = 1_800_000_000;
      stores = [];
      open = await engine.fresh();
      svc = await server();
      store = stores[0];
    });
    afterEach(async () => {
      for (const s of stores) await s.close();
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
      // The address asked for, when free.
      expect((await svc.request(node(2), parseIPv4('192.0.2.5'), 0)).ip4).to.equal(parseIPv4('192.0.2.5'));
    });

    it('ends no lease past 2^32 - 1 (the wire carries 32 bits): a grant or renewal near it is cut short', async () => {
      now = 0xffffffff - 100;
      const g = await svc.request(node(1), 0, 600);
      expect(g).to.include({ status: 'ok', starts: now, ends: 0xffffffff, duration: 100 });
      now += 40;
      expect(await svc.request(node(1), 0, 600)).to.include({ status: 'ok', ends: 0xffffffff, duration: 60 });
      const a = await svc.allocate(node(2), 0, 0);
      expect(a).to.include({ status: 'ok', ends: now + 60, duration: 60 });
      await settled();
      const feed = await svc.changes(0, 10);
      expect(feed.changes.map((c) => c.ends)).to.deep.equal([0xffffffff, now + 60]);
      // The hold still counts in full from the end (the sweep's time is not cut).
      now = 0xffffffff + 29;
      await svc.sweep();
      expect((await store.list(0, 10)).map((b) => b.state)).to.deep.equal([1, 1]);
    });

    it('exhausts a tiny pool with a refusal, and release ends only the caller binding', async () => {
      const grants = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((n) => svc.request(node(n), 0, 0)));
      expect(grants.slice(0, 6).map((g) => g.status)).to.deep.equal(Array(6).fill('ok'));
      expect(new Set(grants.slice(0, 6).map((g) => g.ip4)).size).to.equal(6);
      expect(grants[6].status).to.equal('no_address');
      expect((await svc.release(node(1), grants[1].ip4)).status).to.equal('no_binding');
      expect((await store.list(-1, 100)).find((b) => b.ip6.equals(node(2)))!.ip4).to.equal(grants[1].ip4);
      expect((await svc.release(node(1), grants[0].ip4)).status).to.equal('ok');
      await settled();
      const since = svc.lastSeq;
      // Again, as after a lost reply or at another server: released as before, nothing changed.
      for (const ip4 of [0, grants[0].ip4])
        expect(await svc.release(node(1), ip4), 'a held binding is released again').to.include({
          status: 'ok',
          ip4: grants[0].ip4,
          duration: 0,
        });
      expect((await svc.release(node(1), grants[2].ip4)).status, 'not its address').to.equal('no_binding');
      await settled();
      expect(svc.lastSeq, 'no change for a held binding released again').to.equal(since);
      expect((await svc.release(node(7), 0)).status, 'nothing to release').to.equal('no_binding');
    });

    it('finding 2: a RELEASE does not make an address immediately leasable to another node (quarantine like an expiry)', async () => {
      const grants = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => svc.request(node(n), 0, 0)));
      await settled();
      const since = svc.lastSeq;
      expect((await svc.release(node(1), grants[0].ip4)).status).to.equal('ok');
      expect((await svc.request(node(7), 0, 0)).status, 'not to another node during the hold').to.equal('no_address');
      const released = (await store.list(-1, 100)).find((b) => b.ip4 === grants[0].ip4)!;
      expect(released).to.include({ state: 1, ends: now });
      // The TEPs drop it at once.
      await svc.waitForChange(since, 2000);
      expect((await svc.changes(since, 10)).changes.map((c) => [c.ip4, c.active])).to.deep.equal([
        [grants[0].ip4, false],
      ]);
      now += 29;
      await svc.sweep();
      expect((await svc.request(node(7), 0, 0)).status).to.equal('no_address');
      now += 1;
      await svc.sweep();
      expect((await svc.request(node(7), 0, 0)).ip4, 'free once the hold is over').to.equal(grants[0].ip4);
    });

    it('gives a released address back to the same node during the hold', async () => {
      const g = await svc.request(node(1), 0, 0);
      await svc.release(node(1), 0);
      now += 5;
      expect(await svc.request(node(1), 0, 0)).to.include({ status: 'ok', ip4: g.ip4, ends: now + 60 });
    });

    it('expires, holds for the same node, then reclaims after the hold time; the feed follows', async () => {
      const g = await svc.request(node(1), 0, 0);
      now += 61;
      expect(await svc.sweepDue()).to.equal(true);
      await svc.sweep();
      expect(await svc.sweepDue()).to.equal(false);
      expect((await store.list(-1, 10))[0]).to.include({ ip4: g.ip4, state: 1 });
      await settled();
      const feed = await svc.changes(0, 10);
      expect(feed.changes.map((c) => [c.ip4, c.active])).to.deep.equal([[g.ip4, false]]);
      // Held: not given to anyone else, but the same node gets it back.
      const fill = await Promise.all([2, 3, 4, 5, 6].map((n) => svc.request(node(n), 0, 0)));
      expect(fill.map((x) => x.ip4)).to.not.include(g.ip4);
      expect((await svc.request(node(9), 0, 0)).status).to.equal('no_address');
      now += 31;
      expect(await svc.sweepDue()).to.equal(true);
      await svc.sweep();
      expect((await svc.request(node(9), 0, 0)).ip4).to.equal(g.ip4);
    });

    it('revoke quarantines the address and the node starts over; allocate binds a node that did not ask', async () => {
      const g = await svc.allocate(node(1), parseIPv4('192.0.2.5'), 0);
      expect(g).to.include({ status: 'ok', ip4: parseIPv4('192.0.2.5') });
      expect((await svc.allocate(node(2), parseIPv4('192.0.2.5'), 0)).status).to.equal('conflict');
      expect((await svc.allocate(node(1), parseIPv4('192.0.2.6'), 0)).status, 'bound elsewhere').to.equal('conflict');
      expect((await svc.allocate(node(2), parseIPv4('10.9.9.9'), 0)).status).to.equal('bad_request');
      expect((await svc.allocate(node(2), parseIPv4('192.0.2.0'), 0)).status, 'the network address').to.equal(
        'conflict',
      );
      expect((await svc.request(node(1), 0, 0)).ip4).to.equal(g.ip4);
      expect((await svc.revoke(node(1), 0)).status).to.equal('ok');
      expect((await svc.revoke(node(1), 0)).status).to.equal('no_binding');
      const again = await svc.request(node(1), 0, 0);
      expect(again.ip4).to.not.equal(g.ip4);
      expect((await store.list(-1, 10)).find((b) => b.ip4 === g.ip4)!.state).to.equal(2);
    });

    it('honours reservations and keeps every binding and its epoch across a restart', async () => {
      for (const s of stores.splice(0)) await s.close();
      svc = await server(
        policy({ reservations: [{ ipv6: parsePrefix6('2001:db8::7/128'), ipv4: parseIPv4('192.0.2.3') }] }),
      );
      const r = await svc.request(node(7), 0, 0);
      expect(r.ip4).to.equal(parseIPv4('192.0.2.3'));
      const a = await svc.request(node(1), 0, 0);
      expect(a.ip4).to.not.equal(r.ip4);
      const epoch = svc.epoch;
      await settled();
      const seq = svc.lastSeq;
      for (const s of stores.splice(0)) await s.close();
      svc = await server();
      expect(svc.epoch).to.equal(epoch);
      expect(svc.lastSeq).to.equal(seq);
      expect((await svc.request(node(1), 0, 0)).ip4).to.equal(a.ip4);
      expect(svc.available).to.equal(6 - 2);
    });

    it('finding 6: a feed caller beyond the last sequence number is told to start over', async () => {
      await svc.request(node(1), 0, 0);
      await settled();
      const last = svc.lastSeq;
      expect((await svc.changes(last, 10)).reset).to.equal(false);
      const ahead = await svc.changes(last + 10, 10);
      expect(ahead.reset).to.equal(true);
      expect(ahead.changes).to.have.length(0);
    });

    it('wakes a feed waiter on a change, and answers every waiter at once on shutdown (finding 14)', async () => {
      const since = svc.lastSeq;
      const t0 = Date.now();
      const waiting = svc.waitForChange(since, 5000);
      setTimeout(() => void svc.request(node(1), 0, 0), 50);
      await waiting;
      expect(Date.now() - t0).to.be.lessThan(2000);
      expect((await svc.changes(since, 10)).changes).to.have.length(1);
      const held = svc.waitForChange(svc.lastSeq, 30_000);
      const t1 = Date.now();
      svc.shutdown();
      await held;
      expect(Date.now() - t1).to.be.lessThan(100);
      expect(await svc.request(node(2), 0, 0).catch((e: Error) => e.name)).to.equal('StoreUnavailable');
    });

    it('lists in address order, a page at a time', async () => {
      await Promise.all([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
      const first = await svc.list(-1, 2);
      expect(first.more).to.equal(true);
      const rest = await svc.list(first.leases[1].ip4, 2);
      expect([...first.leases, ...rest.leases].map((l) => l.ip4)).to.deep.equal(
        [1, 2, 3].map((n) => parseIPv4(`192.0.2.${n}`)),
      );
      expect(rest.more).to.equal(false);
    });

    if (!engine.shared)
      it('refuses a second server on the store while the first has it open, and takes one after it closes', async () => {
        await svc.request(node(1), 0, 0);
        const second = await open(clock).then(
          (s) => s,
          (err: Error) => err,
        );
        expect(second).to.be.instanceOf(StoreInUse);
        expect((second as Error).message).to.match(/in use by another dstm server.*PostgreSQL/);
        for (const s of stores.splice(0)) await s.close();
        const after = await server();
        expect((await after.request(node(1), 0, 0)).status).to.equal('ok');
      });

    // Several servers on one store at once.
    if (engine.shared) {
      it('two servers racing for a small pool: no address given twice, one live binding per node', async () => {
        const rnd = seeded(9);
        const b = await server();
        const servers = [svc, b];
        const nodes = Array.from({ length: 24 }, (_, i) => node(i + 1));
        // Rounds of requests, renewals and releases from both servers at once, each node on a random server.
        for (let round = 0; round < 10; round++) {
          const calls = nodes.map(async (n) => {
            const s = servers[Math.floor(rnd() * 2)];
            return rnd() < 0.15 ? s.release(n, 0) : s.request(n, 0, 0);
          });
          const replies = await Promise.all(calls);
          // Within a round the clock stands still and a released address is held: no two nodes were told the same
          // address.
          const granted = replies.filter((g, i) => g.status === 'ok' && g.duration > 0 && g.ip6.equals(nodes[i]));
          expect(new Set(granted.map((g) => g.ip4)).size, 'an address granted to two nodes').to.equal(granted.length);
          const rows = await store.list(-1, 1000);
          const live = rows.filter((x) => x.state < 2);
          expect(new Set(rows.map((x) => x.ip4)).size, 'one row per address').to.equal(rows.length);
          expect(new Set(live.map((x) => x.ip6.toString('hex'))).size, 'one live binding per node').to.equal(
            live.length,
          );
          expect(rows.length).to.be.at.most(6);
          now += 40;
          await Promise.all(servers.map((s) => s.sweep()));
        }
        // Every grant either server acknowledged is what the store holds.
        const grants = await Promise.all(nodes.slice(0, 3).map((n, i) => servers[i % 2].request(n, 0, 0)));
        const rows = await store.list(-1, 1000);
        for (const g of grants.filter((x) => x.status === 'ok'))
          expect(rows.find((x) => x.ip4 === g.ip4)!.ip6.equals(g.ip6)).to.equal(true);
      });

      it('sweeps safely on every server at once: each expiry and reclaim happens once', async () => {
        const b = await server();
        await Promise.all([1, 2, 3, 4].map((n) => svc.request(node(n), 0, 0)));
        now += 61;
        const expired = await Promise.all([svc.sweep(), b.sweep(), svc.sweep()]);
        expect(expired.reduce((x, y) => x + y, 0)).to.equal(4);
        now += 30;
        const reclaimed = await Promise.all([b.sweep(), svc.sweep()]);
        expect(reclaimed.reduce((x, y) => x + y, 0)).to.equal(4);
        expect(await store.list(-1, 10)).to.have.length(0);
      });
    }
  });
}
