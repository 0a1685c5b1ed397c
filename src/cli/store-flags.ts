// Flags of the commands that open the server's store themselves instead of calling a server (dstm leases export
// and import, like kea-admin lease-dump): the store is chosen as dstm server chooses it, from --store, --state-dir
// and the server section of the configuration file, whose pools and TEPs an import is checked against.
import { Flags } from '@oclif/core';
import type { ServerConfig } from '../config/server-schema';
import { fail, type Reporter } from './command';
import { EXIT } from './exit-codes';
import { loadServerConfig, policyOf } from '../server/daemon';
import type { LeasePolicy } from '../server/leases';
import { openStore } from '../server/open-store';
import type { Store } from '../server/store';

export const storeFlags = {
  store: Flags.string({
    summary:
      "The store: postgresql://USER@HOST:PORT/DATABASE, or sqlite:DIR (default: the configuration's server.store, else the SQLite store in --state-dir).",
  }),
  'state-dir': Flags.string({
    summary: "Directory of the SQLite store (default: the configuration's server.state_dir, else /var/lib/dstm).",
  }),
  config: Flags.string({
    summary:
      'Configuration file (its "server" section: store, pools, TEPs); default DSTM_CONFIG or /etc/dstm/dstm.json if present.',
  }),
};

export interface StoreFlagValues {
  store?: string;
  'state-dir'?: string;
  config?: string;
}

/**
 * The server configuration's lease policy, and the opening of its store for export (read) or restore (write,
 * refused while a server uses it); a failure is reported for `cmd`: exit 2 for the configuration (naming the key
 * or flag), 3 for a store that cannot be opened.
 */
export function storeFromFlags(
  cmd: Reporter,
  f: StoreFlagValues,
): { policy: LeasePolicy; open: (tool: 'export' | 'restore') => Promise<Store> } {
  let config: ServerConfig;
  try {
    config = loadServerConfig({ config: f.config, store: f.store, 'state-dir': f['state-dir'] }).config;
  } catch (err) {
    fail(cmd, (err as Error).message, EXIT.usage);
  }
  return {
    policy: policyOf(config),
    open: (tool) =>
      openStore(config.store, { stateDir: config.state_dir, poolSize: 1, tool }).catch((err: Error) =>
        fail(cmd, err.message, EXIT.cannotStart),
      ),
  };
}
