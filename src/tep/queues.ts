// More than one core (issue 11): the TEP's pipeline on `count` queues, one per thread. The TUN device is opened with
// IFF_MULTI_QUEUE (one fd per queue; the kernel spreads what it routes into the device by flow) and each queue has
// its own raw IPIP socket whose BPF filter keeps the tunnel packets whose inner flow hashes to it (every raw socket
// would otherwise get a copy of every packet). Queue 0 runs in the main thread beside the control plane (binding
// feed, control socket, metrics) and alone reads ICMPv6 errors; queues 1.. run in worker threads (queue-worker.ts).
//
// One DTI/encapsulation module: every queue is a Tep (tep.ts) running the same Tunnel (src/dti/tunnel.ts) over its
// own devices; nothing of the pipeline is duplicated or specialised per thread, only the fds differ. What a packet
// decision reads is per queue and kept identical: the binding table is replicated, in order, from the one control
// plane (every bind, unbind, resync and reload the main thread applies is posted to each worker, which applies it
// to its own table by the same generations), rather than shared, because the table's hash indexes are rewritten in
// place by inserts, deletions and growth, and a lock-free reader in another thread could then miss a binding or see
// a half-written one, which for anti-spoofing is not acceptable. The cost is memory: each queue holds its own table
// (104–208 bytes per binding per queue, see bindings.ts). Path MTUs learnt by queue 0 are posted to the others.
// Counters and per-binding traffic stay per queue and are summed when read (`dstm tep stats`, /metrics).
import { Worker } from 'node:worker_threads';
import { extname, join } from 'node:path';
import type { TunDevice } from '../dti/device';
import type { Logger } from '../lib/log';
import {
  STATS_BINDINGS,
  TOP_TALKERS,
  Tep,
  trafficJson,
  type ServerBinding,
  type StatsBinding,
  type TepOptions,
  type TepStats,
  type TrafficJson,
} from './tep';

/** Queues at most (threads; each holds a replica of the binding table). */
export const MAX_QUEUES = 64;

/** What a worker is started with: the TEP's options without the functions, its queue, its log level. */
export interface QueueWorkerData {
  opts: Omit<TepOptions, 'log' | 'clock'>;
  queue: { index: number; count: number };
  logLevel: 'debug' | 'warn';
}

/** The control plane's messages to a worker, applied in order. */
export type ToWorker =
  | { op: 'bind'; ipv4: number; ipv6: Uint8Array; ends: number; starts: number }
  | { op: 'unbind'; ipv4: number }
  | { op: 'resync'; ipv4: Uint32Array; ipv6: Uint8Array; starts: Float64Array; ends: Float64Array }
  | { op: 'reconfigure'; config: Reconfig }
  | { op: 'pmtu'; node: Uint8Array; mtu: number }
  | { op: 'stats'; bindings: boolean }
  | { op: 'traffic'; ipv4: string[] }
  | { op: 'stop' };

export type FromWorker =
  { op: 'ready' } | { op: 'stats'; stats: TepStats } | { op: 'traffic'; traffic: TrafficJson[] } | { op: 'stopped' };

type Reconfig = Parameters<Tep['reconfigure']>[0];

interface QueueWorker {
  worker: Worker;
  /** Answers awaited, in the order asked (a port delivers in order). */
  waiting: ((m: FromWorker) => void)[];
}

/** The TEP on `count` queues: the main thread's Tep (queue 0) plus one worker per further queue. */
export class TepQueues {
  private stopping = false;

  private constructor(
    readonly tep: Tep,
    readonly tun: TunDevice,
    private readonly workers: QueueWorker[],
    private readonly log: Logger,
  ) {
    tep.onPathMtuLowered = (node, mtu) => this.post({ op: 'pmtu', node, mtu });
    for (const w of workers) {
      w.worker.on('message', (m: FromWorker) => w.waiting.shift()?.(m));
      w.worker.on('error', (err) => this.failed(err));
      w.worker.on('exit', (code) => this.failed(new Error(`queue worker exited (status ${code})`)));
    }
  }

  /** Opens queue 0 here and starts the workers of the others; resolves once every queue forwards. */
  static async open(opts: TepOptions, count: number): Promise<TepQueues> {
    if (!(Number.isInteger(count) && count >= 1 && count <= MAX_QUEUES))
      throw new RangeError(`queues: 1–${MAX_QUEUES}`);
    const tep = new Tep({ ...opts, queue: { index: 0, count } });
    const tun = tep.open();
    const workers: QueueWorker[] = [];
    try {
      const { log: _log, clock: _clock, ...plain } = opts;
      const logLevel = opts.log.enabled('debug') ? 'debug' : 'warn'; // the main thread logs the bindings once
      for (let index = 1; index < count; index++) {
        // every queue asks for what queue 0 got: a multi-queue device's queues all carry virtio-net headers or none;
        // one that cannot fails to start (openTun, Tep.open), and its error is this one's
        const data: QueueWorkerData = { opts: { ...plain, offload: tun.offload }, queue: { index, count }, logLevel };
        const worker = startWorker(data);
        workers.push({ worker, waiting: [] });
        await started(worker, index);
      }
    } catch (err) {
      for (const w of workers) void w.worker.terminate();
      tep.close();
      throw err;
    }
    return new TepQueues(tep, tun, workers, opts.log);
  }

  // --- the control plane: applied here and posted to every worker, in order ----------------------------------

  bind(ipv4: number, ipv6: Uint8Array, endsSec: number, startsSec = 0): void {
    this.tep.bind(ipv4, ipv6, endsSec, startsSec);
    this.post({ op: 'bind', ipv4, ipv6, ends: endsSec, starts: startsSec });
  }

  unbind(ipv4: number): void {
    this.tep.unbind(ipv4);
    this.post({ op: 'unbind', ipv4 });
  }

  async resync(bindings: Iterable<ServerBinding>): Promise<void> {
    if (this.workers.length === 0) return this.tep.resync(bindings);
    const list = Array.from(bindings);
    const packed = {
      ipv4: Uint32Array.from(list, (b) => b.ipv4),
      ipv6: new Uint8Array(list.length * 16),
      starts: Float64Array.from(list, (b) => b.starts),
      ends: Float64Array.from(list, (b) => b.ends),
    };
    list.forEach((b, i) => packed.ipv6.set(b.ipv6, i * 16));
    this.post({ op: 'resync', ...packed });
    return this.tep.resync(list);
  }

  reconfigure(config: Reconfig): void {
    this.tep.reconfigure(config);
    this.post({ op: 'reconfigure', config });
  }

  routedPrefixes(): string[] {
    return this.tep.routedPrefixes();
  }

  /**
   * The counters of every queue, summed (bindings from queue 0's table, their traffic summed over queues). Then the
   * top talkers each queue proposes, with what every queue forwarded for them, asked for by address: a binding
   * beyond the first STATS_BINDINGS is in no queue's list, and its total (a metric counter) must count every queue.
   */
  async stats(opts: { bindings?: boolean } = {}): Promise<TepStats> {
    const bindings = opts.bindings !== false;
    const [mine, ...theirs] = await Promise.all([
      this.tep.statsChunked({ bindings }),
      ...this.workers.map((w) => this.ask(w, { op: 'stats', bindings })),
    ]);
    const all = [mine as TepStats, ...theirs.map((m) => (m as { stats: TepStats }).stats)];
    if (all.length === 1) return all[0];
    const talkers = [...new Set(all.flatMap((s) => s.top_talkers.map((b) => b.ipv4)))];
    const shares = await Promise.all(this.workers.map((w) => this.ask(w, { op: 'traffic', ipv4: talkers })));
    return mergeStats(all, talkers, [
      this.tep.trafficOf(talkers),
      ...shares.map((m) => (m as { traffic: TrafficJson[] }).traffic),
    ]);
  }

  async close(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.workers.map((w) => this.ask(w, { op: 'stop' })));
    await Promise.all(this.workers.map((w) => w.worker.terminate()));
    this.tep.close();
  }

  private post(m: ToWorker): void {
    for (const w of this.workers) w.worker.postMessage(m);
  }

  private ask(w: QueueWorker, m: ToWorker): Promise<FromWorker> {
    return new Promise((resolve) => {
      w.waiting.push(resolve);
      w.worker.postMessage(m);
    });
  }

  /** A queue that stops would silently lose its share of the traffic: fatal, as a device that stops reading is. */
  private failed(err: Error): void {
    if (this.stopping) return;
    this.log.error('a forwarding queue failed', { error: err.message });
    process.nextTick(() => {
      throw err;
    });
  }
}

/** Resolves on the worker's first message (it forwards), rejects if it fails or exits first. */
function started(worker: Worker, index: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const exit = (code: number): void => done(new Error(`queue ${index} did not start (status ${code})`));
    const done = (err?: Error): void => {
      worker.off('message', ready).off('error', done).off('exit', exit);
      if (err) reject(err);
      else resolve();
    };
    const ready = (): void => done();
    worker.on('message', ready).on('error', done).on('exit', exit);
  });
}

/** A worker on queue-worker.js, or on queue-worker.ts through tsx where the sources run (tests, benches). */
function startWorker(workerData: QueueWorkerData): Worker {
  const file = join(__dirname, `queue-worker${extname(__filename)}`);
  if (extname(file) !== '.ts') return new Worker(file, { workerData });
  return new Worker(`require('tsx/cjs'); require(${JSON.stringify(file)});`, { eval: true, workerData });
}

/**
 * Sums the statistics of several queues: counters and per-binding traffic added, gauges (offload_active, tun_uring, path MTUs
 * lowered) and the binding count from queue 0. Top talkers are the best of `talkers` (every queue's own top
 * talkers), by their traffic summed from `shares` (each queue's for `talkers`, in that order).
 */
export function mergeStats(all: TepStats[], talkers: readonly string[], shares: readonly TrafficJson[][]): TepStats {
  const [first] = all;
  if (all.length === 1) return first;
  const add = (into: Record<string, number>, from: Record<string, number>): void => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  };
  const forwarded = trafficJson();
  const drops: Record<string, number> = {};
  const events: Record<string, number> = {};
  const traffic = new Map<string, StatsBinding['forwarded']>();
  const sumInto = (b: StatsBinding): void => {
    const t = traffic.get(b.ipv4);
    if (t) add(t as unknown as Record<string, number>, b.forwarded as unknown as Record<string, number>);
    else traffic.set(b.ipv4, { ...b.forwarded });
  };
  for (const s of all) {
    add(forwarded, s.forwarded);
    add(drops, s.drops);
    add(events, s.events);
    s.bindings.forEach(sumInto);
  }
  events.offload_active = first.events.offload_active;
  events.tun_uring = first.events.tun_uring;
  const withTraffic = (b: StatsBinding): StatsBinding => ({ ...b, forwarded: traffic.get(b.ipv4) ?? b.forwarded });
  const candidates = new Map<string, StatsBinding>();
  for (const s of all) for (const b of s.top_talkers) candidates.set(b.ipv4, b);
  const totals = talkers.map((a, i) => {
    const sum = trafficJson();
    for (const queue of shares) add(sum, queue[i]);
    return { ...candidates.get(a)!, forwarded: sum };
  });
  const bytes = (b: StatsBinding): number => b.forwarded.bytes_to_ipv4 + b.forwarded.bytes_to_ipv6;
  return {
    ...first,
    forwarded,
    drops,
    events,
    bindings: first.bindings.slice(0, STATS_BINDINGS).map(withTraffic),
    top_talkers: totals.sort((a, b) => bytes(b) - bytes(a)).slice(0, TOP_TALKERS),
    queues: all.flatMap((s) => s.queues),
  };
}
