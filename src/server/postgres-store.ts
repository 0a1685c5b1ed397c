// The shared store: PostgreSQL through node-postgres, for several DSTM servers active-active on one database.
// The lease operations that gather while the database is busy, or while the calls the last batch answered come back
// (see flush()), go to the database as one statement (prepared once per connection), its own transaction: one call
// of the PL/pgSQL function dstm_run, committed with synchronous_commit=on (a reply leaves only for a durable change,
// whichever way the connection or the database fails afterwards).
// Concurrency: lease transactions take no global lock. Uniqueness is the database's job (ip4 primary key, a partial
// unique index for one live binding per node): a candidate another server bound is skipped by INSERT ... ON
// CONFLICT DO NOTHING and the next one tried; renewals and releases are one UPDATE conditional on the row (re-checked
// on the committed row when another transaction changed it meanwhile); revocations update the row they read FOR
// UPDATE; the sweep expires and reclaims only the rows it locked, so running it on every server reclaims nothing
// twice. Commits of different servers thus share WAL flushes. Lease times come from the database's clock.
// The feed: a lease transaction writes its feed row with seq NULL; numbering passes (dstm_number, below) give the
// committed NULL rows the next numbers. Passes are serialised by an advisory lock held to their commit, and each
// numbers only rows already committed, so numbers become visible in increasing order: a reader's snapshot always
// shows a prefix of the numbering, and a reader re-reading from its last number misses nothing. A server runs a pass
// after its batches commit, at most one per NUMBER_MS (see numberSoon()), at start-up, at close and, as a safety net
// for a server or database that died between a commit and its pass, when none ran for NUMBER_IDLE_MS; any server's
// pass numbers every server's rows. LISTEN/NOTIFY only wakes the BINDINGS long-polls: the feed is re-read from the
// last sequence number after every reconnect, so nothing is missed.
// dstm leases import (restore) runs on a database no server is connected to (told by the servers' application
// names), holding the schema lock that a starting server waits for.
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import pgpass from 'pgpass';
import { redactUrl } from '../config/types';
import { stateName } from '../protocol/status';
import { Gathering } from './gathering';
import {
  STATE,
  STATE_NAMES,
  MAX_LEASE_TIME,
  RestoreConflict,
  StoreInUse,
  StoreUnavailable,
  newEpoch,
  type Binding,
  type EndOutcome,
  type GrantOp,
  type GrantOutcome,
  type State,
  type StateCounts,
  type Store,
  type StoreHealth,
  type SweepOutcome,
} from './store';

type FeedPage = Awaited<ReturnType<Store['feedSince']>>;

/** Version of the schema below (dstm_meta.schema_version). */
export const PG_SCHEMA_VERSION = 4;
/** Connections per server when server.store_pool is not set. */
export const DEFAULT_PG_POOL = 4;

const FEED_CHANNEL = 'dstm_feed';
/** Most candidates sent with one try of a grant. */
const MAX_CANDIDATES = 16;
const SWEEP_BATCH = 1000;
/**
 * Reconnection backoff while the database is unreachable, milliseconds. A failed try costs one refused connect, so
 * the cap is short: a database back from a restart serves again within a second, not after thousands of calls
 * answered UNAVAILABLE.
 */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 1000;
/** Tries of a batch that a conflict with another server's transaction rolled back (see execute()). */
const MAX_TRIES = 3;
/** Longest wait at close for a batch under way. */
const CLOSE_WAIT_MS = 1000;
/**
 * Longest wait for the answer to a lease batch, a read or a numbering pass, milliseconds: then the call is answered
 * UNAVAILABLE and the connection dropped. A database host that vanished (no reset comes) would otherwise hold a
 * batch's connection until the kernel gives up on it, hours later, and every call queued behind it.
 */
export const PG_QUERY_TIMEOUT_MS = 5000;
/** Idle time before TCP keepalive probes start on the database connections, so a vanished host is noticed. */
const KEEPALIVE_DELAY_MS = 10_000;
/** Key of the advisory lock that serialises schema creation between servers starting together. */
const MIGRATE_LOCK = 0x2d53544d;
/** Key of the advisory lock that serialises numbering passes. */
const NUMBER_LOCK = 0x2d53544e;
/** Most feed rows one numbering pass numbers (passes follow the batches closely, so one seldom finds more). */
const NUMBER_BATCH = 10000;
/** How far the durable reservation of feed numbers runs ahead: one synchronous numbering pass per this many numbers. */
const NUMBER_RESERVE = 100000;
/** A numbering pass at least this often, milliseconds, while no batch leads to one (rows a crash left unnumbered). */
const NUMBER_IDLE_MS = 1000;
/** A server's connections, by application_name: the pool's, and the one that LISTENs is this and "-listen". */
const SERVER_APP = 'dstm-server';
/** Rows per statement of a restore (arrays of this many bound as parameters). */
const RESTORE_CHUNK = 10000;
/**
 * Shortest time between two numbering passes of one server, milliseconds. A batch's callers are answered once it
 * commits; its changes reach the feed with the next pass (this server's long-polls, and every other server's through
 * the pass's NOTIFY): at once after a quiet spell, at most about this late under load. A pass after every batch cost
 * the database nearly as much as the batch, and each NOTIFY wakes every server's LISTEN connection.
 */
const NUMBER_MS = 10;
/** A batch's duration before the first one is measured, milliseconds (one round trip and a WAL flush). */
const INITIAL_BATCH_MS = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dstm_meta (key text PRIMARY KEY, value text NOT NULL);
-- seq: the reservation. No feed number above it was ever handed out; raised, durably, before one would be.
CREATE TABLE IF NOT EXISTS dstm_clock (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
INSERT INTO dstm_clock VALUES (1, 0) ON CONFLICT DO NOTHING;
-- The last feed number handed out. Unlogged: numbering passes commit without waiting for a WAL flush, and a crash
-- (or a restore, or a promoted standby) empties this table, which makes the next pass go on above the reservation.
CREATE UNLOGGED TABLE IF NOT EXISTS dstm_counter (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
-- Numbers handed out and then lost with a crash: (lo, hi]. A reader whose position is in one is told to start over.
CREATE TABLE IF NOT EXISTS dstm_feed_gaps (lo bigint NOT NULL, hi bigint NOT NULL);
CREATE TABLE IF NOT EXISTS dstm_bindings (
  ip4 bigint PRIMARY KEY CHECK (ip4 BETWEEN 0 AND 4294967295),
  ip6 bytea NOT NULL CHECK (length(ip6) = 16),
  state smallint NOT NULL CHECK (state IN (0, 1, 2)),
  starts bigint NOT NULL,
  ends bigint NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dstm_bindings_ip6 ON dstm_bindings (ip6) WHERE state < 2;
CREATE INDEX IF NOT EXISTS dstm_bindings_ends ON dstm_bindings (state, ends);
-- seq NULL: committed, not numbered yet (invisible to readers until a numbering pass).
CREATE TABLE IF NOT EXISTS dstm_feed (
  ip4 bigint PRIMARY KEY,
  seq bigint UNIQUE,
  ip6 bytea NOT NULL,
  starts bigint NOT NULL,
  ends bigint NOT NULL,
  active boolean NOT NULL
);
ALTER TABLE dstm_feed ALTER COLUMN seq DROP NOT NULL;
CREATE INDEX IF NOT EXISTS dstm_feed_unnumbered ON dstm_feed (ip4) WHERE seq IS NULL;
DROP FUNCTION IF EXISTS dstm_commit();

DROP FUNCTION IF EXISTS dstm_begin(bigint);
-- First statement of every lease transaction: the transaction's clock (fixed: tests only).
CREATE FUNCTION dstm_begin(fixed bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('dstm.now', coalesce(fixed, floor(extract(epoch FROM clock_timestamp())))::bigint::text, true);
END $$;

CREATE OR REPLACE FUNCTION dstm_feed_put(b dstm_bindings, act boolean) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO dstm_feed AS f (ip4, seq, ip6, starts, ends, active) VALUES (b.ip4, NULL, b.ip6, b.starts, b.ends, act)
    ON CONFLICT (ip4) DO UPDATE SET seq = NULL, ip6 = b.ip6, starts = b.starts, ends = b.ends, active = act;
END $$;

-- The last number handed out, as this snapshot shows it. PL/pgSQL, not SQL: its plans are kept per session.
DROP FUNCTION IF EXISTS dstm_last();
CREATE FUNCTION dstm_last() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN coalesce((SELECT seq FROM dstm_counter WHERE id = 1), (SELECT max(seq) FROM dstm_feed), 0);
END $$;

-- A numbering pass, in a transaction of its own: number up to p_limit committed NULL rows, in address order; the
-- last number. Serialised by an advisory lock held to its commit, so passes commit in the order of their numbers.
-- It commits without waiting for the flush: a crash may lose its numbers (the rows go back to NULL) after readers
-- saw them. The next pass then goes on above the reservation, so a renumbered row is above every number a reader
-- may hold, and the lost ones are recorded as a gap (a reader in one starts over, which a restored database needs).
-- p_notify: wake the LISTENers when it numbered something (a server runs one pass per NUMBER_MS at most).
CREATE OR REPLACE FUNCTION dstm_number(p_limit int, p_notify boolean) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  s bigint;
  r bigint;
  top bigint;
  n bigint;
BEGIN
  -- Ordered by ip4 so that the plan is the partial index's: a bare EXISTS may get a sequential scan of the whole feed,
  -- which the statistics of a moment when many rows were unnumbered make look cheap.
  PERFORM FROM dstm_feed f WHERE f.seq IS NULL ORDER BY f.ip4 LIMIT 1;
  IF NOT FOUND THEN RETURN (SELECT c.seq FROM dstm_counter c WHERE c.id = 1); END IF;
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM pg_advisory_xact_lock(${NUMBER_LOCK});
  SELECT k.seq INTO r FROM dstm_clock k WHERE k.id = 1;
  SELECT c.seq INTO s FROM dstm_counter c WHERE c.id = 1;
  IF NOT FOUND THEN
    top := coalesce((SELECT max(f.seq) FROM dstm_feed f), 0);
    IF r > top THEN INSERT INTO dstm_feed_gaps VALUES (top, r); END IF;
    INSERT INTO dstm_counter VALUES (1, r);
    s := r;
    PERFORM set_config('synchronous_commit', 'on', true);
  END IF;
  WITH todo AS (SELECT f.ip4 FROM dstm_feed f WHERE f.seq IS NULL ORDER BY f.ip4 LIMIT p_limit FOR UPDATE SKIP LOCKED),
    num AS (SELECT t.ip4, s + row_number() OVER (ORDER BY t.ip4) AS n FROM todo t)
  UPDATE dstm_feed f SET seq = num.n FROM num WHERE f.ip4 = num.ip4;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n = 0 THEN RETURN s; END IF;
  s := s + n;
  UPDATE dstm_counter SET seq = s WHERE id = 1;
  IF s > r THEN
    -- Durable before any of these numbers is visible (a synchronous commit flushes before it shows).
    UPDATE dstm_clock SET seq = s + ${NUMBER_RESERVE} WHERE id = 1;
    PERFORM set_config('synchronous_commit', 'on', true);
  END IF;
  IF p_notify THEN PERFORM pg_notify('${FEED_CHANNEL}', s::text); END IF;
  RETURN s;
END $$;

-- Schema 2's pass, for servers not yet upgraded.
CREATE OR REPLACE FUNCTION dstm_number(p_limit int) RETURNS bigint LANGUAGE sql AS $$ SELECT dstm_number(p_limit, true) $$;

-- Schema 2's pass after a batch, for servers not yet upgraded.
CREATE OR REPLACE FUNCTION dstm_number_after(p_limit int) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  RETURN dstm_number(p_limit, true);
EXCEPTION WHEN OTHERS THEN
  RETURN NULL;
END $$;
-- Schema 4's pass after a batch, for servers not yet upgraded (after the COMMIT in the same query: its failure must
-- not hide that the batch committed). seq NULL and the error when it failed.
DROP FUNCTION IF EXISTS dstm_number_after(int, boolean);
CREATE FUNCTION dstm_number_after(p_limit int, p_notify boolean, OUT seq bigint, OUT error text) LANGUAGE plpgsql AS $$
BEGIN
  seq := dstm_number(p_limit, p_notify);
EXCEPTION WHEN OTHERS THEN
  error := SQLSTATE || ' ' || SQLERRM;
END $$;

-- Schema 3's batch (dstm_batch and the dstm_grant, dstm_end and dstm_feed_put it calls), for servers not yet upgraded;
-- dstm_run() below does the same.
-- kind: renewed, bound, mismatch or exhausted; tried: candidates used (those before the bound one were taken).
CREATE OR REPLACE FUNCTION dstm_grant(p_ip6 bytea, p_duration bigint, p_only bigint, p_cands bigint[])
RETURNS TABLE (kind text, ip4 bigint, ip6 bytea, state smallint, starts bigint, ends bigint, now bigint, tried int)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  t bigint := current_setting('dstm.now')::bigint;
  cur dstm_bindings;
  i int;
BEGIN
  SELECT * INTO cur FROM dstm_bindings b WHERE b.ip6 = p_ip6 AND b.state < 2 FOR UPDATE;
  IF FOUND THEN
    IF p_only IS NOT NULL AND cur.ip4 <> p_only THEN
      RETURN QUERY SELECT 'mismatch', 0::bigint, p_ip6, 0::smallint, t, t, t, 0;
      RETURN;
    END IF;
    UPDATE dstm_bindings b SET state = 0, ends = t + p_duration WHERE b.ip4 = cur.ip4 RETURNING b.* INTO cur;
    PERFORM dstm_feed_put(cur, true);
    RETURN QUERY SELECT 'renewed', cur.ip4, cur.ip6, cur.state, cur.starts, cur.ends, t, 0;
    RETURN;
  END IF;
  FOR i IN 1 .. coalesce(array_length(p_cands, 1), 0) LOOP
    INSERT INTO dstm_bindings AS b VALUES (p_cands[i], p_ip6, 0, t, t + p_duration) ON CONFLICT (ip4) DO NOTHING RETURNING b.* INTO cur;
    IF FOUND THEN
      PERFORM dstm_feed_put(cur, true);
      RETURN QUERY SELECT 'bound', cur.ip4, cur.ip6, cur.state, cur.starts, cur.ends, t, i;
      RETURN;
    END IF;
  END LOOP;
  RETURN QUERY SELECT 'exhausted', 0::bigint, p_ip6, 0::smallint, t, t, t, coalesce(array_length(p_cands, 1), 0);
END $$;

-- RELEASE (held, like an expiry) and REVOKE (revoked from now): the binding after the change, or none.
CREATE OR REPLACE FUNCTION dstm_end(p_revoke boolean, p_ip6 bytea, p_ip4 bigint)
RETURNS TABLE (found boolean, ip4 bigint, ip6 bytea, state smallint, starts bigint, ends bigint, now bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  t bigint := current_setting('dstm.now')::bigint;
  cur dstm_bindings;
  was smallint;
BEGIN
  SELECT * INTO cur FROM dstm_bindings b WHERE b.ip6 = p_ip6 AND b.state < 2 FOR UPDATE;
  IF NOT FOUND OR (p_ip4 <> 0 AND cur.ip4 <> p_ip4) OR (NOT p_revoke AND cur.state = 1) THEN
    RETURN QUERY SELECT false, 0::bigint, p_ip6, 0::smallint, t, t, t;
    RETURN;
  END IF;
  was := cur.state;
  IF p_revoke THEN
    UPDATE dstm_bindings b SET state = 2, ends = t WHERE b.ip4 = cur.ip4 RETURNING b.* INTO cur;
  ELSE
    UPDATE dstm_bindings b SET state = 1, ends = least(b.ends, t) WHERE b.ip4 = cur.ip4 RETURNING b.* INTO cur;
  END IF;
  IF was = 0 THEN PERFORM dstm_feed_put(cur, false); END IF;
  RETURN QUERY SELECT true, cur.ip4, cur.ip6, cur.state, cur.starts, cur.ends, t;
END $$;

CREATE OR REPLACE FUNCTION dstm_sweep(p_hold bigint, p_limit int)
RETURNS TABLE (expired int, reclaimed bigint[]) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  t bigint := current_setting('dstm.now')::bigint;
  r dstm_bindings;
  n int := 0;
  gone bigint[];
BEGIN
  FOR r IN SELECT * FROM dstm_bindings b WHERE b.state = 0 AND b.ends <= t ORDER BY b.ends LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
    UPDATE dstm_bindings b SET state = 1 WHERE b.ip4 = r.ip4;
    PERFORM dstm_feed_put(r, false);
    n := n + 1;
  END LOOP;
  WITH d AS (
    DELETE FROM dstm_bindings b WHERE b.ip4 IN (
      SELECT x.ip4 FROM dstm_bindings x WHERE x.state > 0 AND x.ends <= t - p_hold LIMIT p_limit FOR UPDATE SKIP LOCKED)
    RETURNING b.ip4)
  SELECT coalesce(array_agg(d.ip4), '{}') INTO gone FROM d;
  RETURN QUERY SELECT n, gone;
END $$;

-- A whole batch in one statement (parsed and planned once, one result): its clock, then each operation in order,
-- one row each. p_kind: 0 grant (p_n: duration, p_ip4: only, candidates: the next p_ncands of p_cands),
-- 1 release, 2 revoke (p_ip4: the address or 0), 3 sweep (p_n: hold).
DROP FUNCTION IF EXISTS dstm_batch(bigint, smallint[], bytea[], bigint[], bigint[], bigint[], int[]);
CREATE FUNCTION dstm_batch(p_fixed bigint, p_kind smallint[], p_ip6 bytea[], p_n bigint[], p_ip4 bigint[],
  p_cands bigint[], p_ncands int[])
RETURNS TABLE (kind text, found boolean, ip4 bigint, ip6 bytea, state smallint, starts bigint, ends bigint, now bigint,
  tried int, expired int, reclaimed bigint[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  i int;
  off int := 0;
  g record;
  e record;
  w record;
BEGIN
  PERFORM dstm_begin(p_fixed);
  FOR i IN 1 .. coalesce(array_length(p_kind, 1), 0) LOOP
    CASE p_kind[i]
    WHEN 0 THEN
      SELECT * INTO g FROM dstm_grant(p_ip6[i], p_n[i], p_ip4[i], coalesce(p_cands[off + 1 : off + p_ncands[i]], '{}'));
      off := off + p_ncands[i];
      RETURN QUERY SELECT g.kind, NULL::boolean, g.ip4, g.ip6, g.state, g.starts, g.ends, g.now, g.tried, NULL::int, NULL::bigint[];
    WHEN 1, 2 THEN
      SELECT * INTO e FROM dstm_end(p_kind[i] = 2, p_ip6[i], p_ip4[i]);
      RETURN QUERY SELECT NULL::text, e.found, e.ip4, e.ip6, e.state, e.starts, e.ends, e.now, NULL::int, NULL::int, NULL::bigint[];
    ELSE
      SELECT * INTO w FROM dstm_sweep(p_n[i], ${SWEEP_BATCH});
      RETURN QUERY SELECT NULL::text, NULL::boolean, NULL::bigint, NULL::bytea, NULL::smallint, NULL::bigint, NULL::bigint,
        NULL::bigint, NULL::int, w.expired, w.reclaimed;
    END CASE;
  END LOOP;
END $$;

-- Schema 4: a whole batch in one PL/pgSQL function with each operation's statements inline (no nested calls of
-- set-returning functions), its clock a variable. A renewal or a release is one conditional UPDATE of the node's
-- live binding (it re-checks a row another transaction changed meanwhile, so it applies to the row as committed),
-- then the feed row. Same results as dstm_batch(), one row per operation in order.
DROP FUNCTION IF EXISTS dstm_run(bigint, smallint[], bytea[], bigint[], bigint[], bigint[], int[]);
CREATE FUNCTION dstm_run(p_fixed bigint, p_kind smallint[], p_ip6 bytea[], p_n bigint[], p_ip4 bigint[],
  p_cands bigint[], p_ncands int[])
RETURNS TABLE (kind text, hit boolean, ip4 bigint, ip6 bytea, state smallint, starts bigint, ends bigint, now bigint,
  tried int, expired int, reclaimed bigint[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  t bigint := coalesce(p_fixed, floor(extract(epoch FROM clock_timestamp()))::bigint);
  i int;
  j int;
  off int := 0;
  cur dstm_bindings;
  was smallint;
  act boolean;
BEGIN
  now := t;
  FOR i IN 1 .. coalesce(array_length(p_kind, 1), 0) LOOP
    kind := NULL; hit := NULL; tried := NULL; expired := NULL; reclaimed := NULL; cur := NULL; act := NULL;
    CASE p_kind[i]
    WHEN 0 THEN
      UPDATE dstm_bindings b SET state = 0, ends = t + p_n[i]
        WHERE b.ip6 = p_ip6[i] AND b.state < 2 AND (p_ip4[i] IS NULL OR b.ip4 = p_ip4[i]) RETURNING b.* INTO cur;
      IF FOUND THEN
        kind := 'renewed'; tried := 0; act := true;
      ELSIF p_ip4[i] IS NOT NULL AND EXISTS (SELECT 1 FROM dstm_bindings b WHERE b.ip6 = p_ip6[i] AND b.state < 2) THEN
        kind := 'mismatch'; tried := 0;
      ELSE
        kind := 'exhausted'; tried := p_ncands[i];
        FOR j IN 1 .. p_ncands[i] LOOP
          INSERT INTO dstm_bindings AS b VALUES (p_cands[off + j], p_ip6[i], 0, t, t + p_n[i])
            ON CONFLICT (ip4) DO NOTHING RETURNING b.* INTO cur;
          IF FOUND THEN
            kind := 'bound'; tried := j; act := true;
            EXIT;
          END IF;
        END LOOP;
      END IF;
      off := off + p_ncands[i];
    WHEN 1 THEN
      UPDATE dstm_bindings b SET state = 1, ends = least(b.ends, t)
        WHERE b.ip6 = p_ip6[i] AND b.state = 0 AND (p_ip4[i] = 0 OR b.ip4 = p_ip4[i]) RETURNING b.* INTO cur;
      hit := FOUND;
      IF hit THEN act := false; END IF;
    WHEN 2 THEN
      SELECT * INTO cur FROM dstm_bindings b WHERE b.ip6 = p_ip6[i] AND b.state < 2 FOR UPDATE;
      hit := FOUND AND (p_ip4[i] = 0 OR cur.ip4 = p_ip4[i]);
      IF hit THEN
        was := cur.state;
        UPDATE dstm_bindings b SET state = 2, ends = t WHERE b.ip4 = cur.ip4 RETURNING b.* INTO cur;
        IF was = 0 THEN act := false; END IF;
      ELSE
        cur := NULL;
      END IF;
    ELSE
      PERFORM set_config('dstm.now', t::text, true);
      SELECT w.expired, w.reclaimed INTO expired, reclaimed FROM dstm_sweep(p_n[i], ${SWEEP_BATCH}) w;
    END CASE;
    -- The feed row: an address seen before has one, which a plain UPDATE changes without the tuple lock (and its WAL
    -- record) of ON CONFLICT DO UPDATE.
    IF act IS NOT NULL THEN
      UPDATE dstm_feed f SET seq = NULL, ip6 = cur.ip6, starts = cur.starts, ends = cur.ends, active = act
        WHERE f.ip4 = cur.ip4;
      IF NOT FOUND THEN
        INSERT INTO dstm_feed AS f (ip4, seq, ip6, starts, ends, active)
          VALUES (cur.ip4, NULL, cur.ip6, cur.starts, cur.ends, act)
          ON CONFLICT (ip4) DO UPDATE SET seq = NULL, ip6 = EXCLUDED.ip6, starts = EXCLUDED.starts, ends = EXCLUDED.ends,
            active = EXCLUDED.active;
      END IF;
    END IF;
    ip4 := cur.ip4; ip6 := coalesce(cur.ip6, p_ip6[i]); state := cur.state; starts := cur.starts; ends := cur.ends;
    RETURN NEXT;
  END LOOP;
END $$;
`;

type Op =
  | { kind: 'grant'; grant: GrantOp; cands: number[] }
  | { kind: 'release' | 'revoke'; ip6: Buffer; ip4: number }
  | { kind: 'sweep'; hold: number };

interface Pending {
  op: Op;
  resolve(row: Record<string, unknown>): void;
  reject(err: unknown): void;
}

export interface PostgresOptions {
  /** Connections to the database (besides the one that LISTENs). */
  poolSize?: number;
  /** A fixed clock, absolute seconds, instead of the database's (tests only). */
  clock?: () => number;
  /**
   * Its connections' application_name (default dstm-server; dstm leases uses another, so a restore sees only servers).
   */
  applicationName?: string;
  /** Longest wait for a batch, a read or a numbering pass (default PG_QUERY_TIMEOUT_MS; tests use less). */
  queryTimeoutMs?: number;
  /**
   * For dstm leases export: read a store that must exist, of this schema version or an older one, writing nothing
   * (no schema created or upgraded, no numbering pass, no LISTEN).
   */
  readonly?: boolean;
}

/**
 * How to connect to `url`: the URL's settings as node-postgres reads them, with the session settings dstm needs
 * after the URL's own `options` (a later -c wins). Not the URL itself beside them: node-postgres lets a URL's
 * settings (its options=, or its empty password) replace the configuration's. Durability does not depend on the
 * database's (or the role's) default either: a client's settings win over those, and a reply leaves only after its
 * commit is flushed.
 */
function sessionOf(url: string): pg.ClientConfig {
  const { options, password, ...fromUrl } = parseIntoClientConfig(url);
  return {
    ...fromUrl,
    options: [options, '-c synchronous_commit=on -c timezone=UTC'].filter(Boolean).join(' '),
    // node-postgres calls it with the connection's parameters, and takes undefined as no password (not in its types)
    password: password || (passwordFor as unknown as () => Promise<string>),
  };
}

/**
 * The password when the URL has none (a password in the URL wins over this): PGPASSWORD, else the entry for the
 * connection in PGPASSFILE (or ~/.pgpass), read here: node-postgres's own reading of that file is deprecated (a
 * warning at every start, and gone in pg 9).
 */
function passwordFor(params: pgpass.ConnInfo): Promise<string> {
  const env = process.env.PGPASSWORD;
  if (env !== undefined) return Promise.resolve(env);
  // Only called when the database asks for one: none found is the error to name (node-postgres would go on without
  // one and fail with "client password must be a string").
  const file = process.env.PGPASSFILE || join(process.env.HOME || '.', '.pgpass');
  const entry = [params.host, params.port, params.database, params.user].join(':');
  return new Promise((resolve, reject) =>
    pgpass(params, (pass) =>
      pass !== undefined
        ? resolve(pass)
        : reject(
            new Error(
              `the database asks for a password and none is given: not in the URL, PGPASSWORD unset, no line for ${entry} in ${file} (PGPASSFILE; ignored unless mode 0600 or less)`,
            ),
          ),
    ),
  );
}

/** An error the database answered (with a SQLSTATE): the session is still in step with the client. */
function fromDatabase(err: unknown): boolean {
  return /^[0-9A-Z]{5}$/.test((err as { code?: string }).code ?? '');
}

/** SQLSTATE classes after which the connection or the database cannot be trusted to be there. */
function isConnectionLoss(err: unknown): boolean {
  return !fromDatabase(err) || /^(08|53|57|58|XX)/.test((err as { code: string }).code);
}

/**
 * A lost connection or database, or one that became read-only (a standby) or a role that lost its rights, which
 * fail every call alike: retry later (the probe checks writability, see unwritable()).
 */
function isOutage(err: unknown): boolean {
  return isConnectionLoss(err) || /^(25006|42501)$/.test((err as { code: string }).code);
}

/** What a lease transaction, a numbering pass or an import writes. */
const TABLES = ['dstm_bindings', 'dstm_feed', 'dstm_clock', 'dstm_counter', 'dstm_feed_gaps'];
/** The functions a server calls. */
const FUNCTIONS = [
  'dstm_run(bigint, smallint[], bytea[], bigint[], bigint[], bigint[], int[])',
  'dstm_number(int, boolean)',
  'dstm_last()',
  'dstm_sweep(bigint, int)',
];

/**
 * Why lease transactions cannot commit on this database as this role, or undefined: a database in recovery (a
 * standby) or read-only, or privileges missing on the tables and functions they use.
 */
async function unwritable(q: { query: pg.Pool['query'] }, timeout: number): Promise<string | undefined> {
  const r = await q.query({
    text: `SELECT current_user AS who, pg_is_in_recovery() AS standby, current_setting('transaction_read_only') = 'on' AS ro,
      (SELECT string_agg(p || ' on ' || t, ', ') FROM unnest($1::text[]) t,
         unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p WHERE NOT has_table_privilege(t, p)) AS tables,
      (SELECT string_agg(f, ', ') FROM unnest($2::text[]) f WHERE NOT has_function_privilege(f, 'EXECUTE')) AS functions`,
    values: [TABLES, FUNCTIONS],
    query_timeout: timeout,
  } as pg.QueryConfig);
  const { who, standby, ro, tables, functions } = r.rows[0];
  if (standby) return 'the database is a standby in recovery (read-only): point server.store at the primary';
  if (ro) return 'the database is read-only for this role (default_transaction_read_only): lease changes cannot commit';
  const missing = [tables, functions && `EXECUTE on ${functions}`].filter(Boolean).join(', ');
  if (!missing) return undefined;
  return `the role ${who} lacks ${missing}: grant it SELECT, INSERT, UPDATE and DELETE on the dstm_* tables and EXECUTE on the dstm_*() functions`;
}

export class PostgresStore extends EventEmitter implements Store {
  readonly engine = 'postgresql';
  readonly shared = true;
  readonly where: string;
  epoch = 0n;
  private seq = 0;
  private readonly pool: pg.Pool;
  private listener: pg.Client | null = null;
  /** The LISTEN connection being made (at open, or again after it was lost), which close() ends too. */
  private connecting: pg.Client | null = null;
  private queue: Pending[] = [];
  private scheduled = false;
  /** Whether a batch waits for the calls expected to join it, and the timer that ends the wait. */
  private readonly gathering = new Gathering(INITIAL_BATCH_MS);
  private gatherTimer: NodeJS.Timeout | undefined;
  /** Batches under way, at most maxInFlight. */
  private inFlight = 0;
  private readonly maxInFlight: number;
  private closed = false;
  private up = true;
  private downReason = '';
  /** While down: calls fail at once until retryAt, then one finds out; the wait doubles up to BACKOFF_MAX_MS. */
  private backoff = BACKOFF_MIN_MS;
  private retryAt = 0;
  private listenTimer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private numberTimer: NodeJS.Timeout | undefined;
  /** A batch committed since the last numbering pass began. */
  private owed = false;
  /** When the last pass, and the last one that succeeded, began (performance.now()). */
  private lastPass = -Infinity;
  private lastGoodPass = -Infinity;
  /** The next pass, and the one under way. */
  private passTimer: NodeJS.Timeout | undefined;
  private passing: Promise<void> | undefined;
  /** Numbering passes that failed (their rows wait for the next pass); `numberingOk` false until one succeeds. */
  numberingFailures = 0;
  private numberingOk = true;

  /** How to connect: the pool's sessions and the one that LISTENs alike. */
  private readonly session: pg.ClientConfig;
  /** Feed reads under way, by position and size, with this server's last sequence number when each began. */
  private readonly feedReads = new Map<string, { seq: number; page: Promise<FeedPage> }>();
  /** Every connection's socket while it is open: close() ends those that a database that does not answer holds. */
  private readonly sockets = new Set<Socket>();

  private constructor(
    url: string,
    private readonly opts: PostgresOptions,
  ) {
    super();
    this.where = redactUrl(url);
    this.session = { ...sessionOf(url), stream: () => this.socket() };
    // One connection is left for the feed's readers and the other reads.
    this.maxInFlight = Math.max(1, (opts.poolSize ?? DEFAULT_PG_POOL) - 1);
    this.pool = new pg.Pool({
      ...this.session,
      max: opts.poolSize ?? DEFAULT_PG_POOL,
      application_name: opts.applicationName ?? SERVER_APP,
      connectionTimeoutMillis: 5000,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    });
    // An idle connection that breaks is dropped by the pool; the next query finds out whether the database is there.
    this.pool.on('error', () => undefined);
    // Nor may one that breaks while checked out (a batch's): its query fails, which is how the batch finds out.
    this.pool.on('connect', (client) => client.on('error', () => undefined));
  }

  /** Connect, create or check the schema, read the epoch; throws an Error naming the problem. */
  static async open(url: string, opts: PostgresOptions = {}): Promise<PostgresStore> {
    const s = new PostgresStore(url, opts);
    try {
      await s.migrate();
      if (opts.readonly) return s;
      // Rows a crash left unnumbered, whoever wrote them.
      s.seq = Number((await s.pool.query('SELECT dstm_number($1, true) AS seq', [NUMBER_BATCH])).rows[0].seq);
      s.lastGoodPass = performance.now();
      await s.listen();
      s.numberTimer = setInterval(() => s.numberIfIdle(), NUMBER_IDLE_MS).unref();
    } catch (err) {
      await s.pool.end().catch(() => undefined);
      s.listener?.end().catch(() => undefined);
      throw new Error(`PostgreSQL store ${s.where}: ${describe(err)}`);
    }
    return s;
  }

  private async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK]);
      const have = await c.query("SELECT to_regclass('dstm_meta') IS NOT NULL AS present");
      const version = have.rows[0].present
        ? Number((await c.query("SELECT value FROM dstm_meta WHERE key = 'schema_version'")).rows[0]?.value ?? 0)
        : 0;
      if (version > PG_SCHEMA_VERSION) {
        throw new Error(
          `the database has dstm schema version ${version}, newer than this dstm's ${PG_SCHEMA_VERSION}: upgrade dstm on this server`,
        );
      }
      if (have.rows[0].present && version === 0)
        throw new Error('the database has a dstm_meta table without a schema version: not a dstm store, or damaged');
      if (this.opts.readonly) {
        // dstm_bindings has the same columns in every version; a database without a store is an empty backup.
        if (!have.rows[0].present) throw new Error('no dstm store in this database (no dstm_meta table)');
        const epoch = (await c.query("SELECT value FROM dstm_meta WHERE key = 'epoch'")).rows[0]?.value;
        this.epoch = BigInt(epoch ?? 0);
        await c.query('COMMIT');
        return;
      }
      // Only a new (or, later, an older) schema is written: a server whose user may not create keeps running on one in
      // place.
      if (version < PG_SCHEMA_VERSION) {
        await c.query(SCHEMA).catch((err: { code?: string; message?: string }) => {
          if (version === 0 || err.code !== '42501') throw err;
          throw new Error(
            `the database has dstm schema version ${version} and this dstm needs ${PG_SCHEMA_VERSION}: the upgrade (ALTER TABLE, CREATE and DROP FUNCTION) must run as the owner of the dstm_* tables, with CREATE on the schema; start one server once as that user (${err.message})`,
          );
        });
        await c.query(
          "INSERT INTO dstm_meta VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
          [String(PG_SCHEMA_VERSION)],
        );
      }
      // A standby, or a role without rights, would start and then answer every call UNAVAILABLE.
      const why = await unwritable(c, this.queryTimeout);
      if (why) throw new Error(why);
      // The epoch belongs to this database: one restored into another database (pg_restore) starts a new history.
      const db = String((await c.query('SELECT oid FROM pg_database WHERE datname = current_database()')).rows[0].oid);
      const meta = new Map(
        (await c.query("SELECT key, value FROM dstm_meta WHERE key IN ('epoch', 'database')")).rows.map((r) => [
          r.key as string,
          r.value as string,
        ]),
      );
      if (meta.has('epoch') && meta.get('database') === db) {
        this.epoch = BigInt(meta.get('epoch')!);
      } else {
        this.epoch = newEpoch();
        await c.query(
          "INSERT INTO dstm_meta VALUES ('epoch', $1), ('database', $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
          [this.epoch.toString(), db],
        );
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  get lastSeq(): number {
    return this.seq;
  }

  health(): StoreHealth {
    if (this.closed) return { ok: false, reason: 'closed' };
    return this.up ? { ok: true } : { ok: false, reason: this.downReason };
  }

  // --- the binding feed's wake-up ---

  private async listen(): Promise<void> {
    const c = new pg.Client({
      ...this.session,
      application_name: `${this.opts.applicationName ?? SERVER_APP}-listen`,
      connectionTimeoutMillis: 5000,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
    });
    c.on('notification', (n) => this.advance(Number(n.payload)));
    c.on('error', () => undefined);
    // Losing it only delays the wake-up of long-polls for other servers' changes: calls go on through the pool.
    c.on('end', () => {
      if (this.listener !== c || this.closed) return;
      this.listener = null;
      this.relisten(BACKOFF_MIN_MS);
    });
    this.connecting = c;
    try {
      await c.connect();
      await c.query(`LISTEN ${FEED_CHANNEL}`);
      // Whatever was notified while nobody listened: re-read the last sequence number.
      this.advance(Number((await c.query('SELECT dstm_last() AS seq')).rows[0].seq));
      // The database answers again: no need to wait out the calls' backoff, if it takes lease changes.
      if (!this.up && !(await unwritable(c, this.queryTimeout))) this.recovered();
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    } finally {
      this.connecting = null;
    }
    // close() ran meanwhile: it could not end this connection, which was not the listener yet.
    if (this.closed) {
      await c.end().catch(() => undefined);
      return;
    }
    this.listener = c;
  }

  private relisten(delay: number): void {
    if (this.closed || this.listenTimer) return;
    this.listenTimer = setTimeout(() => {
      this.listenTimer = undefined;
      this.listen().catch(() => this.relisten(Math.min(delay * 2, BACKOFF_MAX_MS)));
    }, delay).unref();
  }

  private advance(seq: number): void {
    if (Number.isFinite(seq) && seq > this.seq) {
      this.seq = seq;
      this.emit('change', seq);
    }
  }

  // --- availability ---

  private down(err: unknown): void {
    if (this.closed) return;
    this.downReason = describe(err);
    const now = Date.now();
    if (this.up) {
      this.up = false;
      this.backoff = BACKOFF_MIN_MS;
      this.emit('health', this.health());
    } else if (now < this.retryAt) {
      // Another call that was already under way when the outage began: the same retry period.
      return;
    } else {
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    }
    this.retryAt = now + this.backoff;
    this.probe();
  }

  /** While down, one query per retry period finds out when the database is back, even when no call comes. */
  private probe(): void {
    if (this.probeTimer || this.closed) return;
    this.probeTimer = setTimeout(
      () => {
        this.probeTimer = undefined;
        if (this.up || this.closed) return;
        // Not only whether it answers: a standby or a role without rights is no better.
        unwritable(this.pool, this.queryTimeout).then(
          (why) => (why ? this.down(new Error(why)) : this.recovered()),
          (err) => this.down(err),
        );
      },
      Math.max(0, this.retryAt - Date.now()),
    ).unref();
  }

  private recovered(): void {
    if (this.up || this.closed) return;
    this.up = true;
    this.emit('health', this.health());
  }

  /**
   * While the database is down, calls fail at once until the next retry is due (backoff), instead of each waiting for a
   * connect.
   */
  private gate(): void {
    if (this.closed) throw new StoreUnavailable(new Error('the store is closed'));
    if (!this.up && Date.now() < this.retryAt) throw new StoreUnavailable(new Error(this.downReason));
  }

  /** A query that gives up after the store's timeout (node-postgres takes query_timeout per query; its types lack it). */
  /** A query given up after the query timeout; `name`: prepared once per connection under it. */
  private timed(text: string, values?: unknown[], name?: string): pg.QueryConfig {
    return { text, values, name, query_timeout: this.queryTimeout } as pg.QueryConfig;
  }

  private get queryTimeout(): number {
    return this.opts.queryTimeoutMs ?? PG_QUERY_TIMEOUT_MS;
  }

  /** A connection's socket, made for node-postgres (its own default), remembered until it closes. */
  private socket(): Socket {
    const s = new Socket();
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    return s;
  }

  /** `judge` false: a failure says nothing of the store's health (a metrics read that waited too long for the pool). */
  private async read<R extends pg.QueryResultRow>(text: string, values: unknown[], judge = true): Promise<R[]> {
    this.gate();
    try {
      // No recovery on a read's success: a database that answers reads may still refuse lease changes (the probe and
      // a committed batch tell).
      return (await this.pool.query<R>(this.timed(text, values))).rows;
    } catch (err) {
      if (judge && isOutage(err)) this.down(err);
      throw new StoreUnavailable(err);
    }
  }

  // --- lease transactions ---

  /**
   * A first try without candidates renews the node's binding (the common case, which takes nothing from the
   * policy's pool); a node without one is tried again with one candidate, then with more while those it draws turn
   * out bound by another server. Drawing few at a time leaves the others to the grants of the same batch.
   */
  async grant(grant: GrantOp): Promise<GrantOutcome> {
    for (let want = 0; ; want = Math.min(Math.max(1, want * 2), MAX_CANDIDATES)) {
      const cands: number[] = [];
      for (let a; cands.length < want && (a = grant.candidates.next()) !== undefined;) cands.push(a);
      let row: Record<string, unknown>;
      try {
        row = await this.submit({ kind: 'grant', grant, cands });
      } catch (err) {
        for (const a of cands) grant.candidates.unused(a);
        throw err;
      }
      const now = Number(row.now);
      if (row.kind === 'bound') {
        // Those before the one bound are bound elsewhere (dropped); those after it were not tried.
        for (const a of cands.slice(Number(row.tried))) grant.candidates.unused(a);
        return { kind: 'bound', binding: toBinding(row), now };
      }
      if (row.kind === 'exhausted') {
        // All bound elsewhere, or none asked for yet: draw (more) while the policy has some.
        if (cands.length === want) continue;
        return { kind: 'exhausted', now };
      }
      for (const a of cands) grant.candidates.unused(a);
      return row.kind === 'renewed' ? { kind: 'renewed', binding: toBinding(row), now } : { kind: 'mismatch', now };
    }
  }

  async release(ip6: Buffer, ip4: number): Promise<EndOutcome> {
    return endOutcome(await this.submit({ kind: 'release', ip6, ip4 }));
  }

  async revoke(ip6: Buffer, ip4: number): Promise<EndOutcome> {
    return endOutcome(await this.submit({ kind: 'revoke', ip6, ip4 }));
  }

  async sweep(hold: number): Promise<SweepOutcome> {
    const row = await this.submit({ kind: 'sweep', hold });
    return { expired: Number(row.expired), reclaimed: (row.reclaimed as string[]).map(Number) };
  }

  async sweepDue(hold: number): Promise<boolean> {
    const rows = await this.read<{ due: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM dstm_bindings WHERE state = 0 AND ends <= t) OR EXISTS (SELECT 1 FROM dstm_bindings WHERE state > 0 AND ends <= t - $2) AS due
       FROM (SELECT coalesce($1::bigint, floor(extract(epoch FROM clock_timestamp()))::bigint) AS t) AS c`,
      [this.opts.clock?.() ?? null, hold],
    );
    return rows[0].due;
  }

  /**
   * The BINDINGS long-polls that one change wakes (every TEP following this server, caught up to the same position)
   * share one query: a read for the same position and size joins one under way, if that one began when this server
   * already knew of every change it knows of now (so a caller woken by a change gets it).
   */
  feedSince(since: number, max: number): Promise<FeedPage> {
    const key = `${since}/${max}`;
    const under = this.feedReads.get(key);
    if (under && under.seq >= this.seq) return under.page;
    const read = { seq: this.seq, page: this.readFeed(since, max) };
    this.feedReads.set(key, read);
    const forget = (): void => {
      if (this.feedReads.get(key) === read) this.feedReads.delete(key);
    };
    read.page.then(forget, forget);
    return read.page;
  }

  private async readFeed(since: number, max: number): Promise<FeedPage> {
    // One snapshot for the rows and the last number: numbering passes commit in order, so it shows a prefix of
    // the feed. A position among numbers a crash lost reads as beyond the last (start over). The last number is read
    // once per query (OFFSET 0 keeps its subquery from being pulled up into every returned row).
    const rows = await this.read<{
      seq: string | null;
      ip4: string;
      ip6: Buffer;
      starts: string;
      ends: string;
      active: boolean;
      last: string;
    }>(
      `SELECT f.seq, f.ip4, f.ip6, f.starts, f.ends, f.active, l.last
       FROM (SELECT coalesce((SELECT g.lo FROM dstm_feed_gaps g WHERE $1 > g.lo AND $1 <= g.hi LIMIT 1), dstm_last()) AS last
             OFFSET 0) AS l
         LEFT JOIN LATERAL (SELECT * FROM dstm_feed WHERE seq > $1 ORDER BY seq LIMIT $2) f ON true`,
      [since, max + 1],
    );
    const last = Number(rows[0].last);
    this.advance(last);
    const changes = rows
      .filter((r) => r.seq !== null)
      .map((r) => ({
        seq: Number(r.seq),
        ip4: Number(r.ip4),
        ip6: r.ip6,
        starts: Number(r.starts),
        ends: Number(r.ends),
        active: r.active,
      }));
    return { changes: changes.slice(0, max), more: changes.length > max, last };
  }

  async list(after: number, max: number): Promise<Binding[]> {
    const rows = await this.read(
      'SELECT ip4, ip6, state, starts, ends FROM dstm_bindings WHERE ip4 > $1 ORDER BY ip4 LIMIT $2',
      [after, max],
    );
    return rows.map(toBinding);
  }

  async liveBinding(ip6: Buffer): Promise<Binding | undefined> {
    const rows = await this.read(
      'SELECT ip4, ip6, state, starts, ends FROM dstm_bindings WHERE ip6 = $1 AND state < 2',
      [ip6],
    );
    return rows.length > 0 ? toBinding(rows[0]) : undefined;
  }

  async boundAddresses(): Promise<number[]> {
    return (await this.read<{ ip4: string }>('SELECT ip4 FROM dstm_bindings', [])).map((r) => Number(r.ip4));
  }

  /** Read for the metrics: its failure never marks the store down, the lease calls judge that (see read). */
  async counts(): Promise<StateCounts> {
    const out = Object.fromEntries(STATE_NAMES.map((n) => [n, 0])) as StateCounts;
    for (const r of await this.read<{ state: number; n: string }>(
      'SELECT state, count(*) AS n FROM dstm_bindings GROUP BY state',
      [],
      false,
    ))
      out[stateName(r.state)] = Number(r.n);
    return out;
  }

  async *dump(): AsyncGenerator<Binding> {
    this.gate();
    const c = await this.pool.connect();
    try {
      // One snapshot for every page.
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      for (let after = -1; ;) {
        const rows = (
          await c.query(
            'SELECT ip4, ip6, state, starts, ends FROM dstm_bindings WHERE ip4 > $1 ORDER BY ip4 LIMIT $2',
            [after, RESTORE_CHUNK],
          )
        ).rows.map(toBinding);
        yield* rows;
        if (rows.length < RESTORE_CHUNK) break;
        after = rows[rows.length - 1].ip4;
      }
      await c.query('COMMIT');
    } catch (err) {
      throw outage(err) ? new StoreUnavailable(err) : err;
    } finally {
      c.release(true);
    }
  }

  async restore(rows: readonly Binding[], replace: boolean): Promise<bigint> {
    this.gate();
    const epoch = newEpoch();
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      // A server starting meanwhile waits for the commit (its schema check takes this lock).
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK]);
      const busy = (
        await c.query<{ n: string; hosts: string }>(
          `SELECT count(*) AS n, string_agg(DISTINCT coalesce(host(client_addr), 'local socket'), ', ') AS hosts
           FROM pg_stat_activity WHERE datname = current_database() AND application_name IN ($1, $2)`,
          [SERVER_APP, `${SERVER_APP}-listen`],
        )
      ).rows[0];
      if (Number(busy.n) > 0)
        throw new StoreInUse(
          `${this.where} is in use by dstm servers (connected from ${busy.hosts}): stop every server on it first`,
        );
      await c.query('LOCK TABLE dstm_bindings, dstm_feed IN EXCLUSIVE MODE');
      if (replace) await c.query('DELETE FROM dstm_bindings; DELETE FROM dstm_feed');
      for (let from = 0; from < rows.length; from += RESTORE_CHUNK) {
        const chunk = rows.slice(from, from + RESTORE_CHUNK);
        const cols = [chunk.map((b) => b.ip4), chunk.map((b) => b.ip6), chunk.map((b) => b.state)];
        const rowsOf = 'unnest($1::bigint[], $2::bytea[], $3::smallint[]) WITH ORDINALITY AS r(ip4, ip6, state, i)';
        const hit = (
          await c.query(
            `(SELECT r.i, 'address' AS why, b.* FROM ${rowsOf} JOIN dstm_bindings b ON b.ip4 = r.ip4)
             UNION ALL
             (SELECT r.i, 'node' AS why, b.* FROM ${rowsOf} JOIN dstm_bindings b ON b.ip6 = r.ip6 AND b.state < 2
              WHERE r.state < ${STATE.revoked})
             ORDER BY i LIMIT 1`,
            cols,
          )
        ).rows[0];
        if (hit) throw new RestoreConflict(from + Number(hit.i) - 1, toBinding(hit), hit.why);
        await c.query(
          `WITH r AS (SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::smallint[], $4::bigint[], $5::bigint[])
                        AS r(ip4, ip6, state, starts, ends)),
             b AS (INSERT INTO dstm_bindings SELECT * FROM r)
           INSERT INTO dstm_feed (ip4, seq, ip6, starts, ends, active)
             SELECT ip4, NULL, ip6, starts, ends, state = ${STATE.active} FROM r
           ON CONFLICT (ip4) DO UPDATE SET seq = NULL, ip6 = EXCLUDED.ip6, starts = EXCLUDED.starts,
             ends = EXCLUDED.ends, active = EXCLUDED.active`,
          [...cols, chunk.map((b) => b.starts), chunk.map((b) => b.ends)],
        );
      }
      await c.query("UPDATE dstm_meta SET value = $1 WHERE key = 'epoch'", [epoch.toString()]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release();
      throw outage(err) ? new StoreUnavailable(err) : err;
    }
    this.epoch = epoch;
    // Number the new feed entries now, not at the next server's start. The restore is committed whatever happens
    // here: rows left unnumbered are numbered by the next pass of any server (at its start, at the latest).
    try {
      while ((await c.query('SELECT EXISTS (SELECT 1 FROM dstm_feed WHERE seq IS NULL) AS more')).rows[0].more)
        this.advance(Number((await c.query('SELECT dstm_number($1) AS seq', [NUMBER_BATCH])).rows[0].seq));
    } catch {
      // Nothing to undo; the connection is dropped in case it broke.
      c.release(true);
      return epoch;
    }
    c.release();
    return epoch;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Batches already sent finish (their callers get their answers); nothing new is sent. A batch waiting for a
    // database that is gone is not waited for long: the stop must not hang.
    for (const end = Date.now() + CLOSE_WAIT_MS; this.inFlight > 0 && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    for (const p of this.queue.splice(0)) p.reject(new StoreUnavailable(new Error('the store is closed')));
    clearTimeout(this.gatherTimer);
    clearTimeout(this.listenTimer);
    clearTimeout(this.probeTimer);
    clearInterval(this.numberTimer);
    clearTimeout(this.passTimer);
    this.passTimer = undefined;
    // The pass this server owes, before its connections go: the feed shows every change it answered for. Not waited
    // for long when the database is gone (the next pass of any server numbers them).
    if (this.up) await Promise.race([this.settled(), new Promise((r) => setTimeout(r, CLOSE_WAIT_MS).unref())]);
    const l = this.listener;
    this.listener = null;
    const ended = Promise.all([
      l?.end().catch(() => undefined),
      this.connecting?.end().catch(() => undefined),
      this.pool.end().catch(() => undefined),
    ]);
    // Ending a connection waits for the database to close its side: one that does not answer never does.
    const late = new Promise<'late'>((r) => setTimeout(() => r('late'), CLOSE_WAIT_MS).unref());
    if ((await Promise.race([ended, late])) === 'late') for (const s of this.sockets) s.destroy();
    await ended;
  }

  // --- batching: one transaction, one round trip, for what arrived meanwhile; several under way at once ---

  private submit(op: Op): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      try {
        this.gate();
      } catch (err) {
        reject(err);
        return;
      }
      this.queue.push({ op, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.closed) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  /**
   * Send what arrived as one batch, once the calls expected to join it have (see Gathering: the nodes one batch
   * answered call again together, and a batch costs the database about as much for one call as for several). Up to
   * maxInFlight batches are under way at once on as many connections: their commits share WAL flushes. With all of
   * them under way, the calls arriving meanwhile gather for the next.
   */
  private readonly flush = (): void => {
    this.scheduled = false;
    if (!this.canSend()) return;
    const wait = this.gathering.left(this.queue.length);
    if (wait > 0) {
      // Each call arriving meanwhile looks again (schedule()); the timer ends the wait when not all of them come.
      this.gatherTimer ??= setTimeout(this.gathered, wait);
      return;
    }
    this.send();
  };

  /** Calls are waiting, a connection is free for them, and the store is open. */
  private canSend(): boolean {
    return this.inFlight < this.maxInFlight && this.queue.length > 0 && !this.closed;
  }

  private readonly gathered = (): void => {
    this.gatherTimer = undefined;
    this.send();
  };

  private send(): void {
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    if (!this.canSend()) return;
    this.gathering.started();
    const batch = this.queue.splice(0);
    const started = performance.now();
    this.inFlight++;
    void this.execute(batch)
      .then((committed) => {
        // A failed batch's duration (a connect timeout, an outage) says nothing of the next one's, and its callers
        // do not come back together.
        if (committed) this.gathering.ended(performance.now() - started, batch.length, this.queue.length);
      })
      .finally(() => {
        this.inFlight--;
        this.emit('batch', batch.length);
        this.schedule();
      });
  }

  /** True when the batch committed as one transaction. */
  private async execute(batch: Pending[], tries = 1): Promise<boolean> {
    let results: Record<string, unknown>[];
    try {
      results = await this.transaction(batch.map((p) => p.op));
    } catch (err) {
      // Rolled back by another server's transaction, so worth trying again: a deadlock or serialisation failure, or
      // a unique violation (23505), which only the one-live-binding-per-node index can raise (every other insert
      // has ON CONFLICT): another server bound the same node meanwhile, and the retry renews that binding.
      if (/^(40|23505)/.test((err as { code?: string }).code ?? '') && tries < MAX_TRIES)
        return this.execute(batch, tries + 1);
      if (batch.length > 1 && !isOutage(err)) {
        // One operation failed the batch (it is all rolled back): run each alone, so it fails only itself.
        for (const p of batch) await this.execute([p]);
        return false;
      }
      if (isOutage(err)) this.down(err);
      for (const p of batch) p.reject(new StoreUnavailable(err));
      return false;
    }
    if (!this.up) this.recovered();
    batch.forEach((p, i) => p.resolve(results[i]));
    return true;
  }

  private async transaction(ops: Op[]): Promise<Record<string, unknown>[]> {
    // One round trip: the whole batch is one statement (prepared once per connection), its own transaction,
    // committed (flushed) before the answer comes.
    const c = await this.pool.connect();
    let r: pg.QueryResult;
    try {
      r = await c.query(this.timed(BATCH_SQL, batchValues(this.opts.clock?.() ?? null, ops), BATCH_NAME));
    } catch (err) {
      // The database's error rolled the statement's transaction back and left the session in step, unless it was
      // about the prepared statement itself (gone behind a pooler, or its result type changed by another server's
      // upgrade): the next connection prepares it afresh. Any other error (a timeout, a broken connection) leaves the
      // session out of step: drop it (the database rolls back what it has not committed).
      c.release(
        fromDatabase(err) && !STALE_STATEMENT.test((err as { code: string }).code) ? undefined : (err as Error),
      );
      throw err;
    }
    c.release();
    this.numberSoon();
    return r.rows;
  }

  /**
   * Account for a numbering pass: its last number, or why it failed (logged once, by the daemon, until one succeeds).
   */
  private passed(seq: string | null, error: string | null): void {
    if (error === null) {
      this.advance(Number(seq));
      if (!this.numberingOk) {
        this.numberingOk = true;
        this.emit('numbering', { ok: true });
      }
      return;
    }
    this.numberingFailures++;
    if (this.numberingOk) {
      this.numberingOk = false;
      this.emit('numbering', { ok: false, reason: error });
    }
  }

  /**
   * A numbering pass for what this server committed: at once when the last one began NUMBER_MS ago or more, else
   * then; with a pass under way, after it.
   */
  private numberSoon(): void {
    this.owed = true;
    if (this.passTimer || this.passing || this.closed) return;
    this.passTimer = setTimeout(this.pass, Math.max(0, this.lastPass + NUMBER_MS - performance.now()));
  }

  private readonly pass = (): void => {
    this.passTimer = undefined;
    this.owed = false;
    this.lastPass = performance.now();
    this.passing = this.number(this.lastPass).finally(() => {
      this.passing = undefined;
      if (this.owed) this.numberSoon();
    });
  };

  /** One pass (it numbers every server's committed rows, and its NOTIFY wakes every server's long-polls). */
  private async number(began: number): Promise<void> {
    try {
      const r = await this.pool.query<{ seq: string }>(
        this.timed('SELECT dstm_number($1, true) AS seq', [NUMBER_BATCH]),
      );
      this.lastGoodPass = began;
      this.passed(r.rows[0].seq, null);
    } catch (err) {
      // The rows wait for the next pass (a later batch's, or the idle timer's); a lost connection is the calls' to
      // report, not a right missing on the numbering's own tables (the lease calls may well succeed).
      if (!isConnectionLoss(err)) this.passed(null, describe(err));
    }
  }

  /**
   * Resolves once a numbering pass that began after every batch this server has committed so far is over: its changes
   * are in the feed, unless the pass failed.
   */
  async settled(): Promise<void> {
    await this.passing;
    if (!this.owed) return;
    clearTimeout(this.passTimer);
    this.pass();
    await this.passing;
  }

  /** The safety net: a pass when none succeeded for NUMBER_IDLE_MS. */
  private numberIfIdle(): void {
    if (!this.up || this.closed || this.passing || this.passTimer) return;
    if (performance.now() - this.lastGoodPass >= NUMBER_IDLE_MS) this.pass();
  }
}

/**
 * A batch's statement: its clock t (the database's unless fixed), then dstm_run() over its operations as arrays. Each
 * grant's duration is cut to MAX_LEASE_TIME - t here, with t passed on as dstm_run's clock: no lease ends past what
 * the wire carries, with schema 4's functions as they are.
 */
const BATCH_NAME = `dstm_run_${PG_SCHEMA_VERSION}`;
const BATCH_SQL = `SELECT r.* FROM (SELECT coalesce($1::bigint, floor(extract(epoch FROM clock_timestamp()))::bigint) AS t) AS c,
  dstm_run(c.t, $2::smallint[], $3::bytea[],
    ARRAY(SELECT CASE WHEN u.k = 0 THEN least(u.n, greatest(0, ${MAX_LEASE_TIME} - c.t)) ELSE u.n END
      FROM unnest($2::smallint[], $4::bigint[]) WITH ORDINALITY AS u(k, n, i) ORDER BY u.i),
    $5::bigint[], $6::bigint[], $7::int[]) AS r`;

/**
 * A prepared statement the connection can no longer use: "cached plan must not change result type" (0A000), "prepared
 * statement does not exist" (26000).
 */
const STALE_STATEMENT = /^(0A000|26000)$/;

/** BATCH_SQL's parameters for `ops`, at the clock `fixed` (null: the database's). */
function batchValues(fixed: number | null, ops: Op[]): unknown[] {
  const kind: number[] = [];
  const ip6: (Buffer | null)[] = [];
  const n: (number | null)[] = [];
  const ip4: (number | null)[] = [];
  const cands: number[] = [];
  const ncands: number[] = [];
  for (const op of ops) {
    switch (op.kind) {
      case 'grant':
        kind.push(0);
        ip6.push(op.grant.ip6);
        n.push(int(op.grant.duration));
        ip4.push(op.grant.only === undefined ? null : int(op.grant.only));
        for (const c of op.cands) cands.push(int(c));
        ncands.push(op.cands.length);
        break;
      case 'release':
      case 'revoke':
        kind.push(op.kind === 'release' ? 1 : 2);
        ip6.push(op.ip6);
        n.push(null);
        ip4.push(int(op.ip4));
        ncands.push(0);
        break;
      case 'sweep':
        kind.push(3);
        ip6.push(null);
        n.push(int(op.hold));
        ip4.push(null);
        ncands.push(0);
        break;
    }
  }
  return [fixed === null ? null : int(fixed), kind, ip6, n, ip4, cands, ncands];
}

function int(n: number): number {
  if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
  return n;
}

function toBinding(r: Record<string, unknown>): Binding {
  return {
    ip4: Number(r.ip4),
    ip6: r.ip6 as Buffer,
    state: Number(r.state) as State,
    starts: Number(r.starts),
    ends: Number(r.ends),
  };
}

function endOutcome(r: Record<string, unknown>): EndOutcome {
  return r.hit ? { binding: toBinding(r), now: Number(r.now) } : { now: Number(r.now) };
}

/** An error of the connection or the database (not a RestoreConflict, StoreInUse or a refused statement). */
function outage(err: unknown): boolean {
  return (err as { code?: string }).code !== undefined && isOutage(err);
}

function describe(err: unknown): string {
  const e = err as { message?: string; code?: string };
  const msg = e?.message || String(err);
  if (e?.code === '28P01' || e?.code === '28000')
    return `${msg} (check the user and password: the URL, PGPASSFILE or PGPASSWORD)`;
  if (e?.code === '42501') return `${msg} (the user needs CREATE on the schema, and rights on the dstm_* tables)`;
  if (e?.code === '3D000') return `${msg} (create the database first)`;
  return msg;
}
