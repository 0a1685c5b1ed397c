// Prometheus text exposition (format 0.0.4) for the server and the TEP. Hot paths keep their own plain counters;
// a collector reads them at scrape time, so metrics cost nothing per packet or per call.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Labels = Record<string, string>;
export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface Sample {
  labels?: Labels;
  value: number | bigint;
}

interface Family {
  name: string;
  help: string;
  type: MetricType;
  collect: () => Iterable<Sample>;
  histograms?: () => Iterable<{ labels?: Labels; histogram: Histogram }>;
}

/** Upper bounds, in seconds, of the latency buckets: 50 µs to 10 s, enough for an in-memory call and an fsync. */
export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
] as const;

/** Observations counted into fixed buckets; observe() allocates nothing (it sits on the RPC call path). */
export class Histogram {
  /** counts[i]: observations <= bounds[i] and > bounds[i-1]; the last slot is +Inf. */
  private readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[] = LATENCY_BUCKETS) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }

  /** Cumulative counts per bound, +Inf last (Prometheus's `le` buckets). */
  cumulative(): number[] {
    let n = 0;
    return Array.from(this.counts, (c) => (n += c));
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels: Labels | undefined): string {
  if (!labels) return '';
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** A counter or gauge with labels, for events counted where they happen (not per packet). */
export class Metric {
  private readonly values = new Map<string, { labels: Labels; value: number }>();

  inc(labels: Labels = {}, by = 1): void {
    const key = formatLabels(labels);
    const cur = this.values.get(key);
    if (cur) cur.value += by;
    else this.values.set(key, { labels, value: by });
  }

  set(labels: Labels, value: number): void {
    this.values.set(formatLabels(labels), { labels, value });
  }

  *samples(): Iterable<Sample> {
    yield* this.values.values();
  }
}

export class Registry {
  private readonly families = new Map<string, Family>();

  /** Register a family whose samples are read at scrape time from state the caller already keeps. */
  collector(name: string, help: string, type: MetricType, collect: () => Iterable<Sample>): void {
    if (!NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
    if (this.families.has(name)) throw new Error(`metric "${name}" registered twice`);
    this.families.set(name, { name, help, type, collect });
  }

  /** A histogram family: one Histogram per label set, read at scrape time. */
  histogram(name: string, help: string, collect: () => Iterable<{ labels?: Labels; histogram: Histogram }>): void {
    this.collector(name, help, 'histogram', () => []);
    this.families.get(name)!.histograms = collect;
  }

  counter(name: string, help: string): Metric {
    return this.metric(name, help, 'counter');
  }

  gauge(name: string, help: string): Metric {
    return this.metric(name, help, 'gauge');
  }

  render(): string {
    let out = '';
    for (const f of this.families.values()) {
      out += `# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${f.name} ${f.type}\n`;
      for (const s of f.collect())
        out += `${f.name}${formatLabels(s.labels)} ${s.value === Infinity ? '+Inf' : s.value}\n`;
      for (const { labels, histogram: h } of f.histograms?.() ?? []) {
        const cum = h.cumulative();
        cum.forEach((n, i) => {
          const le = i < h.bounds.length ? String(h.bounds[i]) : '+Inf';
          out += `${f.name}_bucket${formatLabels({ ...labels, le })} ${n}\n`;
        });
        out += `${f.name}_sum${formatLabels(labels)} ${h.sum}\n${f.name}_count${formatLabels(labels)} ${h.count}\n`;
      }
    }
    return out;
  }

  private metric(name: string, help: string, type: MetricType): Metric {
    const m = new Metric();
    this.collector(name, help, type, () => m.samples());
    return m;
  }
}

/** Scrapers connected at once; a Prometheus server or two needs a few, more are refused (connection closed). */
export const METRICS_MAX_CONNECTIONS = 64;
/** Time a client has to send its whole request: one that trickles bytes cannot hold a connection (or stop()). */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;

/**
 * Serve GET and HEAD /metrics on host:port (port 0 picks one), GET after `prepare` if given; resolves once listening.
 * One `prepare` runs at a time, and the scrapes that come while it runs share it: scrapes never queue on the store (a
 * database pool the lease calls share) however many come at once, and a scrape after one has ended reads afresh.
 * Close with closeMetrics.
 */
export async function serveMetrics(
  registry: Registry,
  host: string,
  port: number,
  prepare?: () => Promise<void>,
): Promise<{ server: Server; port: number }> {
  let running: Promise<void> | null = null;
  const prepared = (): Promise<void> => {
    if (!prepare) return Promise.resolve();
    // `prepare` reads what the collectors show from somewhere asynchronous (a database); a failure still renders.
    running ??= prepare()
      .catch(() => undefined)
      .finally(() => (running = null));
    return running;
  };
  const server = createServer(
    {
      requestTimeout: METRICS_REQUEST_TIMEOUT_MS,
      headersTimeout: METRICS_REQUEST_TIMEOUT_MS,
      // the timeouts above are enforced at this interval (30 s by default)
      connectionsCheckingInterval: 1000,
    },
    (req, res) => {
      // A scrape has no body: one announced is refused and the connection closed, rather than read (a client could
      // announce 100 MB and send a byte now and then).
      if (req.headers['transfer-encoding'] || Number(req.headers['content-length'] ?? 0) > 0) {
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('no request body\n');
        return;
      }
      if ((req.url ?? '/').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res
          .writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD', connection: 'close' })
          .end('GET or HEAD\n');
        return;
      }
      // HEAD (a liveness probe) answers the same headers without collecting or preparing anything
      const headers = { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' };
      if (req.method === 'HEAD') {
        res.writeHead(200, headers).end();
        return;
      }
      void prepared().then(() => {
        if (!res.destroyed) res.writeHead(200, headers).end(registry.render());
      });
    },
  );
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/** Stop listening and drop every connection, a scrape under way or a client still sending: stop() waits for none. */
export function closeMetrics(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  return closed;
}
