// The TEP's local control endpoint: a unix socket that answers every connection with one JSON document (the
// statistics) and closes. A filesystem path, not an abstract socket, so `dstm tep stats` reaches a TEP running
// in another network namespace.
import { lstatSync, mkdirSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';

export const DEFAULT_CONTROL_PATH = '/run/dstm/tep.sock';

export async function serveControl(path: string, answer: () => unknown): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true });
  await removeStaleSocket(path);
  const server = createServer((sock) => {
    // an answer may come later (gathered from other threads); a connection gone by then is no error
    sock.on('error', () => undefined);
    void Promise.resolve(answer()).then((a) => sock.end(JSON.stringify(a) + '\n'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/**
 * Removes what a daemon that was killed left at `path`: a socket nobody listens on. Anything else there (a file, a
 * directory, a socket with a listener) is an error naming the path, and stays.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket)
    throw new Error(`control socket ${path}: something other than a socket is there; remove it or choose another path`);
  const listening = await new Promise<boolean>((resolve) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false)); // ECONNREFUSED: stale
  });
  if (listening)
    throw new Error(`control socket ${path}: another process is listening on it (a daemon already running?)`);
  rmSync(path, { force: true });
}

/** How long `dstm status` and `dstm tep stats` wait for the daemon's answer. */
export const CONTROL_TIMEOUT_MS = 5000;

/**
 * `daemon` names who should be answering, for the error message (`dstm status` reads a node's socket); `key`, when
 * given, is a top-level key of that daemon's answer, so the other daemon's socket (both live in /run/dstm) is refused
 * by name rather than read as if it were this one's.
 */
export async function queryControl(
  path: string,
  timeoutMs = CONTROL_TIMEOUT_MS,
  daemon = 'TEP',
  key?: string,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (path === '') return reject(new Error(`no control socket given (an empty path)`));
    let text = '';
    const sock = createConnection(path);
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`no answer from ${path} within ${timeoutMs} ms`)));
    sock.on('data', (d) => (text += d.toString()));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `no ${daemon} is running there` : err.message;
      reject(new Error(`cannot read the ${daemon}'s statistics from ${path}: ${why}`));
    });
    sock.on('end', () => {
      let answer: unknown;
      try {
        answer = JSON.parse(text);
      } catch {
        return reject(new Error(`${path}: the answer is not JSON`));
      }
      if (key !== undefined && !(answer !== null && typeof answer === 'object' && key in answer))
        return reject(new Error(`${path}: the answer is not a ${daemon}'s statistics (another daemon's socket?)`));
      resolve(answer);
    });
  });
}
