// rpcgen-ts as a library: compile one .x file to TypeScript source.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { check } from './check';
import { emit } from './emit';
import { parse } from './parser';

export { XdrSyntaxError } from './lexer';

export interface CompileOptions {
  /** Module specifier of the directory holding `xdr/runtime` and `types`, as imported by the generated file. */
  runtime: string;
  /** Directories searched by `#include`. */
  includeDirs?: string[];
}

/** Compile .x source text; `file` names it in errors and in the generated header. */
export function compileSource(file: string, text: string, options: CompileOptions): string {
  const model = check(parse(file, text, { includeDirs: options.includeDirs }));
  return emit(model, { runtime: options.runtime, source: basename(file) });
}

export function compileFile(file: string, options: CompileOptions): string {
  return compileSource(file, readFileSync(file, 'utf8'), options);
}
