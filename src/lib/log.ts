// Structured logging for every dstm daemon: one line per event, JSON when stderr is not a terminal (so journald,
// files and log shippers get machine-readable records) and `LEVEL message key=value` on a terminal.

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
  /** Minimum level written; default from DSTM_LOG_LEVEL, else 'info'. */
  level?: Level;
  /** JSON lines; default: true unless the stream is a terminal. */
  json?: boolean;
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
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
  const min = LEVELS.indexOf(options.level ?? parseLevel(process.env.DSTM_LOG_LEVEL ?? 'info'));

  const make = (bound: Fields): Logger => {
    const write = (level: Level, msg: string, fields?: Fields): void => {
      if (LEVELS.indexOf(level) < min) return;
      const all = fields ? { ...bound, ...fields } : bound;
      if (json) {
        stream.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...all }, jsonSafe) + '\n');
      } else {
        const kv = Object.entries(all).map(([k, v]) => ` ${k}=${plainValue(v)}`).join('');
        stream.write(`${level.toUpperCase().padEnd(5)} ${msg}${kv}\n`);
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
