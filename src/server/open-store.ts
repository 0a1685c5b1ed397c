// Which store a server uses, from server.store (--store): a postgresql:// URL selects the shared PostgreSQL store;
// nothing, or sqlite:[DIR], the embedded SQLite store in DIR (default: server.state_dir). The URL was checked by
// the configuration schema.
import { PostgresStore } from './postgres-store';
import { SqliteStore } from './sqlite-store';
import type { Store } from './store';

export interface OpenOptions {
  stateDir: string;
  poolSize: number;
  /** The embedded store's clock, absolute seconds (the PostgreSQL store uses the database's). */
  clock?: () => number;
}

export async function openStore(url: string | undefined, opts: OpenOptions): Promise<Store> {
  if (url === undefined || url.startsWith('sqlite:'))
    return new SqliteStore(url?.slice('sqlite:'.length) || opts.stateDir, { clock: opts.clock });
  return PostgresStore.open(url, { poolSize: opts.poolSize });
}
