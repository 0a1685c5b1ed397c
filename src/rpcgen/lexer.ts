// Lexer for the XDR language (RFC 4506 section 6) and the RPC language (RFC 5531 section 12), rpcgen dialect:
// `%` lines are passed through by rpcgen to C and mean nothing here. rpcgen runs cpp first, so the lexer does the
// part of cpp that .x files rely on: conditionals (#if/#ifdef/#ifndef/#elif/#else/#endif on names defined with
// #define or -D; yp.x has alternatives), #include "file" (nis.x includes nis_object.x) and backslash-newline.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface Pos {
  file: string;
  line: number;
  col: number;
}

export type TokenKind = 'ident' | 'number' | 'string' | 'punct' | 'eof';

export interface Token extends Pos {
  kind: TokenKind;
  text: string;
  /** For numbers: the value (constants may be negative, hexadecimal or octal). */
  value?: bigint;
  /** For strings (rpcgen passes `const X = "text";` to C): the text between the quotes, as C reads it. */
  str?: string;
}

export class XdrSyntaxError extends Error {
  constructor(
    readonly pos: Pos,
    readonly detail: string,
  ) {
    super(`${pos.file}:${pos.line}:${pos.col}: ${detail}`);
    this.name = 'XdrSyntaxError';
  }
}

const PUNCT = new Set(['{', '}', '[', ']', '<', '>', '(', ')', ';', ',', '=', '*', ':']);
const MAX_INCLUDE_DEPTH = 16;

export interface LexOptions {
  /** Directories searched for `#include <file>` and, after the including file's directory, `#include "file"`. */
  includeDirs?: string[];
  /**
   * Names defined for #ifdef and #if, as with cpp -D: NAME, or NAME=VALUE, which also makes NAME a constant as
   * `#define NAME VALUE` does. Default: RPC_HDR, as rpcgen defines when it writes the header, where the types and
   * the constants that `%#define` passes to C are.
   */
  defines?: string[];
}

export interface Lexed {
  /** The tokens; the last is always `eof`. */
  tokens: Token[];
  /**
   * `%#define NAME EXPR` lines, which define constants for the C compiler, and cpp's `#define NAME EXPR`, which
   * rpcgen's cpp substitutes where the file uses NAME: NAME -> EXPR as written.
   */
  cDefines: Map<string, string>;
}

/** Tokenize `text` (the contents of `file`), expanding `#include`s. */
export function tokenize(file: string, text: string, options: LexOptions = {}): Lexed {
  const out: Token[] = [];
  const cpp: Cpp = { dirs: options.includeDirs ?? [], defined: new Set(), cDefines: new Map() };
  for (const d of options.defines ?? ['RPC_HDR']) define(cpp, d.replace('=', ' '));
  lexInto(out, file, text, cpp, [file]);
  const last = out.length > 0 ? out[out.length - 1] : { file, line: 1, col: 1 };
  out.push({ kind: 'eof', text: '', file: last.file, line: last.line, col: last.col });
  return { tokens: out, cDefines: cpp.cDefines };
}

interface Cpp {
  dirs: string[];
  defined: Set<string>;
  cDefines: Map<string, string>;
}

/** One open #if: whether its current branch is taken, and whether any branch has been. */
interface Cond {
  active: boolean;
  taken: boolean;
  parentActive: boolean;
}

function lexInto(out: Token[], file: string, text: string, cpp: Cpp, stack: string[]): void {
  // cpp takes CR LF (and a lone CR) as a newline: so must directives, %#define lines and backslash-newline.
  new Scanner(out, file, text.replace(/\r\n?/g, '\n'), cpp, stack).run();
}

/** One file's scan: a cursor over `text` with its line bookkeeping, one method per kind of token or skipped text. */
class Scanner {
  private i = 0;
  private line = 1;
  private lineStart = 0;
  private readonly conds: Cond[] = [];

  constructor(
    private readonly out: Token[],
    private readonly file: string,
    private readonly text: string,
    private readonly cpp: Cpp,
    private readonly stack: string[],
  ) {}

  run(): void {
    const { text } = this;
    while (this.i < text.length) {
      const c = text[this.i];
      if (c === '\n') this.newline(this.i + 1);
      else if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') this.i++;
      else if (this.startsWholeLine(c)) this.wholeLine(c);
      else if (c === '/' && text[this.i + 1] === '*') this.blockComment();
      else if (c === '/' && text[this.i + 1] === '/') this.lineComment();
      else if (isIdentStart(c)) this.identifier();
      else if (isDigit(c) || (c === '-' && isDigit(text[this.i + 1] ?? ''))) this.number(c === '-');
      else if (c === '"') this.string();
      else if (PUNCT.has(c)) this.out.push({ kind: 'punct', text: c, ...this.pos(this.i++) });
      else this.fail(this.i, `unexpected character '${c}'`);
    }
    if (this.conds.length > 0) throw new XdrSyntaxError({ file: this.file, line: this.line, col: 1 }, 'missing #endif');
  }

  private pos(at: number): Pos {
    return { file: this.file, line: this.line, col: at - this.lineStart + 1 };
  }

  private fail(at: number, msg: string): never {
    throw new XdrSyntaxError(this.pos(at), msg);
  }

  private newline(next: number): void {
    this.i = next;
    this.line++;
    this.lineStart = next;
  }

  private active(): boolean {
    return this.conds.length === 0 || this.conds[this.conds.length - 1].active;
  }

  /** A `%` line, a cpp directive, or any line inside a branch not taken, is consumed whole. */
  private startsWholeLine(c: string): boolean {
    const atLineStart = this.text.slice(this.lineStart, this.i).trim() === '';
    return (c === '%' && this.i === this.lineStart) || (c === '#' && atLineStart) || !this.active();
  }

  /** A whole line, continued by a trailing backslash. */
  private wholeLine(c: string): void {
    const { text } = this;
    const start = this.i;
    let end = start;
    while (end < text.length && !(text[end] === '\n' && text[end - 1] !== '\\')) end++;
    if (c === '#') this.directive(text.slice(start, end).replace(/\\\n/g, ' '), this.pos(start));
    else if (c === '%' && this.active()) {
      // `%#define NAME 1024` reaches the C compiler, which is how some .x files (nlm_prot.x) define bounds.
      const m = /^\s*#\s*define\s+([A-Za-z_]\w*)\s+([^/]*?)\s*(?:\/\*.*)?$/.exec(text.slice(start + 1, end));
      if (m && !this.cpp.cDefines.has(m[1])) this.cpp.cDefines.set(m[1], m[2]);
    }
    this.skipTo(start, end);
  }

  /** Moves to `end`, counting the newlines between `from` and it. */
  private skipTo(from: number, end: number): void {
    for (let k = from; k < end; k++) {
      if (this.text[k] === '\n') {
        this.line++;
        this.lineStart = k + 1;
      }
    }
    this.i = end;
  }

  private blockComment(): void {
    const { text } = this;
    const start = this.i;
    const close = text.indexOf('*/', start + 2);
    // Report where the comment began, not end of file.
    if (close < 0) throw new XdrSyntaxError(posAt(text, this.file, start), 'unterminated comment');
    this.skipTo(start, close + 2);
  }

  private lineComment(): void {
    while (this.i < this.text.length && this.text[this.i] !== '\n') this.i++;
  }

  private identifier(): void {
    const start = this.i;
    while (this.i < this.text.length && isIdentPart(this.text[this.i])) this.i++;
    this.out.push({ kind: 'ident', text: this.text.slice(start, this.i), ...this.pos(start) });
  }

  /** A decimal, hexadecimal (0x) or octal (leading 0) constant, possibly negative. */
  private number(negative: boolean): void {
    const { text } = this;
    const start = this.i;
    if (negative) this.i++;
    const digits = (ok: (ch: string) => boolean): string => {
      const ds = this.i;
      while (this.i < text.length && ok(text[this.i])) this.i++;
      return text.slice(ds, this.i);
    };
    let value: bigint;
    if (text[this.i] === '0' && (text[this.i + 1] === 'x' || text[this.i + 1] === 'X')) {
      this.i += 2;
      const hex = digits((ch) => /[0-9a-fA-F]/.test(ch));
      if (hex === '') this.fail(start, 'hexadecimal constant without digits');
      value = BigInt('0x' + hex);
    } else if (text[this.i] === '0') {
      const oct = digits(isDigit);
      if (/[89]/.test(oct)) this.fail(start, `bad octal constant ${oct}`);
      value = oct.length > 1 ? BigInt('0o' + oct.slice(1)) : 0n;
    } else {
      value = BigInt(digits(isDigit));
    }
    if (this.i < text.length && isIdentPart(text[this.i]))
      this.fail(this.i, `unexpected '${text[this.i]}' in a number`);
    this.out.push({
      kind: 'number',
      text: text.slice(start, this.i),
      value: negative ? -value : value,
      ...this.pos(start),
    });
  }

  private string(): void {
    const { text } = this;
    const start = this.i++;
    while (this.i < text.length && text[this.i] !== '"' && text[this.i] !== '\n')
      this.i += text[this.i] === '\\' ? 2 : 1;
    if (text[this.i] !== '"') this.fail(start, 'unterminated string');
    this.i++;
    this.out.push({
      kind: 'string',
      text: text.slice(start, this.i),
      str: unescapeC(text.slice(start + 1, this.i - 1)),
      ...this.pos(start),
    });
  }

  private directive(d: string, at: Pos): void {
    const [, name, arg] = /^#\s*(\w*)\s*(.*?)\s*(?:\/\*.*|\/\/.*)?$/.exec(d)!;
    if (this.conditional(name, arg, at) || !this.active()) return;
    const { cpp } = this;
    if (name === 'define') define(cpp, arg);
    else if (name === 'undef') cpp.defined.delete(arg.split(/\s/)[0]);
    else if (name === 'error') throw new XdrSyntaxError(at, `#error ${arg}`);
    else if (name === 'include') {
      const inc = /^(?:"([^"]+)"|<([^>]+)>)/.exec(arg);
      if (!inc) throw new XdrSyntaxError(at, 'expected #include "file" or <file>');
      includeFile(this.out, this.file, at, inc[1] ?? inc[2], inc[1] !== undefined, cpp, this.stack);
    }
    // Other directives (#pragma, #ident, #line, #warning) mean nothing to the XDR language.
  }

  /** #if, #ifdef, #ifndef, #elif, #else, #endif: updates the stack of open conditionals; false for any other. */
  private conditional(name: string, arg: string, at: Pos): boolean {
    const { conds, cpp } = this;
    const top = conds[conds.length - 1];
    switch (name) {
      case 'if':
      case 'ifdef':
      case 'ifndef': {
        const parentActive = this.active();
        if (name !== 'if' && !/^\w/.test(arg)) throw new XdrSyntaxError(at, `#${name} needs a name`);
        // As cpp does, conditions inside a group that is skipped are not evaluated: they need not make sense.
        const yes =
          parentActive &&
          (name === 'if' ? evalCondition(arg, cpp, at) : cpp.defined.has(arg.split(/\s/)[0]) === (name === 'ifdef'));
        conds.push({ active: yes, taken: yes, parentActive });
        return true;
      }
      case 'elif':
      case 'else':
        if (!top) throw new XdrSyntaxError(at, `#${name} without #if`);
        if (top.taken) top.active = false;
        else {
          const yes = name === 'else' || (top.parentActive && evalCondition(arg, cpp, at));
          top.active = top.parentActive && yes;
          top.taken = yes;
        }
        return true;
      case 'endif':
        if (!top) throw new XdrSyntaxError(at, '#endif without #if');
        conds.pop();
        return true;
    }
    return false;
  }
}

/** `#define NAME`, `#define NAME VALUE` (a constant for sizes too) or `#define NAME(args) ...` (a name only). */
function define(cpp: Cpp, arg: string): void {
  cpp.defined.add(arg.split(/[\s(]/)[0]);
  const m = /^(\w+)\s+(\S.*)$/.exec(arg);
  if (m && !cpp.cDefines.has(m[1])) cpp.cDefines.set(m[1], m[2]);
}

/**
 * cpp's #if on names: defined(X), defined X, X (0 when undefined, its value when #defined to a number, as
 * `#define DEBUG 0`, else 1), numbers, !, &&, ||, ().
 */
function evalCondition(expr: string, { defined, cDefines }: Cpp, at: Pos): boolean {
  const value = (id: string): string => {
    if (!defined.has(id)) return '0';
    const v = cDefines.get(id) ?? '';
    return /^(?:0[xX][0-9a-fA-F]+|\d+)$/.test(v) ? String(Number(v)) : '1';
  };
  const js = expr
    .replace(/defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)/g, (_m, a: string | undefined, b: string | undefined) =>
      defined.has(a ?? b ?? '') ? '1' : '0',
    )
    .replace(/[A-Za-z_]\w*/g, value);
  if (!/^[\d\s!&|()]*$/.test(js) || js.trim() === '') throw new XdrSyntaxError(at, `cannot evaluate #if ${expr}`);
  // Tiny recursive-descent evaluation: no eval of file contents.
  const toks = js.match(/\d+|&&|\|\||[!()]/g) ?? [];
  let k = 0;
  const primary = (): number => {
    const t = toks[k++];
    if (t === '!') return primary() ? 0 : 1;
    if (t === '(') {
      const v = or();
      if (toks[k++] !== ')') throw new XdrSyntaxError(at, `unbalanced #if ${expr}`);
      return v;
    }
    if (t === undefined || !/^\d+$/.test(t)) throw new XdrSyntaxError(at, `cannot evaluate #if ${expr}`);
    return Number(t);
  };
  const and = (): number => {
    let v = primary();
    while (toks[k] === '&&') {
      k++;
      const r = primary();
      v = v && r ? 1 : 0;
    }
    return v;
  };
  const or = (): number => {
    let v = and();
    while (toks[k] === '||') {
      k++;
      const r = and();
      v = v || r ? 1 : 0;
    }
    return v;
  };
  const v = or();
  if (k !== toks.length) throw new XdrSyntaxError(at, `cannot evaluate #if ${expr}`);
  return v !== 0;
}

function includeFile(
  out: Token[],
  from: string,
  at: Pos,
  name: string,
  quoted: boolean,
  cpp: Cpp,
  stack: string[],
): void {
  const candidates = [...(quoted ? [resolve(dirname(from), name)] : []), ...cpp.dirs.map((d) => resolve(d, name))];
  for (const path of candidates) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      continue;
    }
    if (stack.includes(path) || stack.length > MAX_INCLUDE_DEPTH)
      throw new XdrSyntaxError(at, `recursive #include of ${name}`);
    lexInto(out, path, text, cpp, [...stack, path]);
    return;
  }
  throw new XdrSyntaxError(at, `cannot find #include file ${name}`);
}

const C_ESCAPES: Record<string, string> = {
  n: '\n',
  t: '\t',
  r: '\r',
  a: '\x07',
  b: '\b',
  f: '\f',
  v: '\v',
  e: '\x1b',
};

/** A C string literal's body as C reads it: `\"`, `\\`, `\n`... and octal and hexadecimal escapes. */
function unescapeC(body: string): string {
  return body.replace(/\\(?:([0-7]{1,3})|x([0-9a-fA-F]+)|([^]))/g, (_m, oct?: string, hex?: string, c?: string) =>
    oct !== undefined
      ? String.fromCharCode(parseInt(oct, 8) & 0xff)
      : hex !== undefined
        ? String.fromCharCode(parseInt(hex, 16) & 0xff)
        : (C_ESCAPES[c!] ?? c!),
  );
}

function posAt(text: string, file: string, at: number): Pos {
  let line = 1;
  let lineStart = 0;
  for (let k = 0; k < at; k++) {
    if (text[k] === '\n') {
      line++;
      lineStart = k + 1;
    }
  }
  return { file, line, col: at - lineStart + 1 };
}

function isDigit(c: string): boolean {
  return c >= '0' && c <= '9';
}

function isIdentStart(c: string): boolean {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c === '_';
}

function isIdentPart(c: string): boolean {
  return isIdentStart(c) || isDigit(c);
}
