// The command-line side of a configuration key. A key's declaration (schema.ts) may carry the flag that sets it;
// from that one declaration src/cli/setting-flags.ts makes the oclif flag, flagOverrides() the override, FlagsOf<>
// the parsed flags' type and src/config/man.ts the man pages' items (npm run man). Plain data: config imports only lib.
import type { Field, Fields, Override } from './schema';

/** How oclif reads the flag's text: a string, an integer, a 32-bit number in decimal or 0x hex, or a switch. */
export type FlagKind = 'string' | 'integer' | 'uint32' | 'boolean';

/** The flag `--NAME` that sets a key; `V` is the value oclif hands over (string[] for a repeatable flag). */
export interface FlagSpec<N extends string = string, V = unknown> {
  readonly name: N;
  readonly kind: FlagKind;
  /** Repeatable: each use adds one item to the key's list. */
  readonly multiple?: boolean;
  /** A switch with a --no-NAME form (a key whose default is true). */
  readonly allowNo?: boolean;
  /** Old names still accepted, with a deprecation warning; never shown in --help. */
  readonly aliases?: readonly string[];
  /** The --help line, when the key's doc is too long or says too little for it. */
  readonly summary?: string;
  /** The value's placeholder in --help and the man page, e.g. "IPV4=IPV6". */
  readonly helpValue?: string;
  /** An environment variable standing in for the flag when it is not given (comma-separated when repeatable). */
  readonly env?: string;
  /** The flag's value in the file's syntax, when the two differ (e.g. "IPV4=IPV6" to {ipv4, ipv6}); may throw. */
  toValue?(value: V): unknown;
  /** Type only: what oclif hands over. */
  readonly value?: V;
}

type FlagOptions<V> = Omit<FlagSpec<string, V>, 'name' | 'kind' | 'multiple' | 'value'>;

/** Flag declarations for a key's `flag`: flag.string('device'), flag.strings('pool'), flag.boolean(...), ... */
export const flag = {
  string: <const N extends string>(name: N, o: FlagOptions<string> = {}): FlagSpec<N, string> => ({
    ...o,
    name,
    kind: 'string',
  }),
  strings: <const N extends string>(name: N, o: FlagOptions<string[]> = {}): FlagSpec<N, string[]> => ({
    ...o,
    name,
    kind: 'string',
    multiple: true,
  }),
  integer: <const N extends string>(name: N, o: FlagOptions<number> = {}): FlagSpec<N, number> => ({
    ...o,
    name,
    kind: 'integer',
  }),
  uint32: <const N extends string>(name: N, o: FlagOptions<number> = {}): FlagSpec<N, number> => ({
    ...o,
    name,
    kind: 'uint32',
    helpValue: o.helpValue ?? 'N',
  }),
  boolean: <const N extends string>(name: N, o: FlagOptions<boolean> = {}): FlagSpec<N, boolean> => ({
    ...o,
    name,
    kind: 'boolean',
  }),
};

type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends (x: infer I) => void ? I : never;
type None = Record<never, never>;
type SpecFlags<S> = [S] extends [never]
  ? None
  : [S] extends [FlagSpec<infer N, infer V>]
    ? string extends N
      ? None
      : { [n in N]?: V }
    : None;
type OwnFlag<F> = F extends { readonly flag?: infer S } ? SpecFlags<NonNullable<S>> : None;
type NestedFlags<F> = F extends { readonly type: { readonly fields: infer G } }
  ? [G] extends [Fields]
    ? string extends keyof G
      ? None
      : FlagsOf<G>
    : None
  : None;

/** The parsed flags of a section's keys, by flag name (nested keys' flags included), each optional. */
export type FlagsOf<F extends Fields> = UnionToIntersection<
  { [K in keyof F]-?: OwnFlag<F[K]> & NestedFlags<F[K]> }[keyof F]
>;

/** A key that a flag sets: its dotted key within the section ("tls.ca"), its declaration and its flag. */
export interface Setting {
  key: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- fields of different types
  field: Field<any>;
  flag: FlagSpec;
}

/** Every key of `fields` with a flag, depth first in declaration order (a record's keys after the record's own). */
export function settings(fields: Fields, prefix = ''): Setting[] {
  return Object.entries(fields).flatMap(([k, f]) => {
    const key = prefix ? `${prefix}.${k}` : k;
    const own = f.flag ? [{ key, field: f, flag: f.flag }] : [];
    const list = f.type.name.startsWith('list of');
    return f.type.fields && !list ? [...own, ...settings(f.type.fields, key)] : own;
  });
}

/**
 * The overrides the parsed flags make (flags not given make none; an unset switch without --no- form is not given).
 * A flag's environment variable (unless empty) stands in for it, and errors then name the variable.
 */
export function flagOverrides(
  fields: Fields,
  flags: Readonly<Record<string, unknown>>,
  env: NodeJS.ProcessEnv = process.env,
): Override[] {
  const out: Override[] = [];
  for (const { key, flag: spec } of settings(fields)) {
    let value = flags[spec.name];
    let name = `--${spec.name}`;
    if (spec.kind === 'boolean' && value === false && !spec.allowNo) value = undefined;
    const text = spec.env === undefined ? undefined : env[spec.env];
    if (value === undefined && text) {
      value = spec.multiple ? text.split(',').map((s) => s.trim()) : text;
      name = spec.env!;
    }
    if (value === undefined) continue;
    out.push({ key, flag: name, value: spec.toValue ? spec.toValue(value) : value });
  }
  return out;
}
