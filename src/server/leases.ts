// Lease policy of the DSTM server (draft section 6), independent of RPC and of the store's engine: who gets which
// IPv4 address, for how long, through which TEP. The store executes each decision as one atomic, durable
// transaction (store.ts) and is the authority on what is bound; the address pool here is the policy's order of
// preference (reservation, the address asked for, the free address released longest ago) and, when several servers
// share the store, only a hint: an address another server bound is skipped by the store and dropped from the pool.
import { type Prefix4, type Prefix6, PrefixTable } from '../lib/addr';
import { AddressPool, type PoolStats } from './pool';
import type { StatusName } from '../protocol/status';
import {
  STATE,
  StoreUnavailable,
  type Binding,
  type Candidates,
  type Change,
  type GrantOutcome,
  type Store,
} from './store';

export { StoreUnavailable };

export interface Tep {
  ipv6: Uint8Array;
  ipv4: number;
}

export interface LeasePolicy {
  /** Default lease, seconds. */
  lease: number;
  /** Longest lease a node may ask for, seconds. */
  maxLease: number;
  /** Seconds an expired or revoked address is kept from reuse. */
  hold: number;
  pools: readonly Prefix4[];
  exclude: readonly Prefix4[];
  skipNetworkBroadcast: boolean;
  reservations: readonly { ipv6: Prefix6; ipv4: number }[];
  tep?: Tep;
  teps: readonly { prefix: Prefix6; ipv6: Uint8Array; ipv4: number }[];
}

export interface Grant {
  status: StatusName;
  ip6: Buffer;
  ip4: number;
  /** The binding's: when the node first got the address, and when the lease ends. */
  starts: number;
  ends: number;
  /** The store's clock when the operation ran (a REQUEST reply's lease starts then). */
  at: number;
  /** Seconds from `at` until `ends` (the lease length granted). */
  duration: number;
  tep?: Tep;
}

export interface LeaseInfo extends Binding {
  tep?: Tep;
}

/** Which TEP serves a node: the longest "teps" prefix containing it, else the default TEP. */
export class TepMap {
  private readonly table: PrefixTable<Tep>;

  constructor(private readonly policy: Pick<LeasePolicy, 'tep' | 'teps'>) {
    this.table = new PrefixTable(policy.teps.map((t) => [t.prefix, { ipv6: t.ipv6, ipv4: t.ipv4 }]));
  }

  lookup(ip6: Uint8Array): Tep | undefined {
    return this.table.lookup(ip6) ?? this.policy.tep;
  }
}

/** Shortest time between two reloads of the pool hint from a shared store, when it seems exhausted. */
const POOL_REFRESH_MS = 1000;
/**
 * Shortest time between two reads of the feed for the pool hint: one query per server per batch would double the load.
 */
const LEARN_MS = 100;

export class LeaseService {
  private pool!: AddressPool;
  private teps!: TepMap;
  private reservations!: PrefixTable<number>;
  private reserved!: Set<number>;
  private policy!: LeasePolicy;
  private poolLoadedAt = 0;
  /** False while the pool waits for the store's bound addresses (a shared store that was down at configure()). */
  poolKnown = true;
  /** BINDINGS long-polls waiting for a change; all answered at once by shutdown(). */
  private readonly waiters = new Set<(seq?: number) => void>();
  private stopping = false;
  /** Operations by "name:status", for metrics. */
  readonly counts = new Map<string, number>();
  private readonly countKeys: Record<string, Record<string, string>> = {};

  /** With a shared store: the feed position up to which other servers' bindings were taken out of the pool. */
  private hintSeq: number;
  private learning: NodeJS.Timeout | undefined;

  private constructor(readonly store: Store) {
    this.hintSeq = store.lastSeq;
    store.on('change', (seq) => {
      for (const w of [...this.waiters]) w(seq);
      if (store.shared) this.learn();
    });
    // A store found down answers the held long-polls now (UNAVAILABLE), so that their TEPs move to another server
    // rather than wait out the poll.
    store.on('health', (h) => {
      if (!h.ok) for (const w of [...this.waiters]) w();
      else if (!this.poolKnown) void this.refreshPool().catch(() => undefined);
    });
  }

  /**
   * Take the addresses other servers bound out of the pool, as the feed shows them, so that this server seldom
   * offers the store a candidate that is taken. At most one read per LEARN_MS, for every change since the last one.
   */
  private learn(): void {
    this.learning ??= setTimeout(() => {
      void (async () => {
        for (let more = true; more;) {
          const page = await this.store.feedSince(this.hintSeq, 1000);
          for (const c of page.changes) if (c.active) this.pool.takeSpecific(c.ip4);
          if (page.changes.length) this.hintSeq = page.changes[page.changes.length - 1].seq;
          more = page.more;
        }
      })()
        // A store that is down: the next change after it is back reads on from the same position.
        .catch(() => undefined)
        .finally(() => (this.learning = undefined));
    }, LEARN_MS).unref();
  }

  /** A service on `store` with `policy`, its pool loaded from the store's bound addresses. */
  static async open(store: Store, policy: LeasePolicy): Promise<LeaseService> {
    const svc = new LeaseService(store);
    await svc.configure(policy);
    return svc;
  }

  /** Apply a (re)loaded policy. Existing bindings stay as they are, even outside new pools, until they end. */
  async configure(policy: LeasePolicy): Promise<void> {
    const pool = new AddressPool({
      pools: policy.pools,
      exclude: policy.exclude,
      skipNetworkBroadcast: policy.skipNetworkBroadcast,
      reserved: policy.reservations.map((r) => r.ipv4),
    });
    // A shared store that is down does not hold the rest of the policy back: the pool, only the order in which this
    // server offers addresses (the database refuses a taken one), stays empty until the store is back.
    const bound = await this.store.boundAddresses().catch((err: unknown) => {
      if (this.store.shared && err instanceof StoreUnavailable) return undefined;
      throw err;
    });
    if (bound) pool.load(bound);
    this.pool = pool;
    this.poolKnown = bound !== undefined;
    this.poolLoadedAt = bound ? performance.now() : 0;
    this.policy = policy;
    this.teps = new TepMap(policy);
    this.reservations = new PrefixTable(policy.reservations.map((r) => [r.ipv6, r.ipv4]));
    this.reserved = new Set(policy.reservations.map((r) => r.ipv4));
  }

  get epoch(): bigint {
    return this.store.epoch;
  }

  get lastSeq(): number {
    return this.store.lastSeq;
  }

  get available(): number {
    return this.pool.available;
  }

  get poolSize(): number {
    return this.pool.size;
  }

  /** Size, dynamic and free addresses of each configured pool (kept up to date by allocation: no store access). */
  poolStats(): PoolStats[] {
    return this.pool.stats();
  }

  tepFor(ip6: Uint8Array): Tep | undefined {
    return this.teps.lookup(ip6);
  }

  /** Lease length for a node asking for `want` seconds (0: the default). */
  private duration(want: number): number {
    return want === 0 ? this.policy.lease : Math.min(want, this.policy.maxLease);
  }

  /**
   * REQUEST: the node's current binding, renewed (idempotent), or a new one: its reservation, else the address it
   * asks for if that is free, else the free address released longest ago.
   */
  request(ip6: Buffer, want4: number, wantSeconds: number): Promise<Grant> {
    return this.counted('request', async () => {
      const duration = this.duration(wantSeconds);
      let o = await this.store.grant({ ip6, duration, candidates: this.candidates(ip6, want4) });
      if (o.kind === 'exhausted' && (await this.refreshPool()))
        o = await this.store.grant({ ip6, duration, candidates: this.candidates(ip6, want4) });
      return this.outcome(o, ip6, 'no_address');
    });
  }

  /**
   * RELEASE: the caller's binding (only if `ip4`, when non-zero, is its address) ends, its address held like an expiry.
   * One already held is answered as released again: a RELEASE retried after its reply was lost (a server restarted,
   * or another server asked in its stead, has no duplicate request cache entry for it) succeeds as it did the first
   * time.
   */
  release(ip6: Buffer, ip4: number): Promise<Grant> {
    return this.counted('release', async () => {
      const o = await this.store.release(ip6, ip4);
      if (o.binding) return this.grant('ok', o.binding, o.now);
      const held = await this.store.liveBinding(ip6);
      if (held?.state === STATE.held && (ip4 === 0 || held.ip4 === ip4)) return this.grant('ok', held, o.now);
      return this.refuse('no_binding', ip6, o.now, ip4);
    });
  }

  /** Admin REVOKE: the binding ends now; its address is quarantined for the hold time, and the node must start over. */
  revoke(ip6: Buffer, ip4: number): Promise<Grant> {
    return this.counted('revoke', async () => {
      const o = await this.store.revoke(ip6, ip4);
      return o.binding ? this.grant('ok', o.binding, o.now) : this.refuse('no_binding', ip6, o.now, ip4);
    });
  }

  /** Admin ALLOCATE (draft section 6 MAY): bind a node that has not asked, to `ip4` or any free address. */
  allocate(ip6: Buffer, ip4: number, seconds: number): Promise<Grant> {
    return this.counted('allocate', async () => {
      const duration = this.duration(seconds);
      if (ip4 === 0) {
        let o = await this.store.grant({ ip6, duration, candidates: this.candidates(ip6, 0) });
        if (o.kind === 'exhausted' && (await this.refreshPool()))
          o = await this.store.grant({ ip6, duration, candidates: this.candidates(ip6, 0) });
        return this.outcome(o, ip6, 'no_address');
      }
      // Only addresses of the pools that are leased at all: excluded, network and broadcast addresses are not.
      if (!this.pool.isDynamic(ip4) && !this.reserved.has(ip4)) {
        const o = await this.store.grant({ ip6, duration, only: ip4, candidates: none });
        return this.outcome(o, ip6, this.pool.index(ip4) >= 0 ? 'conflict' : 'bad_request', ip4);
      }
      const o = await this.store.grant({ ip6, duration, only: ip4, candidates: this.exactly(ip4) });
      return this.outcome(o, ip6, 'conflict', ip4);
    });
  }

  /**
   * Expire active bindings whose lease has ended (they become held, and leave the feed), and reclaim held and
   * revoked addresses whose hold time is over. Returns how many rows changed.
   */
  async sweep(): Promise<number> {
    const o = await this.store.sweep(this.policy.hold);
    for (const a of o.reclaimed) this.pool.give(a);
    return o.expired + o.reclaimed.length;
  }

  /** True when sweep() has work: something expired or a hold time is over. */
  sweepDue(): Promise<boolean> {
    return this.store.sweepDue(this.policy.hold);
  }

  /**
   * The feed after `since` (0: the whole current state). `reset` when `since` is beyond the store's last sequence
   * number: the caller followed another history (a store restored from a backup) and must start over.
   */
  async changes(
    since: number,
    max: number,
  ): Promise<{ changes: Change[]; more: boolean; next: number; reset: boolean }> {
    const { changes, more, last } = await this.store.feedSince(since, max);
    return { changes, more, next: changes.length ? changes[changes.length - 1].seq : since, reset: since > last };
  }

  /** Resolve when the feed has a change after `since`, or after `ms`, or when `signal` aborts, or at shutdown(). */
  waitForChange(since: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.store.lastSeq > since || ms <= 0 || this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (seq?: number): void => {
        if (seq !== undefined && seq <= since) return;
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => done();
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener('abort', onAbort);
    });
  }

  /** Stopping: answer every held long-poll now, and hold no new one. */
  shutdown(): void {
    this.stopping = true;
    for (const w of [...this.waiters]) w();
  }

  async list(after: number, max: number): Promise<{ leases: LeaseInfo[]; more: boolean }> {
    const rows = await this.store.list(after, max + 1);
    return { leases: rows.slice(0, max).map((b) => ({ ...b, tep: this.tepFor(b.ip6) })), more: rows.length > max };
  }

  // --- policy ---

  /** The order a new binding is looked for in: the node's reservation, the address it asked for, then the pool's. */
  private candidates(ip6: Buffer, want4: number): Candidates {
    const pool = this.pool;
    const reserved = this.reservations.lookup(ip6);
    let step = reserved === undefined ? 1 : 0;
    return {
      next: () => {
        if (step === 0) {
          step = 1;
          return reserved;
        }
        if (step === 1) {
          step = 2;
          if (want4 !== 0 && pool.takeSpecific(want4)) return want4;
        }
        return pool.take();
      },
      // give() leaves reserved addresses out of the free ring.
      unused: (a) => pool.give(a),
    };
  }

  private exactly(ip4: number): Candidates {
    const pool = this.pool;
    let given = false;
    return {
      next: () => {
        if (given) return undefined;
        given = true;
        // Free here or not, the store decides: with a shared store the pool may not know of a reclaim elsewhere.
        pool.takeSpecific(ip4);
        return ip4;
      },
      unused: (a) => pool.give(a),
    };
  }

  /**
   * With a shared store, addresses reclaimed by another server are not in this pool: reload it from the store when
   * it seems exhausted (at most once a second), or when the store is back for a pool made while it was down. True
   * when it was reloaded.
   */
  private async refreshPool(): Promise<boolean> {
    if (!this.store.shared || performance.now() - this.poolLoadedAt < POOL_REFRESH_MS) return false;
    this.poolLoadedAt = performance.now();
    const pool = this.pool;
    const bound = await this.store.boundAddresses();
    // A reload of the policy meanwhile made a pool of its own.
    if (pool !== this.pool) return true;
    pool.load(bound);
    this.poolKnown = true;
    return true;
  }

  private outcome(o: GrantOutcome, ip6: Buffer, none: StatusName, ip4 = 0): Grant {
    if (o.kind === 'renewed' || o.kind === 'bound') return this.grant('ok', o.binding, o.now);
    return this.refuse(o.kind === 'mismatch' ? 'conflict' : none, ip6, o.now, ip4);
  }

  private grant(status: StatusName, b: Binding, now: number): Grant {
    return {
      status,
      ip6: b.ip6,
      ip4: b.ip4,
      starts: b.starts,
      ends: b.ends,
      at: now,
      duration: Math.max(0, b.ends - now),
      tep: this.tepFor(b.ip6),
    };
  }

  private refuse(status: StatusName, ip6: Buffer, now: number, ip4 = 0): Grant {
    return { status, ip6, ip4, starts: now, ends: now, at: now, duration: 0, tep: this.tepFor(ip6) };
  }

  private async counted(name: string, run: () => Promise<Grant>): Promise<Grant> {
    let g: Grant;
    try {
      if (this.stopping) throw new StoreUnavailable(new Error('the server is stopping'));
      g = await run();
    } catch (err) {
      if (err instanceof StoreUnavailable) this.count(name, 'unavailable');
      throw err;
    }
    this.count(name, g.status);
    return g;
  }

  private count(name: string, status: StatusName): void {
    // Keys made once per name and status, not per call.
    const key = ((this.countKeys[name] ??= {})[status] ??= `${name}:${status}`);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
}

const none: Candidates = { next: () => undefined, unused: () => undefined };
