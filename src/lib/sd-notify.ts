// systemd readiness and status notifications (sd_notify(3)) for `Type=notify` units (contrib/systemd): the
// daemons call sdNotify({ READY: 1 }) once they listen, { RELOADING: 1 } / { READY: 1 } around a SIGHUP reload and
// { STOPPING: 1 } on the way out. Outside systemd (no NOTIFY_SOCKET) it does nothing and needs no addon.
import { loadAddon } from './addon';

interface SdNotifyAddon {
  /** native/sd_notify.c: one datagram `state` to the AF_UNIX socket `path` ('@name' is abstract). */
  sdNotify(path: string, state: string): void;
}

/** Longest value sent, in characters; a longer one (a driver's error message in STATUS) is cut, ending in "...". */
export const MAX_NOTIFY_VALUE = 400;

/**
 * One value as the service manager may read it: control characters (a newline would start another assignment,
 * e.g. STOPPING=1 smuggled in a PostgreSQL error message) become spaces, and it is cut at MAX_NOTIFY_VALUE.
 */
export function notifyValue(value: string | number): string {
  // eslint-disable-next-line no-control-regex
  const text = String(value).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ');
  return text.length > MAX_NOTIFY_VALUE ? `${text.slice(0, MAX_NOTIFY_VALUE - 3)}...` : text;
}

/**
 * Sends `state`, assignments like { READY: 1, STATUS: 'listening' }, to the service manager, each value made safe
 * by notifyValue. Returns false, having done nothing, when NOTIFY_SOCKET is unset or empty; throws if the send fails
 * or a name is not a variable name.
 */
export function sdNotify(
  state: Readonly<Record<string, string | number>>,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  const lines = Object.entries(state).map(([name, value]) => {
    if (!/^[A-Z][A-Z0-9_]*$/.test(name)) throw new Error(`sd_notify: "${name}" is not a variable name`);
    return `${name}=${notifyValue(value)}`;
  });
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  (loadAddon() as SdNotifyAddon).sdNotify(socket, lines.join('\n'));
  return true;
}
