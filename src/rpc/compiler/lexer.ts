// Lexer for the XDR language (RFC 4506 section 6) and the RPC language (RFC 5531 section 12), rpcgen dialect:
// `%` lines are passed through by rpcgen to C and mean nothing here; preprocessor lines are skipped, except that
// `#include "file"` is expanded (nis.x includes nis_object.x, as cpp would for rpcgen).
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface Pos {
  file: string;
  line: number;
  col: number;
}

export type TokenKind = 'ident' | 'number' | 'punct' | 'eof';

export interface Token extends Pos {
  kind: TokenKind;
  text: string;
  /** For numbers: the value (constants may be negative, hexadecimal or octal). */
  value?: bigint;
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
}

/** Tokenize `text` (the contents of `file`), expanding `#include`s. The last token is always `eof`. */
export function tokenize(file: string, text: string, options: LexOptions = {}): Token[] {
  const out: Token[] = [];
  lexInto(out, file, text, options.includeDirs ?? [], [file]);
  const last = out.length > 0 ? out[out.length - 1] : { file, line: 1, col: 1 };
  out.push({ kind: 'eof', text: '', file: last.file, line: last.line, col: last.col });
  return out;
}

function lexInto(out: Token[], file: string, text: string, includeDirs: string[], stack: string[]): void {
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
    if (c === '%' && i === lineStart) {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (c === '#' && atLineStart) {
      const start = i;
      // A directive runs to the end of the line, continued by a trailing backslash.
      let end = i;
      while (end < n && !(text[end] === '\n' && text[end - 1] !== '\\')) end++;
      const directive = text.slice(start, end);
      const inc = /^#\s*include\s*(?:"([^"]+)"|<([^>]+)>)/.exec(directive);
      if (inc) includeFile(out, file, pos(start), inc[1] ?? inc[2], inc[1] !== undefined, includeDirs, stack);
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
    if (PUNCT.has(c)) {
      out.push({ kind: 'punct', text: c, ...pos(i) });
      i++;
      continue;
    }
    fail(i, `unexpected character '${c}'`);
  }
}

function includeFile(out: Token[], from: string, at: Pos, name: string, quoted: boolean, dirs: string[], stack: string[]): void {
  const candidates = [...(quoted ? [resolve(dirname(from), name)] : []), ...dirs.map((d) => resolve(d, name))];
  for (const path of candidates) {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      continue;
    }
    if (stack.includes(path) || stack.length > MAX_INCLUDE_DEPTH) throw new XdrSyntaxError(at, `recursive #include of ${name}`);
    lexInto(out, path, text, dirs, [...stack, path]);
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
