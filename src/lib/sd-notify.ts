// systemd readiness and status notifications (sd_notify(3)) for `Type=notify` units (contrib/systemd): the
// daemons call sdNotify('READY=1') once they listen, 'RELOADING=1' / 'READY=1' around a SIGHUP reload and
// 'STOPPING=1' on the way out. Outside systemd (no NOTIFY_SOCKET) it does nothing and needs no addon.
import { loadAddon } from './addon';

interface SdNotifyAddon {
  /** native/sd_notify.c: one datagram `state` to the AF_UNIX socket `path` ('@name' is abstract). */
  sdNotify(path: string, state: string): void;
}

/**
 * Sends `state` (newline-separated VAR=value assignments, e.g. "READY=1\nSTATUS=listening") to the service
 * manager. Returns false, having done nothing, when NOTIFY_SOCKET is unset or empty; throws if the send fails.
 */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  (loadAddon() as SdNotifyAddon).sdNotify(socket, state);
  return true;
}
