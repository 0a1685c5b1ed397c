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

/** Parse configuration text; `name` is used in messages (the file path). */
export function parseConfigText(text: string, name: string): RawConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const msg = (err as Error).message;
    const pos = /position (\d+)/.exec(msg);
    const where = pos ? ` at ${lineCol(text, Number(pos[1]))}` : '';
    throw new Error(`${name}: not valid JSON${where}: ${msg.replace(/ in JSON at position \d+.*$/, '')}`);
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
 * Read the configuration: `explicit` (from --config) must exist; otherwise DSTM_CONFIG, then DEFAULT_CONFIG_FILE,
 * are read if present, and no file at all means every key takes its default.
 */
export function readConfig(explicit?: string): { raw: RawConfig; file?: string } {
  const file = explicit ?? process.env.DSTM_CONFIG ?? DEFAULT_CONFIG_FILE;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && explicit === undefined && process.env.DSTM_CONFIG === undefined) return { raw: {} };
    throw new Error(`${file}: cannot read the configuration file: ${code ?? (err as Error).message}`);
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
