// The node daemon (dstm request --hold) with its DTI's devices injected, against a real dstm server; and the one
// daemon lifecycle every dstm daemon runs under (signals to this very process).
import { expect } from 'chai';
import { join } from 'node:path';
import { runDaemon, StartError, type Daemon } from '../../src/lib/daemon';
import { createLogger } from '../../src/lib/log';
import { queryControl } from '../../src/lib/control';
import { formatIPv6 } from '../../src/lib/addr';
import { startNode, type NodeEvent } from '../../src/node/daemon';
import type { NodeStatus } from '../../src/node/status';
import { FailoverClient } from '../../src/protocol/failover';
import type { Lease } from '../../src/protocol/client';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { ipv4 } from '../dti/build';
import { until } from '../support/wait';
import { fakeDti } from '../support/fake-devices';
import { loopbackAddresses, removeDir, sleep, startServer, tempDir, type ServerProcess } from '../server/helpers';

const log = createLogger({ level: 'error' });

describe('node daemon (DTI devices injected)', function () {
  this.timeout(60000);
  let lo: ReturnType<typeof loopbackAddresses>;
  let dir: string;
  let server: ServerProcess | undefined;
  before(() => {
    lo = loopbackAddresses(1);
  });
  after(() => lo.remove());
  beforeEach(() => {
    dir = tempDir('node');
  });
  afterEach(async () => {
    await server?.stop('SIGKILL');
    server = undefined;
    removeDir(dir);
  });

  it('on demand: requests on the first IPv4 packet, sends it with the lease, serves dstm status, releases on stop', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.88.0.0/24', '--tep', '2001:db8::a,10.88.0.254']);
    const f = fakeDti();
    const client = new FailoverClient({
      servers: [{ host: '::1', port: server.port }],
      program: DEFAULT_PROGRAM,
      local: lo.addresses[0],
    });
    const events: [NodeEvent, string][] = [];
    const control = join(dir, 'node.sock');
    const node = await startNode({
      client,
      seconds: 0,
      dti: { name: 'dti7', routes: ['default'], pathMtu: 1500, log, devices: f.devices, system: f.system },
      onDemand: true,
      control,
      log,
      show: (e: NodeEvent, l: Lease) => events.push([e, l.address]),
    });
    try {
      await node.ready;
      await sleep(300);
      expect(events).to.deep.equal([]); // nothing asked before a packet
      f.tun.receive(ipv4({ src: '0.0.0.0', dst: '192.0.2.2' }));
      await until('the DTI sent a packet', () => f.raw.sent.length > 0);
      const [e, address] = events[0];
      expect(e).to.equal('lease');
      const p = f.raw.take()[0];
      expect(formatIPv6(Uint8Array.from(p.slice(24, 40)))).to.equal('2001:db8::a');
      const inner = p[6] === 4 ? 40 : 48; // after the encapsulation limit option, if any
      expect(p.slice(inner + 12, inner + 16).join('.')).to.equal(address); // the queued packet's new source
      const s = (await queryControl(control, 2000, 'node')) as NodeStatus;
      expect(s).to.deep.include({ server: `[::1]:${server.port}/udp`, state: 'leased' });
      expect(s.dti).to.include({ device: 'dti7', address, tep: '2001:db8::a' });
    } finally {
      await node.stop();
    }
    const address = events[0][1];
    expect(events[events.length - 1]).to.deep.equal(['released', address]);
    expect(f.commands).to.include(`-4 addr del ${address}/32 peer 10.88.0.254/32 dev dti7`);
    expect(f.tun.closed && f.raw.closed && f.icmp6.closed).to.equal(true);
  });
});

describe('daemon lifecycle (runDaemon)', () => {
  const signals = (): number[] => (['SIGHUP', 'SIGINT', 'SIGTERM'] as const).map((s) => process.listenerCount(s));

  it('starts, reloads on SIGHUP one at a time (a failed reload keeps it running), stops on SIGTERM, and lets go of the signals', async () => {
    const before = signals();
    const calls: string[] = [];
    let reloads = 0;
    const daemon: Daemon = {
      reload: async () => {
        calls.push(`reload ${++reloads}`);
        await sleep(50);
        if (reloads === 2) throw new Error('bad configuration');
      },
      stop: async () => void calls.push('stop'),
    };
    const run = runDaemon(log, async () => {
      calls.push('start');
      process.kill(process.pid, 'SIGHUP'); // during start-up: applied after it
      await sleep(100);
      return daemon;
    });
    await sleep(200);
    process.kill(process.pid, 'SIGHUP');
    process.kill(process.pid, 'SIGHUP');
    await sleep(300);
    process.kill(process.pid, 'SIGTERM');
    await run;
    expect(calls).to.deep.equal(['start', 'reload 1', 'reload 2', 'reload 3', 'stop']);
    expect(signals()).to.deep.equal(before);
  });

  it('passes a failed start on as a StartError, with the signals let go', async () => {
    const before = signals();
    const err = await runDaemon(log, () => Promise.reject(new Error('no such device'))).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StartError);
    expect((err as Error).message).to.equal('no such device');
    expect(signals()).to.deep.equal(before);
  });
});
