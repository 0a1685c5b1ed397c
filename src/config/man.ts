// The man pages' text for each configuration key and each flag that sets one, rendered from the keys' declarations:
// `npm run man` (scripts/man.ts) rewrites the marked regions of man/dstm.conf.5 and man/dstm-*.8 with it, and
// test/docs/man.test.ts fails when a committed page differs from what this renders.
import type { Fields } from './schema';
import { settings, type Setting } from './settings';

/** Text as roff input: backslashes and hyphens escaped, `code` in bold, lines of at most `width` characters. */
export function roffText(text: string, width = 110): string {
  const escaped = text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/`([^`]+)`/g, '\\fB$1\\fR');
  const lines: string[] = [];
  let line = '';
  for (const word of escaped.split(/\s+/).filter((w) => w !== '')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  // a line starting with . or ' would be read as a request
  return lines.map((l) => (/^[.']/.test(l) ? `\\&${l}` : l)).join('\n');
}

const dash = (s: string): string => s.replace(/-/g, '\\-');
const flagText = (name: string): string => `\\fB${dash(`--${name}`)}\\fR`;

/** The placeholder of a flag's value: its own, else the key's choices, else VALUE. */
function valueName(s: Setting): string {
  return s.flag.helpValue ?? s.field.type.choices?.join('|') ?? 'VALUE';
}

/** How a key's flag sets it, e.g. "set by --pool CIDR (repeatable)". */
function setBy(s: Setting): string {
  const { flag } = s;
  let how =
    flag.kind === 'boolean'
      ? flag.allowNo
        ? `set by ${flagText(flag.name)} and ${flagText(`no-${flag.name}`)}`
        : `${flagText(flag.name)} sets it to true`
      : `set by ${flagText(flag.name)} \\fI${valueName(s)}\\fR${flag.multiple ? ' (repeatable)' : ''}`;
  if (flag.env) how += `, or the ${flag.env} environment variable${flag.multiple ? ' (comma\\-separated)' : ''}`;
  return how;
}

/** "\fIinteger\fR, default \f(CW1500\fR" or "..., no default" or "..., required". */
function typeAndDefault(f: Fields[string]): string {
  const type = `\\fI${dash(f.type.name)}\\fR`;
  if (f.kind === 'required') return `${type}, required`;
  if (f.kind === 'optional') return `${type}, no default`;
  return `${type}, default \\f(CW${dash(JSON.stringify(f.default))}\\fR`;
}

/** The .TP items of a section's keys in dstm.conf(5): key, type, default, flag, doc and what the page adds. */
export function keyItems(section: string, fields: Fields, prefix = ''): string[] {
  const byKey = new Map(settings(fields).map((s) => [s.key, s]));
  const walk = (fs: Fields, at: string): string[] =>
    Object.entries(fs).flatMap(([k, f]) => {
      const key = at ? `${at}.${k}` : k;
      const s = byKey.get(key);
      const item = [
        '.TP',
        `.B ${dash(`${section}.${key}`)}`,
        `${typeAndDefault(f)}${s ? `; ${setBy(s)}` : ''}.`,
        roffText(f.doc),
        ...(f.man ? [roffText(f.man)] : []),
      ];
      const nested = f.type.fields ? walk(f.type.fields, f.type.name.startsWith('list of') ? `${key}[]` : key) : [];
      return [...item, ...nested];
    });
  return walk(fields, prefix);
}

/** The head of a flag's .TP item in a command's page: the tag, and which key it sets (type, default, env). */
export function flagItem(section: string, s: Setting): string[] {
  const { flag, field } = s;
  const tag =
    flag.kind === 'boolean'
      ? flag.allowNo
        ? `.BR ${dash(`--${flag.name}`)} ", " ${dash(`--no-${flag.name}`)}`
        : `.B ${dash(`--${flag.name}`)}`
      : `.BI ${dash(`--${flag.name}`)} " ${valueName(s)}"`;
  const what =
    flag.kind === 'boolean' && !flag.allowNo
      ? `Sets \\fB${dash(`${section}.${s.key}`)}\\fR to true`
      : `${flag.multiple ? 'Each use adds an item to' : 'Sets'} \\fB${dash(`${section}.${s.key}`)}\\fR`;
  const env = flag.env ? `; the ${flag.env} environment variable stands in for it` : '';
  const kind =
    field.kind === 'required'
      ? `\\fI${dash(field.type.name)}\\fR, required here or in the file`
      : typeAndDefault(field);
  return ['.TP', tag, `${what} (${kind}${env}).`];
}

const KEYS = /^\.\\" BEGIN GENERATED KEYS (\w+)[^\n]*\n[\s\S]*?^\.\\" END GENERATED KEYS$/gm;
const FLAG = /^\.\\" BEGIN GENERATED FLAG (\w+)\.([\w.]+)[^\n]*\n[\s\S]*?^\.\\" END GENERATED FLAG$/gm;

/**
 * A page with every generated region rendered anew from `sections` (section name to its fields): ".\" BEGIN
 * GENERATED KEYS tep" regions get the section's key items, ".\" BEGIN GENERATED FLAG tep.feed_source" regions the
 * head of that key's flag item. A region naming no declared key or flag throws.
 */
export function regenerate(page: string, sections: Readonly<Record<string, Fields>>): string {
  const fieldsOf = (section: string): Fields => {
    const f = sections[section];
    if (!f) throw new Error(`no configuration section "${section}"`);
    return f;
  };
  return page
    .replace(KEYS, (_, section: string) =>
      [
        `.\\" BEGIN GENERATED KEYS ${section}: npm run man writes these from src/config/${section}-schema.ts`,
        ...keyItems(section, fieldsOf(section)),
        '.\\" END GENERATED KEYS',
      ].join('\n'),
    )
    .replace(FLAG, (_, section: string, key: string) => {
      const s = settings(fieldsOf(section)).find((x) => x.key === key);
      if (!s) throw new Error(`${section}.${key}: no such key with a flag`);
      return [
        `.\\" BEGIN GENERATED FLAG ${section}.${key}: npm run man writes this item's head from src/config`,
        ...flagItem(section, s),
        '.\\" END GENERATED FLAG',
      ].join('\n');
    });
}
