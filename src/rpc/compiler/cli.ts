// rpcgen-ts FILE.x [FILE.x ...] --out DIR [--runtime MODULE] [-I DIR]: one DIR/NAME.ts per NAME.x, like rpcgen.
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, extname, join, relative, resolve, sep } from 'node:path';
import { compileFile } from './index';

const USAGE = 'usage: rpcgen-ts FILE.x [FILE.x ...] --out DIR [--runtime MODULE] [-I DIR ...]';

/** The runtime as seen from `outDir`: this compiler's sibling directory (src/rpc, or dist/src/rpc). */
function defaultRuntime(outDir: string): string {
  const rel = relative(resolve(outDir), resolve(__dirname, '..')).split(sep).join('/');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

export function main(argv: string[]): number {
  const files: string[] = [];
  const includeDirs: string[] = [];
  let out: string | undefined;
  let runtime: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = (): string | undefined => (i + 1 < argv.length ? argv[++i] : undefined);
    if (a === '--out' || a === '-o') out = value();
    else if (a === '--runtime') runtime = value();
    else if (a === '-I') {
      const d = value();
      if (d !== undefined) includeDirs.push(d);
    } else if (a.startsWith('-I') && a.length > 2) includeDirs.push(a.slice(2));
    else if (a === '-h' || a === '--help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    } else if (a.startsWith('-')) {
      process.stderr.write(`rpcgen-ts: unknown option ${a}\n${USAGE}\n`);
      return 2;
    } else files.push(a);
  }
  if (files.length === 0 || out === undefined || (runtime === undefined && argv.includes('--runtime'))) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const outDir = out;
  let status = 0;
  for (const file of files) {
    try {
      const code = compileFile(file, { runtime: runtime ?? defaultRuntime(outDir), includeDirs });
      mkdirSync(outDir, { recursive: true });
      writeFileSync(join(outDir, `${basename(file, extname(file))}.ts`), code);
    } catch (err) {
      process.stderr.write(`rpcgen-ts: ${err instanceof Error ? err.message : String(err)}\n`);
      status = 1;
    }
  }
  return status;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
