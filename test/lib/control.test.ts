// The control socket: one JSON answer per connection; what is at the path before start-up is handled with care.
import { expect } from 'chai';
import { lstatSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryControl, serveControl } from '../../src/lib/control';

const listen = (path: string): Promise<Server> =>
  new Promise((resolve, reject) => {
    const s = createServer().once('error', reject);
    s.listen(path, () => resolve(s));
  });
const close = (s: Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));

describe('control socket', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'dstm-control-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('finding 12: removes only a stale socket at --control; a file, a directory or a live socket is an error naming the path', async () => {
    const file = join(dir, 'precious.txt');
    writeFileSync(file, 'keep me');
    await expectRefusal(file, /precious\.txt.*other than a socket/);
    expect(readFileSync(file, 'utf8')).to.equal('keep me');

    const sub = join(dir, 'sub');
    mkdirSync(sub);
    await expectRefusal(sub, /sub.*other than a socket/);

    const live = join(dir, 'live.sock');
    const other = await listen(live);
    await expectRefusal(live, /live\.sock.*another process is listening/);
    await close(other);

    // a socket left by a daemon that was killed: nobody listens, so it is replaced
    const stale = join(dir, 'stale.sock');
    await killedListener(stale);
    expect(lstatSync(stale).isSocket()).to.equal(true);
    const s = await serveControl(stale, () => ({ ok: 1 }));
    expect(await queryControl(stale)).to.deep.equal({ ok: 1 });
    // the answer of another daemon than the one asked for is refused, naming the path
    const err = await queryControl(stale, 2000, 'TEP', 'forwarded').catch((e: Error) => e);
    expect((err as Error).message).to.equal(
      `${stale}: the answer is not a TEP's statistics (another daemon's socket?)`,
    );
    await close(s);
    expect(((await queryControl('').catch((e: Error) => e)) as Error).message).to.match(/no control socket given/);
  });
});

async function expectRefusal(path: string, message: RegExp): Promise<void> {
  const err = await serveControl(path, () => ({})).then(
    (s) => {
      s.close();
      return undefined;
    },
    (e: Error) => e,
  );
  expect(err?.message).to.match(message);
}

/** A process that listens on `path` and is then killed with SIGKILL, leaving its socket file behind. */
async function killedListener(path: string): Promise<void> {
  const code = `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout, 'data');
  child.kill('SIGKILL');
  await once(child, 'exit');
}
