// oclif's command_not_found hook (and `dstm help WORD`): an unknown command is a usage error (exit 2) reported like
// every other failure, with the nearest command names when the word looks like a typo of one ("did you mean").
// Nothing is fetched or installed: the candidates are this CLI's own commands.
import type { Hook, Interfaces } from '@oclif/core';
import { fail } from './command';
import { EXIT } from './exit-codes';

/** Levenshtein distance (insertions, deletions, substitutions), with transpositions of neighbours counted as one. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The commands within reach of `word` (a third of its length, at least 1), nearest first; prefixes count too. */
export function suggestions(word: string, commands: readonly string[]): string[] {
  const limit = Math.max(1, Math.floor(word.length / 3));
  return commands
    .map((c) => ({ c, d: c.startsWith(word) ? 0 : editDistance(word, c) }))
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d || x.c.localeCompare(y.c))
    .map(({ c }) => c);
}

/** What an unknown command `word` is told: that it is none, and the nearest commands when it looks like a typo. */
export function notACommand(word: string, config: Interfaces.Config): string {
  const ids = [...new Set(config.commands.filter((c) => !c.hidden).map((c) => c.id.replace(/:/g, ' ')))];
  const near = suggestions(word, ids);
  const bin = config.bin;
  const hint = near.length ? ` Did you mean ${near.map((n) => `'${bin} ${n}'`).join(' or ')}?` : '';
  return `'${word}' is not a ${bin} command.${hint} '${bin} help' lists them.`;
}

const hook: Hook<'command_not_found'> = async function (opts) {
  fail(
    { argv: opts.argv ?? [], config: opts.config, exit: (code) => this.exit(code) as never },
    notACommand(opts.id.replace(/:/g, ' '), opts.config),
    EXIT.usage,
    '',
  );
};

export default hook;
