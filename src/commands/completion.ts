import { Args } from '@oclif/core';
import { DstmCommand } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { bashCompletion, SHELLS, zshCompletion, type CompletionCommand } from '../cli/completion';

const EXITS = [EXIT.ok, EXIT.usage];

export default class CompletionCommandCmd extends DstmCommand {
  static override summary = 'Print the shell completion script for bash or zsh';
  static override description =
    "Prints a script that completes dstm's commands, flags and flag choices, generated from the same " +
    'command metadata as --help.' +
    '\n\n' +
    'bash: source <(dstm completion bash), or save it as /etc/bash_completion.d/dstm. zsh: save it as ' +
    '_dstm in a directory of $fpath, e.g. dstm completion zsh > "${fpath[1]}/_dstm", and start a new ' +
    'shell.' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    'source <(<%= config.bin %> completion bash)',
    '<%= config.bin %> completion zsh > "${fpath[1]}/_dstm"',
  ];

  static override args = {
    shell: Args.string({ description: 'The shell to complete for', options: [...SHELLS], required: true }),
  };

  async run(): Promise<void> {
    const { args } = await this.parse(CompletionCommandCmd);
    const commands = this.config.commands as CompletionCommand[];
    process.stdout.write(
      args.shell === 'bash' ? bashCompletion(this.config.bin, commands) : zshCompletion(this.config.bin, commands),
    );
  }
}
