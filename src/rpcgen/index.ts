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
  /** Names defined for #if/#ifdef (default RPC_HDR). */
  defines?: string[];
  /** Module specifier (from the output directory) of the generated module that undefined types come from. */
  externModule?: string;
}

/** Compile .x source text; `file` names it in errors and in the generated header. */
export function compileSource(file: string, text: string, options: CompileOptions): string {
  const model = check(parse(file, text, { includeDirs: options.includeDirs, defines: options.defines }), {
    externTypes: options.externModule !== undefined,
  });
  return emit(model, { runtime: options.runtime, source: basename(file), externModule: options.externModule });
}

export function compileFile(file: string, options: CompileOptions): string {
  return compileSource(file, readFileSync(file, 'utf8'), options);
}
