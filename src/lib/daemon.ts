// The one lifecycle of every dstm daemon (server, tep, request --hold, static): signals taken before start-up,
// start, READY, SIGHUP reloads one at a time between RELOADING and READY, SIGINT or SIGTERM stops after the reload
// in progress. Each daemon only says how it starts, reloads and stops; the systemd notifications and the signal
// handling are here once.
import type { Logger } from './log';
import { sdNotify } from './sd-notify';

/** A started daemon. */
export interface Daemon {
  /** READY is sent when this resolves (e.g. once a node holds its lease); default: as soon as start() returns. */
  readonly ready?: Promise<unknown>;
  /** SIGHUP: re-read the configuration and apply it; a throw is logged and the running configuration stays. */
  reload(): Promise<void> | void;
  stop(): Promise<void>;
  /** Settles when the daemon cannot go on (its store failed): it is stopped, and runDaemon rejects with the error. */
  readonly failed?: Promise<Error>;
}

/** Tells systemd (Type=notify) `state`; a failure is logged, never fatal: the daemon serves either way. */
export function notify(log: Logger, state: Readonly<Record<string, string | number>>): void {
  try {
    sdNotify(state);
  } catch (err) {
    log.warn('cannot notify systemd', { state, error: (err as Error).message });
  }
}

/** start() failed: the command exits "cannot start" with this message (the start error's own). */
export class StartError extends Error {
  constructor(override readonly cause: unknown) {
    super((cause as Error)?.message ?? String(cause));
    this.name = 'StartError';
  }
}

/**
 * Starts a daemon and runs it until SIGINT or SIGTERM, then stops it; resolves once it has stopped. A signal during
 * start-up is neither fatal nor lost: a stop waits for the start, a reload is applied after it. If start() throws,
 * the error is passed on as a StartError (the command reports it), with the signal handlers removed.
 */
export async function runDaemon(log: Logger, start: () => Promise<Daemon>): Promise<void> {
  let stop!: (s: NodeJS.Signals) => void;
  const stopping = new Promise<NodeJS.Signals>((resolve) => (stop = resolve));
  let started!: () => void;
  let reloads = new Promise<void>((resolve) => (started = resolve));
  let daemon: Daemon | undefined;
  let stopped = false;
  let ready = false;
  const reload = async (): Promise<void> => {
    if (stopped) return;
    // before READY there is no state to leave for RELOADING
    if (ready) notify(log, { RELOADING: 1 });
    try {
      await daemon!.reload();
    } catch (err) {
      log.error('configuration not reloaded; the running one stays', { why: (err as Error).message });
    }
    if (ready) notify(log, { READY: 1 });
  };
  const hup = (): void => void (reloads = reloads.then(reload));
  process.on('SIGHUP', hup);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    try {
      daemon = await start();
    } catch (err) {
      throw new StartError(err);
    }
    started();
    void Promise.resolve(daemon.ready).then(
      () => {
        if (stopped) return;
        ready = true;
        notify(log, { READY: 1 });
      },
      () => undefined,
    );
    const failed = daemon.failed ?? new Promise<never>(() => undefined);
    const why = await Promise.race([stopping, failed]);
    stopped = true;
    if (why instanceof Error) log.error('stopping: the daemon cannot go on', { why: why.message });
    else log.info('stopping', { signal: why });
    notify(log, { STOPPING: 1 });
    await reloads;
    await daemon.stop();
    if (why instanceof Error) throw new Error(`stopped: ${why.message}`, { cause: why });
  } finally {
    process.off('SIGHUP', hup);
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
