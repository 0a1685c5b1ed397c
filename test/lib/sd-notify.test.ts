// sdNotify against a real AF_UNIX datagram socket (python3 plays systemd's side), by path and by abstract name,
// and `dstm server` and `dstm request --hold` under it: READY once they serve, RELOADING/READY around SIGHUP,
// STOPPING on SIGTERM.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DstmClient } from '../../src/protocol/client';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { sdNotify } from '../../src/lib/sd-notify';
import { dstmArgv } from '../support/dstm-procs';
import { freePort } from '../server/helpers';

/** A python3 datagram receiver bound to `address` (a path, or "\0name" for abstract); prints each datagram as JSON. */
function receiver(address: string): Promise<{ proc: ChildProcess; next: () => Promise<string> }> {
  const script = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(json.loads(sys.argv[1]))
print("bound", flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;
  const proc = spawn('python3', ['-c', script, JSON.stringify(address)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiting: ((l: string) => void)[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  const next = (): Promise<string> =>
    new Promise((resolve) => (lines.length ? resolve(lines.shift()!) : waiting.push(resolve)));
  return new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('exit', (code) => reject(new Error(`python3 receiver exited (${code})`)));
    void next().then((l) =>
      l === 'bound' ? resolve({ proc, next: async () => JSON.parse(await next()) as string }) : reject(new Error(l)),
    );
  });
}

describe('sdNotify', () => {
  let dir: string;
  let proc: ChildProcess | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dstm-notify-'));
  });
  afterEach(() => {
    proc?.kill();
    proc = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('does nothing and needs no socket when NOTIFY_SOCKET is unset or empty', () => {
    expect(sdNotify({ READY: 1 }, {})).to.equal(false);
    expect(sdNotify({ READY: 1 }, { NOTIFY_SOCKET: '' })).to.equal(false);
  });

  it('sends the state as one datagram to a socket path', async () => {
    const path = join(dir, 'notify');
    const r = await receiver(path);
    proc = r.proc;
    expect(sdNotify({ READY: 1, STATUS: 'listening on [::]:3786' }, { NOTIFY_SOCKET: path })).to.equal(true);
    expect(await r.next()).to.equal('READY=1\nSTATUS=listening on [::]:3786');
    sdNotify({ STOPPING: 1 }, { NOTIFY_SOCKET: path });
    expect(await r.next()).to.equal('STOPPING=1');
  });

  it('makes values safe: a newline in a status (a driver error) cannot add an assignment; long values are cut', async () => {
    const path = join(dir, 'notify');
    const r = await receiver(path);
    proc = r.proc;
    sdNotify({ STATUS: 'store unavailable: boom\nSTOPPING=1\r\x00\x7f' }, { NOTIFY_SOCKET: path });
    expect(await r.next()).to.equal('STATUS=store unavailable: boom STOPPING=1   ');
    sdNotify({ STATUS: 'x'.repeat(5000) }, { NOTIFY_SOCKET: path });
    expect(await r.next()).to.equal(`STATUS=${'x'.repeat(397)}...`);
    expect(() => sdNotify({ 'READY=1\nSTOPPING': 1 }, { NOTIFY_SOCKET: path })).to.throw(/not a variable name/);
  });

  it('sends to an abstract socket named @name', async () => {
    const name = `dstm-notify-test-${process.pid}-${Date.now()}`;
    const r = await receiver(`\0${name}`);
    proc = r.proc;
    sdNotify({ READY: 1 }, { NOTIFY_SOCKET: `@${name}` });
    expect(await r.next()).to.equal('READY=1');
  });

  it('throws when the socket is not there or the name is not a path', () => {
    expect(() => sdNotify({ READY: 1 }, { NOTIFY_SOCKET: join(dir, 'absent') })).to.throw(
      /sendto: No such file or directory/,
    );
    expect(() => sdNotify({ READY: 1 }, { NOTIFY_SOCKET: 'relative/notify' })).to.throw(/not an absolute path/);
  });

  /** `dstm ARGS` from the sources under systemd's eye: NOTIFY_SOCKET is `notify`, stderr kept for messages. */
  function daemon(
    notify: string,
    ...argv: string[]
  ): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
    const [node, ...args] = dstmArgv(...argv);
    const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: notify };
    delete env.DSTM_CONFIG;
    const child = spawn(node, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    return { child, exited: new Promise((resolve) => child.once('exit', resolve)), stderr: () => stderr };
  }

  it('dstm server sends READY=1 once it answers, RELOADING=1/READY=1 around SIGHUP and STOPPING=1 on SIGTERM; so does dstm request --hold, READY once leased', async function () {
    this.timeout(90_000);
    const r = await receiver(join(dir, 'notify'));
    proc = r.proc;
    const port = await freePort();
    const server = daemon(
      join(dir, 'notify'),
      'server',
      '--listen',
      `[::1]:${port}`,
      '--state-dir',
      join(dir, 'state'),
      '--pool',
      '10.86.0.0/29',
    );
    let node: ReturnType<typeof daemon> | undefined;
    try {
      expect(
        await Promise.race([r.next(), server.exited.then((code) => `exited ${code}: ${server.stderr()}`)]),
      ).to.equal('READY=1');
      // READY means it serves: a request gets a lease at once
      const client = await DstmClient.connect({
        host: '::1',
        port,
        program: DEFAULT_PROGRAM,
        local: '::1',
        timeoutMs: 2000,
      });
      try {
        expect((await client.request()).address).to.match(/^10\.86\.0\.[1-6]$/);
      } finally {
        await client.close();
      }
      server.child.kill('SIGHUP');
      expect(await r.next()).to.equal('RELOADING=1');
      expect(await r.next()).to.equal('READY=1');

      // the node: READY after its first lease is printed; SIGHUP does not end it; SIGTERM releases and stops
      node = daemon(
        join(dir, 'notify'),
        'request',
        '--hold',
        '--json',
        '--server',
        `[::1]:${port}`,
        '--local',
        '::1',
        '--control',
        join(dir, 'node.sock'),
      );
      let stdout = '';
      node.child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      expect(await Promise.race([r.next(), node.exited.then((code) => `exited ${code}: ${node!.stderr()}`)])).to.equal(
        'READY=1',
      );
      expect(JSON.parse(stdout.split('\n')[0])).to.include({ event: 'lease', ipv6: '::1' });
      node.child.kill('SIGHUP');
      expect(await r.next()).to.equal('RELOADING=1');
      expect(await r.next()).to.equal('READY=1');
      node.child.kill('SIGTERM');
      expect(await r.next()).to.equal('STOPPING=1');
      expect(await node.exited, node.stderr()).to.equal(0);
      expect(stdout).to.contain('"event":"released"');

      server.child.kill('SIGTERM');
      expect(await r.next()).to.equal('STOPPING=1');
      expect(await server.exited, server.stderr()).to.equal(0);
    } finally {
      server.child.kill('SIGKILL');
      node?.child.kill('SIGKILL');
    }
  });
});
