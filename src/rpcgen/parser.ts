// Recursive-descent parser for RFC 4506 section 6.3 and RFC 5531 section 12.2, plus the rpcgen dialect:
// `struct name` as a type reference, `unsigned` alone, C integer names (long, short, char, u_int, u_long...) that
// rpcgen maps to 32-bit XDR integers, enum members without values, and `string` as a procedure argument or result.
import type {
  Decl,
  Definition,
  EnumBody,
  Primitive,
  Procedure,
  Specification,
  StructBody,
  TypeSpec,
  UnionArm,
  UnionBody,
  Value,
  Version,
} from './ast';
import { type LexOptions, type Pos, type Token, XdrSyntaxError, tokenize } from './lexer';

const KEYWORDS = new Set([
  'bool',
  'case',
  'const',
  'default',
  'double',
  'quadruple',
  'enum',
  'float',
  'hyper',
  'int',
  'opaque',
  'string',
  'struct',
  'switch',
  'typedef',
  'union',
  'unsigned',
  'void',
  'program',
  'version',
]);

/** rpcgen's C integer type names; XDR encodes each of them in 32 bits. */
const C_INTEGERS: Record<string, Primitive> = {
  long: 'int',
  short: 'short',
  char: 'char',
  u_int: 'uint',
  u_long: 'uint',
  u_short: 'ushort',
  u_char: 'uchar',
};

export function parse(file: string, text: string, options: LexOptions = {}): Specification {
  const { tokens, cDefines } = tokenize(file, text, options);
  return { ...new Parser(tokens).specification(file), cDefines };
}

class Parser {
  private i = 0;

  constructor(private readonly toks: Token[]) {}

  specification(file: string): Omit<Specification, 'cDefines'> {
    const definitions: Definition[] = [];
    while (this.peek().kind !== 'eof') definitions.push(this.definition());
    return { file, definitions };
  }

  private peek(ahead = 0): Token {
    return this.toks[Math.min(this.i + ahead, this.toks.length - 1)];
  }

  private next(): Token {
    const t = this.toks[this.i];
    if (t.kind !== 'eof') this.i++;
    return t;
  }

  private fail(t: Token, msg: string): never {
    throw new XdrSyntaxError(t, msg);
  }

  private describe(t: Token): string {
    return t.kind === 'eof' ? 'end of file' : `'${t.text}'`;
  }

  private is(text: string, ahead = 0): boolean {
    const t = this.peek(ahead);
    return (t.kind === 'punct' || t.kind === 'ident') && t.text === text;
  }

  private accept(text: string): boolean {
    if (!this.is(text)) return false;
    this.i++;
    return true;
  }

  private expect(text: string): Token {
    const t = this.peek();
    if (!this.is(text)) this.fail(t, `expected '${text}', found ${this.describe(t)}`);
    return this.next();
  }

  private ident(what = 'an identifier'): Token {
    const t = this.peek();
    if (t.kind !== 'ident' || KEYWORDS.has(t.text)) this.fail(t, `expected ${what}, found ${this.describe(t)}`);
    return this.next();
  }

  private value(): Value {
    const t = this.peek();
    if (t.kind === 'number') {
      this.next();
      return { kind: 'num', value: t.value!, pos: t };
    }
    if (t.kind === 'ident' && !KEYWORDS.has(t.text)) {
      this.next();
      return { kind: 'name', name: t.text, pos: t };
    }
    return this.fail(t, `expected a constant or a constant's name, found ${this.describe(t)}`);
  }

  private definition(): Definition {
    const t = this.peek();
    if (t.kind !== 'ident') this.fail(t, `expected a definition, found ${this.describe(t)}`);
    switch (t.text) {
      case 'const': {
        this.next();
        const name = this.ident('a constant name').text;
        this.expect('=');
        const s = this.peek();
        const value =
          s.kind === 'string' ? (this.next(), { kind: 'str' as const, text: s.str!, pos: s }) : this.value();
        this.expect(';');
        return { kind: 'const', name, value, pos: t };
      }
      case 'typedef': {
        this.next();
        const decl = this.declaration();
        if (decl.kind === 'void') this.fail(t, 'typedef of void');
        this.expect(';');
        return { kind: 'typedef', decl, pos: t };
      }
      case 'enum':
      case 'struct':
      case 'union': {
        // `struct name {` defines; anything else (`struct name field;`) is not a definition at top level.
        const bodyNext = t.text === 'union' ? this.is('switch', 2) : this.is('{', 2);
        if (this.peek(1).kind !== 'ident' || !bodyNext)
          this.fail(t, `expected '${t.text} NAME ${t.text === 'union' ? 'switch' : '{'} ...'`);
        this.next();
        const name = this.ident(`a ${t.text} name`).text;
        let def: Definition;
        if (t.text === 'enum') def = { kind: 'enum', name, body: this.enumBody(), pos: t };
        else if (t.text === 'struct') def = { kind: 'struct', name, body: this.structBody(), pos: t };
        else def = { kind: 'union', name, body: this.unionBody(), pos: t };
        this.expect(';');
        return def;
      }
      case 'program':
        return this.program();
      default:
        return this.fail(t, `expected const, typedef, enum, struct, union or program, found ${this.describe(t)}`);
    }
  }

  private enumBody(): EnumBody {
    this.expect('{');
    const members: EnumBody['members'] = [];
    do {
      const t = this.ident('an enum member');
      members.push({ name: t.text, value: this.accept('=') ? this.value() : undefined, pos: t });
    } while (this.accept(','));
    this.expect('}');
    return { members };
  }

  private structBody(): StructBody {
    this.expect('{');
    const fields: Decl[] = [];
    do {
      const d = this.declaration();
      if (d.kind === 'void') this.fail(this.peek(), 'void is not allowed in a struct');
      fields.push(d);
      this.expect(';');
    } while (!this.is('}'));
    this.expect('}');
    return { fields };
  }

  private unionBody(): UnionBody {
    this.expect('switch');
    this.expect('(');
    const discriminant = this.declaration();
    if (discriminant.kind !== 'plain') this.fail(this.peek(), 'a union discriminant is a plain declaration');
    this.expect(')');
    this.expect('{');
    const arms: UnionArm[] = [];
    let dflt: Decl | undefined;
    while (!this.is('}')) {
      const t = this.peek();
      if (this.accept('default')) {
        if (dflt) this.fail(t, 'a second default arm');
        this.expect(':');
        dflt = this.declaration();
        this.expect(';');
        continue;
      }
      if (!this.is('case')) this.fail(t, `expected 'case', 'default' or '}', found ${this.describe(t)}`);
      const cases: Value[] = [];
      while (this.accept('case')) {
        cases.push(this.value());
        this.expect(':');
      }
      arms.push({ cases, decl: this.declaration() });
      this.expect(';');
    }
    if (arms.length === 0) this.fail(this.peek(), 'a union needs at least one case');
    this.expect('}');
    return { discriminant, arms, default: dflt };
  }

  /** A type specifier: a primitive, a named type, or an inline anonymous enum, struct or union. */
  private typeSpecifier(): TypeSpec {
    const t = this.peek();
    if (t.kind !== 'ident') return this.fail(t, `expected a type, found ${this.describe(t)}`);
    const prim = (p: Primitive): TypeSpec => ({ kind: 'prim', prim: p, pos: t });
    switch (t.text) {
      case 'unsigned': {
        this.next();
        if (this.accept('int')) return prim('uint');
        // `unsigned long int` and `unsigned short int` too, as C reads them.
        if (this.accept('long')) {
          this.accept('int');
          return prim('uint');
        }
        if (this.accept('short')) {
          this.accept('int');
          return prim('ushort');
        }
        if (this.accept('char')) return prim('uchar');
        if (this.accept('hyper')) return prim('uhyper');
        return prim('uint'); // `unsigned` alone, as rpcgen and C allow
      }
      case 'int':
      case 'float':
      case 'double':
      case 'quadruple':
      case 'bool':
        this.next();
        return prim(t.text as Primitive);
      case 'hyper':
        this.next();
        return prim('hyper');
      case 'enum':
      case 'struct':
      case 'union': {
        this.next();
        if (this.peek().kind === 'ident' && !KEYWORDS.has(this.peek().text)) {
          // `struct name` refers to a type defined elsewhere; a body here would be a nested named definition.
          const name = this.next();
          if (this.is('{') || this.is('switch'))
            this.fail(name, `nested named ${t.text} definitions are not allowed; define ${name.text} at top level`);
          return { kind: 'ref', name: name.text, pos: name };
        }
        if (t.text === 'enum') return { kind: 'enum', body: this.enumBody(), pos: t };
        if (t.text === 'struct') return { kind: 'struct', body: this.structBody(), pos: t };
        return { kind: 'union', body: this.unionBody(), pos: t };
      }
      default:
        if (KEYWORDS.has(t.text)) return this.fail(t, `expected a type, found ${this.describe(t)}`);
        this.next();
        if (Object.hasOwn(C_INTEGERS, t.text)) {
          // rpcgen reads `long int` and `short int` too.
          this.accept('int');
          return prim(C_INTEGERS[t.text]);
        }
        return { kind: 'ref', name: t.text, pos: t };
    }
  }

  private declaration(): Decl {
    const t = this.peek();
    if (this.accept('void')) return { kind: 'void', pos: t };
    if (this.accept('opaque')) {
      const name = this.ident().text;
      if (this.accept('[')) {
        const size = this.value();
        this.expect(']');
        return { kind: 'fixedOpaque', name, size, pos: t };
      }
      if (!this.is('<')) this.fail(this.peek(), `opaque needs [size] or <max>, found ${this.describe(this.peek())}`);
      return { kind: 'varOpaque', name, max: this.maxBound(), pos: t };
    }
    if (this.accept('string')) {
      const name = this.ident().text;
      if (!this.is('<')) this.fail(this.peek(), `string needs <max> or <>, found ${this.describe(this.peek())}`);
      return { kind: 'string', name, max: this.maxBound(), pos: t };
    }
    const type = this.typeSpecifier();
    if (this.accept('*')) return { kind: 'optional', name: this.ident().text, type, pos: t };
    const name = this.ident().text;
    if (this.accept('[')) {
      const size = this.value();
      this.expect(']');
      return { kind: 'fixedArray', name, type, size, pos: t };
    }
    if (this.is('<')) return { kind: 'varArray', name, type, max: this.maxBound(), pos: t };
    return { kind: 'plain', name, type, pos: t };
  }

  private maxBound(): Value | undefined {
    this.expect('<');
    if (this.accept('>')) return undefined;
    const v = this.value();
    this.expect('>');
    return v;
  }

  private program(): Definition {
    const t = this.expect('program');
    const name = this.ident('a program name').text;
    this.expect('{');
    const versions: Version[] = [];
    do {
      const vt = this.expect('version');
      const vname = this.ident('a version name').text;
      this.expect('{');
      const procedures: Procedure[] = [];
      do procedures.push(this.procedure());
      while (!this.is('}'));
      this.expect('}');
      this.expect('=');
      versions.push({ name: vname, number: this.value(), procedures, pos: vt });
      this.expect(';');
    } while (this.is('version'));
    this.expect('}');
    this.expect('=');
    const number = this.value();
    this.expect(';');
    return { kind: 'program', name, number, versions, pos: t };
  }

  private procedureType(): Decl {
    const t = this.peek();
    if (this.accept('void')) return { kind: 'void', pos: t };
    if (this.accept('string')) return { kind: 'string', name: '', pos: t };
    const type = this.typeSpecifier();
    if (this.is('*')) this.fail(this.peek(), 'a procedure argument or result cannot be optional data; use a typedef');
    return { kind: 'plain', name: '', type, pos: t };
  }

  private procedure(): Procedure {
    const result = this.procedureType();
    const nameTok = this.ident('a procedure name');
    this.expect('(');
    const arg = this.procedureType();
    if (this.is(','))
      this.fail(this.peek(), 'procedures with several arguments (rpcgen -N) are not supported; pass one struct');
    this.expect(')');
    this.expect('=');
    const number = this.value();
    this.expect(';');
    return { name: nameTok.text, number, arg, result, pos: nameTok as Pos };
  }
}
