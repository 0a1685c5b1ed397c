// The store conformance suite against both engines: SQLite in a temporary directory, PostgreSQL in a throwaway
// cluster (test/support/postgres.ts), each test on a new database.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PostgresStore } from '../../src/server/postgres-store';
import { SqliteStore } from '../../src/server/sqlite-store';
import { needPostgres, PostgresCluster } from '../support/postgres';
import { storeConformance } from './store-conformance';

const dirs: string[] = [];
storeConformance({
  name: 'sqlite',
  shared: false,
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-store-'));
    dirs.push(dir);
    return async (clock) => new SqliteStore(dir, { clock });
  },
  async tearDown() {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  },
});

let cluster: PostgresCluster | undefined;
storeConformance({
  name: 'postgresql',
  shared: true,
  async setUp(ctx) {
    needPostgres(ctx);
    cluster = await PostgresCluster.start();
  },
  async fresh() {
    const url = await cluster!.createDatabase();
    return (clock) => PostgresStore.open(url, { clock, poolSize: 2 });
  },
  async tearDown() {
    await cluster?.stop();
  },
});
