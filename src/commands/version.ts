// `dstm version`, in place of oclif's plugin, so that --json follows dstm(1)'s contract (snake_case keys, errors as
// {"error": ...}) and nothing is asked of the npm registry.
import { Flags } from '@oclif/core';
import { DstmCommand } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';

const EXITS = [EXIT.ok, EXIT.usage];

export default class VersionCommand extends DstmCommand {
  static override summary = 'Print the version of dstm, the platform and Node.js';
  static override description =
    'Prints dstm/VERSION PLATFORM-ARCH node-vNODE, as --version and -v do. --json prints {version, ' +
    'architecture, node_version} (dstm(1), JSON OUTPUT).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = ['<%= config.bin %> version', '<%= config.bin %> version --json'];

  static override flags = {
    json: Flags.boolean({ summary: 'Print the version as JSON (dstm(1), JSON OUTPUT).' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(VersionCommand);
    const { version, platform, arch } = this.config;
    if (flags.json)
      this.log(JSON.stringify({ version, architecture: `${platform}-${arch}`, node_version: process.version }));
    else this.log(this.config.userAgent);
  }
}
