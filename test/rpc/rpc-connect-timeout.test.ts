// A TCP connect to a host that silently drops packets gives up after the client's timeoutMs (not the kernel's
// ~2 minutes of SYN retries), with a TIMEOUT error, and leaves nothing open. Root only: the black hole is a
// neighbour on a veth in a namespace the test makes.
import { expect } from 'chai';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tsArgv } from '../support/dstm-procs';
import { netnsUnavailable } from '../support/netns';
import { skipIf } from '../support/skip';
import { BLACKHOLE6 } from './connect-timeout-peer';

const execFileP = promisify(execFile);
const NS = `dstm-ct-${process.pid}`;

describe('rpc client TCP connect timeout (black-holed host)', function () {
  this.timeout(60_000);

  before(function () {
    skipIf(this, netnsUnavailable());
    const ip = (...a: string[]): Buffer => execFileSync('ip', ['-n', NS, ...a]);
    execFileSync('ip', ['netns', 'add', NS]);
    ip('link', 'set', 'lo', 'up');
    ip('link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1');
    ip('link', 'set', 'v0', 'up');
    ip('link', 'set', 'v1', 'up');
    ip('-6', 'addr', 'add', '2001:db8:99::1/64', 'dev', 'v0', 'nodad');
    // a permanent neighbour with a MAC no interface has: frames to it leave v0 and v1 discards them
    ip('-6', 'neigh', 'add', BLACKHOLE6, 'lladdr', '02:00:00:00:99:02', 'dev', 'v0', 'nud', 'permanent');
  });

  after(() => {
    if (!netnsUnavailable()) execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  });

  it('rejects with TIMEOUT after timeoutMs, and the process then exits by itself', async () => {
    const script = join(__dirname, 'connect-timeout-peer.ts');
    const t0 = performance.now();
    // without the connect timer the peer would wait for the kernel (~127 s): the 20 s limit fails the test
    const { stdout } = await execFileP('ip', ['netns', 'exec', NS, ...tsArgv(script, '500')], { timeout: 20_000 });
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as { kind: string; ms: number };
    expect(r.kind).to.equal('TIMEOUT');
    expect(r.ms).to.be.within(450, 1500);
    expect(performance.now() - t0).to.be.below(15_000);
  });
});
