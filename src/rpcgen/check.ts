// Semantic checks: resolves names (forward references allowed), evaluates constants, and turns the syntax tree
// into a model of shapes the emitter can generate straight-line code from. Every error names file:line:column.
import type {
  Decl,
  Definition,
  EnumBody,
  Primitive,
  Specification,
  StructBody,
  TypeSpec,
  UnionBody,
  Value,
} from './ast';
import { type Pos, XdrSyntaxError } from './lexer';

export const UNBOUNDED = 0xffffffff;

export type Shape =
  | { k: 'prim'; p: Primitive }
  | { k: 'enum'; e: EnumInfo }
  | { k: 'struct'; s: StructInfo }
  | { k: 'union'; u: UnionInfo }
  | { k: 'typedef'; t: TypedefInfo }
  | { k: 'fopaque'; n: number }
  | { k: 'vopaque'; max: number }
  | { k: 'string'; max: number }
  | { k: 'farray'; el: Shape; n: number }
  | { k: 'varray'; el: Shape; max: number }
  | { k: 'opt'; el: Shape }
  | { k: 'void' }
  /** A type defined in another generated module (rpcgen-ts --extern), as rpcgen leaves xdr_T to the linker. */
  | { k: 'extern'; name: string };

export interface Field {
  name: string;
  shape: Shape;
}

export interface EnumInfo {
  /** The .x name; undefined for an inline anonymous enum. */
  name?: string;
  members: { name: string; value: number }[];
}

export interface StructInfo {
  name?: string;
  fields: Field[];
  /** Part of a cycle of types other than its own linked list: decoding it enters a nesting level. */
  recursive: boolean;
  /** Index of the field that links this struct into a list (`S *next`): encoded and decoded iteratively. */
  listField: number;
}

export interface UnionArm {
  /** Discriminant values selecting this arm (numbers; 1/0 for a bool discriminant). */
  values: number[];
  /** undefined for a void arm. */
  field?: Field;
}

export interface UnionInfo {
  name?: string;
  discriminant: Field;
  /** 'int' | 'uint' | 'bool' | 'enum': how the discriminant is encoded. */
  discKind: 'int' | 'uint' | 'bool' | 'enum';
  arms: UnionArm[];
  /** The default arm: absent when there is none; `field` undefined when it is void. */
  default?: { field?: Field };
  recursive: boolean;
}

export interface TypedefInfo {
  name: string;
  shape: Shape;
  recursive: boolean;
}

export type NamedType =
  | { kind: 'enum'; name: string; e: EnumInfo }
  | { kind: 'struct'; name: string; s: StructInfo }
  | { kind: 'union'; name: string; u: UnionInfo }
  | { kind: 'typedef'; name: string; t: TypedefInfo };

export interface ProcedureInfo {
  name: string;
  number: number;
  arg: Shape;
  result: Shape;
}

export interface VersionInfo {
  name: string;
  number: number;
  procedures: ProcedureInfo[];
}

export interface ProgramInfo {
  name: string;
  number: number;
  versions: VersionInfo[];
}

export interface Model {
  file: string;
  /** Constants: numbers, or text (rpcgen passes `const X = "..."` through to C). */
  consts: { name: string; value: bigint | string }[];
  types: NamedType[];
  /** Members of inline anonymous enums, which (as in C) are constants in the file's scope. */
  anonEnumMembers: { name: string; value: number }[];
  programs: ProgramInfo[];
  /** Names of the types taken from the --extern module, in order of first use. */
  externs: string[];
}

export interface CheckOptions {
  /** Resolve types this file does not define to another module's, instead of failing. */
  externTypes?: boolean;
}

type Symbol =
  | { kind: 'const'; def: Extract<Definition, { kind: 'const' }>; value?: bigint; busy?: boolean }
  | { kind: 'member'; value?: bigint; resolve: () => bigint }
  | { kind: 'type'; def: Extract<Definition, { kind: 'typedef' | 'enum' | 'struct' | 'union' }>; named?: NamedType }
  | { kind: 'rpc'; value: Value; what: string };

/**
 * Types and constants that .x files take from the C library rather than define: libtirpc's xdr_int32_t,
 * xdr_u_int64_t, xdr_netobj (opaque<MAX_NETOBJ_SZ>)... and <rpc/types.h>'s rpcprog_t family. Each applies only
 * where the file does not define the name itself.
 */
const LIBRARY_TYPES: Record<string, Shape> = {
  int8_t: { k: 'prim', p: 'schar' },
  int16_t: { k: 'prim', p: 'short' },
  int32_t: { k: 'prim', p: 'int' },
  uint8_t: { k: 'prim', p: 'uchar' },
  u_int8_t: { k: 'prim', p: 'uchar' },
  uint16_t: { k: 'prim', p: 'ushort' },
  u_int16_t: { k: 'prim', p: 'ushort' },
  uint32_t: { k: 'prim', p: 'uint' },
  u_int32_t: { k: 'prim', p: 'uint' },
  int64_t: { k: 'prim', p: 'hyper' },
  quad_t: { k: 'prim', p: 'hyper' },
  longlong_t: { k: 'prim', p: 'hyper' },
  uint64_t: { k: 'prim', p: 'uhyper' },
  u_int64_t: { k: 'prim', p: 'uhyper' },
  u_quad_t: { k: 'prim', p: 'uhyper' },
  u_longlong_t: { k: 'prim', p: 'uhyper' },
  bool_t: { k: 'prim', p: 'bool' },
  rpcprog_t: { k: 'prim', p: 'uint' },
  rpcvers_t: { k: 'prim', p: 'uint' },
  rpcproc_t: { k: 'prim', p: 'uint' },
  rpcprot_t: { k: 'prim', p: 'uint' },
  rpcport_t: { k: 'prim', p: 'uint' },
  netobj: { k: 'vopaque', max: 1024 },
  des_block: { k: 'fopaque', n: 8 },
  // xdr_netbuf: maxlen, then the bytes (libtirpc bounds them by maxlen; the length word carries len).
  netbuf: {
    k: 'struct',
    s: {
      fields: [
        { name: 'maxlen', shape: { k: 'prim', p: 'uint' } },
        { name: 'buf', shape: { k: 'vopaque', max: UNBOUNDED } },
      ],
      recursive: false,
      listField: -1,
    },
  },
};
const LIBRARY_CONSTANTS: Record<string, bigint> = { TRUE: 1n, FALSE: 0n, MAXNETNAMELEN: 255n, MAX_NETOBJ_SZ: 1024n };

/**
 * The values C's narrower integers hold: xdr_char, xdr_u_short... (and xdr_int8_t...) send them in 32 bits and,
 * decoding, truncate whatever else comes to them silently. Plain char is signed on x86 and unsigned on ARM: a
 * peer may send either, meaning the same 8 bits (bootparam_prot.x carries address bytes in chars).
 */
export const SMALL_INT_RANGE: Record<'char' | 'schar' | 'uchar' | 'short' | 'ushort', readonly [number, number]> = {
  char: [-128, 255],
  schar: [-128, 127],
  uchar: [0, 255],
  short: [-32768, 32767],
  ushort: [0, 65535],
};

const INT_MIN = -0x80000000n;
const INT_MAX = 0x7fffffffn;
/** The largest magnitude a `%#define` expression may reach on the way: beyond any C integer type. */
const DEFINE_MAX = 1n << 128n;

function fail(pos: Pos, msg: string): never {
  throw new XdrSyntaxError(pos, msg);
}

export function check(spec: Specification, options: CheckOptions = {}): Model {
  return new Checker(spec, options).run();
}

class Checker {
  private readonly symbols = new Map<string, Symbol>();
  private readonly model: Model;
  /** Procedure and version names declared again: they must have the same number. */
  private readonly repeats: { name: string; a: Value; b: Value; pos: Pos }[] = [];

  constructor(
    private readonly spec: Specification,
    private readonly options: CheckOptions,
  ) {
    this.model = { file: spec.file, consts: [], types: [], anonEnumMembers: [], programs: [], externs: [] };
  }

  run(): Model {
    for (const d of this.spec.definitions) this.declare(d);
    for (const r of this.repeats) if (this.value(r.a) !== this.value(r.b)) fail(r.pos, `${r.name} is already defined`);
    const positions: Pos[] = [];
    for (const d of this.spec.definitions) {
      if (d.kind !== 'const' && d.kind !== 'program') positions.push(d.pos);
      switch (d.kind) {
        case 'const':
          this.model.consts.push({
            name: d.name,
            value: d.value.kind === 'str' ? d.value.text : this.constValue(d.name, d.pos),
          });
          break;
        case 'program':
          this.model.programs.push(this.program(d));
          break;
        case 'typedef': {
          const ref = selfTypedef(d);
          if (ref) {
            positions.pop();
            // It names nothing new, but what it names must be a type, as C would require.
            if (this.symbols.has(ref.name) || !this.options.externTypes) this.typeSpec(ref);
          } else this.model.types.push(this.namedType(d.decl.kind === 'void' ? '' : d.decl.name));
          break;
        }
        default:
          this.model.types.push(this.namedType(d.name));
      }
    }
    this.analyseRecursion();
    this.model.types.forEach((t, i) => {
      if (minSize(typeShape(t)) < 0) fail(positions[i], `${t.name} contains itself and has no finite encoding`);
    });
    return this.model;
  }

  private define(name: string, sym: Symbol, pos: Pos): void {
    const prev = this.symbols.get(name);
    if (prev) {
      // rpcgen emits procedure and version numbers as #defines: repeating one with the same number is harmless
      // (NULLPROC in two programs). Compared once all is declared, as the numbers may name constants defined
      // further on. A program is defined once, with all its versions: there is one program constant to export.
      if (prev.kind === 'rpc' && sym.kind === 'rpc' && prev.what !== 'program' && sym.what !== 'program') {
        this.repeats.push({ name, a: prev.value, b: sym.value, pos });
        return;
      }
      fail(pos, `${name} is already defined`);
    }
    this.symbols.set(name, sym);
  }

  private declare(d: Definition): void {
    switch (d.kind) {
      case 'const':
        this.define(d.name, { kind: 'const', def: d }, d.pos);
        break;
      case 'typedef':
        if (selfTypedef(d)) break;
        if (d.decl.kind !== 'void') this.define(d.decl.name, { kind: 'type', def: d }, d.pos);
        this.declareInline(d.decl);
        break;
      case 'enum':
        this.define(d.name, { kind: 'type', def: d }, d.pos);
        this.declareMembers(d.body);
        break;
      case 'struct':
        this.define(d.name, { kind: 'type', def: d }, d.pos);
        for (const f of d.body.fields) this.declareInline(f);
        break;
      case 'union':
        this.define(d.name, { kind: 'type', def: d }, d.pos);
        this.declareUnionInline(d.body);
        break;
      case 'program':
        this.define(d.name, { kind: 'rpc', value: d.number, what: 'program' }, d.pos);
        for (const v of d.versions) {
          this.define(v.name, { kind: 'rpc', value: v.number, what: 'version' }, v.pos);
          for (const p of v.procedures) {
            this.define(p.name, { kind: 'rpc', value: p.number, what: 'procedure' }, p.pos);
            this.declareInline(p.arg);
            this.declareInline(p.result);
          }
        }
    }
  }

  /** Enum members of inline anonymous enums are file-scope constants too, wherever the enum appears. */
  private declareInline(d: Decl): void {
    if (d.kind === 'void' || d.kind === 'fixedOpaque' || d.kind === 'varOpaque' || d.kind === 'string') return;
    const t = d.type;
    if (t.kind === 'enum') this.declareMembers(t.body);
    else if (t.kind === 'struct') for (const f of t.body.fields) this.declareInline(f);
    else if (t.kind === 'union') this.declareUnionInline(t.body);
  }

  private declareUnionInline(u: UnionBody): void {
    this.declareInline(u.discriminant);
    for (const a of u.arms) this.declareInline(a.decl);
    if (u.default) this.declareInline(u.default);
  }

  private declareMembers(body: EnumBody): void {
    let prev: { value?: bigint; resolve: () => bigint } | undefined;
    for (const m of body.members) {
      const before = prev;
      let busy = false;
      const sym: Symbol & { kind: 'member' } = {
        kind: 'member',
        resolve: () => {
          if (sym.value === undefined) {
            if (busy) fail(m.pos, `enum value ${m.name} is defined in terms of itself`);
            busy = true;
            sym.value = m.value ? this.value(m.value) : before ? before.resolve() + 1n : 0n;
            busy = false;
            if (sym.value < INT_MIN || sym.value > INT_MAX)
              fail(m.pos, `enum value ${sym.value} of ${m.name} is not a 32-bit signed integer`);
          }
          return sym.value;
        },
      };
      this.define(m.name, sym, m.pos);
      prev = sym;
    }
  }

  private constValue(name: string, pos: Pos): bigint {
    const sym = this.symbols.get(name);
    if (!sym) return fail(pos, `undefined constant ${name}`);
    if (sym.kind === 'member') return sym.resolve();
    if (sym.kind === 'rpc') return this.value(sym.value);
    if (sym.kind !== 'const') return fail(pos, `${name} is a type, not a constant`);
    if (sym.value !== undefined) return sym.value;
    if (sym.busy) return fail(pos, `constant ${name} is defined in terms of itself`);
    const def = sym.def.value;
    if (def.kind === 'str') return fail(pos, `${name} is a string constant, not a number`);
    sym.busy = true;
    sym.value = this.value(def);
    sym.busy = false;
    return sym.value;
  }

  private value(v: Value): bigint {
    if (v.kind === 'num') return v.value;
    if (!this.symbols.has(v.name)) {
      if (Object.hasOwn(LIBRARY_CONSTANTS, v.name)) return LIBRARY_CONSTANTS[v.name];
      const c = this.cDefine(v.name, new Set());
      if (c !== undefined) return c;
      if (this.spec.cDefines.has(v.name))
        fail(v.pos, `#define ${v.name} is not a constant expression rpcgen-ts can evaluate`);
    }
    return this.constValue(v.name, v.pos);
  }

  /** A `%#define` or `#define` constant: integers, other such names, + - * / << >> | & and parentheses, as C would see them. */
  private cDefine(name: string, seen: Set<string>): bigint | undefined {
    const text = this.spec.cDefines.get(name);
    if (text === undefined || seen.has(name)) return undefined;
    seen.add(name);
    const toks = text.match(/0[xX][0-9a-fA-F]+|\d+|[A-Za-z_]\w*|<<|>>|[-+*/|&()]|\S/g) ?? [];
    let k = 0;
    const atom = (): bigint | undefined => {
      const t = toks[k++];
      if (t === undefined) return undefined;
      if (t === '(') {
        const v = expr(0);
        return toks[k++] === ')' ? v : undefined;
      }
      if (t === '-') {
        const v = atom();
        return v === undefined ? undefined : -v;
      }
      if (/^\d/.test(t)) {
        if (!/^0\d/.test(t)) return BigInt(t);
        return /^0[0-7]+$/.test(t) ? BigInt(`0o${t.slice(1)}`) : undefined; // 08 is no C number
      }
      if (/^[A-Za-z_]/.test(t)) {
        const sym = this.symbols.get(t);
        if (sym && sym.kind === 'const' && sym.def.value.kind !== 'str') return this.constValue(t, sym.def.pos);
        return Object.hasOwn(LIBRARY_CONSTANTS, t) ? LIBRARY_CONSTANTS[t] : this.cDefine(t, seen);
      }
      return undefined;
    };
    const prec: Record<string, number> = { '|': 1, '&': 2, '<<': 3, '>>': 3, '+': 4, '-': 4, '*': 5, '/': 5 };
    const expr = (min: number): bigint | undefined => {
      let v = atom();
      while (v !== undefined && k < toks.length && (prec[toks[k]] ?? 0) > min) {
        const op = toks[k++];
        const r = expr(prec[op]);
        if (r === undefined || (op === '/' && r === 0n)) return undefined;
        // Shifts past 64 bits are undefined in C, and would make BigInts too big to hold.
        if ((op === '<<' || op === '>>') && (r < 0n || r > 64n)) return undefined;
        v =
          op === '+'
            ? v + r
            : op === '-'
              ? v - r
              : op === '*'
                ? v * r
                : op === '/'
                  ? v / r
                  : op === '<<'
                    ? v << r
                    : op === '>>'
                      ? v >> r
                      : op === '|'
                        ? v | r
                        : v & r;
        if (v > DEFINE_MAX || v < -DEFINE_MAX) return undefined;
      }
      return v;
    };
    const v = expr(0);
    return k === toks.length ? v : undefined;
  }

  /** A size or maximum: 0..2^32-1. */
  private bound(v: Value | undefined, what: string): number {
    if (!v) return UNBOUNDED;
    const n = this.value(v);
    if (n < 0n || n > BigInt(UNBOUNDED)) fail(v.pos, `${what} ${n} is not between 0 and 2^32-1`);
    return Number(n);
  }

  private number32(v: Value, what: string): number {
    const n = this.value(v);
    if (n < 0n || n > BigInt(UNBOUNDED)) fail(v.pos, `${what} number ${n} is not an unsigned 32-bit integer`);
    return Number(n);
  }

  private namedType(name: string): NamedType {
    const sym = this.symbols.get(name);
    if (!sym || sym.kind !== 'type') throw new Error(`internal: ${name} is not a type`);
    if (sym.named) return sym.named;
    const d = sym.def;
    // Created before the body is resolved, so that recursive references find it.
    switch (d.kind) {
      case 'enum': {
        const named: NamedType = { kind: 'enum', name, e: { name, members: [] } };
        sym.named = named;
        named.e.members = this.members(d.body);
        return named;
      }
      case 'struct': {
        const named: NamedType = { kind: 'struct', name, s: { name, fields: [], recursive: false, listField: -1 } };
        sym.named = named;
        this.structInto(named.s, d.body, d.pos);
        return named;
      }
      case 'union': {
        const u = this.unionStub(name);
        const named: NamedType = { kind: 'union', name, u };
        sym.named = named;
        this.unionInto(u, d.body);
        return named;
      }
      case 'typedef': {
        const decl = d.decl as Exclude<Decl, { kind: 'void' }>;
        // typedef struct { ... } name; is the anonymous struct given a name.
        if (
          decl.kind === 'plain' &&
          (decl.type.kind === 'struct' || decl.type.kind === 'union' || decl.type.kind === 'enum')
        ) {
          sym.def =
            decl.type.kind === 'enum'
              ? { kind: 'enum', name, body: decl.type.body, pos: d.pos }
              : decl.type.kind === 'struct'
                ? { kind: 'struct', name, body: decl.type.body, pos: d.pos }
                : { kind: 'union', name, body: decl.type.body, pos: d.pos };
          return this.namedType(name);
        }
        const named: NamedType = { kind: 'typedef', name, t: { name, shape: { k: 'void' }, recursive: false } };
        sym.named = named;
        named.t.shape = this.declShape(decl);
        // A chain of typedefs back to this one names no type; the last typedef of a cycle resolved sees it whole.
        for (let s = named.t.shape, seen = new Set<TypedefInfo>(); s.k === 'typedef' && !seen.has(s.t); s = s.t.shape) {
          if (s.t === named.t) fail(d.pos, `typedef ${name} refers to itself`);
          seen.add(s.t);
        }
        return named;
      }
    }
  }

  private members(body: EnumBody): { name: string; value: number }[] {
    return body.members.map((m) => {
      const sym = this.symbols.get(m.name) as Symbol & { kind: 'member' };
      return { name: m.name, value: Number(sym.resolve()) };
    });
  }

  private structInto(s: StructInfo, body: StructBody, pos: Pos): void {
    const seen = new Set<string>();
    for (const f of body.fields) {
      if (f.kind === 'void') continue;
      if (seen.has(f.name)) fail(f.pos, `field ${f.name} appears twice`);
      seen.add(f.name);
      s.fields.push({ name: f.name, shape: this.declShape(f) });
    }
    if (s.fields.length === 0) fail(pos, 'a struct needs at least one field');
  }

  private unionStub(name?: string): UnionInfo {
    return { name, discriminant: { name: '', shape: { k: 'void' } }, discKind: 'int', arms: [], recursive: false };
  }

  private unionInto(u: UnionInfo, body: UnionBody): void {
    const dd = body.discriminant as Extract<Decl, { kind: 'plain' }>;
    const dshape = this.declShape(dd);
    const base = unalias(dshape);
    let kind: UnionInfo['discKind'];
    const small =
      base.k === 'prim' && Object.hasOwn(SMALL_INT_RANGE, base.p) ? SMALL_INT_RANGE[base.p as 'char'] : null;
    if (base.k === 'enum') kind = 'enum';
    else if (base.k === 'prim' && (base.p === 'int' || base.p === 'uint' || base.p === 'bool')) kind = base.p;
    else if (small) kind = 'int';
    else return fail(dd.pos, 'a union discriminant must be int, unsigned int, bool or an enum');
    u.discriminant = { name: dd.name, shape: dshape };
    u.discKind = kind;
    const seen = new Set<number>();
    const field = (d: Decl): Field | undefined => {
      if (d.kind === 'void') return undefined;
      if (d.name === dd.name) fail(d.pos, `arm ${d.name} has the discriminant's name`);
      return { name: d.name, shape: this.declShape(d) };
    };
    for (const arm of body.arms) {
      const values = arm.cases.map((c) => {
        const n = this.value(c);
        let ok: boolean;
        if (kind === 'enum') ok = (base as { e: EnumInfo }).e.members.some((m) => BigInt(m.value) === n);
        else if (kind === 'bool') ok = n === 0n || n === 1n;
        else if (kind === 'uint') ok = n >= 0n && n <= BigInt(UNBOUNDED);
        else if (small) ok = n >= BigInt(small[0]) && n <= BigInt(small[1]);
        else ok = n >= INT_MIN && n <= INT_MAX;
        if (!ok) fail(c.pos, `case ${c.kind === 'name' ? c.name : n} is not a value of the discriminant's type`);
        const v = Number(n);
        if (seen.has(v)) fail(c.pos, `case ${c.kind === 'name' ? c.name : n} appears twice`);
        seen.add(v);
        return v;
      });
      u.arms.push({ values, field: field(arm.decl) });
    }
    if (body.default) u.default = { field: field(body.default) };
  }

  private typeSpec(t: TypeSpec): Shape {
    switch (t.kind) {
      case 'prim':
        return { k: 'prim', p: t.prim };
      case 'enum': {
        const members = this.members(t.body);
        this.model.anonEnumMembers.push(...members);
        return { k: 'enum', e: { members } };
      }
      case 'struct': {
        const s: StructInfo = { fields: [], recursive: false, listField: -1 };
        this.structInto(s, t.body, t.pos);
        return { k: 'struct', s };
      }
      case 'union': {
        const u = this.unionStub();
        this.unionInto(u, t.body);
        return { k: 'union', u };
      }
      case 'ref': {
        const sym = this.symbols.get(t.name);
        if (!sym && Object.hasOwn(LIBRARY_TYPES, t.name)) return LIBRARY_TYPES[t.name];
        if (!sym && this.options.externTypes) {
          if (!this.model.externs.includes(t.name)) this.model.externs.push(t.name);
          return { k: 'extern', name: t.name };
        }
        if (!sym) return fail(t.pos, `undefined type ${t.name}`);
        if (sym.kind !== 'type') return fail(t.pos, `${t.name} is not a type`);
        const named = this.namedType(t.name);
        switch (named.kind) {
          case 'enum':
            return { k: 'enum', e: named.e };
          case 'struct':
            return { k: 'struct', s: named.s };
          case 'union':
            return { k: 'union', u: named.u };
          case 'typedef':
            return { k: 'typedef', t: named.t };
        }
      }
    }
  }

  private declShape(d: Decl): Shape {
    switch (d.kind) {
      case 'void':
        return { k: 'void' };
      case 'plain':
        return this.typeSpec(d.type);
      case 'fixedOpaque':
        return { k: 'fopaque', n: this.bound(d.size, 'opaque size') };
      case 'varOpaque':
        return { k: 'vopaque', max: this.bound(d.max, 'opaque maximum') };
      case 'string':
        return { k: 'string', max: this.bound(d.max, 'string maximum') };
      case 'fixedArray':
        return { k: 'farray', el: this.typeSpec(d.type), n: this.bound(d.size, 'array size') };
      case 'varArray':
        return { k: 'varray', el: this.typeSpec(d.type), max: this.bound(d.max, 'array maximum') };
      case 'optional':
        return { k: 'opt', el: this.typeSpec(d.type) };
    }
  }

  private program(d: Extract<Definition, { kind: 'program' }>): ProgramInfo {
    const versions: VersionInfo[] = [];
    const vnums = new Set<number>();
    for (const v of d.versions) {
      const number = this.number32(v.number, 'version');
      if (vnums.has(number)) fail(v.pos, `version number ${number} appears twice in ${d.name}`);
      vnums.add(number);
      const pnums = new Set<number>();
      const procedures = v.procedures.map((p) => {
        const n = this.number32(p.number, 'procedure');
        if (pnums.has(n)) fail(p.pos, `procedure number ${n} appears twice in ${v.name}`);
        pnums.add(n);
        const arg = this.declShape(p.arg);
        const result = this.declShape(p.result);
        // Servers answer procedure 0 themselves, with an empty reply, whatever the handlers.
        if (n === 0 && (arg.k !== 'void' || result.k !== 'void'))
          fail(p.pos, `procedure 0 (${p.name}) must take and return void: servers answer it with an empty reply`);
        return { name: p.name, number: n, arg, result };
      });
      versions.push({ name: v.name, number, procedures });
    }
    return { name: d.name, number: this.number32(d.number, 'program'), versions };
  }

  /**
   * Marks the structs that form linked lists (a field `S *next`, possibly through typedefs, in struct S: coded
   * iteratively), then every aggregate still part of a cycle as recursive: decoding those is depth-bounded.
   */
  private analyseRecursion(): void {
    type Node = StructInfo | UnionInfo | TypedefInfo;
    const nodes: Node[] = [];
    const edges = new Map<Node, Node[]>();
    const visit = (shape: Shape, from: Node, skip?: Shape): void => {
      if (shape === skip) return;
      switch (shape.k) {
        case 'struct':
        case 'union':
        case 'typedef': {
          const n = shape.k === 'struct' ? shape.s : shape.k === 'union' ? shape.u : shape.t;
          edges.get(from)!.push(n);
          if (!('name' in n && n.name) && !edges.has(n)) walk(n);
          return;
        }
        case 'farray':
        case 'varray':
        case 'opt':
          return visit(shape.el, from);
        default:
      }
    };
    const walk = (n: Node): void => {
      if (edges.has(n)) return;
      edges.set(n, []);
      nodes.push(n);
      if ('fields' in n) {
        n.listField = n.fields.findIndex((f) => listTarget(f.shape) === n);
        n.fields.forEach((f, i) => visit(f.shape, n, i === n.listField ? f.shape : undefined));
      } else if ('arms' in n) {
        for (const a of n.arms) if (a.field) visit(a.field.shape, n);
        if (n.default?.field) visit(n.default.field.shape, n);
      } else visit(n.shape, n);
    };
    for (const t of this.model.types) {
      if (t.kind === 'struct') walk(t.s);
      else if (t.kind === 'union') walk(t.u);
      else if (t.kind === 'typedef') walk(t.t);
    }
    for (const p of this.model.programs)
      for (const v of p.versions)
        for (const pr of v.procedures) {
          for (const s of [pr.arg, pr.result])
            if (s.k === 'struct') walk(s.s);
            else if (s.k === 'union') walk(s.u);
        }
    // Tarjan's strongly connected components.
    let index = 0;
    const idx = new Map<Node, number>();
    const low = new Map<Node, number>();
    const stack: Node[] = [];
    const on = new Set<Node>();
    const strong = (v: Node): void => {
      idx.set(v, index);
      low.set(v, index++);
      stack.push(v);
      on.add(v);
      for (const w of edges.get(v)!) {
        if (!idx.has(w)) {
          strong(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
      if (low.get(v) === idx.get(v)) {
        const comp: Node[] = [];
        let w: Node;
        do {
          w = stack.pop()!;
          on.delete(w);
          comp.push(w);
        } while (w !== v);
        const cyclic = comp.length > 1 || edges.get(v)!.includes(v);
        for (const n of comp) n.recursive = cyclic;
      }
    };
    for (const n of nodes) if (!idx.has(n)) strong(n);
  }
}

/**
 * `typedef struct X X;`, the C idiom naming a struct without `struct`, which XDR does anyway: the reference to X.
 */
function selfTypedef(d: Extract<Definition, { kind: 'typedef' }>): Extract<TypeSpec, { kind: 'ref' }> | undefined {
  const { decl } = d;
  return decl.kind === 'plain' && decl.type.kind === 'ref' && decl.type.name === decl.name ? decl.type : undefined;
}

/** The struct a field links to when it is `S *next` (through any typedefs), else undefined. */
function listTarget(shape: Shape): StructInfo | undefined {
  const s = unalias(shape);
  if (s.k !== 'opt') return undefined;
  const el = unalias(s.el);
  return el.k === 'struct' ? el.s : undefined;
}

/** Follows typedef references to the shape they name. */
export function unalias(shape: Shape): Shape {
  let s = shape;
  for (let guard = 0; s.k === 'typedef'; guard++) {
    if (guard > 1000) throw new Error(`typedef ${s.t.name} refers to itself`);
    s = s.t.shape;
  }
  return s;
}

export function typeShape(t: NamedType): Shape {
  switch (t.kind) {
    case 'enum':
      return { k: 'enum', e: t.e };
    case 'struct':
      return { k: 'struct', s: t.s };
    case 'union':
      return { k: 'union', u: t.u };
    case 'typedef':
      return { k: 'typedef', t: t.t };
  }
}

const minSizes = new WeakMap<object, number>();
const sizing = new WeakSet<object>();

/**
 * The smallest encoded size of a value of this shape, which bounds how many elements a count can claim for the
 * bytes left; -1 for a type that contains itself other than through optional data or a variable array, which has
 * no finite encoding.
 */
export function minSize(shape: Shape): number {
  switch (shape.k) {
    case 'prim':
      return shape.p === 'hyper' || shape.p === 'uhyper' || shape.p === 'double' ? 8 : shape.p === 'quadruple' ? 16 : 4;
    case 'enum':
    case 'vopaque':
    case 'string':
    case 'varray':
    case 'opt':
      return 4;
    case 'void':
    case 'extern':
      return 0;
    case 'fopaque':
      return shape.n + ((4 - (shape.n & 3)) & 3);
    case 'farray': {
      const el = minSize(shape.el);
      return el < 0 ? -1 : shape.n * el;
    }
    default: {
      const key = shape.k === 'struct' ? shape.s : shape.k === 'union' ? shape.u : shape.t;
      const known = minSizes.get(key);
      if (known !== undefined) return known;
      if (sizing.has(key)) return -1;
      sizing.add(key);
      let n: number;
      if (shape.k === 'struct') {
        const sizes = shape.s.fields.map((f) => minSize(f.shape));
        n = sizes.includes(-1) ? -1 : sizes.reduce((a, b) => a + b, 0);
      } else if (shape.k === 'union') {
        // A union is finite if one arm is: the smallest finite arm bounds it.
        const arms = [...shape.u.arms.map((a) => a.field), ...(shape.u.default ? [shape.u.default.field] : [])];
        const sizes = arms.map((f) => (f ? minSize(f.shape) : 0)).filter((x) => x >= 0);
        n = sizes.length === 0 ? -1 : 4 + Math.min(...sizes);
      } else n = minSize(shape.t.shape);
      sizing.delete(key);
      if (n >= 0) minSizes.set(key, n);
      return n;
    }
  }
}
