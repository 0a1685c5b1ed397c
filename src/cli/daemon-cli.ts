// What the long-running commands (dstm server, tep, request --hold, static) share: the --log-level flag,
// systemd notifications that never stop a daemon, and the wait for SIGINT or SIGTERM.
import { Flags } from '@oclif/core';
import { LEVELS, type Level, type Logger } from '../lib/log';
import { sdNotify } from '../lib/sd-notify';

/** One way to set the level everywhere: --log-level, or DSTM_LOG_LEVEL standing in for it. */
export const logLevelFlag = Flags.string({
  summary: 'Least severe log level written (default: DSTM_LOG_LEVEL, else the configuration\'s log_level, else info).',
  options: [...LEVELS],
  env: 'DSTM_LOG_LEVEL',
});

export const asLevel = (s: string | undefined): Level | undefined => s as Level | undefined;

/** Tells systemd (Type=notify) `state`; a failure is logged, never fatal: the daemon serves either way. */
export function notify(log: Logger, state: string): void {
  try {
    sdNotify(state);
  } catch (err) {
    log.warn('cannot notify systemd', { state, error: (err as Error).message });
  }
}

/** Resolves on the first SIGINT or SIGTERM; taken before start-up so a signal then is neither fatal nor lost. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(s);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
