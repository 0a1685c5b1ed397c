// The syntax tree of a .x file, as written: names are resolved later (forward references are allowed).
import type { Pos } from './lexer';

/** A constant as written: a number, or the name of a constant or enum member. */
export type Value = { kind: 'num'; value: bigint; pos: Pos } | { kind: 'name'; name: string; pos: Pos };

/** char, schar (int8_t), uchar, short and ushort are C's narrower integers (rpcgen dialect), sent as ints. */
export type Primitive =
  | 'int'
  | 'uint'
  | 'char'
  | 'schar'
  | 'uchar'
  | 'short'
  | 'ushort'
  | 'hyper'
  | 'uhyper'
  | 'float'
  | 'double'
  | 'quadruple'
  | 'bool';

export type TypeSpec =
  | { kind: 'prim'; prim: Primitive; pos: Pos }
  | { kind: 'ref'; name: string; pos: Pos }
  | { kind: 'enum'; body: EnumBody; pos: Pos }
  | { kind: 'struct'; body: StructBody; pos: Pos }
  | { kind: 'union'; body: UnionBody; pos: Pos };

export type Decl =
  | { kind: 'plain'; name: string; type: TypeSpec; pos: Pos }
  | { kind: 'fixedArray'; name: string; type: TypeSpec; size: Value; pos: Pos }
  | { kind: 'varArray'; name: string; type: TypeSpec; max?: Value; pos: Pos }
  | { kind: 'fixedOpaque'; name: string; size: Value; pos: Pos }
  | { kind: 'varOpaque'; name: string; max?: Value; pos: Pos }
  | { kind: 'string'; name: string; max?: Value; pos: Pos }
  | { kind: 'optional'; name: string; type: TypeSpec; pos: Pos }
  | { kind: 'void'; pos: Pos };

export interface EnumBody {
  /** A member without `= value` (rpcgen dialect) follows the previous one, as in C. */
  members: { name: string; value?: Value; pos: Pos }[];
}

export interface StructBody {
  fields: Decl[];
}

export interface UnionArm {
  cases: Value[];
  decl: Decl;
}

export interface UnionBody {
  discriminant: Decl;
  arms: UnionArm[];
  default?: Decl;
}

export interface Procedure {
  name: string;
  number: Value;
  /** `void` is a procedure taking or returning nothing. */
  arg: Decl;
  result: Decl;
  pos: Pos;
}

export interface Version {
  name: string;
  number: Value;
  procedures: Procedure[];
  pos: Pos;
}

export type Definition =
  | { kind: 'const'; name: string; value: Value | { kind: 'str'; text: string; pos: Pos }; pos: Pos }
  | { kind: 'typedef'; decl: Decl; pos: Pos }
  | { kind: 'enum'; name: string; body: EnumBody; pos: Pos }
  | { kind: 'struct'; name: string; body: StructBody; pos: Pos }
  | { kind: 'union'; name: string; body: UnionBody; pos: Pos }
  | { kind: 'program'; name: string; number: Value; versions: Version[]; pos: Pos };

export interface Specification {
  file: string;
  definitions: Definition[];
  /** Constants of `%#define` and `#define` lines, as written (used only for names not defined in XDR). */
  cDefines: Map<string, string>;
}
