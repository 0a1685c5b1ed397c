// `dstm tep` as a library: from a validated "tep" configuration to a running border router (devices, routes,
// control socket, metrics, binding feed), and back down.
import type { Server } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { createSecureContext } from 'node:tls';
import { loadSection } from '../config/load';
import { ConfigError, showRecord } from '../config/schema';
import { flagOverrides, type FlagsOf } from '../config/settings';
import { tepFields, type TepConfig } from '../config/tep-schema';
import type { Logger } from '../lib/log';
import { closeMetrics, Registry, serveMetrics } from '../lib/metrics';
import { registerProcessMetrics } from '../lib/process-metrics';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../lib/addr';
import { disjointPools } from '../config/types';
import { formatEndpoint } from '../lib/endpoint';
import { BindingFeed, type FeedBinding } from '../protocol/binding-feed';
import { RpcClient, RpcError } from '../rpc';
import { loadClientTls } from '../rpc/tls';
import { serveControl } from '../lib/control';
import { registerTepMetrics, type ServerBinding, type StaticMapping, type Tep, type TepStats } from './tep';
import { TepQueues } from './queues';
import { ip, runIp } from '../dti/netconfig';
import { setupTepNetwork, teardownTepNetwork } from './netsetup';

export interface RunningTep {
  /** Queue 0's pipeline (in this thread). */
  tep: Tep;
  /** Every queue: the control plane goes through it, statistics are summed by it. */
  queues: TepQueues;
  /**
   * Apply a reloaded configuration (SIGHUP): static mappings, pools (bindings and routes), prefixes and unreachable
   * change at once; the keys that need a restart (device, addresses, the server, ...) are returned, not applied.
   */
  reload(next: TepConfig): Promise<string[]>;
  stop(): Promise<void>;
}

/** The configuration in the file's syntax, every key (--check, the start-up log, what a reload changed). */
export function describeTep(c: TepConfig): Record<string, unknown> {
  return showRecord(tepFields, c);
}

/** The configuration as logged: the static mappings counted, not listed (Annex A deployments have thousands). */
function logged(shown: Record<string, unknown>, c: TepConfig): Record<string, unknown> {
  const { static: _list, ...rest } = shown;
  return { ...rest, static_mappings: c.static.length };
}

/** The command's flags: one per key that declares one (tep-schema.ts), and --config. */
export type TepFlags = FlagsOf<typeof tepFields> & { config?: string };

/** The "tep" section with the command's flags on top, checked as a whole. */
export function loadTepConfig(flags: TepFlags): TepConfig {
  const given = flagOverrides(tepFields, flags);
  const { config, where } = loadSection(tepFields, 'tep', flags.config, given);
  const flagOf = new Map(given.map((o) => [o.key, o.flag]));
  checkTep(config, (key) => flagOf.get(key) ?? `${where}.${key}`);
  return config;
}

/**
 * Refuses configurations that parse but cannot work. `name` is how an error names a key: the flag that set it, else
 * its path in the file.
 */
export function checkTep(c: TepConfig, name: (key: keyof TepConfig) => string = (key) => `tep.${key}`): void {
  if (c.pools.length === 0 && c.static.length === 0) {
    throw new Error('nothing to forward: give at least one --pool (with --server) or one --static mapping');
  }
  if (c.server && c.pools.length === 0) throw new Error('--server needs the pools it serves (--pool CIDR)');
  disjointPools(c.pools, name('pools'));
  // Two mappings of one address are refused by the key's type (tep-schema.ts), as it parses.
  c.static.forEach((m, i) => {
    if (m.ipv4 === c.ipv4)
      throw new ConfigError(
        `${name('static')}[${i}].ipv4`,
        formatIPv4(m.ipv4),
        `an address other than the TEP's own IPv4 address (${name('ipv4')}): its node could send as the TEP`,
      );
  });
}

export async function startTep(c: TepConfig, log: Logger): Promise<RunningTep> {
  checkTep(c);
  const queues = await TepQueues.open(
    {
      address: c.address,
      ipv4: c.ipv4,
      pools: c.pools,
      prefixes: c.prefixes,
      statics: c.static,
      device: c.device,
      pathMtu: c.path_mtu,
      unreachable: c.unreachable,
      offload: c.offload,
      batch: c.batch,
      socketBuffer: c.socket_buffer,
      bindingCapacity: c.binding_capacity,
      log,
    },
    c.queues,
  );
  const { tep, tun } = queues;
  let control: Server | undefined;
  let metrics: HttpServer | undefined;
  let feed: BindingFeed | undefined;
  try {
    const device = { name: tun.name, mtu: tep.tunnel.tunnelMtu, txQueueLen: c.tx_queue_len };
    await setupTepNetwork(device, tep.routedPrefixes(), log);
    control = await serveControl(c.control, () => queues.stats());
    if (c.metrics) {
      const registry = new Registry();
      // every queue's, read before a scrape renders; without the binding list, which no metric shows
      let scraped: TepStats = tep.stats({ bindings: false });
      registerTepMetrics(registry, () => scraped);
      registry.collector('dstm_tep_icmp_sent_total', 'ICMP errors the TEP generated, by kind.', 'counter', () => [
        { labels: { kind: 'icmp4_error' }, value: scraped.events.icmp4_sent },
        { labels: { kind: 'icmp6_relayed_as_icmp4' }, value: scraped.events.icmp_relayed },
      ]);
      registerProcessMetrics(registry, 'tep');
      const prepare = async (): Promise<void> => void (scraped = await queues.stats({ bindings: false }));
      metrics = (await serveMetrics(registry, c.metrics.host, c.metrics.port, prepare)).server;
    }
    if (c.server) feed = followFeed(queues, c, log);
  } catch (err) {
    await queues.close();
    control?.close();
    if (metrics) await closeMetrics(metrics);
    throw err;
  }
  log.info('tep ready', logged(describeTep(c), c));
  let running = c;
  return {
    tep,
    queues,
    async reload(next) {
      checkTep(next);
      const was = describeTep(running);
      const now = describeTep(next);
      const live = { static: next.static, pools: next.pools, prefixes: next.prefixes, unreachable: next.unreachable };
      const fixed = Object.keys(now).filter((k) => !(k in live) && JSON.stringify(now[k]) !== JSON.stringify(was[k]));
      const routed = queues.routedPrefixes();
      reconfigureStatics(queues, feed, running.static, { ...live, statics: next.static });
      const routes = queues.routedPrefixes();
      await runIp([
        ...routes.filter((r) => !routed.includes(r)).map((r) => ip.routeReplace(r, tun.name)),
        ...routed.filter((r) => !routes.includes(r)).map((r) => ip.routeDel(r, tun.name)),
      ]);
      // keys that need a restart keep their running values, so the next reload still names them
      running = { ...running, ...live };
      log.info('configuration reloaded', {
        static_mappings: next.static.length,
        pools: now.pools,
        prefixes: now.prefixes,
        unreachable: now.unreachable,
        ...(fixed.length ? { needs_restart: fixed } : {}),
      });
      return fixed;
    },
    async stop() {
      await feed?.stop();
      await teardownTepNetwork(tun.name, queues.routedPrefixes());
      const last = await queues.stats();
      await queues.close();
      control?.close();
      if (metrics) await closeMetrics(metrics);
      log.info('tep stopped', { ...last.forwarded });
    },
  };
}

/** What a reload is applied to: every queue (TepQueues), or one Tep. */
export type ReloadTarget = Pick<Tep, 'reconfigure' | 'bind'>;
/** The binding feed's current table, by either address (BindingFeed). */
export type FeedTable = Pick<BindingFeed, 'byIPv4' | 'byIPv6'>;

/**
 * Applies a reload's live keys (Tep.reconfigure), then gives back to the server what the static mappings that went
 * held: the feed's current binding for each address and each node they covered, refused while they held it
 * (Tep.bind) and kept by the feed, is bound at once rather than at the server's next change for it (up to half a
 * lease). Through `target`, so every queue applies it after the reconfigure, in order, as any bind (a queue in a
 * resync applies it to the state being staged too). One the new mappings still hold stays refused.
 */
export function reconfigureStatics(
  target: ReloadTarget,
  feed: FeedTable | undefined,
  was: readonly StaticMapping[],
  c: Parameters<Tep['reconfigure']>[0],
): void {
  target.reconfigure(c);
  if (!feed) return;
  const key = (ipv4: number, ipv6: Uint8Array): string => `${ipv4} ${formatIPv6(ipv6)}`;
  const stay = new Set(c.statics.map((s) => key(s.ipv4, s.ipv6)));
  const held4 = new Set(c.statics.map((s) => s.ipv4));
  const held6 = new Set(c.statics.map((s) => formatIPv6(s.ipv6)));
  const freed = new Map<string, FeedBinding>();
  for (const s of was) {
    if (stay.has(key(s.ipv4, s.ipv6))) continue;
    for (const b of [feed.byIPv4.get(formatIPv4(s.ipv4)), feed.byIPv6.get(formatIPv6(s.ipv6))])
      if (b) freed.set(b.ip4, b);
  }
  for (const b of freed.values()) {
    const ipv4 = parseIPv4(b.ip4);
    if (!held4.has(ipv4) && !held6.has(b.ip6)) target.bind(ipv4, parseIPv6(b.ip6), b.ends, b.starts);
  }
}

/** --check: the TLS files read and loaded as the start reads them; throws, naming the one that does not load. */
export function checkTlsFiles(c: TepConfig): void {
  const m = loadClientTls(c.tls);
  if (m) createSecureContext({ ca: m.ca, cert: m.cert, key: m.key });
}

/** How long the check of each server below waits for it before going on to the next one. */
const TLS_CHECK_TIMEOUT_MS = 5000;

/**
 * With --tls, one probe, handshake and NULL call to the first server that answers before the TEP starts: one that does
 * not offer RPC-with-TLS, or a certificate that does not verify, is a configuration error retrying will not mend
 * (throws RpcError 'TLS'). A server that cannot be reached is left to the feed's retries.
 */
export async function checkFeedTls(c: TepConfig, log: Logger): Promise<void> {
  const tls = loadClientTls(c.tls);
  if (!tls || !c.server) return;
  for (const server of c.server) {
    let rpc: RpcClient | undefined;
    try {
      rpc = await RpcClient.connect({
        host: server.host,
        port: server.port,
        transport: 'tcp',
        program: c.program,
        version: 2,
        family: 6,
        localAddress: formatIPv6(c.feed_source ?? c.address),
        tls,
        // A session the server closes once before answering (a restart at that moment) is set up again; only a second
        // such close in a row is the refusal of this TEP's certificate (see RpcClient).
        timeoutMs: TLS_CHECK_TIMEOUT_MS,
      });
      await rpc.ping();
      return;
    } catch (err) {
      if (err instanceof RpcError && err.kind === 'TLS') throw err;
      log.warn('server not reached to check RPC-with-TLS; the feed retries', {
        server: formatEndpoint(server),
        error: (err as Error).message,
      });
    } finally {
      await rpc?.close();
    }
  }
}

/**
 * Follows the server's binding feed (a long poll, so a new binding reaches the TEP as soon as it is committed;
 * the feed retries through server restarts, moves to the next server when one fails, keeping its bindings, and
 * reloads the full state when the server's store was rebuilt).
 */
function followFeed(queues: TepQueues, c: TepConfig, log: Logger): BindingFeed {
  const feed = new BindingFeed({
    servers: c.server!,
    program: c.program,
    waitMs: c.feed_wait,
    local: formatIPv6(c.feed_source ?? c.address),
    tls: loadClientTls(c.tls),
    onSnapshot: (all) => queues.resync(serverBindings(all)),
  });
  feed.on('bind', (b: FeedBinding) => queues.bind(parseIPv4(b.ip4), parseIPv6(b.ip6), b.ends, b.starts));
  feed.on('unbind', (b: FeedBinding) => queues.unbind(parseIPv4(b.ip4)));
  feed.on('resync', (info: { size: number }) =>
    log.info('bindings synchronised with the server', { server: feed.server, bindings: info.size }),
  );
  feed.on('error', (err: Error, server: string) =>
    log.warn('binding feed call failed, retrying', { server, error: err.message }),
  );
  feed.on('server', (server: string) =>
    log.info('binding feed moves to the next server, keeping its bindings', { server }),
  );
  void feed.start();
  return feed;
}

function* serverBindings(all: Iterable<FeedBinding>): Iterable<ServerBinding> {
  for (const b of all) yield { ipv4: parseIPv4(b.ip4), ipv6: parseIPv6(b.ip6), starts: b.starts, ends: b.ends };
}
