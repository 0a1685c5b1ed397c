// Helpers for the rpcgen-ts tests: compile .x files with rpcgen-ts, type-check the output with the TypeScript
// compiler (in process), and build a C driver from the same .x file with the real rpcgen, gcc and libtirpc.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { compileFile, type CompileOptions } from '../../../src/rpcgen';

export const ROOT = resolve(__dirname, '../../..');
export const FIXTURES = resolve(__dirname, '../fixtures');
const RPC_DIR = join(ROOT, 'src/rpc');

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Compile `xFile` into `outDir` with rpcgen-ts, importing the runtime from this checkout; returns the .ts path. */
export function generate(xFile: string, outDir: string, options: Partial<CompileOptions> = {}): string {
  const out = join(outDir, `${basename(xFile, extname(xFile))}.ts`);
  let runtime = relative(outDir, RPC_DIR).split('\\').join('/');
  if (!runtime.startsWith('.')) runtime = `./${runtime}`;
  writeFileSync(out, compileFile(xFile, { runtime, ...options }));
  return out;
}

/**
 * The project's strict settings, so generated code must satisfy what `npm run build` asks of src/protocol/generated.
 */
const COMPILER_OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.CommonJS,
  moduleResolution: ts.ModuleResolutionKind.Node10,
  lib: ['lib.es2022.d.ts'],
  types: ['node'],
  typeRoots: [join(ROOT, 'node_modules/@types')],
  strict: true,
  noImplicitOverride: true,
  noFallthroughCasesInSwitch: true,
  noUnusedLocals: true,
  noUnusedParameters: true,
  esModuleInterop: true,
  skipLibCheck: true,
  noEmit: true,
};

/** Type-check `files` (and what they import) as one program; returns the diagnostics as text, empty when clean. */
export function typeCheck(files: string[]): string[] {
  const program = ts.createProgram(files, COMPILER_OPTIONS);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (!d.file || d.start === undefined) return text;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    return `${d.file.fileName}:${line + 1}:${character + 1}: ${text}`;
  });
}

export interface CDriver {
  /** Encode sample `n` of `type` in C; the bytes. */
  encode(type: string, n: number): Uint8Array;
  /** Decode `bytes` as `type` in C and encode the result again; throws with the driver's exit status on failure. */
  reencode(type: string, bytes: Uint8Array): Uint8Array;
}

/**
 * rpcgen -h/-c on `xFile`, then gcc with `driverC` and libtirpc, in `dir`. The driver includes NAME.h for
 * NAME.x and speaks `encode TYPE N` and `reencode TYPE` (hex on stdin), printing hex.
 */
export function buildCDriver(xFile: string, driverC: string, dir: string): CDriver {
  const name = basename(xFile, extname(xFile));
  copyFileSync(xFile, join(dir, `${name}.x`));
  execFileSync('rpcgen', ['-h', '-o', `${name}.h`, `${name}.x`], { cwd: dir });
  execFileSync('rpcgen', ['-c', '-o', `${name}_xdr.c`, `${name}.x`], { cwd: dir });
  const exe = join(dir, `${name}_driver`);
  execFileSync(
    'gcc',
    ['-O1', '-I/usr/include/tirpc', `-I${dir}`, '-o', exe, driverC, join(dir, `${name}_xdr.c`), '-ltirpc'],
    {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const run = (args: string[], input?: string): Uint8Array => {
    let out: string;
    try {
      out = execFileSync(exe, args, { input, encoding: 'utf8', maxBuffer: 64 << 20 });
    } catch (e) {
      throw new Error(`C driver ${args.join(' ')}: exit status ${(e as { status?: number }).status}`);
    }
    return Uint8Array.from(Buffer.from(out.trim(), 'hex'));
  };
  return {
    encode: (type, n) => run(['encode', type, String(n)]),
    reencode: (type, bytes) => run(['reencode', type], Buffer.from(bytes).toString('hex')),
  };
}

/**
 * A driver that decodes and re-encodes types of a system .x file with C xdr routines: those rpcgen generates from
 * `xFile` (when given) or libtirpc's own (rpcb_prot.x's), declared by `header`.
 */
export function buildSystemDriver(
  dir: string,
  name: string,
  header: string,
  types: string[],
  xFile?: string,
): Pick<CDriver, 'reencode'> {
  const sources = [join(FIXTURES, 'system_driver.c')];
  if (xFile) {
    copyFileSync(xFile, join(dir, `${name}.x`));
    execFileSync('rpcgen', ['-h', '-o', `${name}.h`, `${name}.x`], { cwd: dir });
    execFileSync('rpcgen', ['-c', '-o', `${name}_xdr.c`, `${name}.x`], { cwd: dir });
    sources.push(join(dir, `${name}_xdr.c`));
  }
  const exe = join(dir, `${name}_system_driver`);
  const defs = [`-DXDR_HEADER=${header}`, `-DXDR_TYPES=${types.map((t) => `T(${t})`).join(' ')}`];
  execFileSync('gcc', ['-O1', '-I/usr/include/tirpc', `-I${dir}`, ...defs, '-o', exe, ...sources, '-ltirpc'], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return {
    reencode(type, bytes) {
      try {
        const out = execFileSync(exe, ['reencode', type], {
          input: Buffer.from(bytes).toString('hex'),
          encoding: 'utf8',
          maxBuffer: 64 << 20,
        });
        return Uint8Array.from(Buffer.from(out.trim(), 'hex'));
      } catch (e) {
        throw new Error(`C driver reencode ${type}: exit status ${(e as { status?: number }).status}`);
      }
    },
  };
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}
