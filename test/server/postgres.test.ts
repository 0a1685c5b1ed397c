// The PostgreSQL store beyond the conformance suite: its schema, the database's clock, the feed's wake-up across
// servers, outages at start and while running, and `dstm server --store` as real processes sharing one database.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { parsePrefix4 } from '../../src/lib/addr';
import { DstmClient, DstmRefusal } from '../../src/protocol/client';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { RPC_TWO_Client, dstm_status } from '../../src/protocol/generated/dstm';
import { RpcClient } from '../../src/rpc';
import { LeaseService } from '../../src/server/leases';
import { PG_SCHEMA_VERSION, PostgresStore } from '../../src/server/postgres-store';
import type { StoreHealth } from '../../src/server/store';
import { until } from '../support/wait';
import { needPostgres, PostgresCluster } from '../support/postgres';
import { freePort, loopbackAddresses, metricsPortOf, runDstm, sleep, startServer, type ServerProcess } from './helpers';
import { seeded } from '../support/random';
import { node, policy } from './store-conformance';

describe('PostgreSQL store', function () {
  this.timeout(60000);
  let cluster: PostgresCluster;
  const stores: PostgresStore[] = [];
  const open = async (url: string): Promise<PostgresStore> => {
    const s = await PostgresStore.open(url, { poolSize: 2 });
    stores.push(s);
    return s;
  };
  before(async function () {
    needPostgres(this);
    cluster = await PostgresCluster.start();
  });
  after(async () => cluster?.stop());
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
  });

  it('creates its schema with a version, and refuses a newer one naming both versions', async () => {
    const url = await cluster.createDatabase();
    // Three servers starting together on an empty database: the schema is created once, all three open it.
    const [a, b, c] = await Promise.all([open(url), open(url), open(url)]);
    expect(a.epoch).to.equal(b.epoch).and.equal(c.epoch);
    expect((await cluster.sql(url, "SELECT value FROM dstm_meta WHERE key = 'schema_version'")).rows[0].value).to.equal(
      String(PG_SCHEMA_VERSION),
    );
    await cluster.sql(url, "UPDATE dstm_meta SET value = '9' WHERE key = 'schema_version'");
    const err = await PostgresStore.open(url).catch((e: Error) => e);
    expect((err as Error).message).to.match(
      new RegExp(`schema version 9, newer than this dstm's ${PG_SCHEMA_VERSION}`),
    );
  });

  it('migrates a schema 3 database in place, keeping its bindings, feed and epoch; a schema 3 server still runs on it', async () => {
    const url = await cluster.createDatabase();
    const first = await open(url);
    const a = await LeaseService.open(first, policy());
    const g1 = await a.request(node(1), 0, 0);
    const g2 = await a.request(node(2), 0, 0);
    await a.release(node(2), g2.ip4);
    await first.settled();
    const before = (await first.feedSince(0, 10)).changes;
    const epoch = first.epoch;
    await stores.splice(0).pop()!.close();
    // What schema 3 had: the same tables and functions, but not dstm_run().
    await cluster.sql(url, "DROP FUNCTION dstm_run; UPDATE dstm_meta SET value = '3' WHERE key = 'schema_version'");
    const second = await open(url);
    expect((await cluster.sql(url, "SELECT value FROM dstm_meta WHERE key = 'schema_version'")).rows[0].value).to.equal(
      String(PG_SCHEMA_VERSION),
    );
    expect(second.epoch).to.equal(epoch);
    expect((await second.feedSince(0, 10)).changes).to.deep.equal(before);
    const b = await LeaseService.open(second, policy());
    expect(await b.request(node(1), 0, 0)).to.include({ status: 'ok', ip4: g1.ip4 });
    // A schema 3 server's batch (dstm_batch) during a rolling upgrade: node 3 bound, its change in the feed.
    const three = await cluster.sql(
      url,
      `BEGIN; SELECT * FROM dstm_batch(NULL, ARRAY[0]::smallint[], ARRAY['\\x20010db8000000000000000000000003'::bytea],
         ARRAY[60]::bigint[], ARRAY[NULL]::bigint[], ARRAY[3221225990]::bigint[], ARRAY[1]::int[]); COMMIT;
       SELECT * FROM dstm_number_after(10000, true)`,
    );
    expect((three as unknown as { rows: Record<string, unknown>[] }[])[1].rows[0]).to.include({ kind: 'bound' });
    const feed = (await second.feedSince(0, 10)).changes;
    expect(feed.map((c) => c.ip6.toString('hex'))).to.include('20010db8000000000000000000000003');
    expect((await b.request(node(3), 0, 0)).status).to.equal('ok');
  });

  it('names the problem when the database does not exist, and never shows the password', async () => {
    const missing = await PostgresStore.open(`postgresql://postgres:s3cret@[::1]:${cluster.port}/no_such_db`).catch(
      (e: Error) => e,
    );
    expect((missing as Error).message)
      .to.match(/does not exist/)
      .and.not.match(/s3cret/);
    expect((missing as Error).message).to.contain('postgres:***@');
  });

  it('takes the password from the URL, PGPASSWORD or PGPASSFILE; a wrong one is named as such and never shown', async () => {
    const role = `dstm_pw_${process.pid}`;
    const password = `pw-${process.pid}`;
    const url = await cluster.passwordDatabase(role, password);
    const withPassword = url.replace(`${role}@`, `${role}:${password}@`);
    const env = { PGPASSWORD: process.env.PGPASSWORD, PGPASSFILE: process.env.PGPASSFILE };
    const warnings: string[] = [];
    const onWarning = (w: Error): number => warnings.push(w.message);
    process.on('warning', onWarning);
    const dir = mkdtempSync(join(tmpdir(), 'dstm-pgpass-'));
    try {
      await (await open(withPassword)).close();
      process.env.PGPASSWORD = password;
      await (await open(url)).close();
      delete process.env.PGPASSWORD;
      const pgpass = join(dir, 'pgpass');
      writeFileSync(pgpass, `*:*:*:${role}:${password}\n`, { mode: 0o600 });
      process.env.PGPASSFILE = pgpass;
      await (await open(url)).close();
      // None anywhere: named as such (node-postgres alone said "client password must be a string")
      process.env.PGPASSFILE = join(dir, 'none');
      const none = await PostgresStore.open(url).catch((e: Error) => e);
      expect((none as Error).message).to.match(
        new RegExp(`asks for a password and none is given: .* no line for ::1:\\d+:\\w+:${role} in ${dir}/none`),
      );
      delete process.env.PGPASSFILE;
      const wrong = await PostgresStore.open(url.replace(`${role}@`, `${role}:not-${password}@`)).catch(
        (e: Error) => e,
      );
      expect((wrong as Error).message)
        .to.match(/password authentication failed .*check the user and password: the URL, PGPASSFILE or PGPASSWORD/)
        .and.not.contain(`not-${password}`);
      // node-postgres's own PGPASSFILE lookup is deprecated (a warning, and gone in pg 9): dstm reads the file itself
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => /pgpass/.test(w))).to.deep.equal([]);
    } finally {
      process.off('warning', onWarning);
      for (const [k, v] of Object.entries(env))
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs as a user without CREATE on a schema in place; a user who cannot create or upgrade it is told what it needs', async () => {
    const url = await cluster.createDatabase();
    await (await open(url)).close();
    const role = `dstm_app_${process.pid}`;
    await cluster.sql(
      url,
      `CREATE ROLE ${role} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`,
    );
    const asApp = url.replace('postgresql://postgres@', `postgresql://${role}@`);
    const svc = await LeaseService.open(await open(asApp), policy());
    expect((await svc.request(node(1), 0, 0)).status).to.equal('ok');
    const empty = (await cluster.createDatabase()).replace('postgresql://postgres@', `postgresql://${role}@`);
    const err = await PostgresStore.open(empty).catch((e: Error) => e);
    expect((err as Error).message).to.match(/permission denied.*needs CREATE on the schema/);
    // An older schema: only the tables' owner may upgrade it, and the error says so.
    await cluster.sql(url, "UPDATE dstm_meta SET value = '3' WHERE key = 'schema_version'");
    const old = await PostgresStore.open(asApp).catch((e: Error) => e);
    expect((old as Error).message).to.match(
      new RegExp(
        `schema version 3 and this dstm needs ${PG_SCHEMA_VERSION}: .* owner of the dstm_\\* tables.*\\((permission denied|must be owner)`,
      ),
    );
    await (await open(url)).close();
    expect((await cluster.sql(url, "SELECT value FROM dstm_meta WHERE key = 'schema_version'")).rows[0].value).to.equal(
      String(PG_SCHEMA_VERSION),
    );
  });

  it('refuses to start on a read-only database or as a role without rights; rights revoked while running: down until granted again', async () => {
    const url = await cluster.createDatabase();
    await (await open(url)).close();
    const db = new URL(url).pathname.slice(1);
    await cluster.sql(cluster.url(), `ALTER DATABASE ${db} SET default_transaction_read_only = on`);
    const ro = await PostgresStore.open(url).catch((e: Error) => e);
    expect((ro as Error).message).to.match(/read-only for this role/);
    await cluster.sql(cluster.url(), `ALTER DATABASE ${db} RESET default_transaction_read_only`);
    const role = `dstm_ro_${process.pid}`;
    await cluster.sql(url, `CREATE ROLE ${role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`);
    const asRole = url.replace('postgresql://postgres@', `postgresql://${role}@`);
    const denied = await PostgresStore.open(asRole).catch((e: Error) => e);
    expect((denied as Error).message).to.match(
      new RegExp(`the role ${role} lacks INSERT on dstm_bindings, .*: grant it SELECT, INSERT, UPDATE and DELETE`),
    );
    await cluster.sql(url, `GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`);
    const store = await open(asRole);
    const svc = await LeaseService.open(store, policy());
    const health: StoreHealth[] = [];
    store.on('health', (h) => health.push(h));
    const g = await svc.request(node(1), 0, 0);
    await cluster.sql(url, `REVOKE UPDATE ON dstm_bindings FROM ${role}`);
    expect(await svc.request(node(1), 0, 0).catch((e: Error) => e.name)).to.equal('StoreUnavailable');
    expect(store.health()).to.deep.include({ ok: false });
    // The probe finds the right still missing: no "available again" meanwhile, even with reads succeeding.
    await sleep(1500);
    await store.feedSince(0, 10).catch(() => undefined);
    expect(health.map((h) => h.ok)).to.deep.equal([false]);
    expect(health[0].reason).to.match(/permission denied for table dstm_bindings/);
    await cluster.sql(url, `GRANT UPDATE ON dstm_bindings TO ${role}`);
    const deadline = Date.now() + 5000;
    while (!store.health().ok) {
      expect(Date.now(), 'never available again').to.be.below(deadline);
      await sleep(100);
    }
    expect(health.map((h) => h.ok)).to.deep.equal([false, true]);
    expect(await svc.request(node(1), 0, 0)).to.include({ status: 'ok', ip4: g.ip4 });
  });

  it("commits with synchronous_commit=on whatever the database default or the URL's options say; keeps the URL's other options", async () => {
    const url = await cluster.createDatabase();
    await cluster.sql(url, `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET synchronous_commit = off`);
    const own = encodeURIComponent('-c synchronous_commit=off -c statement_timeout=4321');
    const store = await open(`${url}?options=${own}`);
    // The store's own sessions (its pool), not a new one: those are what answer the nodes.
    const pool = (store as unknown as { pool: { query(q: string): Promise<{ rows: Record<string, string>[] }> } }).pool;
    expect((await pool.query('SHOW synchronous_commit')).rows[0].synchronous_commit).to.equal('on');
    expect((await pool.query('SHOW statement_timeout')).rows[0].statement_timeout).to.equal('4321ms');
    expect((await cluster.sql(url, 'SHOW synchronous_commit')).rows[0].synchronous_commit).to.equal('off');
  });

  it('binds the right node on a database with standard_conforming_strings off (the batch literals escape alike)', async () => {
    const url = await cluster.createDatabase();
    await cluster.sql(url, `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET standard_conforming_strings = off`);
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    const g = await svc.request(node(0xab), 0, 0);
    expect(g.status).to.equal('ok');
    const row = (await cluster.sql(url, `SELECT encode(ip6, 'hex') AS ip6 FROM dstm_bindings WHERE ip4 = ${g.ip4}`))
      .rows[0];
    expect(row.ip6).to.equal(node(0xab).toString('hex'));
  });

  it('takes lease times from the database clock, not the process clock', async () => {
    const url = await cluster.createDatabase();
    const svc = await LeaseService.open(await open(url), policy());
    // The database runs on this host: only a process clock an hour ahead tells the two clocks apart.
    const real = Date.now;
    Date.now = () => real() + 3_600_000;
    let g: Awaited<ReturnType<LeaseService['request']>>;
    try {
      g = await svc.request(node(1), 0, 0);
    } finally {
      Date.now = real;
    }
    const db = Number((await cluster.sql(url, 'SELECT floor(extract(epoch FROM clock_timestamp())) AS t')).rows[0].t);
    expect(Math.abs(g.starts - db)).to.be.at.most(1);
    expect(g.ends - g.starts).to.equal(60);
  });

  it('waits for the calls a batch answered to come back, and sends them as one batch; sends fewer when not all come', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    const nodes = [1, 2, 3, 4].map(node);
    await Promise.all(nodes.map((n) => svc.request(n, 0, 0)));
    const batches: number[] = [];
    store.on('batch', (n: number) => batches.push(n));
    // A slow batch (another session holds a row it renews) makes the wait for the next calls long (a fraction of a
    // batch's usual duration), so that this test does not depend on how fast the machine is.
    const locker = new pg.Client(url);
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('SELECT 1 FROM dstm_bindings WHERE ip6 = $1 FOR UPDATE', [nodes[0]]);
    const renewals = Promise.all(nodes.map((n) => svc.request(n, 0, 0)));
    await sleep(300);
    await locker.query('COMMIT');
    await locker.end();
    await renewals;
    expect(batches).to.deep.equal([4]);
    // Three come back, then a turn of the event loop later the fourth: one batch. Sent at once, they would be 3 and 1.
    const first = nodes.slice(0, 3).map((n) => svc.release(n, 0));
    await new Promise((r) => setImmediate(r));
    await Promise.all([...first, svc.release(nodes[3], 0)]);
    expect(batches).to.deep.equal([4, 4]);
    // Only three of the four come back: they are sent when the wait is over, not kept.
    const three = await Promise.all(nodes.slice(0, 3).map((n) => svc.request(n, 0, 0)));
    expect(three.map((g) => g.status)).to.deep.equal(['ok', 'ok', 'ok']);
    expect(batches).to.deep.equal([4, 4, 3]);
  });

  it('numbers a lone change at once, and under load at most one pass per 10 ms for all the batches meanwhile', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy({ pools: [parsePrefix4('10.93.0.0/24')] }));
    const since = store.lastSeq;
    await svc.request(node(1), 0, 0);
    const t0 = performance.now();
    await svc.waitForChange(since, 5000);
    expect(performance.now() - t0, 'not left to the once-a-second pass').to.be.below(500);
    // Calls one after another, each its own batch: their changes are numbered a pass per 10 ms, not one per batch.
    let passes = 0;
    store.on('change', () => passes++);
    const t1 = performance.now();
    for (let i = 0; i < 200; i++) await svc.request(node(2 + (i % 50)), 0, 0);
    const ms = performance.now() - t1;
    await store.settled();
    expect(passes)
      .to.be.at.least(1)
      .and.at.most(Math.ceil(ms / 10) + 2);
    const feed = await svc.changes(0, 100);
    expect(feed.changes.filter((c) => c.active)).to.have.length(51);
  });

  it('wakes a long-poll on another server (LISTEN/NOTIFY), and re-reads the feed after its LISTEN connection is lost', async () => {
    const url = await cluster.createDatabase();
    const a = await LeaseService.open(await open(url), policy());
    const b = await LeaseService.open(await open(url), policy());
    const since = b.lastSeq;
    const t0 = Date.now();
    const woke = b.waitForChange(since, 10_000);
    await a.request(node(1), 0, 0);
    await woke;
    expect(Date.now() - t0).to.be.below(2000);
    expect((await b.changes(since, 10)).changes.map((c) => c.ip6)).to.deep.equal([node(1)]);
    // Cut every LISTEN connection; a change made meanwhile still reaches b once it listens again.
    await cluster.sql(
      url,
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dstm-server-listen'",
    );
    const seq = b.lastSeq;
    await a.request(node(2), 0, 0);
    await b.waitForChange(seq, 10_000);
    expect(b.lastSeq).to.be.above(seq);
    expect((await b.changes(seq, 10)).changes.map((c) => c.ip6)).to.deep.equal([node(2)]);
  });

  it('takes the addresses another server binds out of its pool hint, from the feed', async () => {
    const url = await cluster.createDatabase();
    const a = await LeaseService.open(await open(url), policy());
    const b = await LeaseService.open(await open(url), policy());
    expect(b.available).to.equal(6);
    const got = await Promise.all([1, 2, 3].map((n) => a.request(node(n), 0, 0)));
    const deadline = Date.now() + 5000;
    while (b.available > 3) {
      expect(Date.now(), "b never learned of a's bindings").to.be.below(deadline);
      await sleep(50);
    }
    expect(b.available).to.equal(3);
    // So b offers free ones first: its next grant is none of a's.
    expect(got.map((g) => g.ip4)).to.not.include((await b.request(node(9), 0, 0)).ip4);
  });

  it('one node asking two servers at once (a client failing over) gets one binding from both, never UNAVAILABLE', async () => {
    const url = await cluster.createDatabase();
    const wide = policy({ pools: [parsePrefix4('10.9.0.0/24')] });
    const a = await LeaseService.open(await open(url), wide);
    const b = await LeaseService.open(await open(url), wide);
    for (let round = 0; round < 20; round++) {
      // A node new to both: each server's transaction inserts a binding for it, and the second meets the first at
      // the one-live-binding-per-node index.
      const n = node(0x100 + round);
      const [x, y] = await Promise.all([a.request(n, 0, 0), b.request(n, 0, 0)]);
      expect([x.status, y.status]).to.deep.equal(['ok', 'ok']);
      expect(x.ip4).to.equal(y.ip4);
    }
  });

  it('PostgreSQL lost while running: calls answered UNAVAILABLE at once, reconnect with backoff, nothing acknowledged lost', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    const health: StoreHealth[] = [];
    store.on('health', (h) => health.push(h));
    const acked = await Promise.all([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
    await cluster.stopServer('immediate');
    try {
      const t0 = Date.now();
      const down = await Promise.allSettled([4, 5].map((n) => svc.request(node(n), 0, 0)));
      expect(down.map((r) => r.status)).to.deep.equal(['rejected', 'rejected']);
      expect((down[0] as PromiseRejectedResult).reason.name).to.equal('StoreUnavailable');
      expect(Date.now() - t0).to.be.below(6000);
      // While down, calls fail at once (no connect per call), and the outage was reported once.
      const t1 = Date.now();
      expect(await svc.request(node(6), 0, 0).catch((e: Error) => e.name)).to.equal('StoreUnavailable');
      expect(Date.now() - t1).to.be.below(500);
      expect(health.filter((h) => !h.ok)).to.have.length(1);
      expect(store.health().ok).to.equal(false);
    } finally {
      await cluster.startServer();
    }
    // Back: within the backoff, calls succeed again and every acknowledged grant is there.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await svc.request(node(1), 0, 0).catch((e: Error) => e);
      if (!(r instanceof Error)) {
        expect(r.ip4).to.equal(acked[0].ip4);
        break;
      }
      expect(Date.now(), 'the store never came back').to.be.below(deadline);
      await sleep(200);
    }
    const rows = await store.list(-1, 100);
    for (const g of acked) expect(rows.find((b) => b.ip4 === g.ip4)!.ip6.equals(g.ip6)).to.equal(true);
    await sleep(1000);
    expect(health[health.length - 1].ok).to.equal(true);
  });

  it('a policy reloaded while PostgreSQL is down takes effect at once; its pool is read from the store once it is back', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    const held = await Promise.all([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
    expect(svc.available).to.equal(3);
    await cluster.stopServer('immediate');
    try {
      expect(await svc.request(node(4), 0, 0).catch((e: Error) => e.name)).to.equal('StoreUnavailable');
      await svc.configure(policy({ lease: 120 }));
      expect(svc.poolKnown).to.equal(false);
    } finally {
      await cluster.startServer();
    }
    await until('the pool is read from the store', () => svc.poolKnown && svc.available === 3, 15_000);
    const g = await svc.request(node(5), 0, 0);
    expect(g.ends - g.starts).to.equal(120);
    expect(held.map((h) => h.ip4)).to.not.include(g.ip4);
  });

  it('a database that stops answering (no reset, as a vanished host): calls answered UNAVAILABLE after the query timeout, served again once it answers, close() does not hang', async () => {
    const url = await cluster.createDatabase();
    const store = await PostgresStore.open(url, { poolSize: 2, queryTimeoutMs: 500 });
    stores.push(store);
    const svc = await LeaseService.open(store, policy());
    const acked = await svc.request(node(1), 0, 0);
    const settle = <T>(p: Promise<T>, ms: number): Promise<T | 'pending'> =>
      Promise.race([p, sleep(ms).then(() => 'pending' as const)]);
    cluster.signal('SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await settle(
        svc.request(node(2), 0, 0).catch((e: Error) => e.name),
        5000,
      );
      expect(r, 'a call waits for a database that does not answer').to.equal('StoreUnavailable');
      expect(Date.now() - t0).to.be.within(400, 3000);
      expect(store.health().ok).to.equal(false);
    } finally {
      cluster.signal('SIGCONT');
    }
    await until(
      'the store serves again',
      async () => !((await svc.request(node(1), 0, 0).catch((e: Error) => e)) instanceof Error),
      15_000,
    );
    expect((await svc.request(node(1), 0, 0)).ip4).to.equal(acked.ip4);
    expect(store.health().ok).to.equal(true);
    // Stopping while the database does not answer: bounded, and the store's connections are gone.
    cluster.signal('SIGSTOP');
    try {
      const t0 = Date.now();
      expect(await settle(store.close(), 10_000)).to.not.equal('pending');
      expect(Date.now() - t0).to.be.below(8000);
    } finally {
      cluster.signal('SIGCONT');
    }
    const db = new URL(url).pathname.slice(1);
    await until('the database sees the store disconnected', async () => {
      const r = await cluster.sql(cluster.url(), `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '${db}'`);
      return Number(r.rows[0].n) === 0;
    });
  });

  it('a metrics read (counts) that times out does not mark the store down: the lease calls judge its health', async () => {
    const url = await cluster.createDatabase();
    const store = await PostgresStore.open(url, { poolSize: 2, queryTimeoutMs: 300 });
    stores.push(store);
    const health: StoreHealth[] = [];
    store.on('health', (h) => health.push(h));
    cluster.signal('SIGSTOP');
    try {
      expect(await store.counts().catch((e: Error) => e.name)).to.equal('StoreUnavailable');
      expect(store.health().ok).to.equal(true);
      expect(health).to.deep.equal([]);
    } finally {
      cluster.signal('SIGCONT');
    }
    expect((await store.counts()).active).to.equal(0);
  });

  it('feed reads for one position share one query, unless a change was learnt after it began', async () => {
    const url = await cluster.createDatabase();
    const writer = await open(url);
    const bound = await (await LeaseService.open(writer, policy())).request(node(1), 0, 0);
    await writer.settled();
    // A store that only reads (a LeaseService reads the feed for its pool hint too), under a name of its own.
    const store = await PostgresStore.open(url, { poolSize: 4, applicationName: 'dstm-reader' });
    stores.push(store);
    // Reads wait behind a lock, so that those under way at once can be counted in the database.
    const locker = new pg.Client({ connectionString: url });
    await locker.connect();
    const waiting = async (): Promise<number> =>
      Number(
        (
          await cluster.sql(
            url,
            // (the feed read's query: a numbering pass may wait for the lock too)
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'dstm-reader' AND wait_event_type = 'Lock' AND query LIKE '%dstm_feed_gaps%'",
          )
        ).rows[0].n,
      );
    try {
      await locker.query('BEGIN; LOCK TABLE dstm_feed IN ACCESS EXCLUSIVE MODE');
      const together = Array.from({ length: 10 }, () => store.feedSince(0, 100));
      await until('a read waits for the lock', async () => (await waiting()) >= 1);
      await sleep(300);
      expect(await waiting(), 'queries for 10 reads of one position').to.equal(1);
      // A change learnt meanwhile (a NOTIFY): a read after it does not take the answer of one that began before.
      const seq = store.lastSeq;
      await cluster.sql(url, `SELECT pg_notify('dstm_feed', '${seq + 1}')`);
      await until('the NOTIFY arrives', async () => store.lastSeq > seq);
      const after = store.feedSince(0, 100);
      await until('the later read waits too', async () => (await waiting()) === 2);
      await locker.query('COMMIT');
      const pages = await Promise.all([...together, after]);
      for (const p of pages) expect(p).to.deep.equal(pages[0]);
      expect(pages[0].changes.map((c) => c.ip4)).to.deep.equal([bound.ip4]);
    } finally {
      await locker.end();
    }
  });

  it('a reader polling while three servers commit at once ends with the whole state: numbers never show out of order', async () => {
    const url = await cluster.createDatabase();
    const p = policy({ pools: [parsePrefix4('10.92.0.0/24')], hold: 0 });
    const servers = await Promise.all([1, 2, 3].map(async () => LeaseService.open(await open(url), p)));
    const reader = await open(url);
    const rnd = seeded(7);
    // What the reader holds, address -> node (active bindings only), following the feed as a TEP does.
    const seen = new Map<number, string>();
    let since = 0;
    let reads = 0;
    const poll = async (): Promise<void> => {
      for (let more = true; more;) {
        const page = await reader.feedSince(since, 50);
        expect(since, 'a reader told to start over').to.be.at.most(page.last);
        for (const c of page.changes) {
          expect(c.seq, 'numbers in increasing order').to.be.above(since);
          since = c.seq;
          if (c.active) seen.set(c.ip4, c.ip6.toString('hex'));
          else seen.delete(c.ip4);
        }
        more = page.more;
        reads++;
      }
    };
    let writing = true;
    const polling = (async () => {
      while (writing) await poll();
    })();
    // Rounds of requests and releases of 40 nodes on all servers at once, each node on a random server.
    for (let round = 0; round < 40; round++) {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => {
          const s = servers[Math.floor(rnd() * 3)];
          return rnd() < 0.4 ? s.release(node(i + 1), 0) : s.request(node(i + 1), 0, 0);
        }),
      );
    }
    writing = false;
    await polling;
    await Promise.all(stores.map((s) => s.settled()));
    await poll();
    expect(reads).to.be.above(30);
    const active = (await reader.list(-1, 1000)).filter((b) => b.state === 0);
    expect([...seen.entries()].sort()).to.deep.equal(active.map((b) => [b.ip4, b.ip6.toString('hex')]).sort());
  });

  it('numbers a crash lost are given again above every number handed out, and a reader among them starts over', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    await Promise.all([1, 2, 3].map((n) => svc.request(node(n), 0, 0)));
    await store.settled();
    const last = store.lastSeq;
    expect(last).to.equal(3);
    // A numbering pass lost with the crash (it commits without waiting for the flush): its rows are unnumbered again.
    await cluster.sql(url, `UPDATE dstm_feed SET seq = NULL WHERE seq = ${last}`);
    await cluster.restart('immediate');
    const deadline = Date.now() + 15_000;
    while ((await svc.request(node(4), 0, 0).catch((e: Error) => e)) instanceof Error) {
      expect(Date.now(), 'the store never came back').to.be.below(deadline);
      await sleep(100);
    }
    await store.settled();
    const feed = await svc.changes(0, 10);
    const seqs = feed.changes.map((c) => c.seq);
    expect(seqs.slice(0, 2)).to.deep.equal([1, 2]);
    // Renumbered above the reservation, so above the lost number that a reader may hold.
    expect(seqs.slice(2).every((q) => q > last)).to.equal(true);
    expect(feed.changes).to.have.length(4);
    expect((await svc.changes(last, 10)).reset, 'a reader holding a lost number').to.equal(true);
    const before = await svc.changes(last - 1, 10);
    expect(before.reset).to.equal(false);
    expect(before.changes).to.have.length(2);
  });

  it('counts failed numbering passes, reports them once until a pass succeeds, and a later pass numbers their changes', async () => {
    const url = await cluster.createDatabase();
    const store = await open(url);
    const svc = await LeaseService.open(store, policy());
    const events: StoreHealth[] = [];
    store.on('numbering', (h: StoreHealth) => events.push(h));
    await svc.request(node(1), 0, 0);
    await store.settled();
    expect(store.numberingFailures).to.equal(0);
    // The lease transactions commit; their passes fail (the counter they read is gone).
    await cluster.sql(url, 'ALTER TABLE dstm_counter RENAME TO dstm_counter_away');
    for (const n of [2, 3]) {
      await svc.request(node(n), 0, 0);
      await store.settled();
    }
    expect(store.numberingFailures).to.be.at.least(2);
    expect(events).to.have.length(1);
    expect(events[0].ok).to.equal(false);
    expect(events[0].reason).to.match(/dstm_counter/);
    await cluster.sql(url, 'ALTER TABLE dstm_counter_away RENAME TO dstm_counter');
    await svc.request(node(4), 0, 0);
    await store.settled();
    expect(events.map((e) => e.ok)).to.deep.equal([false, true]);
    expect((await svc.changes(0, 10)).changes.map((c) => c.seq)).to.deep.equal([1, 2, 3, 4]);
    // A right revoked on the numbering's own table (lease calls still commit): counted and reported alike.
    const role = `dstm_num_${process.pid}`;
    await cluster.sql(url, `CREATE ROLE ${role} LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}`);
    const asRole = await open(url.replace('postgresql://postgres@', `postgresql://${role}@`));
    const svc2 = await LeaseService.open(asRole, policy());
    const failed = asRole.numberingFailures;
    await cluster.sql(url, `REVOKE UPDATE ON dstm_counter FROM ${role}`);
    await svc2.request(node(5), 0, 0);
    await asRole.settled();
    expect(asRole.numberingFailures).to.be.above(failed);
  });

  describe('dstm server --store postgresql://', () => {
    let lo: ReturnType<typeof loopbackAddresses>;
    const servers: ServerProcess[] = [];
    const clients: DstmClient[] = [];
    before(() => {
      lo = loopbackAddresses(4);
    });
    after(() => lo?.remove());
    afterEach(async () => {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await Promise.all(servers.splice(0).map((s) => s.stop('SIGKILL')));
    });

    it('PostgreSQL unreachable at start: a clear error naming the store without its password, exit 3; --check shows no password', async () => {
      const url = `postgresql://dstm:s3cret@[::1]:${await freePort()}/dstm`; // nothing listens there
      const r = await runDstm(['server', '--listen', `[::1]:${await freePort()}`, '--store', url]);
      expect(r.code).to.equal(3);
      expect(r.stderr).to.match(
        /cannot start: PostgreSQL store postgresql:\/\/dstm:\*\*\*@\[::1\]:\d+\/dstm: .*ECONNREFUSED/,
      );
      expect(r.stderr).to.not.contain('s3cret');
      const check = await runDstm(['server', '--store', url, '--check']);
      expect(check.code).to.equal(0);
      expect(JSON.parse(check.stdout).server.store).to.equal(url.replace('s3cret', '***'));
      const bad = await runDstm(['server', '--store', 'mysql://u:s3cret@h/db', '--check']);
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.contain('--store').and.not.contain('s3cret');
    });

    it('survives a PostgreSQL crash under load (batches under way), answers UNAVAILABLE meanwhile (counted, logged once), then serves again', async () => {
      const url = await cluster.createDatabase();
      const s = await startServer(['--store', url, '--pool', '10.93.0.0/24', '--metrics', '[::1]:0']);
      servers.push(s);
      const metricsPort = await metricsPortOf(s);
      const nodes = await Promise.all(
        lo.addresses.map(async (local) => {
          const c = await DstmClient.connect({
            host: '::1',
            port: s.port,
            program: DEFAULT_PROGRAM,
            local,
            timeoutMs: 700,
          });
          clients.push(c);
          return c;
        }),
      );
      let stop = false;
      const outcomes: string[] = [];
      const loops = nodes.map(async (c) => {
        while (!stop) {
          const r = await c
            .request()
            .then(() => c.release())
            .then(
              () => 'ok',
              (e: unknown) => (e instanceof DstmRefusal ? e.status : String(e)),
            );
          outcomes.push(r);
          if (r !== 'ok') await sleep(5);
        }
      });
      await sleep(1000);
      await cluster.restart('immediate');
      const deadline = Date.now() + 10_000;
      while (outcomes.length < 10 || outcomes.slice(-10).some((o) => o !== 'ok')) {
        expect(Date.now(), 'never served again').to.be.below(deadline);
        await sleep(100);
      }
      stop = true;
      await Promise.all(loops);
      expect(s.proc.exitCode, 'the server exited').to.equal(null);
      expect(new Set(outcomes)).to.include('ok');
      expect([...new Set(outcomes)].filter((o) => o !== 'ok' && o !== 'unavailable')).to.deep.equal([]);
      // Each call answered UNAVAILABLE is in both counters; the log has one line for them, not one each.
      const unavailable = outcomes.filter((o) => o === 'unavailable').length;
      expect(unavailable, 'the crash refused no call').to.be.above(0);
      const text = await (await fetch(`http://[::1]:${metricsPort}/metrics`)).text();
      const series = text.match(/^dstm_server_(?:refusals|operations)_total\{[^}]*\}/gm) ?? [];
      expect(series.length, 'a series twice').to.equal(new Set(series).size);
      const sum = (re: RegExp): number => [...text.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
      expect(
        sum(/^dstm_server_refusals_total\{op="(?:request|release)",reason="unavailable"\} (\d+)$/gm),
      ).to.be.at.least(unavailable);
      expect(
        sum(/^dstm_server_operations_total\{op="(?:request|release)",result="unavailable"\} (\d+)$/gm),
      ).to.be.at.least(unavailable);
      const lines = s.logs.filter((r) => /^(request|release) refused$/.test(String(r.msg)));
      expect(lines).to.have.length(1);
      expect(lines[0]).to.include({ reason: 'unavailable' });
    });

    it('a failing numbering pass: one error-level log line until one succeeds again, each failure counted in metrics', async () => {
      const url = await cluster.createDatabase();
      const server = await startServer(['--store', url, '--pool', '10.92.0.0/29', '--metrics', '[::1]:0']);
      servers.push(server);
      const metricsPort = await metricsPortOf(server);
      const c = await DstmClient.connect({
        host: '::1',
        port: server.port,
        program: DEFAULT_PROGRAM,
        local: lo.addresses[0],
        transport: 'tcp',
      });
      clients.push(c);
      const failures = async (): Promise<number> => {
        const text = await (await fetch(`http://[::1]:${metricsPort}/metrics`)).text();
        const series = text.match(/^dstm_server_(?:refusals|operations)_total\{[^}]*\}/gm) ?? [];
        expect(series.length, 'a series twice').to.equal(new Set(series).size);
        return Number(/^dstm_server_feed_numbering_failures_total (\d+)$/m.exec(text)?.[1]);
      };
      await c.request();
      expect(await failures()).to.equal(0);
      await cluster.sql(url, 'ALTER TABLE dstm_counter RENAME TO dstm_counter_away');
      // Renewals commit (the node keeps its address); the numbering passes that follow them fail.
      await c.request();
      await until('a failed pass', async () => (await failures()) >= 1, 5000);
      await c.request();
      await until('two failed passes', async () => (await failures()) >= 2, 5000);
      await cluster.sql(url, 'ALTER TABLE dstm_counter_away RENAME TO dstm_counter');
      await c.request();
      await server.waitFor('feed numbering passes succeed again');
      const failed = server.logs.filter(
        (r) => r.msg === 'a feed numbering pass failed: changes wait for the next pass',
      );
      expect(failed).to.have.length(1);
      expect(failed[0].level).to.equal('error');
      expect(String(failed[0].why)).to.match(/dstm_counter/);
    });

    it('a held BINDINGS long-poll is answered UNAVAILABLE as soon as the store is found down, so the TEP moves on', async () => {
      const url = await cluster.createDatabase();
      const s = await startServer(['--store', url, '--pool', '10.92.0.0/29']);
      servers.push(s);
      const rpc = await RpcClient.connect({
        host: '::1',
        port: s.port,
        transport: 'tcp',
        program: DEFAULT_PROGRAM,
        version: 2,
        family: 6,
      });
      try {
        const feed = new RPC_TWO_Client(rpc);
        const first = await feed.BINDINGS({ since: 0n, max: 100, wait_ms: 0, epoch: 0n });
        const held = feed.BINDINGS(
          { since: first.next, max: 100, wait_ms: 25_000, epoch: first.epoch },
          { timeoutMs: 30_000 },
        );
        await sleep(300);
        const t0 = Date.now();
        await cluster.stopServer('immediate');
        try {
          // The sweep's read (once a second) finds the store down.
          expect((await held).status).to.equal(dstm_status.DSTM_UNAVAILABLE);
          expect(Date.now() - t0).to.be.below(5000);
        } finally {
          await cluster.startServer();
        }
      } finally {
        await rpc.close();
      }
    });

    it('two servers on one database: a node is served by either, admin LIST and the feed of either show every binding', async () => {
      const url = await cluster.createDatabase();
      const args = ['--store', url, '--pool', '10.91.0.0/29', '--tep', '2001:db8::1,10.91.0.254'];
      const [a, b] = await Promise.all([startServer(args), startServer(args)]);
      servers.push(a, b);
      const client = async (port: number, local: string): Promise<DstmClient> => {
        const c = await DstmClient.connect({ host: '::1', port, program: DEFAULT_PROGRAM, local, transport: 'tcp' });
        clients.push(c);
        return c;
      };
      const [n0a, n0b, n1b] = [
        await client(a.port, lo.addresses[0]),
        await client(b.port, lo.addresses[0]),
        await client(b.port, lo.addresses[1]),
      ];
      const l0 = await n0a.request();
      // The same node through the other server: its binding, renewed.
      const again = await n0b.request();
      expect(again.address).to.equal(l0.address);
      const l1 = await n1b.request();
      expect(l1.address).to.not.equal(l0.address);
      // The feed of server a has b's binding too, in one order.
      const rpc = await RpcClient.connect({
        host: '::1',
        port: a.port,
        transport: 'tcp',
        program: DEFAULT_PROGRAM,
        version: 2,
        family: 6,
      });
      try {
        // Both bindings reach the feed with the numbering passes that follow the calls.
        const read = () => new RPC_TWO_Client(rpc).BINDINGS({ since: 0n, max: 100, wait_ms: 0, epoch: 0n });
        let feed = await read();
        await until('both bindings in the feed', async () => (feed = await read()).changes.length >= 2, 5000);
        expect(feed.status).to.equal(dstm_status.DSTM_OK);
        const seqs = feed.changes.map((c) => Number(c.seq));
        expect(seqs).to.deep.equal([...seqs].sort((x, y) => x - y));
        expect(
          feed.changes
            .filter((c) => c.active)
            .map((c) => [...c.ip4].join('.'))
            .sort(),
        ).to.deep.equal([l0.address, l1.address].sort());
      } finally {
        await rpc.close();
      }
      // Admin LIST through b shows both.
      const admin = await client(b.port, '::1');
      const rows: string[] = [];
      for await (const r of admin.list()) rows.push(r.ipv4);
      expect(rows.sort()).to.deep.equal([l0.address, l1.address].sort());
      // Released through b, it is held: nobody else gets it through a.
      expect((await n1b.release()).address).to.equal(l1.address);
      const others = await Promise.all(lo.addresses.slice(2).map((l) => client(a.port, l)));
      const got = await Promise.all(
        others.map((c) =>
          c.request().then(
            (l) => l.address,
            (e: unknown) => (e instanceof DstmRefusal ? e.status : e),
          ),
        ),
      );
      expect(got).to.not.include(l1.address);
    });
  });
});
