// Flags of the commands that open the server's store themselves instead of calling a server (dstm leases export
// and import, like kea-admin lease-dump): the store is chosen as dstm server chooses it, from --store, --state-dir
// and the server section of the configuration file, whose pools and TEPs an import is checked against.
import { serverFields, type ServerConfig } from '../config/server-schema';
import { configFlag, pickSettingFlags } from './setting-flags';
import { fail, type Reporter } from './command';
import { EXIT } from './exit-codes';
import { loadServerConfig, policyOf, type ServerFlags } from '../server/daemon';
import type { LeasePolicy } from '../server/leases';
import { openStore } from '../server/open-store';
import type { Store } from '../server/store';

export const storeFlags = {
  ...pickSettingFlags(serverFields, ['store', 'state-dir']),
  config: configFlag('server', ': store, pools, TEPs'),
};

export type StoreFlagValues = Pick<ServerFlags, 'store' | 'state-dir' | 'config'>;

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
    config = loadServerConfig(f).config;
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
