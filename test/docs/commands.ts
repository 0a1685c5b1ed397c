// The oclif command metadata, loaded from src/commands (oclif transpiles them with tsx), so the docs tests check
// the source being edited and need no build. The same metadata drives `--help` and `dstm completion`.
import { Config, settings, type Command } from '@oclif/core';
import { join } from 'node:path';

export const ROOT = join(__dirname, '..', '..');

/** Every visible command of dstm, sorted by id ("tep:stats" for `dstm tep stats`); help and version are its own. */
export async function loadCommands(): Promise<Command.Loadable[]> {
  settings.enableAutoTranspile = true;
  const config = await Config.load(ROOT);
  return config.commands.filter((c) => !c.hidden).sort((a, b) => a.id.localeCompare(b.id));
}
