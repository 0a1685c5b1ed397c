// The embedded store: SQLite (better-sqlite3) in the state directory, in WAL mode, one writing server. A commit
// writes the WAL without waiting for the disk (synchronous=NORMAL, which still syncs around checkpoints, so the
// file stays consistent); the group commit (group-commit.ts) then fdatasyncs the WAL on libuv's thread pool, so the
// event loop keeps serving calls while the disk works. A transaction is durable (survives a crash or power loss)
// once a sync started after its commit has completed: the same guarantee as synchronous=FULL, which would block
// the thread for that fdatasync at every commit. Uniqueness is the database's job: an address has one row (ip4 is
// the primary key) and a node has at most one live binding (a unique index on ip6 over active and held rows).
// The epoch is bound to the database file's identity (device and inode): a copy or a restored backup is another
// file, so it opens with a new epoch and every TEP starts over from the whole state.
// A store opened for restore (dstm leases import) holds SQLite's exclusive lock from open to close: a server that
// has the file open makes the open fail, and no server can open it meanwhile.
import Database from 'better-sqlite3';
import { EventEmitter } from 'node:events';
import { closeSync, existsSync, fdatasync, fdatasyncSync, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GroupCommit, type Transactor } from './group-commit';
import { stateName } from '../protocol/status';
import {
  STATE,
  STATE_NAMES,
  RestoreConflict,
  leaseEnd,
  StoreInUse,
  StoreUnavailable,
  newEpoch,
  type Binding,
  type Change,
  type EndOutcome,
  type GrantOp,
  type GrantOutcome,
  type State,
  type StateCounts,
  type Store,
  type StoreHealth,
  type SweepOutcome,
} from './store';

/**
 * Version of the schema below (PRAGMA user_version); 0 is a store made before versions were written, the same tables.
 */
export const SQLITE_SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bindings (
  ip4 INTEGER PRIMARY KEY,
  ip6 BLOB NOT NULL CHECK (length(ip6) = 16),
  state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),
  starts INTEGER NOT NULL,
  ends INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS bindings_ip6 ON bindings (ip6) WHERE state < 2;
CREATE INDEX IF NOT EXISTS bindings_ends ON bindings (state, ends);
CREATE TABLE IF NOT EXISTS feed (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  ip4 INTEGER NOT NULL UNIQUE,
  ip6 BLOB NOT NULL,
  starts INTEGER NOT NULL,
  ends INTEGER NOT NULL,
  active INTEGER NOT NULL
);
`;

/**
 * What older versions kept bindings per state in (triggers on every write): the store now counts in memory, as the
 * only writer, which costs nothing per write. A store opened by an older dstm gets them back, harmlessly.
 */
const DROP_STATE_TRIGGERS = `
DROP TRIGGER IF EXISTS bindings_count_insert;
DROP TRIGGER IF EXISTS bindings_count_delete;
DROP TRIGGER IF EXISTS bindings_count_state;
DROP TABLE IF EXISTS state_counts;
`;

export const DB_FILE = 'dstm.sqlite';
/**
 * Held (an exclusive SQLite lock, released by the kernel however the process ends) by the one server or import
 * that writes the store: a second one on the same directory is refused instead of sharing the file.
 */
export const LOCK_FILE = 'dstm.lock';
const SWEEP_BATCH = 1000;

export function wallClock(): number {
  return Math.floor(Date.now() / 1000);
}

type Op =
  | { kind: 'grant'; grant: GrantOp; bound?: number }
  | { kind: 'release' | 'revoke'; ip6: Buffer; ip4: number }
  | { kind: 'sweep'; hold: number };
type Value = GrantOutcome | EndOutcome | SweepOutcome;

export interface SqliteOptions {
  /** Open an existing store read-only (dstm leases --state-dir): list, counts and feed reads only. */
  readonly?: boolean;
  /** Open for restore(): exclusively, refused (StoreInUse) while another connection (a server) has the file open. */
  restore?: boolean;
  /** The store's clock, absolute seconds (tests move it). */
  clock?: () => number;
}

export class SqliteStore extends EventEmitter implements Store {
  readonly engine = 'sqlite';
  readonly shared = false;
  readonly db: Database.Database;
  /** The directory's lock (LOCK_FILE), held while open for writing. */
  private readonly lock: Database.Database | undefined;
  epoch: bigint;
  readonly where: string;
  private readonly q;
  private readonly clock: () => number;
  /**
   * The WAL file, for syncWal(); -1 when read-only. SQLite keeps the file (same inode) while this connection is open.
   */
  private walFd = -1;
  private syncing = 0;
  private isClosed = false;
  private readonly commits: GroupCommit<Op, Value>;
  /** Last feed sequence number durable, committed, and written by the transaction running now. */
  private durableSeq: number;
  private committedSeq: number;
  private writtenSeq: number;
  /**
   * Bindings per state (indexed by state) as committed, kept by this store's transactions (it is the only writer),
   * so that counts() (metrics) reads no table; empty when read-only. Recounted at open, and at the next counts()
   * after a rolled-back transaction (stale).
   */
  private readonly perState: number[] = [];
  private perStateStale = false;

  constructor(
    readonly dir: string,
    opts: SqliteOptions = {},
  ) {
    super();
    this.clock = opts.clock ?? wallClock;
    this.where = `sqlite:${join(dir, DB_FILE)}`;
    if (!opts.readonly) mkdirSync(dir, { recursive: true, mode: 0o750 });
    const file = join(dir, DB_FILE);
    if (opts.readonly && !existsSync(file)) throw new Error(`no DSTM store in ${dir} (${file} does not exist)`);
    if (!opts.readonly) this.lock = claim(join(dir, LOCK_FILE), file, opts.restore === true);
    this.db = opened(file, opts.readonly === true, this.lock);
    try {
      this.db.pragma('busy_timeout = 5000');
      if (opts.restore) this.lockExclusively(file);
      if (!opts.readonly) {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = NORMAL');
        this.migrate(file);
      }
      const db = this.db;
      this.q = {
        byIp6: db.prepare<[Buffer]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip6 = ? AND state < 2'),
        byIp4: db.prepare<[number]>('SELECT ip4 FROM bindings WHERE ip4 = ?').pluck(),
        insert: db.prepare<[number, Buffer, number, number, number]>(
          'INSERT INTO bindings (ip4, ip6, state, starts, ends) VALUES (?, ?, ?, ?, ?)',
        ),
        update: db.prepare<[number, number, number]>('UPDATE bindings SET state = ?, ends = ? WHERE ip4 = ?'),
        remove: db.prepare<[number]>('DELETE FROM bindings WHERE ip4 = ?'),
        feedPut: db.prepare<[number, Buffer, number, number, number]>(
          'INSERT OR REPLACE INTO feed (ip4, ip6, starts, ends, active) VALUES (?, ?, ?, ?, ?)',
        ),
        feedSince: db.prepare<[number, number, number]>(
          'SELECT seq, ip4, ip6, starts, ends, active FROM feed WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?',
        ),
        lastSeq: db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'feed'").pluck(),
        bound: db.prepare('SELECT ip4 FROM bindings').pluck(),
        due: db.prepare<[number, number, number]>(
          'SELECT ip4, ip6, state, starts, ends FROM bindings WHERE state = ? AND ends <= ? LIMIT ?',
        ),
        nextDue: db.prepare<[number]>('SELECT min(ends) FROM bindings WHERE state = ?').pluck(),
        at: db.prepare<[number]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip4 = ?'),
        all: db.prepare('SELECT ip4, ip6, state, starts, ends FROM bindings ORDER BY ip4'),
        list: db.prepare<[number, number]>(
          'SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip4 > ? ORDER BY ip4 LIMIT ?',
        ),
        count: db.prepare('SELECT state, count(*) AS n FROM bindings GROUP BY state'),
      };
      if (!opts.readonly) this.recount();
      this.epoch = opts.readonly ? this.readMeta('epoch') : this.ensureEpoch(file);
      this.durableSeq = this.committedSeq = this.writtenSeq = this.lastSeqNow();
      if (!opts.readonly) {
        this.walFd = openSync(`${file}-wal`, 'r+');
        // What a previous process committed may not have reached the disk yet: nothing is served from it until it has.
        fdatasyncSync(this.walFd);
      }
      this.commits = new GroupCommit<Op, Value>(this.transactor());
      this.commits.on('batch', (n: number) => this.emit('batch', n));
      this.commits.on('failed', (err: StoreUnavailable) => this.emit('health', { ok: false, reason: err.message }));
    } catch (err) {
      // A store that fails to open leaves the directory to the next attempt.
      if (this.db.open) this.db.close();
      this.lock?.close();
      if (this.walFd >= 0) closeSync(this.walFd);
      throw err;
    }
  }

  /**
   * Every other connection holds a shared lock on the file while it is open (WAL mode), so taking the exclusive
   * lock at once, and keeping it (locking_mode EXCLUSIVE), fails while a server has the store open.
   */
  private lockExclusively(file: string): void {
    this.db.pragma('busy_timeout = 0');
    this.db.pragma('locking_mode = EXCLUSIVE');
    try {
      this.db.exec('BEGIN EXCLUSIVE; COMMIT');
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err;
      throw new StoreInUse(`${file} is in use (a dstm server or another reader has it open): stop the server first`);
    }
    this.db.pragma('busy_timeout = 5000');
  }

  private migrate(file: string): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > SQLITE_SCHEMA_VERSION) {
      throw new Error(
        `${file} has store schema version ${version}, newer than this dstm's ${SQLITE_SCHEMA_VERSION}: run a newer dstm, or restore a store of version ${SQLITE_SCHEMA_VERSION} or older`,
      );
    }
    this.db.exec(SCHEMA);
    this.db.exec(DROP_STATE_TRIGGERS);
    if (version < SQLITE_SCHEMA_VERSION) this.db.pragma(`user_version = ${SQLITE_SCHEMA_VERSION}`);
  }

  private readMeta(key: string): bigint {
    const v = this.db.prepare('SELECT value FROM meta WHERE key = ?').pluck().get(key) as string | undefined;
    return v === undefined ? 0n : BigInt(v);
  }

  /**
   * The stored epoch while the database is the same file it was written in; a new one for a new, copied or restored
   * file.
   */
  private ensureEpoch(file: string): bigint {
    const st = statSync(file, { bigint: true });
    const identity = (st.dev << 64n) | st.ino;
    const have = this.readMeta('epoch');
    const where = this.readMeta('file');
    // A store from before the file identity was written keeps its epoch once, and is bound to its file from now on.
    if (have !== 0n && (where === identity || where === 0n)) {
      if (where === 0n)
        this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('file', ?)").run(identity.toString());
      return have;
    }
    const epoch = newEpoch();
    const put = this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
    this.db.transaction(() => {
      put.run('epoch', epoch.toString());
      put.run('file', identity.toString());
    })();
    return epoch;
  }

  get lastSeq(): number {
    return this.durableSeq;
  }

  private lastSeqNow(): number {
    return (this.q.lastSeq.get() as number | undefined) ?? 0;
  }

  health(): StoreHealth {
    if (this.commits.failed) return { ok: false, reason: this.commits.failed.message };
    if (this.isClosed) return { ok: false, reason: 'closed' };
    return { ok: true };
  }

  grant(grant: GrantOp): Promise<GrantOutcome> {
    return this.submit({ kind: 'grant', grant }) as Promise<GrantOutcome>;
  }

  release(ip6: Buffer, ip4: number): Promise<EndOutcome> {
    // Answered at its commit: a release lost in a crash leaves the address with the same node (documented in
    // dstm-rpc(7)).
    return this.submit({ kind: 'release', ip6, ip4 }, true) as Promise<EndOutcome>;
  }

  revoke(ip6: Buffer, ip4: number): Promise<EndOutcome> {
    return this.submit({ kind: 'revoke', ip6, ip4 }) as Promise<EndOutcome>;
  }

  sweep(hold: number): Promise<SweepOutcome> {
    return this.submit({ kind: 'sweep', hold }) as Promise<SweepOutcome>;
  }

  private submit(op: Op, early = false): Promise<Value> {
    if (this.isClosed) return Promise.reject(new StoreUnavailable(new Error('the store is closed')));
    return this.commits.submit(op, early);
  }

  async sweepDue(hold: number): Promise<boolean> {
    const now = this.clock();
    const a = this.q.nextDue.get(STATE.active) as number | null;
    if (a !== null && a <= now) return true;
    return [STATE.held, STATE.revoked].some((s) => {
      const t = this.q.nextDue.get(s) as number | null;
      return t !== null && t + hold <= now;
    });
  }

  async feedSince(since: number, max: number): Promise<{ changes: Change[]; more: boolean; last: number }> {
    const last = this.durableSeq;
    const rows = this.read(() => this.q.feedSince.all(since, last, max + 1)) as (Omit<Change, 'active'> & {
      active: number;
    })[];
    const more = rows.length > max;
    return { changes: rows.slice(0, max).map((r) => ({ ...r, active: r.active === 1 })), more, last };
  }

  async list(after: number, max: number): Promise<Binding[]> {
    return this.read(() => this.q.list.all(after, max)) as Binding[];
  }

  async boundAddresses(): Promise<number[]> {
    return this.read(() => this.q.bound.all()) as number[];
  }

  async liveBinding(ip6: Buffer): Promise<Binding | undefined> {
    return this.read(() => this.q.byIp6.get(ip6)) as Binding | undefined;
  }

  async counts(): Promise<StateCounts> {
    const out = Object.fromEntries(STATE_NAMES.map((n) => [n, 0])) as StateCounts;
    if (this.walFd < 0) {
      for (const r of this.read(() => this.q.count.all()) as { state: State; n: number }[])
        out[stateName(r.state)] = r.n;
    } else {
      if (this.perStateStale) this.read(() => this.recount());
      this.perState.forEach((n, state) => (out[stateName(state as State)] = n));
    }
    return out;
  }

  private recount(): void {
    this.perStateStale = false;
    this.perState.length = 0;
    for (const state of Object.values(STATE)) this.perState[state] = 0;
    for (const r of this.q.count.all() as { state: State; n: number }[]) this.perState[r.state] = r.n;
  }

  /** A binding changed state (-1: none, for an inserted or removed one). */
  private moved(from: State | -1, to: State | -1): void {
    if (from >= 0) this.perState[from]--;
    if (to >= 0) this.perState[to]++;
  }

  async *dump(): AsyncGenerator<Binding> {
    // One statement: one read transaction, so one snapshot however long the caller takes.
    yield* this.read(() => this.q.all.iterate()) as IterableIterator<Binding>;
  }

  async restore(rows: readonly Binding[], replace: boolean): Promise<bigint> {
    if (this.walFd < 0) throw new Error('restore on a read-only store');
    const epoch = newEpoch();
    this.db.transaction(() => {
      if (replace) this.db.exec('DELETE FROM bindings; DELETE FROM feed');
      rows.forEach((b, i) => {
        // The rows are distinct among themselves (checked by the caller): a collision is with a stored binding.
        const held = this.q.at.get(b.ip4) as Binding | undefined;
        if (held) throw new RestoreConflict(i, held, 'address');
        const live = b.state !== STATE.revoked && (this.q.byIp6.get(b.ip6) as Binding | undefined);
        if (live) throw new RestoreConflict(i, live, 'node');
        this.q.insert.run(b.ip4, b.ip6, b.state, b.starts, b.ends);
        this.q.feedPut.run(b.ip4, b.ip6, b.starts, b.ends, b.state === STATE.active ? 1 : 0);
      });
      this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)").run(epoch.toString());
    })();
    fdatasyncSync(this.walFd);
    this.recount();
    this.epoch = epoch;
    this.durableSeq = this.committedSeq = this.writtenSeq = this.lastSeqNow();
    return epoch;
  }

  private read<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw err instanceof Database.SqliteError || !this.db.open ? new StoreUnavailable(err) : err;
    }
  }

  /**
   * Make every transaction committed so far durable (fdatasync of the WAL, off the event loop); `done` gets the
   * error if the disk failed, and then those transactions must be taken as lost.
   */
  syncWal(done: (err: Error | null) => void): void {
    if (this.walFd < 0) throw new Error('sync on a read-only store');
    // close() synced everything.
    if (!this.db.open) return queueMicrotask(() => done(null));
    this.syncing++;
    fdatasync(this.walFd, (err) => {
      if (--this.syncing === 0 && !this.db.open) closeSync(this.walFd);
      done(err);
    });
  }

  /** Close, after making every commit durable. A sync still running closes the WAL descriptor when it is done. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.walFd >= 0 && this.db.open) fdatasyncSync(this.walFd);
    this.db.close();
    this.lock?.close();
    if (this.walFd >= 0 && this.syncing === 0) closeSync(this.walFd);
  }

  // --- inside a transaction ---

  private transactor(): Transactor<Op, Value> {
    return {
      transaction: (ops) => {
        const now = this.clock();
        const values = this.db.transaction(() => ops.map((op) => this.run(op, now)))();
        this.committedSeq = this.writtenSeq;
        return values;
      },
      rolledBack: (ops) => {
        this.writtenSeq = this.committedSeq;
        this.perStateStale = true;
        for (const op of ops) {
          if (op.kind === 'grant' && op.bound !== undefined) op.grant.candidates.unused(op.bound);
          if (op.kind === 'grant') op.bound = undefined;
        }
      },
      sync: (done) => this.syncWal(done),
      closed: () => !this.db.open,
      mark: () => this.committedSeq,
      durable: (seq) => {
        if (seq > this.durableSeq) {
          this.durableSeq = seq;
          this.emit('change', seq);
        }
      },
      unavailable: (err) => (err instanceof Database.SqliteError ? new StoreUnavailable(err) : err),
    };
  }

  private run(op: Op, now: number): Value {
    switch (op.kind) {
      case 'grant':
        return this.runGrant(op, now);
      case 'release':
      case 'revoke':
        return this.runEnd(op.kind, op.ip6, op.ip4, now);
      case 'sweep':
        return this.runSweep(op.hold, now);
    }
  }

  private runGrant(op: { grant: GrantOp; bound?: number }, now: number): GrantOutcome {
    const { ip6, duration, only, candidates } = op.grant;
    const cur = this.q.byIp6.get(ip6) as Binding | undefined;
    if (cur) {
      if (only !== undefined && cur.ip4 !== only) return { kind: 'mismatch', now };
      const b: Binding = { ...cur, state: STATE.active, ends: leaseEnd(now, duration) };
      this.q.update.run(b.state, b.ends, b.ip4);
      this.moved(cur.state, b.state);
      this.feed(b, true);
      return { kind: 'renewed', binding: b, now };
    }
    for (let a = candidates.next(); a !== undefined; a = candidates.next()) {
      // The store is the authority: an address the policy thought free but bound here is skipped, never given twice.
      if (this.q.byIp4.get(a) !== undefined) continue;
      op.bound = a;
      const b: Binding = { ip4: a, ip6, state: STATE.active, starts: now, ends: leaseEnd(now, duration) };
      this.q.insert.run(b.ip4, b.ip6, b.state, b.starts, b.ends);
      this.moved(-1, b.state);
      this.feed(b, true);
      return { kind: 'bound', binding: b, now };
    }
    return { kind: 'exhausted', now };
  }

  private runEnd(kind: 'release' | 'revoke', ip6: Buffer, ip4: number, now: number): EndOutcome {
    const cur = this.q.byIp6.get(ip6) as Binding | undefined;
    // A held binding has no lease left to release: it stays held until its hold time ends.
    if (!cur || (ip4 !== 0 && cur.ip4 !== ip4) || (kind === 'release' && cur.state === STATE.held)) return { now };
    const b: Binding =
      kind === 'release'
        ? { ...cur, state: STATE.held, ends: Math.min(cur.ends, now) }
        : { ...cur, state: STATE.revoked, ends: now };
    this.q.update.run(b.state, b.ends, b.ip4);
    this.moved(cur.state, b.state);
    if (cur.state === STATE.active) this.feed(b, false);
    return { binding: b, now };
  }

  private runSweep(hold: number, now: number): SweepOutcome {
    let expired = 0;
    for (const b of this.q.due.all(STATE.active, now, SWEEP_BATCH) as Binding[]) {
      this.q.update.run(STATE.held, b.ends, b.ip4);
      this.moved(STATE.active, STATE.held);
      this.feed(b, false);
      expired++;
    }
    const reclaimed: number[] = [];
    for (const state of [STATE.held, STATE.revoked]) {
      for (const b of this.q.due.all(state, now - hold, SWEEP_BATCH) as Binding[]) {
        this.q.remove.run(b.ip4);
        this.moved(state, -1);
        reclaimed.push(b.ip4);
      }
    }
    return { expired, reclaimed };
  }

  private feed(b: Binding, active: boolean): void {
    this.writtenSeq = Number(this.q.feedPut.run(b.ip4, b.ip6, b.starts, b.ends, active ? 1 : 0).lastInsertRowid);
  }
}

/** The store's database, or the error that opening it raised, with the directory's lock given back. */
function opened(file: string, readonly: boolean, lock: Database.Database | undefined): Database.Database {
  try {
    return new Database(file, { readonly, fileMustExist: readonly });
  } catch (err) {
    lock?.close();
    throw err;
  }
}

/**
 * Take the directory's lock for `store`, or refuse (StoreInUse) when another process or connection holds it. In
 * locking_mode EXCLUSIVE the first write transaction's lock is kept until the connection closes.
 */
function claim(lockFile: string, store: string, restore: boolean): Database.Database {
  const lock = new Database(lockFile);
  try {
    lock.pragma('busy_timeout = 0');
    lock.pragma('locking_mode = EXCLUSIVE');
    // A write: SQLite opens a file this user cannot write read-only, where BEGIN EXCLUSIVE takes only a shared lock
    // that every server would get.
    lock.exec('BEGIN EXCLUSIVE; PRAGMA user_version = 1; COMMIT');
    return lock;
  } catch (err) {
    lock.close();
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_READONLY')
      throw new Error(`cannot take the lock ${lockFile}: this user cannot write it (${(err as Error).message})`);
    if (code !== 'SQLITE_BUSY') throw err;
    throw new StoreInUse(
      restore
        ? `${store} is in use (a dstm server or another import holds ${lockFile}): stop the server first`
        : `${store} is in use by another dstm server or a dstm leases import (it holds ${lockFile}): each server needs a state directory of its own; several servers share a store only on PostgreSQL (--store postgresql://...)`,
    );
  }
}
