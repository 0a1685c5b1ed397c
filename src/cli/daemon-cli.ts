// What the long-running commands (dstm server, tep, request --hold, static) share on the command line: the
// --log-level flag. Their lifecycle (signals, systemd notifications) is runDaemon in src/lib/daemon.ts.
import { Flags } from '@oclif/core';
import { LEVELS, type Level } from '../lib/log';
import { StartError } from '../lib/daemon';
import { oneOf } from '../config/schema';
import { EXIT } from './exit-codes';
import { fail, type Reporter } from './command';

/**
 * --log-level of `dstm request --hold` (only --hold logs), whose client section has no log_level (the daemons' is a
 * config key's flag, see logLevel() in src/config/types.ts). DSTM_LOG_LEVEL stands in for it (envLevel), read by the
 * command rather than by oclif, which would count the variable as the flag given and refuse it without --hold.
 */
export const logLevelFlag = Flags.string({
  summary: 'With --hold: least severe log level written (default: DSTM_LOG_LEVEL, else info).',
  options: [...LEVELS],
  dependsOn: ['hold'],
});

/** DSTM_LOG_LEVEL: undefined when unset or empty (as server and tep take it); a bad value throws, naming it. */
export function envLevel(env: NodeJS.ProcessEnv = process.env): Level | undefined {
  const text = env.DSTM_LOG_LEVEL;
  return text ? oneOf(LEVELS).parse(text, 'DSTM_LOG_LEVEL') : undefined;
}

/** How a daemon command reports runDaemon's failure: start-up as exit 3 (after `what`, if given), anything later 1. */
export function daemonFailed(cmd: Reporter, err: unknown, what?: string): never {
  if (err instanceof StartError) return fail(cmd, what ? `${what}: ${err.message}` : err.message, EXIT.cannotStart);
  return fail(cmd, (err as Error)?.message ?? String(err), EXIT.internal);
}
