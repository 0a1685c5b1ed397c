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
  /** For strings (rpcgen passes `const X = "text";` to C): the text between the quotes. */
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
   * Names defined for #ifdef and #if, as with cpp -D. Default: RPC_HDR, as rpcgen defines when it writes the
   * header, where the types and the constants that `%#define` passes to C are.
   */
  defines?: string[];
}

export interface Lexed {
  /** The tokens; the last is always `eof`. */
  tokens: Token[];
  /** `%#define NAME EXPR` lines, which define constants for the C compiler: NAME -> EXPR as written. */
  cDefines: Map<string, string>;
}

/** Tokenize `text` (the contents of `file`), expanding `#include`s. */
export function tokenize(file: string, text: string, options: LexOptions = {}): Lexed {
  const out: Token[] = [];
  const cpp: Cpp = { dirs: options.includeDirs ?? [], defined: new Set(options.defines ?? ['RPC_HDR']), cDefines: new Map() };
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
  const conds: Cond[] = [];
  const active = (): boolean => conds.length === 0 || conds[conds.length - 1].active;
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const n = text.length;
  const pos = (at: number): Pos => ({ file, line, col: at - lineStart + 1 });
  const fail = (at: number, msg: string): never => {
    throw new XdrSyntaxError(pos(at), msg);
  };

  while (i < n) {
    const c = text[i];
    if (c === '\n') {
      i++;
      line++;
      lineStart = i;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    const atLineStart = text.slice(lineStart, i).trim() === '';
    if ((c === '%' && i === lineStart) || (c === '#' && atLineStart) || !active()) {
      // A whole line, continued by a trailing backslash.
      const start = i;
      let end = i;
      while (end < n && !(text[end] === '\n' && text[end - 1] !== '\\')) end++;
      if (c === '#') directive(text.slice(start, end).replace(/\\\n/g, ' '), pos(start));
      else if (c === '%' && active()) {
        // `%#define NAME 1024` reaches the C compiler, which is how some .x files (nlm_prot.x) define bounds.
        const m = /^\s*#\s*define\s+([A-Za-z_]\w*)\s+([^/]*?)\s*(?:\/\*.*)?$/.exec(text.slice(start + 1, end));
        if (m && !cpp.cDefines.has(m[1])) cpp.cDefines.set(m[1], m[2]);
      }
      for (let k = start; k < end; k++) {
        if (text[k] === '\n') {
          line++;
          lineStart = k + 1;
        }
      }
      i = end;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const start = i;
      i += 2;
      while (i < n && !(text[i] === '*' && text[i + 1] === '/')) {
        if (text[i] === '\n') {
          line++;
          lineStart = i + 1;
        }
        i++;
      }
      if (i >= n) {
        // Report where the comment began, not end of file.
        throw new XdrSyntaxError(posAt(text, file, start), 'unterminated comment');
      }
      i += 2;
      continue;
    }
    if (c === '/' && text[i + 1] === '/') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (isIdentStart(c)) {
      const start = i;
      while (i < n && isIdentPart(text[i])) i++;
      out.push({ kind: 'ident', text: text.slice(start, i), ...pos(start) });
      continue;
    }
    if (isDigit(c) || (c === '-' && isDigit(text[i + 1] ?? ''))) {
      const start = i;
      if (c === '-') i++;
      let value: bigint;
      if (text[i] === '0' && (text[i + 1] === 'x' || text[i + 1] === 'X')) {
        i += 2;
        const ds = i;
        while (i < n && /[0-9a-fA-F]/.test(text[i])) i++;
        if (i === ds) fail(start, 'hexadecimal constant without digits');
        value = BigInt('0x' + text.slice(ds, i));
      } else if (text[i] === '0') {
        const ds = i;
        while (i < n && isDigit(text[i])) i++;
        const digits = text.slice(ds, i);
        if (/[89]/.test(digits)) fail(start, `bad octal constant ${digits}`);
        value = digits.length > 1 ? BigInt('0o' + digits.slice(1)) : 0n;
      } else {
        const ds = i;
        while (i < n && isDigit(text[i])) i++;
        value = BigInt(text.slice(ds, i));
      }
      if (i < n && isIdentPart(text[i])) fail(i, `unexpected '${text[i]}' in a number`);
      out.push({ kind: 'number', text: text.slice(start, i), value: c === '-' ? -value : value, ...pos(start) });
      continue;
    }
    if (c === '"') {
      const start = i;
      i++;
      while (i < n && text[i] !== '"' && text[i] !== '\n') i += text[i] === '\\' ? 2 : 1;
      if (text[i] !== '"') fail(start, 'unterminated string');
      i++;
      out.push({ kind: 'string', text: text.slice(start, i), str: text.slice(start + 1, i - 1), ...pos(start) });
      continue;
    }
    if (PUNCT.has(c)) {
      out.push({ kind: 'punct', text: c, ...pos(i) });
      i++;
      continue;
    }
    fail(i, `unexpected character '${c}'`);
  }
  if (conds.length > 0) throw new XdrSyntaxError({ file, line, col: 1 }, 'missing #endif');

  function directive(d: string, at: Pos): void {
    const m = /^#\s*(\w*)\s*(.*?)\s*(?:\/\*.*|\/\/.*)?$/.exec(d)!;
    const [, name, arg] = m;
    const top = conds[conds.length - 1];
    switch (name) {
      case 'if':
      case 'ifdef':
      case 'ifndef': {
        const parentActive = active();
        const yes = name === 'if' ? evalCondition(arg, cpp.defined, at) : cpp.defined.has(arg.split(/\s/)[0]) === (name === 'ifdef');
        conds.push({ active: parentActive && yes, taken: yes, parentActive });
        return;
      }
      case 'elif':
      case 'else':
        if (!top) throw new XdrSyntaxError(at, `#${name} without #if`);
        if (top.taken) top.active = false;
        else {
          const yes = name === 'else' || evalCondition(arg, cpp.defined, at);
          top.active = top.parentActive && yes;
          top.taken = yes;
        }
        return;
      case 'endif':
        if (!top) throw new XdrSyntaxError(at, '#endif without #if');
        conds.pop();
        return;
    }
    if (!active()) return;
    if (name === 'define') cpp.defined.add(arg.split(/[\s(]/)[0]);
    else if (name === 'undef') cpp.defined.delete(arg.split(/\s/)[0]);
    else if (name === 'include') {
      const inc = /^(?:"([^"]+)"|<([^>]+)>)/.exec(arg);
      if (!inc) throw new XdrSyntaxError(at, 'expected #include "file" or <file>');
      includeFile(out, file, at, inc[1] ?? inc[2], inc[1] !== undefined, cpp, stack);
    }
    // Other directives (#pragma, #ident, #line) mean nothing to the XDR language.
  }
}

/** cpp's #if on names: defined(X), defined X, X (0 when undefined, 1 when defined), numbers, !, &&, ||, (). */
function evalCondition(expr: string, defined: Set<string>, at: Pos): boolean {
  const js = expr
    .replace(/defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)/g, (_m, a: string | undefined, b: string | undefined) => (defined.has(a ?? b ?? '') ? '1' : '0'))
    .replace(/[A-Za-z_]\w*/g, (id) => (defined.has(id) ? '1' : '0'));
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

function includeFile(out: Token[], from: string, at: Pos, name: string, quoted: boolean, cpp: Cpp, stack: string[]): void {
  const candidates = [...(quoted ? [resolve(dirname(from), name)] : []), ...cpp.dirs.map((d) => resolve(d, name))];
  for (const path of candidates) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      continue;
    }
    if (stack.includes(path) || stack.length > MAX_INCLUDE_DEPTH) throw new XdrSyntaxError(at, `recursive #include of ${name}`);
    lexInto(out, path, text, cpp, [...stack, path]);
    return;
  }
  throw new XdrSyntaxError(at, `cannot find #include file ${name}`);
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
