// Man pages never drift: every command's flags and arguments (the oclif metadata `--help` prints) and every
// configuration key (the schemas' key tables) must be in its page, with short alias, default, choices, range (stated
// in --help too) and the value's placeholder --help shows; a page documents nothing the command lacks; the text
// generated from the keys' declarations (npm run man) is current; every page's EXIT STATUS is the exit-code table
// (src/cli/exit-codes.ts) for the codes its commands return; every page renders without warnings; package.json lists
// every page.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from '@oclif/core';
import { clientKeys } from '../../src/config/client-schema';
import type { KeyDoc } from '../../src/config/schema';
import { serverKeys } from '../../src/config/server-schema';
import { tepKeys } from '../../src/config/tep-schema';
import { staticKeys } from '../../src/config/static-schema';
import { SECTIONS } from '../../src/config/load';
import { regenerate } from '../../src/config/man';
import { CONFIG_SECTIONS } from '../../src/config/sections';
import { settings } from '../../src/config/settings';
import { EXIT_MEANING, type ExitCode } from '../../src/cli/exit-codes';
import { loadCommands, ROOT } from './commands';
import { hasWord, parsePage, type Item, type Page } from './roff';
import { skipIf } from '../support/skip';
import { Tep } from '../../src/tep/tep';
import { createLogger } from '../../src/lib/log';
import { parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';

const MAN = join(ROOT, 'man');

const words = (id: string): string => id.replace(/:/g, ' ');

/**
 * Where a command is documented: its own page (`dstm tep stats` in man/dstm-tep-stats.8), or, for a subcommand
 * without one, the subsection ".SS dstm tep stats" of its parent's page (man/dstm-tep.8).
 */
export function pageOf(id: string): { rel: string; sub?: string } {
  const own = join('man', `dstm-${id.replace(/:/g, '-')}.8`);
  const parent = id.includes(':')
    ? join('man', `dstm-${id.slice(0, id.lastIndexOf(':')).replace(/:/g, '-')}.8`)
    : undefined;
  if (existsSync(join(ROOT, own)) || !parent || !existsSync(join(ROOT, parent))) return { rel: own };
  return { rel: parent, sub: `dstm ${words(id)}` };
}

function readPage(rel: string): Page {
  return parsePage(readFileSync(join(ROOT, rel), 'utf8'));
}

/**
 * The items of the option sections (OPTIONS, or FLAGS as oclif calls them) that document `sub` (a subcommand's
 * subsection), or, without `sub`, those outside every subcommand's subsection.
 */
function optionItems(page: Page, sub?: string): Item[] {
  const items = page.sections.filter((s) => s.name === 'OPTIONS' || s.name === 'FLAGS').flatMap((s) => s.items);
  return items.filter((i) => (sub ? i.sub === sub : !/^dstm [a-z]/.test(i.sub)));
}

/** A default as the page must show it: scalars as they are, lists comma-separated. */
function defaultText(v: unknown): string | undefined {
  if (v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0)) return undefined;
  return Array.isArray(v) ? v.join(',') : String(v);
}

const squash = (s: string): string => s.replace(/\s+/g, '');

function flagProblems(cmd: Command.Loadable, page: Page, sub?: string): string[] {
  const problems: string[] = [];
  const items = optionItems(page, sub);
  const where = sub ? `.SS ${sub} in OPTIONS` : 'OPTIONS';
  if (items.length === 0 && Object.keys(cmd.flags).length > 0) return [`no .TP items in ${where}`];
  for (const flag of Object.values(cmd.flags)) {
    if (flag.hidden) continue;
    const long = `--${flag.name}`;
    const item = items.find((i) => hasWord(i.tag, long));
    if (!item) {
      problems.push(`${long}: not documented (no .TP item in ${where} whose tag has ${long})`);
      continue;
    }
    const all = `${item.tag} ${item.body}`;
    if (flag.char && !hasWord(item.tag, `-${flag.char}`))
      problems.push(`${long}: short alias -${flag.char} missing from the tag "${item.tag}"`);
    if (flag.type === 'boolean' && flag.allowNo && !hasWord(item.tag, `--no-${flag.name}`))
      problems.push(`${long}: its negation --no-${flag.name} missing from the tag "${item.tag}"`);
    for (const a of flag.aliases ?? [])
      if (!hasWord(all, `--${a}`)) problems.push(`${long}: its old name --${a} (an alias) not mentioned in its item`);
    const def = flag.type === 'option' ? defaultText(flag.default) : undefined;
    if (def !== undefined && !(/default/i.test(all) && squash(all).includes(squash(def)))) {
      problems.push(`${long}: default "${def}" not stated in its item ("${all}")`);
    }
    for (const o of (flag.type === 'option' && flag.options) || []) {
      if (!hasWord(all, o)) problems.push(`${long}: choice "${o}" not listed in its item`);
    }
    // the value's placeholder: --help's (helpValue) is the tag's; a flag with choices may show them instead
    if (flag.type === 'option' && !(flag.options?.length && flag.helpValue === undefined)) {
      const tokens = item.tag.split(/\s+/).map((t) => t.replace(/,$/, ''));
      const next = tokens[tokens.indexOf(long) + 1];
      const named = next === undefined || next.startsWith('-') ? undefined : next;
      const shown = [flag.helpValue ?? []].flat().join(' ') || undefined;
      if (shown === undefined)
        problems.push(`${long}: no helpValue, so --help shows <value> where its item names ${named ?? 'no value'}`);
      else if (shown !== named) problems.push(`${long}: --help shows ${shown}, its item ${named ?? 'no value'}`);
    }
  }
  for (const item of items) {
    for (const m of item.tag.matchAll(/(?:^|[^\w-])--([a-z][\w-]*)/g)) {
      const negated = m[1].startsWith('no-') ? cmd.flags[m[1].slice(3)] : undefined;
      if (!Object.hasOwn(cmd.flags, m[1]) && !(negated?.type === 'boolean' && negated.allowNo))
        problems.push(`--${m[1]}: documented in ${where} but \`dstm ${words(cmd.id)}\` has no such flag`);
    }
  }
  return problems;
}

function argProblems(cmd: Command.Loadable, page: Page): string[] {
  if (Object.keys(cmd.args).length === 0) return [];
  const problems: string[] = [];
  const synopsis = page.sections.find((s) => s.name === 'SYNOPSIS')?.text ?? '';
  for (const arg of Object.values(cmd.args)) {
    if (arg.hidden) continue;
    // the SYNOPSIS shows it by name (ACTION) or by its choices (list | revoke | allocate)
    const named = hasWord(synopsis.toLowerCase(), arg.name.toLowerCase());
    if (!named && !(arg.options?.length && arg.options.every((o) => hasWord(synopsis, o)))) {
      problems.push(
        `argument ${arg.name.toUpperCase()}: not in the SYNOPSIS (by name${arg.options?.length ? ' or by all its choices' : ''})`,
      );
    }
    for (const o of arg.options ?? []) {
      if (!hasWord(page.text, o)) problems.push(`argument ${arg.name.toUpperCase()}: choice "${o}" not documented`);
    }
    const def = defaultText(arg.default);
    if (def !== undefined && !/default/i.test(page.text))
      problems.push(`argument ${arg.name.toUpperCase()}: default "${def}" not stated`);
  }
  return problems;
}

/**
 * The SYNOPSIS forms of `cmd`: the lines from one starting "dstm <command>" to the next, for the command with the
 * longest id that begins it (`ids`; "dstm leases revoke NODE" is leases', "dstm leases export" leases export's).
 */
function synopsisForms(cmd: Command.Loadable, ids: readonly string[], page: Page): string[] {
  const text = page.sections.find((s) => s.name === 'SYNOPSIS')?.text ?? '';
  const forms = text.split(/\n(?=dstm )/).filter((f) => f.startsWith('dstm '));
  const head = (form: string): string => form.split('\n')[0].trim();
  const owner = (form: string): string | undefined =>
    ids.filter((id) => `${head(form)} `.startsWith(`dstm ${words(id)} `)).sort((a, b) => b.length - a.length)[0];
  return forms.filter((f) => owner(f) === cmd.id);
}

/** Flags of `cmd` that none of its SYNOPSIS forms shows (a switch with a --no- form may show as --[no-]NAME). */
function synopsisProblems(cmd: Command.Loadable, ids: readonly string[], page: Page): string[] {
  const forms = synopsisForms(cmd, ids, page).join('\n');
  if (!forms) return [`no SYNOPSIS line begins "dstm ${words(cmd.id)}"`];
  return Object.values(cmd.flags)
    .filter((f) => !f.hidden && !hasWord(forms, `--${f.name}`))
    .filter((f) => !(f.type === 'boolean' && f.allowNo && forms.includes(`--[no-]${f.name}`)))
    .map((f) => `--${f.name}: not in the SYNOPSIS of \`dstm ${words(cmd.id)}\``);
}

/** The full dotted key as the conf page's items must name it ("server.teps[].prefix"). */
function keyProblems(keys: KeyDoc[], page: Page): string[] {
  const problems: string[] = [];
  const items = page.sections.flatMap((s) => s.items);
  for (const k of keys) {
    const item = items.find((i) => hasWord(i.tag, k.key));
    if (!item) {
      problems.push(`${k.key}: not documented (no .TP item whose tag is ${k.key})`);
      continue;
    }
    const all = `${item.tag} ${item.body}`;
    if (!all.includes(k.type)) problems.push(`${k.key}: type "${k.type}" not stated in its item`);
    if (k.default !== undefined && !squash(all).includes(squash(JSON.stringify(k.default)))) {
      problems.push(
        `${k.key}: default ${JSON.stringify(k.default)} (JSON, as written in the file) not stated in its item`,
      );
    }
  }
  const known = new Set(keys.map((k) => k.key));
  const sectionKey = new RegExp(`(?:^|[^\\w-])((?:${SECTIONS.join('|')})\\.[\\w.[\\]]+)`, 'g');
  for (const item of items) {
    for (const m of item.tag.matchAll(sectionKey)) {
      if (!known.has(m[1])) problems.push(`${m[1]}: documented but no schema has this key`);
    }
  }
  return problems;
}

/**
 * EXIT STATUS as one .TP item per code: exactly `codes`, each item stating the table's meaning (it may say more).
 */
function exitProblems(codes: readonly ExitCode[], page: Page): string[] {
  const section = page.sections.find((s) => s.name === 'EXIT STATUS');
  if (!section) return ['no EXIT STATUS section'];
  const problems: string[] = [];
  const items = section.items.filter((i) => /^\d+$/.test(i.tag.trim()));
  const listed = items.map((i) => Number(i.tag.trim()));
  for (const c of codes)
    if (!listed.includes(c)) problems.push(`EXIT STATUS: code ${c} (${EXIT_MEANING[c]}) is not listed`);
  for (const i of items) {
    const c = Number(i.tag.trim()) as ExitCode;
    if (!codes.includes(c))
      problems.push(
        `EXIT STATUS: code ${c} is listed but ${EXIT_MEANING[c] === undefined ? 'is not in the table' : 'no command of this page returns it'}`,
      );
    else if (!i.body.replace(/\s+/g, ' ').toLowerCase().includes(EXIT_MEANING[c].toLowerCase()))
      problems.push(`EXIT STATUS: code ${c} does not say "${EXIT_MEANING[c]}"`);
  }
  return problems;
}

/** The exit codes a command declares (static exitCodes on its class). */
async function exitCodesOf(cmd: Command.Loadable): Promise<readonly ExitCode[]> {
  return ((await cmd.load()) as unknown as { exitCodes?: readonly ExitCode[] }).exitCodes ?? [];
}

/** The configuration section whose keys a command's flags set. */
const SECTION_OF: Readonly<Record<string, keyof typeof CONFIG_SECTIONS>> = {
  server: 'server',
  tep: 'tep',
  static: 'static',
  request: 'client',
  release: 'client',
  leases: 'client',
};

/** Flags of `cmd` that set a key of its section but whose item in `text` is not generated from the key. */
function ungeneratedFlags(cmd: Command.Loadable, text: string): string[] {
  const section = SECTION_OF[cmd.id];
  if (!section) return [];
  return settings(CONFIG_SECTIONS[section])
    .filter((s) => Object.hasOwn(cmd.flags, s.flag.name))
    .filter((s) => !text.includes(`.\\" BEGIN GENERATED FLAG ${section}.${s.key}:`))
    .map((s) => `--${s.flag.name} sets ${section}.${s.key} but its item is not generated (npm run man)`);
}

/** Ranges up to this bound are limits worth stating; wider ones (lease seconds, program numbers) are the wire's. */
const WIDE = 0x7fffffff;

/**
 * The range `--NAME` of `cmd` is limited to: the oclif flag's min and max (`flag`, from the command class), else the
 * range of the configuration key it sets; undefined when unlimited or only as wide as its field on the wire.
 */
function rangeOf(cmd: Command.Loadable, name: string, flag: { min?: number; max?: number }): string | undefined {
  let range: readonly [number, number] | undefined;
  if (flag.min !== undefined && flag.max !== undefined) range = [flag.min, flag.max];
  else {
    const section = SECTION_OF[cmd.id];
    const setting = section ? settings(CONFIG_SECTIONS[section]).find((s) => s.flag.name === name) : undefined;
    range = setting?.field.type.range as readonly [number, number] | undefined;
  }
  return range && range[1] < WIDE ? `${range[0]} to ${range[1]}` : undefined;
}

/** Flags limited to a range whose --help line or page item does not state it ("1280 to 2040"). */
function rangeProblems(
  cmd: Command.Loadable,
  flags: Readonly<Record<string, { min?: number; max?: number }>>,
  page: Page,
  sub?: string,
): string[] {
  const problems: string[] = [];
  const items = optionItems(page, sub);
  for (const flag of Object.values(cmd.flags)) {
    if (flag.hidden || flag.type !== 'option') continue;
    const range = rangeOf(cmd, flag.name, flags[flag.name] ?? {});
    if (range === undefined) continue;
    const long = `--${flag.name}`;
    if (!`${flag.summary ?? ''} ${flag.description ?? ''}`.includes(range))
      problems.push(`${long}: its --help does not state its range "${range}"`);
    const item = items.find((i) => hasWord(i.tag, long));
    if (item && !`${item.tag} ${item.body}`.includes(range))
      problems.push(`${long}: its item does not state its range "${range}"`);
  }
  return problems;
}

/** Lines of `page` that differ from `generated` (the page as npm run man would write it), with line numbers. */
function generatedDrift(page: string, generated: string): string[] {
  const was = page.split('\n');
  const now = generated.split('\n');
  const out: string[] = [];
  for (let i = 0; i < Math.max(was.length, now.length) && out.length < 5; i++)
    if (was[i] !== now[i]) out.push(`line ${i + 1}: "${was[i] ?? ''}", generated "${now[i] ?? ''}"`);
  return out.length ? [`differs from what the key declarations render (run npm run man):`, ...out] : [];
}

function report(problems: Map<string, string[]>): void {
  const lines = [...problems].flatMap(([page, ps]) => ps.map((p) => `${page}: ${p}`));
  expect(lines, `\n  ${lines.join('\n  ')}\n`).to.deep.equal([]);
}

function manPages(): string[] {
  return existsSync(MAN)
    ? readdirSync(MAN)
        .filter((f) => /\.[1-8]$/.test(f))
        .sort()
    : [];
}

describe('man pages', function () {
  this.timeout(60_000);
  let commands: Command.Loadable[];

  before(async () => {
    commands = await loadCommands();
  });

  it('every command has its page, documenting every flag (alias, default, choices, placeholder) and no other', () => {
    const problems = new Map<string, string[]>();
    for (const cmd of commands) {
      const { rel, sub } = pageOf(cmd.id);
      if (!existsSync(join(ROOT, rel))) {
        problems.set(rel, [`missing (the page of \`dstm ${words(cmd.id)}\`)`]);
        continue;
      }
      const ps = flagProblems(cmd, readPage(rel), sub);
      if (ps.length) problems.set(rel, [...(problems.get(rel) ?? []), ...ps]);
    }
    report(problems);
  });

  it("every flag is in its command's SYNOPSIS", () => {
    const problems = new Map<string, string[]>();
    const ids = commands.map((c) => c.id);
    for (const cmd of commands) {
      const { rel } = pageOf(cmd.id);
      if (!existsSync(join(ROOT, rel))) continue; // reported by the flags test
      const ps = synopsisProblems(cmd, ids, readPage(rel));
      if (ps.length) problems.set(rel, [...(problems.get(rel) ?? []), ...ps]);
    }
    report(problems);
  });

  it('every flag limited to a range states it, in --help and in its page', async () => {
    const problems = new Map<string, string[]>();
    for (const cmd of commands) {
      const { rel, sub } = pageOf(cmd.id);
      if (!existsSync(join(ROOT, rel))) continue; // reported by the flags test
      const { flags } = (await cmd.load()) as unknown as { flags: Record<string, { min?: number; max?: number }> };
      const ps = rangeProblems(cmd, flags, readPage(rel), sub);
      if (ps.length) problems.set(rel, [...(problems.get(rel) ?? []), ...ps]);
    }
    report(problems);
  });

  it('every command argument is in its page (SYNOPSIS, choices, default)', () => {
    const problems = new Map<string, string[]>();
    for (const cmd of commands) {
      const { rel } = pageOf(cmd.id);
      if (!existsSync(join(ROOT, rel))) continue; // reported by the flags test
      const ps = argProblems(cmd, readPage(rel));
      if (ps.length) problems.set(rel, ps);
    }
    report(problems);
  });

  it("every command declares its exit codes, and every page's EXIT STATUS is the table's for them", async () => {
    const problems = new Map<string, string[]>();
    const byPage = new Map<string, Set<ExitCode>>();
    for (const cmd of commands) {
      const codes = await exitCodesOf(cmd);
      const { rel } = pageOf(cmd.id);
      if (codes.length === 0)
        problems.set(rel, [...(problems.get(rel) ?? []), `\`dstm ${words(cmd.id)}\` declares no exitCodes`]);
      const set = byPage.get(rel) ?? new Set<ExitCode>();
      for (const c of codes) set.add(c);
      byPage.set(rel, set);
    }
    byPage.set('man/dstm.1', new Set(Object.keys(EXIT_MEANING).map(Number) as ExitCode[]));
    for (const [rel, codes] of byPage) {
      if (!existsSync(join(ROOT, rel))) continue; // reported by the flags test
      const ps = exitProblems([...codes].sort(), readPage(rel));
      if (ps.length) problems.set(rel, [...(problems.get(rel) ?? []), ...ps]);
    }
    report(problems);
  });

  it('dstm.1 names every command', async () => {
    const page = readPage('man/dstm.1');
    const missing = (await loadCommands()).map((c) => words(c.id)).filter((id) => !page.text.includes(`dstm ${id}`));
    expect(missing, 'commands missing from man/dstm.1').to.deep.equal([]);
  });

  it('dstm.conf.5 documents every configuration key with its type and default, and no other key', () => {
    const rel = 'man/dstm.conf.5';
    expect(existsSync(join(ROOT, rel)), `${rel} is missing`).to.equal(true);
    const ps = keyProblems([...serverKeys(), ...clientKeys(), ...tepKeys(), ...staticKeys()], readPage(rel));
    report(new Map(ps.length ? [[rel, ps]] : []));
  });

  it('the generated text is what the key declarations render, and every flag that sets a key has it', () => {
    const problems = new Map<string, string[]>();
    for (const p of manPages()) {
      const text = readFileSync(join(MAN, p), 'utf8');
      const ps = generatedDrift(text, regenerate(text, CONFIG_SECTIONS));
      if (ps.length) problems.set(`man/${p}`, ps);
    }
    const conf = readFileSync(join(MAN, 'dstm.conf.5'), 'utf8');
    for (const section of SECTIONS)
      if (!conf.includes(`.\\" BEGIN GENERATED KEYS ${section}:`))
        problems.set('man/dstm.conf.5', [...(problems.get('man/dstm.conf.5') ?? []), `no generated ${section} keys`]);
    for (const cmd of commands) {
      const { rel } = pageOf(cmd.id);
      if (!existsSync(join(ROOT, rel))) continue; // reported by the flags test
      const ps = ungeneratedFlags(cmd, readFileSync(join(ROOT, rel), 'utf8'));
      if (ps.length) problems.set(rel, [...(problems.get(rel) ?? []), ...ps]);
    }
    report(problems);
  });

  it('every page renders without warnings (groff -ww, mandoc -Tlint)', function () {
    const pages = manPages();
    expect(pages, 'no pages in man/').to.have.length.greaterThan(0);
    const problems = new Map<string, string[]>();
    const missing = [
      ['groff', '--version'],
      ['mandoc', '-V'],
    ].filter(([tool, arg]) => spawnSync(tool, [arg]).error !== undefined);
    skipIf(this, missing.length ? `${missing.map(([tool]) => tool).join(' and ')} not installed` : undefined);
    for (const p of pages) {
      const file = join(MAN, p);
      const ps: string[] = [];
      const g = spawnSync('groff', ['-man', '-ww', '-z', file], { encoding: 'utf8' });
      if (g.status !== 0 || g.stderr.trim()) ps.push(`groff: ${g.stderr.trim() || `exit ${g.status}`}`);
      // warnings and worse; style hints (-W style) are not failures
      const m = spawnSync('mandoc', ['-Tlint', '-W', 'warning', file], { encoding: 'utf8' });
      const out = (m.stdout + m.stderr).trim().replaceAll(`mandoc: ${file}:`, 'line ');
      if (out) ps.push(`mandoc: ${out}`);
      if (ps.length) problems.set(`man/${p}`, ps);
    }
    report(problems);
  });

  it('the checks catch drift: a missing alias, default or choice, an extra flag, an undocumented key', () => {
    const flag = (name: string, more: object) => ({ name, type: 'option', ...more });
    const flags = {
      mode: flag('mode', { char: 'm', default: 'fast', options: ['fast', 'slow'] }),
      port: flag('port', { default: 3786 }),
      size: flag('size', { helpValue: 'BYTES' }),
      fast: { name: 'fast', type: 'boolean', allowNo: true },
      loud: { name: 'loud', type: 'boolean', allowNo: true },
    };
    const cmd = { id: 'x', args: {}, flags } as unknown as Command.Loadable;
    const page = parsePage(
      '.SH OPTIONS\n.TP\n.BI \\-\\-mode " MODE"\nfast or slow.\n.TP\n.B \\-\\-port\nThe port (default 3786).\n.TP\n.B \\-\\-gone\nOld.\n' +
        '.TP\n.BR \\-\\-fast ", " \\-\\-no\\-fast\nFast.\n.TP\n.B \\-\\-loud\nLoud.\n.TP\n.B \\-\\-no\\-port\nNo.\n' +
        '.TP\n.BI \\-\\-size " N"\nSize.\n',
    );
    expect(flagProblems(cmd, page)).to.deep.equal([
      '--mode: short alias -m missing from the tag "--mode MODE"',
      '--mode: default "fast" not stated in its item ("--mode MODE fast or slow.")',
      '--port: no helpValue, so --help shows <value> where its item names no value',
      '--size: --help shows BYTES, its item N',
      '--loud: its negation --no-loud missing from the tag "--loud"',
      '--gone: documented in OPTIONS but `dstm x` has no such flag',
      '--no-port: documented in OPTIONS but `dstm x` has no such flag',
    ]);
    // a range: the oclif flag's min and max, else the range of the key the flag sets (static.path_mtu)
    const ranged = {
      id: 'static',
      args: {},
      flags: {
        port: flag('port', { summary: 'The port, 1 to 9.' }),
        'path-mtu': flag('path-mtu', { summary: 'MTU.' }),
      },
    } as unknown as Command.Loadable;
    const rangedPage = parsePage(
      '.SH OPTIONS\n.TP\n.BI \\-\\-port " N"\nThe port.\n.TP\n.BI \\-\\-path\\-mtu " BYTES"\nMTU, 1280 to 2040.\n',
    );
    expect(rangeProblems(ranged, { port: { min: 1, max: 9 } }, rangedPage)).to.deep.equal([
      '--port: its item does not state its range "1 to 9"',
      '--path-mtu: its --help does not state its range "1280 to 2040"',
    ]);
    // a flag only in another command's SYNOPSIS form (dstm x y's) is not in dstm x's
    const synopsis = parsePage(
      '.SH SYNOPSIS\n.B dstm x\n.RB [ \\-\\-mode\n.IR MODE ]\n.PP\n.B dstm x y\n.RB [ \\-\\-port ]\n',
    );
    expect(synopsisProblems(cmd, ['x', 'x:y'], synopsis)).to.deep.equal([
      '--port: not in the SYNOPSIS of `dstm x`',
      '--size: not in the SYNOPSIS of `dstm x`',
      '--fast: not in the SYNOPSIS of `dstm x`',
      '--loud: not in the SYNOPSIS of `dstm x`',
    ]);
    const exits = parsePage('.SH "EXIT STATUS"\n.TP\n.B 0\nSuccess.\n.TP\n.B 4\nRefused.\n.TP\n.B 42\nOther.\n');
    expect(exitProblems([0, 2, 4], exits)).to.deep.equal([
      'EXIT STATUS: code 2 (usage or configuration error) is not listed',
      'EXIT STATUS: code 4 does not say "not allowed"',
      'EXIT STATUS: code 42 is listed but is not in the table',
    ]);
    const conf = parsePage(
      '.SH SERVER\n.TP\n.B server.lease\ninteger, default 3600.\n.TP\n.B server.leese\ninteger.\n',
    );
    const keys = [
      { key: 'server.lease', type: 'integer', default: 3600, doc: '' },
      { key: 'server.hold', type: 'integer', default: 600, doc: '' },
    ];
    expect(keyProblems(keys, conf)).to.deep.equal([
      'server.hold: not documented (no .TP item whose tag is server.hold)',
      'server.leese: documented but no schema has this key',
    ]);
    // a hand edit inside a generated region, and a flag whose item is written by hand
    const generated = regenerate(
      '.SH OPTIONS\n.\\" BEGIN GENERATED FLAG tep.device\n.\\" END GENERATED FLAG\n',
      CONFIG_SECTIONS,
    );
    expect(generated).to.contain('.BI \\-\\-device " NAME"').and.contain('\\fBtep.device\\fR');
    expect(generatedDrift(generated.replace('NAME', 'DEV'), generated)[0]).to.match(/run npm run man/);
    expect(generatedDrift(generated, generated)).to.deep.equal([]);
    const tep = { id: 'tep', args: {}, flags: { device: { name: 'device', type: 'option' } } };
    expect(ungeneratedFlags(tep as unknown as Command.Loadable, generated)).to.deep.equal([]);
    expect(ungeneratedFlags(tep as unknown as Command.Loadable, '.TP\n.BI \\-\\-device " NAME"\n')).to.deep.equal([
      '--device sets tep.device but its item is not generated (npm run man)',
    ]);
  });

  it("dstm-tep.8's DROP REASONS names every drop reason `dstm tep stats --json` reports, and no other", () => {
    const tep = new Tep({
      address: parseIPv6('2001:db8:1::1'),
      ipv4: parseIPv4('192.0.2.1'),
      pools: [parsePrefix4('198.51.100.0/28')],
      prefixes: [parsePrefix6('2001:db8:1::/64')],
      statics: [],
      device: 'unused',
      pathMtu: 1500,
      log: createLogger({ level: 'error' }),
    });
    const page = readFileSync(join(MAN, 'dstm-tep.8'), 'utf8');
    const section = page
      .slice(page.indexOf('\n.SH DROP REASONS\n'), page.indexOf('\n.SH SIGNALS\n'))
      .replace(/\\\n/g, ' ');
    // The item heads: the line after each .TP, its reason names bold (.B name, or .BR a ", " b ...).
    const documented = [...section.matchAll(/^\.TP\n(\.BR? .*)$/gm)]
      .flatMap((m) => m[1].match(/[a-z][a-z0-9]*(?:_[a-z0-9]+)+/g) ?? [])
      .sort();
    expect(documented).to.deep.equal(Object.keys(tep.stats().drops).sort());
  });

  it("package.json's man field lists every page in man/ and only existing ones", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { man?: string[] };
    const listed = (pkg.man ?? []).map((p) => p.replace(/^\.\//, '')).sort();
    expect(listed, 'package.json "man"').to.deep.equal(manPages().map((p) => `man/${p}`));
  });
});
