// Reading the one configuration file: JSON, one top-level object per component ("server", "client", "tep", ...).
// A syntax error names the line and column; a section is validated by its schema (see schema.ts).
import { readFileSync } from 'node:fs';
import { ConfigError, parseWithOverrides, type Fields, type Infer, type Override } from './schema';

/** Top-level sections a dstm configuration file may hold; anything else is a typo and refused. */
export const SECTIONS = ['server', 'client', 'tep', 'static'] as const;

/** Where the commands look for a configuration file when --config is not given (and DSTM_CONFIG is unset). */
export const DEFAULT_CONFIG_FILE = '/etc/dstm/dstm.json';

export type RawConfig = Partial<Record<(typeof SECTIONS)[number], unknown>>;

function lineCol(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return `line ${line}, column ${offset - before.lastIndexOf('\n')}`;
}

/**
 * Where JSON.parse stopped in `text`, for the messages that do not say ("Unexpected token 'x', "..." is not valid
 * JSON"): the shortest prefix that fails for a reason other than ending too soon ends just past the bad character.
 */
function errorOffset(text: string): number {
  const bad = (k: number): boolean => {
    const t = text.slice(0, k);
    try {
      JSON.parse(t);
      return false;
    } catch (err) {
      const msg = (err as Error).message;
      if (/Unexpected end of JSON input/.test(msg)) return false;
      const pos = /at position (\d+)/.exec(msg);
      return !(pos && Number(pos[1]) >= t.length);
    }
  };
  let lo = 1;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (bad(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo - 1;
}

/**
 * The first key given twice in one object of `text` (valid JSON), which JSON.parse would take silently, the last one
 * winning: its path ("server.pools") and the offsets of both.
 */
function duplicateKey(text: string): { path: string; at: number; first: number } | undefined {
  type Frame = { object: boolean; path: string; keys: Map<string, number>; key: string; index: number };
  const stack: Frame[] = [];
  const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const top = stack.at(-1);
    if (c === '{' || c === '[') {
      const path = !top ? '' : top.object ? join(top.path, top.key) : `${top.path}[${top.index}]`;
      stack.push({ object: c === '{', path, keys: new Map(), key: '', index: 0 });
    } else if (c === '}' || c === ']') stack.pop();
    else if (c === ',' && top && !top.object) top.index++;
    else if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      let next = end + 1;
      while (/\s/.test(text[next] ?? '')) next++;
      // in an object, a string followed by ':' is a key
      if (top?.object && text[next] === ':') {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        const first = top.keys.get(key);
        if (first !== undefined) return { path: join(top.path, key), at: i, first };
        top.keys.set(key, i);
        top.key = key;
      }
      i = end;
    }
  }
  return undefined;
}

/** Parse configuration text; `name` is used in messages (the file path). A leading UTF-8 BOM is skipped. */
export function parseConfigText(text: string, name: string): RawConfig {
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const msg = (err as Error).message;
    const pos = /at position (\d+)/.exec(msg);
    const offset = pos ? Number(pos[1]) : /Unexpected end of JSON input/.test(msg) ? text.length : errorOffset(text);
    // V8 quotes the text in some messages ("..." is not valid JSON): left out, it may hold a password
    const why = msg
      .replace(/ in JSON at position \d+.*$/s, '')
      .replace(/ at position \d+.*$/s, '')
      .replace(/, (\.\.\.)?".*" is not valid JSON$/s, '');
    throw new ConfigError(name, undefined, 'JSON', `${name}: not valid JSON at ${lineCol(text, offset)}: ${why}`);
  }
  const dup = duplicateKey(text);
  if (dup) {
    const where = `${lineCol(text, dup.at)}, first at ${lineCol(text, dup.first)}`;
    throw new ConfigError(name, undefined, 'each key once', `${name}: ${dup.path}: given twice (${where})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(name, raw, `a JSON object with sections ${SECTIONS.join(', ')}`);
  }
  for (const k of Object.keys(raw)) {
    if (!(SECTIONS as readonly string[]).includes(k)) {
      const known = SECTIONS.join(', ');
      throw new ConfigError(
        `${name}: ${k}`,
        (raw as Record<string, unknown>)[k],
        `one of the sections ${known}`,
        `${name}: ${k}: unknown section (known sections: ${known})`,
      );
    }
  }
  return raw as RawConfig;
}

/**
 * Read the configuration: `explicit` (from --config), else DSTM_CONFIG, must exist; otherwise DEFAULT_CONFIG_FILE is
 * read if present, and no file at all means every key takes its default. An empty DSTM_CONFIG is unset (as the other
 * variables are); an empty --config names no file.
 */
export function readConfig(explicit?: string): { raw: RawConfig; file?: string } {
  if (explicit === '') throw new ConfigError('--config', explicit, 'a file path');
  const named = explicit ?? (process.env.DSTM_CONFIG || undefined);
  const file = named ?? DEFAULT_CONFIG_FILE;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && named === undefined) return { raw: {} };
    const why = code ?? (err as Error).message;
    throw new ConfigError(file, undefined, 'a readable file', `${file}: cannot read the configuration file: ${why}`);
  }
  return { raw: parseConfigText(text, file), file };
}

/**
 * One section of the configuration (`explicit` or the default file) with command-line overrides on top, validated by
 * its schema; `where` is the path errors name (the file and the section), for checks that span keys.
 */
export function loadSection<F extends Fields>(
  fields: F,
  section: (typeof SECTIONS)[number],
  explicit: string | undefined,
  overrides: readonly Override[],
): { config: Infer<F>; file?: string; where: string } {
  const { raw, file } = readConfig(explicit);
  const where = file ? `${file}: ${section}` : section;
  return { config: parseWithOverrides(fields, raw[section], where, overrides), file, where };
}
