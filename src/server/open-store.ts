// Which store a server uses, from server.store (--store): a postgresql:// URL selects the shared PostgreSQL store;
// nothing, or sqlite:[DIR], the embedded SQLite store in DIR (default: server.state_dir). The URL was checked by
// the configuration schema.
import { PostgresStore } from './postgres-store';
import { SqliteStore } from './sqlite-store';
import { makeStateDir } from './state-dir';
import type { Store } from './store';

export interface OpenOptions {
  stateDir: string;
  poolSize: number;
  /** The embedded store's clock, absolute seconds (the PostgreSQL store uses the database's). */
  clock?: () => number;
  /**
   * For dstm leases: "export" reads (a store that must exist, writing nothing), "restore" writes with
   * restore() and is refused (StoreInUse) while a server uses the store.
   */
  tool?: 'export' | 'restore';
}

/** The embedded store's directory, or undefined for PostgreSQL. */
export function sqliteDir(url: string | undefined, stateDir: string): string | undefined {
  if (url !== undefined && !url.startsWith('sqlite:')) return undefined;
  return url?.slice('sqlite:'.length) || stateDir;
}

export async function openStore(url: string | undefined, opts: OpenOptions): Promise<Store> {
  const dir = sqliteDir(url, opts.stateDir);
  if (dir !== undefined) {
    if (opts.tool === 'restore') makeStateDir(dir);
    return new SqliteStore(dir, {
      clock: opts.clock,
      readonly: opts.tool === 'export',
      restore: opts.tool === 'restore',
    });
  }
  return PostgresStore.open(url!, {
    poolSize: opts.poolSize,
    ...(opts.tool ? { applicationName: 'dstm-leases', poolSize: 1, readonly: opts.tool === 'export' } : {}),
  });
}
