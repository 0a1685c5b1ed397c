// A small schema DSL for dstm's JSON configuration. Each key declares its type, default, doc string, validator and
// (settings.ts) its command-line flag once; the same declaration validates the file, validates command-line
// overrides, prints --check and is exported as a table ({key, type, default, doc}) that the man pages are generated
// from. Errors name the key path, the bad value and what was expected.
import type { FlagSpec } from './settings';

/** A refused configuration value: `path` is where (e.g. "server.pools[1]" or "--pool"). */
export class ConfigError extends Error {
  constructor(
    readonly path: string,
    readonly value: unknown,
    readonly expected: string,
    message = `${path}: ${showValue(value)} is not valid: expected ${expected}`,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function showValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** A type: how to validate (and normalise) one value. */
export interface Type<T> {
  /** Short machine-readable type name for the key table, e.g. "integer", "list of ipv4-prefix". */
  readonly name: string;
  /** What a valid value looks like, in words, for error messages. */
  readonly expected: string;
  parse(value: unknown, path: string): T;
  /** A parsed value back in the file's syntax (--check); without it the value is shown as it is. */
  show?(value: T): unknown;
  /** The only values allowed (oneOf), which a flag setting this key offers as its options. */
  readonly choices?: readonly string[];
  /** Nested keys, for the key table (records only). */
  readonly fields?: Fields;
  /** The smallest and largest value (integers only). */
  readonly range?: readonly [min: number, max: number];
}

/**
 * One key of a record: its type, its default as it would be written in the file (parsed by the type like any given
 * value, so the key table shows defaults in file syntax), its documentation and, if a command sets it, its flag.
 */
export interface Field<
  T,
  K extends FieldKind = FieldKind,
  S extends FlagSpec | undefined = FlagSpec | undefined,
  Y extends Type<T> = Type<T>,
> {
  /** Its type as declared (a record's keeps its fields, so their flags are typed too). */
  readonly type: Y;
  readonly kind: K;
  readonly default: unknown;
  readonly doc: string;
  /** The command-line flag that sets this key (settings.ts generates the oclif flag and the override from it). */
  readonly flag?: S;
  /** What dstm.conf(5) says beyond `doc` (details --help can do without). */
  readonly man?: string;
}

/** The optional parts of a key's declaration. */
export interface FieldMore<S extends FlagSpec | undefined> {
  flag?: S;
  man?: string;
}

export type FieldKind = 'default' | 'optional' | 'required';
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a record of fields of different types
export type Fields = Record<string, Field<any>>;

type FieldValue<F> = F extends Field<infer T, infer K> ? (K extends 'optional' ? T | undefined : T) : never;
export type Infer<F extends Fields> = { -readonly [K in keyof F]: FieldValue<F[K]> };

/** The value a type parses to. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any type
type ValueOf<Y extends Type<any>> = Y extends Type<infer T> ? T : never;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any type
export function field<Y extends Type<any>, S extends FlagSpec | undefined = undefined>(
  type: Y,
  defaultValue: unknown,
  doc: string,
  more: FieldMore<S> = {},
): Field<ValueOf<Y>, 'default', S, Y> {
  return { type, kind: 'default', default: defaultValue, doc, ...more };
}

export function optional<T, S extends FlagSpec | undefined = undefined>(
  type: Type<T>,
  doc: string,
  more: FieldMore<S> = {},
): Field<T, 'optional', S> {
  return { type, kind: 'optional', default: undefined, doc, ...more };
}

export function required<T, S extends FlagSpec | undefined = undefined>(
  type: Type<T>,
  doc: string,
  more: FieldMore<S> = {},
): Field<T, 'required', S> {
  return { type, kind: 'required', default: undefined, doc, ...more };
}

function fail(path: string, value: unknown, expected: string): never {
  throw new ConfigError(path, value, expected);
}

/** A type from a predicate/normaliser; `check` returns the value or throws any Error (its message is appended). */
export function custom<T>(name: string, expected: string, check: (v: unknown) => T): Type<T> {
  return {
    name,
    expected,
    parse(value, path) {
      try {
        return check(value);
      } catch (err) {
        if (err instanceof ConfigError) throw err;
        const why = err instanceof Error && err.message ? ` (${err.message})` : '';
        return fail(path, value, expected + why);
      }
    },
  };
}

/**
 * A string type whose text is parsed by `parseText` (which throws on bad input) and, for --check, written back by
 * `format`; e.g. addresses and prefixes.
 */
export function textual<T>(
  name: string,
  expected: string,
  parseText: (s: string) => T,
  format?: (v: T) => string,
): Type<T> {
  const type = custom(name, expected, (v) => {
    if (typeof v !== 'string') throw new Error('not a string');
    return parseText(v);
  });
  return format ? { ...type, show: format } : type;
}

export const string: Type<string> = textual('string', 'a string', (s) => s);

export const boolean: Type<boolean> = {
  name: 'boolean',
  expected: 'true or false',
  parse: (v, path) => (typeof v === 'boolean' ? v : fail(path, v, 'true or false')),
};

export function integer(min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): Type<number> {
  const expected = `an integer from ${min} to ${max}`;
  return {
    name: 'integer',
    expected,
    range: [min, max],
    parse: (v, path) =>
      typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : fail(path, v, expected),
  };
}

export function oneOf<const T extends string>(values: readonly T[]): Type<T> {
  const expected = `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`;
  return {
    name: values.join('|'),
    expected,
    choices: values,
    parse: (v, path) => ((values as readonly unknown[]).includes(v) ? (v as T) : fail(path, v, expected)),
  };
}

/**
 * A rule that no two items of a list are the same: `key` gives each item's identity (normalised, so two spellings of
 * one address match), `field` the record key the error names (e.g. "prefix" for server.teps[1].prefix).
 */
export interface Unique<T> {
  key: (e: T) => string;
  field?: string;
}

export function list<T>(
  elem: Type<T>,
  opts: { min?: number; max?: number; unique?: Unique<T> | Unique<T>[] } = {},
): Type<T[]> {
  const min = opts.min ?? 0;
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  const expected = `a list of ${elem.expected}` + (min > 0 ? ` (at least ${min})` : '');
  return {
    name: `list of ${elem.name}`,
    expected,
    fields: elem.fields,
    show: (v) => v.map((e) => showValueOf(elem, e)),
    parse(v, path) {
      if (!Array.isArray(v)) return fail(path, v, expected);
      if (v.length < min) return fail(path, v, `${expected}`);
      if (v.length > max) return fail(path, v, `at most ${max} items`);
      const items = v.map((e, i) => elem.parse(e, `${path}[${i}]`));
      for (const u of opts.unique === undefined ? [] : [opts.unique].flat()) {
        const seen = new Map<string, number>();
        items.forEach((e, i) => {
          const k = u.key(e);
          const first = seen.get(k);
          if (first === undefined) return seen.set(k, i);
          const at = (j: number): string => `${path}[${j}]${u.field === undefined ? '' : `.${u.field}`}`;
          const raw: unknown = v[i];
          const shown =
            u.field !== undefined && raw !== null && typeof raw === 'object'
              ? (raw as Record<string, unknown>)[u.field]
              : raw;
          return fail(at(i), shown, `a value not given before (the same as ${at(first)})`);
        });
      }
      return items;
    },
  };
}

/** A parsed value in the file's syntax, as its type shows it. */
export function showValueOf<T>(type: Type<T>, v: T): unknown {
  return v === undefined ? undefined : type.show ? type.show(v) : v;
}

/**
 * A parsed record in the file's syntax, every declared key present (an optional key not given is null), e.g. what
 * --check prints for a section.
 */
export function showRecord<F extends Fields>(fields: F, v: Infer<F>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) out[k] = showValueOf(f.type, v[k]) ?? null;
  return out;
}

/** A record type, which keeps its fields' declarations (for the flags and the key table). */
export type RecordType<F extends Fields> = Omit<Type<Infer<F>>, 'fields'> & { readonly fields: F };

/** A JSON object with exactly the declared keys: unknown keys are refused (they are usually typos). */
export function record<F extends Fields>(fields: F, name = 'object'): RecordType<F> {
  const expected = `an object with keys ${Object.keys(fields).join(', ')}`;
  return {
    name,
    expected,
    fields,
    show: (v) => showRecord(fields, v),
    parse(v, path) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(path, v, expected);
      const obj = v as Record<string, unknown>;
      for (const k of Object.keys(obj)) {
        if (!Object.hasOwn(fields, k)) {
          const known = Object.keys(fields).join(', ');
          throw new ConfigError(
            join(path, k),
            obj[k],
            `one of the keys ${known}`,
            `${join(path, k)}: unknown key (known keys: ${known})`,
          );
        }
      }
      const out: Record<string, unknown> = Object.create(null);
      for (const [k, f] of Object.entries(fields)) {
        // null is how --check shows an optional key not set (showRecord), so its output reads back as a file
        const unset = f.kind === 'optional' && obj[k] === null;
        const given = Object.hasOwn(obj, k) && !unset ? obj[k] : undefined;
        if (given === undefined) {
          if (f.kind === 'required') {
            throw new ConfigError(
              join(path, k),
              undefined,
              f.type.expected,
              `${join(path, k)}: missing: expected ${f.type.expected}`,
            );
          }
          out[k] = f.kind === 'default' ? f.type.parse(f.default, `${join(path, k)} (default)`) : undefined;
        } else {
          out[k] = f.type.parse(given, join(path, k));
        }
      }
      return out as Infer<F>;
    },
  };
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** One row of the machine-readable key table. */
export interface KeyDoc {
  key: string;
  type: string;
  default: unknown;
  doc: string;
}

/** Flatten a record's fields into dotted keys ("server.teps[].prefix"), depth first, in declaration order. */
export function describe(fields: Fields, prefix = ''): KeyDoc[] {
  const out: KeyDoc[] = [];
  for (const [k, f] of Object.entries(fields)) {
    const key = join(prefix, k);
    out.push({ key, type: f.type.name, default: f.default, doc: f.doc });
    if (f.type.fields) out.push(...describe(f.type.fields, f.type.name.startsWith('list of') ? `${key}[]` : key));
  }
  return out;
}

/** A command-line value standing in for a key: validated on its own first, so an error names the flag. */
export interface Override {
  key: string;
  flag: string;
  value: unknown;
}

/**
 * Parse a section from the file's raw object with command-line overrides on top (flags win). Each override is
 * validated under its flag's name, then the merged object is validated under `path`.
 */
export function parseWithOverrides<F extends Fields>(
  fields: F,
  raw: unknown,
  path: string,
  overrides: readonly Override[] = [],
): Infer<F> {
  // An absent section takes every default; one that is there must be an object (`"server": null` is a mistake).
  if (raw !== undefined && (typeof raw !== 'object' || raw === null || Array.isArray(raw)))
    fail(path, raw, "an object (the section's keys)");
  const merged: Record<string, unknown> = { ...((raw ?? {}) as Record<string, unknown>) };
  for (const o of overrides) {
    // "tls.cert": a key of a nested record; the record's other keys stay as the file gives them.
    const [head, sub] = o.key.split('.', 2);
    const f = sub === undefined ? fields[head] : fields[head]?.type.fields?.[sub];
    if (!f) throw new Error(`internal: flag ${o.flag} overrides unknown key ${o.key}`);
    f.type.parse(o.value, o.flag);
    if (sub === undefined) merged[head] = o.value;
    else merged[head] = { ...((merged[head] ?? {}) as Record<string, unknown>), [sub]: o.value };
  }
  return record(fields).parse(merged, path);
}
