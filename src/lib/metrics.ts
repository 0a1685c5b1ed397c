// Prometheus text exposition (format 0.0.4) for the server and the TEP. Hot paths keep their own plain counters;
// a collector reads them at scrape time, so metrics cost nothing per packet or per call.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Labels = Record<string, string>;
export type MetricType = 'counter' | 'gauge';

export interface Sample {
  labels?: Labels;
  value: number | bigint;
}

interface Family {
  name: string;
  help: string;
  type: MetricType;
  collect: () => Iterable<Sample>;
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
      for (const s of f.collect()) out += `${f.name}${formatLabels(s.labels)} ${s.value}\n`;
    }
    return out;
  }

  private metric(name: string, help: string, type: MetricType): Metric {
    const m = new Metric();
    this.collector(name, help, type, () => m.samples());
    return m;
  }
}

/** Serve GET /metrics on host:port (port 0 picks one), after `prepare` if given; resolves once listening. */
export async function serveMetrics(registry: Registry, host: string, port: number, prepare?: () => Promise<void>): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    // `prepare` reads what the collectors show from somewhere asynchronous (a database); a failure still renders.
    void (prepare?.() ?? Promise.resolve()).catch(() => undefined).then(() => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(registry.render());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}
