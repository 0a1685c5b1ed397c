// rpcgen-ts: every system .x file compiles and type-checks; generated names never collide; the generated client
// and service builder work end to end; syntax errors name file:line:column; decoding untrusted bytes is strict.
import { expect } from 'chai';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { XdrSyntaxError, compileSource } from '../../src/rpcgen';
import { main } from '../../src/rpcgen/cli';
import type { CallContext, Procedure, RpcCaller, Service } from '../../src/rpc/types';
import * as runtime from '../../src/rpc/xdr/runtime';
import { type Codec, XdrError, XdrReader, XdrWriter, decode, encode } from '../../src/rpc/xdr/runtime';
import { C_SAMPLES, chain } from '../rpc/support/samples';
import { FIXTURES, ROOT, generate, hex, tempDir, typeCheck } from '../rpc/support/toolchain';
import { skipIf } from '../support/skip';

const SYSTEM_X = [
  ...readdirSync('/usr/include/rpcsvc')
    .filter((f) => f.endsWith('.x'))
    .map((f) => join('/usr/include/rpcsvc', f)),
  '/usr/include/tirpc/rpc/rpcb_prot.x',
  '/usr/include/tirpc/rpcsvc/crypt.x',
];

type Module = Record<string, unknown>;

/** Runs the cli in process, capturing what it writes to stderr. */
function runCli(argv: string[]): { status: number; stderr: string } {
  let stderr = '';
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => {
    stderr += chunk;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { status: main(argv), stderr };
  } finally {
    process.stderr.write = write;
  }
}

/** An RpcCaller that serves calls in process through a Service, passing arguments and results through XDR. */
function loopback(service: Service): RpcCaller & { calls: number[] } {
  const calls: number[] = [];
  return {
    calls,
    async call<A, R>(program: number, version: number, proc: Procedure<A, R>, args: A): Promise<R> {
      expect(program).to.equal(service.definition.program);
      expect(version).to.equal(service.definition.version);
      calls.push(proc.number);
      const served = service.definition.procedures.get(proc.number)!;
      const decodedArgs = decode(served.args, encode(proc.args, args));
      const handler = service.handlers.get(proc.number);
      const ctx = { xid: 1 } as CallContext;
      const result = handler ? await handler(decodedArgs, ctx) : undefined;
      return decode(proc.result, encode(served.result, result));
    },
  };
}

describe('rpcgen-ts compiler', function () {
  this.timeout(60000);
  const dir = tempDir('rpcgen-ts-');
  let conf: Module;
  let edge: Module;

  before(async () => {
    conf = (await import(generate(join(FIXTURES, 'conformance.x'), dir.path))) as Module;
    edge = (await import(generate(join(FIXTURES, 'edge.x'), dir.path))) as Module;
  });

  after(() => dir.remove());

  it('npm run gen: the cli generates dstm.x, and every system .x file compiles, all type-checking strictly', () => {
    expect(SYSTEM_X).to.have.length(19);
    const out = join(dir.path, 'sys');
    const runtime = relative(out, join(ROOT, 'src/rpc'));
    expect(runCli([join(ROOT, 'xdr/dstm.x'), '--out', out, '--runtime', runtime])).to.deep.equal({
      status: 0,
      stderr: '',
    });
    const files = [join(out, 'dstm.ts')];
    for (const x of SYSTEM_X) {
      // nis_callback.x uses nis.x's types without defining them, as rpcgen leaves xdr_nis_object to the linker.
      const extern = x.endsWith('nis_callback.x') ? { externModule: './nis' } : {};
      files.push(generate(x, out, extern));
    }
    files.push(join(dir.path, 'conformance.ts'), join(dir.path, 'edge.ts'));
    expect(typeCheck(files)).to.deep.equal([]);
    expect(readFileSync(join(out, 'dstm.ts'), 'utf8'))
      .to.contain('export class RPC_ONE_Client')
      .and.contain('export const xdr_packet:');
  });

  it('src/protocol/generated/dstm.ts, when built, is what the generator makes from xdr/dstm.x now', function () {
    const built = join(ROOT, 'src/protocol/generated/dstm.ts');
    skipIf(this, existsSync(built) ? undefined : 'src/protocol/generated/dstm.ts is not generated: run `npm run gen`');
    const now = compileSource(join(ROOT, 'xdr/dstm.x'), readFileSync(join(ROOT, 'xdr/dstm.x'), 'utf8'), {
      runtime: '../../rpc',
    });
    expect(readFileSync(built, 'utf8')).to.equal(now, 'src/protocol/generated/dstm.ts is stale: npm run gen');
  });

  describe('generated names', () => {
    /** Compiles `src` as `name`.x into the temporary directory and type-checks it; the diagnostics. */
    const checkX = (name: string, src: string): string[] => {
      const x = join(dir.path, `${name}.x`);
      writeFileSync(x, src);
      return typeCheck([generate(x, dir.path)]);
    };

    it('enums named like the parameters of generated functions and methods do not shadow them', () => {
      const src = [
        'enum r { RA = 1, RB = 2 };',
        'enum v { VA = 1, VB = 2 };',
        'enum args { AA = 1 };',
        'union ur switch (r d) { case RA: int x; case RB: void; };',
        'struct sv { union switch (v d) { case VA: int x; default: void; } u; };',
        'program P { version V { int F(union switch (args d) { case AA: int x; }) = 1; } = 1; } = 0x20000100;',
      ];
      expect(checkX('shadow', src.join('\n'))).to.deep.equal([]);
    });

    it('a linked list in a file without programs imports nothing unused', () => {
      expect(checkX('list', 'struct node { int v; node *next; };')).to.deep.equal([]);
    });

    it('programs may repeat version and procedure names with their numbers (NULLPROC in each), as rpcgen lets them', () => {
      const src = [
        'program P { version V1 { void NULLPROC(void) = 0; int F(int) = 1; } = 1; } = 0x20000001;',
        'program Q { version V1 { void NULLPROC(void) = 0; int F(int) = 1; } = 1; } = 0x20000002;',
      ];
      expect(checkX('twoprogs', src.join('\n'))).to.deep.equal([]);
    });

    it('a const named like a codec keeps its name; the codec yields', () => {
      expect(edge.xdr_packet).to.equal(7);
      const codec = edge.xdr_packet$ as Codec<{ type: number }>;
      expect(hex(encode(codec, { type: -2 }))).to.equal('fffffffe');
    });

    it('reserved words and globals are mangled with $, property names kept, __proto__ an own property', () => {
      const codec = edge.xdr_delete as Codec<Record<string, unknown>>;
      const v = {
        new: 1,
        function: 2,
        ['__proto__']: { type: 3 },
        constructor: 'c',
        l: { v: 4, again: { v: 5, again: null } },
      };
      const back = decode(codec, encode(codec, v));
      expect(Object.hasOwn(back, '__proto__')).to.equal(true);
      expect(Object.getPrototypeOf(back)).to.equal(Object.prototype);
      expect(back['__proto__']).to.deep.equal({ type: 3 });
      expect(back.constructor).to.equal('c');
      const kinds = edge.kinds as Record<string, number>;
      expect(Object.hasOwn(kinds, '__proto__')).to.equal(true);
      expect([kinds.__proto__, kinds.hasOwnProperty, Object.isFrozen(kinds)]).to.deep.equal([2, 511, true]);
      expect(edge.xdr_Map).to.have.property('decode');
      expect([edge.class$, edge.constructor$, edge.NEG, edge.OCT, edge.BIG, edge.TEXT]).to.deep.equal([
        0x20000099,
        1,
        -16,
        511,
        0xffffffff,
        'passed through to C',
      ]);
    });

    it('a constant or enum named __proto__ is exported as __proto__$, which CommonJS output keeps', () => {
      for (const src of ['const __proto__ = 5;', 'enum __proto__ { A = 5 };']) {
        const js = ts.transpileModule(compileSource('t.x', src, { runtime: 'RT' }), {
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
        }).outputText;
        const exported: Module = {};
        new Function('exports', 'require', js)(exported, (m: string) => (m === 'RT/xdr/runtime' ? runtime : {}));
        expect(Object.getPrototypeOf(exported)).to.equal(Object.prototype);
        const value = exported.__proto__$;
        expect(typeof value === 'object' ? (value as Module).A : value).to.equal(5);
      }
    });

    it('cpp conditionals, %-lines, inline anonymous types, typedef struct {...} and quadruple', () => {
      expect(edge.FEATURE_ON).to.equal(1);
      expect(edge).to.not.have.property('xdr_never_seen');
      const codec = edge.xdr_anon as Codec<unknown>;
      const v = {
        inner: { a: 1, b: -2n },
        choice: { k: 1, one: 5 },
        e: 2,
        q: Uint8Array.from({ length: 16 }, (_, i) => i),
        us: 65535,
        ul: 0xffffffff,
        c: -1,
        li: -5,
      };
      const bytes = encode(codec, v);
      expect(bytes.length).to.equal(4 + 8 + 8 + 4 + 16 + 4 * 4);
      expect(decode(codec, bytes)).to.deep.equal(v);
      expect(decode(codec, encode(codec, { ...v, choice: { k: 9 } }))).to.deep.equal({ ...v, choice: { k: 9 } });
      expect(() => encode(codec, { ...v, e: 3 })).to.throw(XdrError, /anon\.e: 3 is not a declared value/);
      expect(() => encode(codec, { ...v, q: new Uint8Array(15) })).to.throw(XdrError, /anon\.q/);
      const map = edge.xdr_Map as Codec<unknown>;
      const m = { size: 1, te: 2, tu: { b: true, t: { x: 3 } } };
      expect(decode(map, encode(map, m))).to.deep.equal(m);
    });
  });

  describe('client class and service builder', () => {
    it('a client call runs the handler through the Service and XDR, with the program number overridable', async () => {
      const handlers = {
        constructor$: (p: { type: number }) => ({ type: p.type + 1 }),
        PICK: (k: number) => (k === 1 ? { k, a: 42 } : k === 2 ? { k, b: 'two' } : { k }),
        ECHO: (s: string) => s.toUpperCase(),
        SINK: () => undefined,
        then$: () => undefined,
      };
      const service = (edge.V1_service as (h: unknown, p?: number) => Service)(handlers, 0x30000001);
      expect(service.definition.program).to.equal(0x30000001);
      expect((edge.V1_definition as Service['definition']).program).to.equal(0x20000099);
      expect([...service.handlers.keys()]).to.deep.equal([1, 2, 3, 4, 5]);
      const caller = loopback(service);
      const Client = edge.V1_Client as new (
        c: RpcCaller,
        program?: number,
      ) => Record<string, (...a: unknown[]) => Promise<unknown>>;
      const client = new Client(caller, 0x30000001);
      expect(await client.constructor$({ type: 41 })).to.deep.equal({ type: 42 });
      expect(await client.PICK(2)).to.deep.equal({ k: 2, b: 'two' });
      expect(await client.ECHO('abc')).to.equal('ABC');
      expect(await client.NULLPROC()).to.equal(undefined);
      expect(await client.then$()).to.equal(undefined);
      expect('then' in client).to.equal(false); // awaiting a client must not call a procedure
      expect(caller.calls).to.deep.equal([1, 2, 3, 0, 5]);
    });
  });

  describe('syntax and semantic errors name file:line:column', () => {
    const cases: [string, RegExp][] = [
      ['struct s {\n  int a\n};', /^t\.x:3:1: expected ';', found '}'/],
      [
        'const A = 1;\nstruct s { int a; } ;\nunion u switch (int d) {\n};',
        /^t\.x:4:1: a union needs at least one case/,
      ],
      ['typedef opaque x;', /^t\.x:1:17: opaque needs \[size\] or <max>/],
      ['struct s { foo a; };', /^t\.x:1:12: undefined type foo/],
      ['typedef struct foo foo;', /^t\.x:1:16: undefined type foo/],
      ['#ifndef NEEDED\n#error NEEDED must be defined\n#endif', /^t\.x:2:1: #error NEEDED must be defined/],
      ['#ifdef\n#endif', /^t\.x:1:1: #ifdef needs a name/],
      ['const foo = 1;\ntypedef foo foo;', /^t\.x:2:9: foo is not a type/],
      ['const A = B;', /^t\.x:1:11: undefined constant B/],
      ['struct s { int a; int a; };', /^t\.x:1:19: field a appears twice/],
      ['enum e { X = 1 };\nunion u switch (e d) { case 2: int a; };', /^t\.x:2:29: case 2 is not a value/],
      ['union u switch (int d) { case 1: int a; case 1: int b; };', /^t\.x:1:46: case 1 appears twice/],
      ['union u switch (unsigned short d) { case 65536: int a; };', /^t\.x:1:42: case 65536 is not a value/],
      [
        'union u switch (string d<>) { case 1: int a; };',
        /^t\.x:1:17: a union discriminant is a plain declaration|discriminant/,
      ],
      ['struct s { int a; };\nstruct s { int b; };', /^t\.x:2:1: s is already defined/],
      ['const A = 0x;', /^t\.x:1:11: hexadecimal constant without digits/],
      ['const A = 09;', /^t\.x:1:11: bad octal constant/],
      ['struct s { int a; } @', /^t\.x:1:21: unexpected character '@'/],
      ['/* open', /^t\.x:1:1: unterminated comment/],
      ['#if 1\nconst A = 1;', /^t\.x:2:13: missing #endif|^t\.x:\d+:\d+: missing #endif/],
      ['struct s { int a[N]; };', /^t\.x:1:18: undefined constant N/],
      ['struct s { s inner; };', /^t\.x:1:1: s contains itself and has no finite encoding/],
      [
        'union u switch (int d) { case 1: u again; default: void; };\nstruct t { u x; t y[2]; };',
        /^t\.x:2:1: t contains itself/,
      ],
      ['program P { version V { int F(int, int) = 1; } = 1; } = 1;', /^t\.x:1:34: procedures with several arguments/],
      [
        'program P { version V { void F(void) = 1; void G(void) = 1; } = 1; } = 1;',
        /^t\.x:1:48: procedure number 1 appears twice/,
      ],
      ['typedef a b;\ntypedef b a;\nstruct s { a x; };', /^t\.x:1:1: typedef b refers to itself/],
      ['typedef a b;\ntypedef b a;\nunion u switch (a d) { case 1: int x; };', /^t\.x:1:1: typedef b refers to itself/],
      ['enum e { A = A };', /^t\.x:1:10: enum value A is defined in terms of itself/],
      ['enum e { A = B, B = A };', /^t\.x:1:10: enum value A is defined in terms of itself/],
      [
        'program P { version V { int NULLP(int) = 0; } = 1; } = 1;',
        /^t\.x:1:29: procedure 0 \(NULLP\) must take and return void/,
      ],
      [
        'program P { version V1 { void F(void) = 1; } = 1; version V2 { void F(void) = 2; } = 2; } = 1;',
        /^t\.x:1:69: F is already defined/,
      ],
      [
        // A second definition would export the program constant twice (it was `export const undefined = 1`).
        'program P { version V { void F(void) = 1; } = 1; } = 1;\nprogram P { version W { void G(void) = 1; } = 2; } = 1;',
        /^t\.x:2:1: P is already defined/,
      ],
      [
        '%#define X (1 << 99999999999)\nstruct s { int a[X]; };',
        /^t\.x:2:18: #define X is not a constant expression rpcgen-ts can evaluate/,
      ],
      ['#define T int\nstruct s { int a[T]; };', /^t\.x:2:18: #define T is not a constant expression/],
      ['%#define N 09\nstruct s { int a[N]; };', /^t\.x:2:18: #define N is not a constant expression/],
    ];
    for (const [src, re] of cases) {
      it(re.source.replace(/^\^t\\\.x:/, '').slice(0, 60), () => {
        expect(() => compileSource('t.x', src, { runtime: '../rpc' })).to.throw(re);
      });
    }

    it('#if as cpp: a skipped group evaluates no condition (nor #error); #define DEBUG 0 makes DEBUG 0', () => {
      const src = [
        '#ifdef NOT_DEFINED',
        '#if VERS >= 3',
        '#error not this one',
        '#elif VERS == 2',
        '#endif',
        '#endif',
        'const B = 1;',
      ].join('\n');
      expect(compileSource('t.x', src, { runtime: '../rpc' })).to.contain('export const B = 1;');
      const zero = '#define DEBUG 0\n#define ON 0x1\n#if DEBUG || !ON\nconst A = 1;\n#else\nconst A = 2;\n#endif';
      expect(compileSource('t.x', zero, { runtime: '../rpc' })).to.contain('export const A = 2;');
    });

    it("a string constant's escapes mean what they mean to C, which rpcgen passes it to", () => {
      const code = compileSource('t.x', String.raw`const S = "a\"b\\c\n\x41\101\q";`, { runtime: '../rpc' });
      expect(code).to.contain(`export const S = ${JSON.stringify('a"b\\c\nAAq')};`);
    });

    it('CR LF line ends are newlines to directives, %#define and backslash-newline too, as to cpp', () => {
      const src = [
        '#define A',
        '#if defined(A) /* on */',
        '%#define N 5 /* five */',
        '#endif',
        '#define LONG \\',
        '  continued',
        'struct s { int a[N]; };',
      ].join('\n');
      const lf = compileSource('t.x', src, { runtime: '../rpc' });
      expect(lf).to.contain('$r.need(20');
      expect(compileSource('t.x', src.replace(/\n/g, '\r\n'), { runtime: '../rpc' })).to.equal(lf);
      expect(() => compileSource('t.x', 'struct s {\r\n  int a\r\n};', { runtime: '../rpc' })).to.throw(/^t\.x:3:1: /);
    });

    it('a procedure named again in another version may take its number from a constant defined later', () => {
      const src =
        'program P { version V1 { void F(void) = FNUM; } = 1; version V2 { void F(void) = FNUM; } = 2; } = 1;\n' +
        'const FNUM = 1;';
      expect(compileSource('t.x', src, { runtime: '../rpc' })).to.contain('export const FNUM = 1;');
    });

    it("cpp's #define NAME VALUE and -D NAME=VALUE give constants for sizes, as rpcgen's cpp substitutes them", () => {
      const x = join(dir.path, 'cppdef.x');
      writeFileSync(x, '#define MAXN 16\nstruct s { opaque x<MAXN>; int y[DIM]; };\n');
      const r = runCli([x, '--out', join(dir.path, 'cppdef'), '-DDIM=2', '-D', 'UNUSED']);
      expect(r).to.deep.equal({ status: 0, stderr: '' });
      const code = readFileSync(join(dir.path, 'cppdef/cppdef.ts'), 'utf8');
      expect(code)
        .to.contain('$r.varOpaque(16, "x")')
        .and.match(/\$w\.fixedCount\(\$\d+\.length, 2, "y"\)/);
    });

    it('the cli reports them on stderr with exit status 1, and usage errors with 2', () => {
      const bad = join(dir.path, 'bad.x');
      writeFileSync(bad, 'struct s {\n  int a;\n  bogus b;\n};\n');
      const r = runCli([bad, '--out', join(dir.path, 'bad')]);
      expect(r.status).to.equal(1);
      expect(r.stderr).to.equal(`rpcgen-ts: ${bad}:3:3: undefined type bogus\n`);
      expect(runCli([bad]).status).to.equal(2);
      expect(runCli(['--out']).status).to.equal(2);
      expect(() => compileSource('t.x', 'struct s { int a; } @', { runtime: '.' })).to.throw(XdrSyntaxError);
    });
  });

  describe('strict decoding of untrusted bytes', () => {
    const codec = (name: string): Codec<unknown> => conf[`xdr_${name}`] as Codec<unknown>;
    const bytes = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replace(/\s/g, ''), 'hex'));

    it('truncated input fails with the field path', () => {
      const full = encode(codec('READDIR3resok'), C_SAMPLES.READDIR3resok[0]);
      for (const cut of [3, 50, 120, full.length - 1]) {
        expect(() => decode(codec('READDIR3resok'), full.subarray(0, cut))).to.throw(XdrError, /^XDR READDIR3resok\./);
      }
      expect(() => decode(codec('READDIR3resok'), full.subarray(0, 20))).to.throw(
        XdrError,
        /^XDR READDIR3resok\.dir_attributes\.attributes\.gid: needs 4 bytes, 0 left \(at byte 20\)/,
      );
      expect(() => decode(codec('READDIR3resok'), full.subarray(0, 200))).to.throw(
        XdrError,
        /^XDR READDIR3resok\.reply\.entries\.nextentry\[3\]\.fileid: needs 8 bytes, 4 left \(at byte 196\)/,
      );
      // A count is checked against the bytes left before any element is decoded.
      expect(() => decode(codec('arrays'), encode(codec('arrays'), C_SAMPLES.arrays[0]).subarray(0, 50))).to.throw(
        XdrError,
        /^XDR arrays\.points: 2 elements cannot fit in the 10 bytes left/,
      );
      expect(() => decode(codec('choice'), bytes('00000001 00000007'))).to.throw(
        XdrError,
        /^XDR choice\.p\.y: needs 4 bytes, 0 left/,
      );
    });

    it('lengths and counts over their maximum or the bytes left fail before allocating', () => {
      // blobs.var16 is opaque<16>: a length of 17 is refused whatever follows.
      expect(() => decode(codec('blobs'), bytes('0102030405000000 00000011' + '00'.repeat(40)))).to.throw(
        XdrError,
        /blobs\.var16: length 17 exceeds the maximum of 16/,
      );
      // arrays.var_ints is unsigned<16>; hypers<> claims 2^32-1 elements of 8 bytes in a few bytes.
      const head = '00000001fffffffe00000003';
      expect(() => decode(codec('arrays'), bytes(head + '00000011'))).to.throw(
        XdrError,
        /arrays\.var_ints: 17 elements exceed the maximum of 16/,
      );
      expect(() => decode(codec('arrays'), bytes(head + '00000000 ffffffff 0000'))).to.throw(
        XdrError,
        /arrays\.hypers: 4294967295 elements cannot fit/,
      );
      expect(() => decode(codec('blobs'), bytes('0102030405000000 00000000 7fffffff'))).to.throw(
        XdrError,
        /blobs\.unbounded: length 2147483647 exceeds the \d+ bytes left/,
      );
      // A string over its bound in a typedef used as an array element.
      const names = encode(codec('arrays'), { ...(C_SAMPLES.arrays[0] as object), names: ['a'] });
      const at = hex(names).indexOf('0000000100000001' + '61000000');
      const tooLong =
        hex(names).slice(0, at) + '00000001' + '00000021' + '61'.repeat(33) + '000000' + hex(names).slice(at + 24);
      expect(() => decode(codec('arrays'), bytes(tooLong))).to.throw(
        XdrError,
        /arrays\.names: length 33 exceeds the maximum of 32/,
      );
    });

    it('non-zero padding, a bool other than 0/1, an undeclared enum value or discriminant fail', () => {
      expect(() =>
        decode(codec('blobs'), bytes('0102030405000100 00000000 00000000 00000000 00000000 0001020304050607')),
      ).to.throw(XdrError, /blobs\.fixed5: non-zero padding/);
      expect(() => decode(codec('onoff'), bytes('00000002'))).to.throw(
        XdrError,
        /onoff\.on: bool must be 0 or 1, got 2/,
      );
      expect(() => decode(codec('post_op_attr'), bytes('ffffffff'))).to.throw(XdrError, /bool must be 0 or 1/);
      expect(() => decode(codec('fattr3'), bytes('00000008' + '00'.repeat(80)))).to.throw(
        XdrError,
        /fattr3\.type: 8 is not a declared value \(at byte 0\)/,
      );
      expect(decode(codec('wide'), bytes('00000005'))).to.deep.equal({ k: 5 });
      expect(() => decode(codec('choice'), bytes('00000003'))).to.throw(XdrError); // default arm: raw<> length missing
      expect(decode(codec('choice'), bytes('00000003 00000000'))).to.deep.equal({ kind: 3, raw: new Uint8Array(0) });
      const sparse = (v: string): unknown =>
        decode(codec('prims'), bytes('00'.repeat(36) + '00000001' + '00000000' + v + '00'.repeat(16)));
      expect(() => sparse('00000008')).to.throw(XdrError, /prims\.s: 8 is not a declared value/);
      expect(sparse('00000100')).to.have.property('s', 0x100);
      expect(() => decode(codec('node'), bytes('00000001 00000000 ff'))).to.throw(XdrError, /1 trailing bytes/);
    });

    it('nesting is bounded: a depth bomb fails cleanly, while a 200000-node list decodes without recursion', () => {
      // tree.right recurses (left is decoded as a list): 200 nested right subtrees exceed the bound of 128.
      const w = new XdrWriter();
      for (let i = 0; i < 200; i++) {
        w.int(i);
        w.uint(0);
        w.uint(1);
      }
      w.int(200);
      w.uint(0);
      w.uint(0);
      expect(() => decode(codec('tree'), w.toBytes())).to.throw(XdrError, /nesting deeper than 128/);
      expect(new XdrReader(w.toBytes(), 0, w.pos, 1000).maxDepth).to.equal(1000);
      expect(() => codec('tree').decode(new XdrReader(w.toBytes(), 0, w.pos, 1000))).to.not.throw();
      const long = chain(1, 200000);
      const enc = encode(codec('node'), long);
      expect(enc.length).to.equal(200000 * 8);
      let n = decode(codec('node'), enc) as { value: number; next: unknown } | null;
      let count = 0;
      for (; n; n = n.next as typeof n) count++;
      expect(count).to.equal(200000);
    });

    it('encoding refuses values outside their type', () => {
      expect(() => encode(codec('prims'), { ...(C_SAMPLES.prims[0] as object), u: -1 })).to.throw(
        XdrError,
        /prims\.u: -1 is not a 32-bit unsigned integer/,
      );
      expect(() => encode(codec('prims'), { ...(C_SAMPLES.prims[0] as object), h: 1 << 30 })).to.throw(
        XdrError,
        /prims\.h/,
      );
      expect(() => encode(codec('blobs'), { ...(C_SAMPLES.blobs[0] as object), name: 'x'.repeat(33) })).to.throw(
        XdrError,
        /blobs\.name: 33 bytes exceed string<32>/,
      );
      expect(() => encode(codec('arrays'), { ...(C_SAMPLES.arrays[0] as object), fixed_ints: [1, 2] })).to.throw(
        XdrError,
        /arrays\.fixed_ints: 2 elements given for a fixed array of 3/,
      );
      expect(() => encode(codec('result'), { c: 7, code: 1 })).to.throw(
        XdrError,
        /result\.c: 7 is not a declared value/,
      );
      expect(() => encode(codec('choice'), { kind: 1, p: { x: 1, y: 'no' } })).to.throw(XdrError, /choice\.p\.y/);
      // A list linking back into itself, after a tail of 1000 nodes or at once, would be encoded forever.
      const list = chain(1, 1000) as { next: unknown };
      let last = list;
      while (last.next) last = last.next as typeof last;
      for (const back of [(list.next as { next: unknown }).next, last]) {
        last.next = back;
        expect(() => encode(codec('node'), list)).to.throw(
          XdrError,
          /^XDR node\.next: the list links back into itself/,
        );
      }
      const tagged = { tag: 'a', next: null as unknown, after: 1 };
      tagged.next = tagged;
      expect(() => encode(codec('tagged'), tagged)).to.throw(XdrError, /tagged\.next: the list links back/);
    });
  });
});
