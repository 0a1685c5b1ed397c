// rpcgen-ts FILE.x [FILE.x ...] --out DIR: one DIR/NAME.ts per NAME.x, like rpcgen. See man/rpcgen-ts.1.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, extname, join, relative, resolve, sep } from 'node:path';
import { compileFile } from './index';

const USAGE =
  'usage: rpcgen-ts FILE.x [FILE.x ...] --out DIR [--runtime MODULE] [--extern MODULE] [-I DIR] [-D NAME[=VALUE]] [-U NAME]';

/** The package this compiler belongs to: two levels up from src/rpcgen, three from dist/src/rpcgen. */
const PACKAGE_ROOT = resolve(__dirname, __dirname.split(sep).includes('dist') ? '../../..' : '../..');

/**
 * The runtime module for code generated into `outDir`. Outside this package (someone else's project, with dstm
 * installed) it is the package's own export, `dstm/rpc`. Inside a checkout of dstm (`npm run gen`) it is the
 * TypeScript sources in src/rpc by relative path, which carry the types.
 */
function defaultRuntime(outDir: string): string {
  const out = resolve(outDir);
  if (!out.startsWith(PACKAGE_ROOT + sep) || !existsSync(join(PACKAGE_ROOT, 'src/rpc/types.ts'))) return 'dstm/rpc';
  const rel = relative(out, join(PACKAGE_ROOT, 'src/rpc')).split(sep).join('/');
  return rel.startsWith('.') ? rel : `./${rel}`;
}

export function main(argv: string[]): number {
  const files: string[] = [];
  const includeDirs: string[] = [];
  /** -D NAME[=VALUE] by NAME. */
  const defines = new Map([['RPC_HDR', 'RPC_HDR']]);
  let out: string | undefined;
  let runtime: string | undefined;
  let externModule: string | undefined;
  const usage = (msg: string): number => {
    process.stderr.write(`rpcgen-ts: ${msg}\n${USAGE}\n`);
    return 2;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^(-[IDU])(.+)$/.exec(a);
    const [opt, attached] = m ? [m[1], m[2]] : [a, undefined];
    const takesValue = ['--out', '-o', '--runtime', '--extern', '-I', '-D', '-U'].includes(opt);
    if (takesValue && attached === undefined && i + 1 >= argv.length) return usage(`${opt} needs a value`);
    const value = takesValue ? (attached ?? argv[++i]) : '';
    if (opt === '--out' || opt === '-o') out = value;
    else if (opt === '--runtime') runtime = value;
    else if (opt === '--extern') externModule = value;
    else if (opt === '-I') includeDirs.push(value);
    else if (opt === '-D') defines.set(value.split('=')[0], value);
    else if (opt === '-U') defines.delete(value);
    else if (opt === '-h' || opt === '--help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    } else if (opt.startsWith('-')) return usage(`unknown option ${opt}`);
    else files.push(a);
  }
  if (files.length === 0) return usage('no .x file given');
  if (out === undefined) return usage('--out DIR is required');
  let status = 0;
  for (const file of files) {
    try {
      const code = compileFile(file, {
        runtime: runtime ?? defaultRuntime(out),
        includeDirs,
        defines: [...defines.values()],
        externModule,
      });
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, `${basename(file, extname(file))}.ts`), code);
    } catch (err) {
      process.stderr.write(`rpcgen-ts: ${err instanceof Error ? err.message : String(err)}\n`);
      status = 1;
    }
  }
  return status;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
