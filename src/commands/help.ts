// `dstm help [COMMAND]`, in place of oclif's plugin, so that a failure is reported as every command's is (one line or
// the --json error, exit 2 for an unknown command, with the nearest ones) rather than as a stack trace with exit 1.
import { Args, Flags, loadHelpClass } from '@oclif/core';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { notACommand } from '../cli/not-found';

const EXITS = [EXIT.ok, EXIT.usage];

export default class HelpCommand extends DstmCommand {
  static override summary = 'Print the help of a command, or the list of commands';
  static override description =
    'With COMMAND (its words, e.g. tep stats) prints what COMMAND --help prints; without, the commands. ' +
    'See dstm(1).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = ['<%= config.bin %> help', '<%= config.bin %> help tep stats'];

  // the command's words, as many as it has
  static override strict = false;

  static override args = {
    command: Args.string({ description: 'The command to show the help of (its words, e.g. tep stats)' }),
  };

  static override flags = {
    'nested-commands': Flags.boolean({ char: 'n', summary: 'List the subcommands too.' }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(HelpCommand);
    const words = argv as string[];
    const id = words.join(':');
    if (id && !this.config.findCommand(id) && !this.config.findTopic(id))
      fail(this, notACommand(words.join(' '), this.config), EXIT.usage);
    const Help = await loadHelpClass(this.config);
    await new Help(this.config, { all: flags['nested-commands'] }).showHelp(words);
  }
}
