import { Flags } from '@oclif/core';
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { DEFAULT_PORT, TCP_ONLY } from '../config/server-schema';
import { formatEndpoint } from '../lib/endpoint';
import { daemonFailed, logLevelFlag } from '../cli/daemon-cli';
import { StartError, notify, runDaemon, type Daemon } from '../lib/daemon';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { programFlag } from '../cli/flags';
import { createLogger } from '../lib/log';
import { formatIPv4, formatIPv6, formatPrefix4, formatPrefix6 } from '../lib/addr';
import { DstmServer, loadServerConfig, tepAddressesInPools, type ServerFlags } from '../server/daemon';
import { redactUrl } from '../config/types';

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
    config: Flags.string({
      summary:
        'Configuration file (JSON, its "server" section); default DSTM_CONFIG or /etc/dstm/dstm.json if present.',
    }),
    listen: Flags.string({
      summary: `IPv6 address and port to serve on, [IPV6]:PORT (repeatable; default [::]:${DEFAULT_PORT}).`,
      multiple: true,
    }),
    pool: Flags.string({
      summary: 'IPv4 prefix to lease addresses from (repeatable; default 192.0.2.0/24).',
      multiple: true,
    }),
    tep: Flags.string({ summary: 'Default TEP as IPV6,IPV4.' }),
    lease: Flags.integer({ summary: 'Lease duration in seconds (default 3600).' }),
    'min-lease': Flags.integer({
      summary: 'Shortest lease in seconds: a node asking for less gets this much (default 60).',
    }),
    'per-prefix': Flags.string({
      summary: 'At most MAX nodes with an active binding in each IPv6 /LEN, as LEN:MAX, e.g. 64:16 (default off).',
    }),
    'rate-limit': Flags.string({
      summary:
        'REQUEST and RELEASE calls per second from each IPv6 /LEN, as LEN:RATE[:BURST], e.g. 64:10 (default off).',
    }),
    'tcp-only': Flags.string({
      summary:
        'Procedures served over TCP only: admin (LIST, REVOKE, ALLOCATE), changes (those, REQUEST and RELEASE) or none (default admin).',
      options: [...TCP_ONLY],
    }),
    'state-dir': Flags.string({ summary: 'Directory of the SQLite store (default /var/lib/dstm).' }),
    store: Flags.string({
      summary:
        'Binding store: postgresql://USER@HOST:PORT/DATABASE (shared by several servers) or sqlite:[DIR] (default: SQLite in the state directory).',
    }),
    allow: Flags.string({
      summary: 'IPv6 prefix of nodes allowed to request (repeatable; default ::/0).',
      multiple: true,
    }),
    program: programFlag('ONC RPC program number, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).'),
    metrics: Flags.string({ summary: 'Serve Prometheus metrics on [IPV6]:PORT (GET /metrics; default off).' }),
    'log-level': logLevelFlag,
    tls: Flags.string({
      summary: 'RPC-with-TLS policy (default off; see dstm-rpc(7)).',
      options: ['off', 'opportunistic', 'required', 'mutual'],
    }),
    'tls-cert': Flags.string({ summary: "PEM file of the server's certificate." }),
    'tls-key': Flags.string({ summary: 'PEM file of its private key.' }),
    'tls-ca': Flags.string({ summary: 'PEM file of the CA that signs client certificates (mutual policy).' }),
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
      store: flags.store,
      allow: flags.allow,
      program: flags.program,
      metrics: flags.metrics,
      logLevel: flags['log-level'],
      tls: flags.tls,
      tlsCert: flags['tls-cert'],
      tlsKey: flags['tls-key'],
      tlsCa: flags['tls-ca'],
      minLease: flags['min-lease'],
      perPrefix: flags['per-prefix'],
      rateLimit: flags['rate-limit'],
      tcpOnly: flags['tcp-only'],
    };
    let loaded: ReturnType<typeof loadServerConfig>;
    try {
      loaded = loadServerConfig(sf);
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.check) {
      const warnings = tepAddressesInPools(loaded.config).map(
        (t) => `${t.key} ${t.ipv4} is inside pool ${t.pool}: it is never leased`,
      );
      this.log(JSON.stringify({ file: loaded.file ?? null, server: loaded.config, warnings }, jsonForm, 2));
      return;
    }
    const log = createLogger({ level: loaded.config.log_level }).child({ component: 'server' });
    const start = async (): Promise<Daemon> => {
      const server = await DstmServer.start(loaded.config, log, { status: (text) => notify(log, `STATUS=${text}`) });
      return {
        reload: async () => void (await server.reload(loadServerConfig(sf).config)),
        stop: () => server.stop(),
        failed: server.fatal,
      };
    };
    try {
      await runDaemon(log, start);
    } catch (err) {
      const store = loaded.config.store;
      const sqliteDir =
        store === undefined || store.startsWith('sqlite:')
          ? store?.slice('sqlite:'.length) || loaded.config.state_dir
          : undefined;
      if (err instanceof StartError && sqliteDir !== undefined)
        fail(this, `cannot start: ${err.message}${stateDirHint(sqliteDir)}`, EXIT.cannotStart);
      daemonFailed(this, err, 'cannot start');
    }
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
  if (key === 'store' && typeof v === 'string') return redactUrl(v);
  if (v instanceof Uint8Array) return formatIPv6(v);
  if (key === 'per_prefix' && v) return `${(v as { len: number }).len}:${(v as { max: number }).max}`;
  if (key === 'rate_limit' && v)
    return `${(v as { len: number }).len}:${(v as { rate: number }).rate}:${(v as { burst: number }).burst}`;
  if (v && typeof v === 'object' && 'base' in v && 'len' in v) return formatPrefix4(v as { base: number; len: number });
  if (v && typeof v === 'object' && 'bytes' in v && 'len' in v)
    return formatPrefix6(v as { bytes: Uint8Array; len: number });
  if (v && typeof v === 'object' && 'host' in v && 'port' in v)
    return formatEndpoint(v as { host: string; port: number });
  if (typeof v === 'number' && (key === 'ipv4' || key === 'ip4')) return formatIPv4(v);
  return v;
}
