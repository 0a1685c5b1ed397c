// Structured logging for every dstm daemon: one line per event, JSON when stderr is not a terminal (so journald,
// files and log shippers get machine-readable records) and `LEVEL message key=value` on a terminal. When stderr is
// the journal (systemd sets JOURNAL_STREAM to its device:inode), each line starts with its syslog priority, `<3>`
// for error to `<7>` for debug, which journald takes as the record's PRIORITY: `journalctl -p err` then works.
import { fstatSync } from 'node:fs';

export const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type Level = (typeof LEVELS)[number];
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A logger that adds `fields` to every record (e.g. {component: 'tep'}). */
  child(fields: Fields): Logger;
  enabled(level: Level): boolean;
}

export interface LoggerOptions {
  /** Minimum level written; default from DSTM_LOG_LEVEL (unless empty), else 'info'. */
  level?: Level;
  /** JSON lines; default: true unless the stream is a terminal. */
  json?: boolean;
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Prefix each line with its syslog priority (sd-daemon(3)); default: stderr is the journal's stream. */
  journal?: boolean;
}

/** syslog(3) priorities: what journald stores as PRIORITY. */
export const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/** Whether file descriptor `fd` is the journal stream systemd announced in `announced` (JOURNAL_STREAM, "dev:ino"). */
export function isJournalStream(announced: string | undefined, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(announced ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

export function parseLevel(s: string): Level {
  if ((LEVELS as readonly string[]).includes(s)) return s as Level;
  throw new Error(`log level must be one of ${LEVELS.join(', ')}, got "${s}"`);
}

function plainValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === 'string') return /^[\w.:/@[\]-]*$/.test(v) ? v : JSON.stringify(v);
  return typeof v === 'bigint' ? v.toString() : JSON.stringify(v);
}

function jsonSafe(_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) return v.message;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  return v;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const json = options.json ?? !stream.isTTY;
  const journal = options.journal ?? (stream === process.stderr && isJournalStream(process.env.JOURNAL_STREAM));
  const min = LEVELS.indexOf(options.level ?? parseLevel(process.env.DSTM_LOG_LEVEL || 'info'));

  const make = (bound: Fields): Logger => {
    const write = (level: Level, msg: string, fields?: Fields): void => {
      if (LEVELS.indexOf(level) < min) return;
      const all = fields ? { ...bound, ...fields } : bound;
      const prefix = journal ? `<${PRIORITY[level]}>` : '';
      if (json) {
        stream.write(prefix + JSON.stringify({ time: new Date().toISOString(), level, msg, ...all }, jsonSafe) + '\n');
      } else {
        const kv = Object.entries(all)
          .map(([k, v]) => ` ${k}=${plainValue(v)}`)
          .join('');
        stream.write(`${prefix}${level.toUpperCase().padEnd(5)} ${msg}${kv}\n`);
      }
    };
    return {
      debug: (m, f) => write('debug', m, f),
      info: (m, f) => write('info', m, f),
      warn: (m, f) => write('warn', m, f),
      error: (m, f) => write('error', m, f),
      child: (f) => make({ ...bound, ...f }),
      enabled: (level) => LEVELS.indexOf(level) >= min,
    };
  };
  return make({});
}
