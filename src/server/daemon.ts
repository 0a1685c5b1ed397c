// The running DSTM server: configuration in, RPC service out. Loads the store, rebuilds the pool index, serves
// both program versions on every listen address, registers with rpcbind, expires and reclaims leases, reloads its
// configuration on demand and stops cleanly.
import type { Server as HttpServer } from 'node:http';
import { loadSection } from '../config/load';
import { ConfigError, overrides } from '../config/schema';
import { serverFields, type ServerConfig } from '../config/server-schema';
import { formatEndpoint } from '../lib/endpoint';
import type { Logger } from '../lib/log';
import { Registry, serveMetrics, type Labels, type Sample } from '../lib/metrics';
import { registerProcessMetrics } from '../lib/process-metrics';
import { RpcServer, type BoundAddress } from '../rpc';
import { formatIPv6, formatPrefix4, type Prefix6, prefixSize4 } from '../lib/addr';
import { MAX_POOL_ADDRESSES, type PoolStats } from './pool';
import { LeaseService, type LeasePolicy } from './leases';
import { DstmRpc, type Access } from './rpc';
import { Store } from './store';

/** Command-line values that stand in for configuration keys (flags win over the file). */
export interface ServerFlags {
  config?: string;
  listen?: string[];
  pool?: string[];
  tep?: string;
  lease?: number;
  stateDir?: string;
  allow?: string[];
  program?: number;
  metrics?: string;
  logLevel?: string;
}

/** "IPV6,IPV4" as given to --tep, in the configuration file's shape ({ipv6, ipv4}). */
export function tepFlag(text: string): { ipv6: string; ipv4: string } {
  const parts = text.split(',');
  if (parts.length !== 2) throw new Error(`--tep: "${text}" is not valid: expected IPV6,IPV4 (e.g. 2001:db8::1,192.0.2.1)`);
  return { ipv6: parts[0].trim(), ipv4: parts[1].trim() };
}

/** Read the file (if any) and apply the flags; throws ConfigError naming the key or flag at fault. */
export function loadServerConfig(flags: ServerFlags): { config: ServerConfig; file?: string } {
  const { config, file, where } = loadSection(serverFields, 'server', flags.config, overrides([
    ['listen', '--listen', flags.listen],
    ['pools', '--pool', flags.pool],
    ['tep', '--tep', flags.tep === undefined ? undefined : tepFlag(flags.tep)],
    ['lease', '--lease', flags.lease],
    ['state_dir', '--state-dir', flags.stateDir],
    ['allow', '--allow', flags.allow],
    ['program', '--program', flags.program],
    ['metrics', '--metrics', flags.metrics],
    ['log_level', '--log-level', flags.logLevel],
  ]));
  checkServerConfig(config, where);
  return { config, file };
}

/** Rules that span keys (each key alone is checked by the schema). */
export function checkServerConfig(c: ServerConfig, where: string): void {
  if (c.max_lease < c.lease) throw new ConfigError(`${where}.max_lease`, c.max_lease, `at least server.lease (${c.lease})`);
  const sorted = [...c.pools].sort((a, b) => a.base - b.base);
  let total = 0;
  sorted.forEach((p, i) => {
    total += prefixSize4(p.len);
    const prev = sorted[i - 1];
    if (prev && p.base < prev.base + prefixSize4(prev.len)) throw new ConfigError(`${where}.pools`, formatPrefix4(p), `prefixes that do not overlap (${formatPrefix4(p)} overlaps ${formatPrefix4(prev)})`);
  });
  if (total > MAX_POOL_ADDRESSES) throw new ConfigError(`${where}.pools`, c.pools.map(formatPrefix4), `at most ${MAX_POOL_ADDRESSES} addresses in all (a /8)`);
}

export function policyOf(c: ServerConfig): LeasePolicy {
  return {
    lease: c.lease,
    maxLease: c.max_lease,
    hold: c.hold,
    pools: c.pools,
    exclude: c.exclude,
    skipNetworkBroadcast: c.skip_network_broadcast,
    reservations: c.reservations,
    tep: c.tep,
    teps: c.teps,
  };
}

export function accessOf(c: ServerConfig): Access {
  // Every configured TEP may follow the feed without being listed in tep_allow.
  const teps: Prefix6[] = [...(c.tep ? [c.tep] : []), ...c.teps].map((t) => ({ bytes: t.ipv6, len: 128 }));
  return { allow: c.allow, tepAllow: [...c.tep_allow, ...teps], adminAllow: c.admin_allow, feedMaxWait: c.feed_max_wait };
}

export class DstmServer {
  private sweeping = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private metricsServer: HttpServer | null = null;

  private constructor(
    private config: ServerConfig,
    readonly store: Store,
    readonly leases: LeaseService,
    private readonly rpcs: DstmRpc,
    readonly rpc: RpcServer,
    private readonly log: Logger,
  ) {}

  static async start(config: ServerConfig, log: Logger): Promise<DstmServer> {
    const t0 = performance.now();
    const store = new Store(config.state_dir);
    let leases: LeaseService;
    try {
      leases = new LeaseService(store, policyOf(config));
    } catch (err) {
      store.close();
      throw err;
    }
    const counts = store.counts();
    log.info('store loaded', { state_dir: config.state_dir, ...counts, free: leases.available, pool: leases.poolSize, ms: Math.round(performance.now() - t0) });
    if (!config.tep && config.teps.length === 0) log.warn('no TEP configured: replies carry a zero TEP (set server.tep or --tep)');
    const rpcs = new DstmRpc(leases, accessOf(config), log);
    const rpc = new RpcServer({ onHandlerError: (err, ctx) => log.error('handler failed', { err, peer: ctx.peerAddress }) });
    for (const s of rpcs.services(config.program)) rpc.register(s, config.program);
    const server = new DstmServer(config, store, leases, rpcs, rpc, log);
    try {
      const bound = await rpc.listen(config.listen.flatMap((e) => config.transports.map((transport) => ({ host: e.host, port: e.port, transport }))));
      log.info('listening', { addresses: bound.map((b) => `${formatEndpoint({ host: b.address, port: b.port })}/${b.transport}`), program: config.program });
      await server.rpcbind();
      if (config.metrics) await server.serveMetrics(config.metrics.host, config.metrics.port);
    } catch (err) {
      await server.stop();
      throw err;
    }
    server.sweepTimer = setInterval(() => void server.sweep(), 1000);
    return server;
  }

  addresses(): BoundAddress[] {
    return this.rpc.addresses();
  }

  private async rpcbind(): Promise<void> {
    if (this.config.rpcbind === 'off') return;
    try {
      const regs = await this.rpc.registerWithRpcbind({ timeoutMs: 1000 });
      this.log.info('registered with rpcbind', { registrations: regs.length });
    } catch (err) {
      if (this.config.rpcbind === 'on') throw new Error(`cannot register with rpcbind: ${(err as Error).message}`);
      this.log.info('rpcbind is not running: not registered', { why: (err as Error).message });
    }
  }

  private async serveMetrics(host: string, port: number): Promise<void> {
    const reg = new Registry();
    const results = (refused: boolean): Sample[] =>
      [...this.leases.counts].flatMap(([k, value]) => {
        const [op, status] = k.split(':');
        if (refused && status === 'ok') return [];
        const labels: Labels = refused ? { op, reason: status } : { op, result: status };
        return [{ labels, value }];
      });
    reg.collector('dstm_server_operations_total', 'Lease operations (request, release, revoke, allocate) by result.', 'counter', () => results(false));
    reg.collector('dstm_server_refusals_total', 'Lease operations refused, by operation and reason.', 'counter', () => [...results(true), ...this.rpcs.refusalSamples()]);
    reg.collector('dstm_server_bindings', 'Bindings in the store by state.', 'gauge', () =>
      Object.entries(this.store.counts()).map(([state, value]) => ({ labels: { state }, value })),
    );
    // per pool, from the allocator's counters: a scrape reads no binding
    const pools = (value: (p: PoolStats) => number) => () => this.leases.poolStats().map((p) => ({ labels: { pool: formatPrefix4(p.pool) }, value: value(p) }));
    reg.collector('dstm_server_pool_size', 'Addresses in each pool.', 'gauge', pools((p) => p.size));
    reg.collector('dstm_server_pool_free', 'Addresses free for dynamic allocation, per pool.', 'gauge', pools((p) => p.free));
    reg.collector('dstm_server_pool_in_use', 'Dynamic addresses bound to a node (active, held or revoked), per pool.', 'gauge', pools((p) => p.dynamic - p.free));
    reg.collector('dstm_server_feed_seq', 'Sequence number of the last binding change.', 'gauge', () => [{ value: this.leases.lastSeq }]);
    reg.collector('dstm_server_rpc_calls_total', 'ONC RPC calls by procedure, transport and result.', 'counter', () =>
      Object.entries(this.rpc.stats().calls).flatMap(([procedure, byTransport]) =>
        Object.entries(byTransport).flatMap(([transport, byResult]) => Object.entries(byResult ?? {}).map(([result, value]) => ({ labels: { procedure, transport, result }, value }))),
      ),
    );
    reg.collector('dstm_server_rpc_rejected_total', 'ONC RPC calls refused before a procedure ran, by transport and reason.', 'counter', () =>
      Object.entries(this.rpc.stats().rejected).flatMap(([transport, byReason]) => Object.entries(byReason).map(([reason, value]) => ({ labels: { transport, reason }, value }))),
    );
    reg.histogram('dstm_server_rpc_duration_seconds', 'Time from a call\'s decoded arguments to its reply, by procedure.', () =>
      Object.entries(this.rpc.stats().latency).map(([procedure, histogram]) => ({ labels: { procedure }, histogram })),
    );
    registerProcessMetrics(reg, 'server');
    const m = await serveMetrics(reg, host, port);
    this.metricsServer = m.server;
    this.log.info('metrics', { address: formatEndpoint({ host, port: m.port }) });
  }

  /** Expire and reclaim due leases; runs once a second, and never twice at once. */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      while (this.leases.sweepDue()) {
        const n = await this.leases.sweep();
        this.log.debug('sweep', { changed: n });
        if (n === 0) break;
      }
    } catch (err) {
      this.log.error('sweep failed', { err });
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * Apply a reloaded configuration (SIGHUP). Pools, leases, TEPs, reservations and ACLs change at once and no
   * binding is lost; listen addresses, transports, program, state_dir and metrics need a restart.
   */
  reload(next: ServerConfig): string[] {
    const fixed = (['listen', 'transports', 'program', 'state_dir', 'metrics', 'rpcbind'] as const).filter(
      (k) => JSON.stringify(next[k], replacer) !== JSON.stringify(this.config[k], replacer),
    );
    this.leases.configure(policyOf(next));
    this.rpcs.configure(accessOf(next));
    // The keys that need a restart keep their running values, so the next reload still reports them.
    this.config = { ...next, ...Object.fromEntries(fixed.map((k) => [k, this.config[k]])) };
    this.log.info('configuration reloaded', { free: this.leases.available, pool: this.leases.poolSize, ...(fixed.length ? { needs_restart: fixed } : {}) });
    return fixed;
  }

  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.rpc.close(2000);
    await new Promise<void>((resolve) => (this.metricsServer ? this.metricsServer.close(() => resolve()) : resolve()));
    this.store.close();
  }
}

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? formatIPv6(v) : v;
}
