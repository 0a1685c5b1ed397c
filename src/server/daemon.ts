// The running DSTM server: configuration in, RPC service out. Opens the store (SQLite or PostgreSQL), rebuilds the
// pool index, serves both program versions on every listen address, registers with rpcbind, expires and reclaims
// leases, reports the store's health, reloads its configuration on demand and stops cleanly.
import type { Server as HttpServer } from 'node:http';
import { loadSection } from '../config/load';
import { ConfigError } from '../config/schema';
import { disjointPools } from '../config/types';
import { flagOverrides, type FlagsOf } from '../config/settings';
import { serverFields, type ServerConfig } from '../config/server-schema';
import { formatEndpoint } from '../lib/endpoint';
import type { Logger } from '../lib/log';
import { closeMetrics, Registry, serveMetrics, type Labels, type Sample } from '../lib/metrics';
import { registerProcessMetrics } from '../lib/process-metrics';
import { RpcServer, RpcTlsServer, type BoundAddress } from '../rpc';
import { loadTlsFiles } from '../rpc/tls';
import {
  formatIPv4,
  formatIPv6,
  formatPrefix4,
  parseIPv6,
  type Prefix4,
  type Prefix6,
  prefixContains4,
  prefixSize4,
} from '../lib/addr';
import { LeaseClock } from './clock';
import { MAX_POOL_ADDRESSES, type PoolStats } from './pool';
import { LeaseService, type LeasePolicy } from './leases';
import { DstmRpc, MAX_CALL_RECORD, type Access } from './rpc';
import { openStore, sqliteDir } from './open-store';
import { makeStateDir } from './state-dir';
import { STATE_NAMES, type StateCounts, type Store, type StoreHealth } from './store';

/** The command's flags: one per key that declares one (server-schema.ts), and --config. */
export type ServerFlags = FlagsOf<typeof serverFields> & { config?: string };

/** Read the file (if any) and apply the flags; throws ConfigError naming the key or flag at fault. */
export function loadServerConfig(flags: ServerFlags): { config: ServerConfig; file?: string } {
  const given = flagOverrides(serverFields, flags);
  const { config, file, where } = loadSection(serverFields, 'server', flags.config, given);
  const flagOf = new Map(given.map((o) => [o.key, o.flag]));
  checkServerConfig(config, where, (key) => flagOf.get(key) ?? `${where}.${key}`);
  return { config, file };
}

/**
 * Rules that span keys (each key alone is checked by the schema). `name` is how an error names a key: the flag
 * that set it, else its path in the file.
 */
export function checkServerConfig(
  c: ServerConfig,
  where: string,
  name: (key: keyof ServerConfig) => string = (key) => `${where}.${key}`,
): void {
  if (c.lease < c.min_lease)
    throw new ConfigError(name('lease'), c.lease, `at least server.min_lease (${c.min_lease})`);
  if (c.max_lease < c.lease)
    throw new ConfigError(name('max_lease'), c.max_lease, `at least server.lease (${c.lease})`);
  const total = disjointPools(c.pools, name('pools')).reduce((n, p) => n + prefixSize4(p.len), 0);
  if (total > MAX_POOL_ADDRESSES)
    throw new ConfigError(
      name('pools'),
      c.pools.map(formatPrefix4),
      `at most ${MAX_POOL_ADDRESSES} addresses in all (a /8)`,
    );
  // [::]:P takes port P on every address: another entry with that port could not bind it (EADDRINUSE at start).
  for (const [i, e] of c.listen.entries()) {
    const wild = c.listen.find((w) => w !== e && w.port === e.port && parseIPv6(w.host).every((b) => b === 0));
    if (wild)
      throw new ConfigError(
        `${name('listen')}[${i}]`,
        formatEndpoint(e),
        `a port that ${formatEndpoint(wild)} (every address) does not take already`,
      );
  }
  const tls = c.tls;
  if (tls.policy !== 'off') {
    if (!tls.cert)
      throw new ConfigError(
        `${where}.tls.cert`,
        tls.cert,
        `the server's certificate (--tls-cert) with the ${tls.policy} policy`,
      );
    if (!tls.key)
      throw new ConfigError(
        `${where}.tls.key`,
        tls.key,
        `the key of the server's certificate (--tls-key) with the ${tls.policy} policy`,
      );
    if (tls.policy === 'mutual' && !tls.ca)
      throw new ConfigError(
        `${where}.tls.ca`,
        tls.ca,
        'the CA that signs client certificates (--tls-ca) with the mutual policy',
      );
  }
  const teps = new Set(tepAddresses(c).map((t) => t.ipv4));
  c.reservations.forEach((r, i) => {
    if (teps.has(r.ipv4))
      throw new ConfigError(
        `${where}.reservations[${i}].ipv4`,
        formatIPv4(r.ipv4),
        "an address that is not a TEP's IPv4 address (a TEP address is never leased)",
      );
    const key = `${where}.reservations[${i}].ipv4`;
    const pool = c.pools.find((p) => prefixContains4(p, r.ipv4));
    if (!pool)
      throw new ConfigError(
        key,
        formatIPv4(r.ipv4),
        `an address inside server.pools (${c.pools.map(formatPrefix4).join(', ')})`,
      );
    const ex = c.exclude.find((p) => prefixContains4(p, r.ipv4));
    if (ex)
      throw new ConfigError(
        key,
        formatIPv4(r.ipv4),
        `an address outside server.exclude (it is in ${formatPrefix4(ex)})`,
      );
    const last = pool.base + prefixSize4(pool.len) - 1;
    if (c.skip_network_broadcast && pool.len < 31 && (r.ipv4 === pool.base || r.ipv4 === last))
      throw new ConfigError(
        key,
        formatIPv4(r.ipv4),
        `an address that is not the network or broadcast address of pool ${formatPrefix4(pool)} (server.skip_network_broadcast)`,
      );
  });
}

/** Every configured TEP's IPv4 address, with the key that sets it. */
function tepAddresses(c: ServerConfig): { key: string; ipv4: number }[] {
  return [
    ...(c.tep ? [{ key: 'server.tep.ipv4', ipv4: c.tep.ipv4 }] : []),
    ...c.teps.map((t, i) => ({ key: `server.teps[${i}].ipv4`, ipv4: t.ipv4 })),
  ];
}

/**
 * TEP addresses inside a pool: never leased (a node holding one could send as the TEP), so they are excluded from
 * the pools automatically, with a warning for each (the operator may have meant it: the TEP's address on the pool's
 * subnet).
 */
export function tepAddressesInPools(c: ServerConfig): { key: string; ipv4: string; pool: string }[] {
  return tepAddresses(c).flatMap((t) => {
    const pool = c.pools.find((p) => prefixContains4(p, t.ipv4));
    return pool ? [{ key: t.key, ipv4: formatIPv4(t.ipv4), pool: formatPrefix4(pool) }] : [];
  });
}

/** What is never leased: server.exclude plus every TEP address. */
function excluded(c: ServerConfig): Prefix4[] {
  return [...c.exclude, ...tepAddresses(c).map((t) => ({ base: t.ipv4, len: 32 }))];
}

/** The server's RPC-with-TLS half from the configuration (certificate files read now), or undefined when off. */
export function tlsOf(c: ServerConfig): RpcTlsServer | undefined {
  if (c.tls.policy === 'off') return undefined;
  return new RpcTlsServer({
    policy: c.tls.policy,
    handshakeTimeoutMs: c.tls.handshake_timeout,
    ...loadTlsFiles(c.tls),
  });
}

export function policyOf(c: ServerConfig): LeasePolicy {
  return {
    lease: c.lease,
    maxLease: c.max_lease,
    hold: c.hold,
    pools: c.pools,
    exclude: excluded(c),
    skipNetworkBroadcast: c.skip_network_broadcast,
    reservations: c.reservations,
    tep: c.tep,
    teps: c.teps,
  };
}

/** Every configured TEP's IPv6 address, as a /128. */
function tepIPv6s(c: ServerConfig): Prefix6[] {
  return [...(c.tep ? [c.tep] : []), ...c.teps].map((t) => ({ bytes: t.ipv6, len: 128 }));
}

export function accessOf(c: ServerConfig): Access {
  // Every configured TEP may follow the feed without being listed in tep_allow.
  const teps = tepIPv6s(c);
  const certs =
    c.tls.policy !== 'mutual'
      ? null
      : { nodes: c.tls.nodes, admin: c.tls.admin, teps: c.tls.teps, tepAddresses: teps.map((t) => t.bytes) };
  return {
    allow: c.allow,
    tepAllow: [...c.tep_allow, ...teps],
    adminAllow: c.admin_allow,
    feedMaxWait: c.feed_max_wait,
    certs,
    tcpOnly: c.tcp_only,
    minLease: c.min_lease,
    perPrefix: c.per_prefix,
    rateLimit: c.rate_limit,
  };
}

/** What the server tells its supervisor (systemd STATUS=). */
export interface ServerHooks {
  status?(text: string): void;
}

export class DstmServer {
  private sweeping = false;
  private sweepTimer: NodeJS.Timeout | null = null;
  private metricsServer: HttpServer | null = null;
  /** What the metrics show of the store's counts, read before each scrape. */
  private seen: StateCounts = Object.fromEntries(STATE_NAMES.map((n) => [n, 0])) as StateCounts;
  private onFatal!: (err: Error) => void;
  /**
   * Settles when the server cannot go on: the embedded store failed to make commits durable (a failed fdatasync
   * leaves what was committed since in doubt). The command stops and exits non-zero so that the unit restarts it
   * on what the disk holds. A PostgreSQL outage is not fatal: calls are answered UNAVAILABLE until it is back.
   */
  readonly fatal = new Promise<Error>((resolve) => (this.onFatal = resolve));
  private stepLogged = false;

  private constructor(
    private config: ServerConfig,
    readonly store: Store,
    readonly leases: LeaseService,
    private readonly rpcs: DstmRpc,
    readonly rpc: RpcServer,
    private readonly log: Logger,
    private readonly tls: RpcTlsServer | undefined,
    /** The embedded store's lease clock; none with PostgreSQL. */
    private readonly clock: LeaseClock | undefined,
  ) {}

  static async start(config: ServerConfig, log: Logger, hooks: ServerHooks = {}): Promise<DstmServer> {
    const t0 = performance.now();
    const dir = sqliteDir(config.store, config.state_dir);
    if (dir !== undefined) makeStateDir(dir);
    // The embedded store takes lease times from a clock that catches up with a forward step gradually (clock.ts);
    // a PostgreSQL store takes them from the database's clock, one for every server.
    const clock = dir !== undefined ? new LeaseClock(slewOf(config)) : undefined;
    const store = await openStore(config.store, {
      stateDir: config.state_dir,
      poolSize: config.store_pool,
      clock: clock?.now,
    });
    let leases: LeaseService;
    let counts: StateCounts;
    try {
      leases = await LeaseService.open(store, policyOf(config));
      counts = await store.counts();
    } catch (err) {
      await store.close();
      throw err;
    }
    log.info('store loaded', {
      store: store.where,
      ...(store.engine === 'sqlite' ? { state_dir: config.state_dir } : {}),
      ...counts,
      free: leases.available,
      pool: leases.poolSize,
      ms: Math.round(performance.now() - t0),
    });
    if (!config.tep && config.teps.length === 0)
      log.warn('no TEP configured: replies carry a zero TEP (set server.tep or --tep)');
    warnTepsInPools(config, log);
    let tls: RpcTlsServer | undefined;
    try {
      tls = tlsOf(config);
    } catch (err) {
      store.close();
      throw err;
    }
    const rpcs = new DstmRpc(leases, accessOf(config), log, clock);
    // The TEPs' feed and the administrators keep TCP slots of their own, whatever nodes (or a flood) hold.
    const reservedPeers = [...config.tep_allow, ...config.admin_allow, ...tepIPv6s(config)].map(
      (p) => `${formatIPv6(p.bytes)}/${p.len}`,
    );
    const rpc = new RpcServer({
      tls,
      reservedPeers,
      maxRecordSize: MAX_CALL_RECORD,
      onHandlerError: (err, ctx) => log.error('handler failed', { err, peer: ctx.peerAddress }),
    });
    for (const s of rpcs.services(config.program)) rpc.register(s, config.program);
    const server = new DstmServer(config, store, leases, rpcs, rpc, log, tls, clock);
    store.on('health', (h) => server.health(h, hooks));
    store.on('numbering', (h) => server.numbering(h));
    try {
      const bound = await rpc.listen(
        config.listen.flatMap((e) => config.transports.map((transport) => ({ host: e.host, port: e.port, transport }))),
      );
      log.info('listening', {
        addresses: bound.map((b) => `${formatEndpoint({ host: b.address, port: b.port })}/${b.transport}`),
        program: config.program,
        tls: config.tls.policy,
      });
      await server.rpcbind();
      if (config.metrics) await server.serveMetrics(config.metrics.host, config.metrics.port);
    } catch (err) {
      await server.stop();
      throw err;
    }
    server.sweepTimer = setInterval(() => void server.sweep(), 1000);
    return server;
  }

  /** One log line per change of the store's health (not per refused call), and the supervisor's status. */
  private health(h: StoreHealth, hooks: ServerHooks): void {
    if (h.ok) this.log.info('store available again', { store: this.store.where });
    else
      this.log.error('store unavailable: calls are answered UNAVAILABLE', { store: this.store.where, why: h.reason });
    hooks.status?.(h.ok ? 'serving' : `store unavailable: ${h.reason}`);
    if (!h.ok && this.store.engine === 'sqlite') this.onFatal(new Error(`the store failed: ${h.reason}`));
  }

  /**
   * One log line when feed numbering passes begin to fail (each failure is counted) and one when they succeed again.
   */
  private numbering(h: StoreHealth): void {
    if (h.ok) this.log.info('feed numbering passes succeed again', { store: this.store.where });
    else
      this.log.error('a feed numbering pass failed: changes wait for the next pass', {
        store: this.store.where,
        why: h.reason,
      });
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
        // The RPC layer counts the refusals for an unavailable store, those before the lease logic included.
        if (refused && (status === 'ok' || status === 'unavailable')) return [];
        const labels: Labels = refused ? { op, reason: status } : { op, result: status };
        return [{ labels, value }];
      });
    reg.collector(
      'dstm_server_operations_total',
      'Lease operations (request, release, revoke, allocate) by result.',
      'counter',
      () => results(false),
    );
    reg.collector('dstm_server_refusals_total', 'Lease operations refused, by operation and reason.', 'counter', () => [
      ...results(true),
      ...this.rpcs.refusalSamples(),
    ]);
    reg.collector('dstm_server_bindings', 'Bindings in the store by state.', 'gauge', () =>
      Object.entries(this.seen).map(([state, value]) => ({ labels: { state }, value })),
    );
    if (this.store.numberingFailures !== undefined)
      reg.collector(
        'dstm_server_feed_numbering_failures_total',
        'Feed numbering passes that failed (PostgreSQL store): their changes waited for a later pass.',
        'counter',
        () => [{ value: this.store.numberingFailures ?? 0 }],
      );
    reg.collector(
      'dstm_server_store_up',
      'Whether the binding store executes and makes changes durable (1) or not (0: calls are answered UNAVAILABLE).',
      'gauge',
      () => [{ labels: { engine: this.store.engine }, value: this.store.health().ok ? 1 : 0 }],
    );
    // per pool, from the allocator's counters: a scrape reads no binding
    const pools = (value: (p: PoolStats) => number) => () =>
      this.leases.poolStats().map((p) => ({ labels: { pool: formatPrefix4(p.pool) }, value: value(p) }));
    reg.collector(
      'dstm_server_pool_size',
      'Addresses in each pool.',
      'gauge',
      pools((p) => p.size),
    );
    reg.collector(
      'dstm_server_pool_free',
      'Addresses free for dynamic allocation, per pool.',
      'gauge',
      pools((p) => p.free),
    );
    reg.collector(
      'dstm_server_pool_in_use',
      'Dynamic addresses bound to a node (active, held or revoked), per pool.',
      'gauge',
      pools((p) => p.dynamic - p.free),
    );
    reg.collector('dstm_server_feed_seq', 'Sequence number of the last binding change.', 'gauge', () => [
      { value: this.leases.lastSeq },
    ]);
    reg.collector('dstm_server_rpc_calls_total', 'ONC RPC calls by procedure, transport and result.', 'counter', () =>
      Object.entries(this.rpc.stats().calls).flatMap(([procedure, byTransport]) =>
        Object.entries(byTransport).flatMap(([transport, byResult]) =>
          Object.entries(byResult ?? {}).map(([result, value]) => ({
            labels: { procedure, transport, result },
            value,
          })),
        ),
      ),
    );
    reg.collector(
      'dstm_server_rpc_rejected_total',
      'ONC RPC calls refused before a procedure ran, by transport and reason.',
      'counter',
      () =>
        Object.entries(this.rpc.stats().rejected).flatMap(([transport, byReason]) =>
          Object.entries(byReason).map(([reason, value]) => ({ labels: { transport, reason }, value })),
        ),
    );
    reg.collector(
      'dstm_server_rpc_udp_replies_total',
      'UDP replies by result: sent, failed (refused by the kernel, or too long), dropped (no room to queue, or after close).',
      'counter',
      () => {
        const r = this.rpc.stats().udpReplies;
        return (['sent', 'failed', 'dropped'] as const).map((result) => ({ labels: { result }, value: r[result] }));
      },
    );
    reg.collector(
      'dstm_server_rpc_dropped_total',
      'Calls dropped unanswered: garbage (a record whose call header cannot be read), overload (UDP, maxInFlight calls in progress).',
      'counter',
      () => {
        const st = this.rpc.stats();
        return [
          ...Object.entries(st.garbageRecords).map(([transport, value]) => ({
            labels: { transport, reason: 'garbage' },
            value,
          })),
          { labels: { transport: 'udp', reason: 'overload' }, value: st.overloadDrops },
        ];
      },
    );
    reg.collector(
      'dstm_server_rpc_tcp_closed_total',
      "TCP connections closed or refused by the server's limits, by reason.",
      'counter',
      () =>
        Object.entries(this.rpc.stats().tcpCutoffs).map(([reason, value]) => ({
          labels: { reason: snakeCase(reason) },
          value,
        })),
    );
    reg.collector(
      'dstm_server_rpc_udp_send_stalls_total',
      "Times a UDP socket's send buffer was full: its replies waited for it to drain.",
      'counter',
      () => [{ value: this.rpc.stats().udpReplies.stalls }],
    );
    if (this.tls) {
      const tls = this.tls;
      reg.collector(
        'dstm_server_tls_total',
        'RPC-with-TLS probes, handshakes, handshake failures by reason, plain calls refused.',
        'counter',
        () => {
          const s = tls.stats();
          const ev: [string, number][] = [
            ['probe', s.probes],
            ['bad_probe', s.badProbes],
            ['handshake', s.handshakes],
            ['plain_refused_udp', s.plainRefused.udp],
            ['plain_refused_tcp', s.plainRefused.tcp],
          ];
          for (const [why, n] of Object.entries(s.failed)) ev.push([`failed_${why}`, n]);
          return ev.map(([event, value]) => ({ labels: { event }, value }));
        },
      );
    }
    reg.histogram(
      'dstm_server_rpc_duration_seconds',
      "Time from a call's decoded arguments to its reply, by procedure.",
      () =>
        Object.entries(this.rpc.stats().latency).map(([procedure, histogram]) => ({
          labels: { procedure },
          histogram,
        })),
    );
    registerProcessMetrics(reg, 'server');
    // the counts by state: three rows in SQLite (kept by triggers), an index scan in PostgreSQL
    const m = await serveMetrics(reg, host, port, async () => {
      if (this.store.health().ok) this.seen = await this.store.counts();
    });
    this.metricsServer = m.server;
    this.log.info('metrics', { address: formatEndpoint({ host, port: m.port }) });
  }

  /** Expire and reclaim due leases; runs once a second, and never twice at once. */
  async sweep(): Promise<void> {
    // While the store is down every sweep would fail: the health change was logged once, that is enough.
    if (this.sweeping || !this.store.health().ok) return;
    this.sweeping = true;
    const behind = this.clock?.behind() ?? 0;
    if (behind > 1 && !this.stepLogged)
      this.log.warn(
        'the wall clock stepped forward: lease times catch up with it gradually, so that no address is reclaimed early',
        { behind_s: behind },
      );
    this.stepLogged = behind > 1;
    try {
      while (await this.leases.sweepDue()) {
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
   * binding is lost; listen addresses, transports, program, state_dir, store, metrics and the log level need a
   * restart.
   */
  async reload(next: ServerConfig): Promise<string[]> {
    const fixed: string[] = (
      [
        'listen',
        'transports',
        'program',
        'state_dir',
        'store',
        'store_pool',
        'metrics',
        'rpcbind',
        'log_level',
      ] as const
    ).filter((k) => JSON.stringify(next[k], replacer) !== JSON.stringify(this.config[k], replacer));
    // The TLS policy needs a restart; certificate, key and CA are read again (a renewed certificate at the same
    // path included) for the connections to come, before anything else changes: files that do not load keep all.
    for (const k of ['policy', 'handshake_timeout'] as const) {
      if (next.tls[k] === this.config.tls[k]) continue;
      fixed.push(`tls.${k}`);
      next = { ...next, tls: { ...next.tls, [k]: this.config.tls[k] } };
    }
    if (this.tls) this.tls.reload(loadTlsFiles(next.tls));
    await this.leases.configure(policyOf(next));
    this.rpcs.configure(accessOf(next));
    if (this.clock) this.clock.slew = slewOf(next);
    warnTepsInPools(next, this.log);
    // The keys that need a restart keep their running values, so the next reload still reports them.
    this.config = {
      ...next,
      ...Object.fromEntries(
        fixed.filter((k) => !k.startsWith('tls.')).map((k) => [k, this.config[k as keyof ServerConfig]]),
      ),
    };
    this.log.info('configuration reloaded', {
      free: this.leases.available,
      pool: this.leases.poolSize,
      ...(this.leases.poolKnown ? {} : { free_from: 'the store, once it is back (it is down)' }),
      ...(fixed.length ? { needs_restart: fixed } : {}),
    });
    return fixed;
  }

  /**
   * Answer the held BINDINGS long-polls at once, let the calls in progress finish (2 s at most), then close the
   * store: no handler runs after it is closed (a late one is answered UNAVAILABLE).
   */
  async stop(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.leases.shutdown();
    await this.rpc.close(2000);
    if (this.metricsServer) await closeMetrics(this.metricsServer);
    while (this.sweeping) await new Promise((r) => setTimeout(r, 5));
    await this.store.close();
  }
}

/** How fast the lease clock may catch up with a wall clock stepped forward without reclaiming early (see clock.ts). */
function slewOf(c: ServerConfig): number {
  return c.hold / c.max_lease;
}

function warnTepsInPools(c: ServerConfig, log: Logger): void {
  for (const t of tepAddressesInPools(c)) log.warn('a TEP address is inside a pool: it is never leased', t);
}

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? formatIPv6(v) : v;
}

/** A stats() counter's name as a metric label (evictedIdle: evicted_idle). */
function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
