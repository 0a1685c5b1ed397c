// Just enough of man(7) to compare a page with the command metadata: sections and tagged paragraphs (.TP, .TQ,
// .IP) reduced to plain text. Font escapes and the alternating-font macros are dropped the way they render, so
// "\fB\-\-listen\fR" and ".BR \-\-listen ," both read "--listen".

export interface Item {
  /** The tag line(s) as plain text. */
  tag: string;
  /** The paragraph under the tag, plain text on one line. */
  body: string;
  /** Title of the .SS subsection it is in ('' when none), e.g. "dstm tep stats". */
  sub: string;
}

export interface Section {
  name: string;
  /** The whole section as plain text (one line per input line). */
  text: string;
  items: Item[];
}

export interface Page {
  sections: Section[];
  /** Every line of the page as plain text. */
  text: string;
}

const NAMED: Record<string, string> = {
  dq: '"',
  aq: "'",
  lq: '"',
  rq: '"',
  oq: "'",
  cq: "'",
  em: '--',
  en: '-',
  hy: '-',
  ti: '~',
  ha: '^',
  rs: '\\',
  bu: '*',
  or: '|',
  lB: '[',
  rB: ']',
  lC: '{',
  rC: '}',
  mi: '-',
  pl: '+',
  eq: '=',
};

/** Plain text of one roff text line (escapes resolved, font changes dropped). */
export function plain(line: string): string {
  return line
    .replace(/\\f(\[[^\]]*\]|\(..|.)/g, '')
    .replace(/\\\(([a-zA-Z]{2})/g, (_, n: string) => NAMED[n] ?? '')
    .replace(/\\\[([a-zA-Z]{2})\]/g, (_, n: string) => NAMED[n] ?? '')
    .replace(/\\[-]/g, '-')
    .replace(/\\[&:|^%)]/g, '')
    .replace(/\\~|\\ |\\0/g, ' ')
    .replace(/\\e|\\\\/g, '\\')
    .replace(/\\c$/, '');
}

/** A macro's arguments, honouring double quotes. */
function macroArgs(rest: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"]|"")*)"|(\S+)/g;
  for (let m = re.exec(rest); m; m = re.exec(rest)) out.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2]);
  return out;
}

const FONT_MACROS = new Set(['B', 'I', 'SM', 'SB']);
const ALTERNATING = new Set(['BR', 'RB', 'BI', 'IB', 'IR', 'RI']);

export function parsePage(src: string): Page {
  const sections: Section[] = [];
  const all: string[] = [];
  let section: Section | undefined;
  let item: Item | undefined;
  let sub = '';
  /** Tag lines still expected after .TP/.TQ (the next text line is the tag). */
  let tagNext = false;
  for (const raw of src.split('\n')) {
    if (raw.startsWith('.\\"') || raw.startsWith('\'\\"') || raw === '.') continue;
    let text: string | undefined;
    if (raw.startsWith('.') || raw.startsWith("'")) {
      const m = /^[.']\s*(\S+)\s*(.*)$/.exec(raw);
      if (!m) continue;
      const [, name, rest] = m;
      const args = macroArgs(rest);
      if (name === 'SH') {
        section = { name: plain(args.join(' ')).toUpperCase(), text: '', items: [] };
        sections.push(section);
        item = undefined;
        sub = '';
        tagNext = false;
        all.push(section.name);
        continue;
      }
      if (name === 'SS' || name === 'PP' || name === 'P' || name === 'LP' || name === 'RE') {
        if (name !== 'RE') item = undefined;
        if (name !== 'SS') continue;
        text = args.join(' ');
        sub = plain(text).trim();
      } else if (name === 'TP') {
        item = { tag: '', body: '', sub };
        section?.items.push(item);
        tagNext = true;
        continue;
      } else if (name === 'TQ') {
        tagNext = true;
        continue;
      } else if (name === 'IP') {
        // .IP without a tag continues the current item (a second paragraph of its body)
        if (args[0] || !item) {
          item = { tag: plain(args[0] ?? ''), body: '', sub };
          section?.items.push(item);
        }
        continue;
      } else if (FONT_MACROS.has(name)) {
        text = args.join(' ');
      } else if (ALTERNATING.has(name)) {
        text = args.join('');
      } else {
        continue; // .TH, .RS, .nf, .fi, .EX, .EE, .br, .sp, .in ...: layout only
      }
    } else {
      text = raw;
    }
    const line = plain(text);
    all.push(line);
    if (section) section.text += line + '\n';
    if (!item) continue;
    if (tagNext) {
      item.tag += (item.tag ? ' ' : '') + line;
      tagNext = false;
    } else {
      item.body += (item.body ? ' ' : '') + line;
    }
  }
  return { sections, text: all.join('\n') };
}

/** Does `text` contain `word` delimited by non-word characters (so "--lease" is not found in "--lease-time")? */
export function hasWord(text: string, word: string): boolean {
  const esc = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\w-])${esc}(?![\\w-])`).test(text);
}
