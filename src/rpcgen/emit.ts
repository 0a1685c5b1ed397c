// TypeScript emitter: straight-line encode/decode functions per type (no closures or reflection per field),
// codec objects, program constants, a Promise-based client class and a typed handler interface per version.
//
// Naming: .x identifiers keep their spelling (with `$` appended when they are TS/JS reserved words or globals the
// generated code uses). Generated public names (xdr_T, V_Client, ...) get a `$` appended while they collide with
// anything. Internal names start with `$`, which no .x identifier can, so nothing collides.
import {
  type EnumInfo,
  type Field,
  type Model,
  type NamedType,
  type ProcedureInfo,
  type Shape,
  type StructInfo,
  type TypedefInfo,
  type UnionInfo,
  SMALL_INT_RANGE,
  minSize,
  unalias,
} from './check';

export interface EmitOptions {
  /** Module specifier of the directory holding `xdr/runtime` and `types` (e.g. '../rpc'). */
  runtime: string;
  /** Module specifier of the generated module that types this file does not define come from. */
  externModule?: string;
  /** The .x file name, for the header. */
  source: string;
}

const RESERVED = new Set([
  // ECMAScript reserved words, strict-mode restrictions and literals
  'break',
  'case',
  'catch',
  'class',
  'const',
  'continue',
  'debugger',
  'default',
  'delete',
  'do',
  'else',
  'enum',
  'export',
  'extends',
  'false',
  'finally',
  'for',
  'function',
  'if',
  'import',
  'in',
  'instanceof',
  'new',
  'null',
  'return',
  'super',
  'switch',
  'this',
  'throw',
  'true',
  'try',
  'typeof',
  'var',
  'void',
  'while',
  'with',
  'implements',
  'interface',
  'let',
  'package',
  'private',
  'protected',
  'public',
  'static',
  'yield',
  'await',
  'arguments',
  'eval',
  // TypeScript type names and contextual keywords that cannot (or should not) name a type
  'any',
  'unknown',
  'never',
  'string',
  'number',
  'boolean',
  'bigint',
  'symbol',
  'object',
  'undefined',
  'type',
  'namespace',
  'module',
  'declare',
  'abstract',
  'readonly',
  'keyof',
  'infer',
  'is',
  'asserts',
  'global',
  'unique',
  'satisfies',
  'accessor',
  'override',
  'out',
  'as',
  'async',
  'from',
  'of',
  'get',
  'set',
  'constructor',
  // names the CommonJS module scope reserves, and globals the generated code refers to; tsc compiles
  // `export const __proto__` to `exports.__proto__ = ...`, which sets the prototype instead of exporting
  '__proto__',
  'require',
  'exports',
  '__filename',
  '__dirname',
  'Object',
  'Array',
  'Map',
  'ReadonlyMap',
  'Uint8Array',
  'Promise',
  'NaN',
  'Infinity',
  'globalThis',
  'Error',
  'Symbol',
  'BigInt',
  'Number',
  'String',
  'Boolean',
]);

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Procedure names that cannot be method names of a client class or handler object as they are. */
const MANGLED_METHODS = new Set(['constructor', '__proto__', 'then']);

class Namespace {
  private readonly used = new Set<string>();

  /** A .x name: unique in its file already; mangled only if reserved. */
  source(name: string): string {
    const n = RESERVED.has(name) ? `${name}$` : name;
    this.used.add(n);
    return n;
  }

  /** A generated name: `$` appended until it is free. */
  generated(want: string): string {
    return Namespace.both(this, this, want);
  }

  /** A name free in two namespaces (a class is a value and a type). */
  static both(a: Namespace, b: Namespace, want: string): string {
    let n = want;
    while (a.used.has(n) || b.used.has(n)) n += '$';
    a.used.add(n);
    b.used.add(n);
    return n;
  }
}

/** Property key in an object literal: `__proto__` would set the prototype unless computed. */
function key(name: string): string {
  return name === '__proto__' ? '["__proto__"]' : IDENT.test(name) ? name : JSON.stringify(name);
}

/** Property name in a type literal or interface. */
function typeKey(name: string): string {
  return name === '__proto__' ? '"__proto__"' : name;
}

function prop(obj: string, name: string): string {
  return name === '__proto__' ? `${obj}["__proto__"]` : `${obj}.${name}`;
}

const str = JSON.stringify;

function isLeaf(shape: Shape): boolean {
  const s = unalias(shape);
  return (
    s.k === 'prim' || s.k === 'enum' || s.k === 'fopaque' || s.k === 'vopaque' || s.k === 'string' || s.k === 'void'
  );
}

function literal(v: bigint | string): string {
  return typeof v === 'string' ? str(v) : num(v);
}

function num(n: number | bigint): string {
  const b = BigInt(n);
  const abs = b < 0n ? -b : b;
  if (abs > BigInt(Number.MAX_SAFE_INTEGER)) return `${b}n`;
  return abs >= 0x10000n ? `${b < 0n ? '-' : ''}0x${abs.toString(16)}` : `${b}`;
}

type Agg = StructInfo | UnionInfo | TypedefInfo | EnumInfo;

export function emit(model: Model, options: EmitOptions): string {
  return new Emitter(model, options).run();
}

class Emitter {
  private readonly values = new Namespace();
  private readonly types = new Namespace();
  /** TS type name of each named type. */
  private readonly typeName = new Map<Agg, string>();
  /** Internal function stem of each type with encode/decode functions ($d_STEM, $e_STEM). */
  private readonly stem = new Map<Agg, string>();
  private readonly codecName = new Map<Agg, string>();
  private readonly enumObject = new Map<EnumInfo, string>();
  /** Functions still to emit for anonymous aggregates and enums met while emitting. */
  private readonly pending: Agg[] = [];
  private anon = 0;
  private tmp = 0;
  /** Codecs for procedure arguments and results that are not named types, by a key of their shape. */
  private readonly helperCodecs = new Map<string, { name: string; code: string }>();
  private out: string[] = [];

  constructor(
    private readonly model: Model,
    private readonly options: EmitOptions,
  ) {}

  run(): string {
    const m = this.model;
    // .x names first, so that generated names yield to them.
    const valueNames = new Map<string, string>();
    for (const c of m.consts) valueNames.set(c.name, this.values.source(c.name));
    for (const c of m.anonEnumMembers) valueNames.set(c.name, this.values.source(c.name));
    for (const t of m.types) {
      const info = infoOf(t);
      this.typeName.set(info, this.types.source(t.name));
      if (t.kind === 'enum') this.enumObject.set(t.e, this.values.source(t.name));
      this.stem.set(info, `_${t.name}`);
    }
    const rpcConsts = new Map<string, number>();
    for (const p of m.programs) {
      rpcConsts.set(p.name, p.number);
      for (const v of p.versions) {
        rpcConsts.set(v.name, v.number);
        for (const pr of v.procedures) rpcConsts.set(pr.name, pr.number);
      }
    }
    for (const name of rpcConsts.keys()) valueNames.set(name, this.values.source(name));
    for (const t of m.types) this.codecName.set(infoOf(t), this.values.generated(`xdr_${t.name}`));
    const externs = m.externs.map((x) => `type ${this.types.source(x)}, ${this.values.source(`xdr_${x}`)}`);

    const o = this.out;
    for (const c of m.consts) o.push(`export const ${valueNames.get(c.name)} = ${literal(c.value)};`);
    for (const c of m.anonEnumMembers) o.push(`export const ${valueNames.get(c.name)} = ${num(c.value)};`);
    if (m.consts.length + m.anonEnumMembers.length > 0) o.push('');

    for (const t of m.types) this.emitTypeDecl(t);
    // A typedef of a primitive, enum, opaque or string is coded inline wherever it is used.
    for (const t of m.types) if (t.kind !== 'typedef' || !isLeaf(t.t.shape)) this.emitFunctions(infoOf(t));
    while (this.pending.length > 0) this.emitFunctions(this.pending.shift()!);
    for (const t of m.types) this.emitCodec(t);
    // Programs last: their procedure tables refer to the codecs, and to helper codecs made on the way.
    const head = this.out;
    this.out = [];
    for (const p of m.programs) {
      this.out.push(`/** Program ${p.name}. */`);
      this.out.push(`export const ${valueNames.get(p.name)} = ${num(p.number)};`);
      const emitted = new Set<string>([p.name]);
      for (const v of p.versions) {
        for (const name of [v.name, ...v.procedures.map((x) => x.name)]) {
          if (emitted.has(name) || !valueNames.has(name)) continue;
          emitted.add(name);
          this.out.push(`export const ${valueNames.get(name)} = ${num(rpcConsts.get(name)!)};`);
          valueNames.delete(name);
        }
        this.out.push('');
        this.emitVersion(p.name, p.number, v);
      }
      valueNames.delete(p.name);
    }
    const programs = this.out;
    this.out = [];
    while (this.pending.length > 0) this.emitFunctions(this.pending.shift()!);
    const body = [...head, ...this.out, ...[...this.helperCodecs.values()].map((c) => c.code), ...programs].join('\n');
    const imports = [
      `// Generated by rpcgen-ts from ${this.options.source}. Do not edit: change the .x file and regenerate.`,
    ];
    if (body.includes('$rt.')) imports.push(`import * as $rt from ${str(`${this.options.runtime}/xdr/runtime`)};`);
    if (body.includes('$t.')) imports.push(`import type * as $t from ${str(`${this.options.runtime}/types`)};`);
    if (externs.length > 0) imports.push(`import { ${externs.join(', ')} } from ${str(this.options.externModule!)};`);
    return `${imports.join('\n')}\n\n${body.trimEnd()}\n`;
  }

  // ---- TypeScript types ----

  private tsType(shape: Shape): string {
    switch (shape.k) {
      case 'prim':
        return shape.p === 'hyper' || shape.p === 'uhyper'
          ? 'bigint'
          : shape.p === 'bool'
            ? 'boolean'
            : shape.p === 'quadruple'
              ? 'Uint8Array'
              : 'number';
      case 'enum':
        return this.typeName.get(shape.e) ?? [...new Set(shape.e.members.map((x) => num(x.value)))].join(' | ');
      case 'struct':
        return this.typeName.get(shape.s) ?? this.structLiteral(shape.s);
      case 'union':
        return this.typeName.get(shape.u) ?? `(${this.unionMembers(shape.u).join(' | ')})`;
      case 'typedef':
        return this.typeName.get(shape.t)!;
      case 'fopaque':
      case 'vopaque':
        return 'Uint8Array';
      case 'string':
        return 'string';
      case 'farray':
      case 'varray': {
        const el = this.tsType(shape.el);
        return /[|&]/.test(el) && !el.startsWith('(') ? `(${el})[]` : `${el}[]`;
      }
      case 'opt':
        return `${this.tsType(shape.el)} | null`;
      case 'void':
        return 'void';
      case 'extern':
        return RESERVED.has(shape.name) ? `${shape.name}$` : shape.name;
    }
  }

  private structLiteral(s: StructInfo): string {
    return `{ ${s.fields.map((f) => `${typeKey(f.name)}: ${this.tsType(f.shape)};`).join(' ')} }`;
  }

  /** The TS type of a case value: the enum member's literal type where there is one. */
  private caseType(u: UnionInfo, value: number): string {
    const d = unalias(u.discriminant.shape);
    if (u.discKind === 'bool') return value ? 'true' : 'false';
    if (d.k === 'enum') {
      const obj = this.enumObject.get(d.e);
      const member = d.e.members.find((x) => x.value === value)!;
      if (obj)
        return IDENT.test(member.name) && member.name !== '__proto__'
          ? `typeof ${obj}.${member.name}`
          : `(typeof ${obj})[${str(member.name)}]`;
    }
    return num(value);
  }

  private armType(u: UnionInfo, discType: string, field: Field | undefined): string {
    const d = `${typeKey(u.discriminant.name)}: ${discType};`;
    return field ? `{ ${d} ${typeKey(field.name)}: ${this.tsType(field.shape)} }` : `{ ${d} }`;
  }

  private unionMembers(u: UnionInfo): string[] {
    const members = u.arms.map((a) => this.armType(u, a.values.map((x) => this.caseType(u, x)).join(' | '), a.field));
    if (u.default) members.push(this.armType(u, this.tsType(u.discriminant.shape), u.default.field));
    return members;
  }

  private emitTypeDecl(t: NamedType): void {
    const o = this.out;
    const name = this.typeName.get(infoOf(t))!;
    switch (t.kind) {
      case 'enum': {
        const obj = this.enumObject.get(t.e)!;
        o.push(
          `export const ${obj} = Object.freeze({ ${t.e.members.map((x) => `${key(x.name)}: ${num(x.value)}`).join(', ')} } as const);`,
        );
        o.push(`export type ${name} = (typeof ${obj})[keyof typeof ${obj}];`);
        break;
      }
      case 'struct':
        o.push(`export interface ${name} {`);
        for (const f of t.s.fields) o.push(`  ${typeKey(f.name)}: ${this.tsType(f.shape)};`);
        o.push('}');
        break;
      case 'union':
        o.push(`export type ${name} =`);
        for (const m of this.unionMembers(t.u)) o.push(`  | ${m}`);
        o[o.length - 1] += ';';
        break;
      case 'typedef':
        o.push(`export type ${name} = ${this.tsType(t.t.shape)};`);
    }
    o.push('');
  }

  // ---- encode/decode functions ----

  /** The function stem for an aggregate or enum, queueing an anonymous one for emission. */
  private stemOf(a: Agg): string {
    let s = this.stem.get(a);
    if (s === undefined) {
      s = `$${++this.anon}`;
      this.stem.set(a, s);
      this.pending.push(a);
    }
    return s;
  }

  private t(): string {
    return `$${++this.tmp}`;
  }

  private emitFunctions(a: Agg): void {
    const o = this.out;
    const s = this.stem.get(a)!;
    this.tmp = 0;
    if ('members' in a) {
      const type = this.tsType({ k: 'enum', e: a });
      const check = enumCheck(a, '$v');
      o.push(`function $d${s}($r: $rt.XdrReader, $what: string): ${type} {`);
      o.push(`  const $v = $r.int($what);`);
      o.push(`  if (${check}) return $r.undeclared($what, $v);`);
      o.push(`  return $v as ${type};`);
      o.push('}');
      o.push(`function $e${s}($w: $rt.XdrWriter, $v: ${type}, $what: string): void {`);
      o.push(`  if (${check}) $w.undeclared($what, $v);`);
      o.push(`  $w.int($v, $what);`);
      o.push('}');
      o.push('');
      return;
    }
    const type =
      'fields' in a
        ? this.tsType({ k: 'struct', s: a })
        : 'arms' in a
          ? this.tsType({ k: 'union', u: a })
          : this.typeName.get(a)!;
    const dec: string[] = [];
    const enc: string[] = [];
    if ('fields' in a) {
      if (a.listField >= 0) this.listStruct(a, type, dec, enc);
      else {
        const locals = a.fields.map((f) => this.decInto(f.shape, f.name, dec, '  '));
        dec.push(
          `  ${a.recursive ? 'const $v =' : 'return'} { ${a.fields.map((f, i) => `${key(f.name)}: ${locals[i]}`).join(', ')} };`,
        );
        for (const f of a.fields) this.enc(f.shape, f.name, prop('$v', f.name), enc, '  ');
      }
    } else if ('arms' in a) this.union(a, dec, enc);
    else {
      const local = this.decInto(a.shape, '', dec, '  ');
      dec.push(a.recursive ? `  const $v = ${local};` : `  return ${local};`);
      this.enc(a.shape, '', '$v', enc, '  ');
    }
    const recursive = a.recursive;
    o.push(`function $d${s}($r: $rt.XdrReader): ${type} {`);
    if (recursive) o.push(`  $r.enter(${str(this.typeName.get(a) ?? 'anonymous type')});`);
    o.push(...dec);
    if (recursive) o.push('  $r.leave();', '  return $v;');
    o.push('}');
    o.push(`function $e${s}($w: $rt.XdrWriter, $v: ${type}): void {`);
    o.push(...enc);
    o.push('}');
    o.push('');
  }

  /**
   * Decodes `shape` into a new local (or returns an expression when that is all it takes) and returns the
   * expression for the value. `what` names the field for errors.
   */
  private decInto(shape: Shape, what: string, out: string[], ind: string): string {
    const expr = this.decExpr(shape, what);
    if (expr !== undefined) {
      const v = this.t();
      out.push(`${ind}const ${v} = ${expr};`);
      return v;
    }
    const s = shape.k === 'typedef' ? shape : unalias(shape);
    if (s.k === 'farray' || s.k === 'varray') return this.decArray(s, what, out, ind);
    const v = this.t();
    out.push(`${ind}let ${v}: ${this.tsType(shape)};`);
    this.decAssign(shape, what, v, out, ind);
    return v;
  }

  private decExpr(shape: Shape, what: string): string | undefined {
    const w = str(what);
    const s = unalias(shape);
    switch (s.k) {
      case 'prim':
        switch (s.p) {
          case 'int':
            return `$r.int(${w})`;
          case 'uint':
            return `$r.uint(${w})`;
          case 'hyper':
            return `$r.hyper(${w})`;
          case 'uhyper':
            return `$r.uhyper(${w})`;
          case 'float':
            return `$r.float(${w})`;
          case 'double':
            return `$r.double(${w})`;
          case 'bool':
            return `$r.bool(${w})`;
          case 'quadruple':
            return `$r.fixedOpaque(16, ${w})`;
          default: {
            const [lo, hi] = SMALL_INT_RANGE[s.p];
            return `$r.ranged(${lo}, ${hi}, ${w})`;
          }
        }
      case 'enum':
        return `$d${this.stemOf(s.e)}($r, ${w})`;
      case 'fopaque':
        return `$r.fixedOpaque(${s.n}, ${w})`;
      case 'vopaque':
        return `$r.varOpaque(${s.max}, ${w})`;
      case 'string':
        return `$r.string(${s.max}, ${w})`;
      case 'void':
        return 'undefined';
      default:
        return undefined;
    }
  }

  /** Statements assigning the decoded value of `shape` to the existing variable or element `target`. */
  private decAssign(shape: Shape, what: string, target: string, out: string[], ind: string): void {
    const expr = this.decExpr(shape, what);
    if (expr !== undefined) {
      out.push(`${ind}${target} = ${expr};`);
      return;
    }
    const w = str(what);
    const call = this.aggregate(shape, '$d', '$r');
    if (call !== undefined) {
      out.push(
        `${ind}try {`,
        `${ind}  ${target} = ${call};`,
        `${ind}} catch (e) {`,
        `${ind}  throw $rt.within(e, ${w});`,
        `${ind}}`,
      );
      return;
    }
    const s = unalias(shape);
    if (s.k === 'opt') {
      out.push(`${ind}${target} = null;`);
      out.push(`${ind}if ($r.bool(${w})) {`);
      this.decAssign(s.el, what, target, out, `${ind}  `);
      out.push(`${ind}}`);
    } else if (s.k === 'farray' || s.k === 'varray') out.push(`${ind}${target} = ${this.decArray(s, what, out, ind)};`);
    else throw new Error(`internal: cannot decode ${s.k}`);
  }

  /**
   * The call of the function coding an aggregate (a struct, a union, or a named typedef of an array or optional
   * data, which has its own functions rather than being inlined), or undefined for other shapes.
   */
  private aggregate(shape: Shape, fn: '$d' | '$e', args: string): string | undefined {
    if (shape.k === 'typedef' && !isLeaf(shape)) return `${fn}${this.stemOf(shape.t)}(${args})`;
    const s = unalias(shape);
    if (s.k === 'extern') return `xdr_${s.name}.${fn === '$d' ? 'decode' : 'encode'}(${args})`;
    if (s.k === 'struct') return `${fn}${this.stemOf(s.s)}(${args})`;
    if (s.k === 'union') return `${fn}${this.stemOf(s.u)}(${args})`;
    return undefined;
  }

  /** Decodes an array into a new local and returns its name; the count is checked before allocating. */
  private decArray(s: Extract<Shape, { k: 'farray' | 'varray' }>, what: string, out: string[], ind: string): string {
    const w = str(what);
    const n = this.t();
    const a = this.t();
    const i = this.t();
    const min = minSize(s.el) || 1;
    if (s.k === 'varray') out.push(`${ind}const ${n} = $r.count(${num(s.max)}, ${min}, ${w});`);
    else {
      out.push(`${ind}const ${n} = ${s.n};`);
      if (s.n > 0) out.push(`${ind}$r.need(${s.n * min}, ${w});`);
    }
    out.push(`${ind}const ${a} = new Array<${this.tsType(s.el)}>(${n});`);
    out.push(`${ind}for (let ${i} = 0; ${i} < ${n}; ${i}++) {`);
    const elExpr = this.decExpr(s.el, what);
    const call = this.aggregate(s.el, '$d', '$r');
    if (elExpr !== undefined) out.push(`${ind}  ${a}[${i}] = ${elExpr};`);
    else if (call !== undefined) {
      out.push(`${ind}  try {`, `${ind}    ${a}[${i}] = ${call};`, `${ind}  } catch (e) {`);
      out.push(`${ind}    throw $rt.within($rt.within(e, \`[\${${i}}]\`), ${w});`, `${ind}  }`);
    } else throw new Error(`internal: array of ${s.el.k}`);
    out.push(`${ind}}`);
    return a;
  }

  /** Statements encoding the value `v` (an expression without side effects) of `shape`. */
  private enc(shape: Shape, what: string, v: string, out: string[], ind: string): void {
    const w = str(what);
    const s = shape.k === 'typedef' && !isLeaf(shape) ? shape : unalias(shape);
    switch (s.k) {
      case 'prim':
        switch (s.p) {
          case 'int':
          case 'uint':
          case 'hyper':
          case 'uhyper':
          case 'float':
          case 'double':
          case 'bool':
            out.push(`${ind}$w.${s.p}(${v}, ${w});`);
            return;
          case 'quadruple':
            out.push(`${ind}$w.fixedOpaque(${v}, 16, ${w});`);
            return;
          default: {
            const [lo, hi] = SMALL_INT_RANGE[s.p];
            out.push(`${ind}$w.ranged(${v}, ${lo}, ${hi}, ${w});`);
            return;
          }
        }
      case 'enum':
        out.push(`${ind}$e${this.stemOf(s.e)}($w, ${v}, ${w});`);
        return;
      case 'fopaque':
        out.push(`${ind}$w.fixedOpaque(${v}, ${s.n}, ${w});`);
        return;
      case 'vopaque':
        out.push(`${ind}$w.varOpaque(${v}, ${s.max}, ${w});`);
        return;
      case 'string':
        out.push(`${ind}$w.string(${v}, ${s.max}, ${w});`);
        return;
      case 'void':
        return;
      case 'struct':
      case 'union':
      case 'typedef':
      case 'extern':
        out.push(
          `${ind}try {`,
          `${ind}  ${this.aggregate(s, '$e', `$w, ${v}`)};`,
          `${ind}} catch (e) {`,
          `${ind}  throw $rt.within(e, ${w});`,
          `${ind}}`,
        );
        return;
      case 'opt': {
        const x = this.t();
        out.push(`${ind}const ${x} = ${v};`);
        out.push(`${ind}if (${x} == null) $w.uint(0);`);
        out.push(`${ind}else {`);
        out.push(`${ind}  $w.uint(1);`);
        this.enc(s.el, what, x, out, `${ind}  `);
        out.push(`${ind}}`);
        return;
      }
      case 'farray':
      case 'varray': {
        const a = this.t();
        const i = this.t();
        out.push(`${ind}const ${a} = ${v};`);
        if (s.k === 'varray') out.push(`${ind}$w.count(${a}.length, ${num(s.max)}, ${w});`);
        else out.push(`${ind}$w.fixedCount(${a}.length, ${s.n}, ${w});`);
        out.push(`${ind}for (let ${i} = 0; ${i} < ${a}.length; ${i}++) {`);
        if (isLeaf(s.el)) this.enc(s.el, what, `${a}[${i}]`, out, `${ind}  `);
        else {
          out.push(
            `${ind}  try {`,
            `${ind}    ${this.aggregate(s.el, '$e', `$w, ${a}[${i}]`)};`,
            `${ind}  } catch (e) {`,
          );
          out.push(`${ind}    throw $rt.within($rt.within(e, \`[\${${i}}]\`), ${w});`, `${ind}  }`);
        }
        out.push(`${ind}}`);
        return;
      }
    }
  }

  private union(u: UnionInfo, dec: string[], enc: string[]): void {
    const dn = u.discriminant.name;
    const d = this.decInto(u.discriminant.shape, dn, dec, '  ');
    const type = this.tsType({ k: 'union', u });
    dec.push(`  let $v: ${type};`);
    dec.push(`  switch (${d}) {`);
    const hasDefault = u.default !== undefined;
    const caseLabel = (x: number): string => (u.discKind === 'bool' ? (x ? 'true' : 'false') : num(x));
    const arm = (label: string[], discType: string, field: Field | undefined): void => {
      dec.push(`    ${label.join(' ')} {`);
      let value = '';
      if (field) value = `, ${key(field.name)}: ${this.decInto(field.shape, field.name, dec, '      ')}`;
      dec.push(`      $v = { ${key(dn)}: ${d} as ${discType}${value} };`);
      dec.push('      break;');
      dec.push('    }');
    };
    for (const a of u.arms)
      arm(
        a.values.map((x) => `case ${caseLabel(x)}:`),
        a.values.map((x) => this.caseType(u, x)).join(' | '),
        a.field,
      );
    if (u.default) arm(['default:'], this.tsType(u.discriminant.shape), u.default.field);
    else dec.push(`    default:`, `      return $r.undeclared(${str(dn)}, ${d});`);
    dec.push('  }');
    if (!u.recursive) dec.push('  return $v;');

    this.enc(u.discriminant.shape, dn, prop('$v', dn), enc, '  ');
    enc.push(`  switch (${prop('$v', dn)}) {`);
    // Without a default arm the switch narrows `$v` to the arm; with one (a non-literal discriminant) it cannot.
    const armValue = (field: Field): string =>
      hasDefault
        ? prop(`($v as { ${typeKey(field.name)}: ${this.tsType(field.shape)} })`, field.name)
        : prop('$v', field.name);
    for (const a of u.arms) {
      enc.push(`    ${a.values.map((x) => `case ${caseLabel(x)}:`).join(' ')}`);
      if (a.field) this.enc(a.field.shape, a.field.name, armValue(a.field), enc, '      ');
      enc.push('      break;');
    }
    enc.push('    default:');
    if (u.default) {
      if (u.default.field)
        this.enc(u.default.field.shape, u.default.field.name, armValue(u.default.field), enc, '      ');
    } else enc.push(`      $w.undeclared(${str(dn)}, ${prop(`($v as ${type})`, dn)});`); // `$v` is `never` here when all cases are covered
    enc.push('  }');
  }

  /**
   * A struct with a field `S *next`: a linked list. Both directions loop instead of recursing, so a long list
   * neither counts against the nesting bound nor grows the JS stack. Fields after `next` come after the whole
   * rest of the list on the wire, innermost node first.
   */
  private listStruct(s: StructInfo, type: string, dec: string[], enc: string[]): void {
    const k = s.listField;
    const link = s.fields[k];
    const pre = s.fields.slice(0, k);
    const post = s.fields.slice(k + 1);
    const node = (ind: string): string => {
      const locals = pre.map((f) => this.decInto(f.shape, f.name, dec, ind));
      const fields = s.fields.map((f, i) =>
        i < k
          ? `${key(f.name)}: ${locals[i]}`
          : i === k
            ? `${key(f.name)}: null`
            : `${key(f.name)}: undefined as unknown as ${this.tsType(f.shape)}`,
      );
      return `{ ${fields.join(', ')} }`;
    };
    dec.push(`  const $h: ${type} = ${node('  ')};`);
    if (post.length > 0) dec.push(`  const $s: ${type}[] = [$h];`);
    dec.push(`  let $tail = $h;`);
    // Errors name the node as link[k]: the k-th node after this one.
    dec.push('  let $k = 0;');
    dec.push(`  while ($r.bool(${str(link.name)})) {`);
    dec.push('    $k++;', `    let $n: ${type};`, '    try {');
    dec.push(`      $n = ${node('      ')};`);
    dec.push('    } catch (e) {', `      throw $rt.within($rt.within(e, \`[\${$k}]\`), ${str(link.name)});`, '    }');
    dec.push(`    ${prop('$tail', link.name)} = $n;`);
    dec.push(`    $tail = $n;`);
    if (post.length > 0) dec.push(`    $s.push($n);`);
    dec.push('  }');
    if (post.length > 0) {
      dec.push('  for (let $i = $s.length - 1; $i >= 0; $i--) {');
      dec.push('    const $n = $s[$i];');
      for (const f of post) {
        const v = this.decInto(f.shape, f.name, dec, '    ');
        dec.push(`    ${prop('$n', f.name)} = ${v};`);
      }
      dec.push('  }');
    }
    dec.push(s.recursive ? '  const $v = $h;' : '  return $h;');

    if (post.length > 0) enc.push(`  const $s: ${type}[] = [];`);
    // $slow follows at half speed: $c meets it again only if the nodes link back into the list (Floyd).
    enc.push(`  let $slow = $v;`, `  for (let $c: ${type} = $v, $k = 0; ; ) {`);
    for (const f of pre) this.enc(f.shape, f.name, prop('$c', f.name), enc, '    ');
    if (post.length > 0) enc.push('    $s.push($c);');
    enc.push(`    const $n = ${prop('$c', link.name)};`);
    enc.push(`    if ($n == null) {`, '      $w.uint(0);', '      break;', '    }');
    enc.push('    $w.uint(1);', '    $c = $n;');
    enc.push(`    if ((++$k & 1) === 0) $slow = ${prop('$slow', link.name)} as ${type};`);
    enc.push(
      `    if ($c === $slow) throw new $rt.XdrError(${str(link.name)}, ${str('the list links back into itself')});`,
    );
    enc.push('  }');
    if (post.length > 0) {
      enc.push('  for (let $i = $s.length - 1; $i >= 0; $i--) {');
      enc.push('    const $c = $s[$i];');
      for (const f of post) this.enc(f.shape, f.name, prop('$c', f.name), enc, '    ');
      enc.push('  }');
    }
  }

  // ---- codecs and programs ----

  private emitCodec(t: NamedType): void {
    const info = infoOf(t);
    const name = this.codecName.get(info)!;
    const type = this.typeName.get(info)!;
    const s = this.stem.get(info)!;
    const w = str(t.name);
    const o = this.out;
    o.push(`/** Encodes and decodes ${t.kind} ${t.name}. */`);
    o.push(`export const ${name}: $rt.Codec<${type}> = {`);
    if (t.kind === 'enum') {
      o.push(`  encode($w: $rt.XdrWriter, $v: ${type}): void {`, `    $e${s}($w, $v, ${w});`, '  },');
      o.push(`  decode($r: $rt.XdrReader): ${type} {`, `    return $d${s}($r, ${w});`, '  },');
    } else if (t.kind === 'typedef' && isLeaf(t.t.shape)) {
      const enc: string[] = [];
      this.enc(t.t.shape, t.name, '$v', enc, '    ');
      o.push(`  encode($w: $rt.XdrWriter, $v: ${type}): void {`, ...enc, '  },');
      o.push(`  decode($r: $rt.XdrReader): ${type} {`, `    return ${this.decExpr(t.t.shape, t.name)};`, '  },');
    } else {
      o.push(
        `  encode($w: $rt.XdrWriter, $v: ${type}): void {`,
        '    try {',
        `      $e${s}($w, $v);`,
        '    } catch (e) {',
        `      throw $rt.within(e, ${w});`,
        '    }',
        '  },',
      );
      o.push(
        `  decode($r: $rt.XdrReader): ${type} {`,
        '    try {',
        `      return $d${s}($r);`,
        '    } catch (e) {',
        `      throw $rt.within(e, ${w});`,
        '    }',
        '  },',
      );
    }
    o.push('};');
    o.push('');
  }

  /** The codec expression for a procedure's argument or result. */
  private procCodec(shape: Shape, what: string): string {
    if (shape.k === 'void') return '$rt.xdrVoid';
    if (shape.k === 'extern') return `xdr_${shape.name}`;
    const named =
      shape.k === 'struct'
        ? shape.s
        : shape.k === 'union'
          ? shape.u
          : shape.k === 'typedef'
            ? shape.t
            : shape.k === 'enum'
              ? shape.e
              : undefined;
    if (named && this.codecName.has(named)) return this.codecName.get(named)!;
    const type = this.tsType(shape);
    const id = `${type}|${JSON.stringify(shape, (k, x) => (k === 'e' || k === 's' || k === 'u' || k === 't' ? this.stemOf(x) : x))}`;
    let name = this.helperCodecs.get(id)?.name;
    if (name === undefined) {
      name = `$c${this.helperCodecs.size + 1}`;
      this.tmp = 0;
      const enc: string[] = [];
      this.enc(shape, what, '$v', enc, '    ');
      const dec: string[] = [];
      const v = this.decInto(shape, what, dec, '    ');
      const code = [
        `const ${name}: $rt.Codec<${type}> = {`,
        `  encode($w: $rt.XdrWriter, $v: ${type}): void {`,
        ...enc,
        '  },',
        `  decode($r: $rt.XdrReader): ${type} {`,
        ...dec,
        `    return ${v};`,
        '  },',
        '};',
        '',
      ];
      this.helperCodecs.set(id, { name, code: code.join('\n') });
    }
    return name;
  }

  private emitVersion(
    programName: string,
    programNumber: number,
    v: { name: string; number: number; procedures: ProcedureInfo[] },
  ): void {
    const o = this.out;
    const procs = v.procedures.map((p) => ({
      p,
      // `$` cannot occur in .x names, and a version or procedure name may recur only in another program.
      local: `$p_${programName}$${v.name}$${p.name}`,
      args: this.tsType(p.arg),
      result: this.tsType(p.result),
      argCodec: this.procCodec(p.arg, `${p.name} argument`),
      resultCodec: this.procCodec(p.result, `${p.name} result`),
      // A method named constructor would be the constructor, one named then would make clients thenables.
      method: MANGLED_METHODS.has(p.name) ? `${p.name}$` : p.name,
    }));
    for (const x of procs) {
      o.push(
        `const ${x.local}: $t.Procedure<${x.args}, ${x.result}> = { name: ${str(x.p.name)}, number: ${x.p.number}, args: ${x.argCodec}, result: ${x.resultCodec} };`,
      );
    }
    const procsName = this.values.generated(`${v.name}_procedures`);
    const defName = this.values.generated(`${v.name}_definition`);
    const clientName = Namespace.both(this.values, this.types, `${v.name}_Client`);
    const handlersName = this.types.generated(`${v.name}_Handlers`);
    const serviceName = this.values.generated(`${v.name}_service`);
    o.push('');
    o.push(`/** The procedures of ${programName} version ${v.name} (${v.number}), by name. */`);
    o.push(
      `export const ${procsName} = Object.freeze({ ${procs.map((x) => `${key(x.p.name)}: ${x.local}`).join(', ')} });`,
    );
    o.push('');
    o.push(`/** ${programName} version ${v.name}: program ${num(programNumber)}, version ${v.number}. */`);
    o.push(`export const ${defName}: $t.ProgramVersion = {`);
    o.push(
      `  programName: ${str(programName)},`,
      `  versionName: ${str(v.name)},`,
      `  program: ${num(programNumber)},`,
      `  version: ${v.number},`,
    );
    o.push(
      `  procedures: new Map<number, $t.Procedure<any, any>>([${procs.map((x) => `[${x.p.number}, ${x.local}]`).join(', ')}]),`,
    );
    o.push('};');
    o.push('');
    o.push(
      `/** Calls ${programName} version ${v.name} through an RPC client; the program number may be overridden. */`,
    );
    o.push(`export class ${clientName} {`);
    o.push('  readonly #caller: $t.RpcCaller;', '  readonly #program: number;');
    o.push('');
    o.push(
      `  constructor($caller: $t.RpcCaller, $program: number = ${num(programNumber)}) {`,
      '    this.#caller = $caller;',
      '    this.#program = $program;',
      '  }',
    );
    for (const x of procs) {
      o.push('');
      o.push(`  /** ${x.p.name} (procedure ${x.p.number}). */`);
      if (x.p.arg.k === 'void') {
        o.push(`  ${x.method}($options?: $t.CallOptions): Promise<${x.result}> {`);
        o.push(`    return this.#caller.call(this.#program, ${v.number}, ${x.local}, undefined, $options);`);
      } else {
        o.push(`  ${x.method}($args: ${x.args}, $options?: $t.CallOptions): Promise<${x.result}> {`);
        o.push(`    return this.#caller.call(this.#program, ${v.number}, ${x.local}, $args, $options);`);
      }
      o.push('  }');
    }
    o.push('}');
    o.push('');
    const served = procs.filter((x) => x.p.number !== 0);
    o.push(
      `/** Server-side handlers of ${programName} version ${v.name}; procedure 0 (NULL) is answered by the server. */`,
    );
    o.push(`export interface ${handlersName} {`);
    for (const x of served)
      o.push(`  ${x.method}($args: ${x.args}, $ctx: $t.CallContext): ${x.result} | Promise<${x.result}>;`);
    o.push('}');
    o.push('');
    o.push(
      `/** A Service serving ${programName} version ${v.name} with \`handlers\`, under another program number if given. */`,
    );
    const h = served.length > 0 ? '$handlers' : '_handlers';
    o.push(`export function ${serviceName}(${h}: ${handlersName}, $program?: number): $t.Service {`);
    o.push('  return {');
    o.push(`    definition: $program === undefined ? ${defName} : { ...${defName}, program: $program },`);
    o.push(`    handlers: new Map<number, $t.Handler<any, any>>([`);
    for (const x of served)
      o.push(`      [${x.p.number}, ($args: ${x.args}, $ctx: $t.CallContext) => $handlers.${x.method}($args, $ctx)],`);
    o.push('    ]),');
    o.push('  };');
    o.push('}');
    o.push('');
  }
}

function infoOf(t: NamedType): Agg {
  return t.kind === 'enum' ? t.e : t.kind === 'struct' ? t.s : t.kind === 'union' ? t.u : t.t;
}

/** A condition true when `$v` is not a member: a range test when the members are contiguous. */
function enumCheck(e: EnumInfo, v: string): string {
  const values = [...new Set(e.members.map((m) => m.value))].sort((a, b) => a - b);
  const lo = values[0];
  const hi = values[values.length - 1];
  if (hi - lo + 1 === values.length) return `${v} < ${num(lo)} || ${v} > ${num(hi)}`;
  return values.map((x) => `${v} !== ${num(x)}`).join(' && ');
}
