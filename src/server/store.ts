// The durable binding store: SQLite (better-sqlite3) in the state directory, in WAL mode. A commit writes the WAL
// without waiting for the disk (synchronous=NORMAL, which still syncs around checkpoints, so the file stays
// consistent); sync() then fdatasyncs the WAL on libuv's thread pool, so the event loop keeps serving calls while the
// disk works. A transaction is durable (survives a crash or power loss) once a sync started after its commit has
// completed: the same guarantee as synchronous=FULL, which would block the thread for that fdatasync at every commit. Uniqueness is the database's job: an address has one row
// (ip4 is the primary key) and a node has at most one live binding (a unique index on ip6 over active and held rows).
// The change feed the TEPs follow is a compacted log: one row per address holding its latest change, under a
// strictly increasing sequence number, so reading it from 0 gives the whole current state and reading it from a
// later point gives what changed since.
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fdatasync, fdatasyncSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';

import type { dstm_state } from '../protocol/generated/dstm';
import { STATE, STATE_NAMES, stateName, type StateName } from '../protocol/status';

/** A binding's state, stored as its dstm_state value. */
export type State = dstm_state;

export interface Binding {
  ip4: number;
  ip6: Buffer;
  state: State;
  /** Absolute seconds: when the node first got this address. */
  starts: number;
  /** Absolute seconds: when the current lease ends (for held and revoked rows: when it ended). */
  ends: number;
}

export interface Change {
  seq: number;
  ip4: number;
  ip6: Buffer;
  starts: number;
  ends: number;
  active: boolean;
}

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
-- bindings per state, kept by triggers in the same transactions, so the metrics read three rows, not the table
CREATE TABLE IF NOT EXISTS state_counts (state INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS bindings_count_insert AFTER INSERT ON bindings BEGIN
  UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
CREATE TRIGGER IF NOT EXISTS bindings_count_delete AFTER DELETE ON bindings BEGIN
  UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS bindings_count_state AFTER UPDATE OF state ON bindings WHEN OLD.state <> NEW.state BEGIN
  UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
  UPDATE state_counts SET n = n + 1 WHERE state = NEW.state;
END;
`;

/** Recounts state_counts from the bindings (at open: a store written before the triggers existed gets them right). */
const RECOUNT = `
DELETE FROM state_counts;
INSERT INTO state_counts (state, n) SELECT value, 0 FROM json_each('${JSON.stringify(Object.values(STATE))}');
UPDATE state_counts SET n = (SELECT count(*) FROM bindings b WHERE b.state = state_counts.state);
`;

export const DB_FILE = 'dstm.sqlite';

export class Store {
  readonly db: Database.Database;
  /** Identifies this store's history: a new store (or a rebuilt one) has a new epoch, so TEPs start over. */
  readonly epoch: bigint;
  private readonly q;
  /** The WAL file, for sync(); -1 when read-only. SQLite keeps the file (same inode) while this connection is open. */
  private walFd = -1;
  private syncing = 0;
  private closed = false;

  constructor(readonly dir: string, opts: { readonly?: boolean } = {}) {
    if (!opts.readonly) mkdirSync(dir, { recursive: true, mode: 0o750 });
    const file = join(dir, DB_FILE);
    if (opts.readonly && !existsSync(file)) throw new Error(`no DSTM store in ${dir} (${file} does not exist)`);
    this.db = new Database(file, { readonly: opts.readonly === true, fileMustExist: opts.readonly === true });
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(SCHEMA);
      this.db.transaction(() => this.db.exec(RECOUNT))();
    }
    this.db.pragma('busy_timeout = 5000');
    const db = this.db;
    this.q = {
      byIp6: db.prepare<[Buffer]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip6 = ? AND state < 2'),
      byIp4: db.prepare<[number]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip4 = ?'),
      insert: db.prepare<[number, Buffer, number, number, number]>('INSERT INTO bindings (ip4, ip6, state, starts, ends) VALUES (?, ?, ?, ?, ?)'),
      update: db.prepare<[number, number, number]>('UPDATE bindings SET state = ?, ends = ? WHERE ip4 = ?'),
      remove: db.prepare<[number]>('DELETE FROM bindings WHERE ip4 = ?'),
      feedPut: db.prepare<[number, Buffer, number, number, number]>('INSERT OR REPLACE INTO feed (ip4, ip6, starts, ends, active) VALUES (?, ?, ?, ?, ?)'),
      feedSince: db.prepare<[number, number, number]>('SELECT seq, ip4, ip6, starts, ends, active FROM feed WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?'),
      lastSeq: db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'feed'").pluck(),
      bound: db.prepare('SELECT ip4 FROM bindings').pluck(),
      due: db.prepare<[number, number, number]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE state = ? AND ends <= ? LIMIT ?'),
      nextDue: db.prepare<[number]>('SELECT min(ends) FROM bindings WHERE state = ?').pluck(),
      list: db.prepare<[number, number]>('SELECT ip4, ip6, state, starts, ends FROM bindings WHERE ip4 > ? ORDER BY ip4 LIMIT ?'),
      // a read-only store may predate state_counts; nothing counts there but an occasional reader
      count: db.prepare(opts.readonly ? 'SELECT state, count(*) AS n FROM bindings GROUP BY state' : 'SELECT state, n FROM state_counts'),
    };
    this.epoch = opts.readonly ? this.readEpoch() : this.ensureEpoch();
    if (!opts.readonly) {
      this.walFd = openSync(`${file}-wal`, 'r+');
      // What a previous process committed may not have reached the disk yet: nothing is served from it until it has.
      fdatasyncSync(this.walFd);
    }
  }

  /**
   * Make every transaction committed so far durable (fdatasync of the WAL, off the event loop); `done` gets the
   * error if the disk failed, and then those transactions must be taken as lost.
   */
  sync(done: (err: Error | null) => void): void {
    if (this.walFd < 0) throw new Error('sync() on a read-only store');
    // close() synced everything.
    if (this.closed) return queueMicrotask(() => done(null));
    this.syncing++;
    fdatasync(this.walFd, (err) => {
      if (--this.syncing === 0 && this.closed) closeSync(this.walFd);
      done(err);
    });
  }

  private readEpoch(): bigint {
    const v = this.db.prepare("SELECT value FROM meta WHERE key = 'epoch'").pluck().get() as string | undefined;
    return v === undefined ? 0n : BigInt(v);
  }

  private ensureEpoch(): bigint {
    const have = this.readEpoch();
    if (have !== 0n) return have;
    // Non-zero, so that 0 can mean "no epoch yet" on the wire.
    const epoch = randomBytes(8).readBigUInt64BE() | 1n;
    this.db.prepare("INSERT INTO meta (key, value) VALUES ('epoch', ?)").run(epoch.toString());
    return epoch;
  }

  /** Run `fn` in a transaction (a savepoint when nested); it commits (with an fsync) when the outermost one returns. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  byIp6(ip6: Buffer): Binding | undefined {
    return this.q.byIp6.get(ip6) as Binding | undefined;
  }

  byIp4(ip4: number): Binding | undefined {
    return this.q.byIp4.get(ip4) as Binding | undefined;
  }

  insert(b: Binding): void {
    this.q.insert.run(b.ip4, b.ip6, b.state, b.starts, b.ends);
  }

  setState(ip4: number, state: State, ends: number): void {
    this.q.update.run(state, ends, ip4);
  }

  remove(ip4: number): void {
    this.q.remove.run(ip4);
  }

  /** Append a change to the feed (replacing the address's previous change) and return its sequence number. */
  feedPut(ip4: number, ip6: Buffer, starts: number, ends: number, active: boolean): number {
    return Number(this.q.feedPut.run(ip4, ip6, starts, ends, active ? 1 : 0).lastInsertRowid);
  }

  /** Changes after `since` up to `upTo`, oldest first, at most `max`; `more` when further changes are ready. */
  feedSince(since: number, upTo: number, max: number): { changes: Change[]; more: boolean } {
    const rows = this.q.feedSince.all(since, upTo, max + 1) as (Omit<Change, 'active'> & { active: number })[];
    const more = rows.length > max;
    return { changes: rows.slice(0, max).map((r) => ({ ...r, active: r.active === 1 })), more };
  }

  lastSeq(): number {
    return (this.q.lastSeq.get() as number | undefined) ?? 0;
  }

  /** Every address with a row (active, held or revoked): none of them is free. */
  boundAddresses(): number[] {
    return this.q.bound.all() as number[];
  }

  /** Rows in `state` whose `ends` is at or before `time`. */
  due(state: State, time: number, limit: number): Binding[] {
    return this.q.due.all(state, time, limit) as Binding[];
  }

  /** Earliest `ends` among rows in `state`, or undefined when there are none. */
  nextDue(state: State): number | undefined {
    return (this.q.nextDue.get(state) as number | null) ?? undefined;
  }

  list(after: number, max: number): Binding[] {
    return this.q.list.all(after, max) as Binding[];
  }

  counts(): Record<StateName, number> {
    const out = Object.fromEntries(STATE_NAMES.map((n) => [n, 0])) as Record<StateName, number>;
    for (const r of this.q.count.all() as { state: State; n: number }[]) out[stateName(r.state)] = r.n;
    return out;
  }

  /** Close, after making every commit durable. A sync still running closes the WAL descriptor when it is done. */
  close(): void {
    if (this.closed) return;
    if (this.walFd >= 0) fdatasyncSync(this.walFd);
    this.db.close();
    this.closed = true;
    if (this.walFd >= 0 && this.syncing === 0) closeSync(this.walFd);
  }
}
