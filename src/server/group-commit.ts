// Group commit for an embedded engine whose commit is fast but whose durability (an fdatasync) is slow: the
// operations that arrive within one turn of the event loop share one transaction, and syncs are pipelined with
// the disk: they run off the event loop, while the calls arriving meanwhile are run and committed, to share the
// next sync. An operation settles only after a sync that started after its commit (an "early" one right at its
// commit), so no reply leaves for a change that is not durable, and the engine learns what became durable through
// durable(mark). After a failed sync nothing committed since can be trusted: every later operation is refused.
import { EventEmitter } from 'node:events';
import { Gathering } from './gathering';
import { StoreUnavailable } from './store';

/** What the engine does for the scheduler. */
export interface Transactor<O, V> {
  /** Run `ops` in one transaction, all or nothing: throw to roll it back. */
  transaction(ops: readonly O[]): V[];
  /** The attempt at `ops` was rolled back: undo what it did outside the engine. */
  rolledBack(ops: readonly O[]): void;
  /** Make every commit so far durable, off the event loop; `done` gets the error when the disk failed. */
  sync(done: (err: Error | null) => void): void;
  /** The engine was closed, which made every commit durable. */
  closed(): boolean;
  /** A mark of what is committed now, handed to durable() once a sync after it completes. */
  mark(): number;
  durable(mark: number): void;
  /** An error thrown by transaction(), as the caller should see it (StoreUnavailable for the engine's own errors). */
  unavailable(err: unknown): unknown;
}

interface Pending<O, V> {
  op: O;
  early: boolean;
  resolve(v: V): void;
  reject(e: unknown): void;
}

const GATHER_MORE = 32;
/**
 * Syncs in flight at once (on libuv's thread pool, 4 threads by default: one is left for other work). A call
 * committed while syncs run starts its own instead of waiting for theirs to end and then for a whole other one.
 */
const MAX_SYNCS = 3;
/** Longest wait before a commit nobody waits for is synced (and its feed changes are shown). */
const LAZY_SYNC_MS = 20;

/**
 * Events: 'batch' (size: number) after every transaction; 'failed' (StoreUnavailable) once, at the first failed sync.
 */
export class GroupCommit<O, V> extends EventEmitter {
  private queue: Pending<O, V>[] = [];
  private scheduled = false;
  private gathered = false;
  /** Committed operations waiting for the next sync, and their results. */
  private unsynced: Pending<O, V>[] = [];
  private unsyncedValues: V[] = [];
  /** Something was committed since the last sync started. */
  private dirty = false;
  private syncing = 0;
  private lazySync: NodeJS.Timeout | undefined;
  /** Whether a sync waits for the calls expected to join it. */
  private readonly gathering = new Gathering(0.5);
  private gatherCheck = false;
  private readonly gather = (): void => {
    this.gatherCheck = false;
    this.startSync();
  };
  private readonly syncLater = (): void => {
    this.lazySync = undefined;
    this.startSync(true);
  };
  /** Set when a sync failed: what was committed since may be lost, so no further operation is answered. */
  failed: StoreUnavailable | undefined;

  constructor(private readonly engine: Transactor<O, V>) {
    super();
  }

  submit(op: O, early = false): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      this.queue.push({ op, early, resolve, reject });
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
      for (const p of batch) p.reject(this.failed);
      return;
    }
    const all = this.commit(batch);
    if (all.ok) {
      for (let i = 0; i < batch.length; i++) this.committed(batch[i], all.values[i]);
    } else {
      // Something in the batch failed: run each operation alone, so one bad operation (or an engine that cannot
      // commit) fails only what it must.
      for (const p of batch) {
        const one = this.commit([p]);
        if (one.ok) this.committed(p, one.values[0]);
        else p.reject(this.engine.unavailable(one.error));
      }
    }
    this.emit('batch', batch.length);
    this.startSync();
  }

  private commit(batch: Pending<O, V>[]): { ok: true; values: V[] } | { ok: false; error: unknown } {
    const ops = batch.map((p) => p.op);
    try {
      return { ok: true, values: this.engine.transaction(ops) };
    } catch (error) {
      this.engine.rolledBack(ops);
      return { ok: false, error };
    }
  }

  private committed(p: Pending<O, V>, value: V): void {
    this.dirty = true;
    if (p.early) {
      p.resolve(value);
    } else {
      this.unsynced.push(p);
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
    if (this.engine.closed()) {
      // Closing the engine made every commit durable.
      for (let i = 0; i < this.unsynced.length; i++) this.unsynced[i].resolve(this.unsyncedValues[i]);
      this.unsynced = [];
      this.unsyncedValues = [];
      this.dirty = false;
      this.engine.durable(this.engine.mark());
      return;
    }
    if (this.unsynced.length === 0 && !evenIfNobodyWaits) {
      this.lazySync ??= setTimeout(this.syncLater, LAZY_SYNC_MS).unref();
      return;
    }
    if (this.unsynced.length > 0 && this.gathering.left(this.unsynced.length) > 0) {
      // Look again once the sockets have been read: setImmediate, as timers cannot wait under a millisecond (a sync
      // takes about one).
      if (!this.gatherCheck) {
        this.gatherCheck = true;
        setImmediate(this.gather);
      }
      return;
    }
    this.gathering.started();
    if (this.lazySync) {
      clearTimeout(this.lazySync);
      this.lazySync = undefined;
    }
    this.syncing++;
    this.dirty = false;
    const pending = this.unsynced;
    const values = this.unsyncedValues;
    this.unsynced = [];
    this.unsyncedValues = [];
    const mark = this.engine.mark();
    const started = performance.now();
    this.engine.sync((err) => {
      this.syncing--;
      this.gathering.ended(performance.now() - started, pending.length, this.unsynced.length);
      // After a failed sync a later one may succeed without the pages the failed one lost: trust none of them.
      if (err || this.failed) {
        if (!this.failed) {
          this.failed = new StoreUnavailable(err);
          this.emit('failed', this.failed);
        }
        for (const p of pending) p.reject(this.failed);
        for (const p of this.unsynced) p.reject(this.failed);
        this.unsynced = [];
        this.unsyncedValues = [];
        return;
      }
      for (let i = 0; i < pending.length; i++) pending[i].resolve(values[i]);
      this.engine.durable(mark);
      this.startSync();
    });
  }
}
