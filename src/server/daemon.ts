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
import { RpcServer, type BoundAddress } from '../rpc';
import { formatIPv6, formatPrefix4, type Prefix6, prefixSize4 } from '../lib/addr';
import { AddressPool, MAX_POOL_ADDRESSES } from './pool';
import { LeaseService, type LeasePolicy } from './leases';
import { DstmRpc, type Access } from './rpc';
import { STATE } from '../protocol/status';
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
  private pools: { name: string; pool: AddressPool; dynamic: number }[] = [];
  private poolsFor: ServerConfig | null = null;

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
        const labels: Labels = refused ? { op, reason: status } : { op, status };
        return [{ labels, value }];
      });
    reg.collector('dstm_server_operations_total', 'Lease operations (request, release, revoke, allocate) by result.', 'counter', () => results(false));
    reg.collector('dstm_server_refusals_total', 'Lease operations refused, by operation and reason.', 'counter', () => [...results(true), ...this.rpcs.refusalSamples()]);
    reg.collector('dstm_server_bindings', 'Bindings in the store by state.', 'gauge', () =>
      Object.entries(this.store.counts()).map(([state, value]) => ({ labels: { state }, value })),
    );
    reg.collector('dstm_server_pool_active', 'Active bindings per pool.', 'gauge', () => this.poolSamples('active'));
    reg.collector('dstm_server_pool_free', 'Addresses free for dynamic allocation, per pool.', 'gauge', () => this.poolSamples('free'));
    reg.collector('dstm_server_pool_size', 'Addresses in the pools.', 'gauge', () => [{ value: this.leases.poolSize }]);
    reg.collector('dstm_server_feed_seq', 'Sequence number of the last binding change.', 'gauge', () => [{ value: this.leases.lastSeq }]);
    reg.collector('dstm_server_rpc_calls_total', 'ONC RPC calls by procedure, transport and result.', 'counter', () =>
      Object.entries(this.rpc.stats().calls).flatMap(([procedure, byTransport]) =>
        Object.entries(byTransport).flatMap(([transport, byResult]) => Object.entries(byResult ?? {}).map(([result, value]) => ({ labels: { procedure, transport, result }, value }))),
      ),
    );
    reg.collector('dstm_server_rpc_rejected_total', 'ONC RPC calls refused before a procedure ran, by transport and reason.', 'counter', () =>
      Object.entries(this.rpc.stats().rejected).flatMap(([transport, byReason]) => Object.entries(byReason).map(([reason, value]) => ({ labels: { transport, reason }, value }))),
    );
    const m = await serveMetrics(reg, host, port);
    this.metricsServer = m.server;
    this.log.info('metrics', { address: formatEndpoint({ host, port: m.port }) });
  }

  /**
   * Per pool: active bindings, or dynamic addresses not held by any binding. Read from the store at scrape time
   * (one pass over the bound addresses); each pool's dynamic size is counted once per configuration.
   */
  private poolSamples(what: 'active' | 'free'): Sample[] {
    if (this.poolsFor !== this.config) {
      this.poolsFor = this.config;
      const c = this.config;
      this.pools = c.pools.map((p) => {
        const pool = new AddressPool({ pools: [p], exclude: c.exclude, skipNetworkBroadcast: c.skip_network_broadcast, reserved: c.reservations.map((r) => r.ipv4) });
        let dynamic = 0;
        for (let a = p.base, end = p.base + prefixSize4(p.len); a < end; a++) if (pool.isDynamic(a)) dynamic++;
        return { name: formatPrefix4(p), pool, dynamic };
      });
    }
    const counts = this.pools.map(() => 0);
    const addresses = what === 'active' ? this.store.list(-1, Number.MAX_SAFE_INTEGER).filter((b) => b.state === STATE.active).map((b) => b.ip4) : this.store.boundAddresses();
    for (const a of addresses) {
      const i = this.pools.findIndex((p) => (what === 'active' ? p.pool.index(a) >= 0 : p.pool.isDynamic(a)));
      if (i >= 0) counts[i]++;
    }
    return this.pools.map((p, i) => ({ labels: { pool: p.name }, value: what === 'active' ? counts[i] : p.dynamic - counts[i] }));
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
