import { Flags } from '@oclif/core';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_PORT, serverFields } from '../config/server-schema';
import { showRecord } from '../config/schema';
import { daemonFailed } from '../cli/daemon-cli';
import { settingFlags, configFlag } from '../cli/setting-flags';
import { StartError, notify, runDaemon, type Daemon } from '../lib/daemon';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { createLogger } from '../lib/log';
import { DstmServer, loadServerConfig, tepAddressesInPools, tlsOf } from '../server/daemon';
import { sqliteDir } from '../server/open-store';
import { STATE_DIR_ADVICE, StateDirError } from '../server/state-dir';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class ServerCommand extends DstmCommand {
  static override summary = 'Run the DSTM server: lease temporary IPv4 addresses to IPv6 nodes over ONC RPC';
  static override description =
    'Serves the DSTM program (Annex B version 1 and version 2) over UDP and TCP on IPv6 only, keeps every ' +
    'binding in a store (committed before the reply leaves): SQLite in the state directory, or with --store ' +
    'postgresql://... a PostgreSQL database that several servers share, each answering any node. It expires ' +
    'and reclaims leases, and tells each node its TEP. With --tls it offers RPC-with-TLS (RFC 9289) on TCP, or ' +
    'requires it, or requires client certificates that then identify nodes, TEPs and administrators.' +
    '\n\n' +
    'Flags override the "server" section of the configuration file. SIGHUP reloads the configuration (and the ' +
    'TLS certificate, key and CA) without losing a lease or a connection; SIGTERM or SIGINT stops. Under ' +
    'systemd (NOTIFY_SOCKET) it reports READY once it listens. See dstm-server(8) and dstm.conf(5).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> server',
    `<%= config.bin %> server --listen '[2001:db8::10]:${DEFAULT_PORT}' --pool 198.51.100.0/24 --tep 2001:db8::1,192.0.2.1 --state-dir /var/lib/dstm`,
    '<%= config.bin %> server --tcp-only changes --per-prefix 64:16 --rate-limit 64:10',
    '<%= config.bin %> server --config /etc/dstm/dstm.json --check',
  ];

  static override flags = {
    config: configFlag('server'),
    ...settingFlags(serverFields),
    check: Flags.boolean({ summary: 'Validate the configuration and flags, print the result as JSON and exit.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ServerCommand);
    let loaded: ReturnType<typeof loadServerConfig>;
    try {
      loaded = loadServerConfig(flags);
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.check) {
      // the TLS files are read and loaded as the start reads them: a reload that --check passes must not fail on them
      try {
        tlsOf(loaded.config);
      } catch (err) {
        fail(this, (err as Error).message, EXIT.usage);
      }
      const warnings = tepAddressesInPools(loaded.config).map(
        (t) => `${t.key} ${t.ipv4} is inside pool ${t.pool}: it is never leased`,
      );
      this.log(
        JSON.stringify(
          { file: loaded.file ?? null, server: showRecord(serverFields, loaded.config), warnings },
          null,
          2,
        ),
      );
      return;
    }
    const log = createLogger({ level: loaded.config.log_level }).child({ component: 'server' });
    const start = async (): Promise<Daemon> => {
      const server = await DstmServer.start(loaded.config, log, { status: (text) => notify(log, { STATUS: text }) });
      return {
        reload: async () => void (await server.reload(loadServerConfig(flags).config)),
        stop: () => server.stop(),
        failed: server.fatal,
      };
    };
    try {
      await runDaemon(log, start);
    } catch (err) {
      const dir = sqliteDir(loaded.config.store, loaded.config.state_dir);
      // a directory that could not be made says why itself (makeStateDir); one that exists may still be unwritable
      if (err instanceof StartError && dir !== undefined && !(err.cause instanceof StateDirError))
        fail(this, `cannot start: ${err.message}${stateDirHint(dir)}`, EXIT.cannotStart);
      daemonFailed(this, err, 'cannot start');
    }
  }
}

/** What to do when the state directory cannot be written. */
function stateDirHint(dir: string): string {
  try {
    accessSync(existsSync(dir) ? dir : dirname(dir), constants.W_OK);
    return '';
  } catch {
    return `; ${dir} is not writable by this user: ${STATE_DIR_ADVICE}`;
  }
}
