// The families every dstm daemon exposes besides its own: dstm_build_info and the process metrics, under the names
// the Prometheus client libraries use (process_cpu_seconds_total, ...), so stock dashboards and alerts apply.
// All are read at scrape time.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Registry } from './metrics';

/** The version in dstm's package.json (found upwards from this file: it is in src/lib or dist/src/lib). */
export function dstmVersion(): string {
  for (let dir = __dirname; dirname(dir) !== dir; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'dstm') return pkg.version ?? 'unknown';
  }
  return 'unknown';
}

/** Soft limit of open files, from /proc/self/limits; undefined where there is no /proc. */
function maxFds(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? (m[1] === 'unlimited' ? Infinity : Number(m[1])) : undefined;
  } catch {
    return undefined;
  }
}

function openFds(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length - 1; // less the descriptor readdir itself had open
  } catch {
    return undefined;
  }
}

/** Adds dstm_build_info{version, node, component} and the process_* families to `reg`. */
export function registerProcessMetrics(reg: Registry, component: string): void {
  const version = dstmVersion();
  const started = Date.now() / 1000 - process.uptime();
  const one = (v: number | undefined) => (v === undefined ? [] : [{ value: v }]);
  reg.collector('dstm_build_info', 'The running dstm: version, Node.js version and daemon; always 1.', 'gauge', () => [
    { labels: { version, node: process.version, component }, value: 1 },
  ]);
  reg.collector('process_cpu_seconds_total', 'User and system CPU time spent, in seconds.', 'counter', () => {
    const u = process.cpuUsage();
    return [{ value: (u.user + u.system) / 1e6 }];
  });
  reg.collector('process_resident_memory_bytes', 'Resident memory size in bytes.', 'gauge', () =>
    one(process.memoryUsage.rss()),
  );
  reg.collector('process_open_fds', 'Open file descriptors.', 'gauge', () => one(openFds()));
  reg.collector('process_max_fds', 'Most file descriptors the process may open.', 'gauge', () => one(maxFds()));
  reg.collector('process_start_time_seconds', 'Start time of the process, in seconds since 1970.', 'gauge', () =>
    one(Math.floor(started)),
  );
}
