// The oclif flags of a configuration section, generated from its keys' declarations (src/config/settings.ts): every
// command that sets keys (server, tep, static, request, release, leases) spreads these in, so a flag's name, old
// names, options and help line exist once, next to the key it sets.
import { Flags, type Interfaces } from '@oclif/core';
import type { Fields } from '../config/schema';
import { settings, type FlagsOf, type Setting } from '../config/settings';
import { parseUint32 } from './flags';

type OclifFlag<V> = [V] extends [boolean] ? Interfaces.BooleanFlag<boolean> : Interfaces.OptionFlag<V | undefined>;

/** The oclif flags object for a section's keys, typed from the declarations. */
export type SettingFlags<F extends Fields> = { [N in keyof FlagsOf<F>]-?: OclifFlag<NonNullable<FlagsOf<F>[N]>> };

/** The --help line: the flag's own summary, else the key's doc. */
function summaryOf(s: Setting): string {
  return s.flag.summary ?? s.field.doc;
}

/** One key's oclif flag (typed by SettingFlags, so loosely here). */
function oclifFlag(s: Setting): unknown {
  const { flag } = s;
  const common = {
    summary: summaryOf(s),
    ...(flag.aliases?.length ? { aliases: [...flag.aliases], deprecateAliases: true } : {}),
    // a placeholder would hide the list of choices oclif shows
    ...(flag.helpValue && !s.field.type.choices ? { helpValue: flag.helpValue } : {}),
  };
  switch (flag.kind) {
    case 'boolean':
      return Flags.boolean({ ...common, allowNo: flag.allowNo ?? false });
    case 'integer':
      return Flags.integer(common);
    case 'uint32':
      return Flags.custom<number>({ ...common, parse: async (t) => parseUint32(t) })();
    case 'string': {
      const choices = s.field.type.choices;
      const options = choices ? { ...common, options: [...choices] } : common;
      return flag.multiple ? Flags.string({ ...options, multiple: true }) : Flags.string(options);
    }
  }
}

function flagsOf(fields: Fields, wanted: (flagName: string) => boolean): Record<string, unknown> {
  const chosen = settings(fields).filter((s) => wanted(s.flag.name));
  return Object.fromEntries(chosen.map((s) => [s.flag.name, oclifFlag(s)]));
}

/** The flags of every key of `fields` that declares one, in declaration order, but those named in `omit`. */
export function settingFlags<F extends Fields, O extends keyof SettingFlags<F> = never>(
  fields: F,
  omit: readonly O[] = [],
): Omit<SettingFlags<F>, O> {
  return flagsOf(fields, (name) => !(omit as readonly string[]).includes(name)) as Omit<SettingFlags<F>, O>;
}

/** The flags of the keys of `fields` named in `only` (a command that reads a few keys of another's section). */
export function pickSettingFlags<F extends Fields, P extends keyof SettingFlags<F>>(
  fields: F,
  only: readonly P[],
): Pick<SettingFlags<F>, P> {
  return flagsOf(fields, (name) => (only as readonly string[]).includes(name)) as Pick<SettingFlags<F>, P>;
}

/** --config: the file whose `section` section holds the command's keys (`what`: which of them, when not all). */
export function configFlag(section: string, what = '') {
  return Flags.string({
    helpValue: 'FILE',
    summary: `Configuration file (JSON, its "${section}" section${what}); default DSTM_CONFIG or /etc/dstm/dstm.json if present.`,
  });
}
