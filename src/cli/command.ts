// The base of every dstm command: one way to report a failure. Without --json a failure is one line
// "dstm NAME: message" on stderr (a usage error adds one line pointing at --help, never the whole help); with --json
// it is one JSON object {"error": {"message", "exit", "command"}} on stderr (dstm(1), JSON OUTPUT). Either way the
// exit code is the table's (src/cli/exit-codes.ts).
import { Command, Errors } from '@oclif/core';
import { EXIT, type ExitCode } from './exit-codes';

/** What reporting needs of a command (a Command, or a test's stand-in). */
export interface Reporter {
  id?: string;
  argv: string[];
  config: { bin: string };
  exit(code?: number): never;
}

const wantsJson = (argv: readonly string[]): boolean => {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
};

/**
 * A command's failure: written on stderr in the form the command line asked for, then `code` (through oclif, which
 * flushes). `help` adds the pointer to --help (a usage error found by the parser).
 */
export function fail(
  cmd: Reporter,
  message: string,
  code: ExitCode,
  name = cmd.id?.replace(/:/g, ' ') ?? '',
  help = false,
): never {
  const who = name ? `${cmd.config.bin} ${name}` : cmd.config.bin;
  if (wantsJson(cmd.argv))
    process.stderr.write(`${JSON.stringify({ error: { message, exit: code, command: name } })}\n`);
  else process.stderr.write(`${who}: ${message}\n${help ? `Try '${who} --help' for more information.\n` : ''}`);
  return cmd.exit(code);
}

export abstract class DstmCommand extends Command {
  /** oclif's own errors (flag parsing above all) reported as every other failure; this.exit() passes through. */
  protected override async catch(err: Error & { oclif?: { exit?: number } }): Promise<never> {
    if (err instanceof Errors.ExitError) throw err;
    // an error before parsing is done is the command line's: a usage error
    const usage = !this.parsed;
    const lines = (err.message ?? String(err))
      .split('\n')
      .filter((l) => l.trim() && !/^See more help with --help$/.test(l));
    const message = lines
      .join(' ')
      .replace(/\s+/g, ' ')
      .replace(/^Parsing (--\S+) /, '$1: ')
      .replace(/^The following error occurred: /, '')
      .trim();
    return fail(this, message, usage ? EXIT.usage : EXIT.internal, undefined, usage);
  }
}
