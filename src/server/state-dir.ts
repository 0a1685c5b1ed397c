// Creating the state directory, one component at a time. fs.mkdirSync(recursive) loops forever where mkdir(2)
// answers ENOENT for a directory whose parent exists (/proc/self/xx): the start-up hung at 100% CPU, deaf to
// SIGTERM. Here every failure is an error that names the directory and the reason.
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export class StateDirError extends Error {}

/** What to do about a state directory this user cannot write (a first start without root: /var/lib is root's). */
export const STATE_DIR_ADVICE =
  'give a directory this user can write with --state-dir (or server.state_dir), or run as root';

/** Make `dir` and its missing parents (mode 0750), or throw a StateDirError saying why it cannot be. */
export function makeStateDir(dir: string): void {
  const target = resolve(dir);
  const missing: string[] = [];
  for (let d = target; ; d = dirname(d)) {
    let isDir: boolean | undefined;
    try {
      isDir = statSync(d).isDirectory();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw failure(dir, d, err);
    }
    if (isDir === false) throw new StateDirError(`state directory ${dir}: ${d} is not a directory`);
    if (isDir) break;
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      mkdirSync(d, { mode: 0o750 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw failure(dir, d, err);
    }
  }
}

function failure(dir: string, at: string, err: unknown): StateDirError {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  const hint = code === 'EACCES' || code === 'EPERM' ? `; ${STATE_DIR_ADVICE}` : '';
  return new StateDirError(`state directory ${dir}: cannot create ${at}: ${code}${hint}`);
}
