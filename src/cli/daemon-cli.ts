// What the long-running commands (dstm server, tep, request --hold, static) share on the command line: the
// --log-level flag. Their lifecycle (signals, systemd notifications) is runDaemon in src/lib/daemon.ts.
import { Flags } from '@oclif/core';
import { LEVELS, type Level } from '../lib/log';
import { StartError } from '../lib/daemon';
import { EXIT } from './exit-codes';
import { fail, type Reporter } from './command';

/**
 * --log-level of `dstm request`, whose client section has no log_level (the daemons' is a config key's flag, see
 * logLevel() in src/config/types.ts): DSTM_LOG_LEVEL stands in for it.
 */
export const logLevelFlag = Flags.string({
  summary: 'Least severe log level written (default: DSTM_LOG_LEVEL, else info).',
  options: [...LEVELS],
  env: 'DSTM_LOG_LEVEL',
});

/** The --log-level flag's value, an empty one (DSTM_LOG_LEVEL=) as not given, as server and tep take it. */
export const asLevel = (s: string | undefined): Level | undefined => (s || undefined) as Level | undefined;

/** How a daemon command reports runDaemon's failure: start-up as exit 3 (after `what`, if given), anything later 1. */
export function daemonFailed(cmd: Reporter, err: unknown, what?: string): never {
  if (err instanceof StartError) return fail(cmd, what ? `${what}: ${err.message}` : err.message, EXIT.cannotStart);
  return fail(cmd, (err as Error)?.message ?? String(err), EXIT.internal);
}
