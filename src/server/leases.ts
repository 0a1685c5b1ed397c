// Lease logic of the DSTM server (draft section 6), independent of RPC: who gets which IPv4 address, for how long,
// through which TEP. Every operation runs inside a store transaction; the operations that arrive within one turn of
// the event loop share one transaction (group commit). Commits are pipelined with the disk: WAL syncs run off the
// event loop, while the calls arriving meanwhile are decoded, run and committed, to share the next sync.
// An operation's promise settles only after a sync that started after its commit, so no reply leaves for a binding
// that is not durable. The one exception is RELEASE, answered right after its commit: losing a release in a crash
// leaves the address bound to the same node until its lease ends, never to two nodes (documented in dstm-rpc(7)).
// The binding feed shows only durable changes. Pool bookkeeping done in a transaction that fails is undone.
import Database from 'better-sqlite3';
import { EventEmitter } from 'node:events';
import { type Prefix4, type Prefix6, PrefixTable } from '../lib/addr';
import { AddressPool, type PoolStats } from './pool';
import { STATE, type StatusName } from '../protocol/status';
import type { Binding, Change, Store } from './store';

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
  starts: number;
  ends: number;
  /** Seconds from now until `ends` (the lease length granted). */
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

type Undo = (() => void)[];

interface Op<T> {
  name: string;
  run(undo: Undo, now: number): T;
  /** Settles as soon as it is committed, before it is durable. */
  early: boolean;
  resolve(v: T): void;
  reject(e: unknown): void;
}

/** The store could not commit: the caller gets DSTM_UNAVAILABLE (or no reply), never a binding that may be lost. */
export class StoreUnavailable extends Error {
  constructor(override readonly cause: unknown) {
    super(`the binding store cannot commit: ${(cause as Error)?.message ?? cause}`);
    this.name = 'StoreUnavailable';
  }
}

const SWEEP_BATCH = 1000;
const GATHER_MORE = 32;
/**
 * WAL syncs in flight at once (on libuv's thread pool, 4 threads by default: one is left for other work). A call
 * committed while syncs run starts its own instead of waiting for theirs to end and then for a whole other one.
 */
const MAX_SYNCS = 3;
/** Longest wait before a commit nobody waits for is synced (and its feed changes are shown). */
const LAZY_SYNC_MS = 20;
/**
 * Longest wait, as a fraction of a sync's duration, for the calls expected to join a sync before it starts. The
 * nodes a sync answered tend to call again together; a sync started on the first of them would leave the others
 * to the next one, and a node would wait for two syncs instead of one.
 */
const GATHER_FRACTION = 0.4;

export function wallClock(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * Events: 'change' (seq: number) once feed changes are durable; 'batch' (size: number) after every
 * group commit.
 */
export class LeaseService extends EventEmitter {
  private pool!: AddressPool;
  private teps!: TepMap;
  private reservations!: PrefixTable<number>;
  private queue: Op<any>[] = [];
  private scheduled = false;
  private gathered = false;
  /** Committed operations waiting for the next sync, and their results. */
  private unsynced: Op<any>[] = [];
  private unsyncedValues: (Grant | number)[] = [];
  /** Something was committed since the last sync started. */
  private dirty = false;
  private syncing = 0;
  private lazySync: NodeJS.Timeout | undefined;
  /** Calls the last sync answered plus those already waiting when it ended: about as many will wait for the next one. */
  private expected = 0;
  /** Moving average of a sync's duration, milliseconds. */
  private syncMs = 0.5;
  /** When the first call waiting for the next sync committed (performance.now()), or 0. */
  private gatherSince = 0;
  private gatherCheck = false;
  private readonly gather = (): void => {
    this.gatherCheck = false;
    this.startSync();
  };
  private readonly syncLater = (): void => {
    this.lazySync = undefined;
    this.startSync(true);
  };
  /** Set when a sync failed: what was committed since may be lost, so no further call is answered. */
  private failed: StoreUnavailable | undefined;
  /** Last durable feed sequence number. */
  private seq: number;
  /** Last feed sequence number committed, and the last one written by the transaction running now. */
  private committedSeq: number;
  private writtenSeq: number;
  /** Operations by "name:status", for metrics. */
  readonly counts = new Map<string, number>();
  private readonly countKeys: Record<string, Record<string, string>> = {};

  constructor(
    readonly store: Store,
    private policy: LeasePolicy,
    private readonly clock: () => number = wallClock,
  ) {
    super();
    this.seq = this.committedSeq = this.writtenSeq = store.lastSeq();
    this.configure(policy);
  }

  /** Apply a (re)loaded policy. Existing bindings stay as they are, even outside new pools, until they end. */
  configure(policy: LeasePolicy): void {
    const pool = new AddressPool({
      pools: policy.pools,
      exclude: policy.exclude,
      skipNetworkBroadcast: policy.skipNetworkBroadcast,
      reserved: policy.reservations.map((r) => r.ipv4),
    });
    pool.load(this.store.boundAddresses());
    this.pool = pool;
    this.policy = policy;
    this.teps = new TepMap(policy);
    this.reservations = new PrefixTable(policy.reservations.map((r) => [r.ipv6, r.ipv4]));
  }

  get epoch(): bigint {
    return this.store.epoch;
  }

  get lastSeq(): number {
    return this.seq;
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
    return this.submit('request', false, (undo, now) => {
      const duration = this.duration(wantSeconds);
      const cur = this.store.byIp6(ip6);
      if (cur) return this.renew(cur, now, duration);
      const ip4 = this.pick(ip6, want4, undo);
      if (ip4 === undefined) return this.refuse('no_address', ip6, now);
      return this.bind(ip6, ip4, now, duration);
    });
  }

  /** RELEASE: frees the caller's binding (only if `ip4`, when non-zero, is its address). */
  release(ip6: Buffer, ip4: number): Promise<Grant> {
    return this.submit('release', true, (undo, now) => {
      const cur = this.store.byIp6(ip6);
      if (!cur || (ip4 !== 0 && cur.ip4 !== ip4)) return this.refuse('no_binding', ip6, now, ip4);
      this.store.remove(cur.ip4);
      this.feed(cur, false);
      this.pool.give(cur.ip4);
      undo.push(() => this.pool.takeSpecific(cur.ip4));
      return this.grant('ok', cur, now);
    });
  }

  /** Admin REVOKE: the binding ends now; its address is quarantined for the hold time, and the node must start over. */
  revoke(ip6: Buffer, ip4: number): Promise<Grant> {
    return this.submit('revoke', false, (_undo, now) => {
      const cur = this.store.byIp6(ip6);
      if (!cur || (ip4 !== 0 && cur.ip4 !== ip4)) return this.refuse('no_binding', ip6, now, ip4);
      this.store.setState(cur.ip4, STATE.revoked, now);
      const ended = { ...cur, ends: now };
      this.feed(ended, false);
      return this.grant('ok', ended, now);
    });
  }

  /** Admin ALLOCATE (draft section 6 MAY): bind a node that has not asked, to `ip4` or any free address. */
  allocate(ip6: Buffer, ip4: number, seconds: number): Promise<Grant> {
    return this.submit('allocate', false, (undo, now) => {
      const duration = this.duration(seconds);
      const cur = this.store.byIp6(ip6);
      if (cur) return ip4 !== 0 && cur.ip4 !== ip4 ? this.refuse('conflict', ip6, now, ip4) : this.renew(cur, now, duration);
      let addr: number | undefined;
      if (ip4 === 0) addr = this.pick(ip6, 0, undo);
      else if (this.takeAddress(ip4, undo)) addr = ip4;
      else if (this.reservedFree(ip4)) addr = ip4;
      else return this.refuse(this.store.byIp4(ip4) || this.pool.index(ip4) >= 0 ? 'conflict' : 'bad_request', ip6, now, ip4);
      if (addr === undefined) return this.refuse('no_address', ip6, now);
      return this.bind(ip6, addr, now, duration);
    });
  }

  /**
   * Expire active bindings whose lease has ended (they become held, and leave the feed), and reclaim held and
   * revoked addresses whose hold time is over. Returns how many rows changed.
   */
  sweep(): Promise<number> {
    return this.submit('sweep', false, (undo, now) => {
      let n = 0;
      for (const b of this.store.due(STATE.active, now, SWEEP_BATCH)) {
        this.store.setState(b.ip4, STATE.held, b.ends);
        this.feed(b, false);
        n++;
      }
      for (const state of [STATE.held, STATE.revoked]) {
        for (const b of this.store.due(state, now - this.policy.hold, SWEEP_BATCH)) {
          this.store.remove(b.ip4);
          this.pool.give(b.ip4);
          undo.push(() => this.pool.takeSpecific(b.ip4));
          n++;
        }
      }
      return n;
    });
  }

  /** True when sweep() has work: something expired or a hold time is over. Cheap (two index lookups). */
  sweepDue(): boolean {
    const now = this.clock();
    const a = this.store.nextDue(STATE.active);
    if (a !== undefined && a <= now) return true;
    return [STATE.held, STATE.revoked].some((s) => {
      const t = this.store.nextDue(s);
      return t !== undefined && t + this.policy.hold <= now;
    });
  }

  /** The feed after `since` (0: the whole current state). */
  changes(since: number, max: number): { changes: Change[]; more: boolean; next: number } {
    const { changes, more } = this.store.feedSince(since, this.seq, max);
    return { changes, more, next: changes.length ? changes[changes.length - 1].seq : since };
  }

  /** Resolve when the feed has a change after `since`, or after `ms`, or when `signal` aborts. */
  waitForChange(since: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.seq > since || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.off('change', onChange);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const onChange = (seq: number): void => {
        if (seq > since) done();
      };
      const timer = setTimeout(done, ms);
      this.on('change', onChange);
      signal?.addEventListener('abort', done);
    });
  }

  list(after: number, max: number): { leases: LeaseInfo[]; more: boolean } {
    const rows = this.store.list(after, max + 1);
    return { leases: rows.slice(0, max).map((b) => ({ ...b, tep: this.tepFor(b.ip6) })), more: rows.length > max };
  }

  // --- inside a transaction ---

  private pick(ip6: Buffer, want4: number, undo: Undo): number | undefined {
    const reserved = this.reservations.lookup(ip6);
    if (reserved !== undefined && this.reservedFree(reserved)) return reserved;
    if (want4 !== 0 && this.takeAddress(want4, undo) && !this.storeHas(want4)) return want4;
    for (let a = this.pool.take(); a !== undefined; a = this.pool.take()) {
      if (this.storeHas(a)) continue;
      undo.push(() => this.pool.give(a));
      return a;
    }
    return undefined;
  }

  /**
   * The store is the authority on which addresses are bound: an address the index thought free but the store
   * has (written behind this process's back) stays out of the free list instead of failing an allocation.
   */
  private storeHas(ip4: number): boolean {
    return this.store.byIp4(ip4) !== undefined;
  }

  private takeAddress(ip4: number, undo: Undo): boolean {
    if (!this.pool.takeSpecific(ip4)) return false;
    undo.push(() => this.pool.give(ip4));
    return true;
  }

  /** A reserved address is handed out when no row holds it; reserved addresses are never in the free ring. */
  private reservedFree(ip4: number): boolean {
    return this.policy.reservations.some((r) => r.ipv4 === ip4) && !this.store.byIp4(ip4);
  }

  private bind(ip6: Buffer, ip4: number, now: number, duration: number): Grant {
    const b: Binding = { ip4, ip6, state: STATE.active, starts: now, ends: now + duration };
    this.store.insert(b);
    this.feed(b, true);
    return this.grant('ok', b, now);
  }

  private renew(cur: Binding, now: number, duration: number): Grant {
    const b: Binding = { ...cur, state: STATE.active, ends: now + duration };
    this.store.setState(b.ip4, STATE.active, b.ends);
    this.feed(b, true);
    return this.grant('ok', b, now);
  }

  private feed(b: Binding, active: boolean): void {
    this.writtenSeq = this.store.feedPut(b.ip4, b.ip6, b.starts, b.ends, active);
  }

  private grant(status: StatusName, b: Binding, now: number): Grant {
    return { status, ip6: b.ip6, ip4: b.ip4, starts: b.starts, ends: b.ends, duration: Math.max(0, b.ends - now), tep: this.tepFor(b.ip6) };
  }

  private refuse(status: StatusName, ip6: Buffer, now: number, ip4 = 0): Grant {
    return { status, ip6, ip4, starts: now, ends: now, duration: 0, tep: this.tepFor(ip6) };
  }

  // --- group commit ---

  private submit<T extends Grant | number>(name: string, early: boolean, run: (undo: Undo, now: number) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ name, run, early, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    // A full read (libuv takes at most 32 datagrams per socket per turn) means more calls are likely waiting:
    // collect them too, once, so the commit is shared by more of them.
    if (this.queue.length >= GATHER_MORE && !this.gathered) {
      this.gathered = true;
      setImmediate(() => this.flush());
      return;
    }
    this.gathered = false;
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (this.failed) {
      for (const op of batch) op.reject(this.failed);
      return;
    }
    const now = this.clock();
    const all = this.commit(batch, now);
    if (all.ok) {
      for (let i = 0; i < batch.length; i++) this.committed(batch[i], all.values[i]);
    } else {
      // Something in the batch failed: run each operation alone, so one bad operation (or a store that cannot
      // commit) fails only what it must.
      for (const op of batch) {
        const one = this.commit([op], now);
        if (one.ok) this.committed(op, one.values[0]);
        else op.reject(one.error instanceof Database.SqliteError ? new StoreUnavailable(one.error) : one.error);
      }
    }
    this.emit('batch', batch.length);
    this.startSync();
  }

  private settle(op: Op<any>, value: Grant | number): void {
    const status = typeof value === 'number' ? 'ok' : value.status;
    // Keys made once per name and status, not per call.
    const key = ((this.countKeys[op.name] ??= {})[status] ??= `${op.name}:${status}`);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    op.resolve(value);
  }

  private committed(op: Op<any>, value: Grant | number): void {
    this.dirty = true;
    if (op.early) {
      this.settle(op, value);
    } else {
      this.unsynced.push(op);
      this.unsyncedValues.push(value);
    }
  }

  /**
   * Sync what is committed (what commits while the syncs in flight run waits for the next one). Commits that nobody
   * waits for (releases, already answered) are synced later, so that their sync takes no disk time from the calls
   * that arrive just after them and must wait for one.
   */
  private startSync(evenIfNobodyWaits = false): void {
    if (this.syncing >= MAX_SYNCS || !this.dirty) return;
    if (!this.store.db.open) {
      // Closing the store made every commit durable.
      for (let i = 0; i < this.unsynced.length; i++) this.settle(this.unsynced[i], this.unsyncedValues[i]);
      this.unsynced = [];
      this.unsyncedValues = [];
      this.dirty = false;
      return;
    }
    if (this.unsynced.length === 0 && !evenIfNobodyWaits) {
      this.lazySync ??= setTimeout(this.syncLater, LAZY_SYNC_MS).unref();
      return;
    }
    if (this.unsynced.length > 0 && this.unsynced.length < this.expected) {
      const now = performance.now();
      if (this.gatherSince === 0) this.gatherSince = now;
      if (now - this.gatherSince < this.syncMs * GATHER_FRACTION) {
        // Look again once the sockets have been read: setImmediate, as timers cannot wait under a millisecond.
        if (!this.gatherCheck) {
          this.gatherCheck = true;
          setImmediate(this.gather);
        }
        return;
      }
    }
    this.gatherSince = 0;
    if (this.lazySync) {
      clearTimeout(this.lazySync);
      this.lazySync = undefined;
    }
    this.syncing++;
    this.dirty = false;
    const ops = this.unsynced;
    const values = this.unsyncedValues;
    this.unsynced = [];
    this.unsyncedValues = [];
    const seq = this.committedSeq;
    const started = performance.now();
    this.store.sync((err) => {
      this.syncing--;
      this.syncMs += (performance.now() - started - this.syncMs) / 8;
      this.expected = ops.length + this.unsynced.length;
      // After a failed sync a later one may succeed without the pages the failed one lost: trust none of them.
      if (err || this.failed) {
        this.failed ??= new StoreUnavailable(err);
        for (const op of ops) op.reject(this.failed);
        for (const op of this.unsynced) op.reject(this.failed);
        this.unsynced = [];
        this.unsyncedValues = [];
        return;
      }
      for (let i = 0; i < ops.length; i++) this.settle(ops[i], values[i]);
      if (seq > this.seq) {
        this.seq = seq;
        this.emit('change', seq);
      }
      this.startSync();
    });
  }

  /** Run `ops` in one transaction; on failure nothing of it remains, in the store or in the pool. */
  private commit(ops: Op<any>[], now: number): { ok: true; values: (Grant | number)[] } | { ok: false; error: unknown } {
    const undo: Undo = [];
    try {
      const values = this.store.transaction(() => ops.map((op) => op.run(undo, now)));
      this.committedSeq = this.writtenSeq;
      return { ok: true, values };
    } catch (error) {
      this.writtenSeq = this.committedSeq;
      for (const u of undo.reverse()) u();
      return { ok: false, error };
    }
  }
}
