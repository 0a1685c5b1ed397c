import { Flags } from '@oclif/core';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_PORT } from '../config/server-schema';
import { formatEndpoint } from '../lib/endpoint';
import { logLevelFlag, notify, stopSignal } from '../cli/daemon-cli';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { programFlag } from '../cli/flags';
import { createLogger } from '../lib/log';
import { formatIPv4, formatIPv6, formatPrefix4, formatPrefix6 } from '../lib/addr';
import { DstmServer, loadServerConfig, type ServerFlags } from '../server/daemon';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class ServerCommand extends DstmCommand {
  static override summary = 'Run the DSTM server: lease temporary IPv4 addresses to IPv6 nodes over ONC RPC';
  static override description =
    'Serves the DSTM program (Annex B version 1 and version 2) over UDP and TCP on IPv6 only, keeps every ' +
    'binding in a SQLite store in the state directory (committed before the reply leaves), expires and ' +
    'reclaims leases, and tells each node its TEP.' +
    '\n\n' +
    'Flags override the "server" section of the configuration file. SIGHUP reloads the configuration ' +
    'without losing a lease; SIGTERM or SIGINT stops. Under systemd (NOTIFY_SOCKET) it reports READY once ' +
    'it listens. See dstm-server(8) and dstm.conf(5).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> server',
    `<%= config.bin %> server --listen '[2001:db8::10]:${DEFAULT_PORT}' --pool 198.51.100.0/24 --tep 2001:db8::1,198.51.100.1 --state-dir /var/lib/dstm`,
    '<%= config.bin %> server --config /etc/dstm/dstm.json --check',
  ];

  static override flags = {
    config: Flags.string({ summary: 'Configuration file (JSON, its "server" section); default DSTM_CONFIG or /etc/dstm/dstm.json if present.' }),
    listen: Flags.string({ summary: `IPv6 address and port to serve on, [IPV6]:PORT (repeatable; default [::]:${DEFAULT_PORT}).`, multiple: true }),
    pool: Flags.string({ summary: 'IPv4 prefix to lease addresses from (repeatable; default 192.0.2.0/24).', multiple: true }),
    tep: Flags.string({ summary: 'Default TEP as IPV6,IPV4.' }),
    lease: Flags.integer({ summary: 'Lease duration in seconds (default 3600).' }),
    'state-dir': Flags.string({ summary: 'Directory of the SQLite store (default /var/lib/dstm).' }),
    allow: Flags.string({ summary: 'IPv6 prefix of nodes allowed to request (repeatable; default ::/0).', multiple: true }),
    program: programFlag('ONC RPC program number, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).'),
    metrics: Flags.string({ summary: 'Serve Prometheus metrics on [IPV6]:PORT (GET /metrics; default off).' }),
    'log-level': logLevelFlag,
    check: Flags.boolean({ summary: 'Validate the configuration and flags, print the result as JSON and exit.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ServerCommand);
    const sf: ServerFlags = {
      config: flags.config,
      listen: flags.listen,
      pool: flags.pool,
      tep: flags.tep,
      lease: flags.lease,
      stateDir: flags['state-dir'],
      allow: flags.allow,
      program: flags.program,
      metrics: flags.metrics,
      logLevel: flags['log-level'],
    };
    let loaded: ReturnType<typeof loadServerConfig>;
    try {
      loaded = loadServerConfig(sf);
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.check) {
      this.log(JSON.stringify({ file: loaded.file ?? null, server: loaded.config }, jsonForm, 2));
      return;
    }
    const log = createLogger({ level: loaded.config.log_level }).child({ component: 'server' });
    // Signals are taken before the server starts: one arriving during start-up must neither kill it nor be lost.
    const stopping = stopSignal();
    let server: DstmServer | undefined;
    let reloadPending = false;
    const reload = (): void => {
      if (!server) {
        reloadPending = true; // applied once start-up is done
        return;
      }
      notify(log, 'RELOADING=1');
      try {
        server.reload(loadServerConfig(sf).config);
      } catch (err) {
        log.error('configuration not reloaded; the running one stays', { why: (err as Error).message });
      }
      notify(log, 'READY=1');
    };
    process.on('SIGHUP', reload);
    try {
      server = await DstmServer.start(loaded.config, log);
    } catch (err) {
      fail(this, `cannot start: ${(err as Error).message}${stateDirHint(loaded.config.state_dir)}`, EXIT.cannotStart);
    }
    notify(log, 'READY=1');
    if (reloadPending) reload();
    await stopping;
    log.info('stopping');
    notify(log, 'STOPPING=1');
    await server.stop();
  }

}

/** What to do when the state directory cannot be written (a first start without root, where /var/lib is root's). */
function stateDirHint(dir: string): string {
  try {
    accessSync(existsSync(dir) ? dir : dirname(dir), constants.W_OK);
    return '';
  } catch {
    return `; ${dir} is not writable by this user: give a directory it can write with --state-dir (or server.state_dir), or run as root`;
  }
}

/** --check output: addresses and prefixes in their text forms. */
function jsonForm(key: string, v: unknown): unknown {
  if (v instanceof Uint8Array) return formatIPv6(v);
  if (v && typeof v === 'object' && 'base' in v && 'len' in v) return formatPrefix4(v as { base: number; len: number });
  if (v && typeof v === 'object' && 'bytes' in v && 'len' in v) return formatPrefix6(v as { bytes: Uint8Array; len: number });
  if (v && typeof v === 'object' && 'host' in v && 'port' in v) return formatEndpoint(v as { host: string; port: number });
  if (typeof v === 'number' && (key === 'ipv4' || key === 'ip4')) return formatIPv4(v);
  return v;
}
