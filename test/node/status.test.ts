// `dstm status` end to end on the reading side: a real DSTM server leases to a real LeaseKeeper, the node's
// status is served on a real control socket (as `dstm request --hold` will), and the real CLI reads it.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DstmClient } from '../../src/protocol/client';
import { LeaseKeeper } from '../../src/node/lease-keeper';
import { Counters, Drop, Event } from '../../src/dti/counters';
import { parseIPv4, parseIPv6 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { formatNodeStatus, nodeStatus, type NodeParts, type NodeStatus } from '../../src/node/status';
import { DstmServer, loadServerConfig } from '../../src/server/daemon';
import { serveControl } from '../../src/lib/control';
import { dstmArgv } from '../support/dstm-procs';
import { freePort } from '../server/helpers';

function dstm(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, ...rest] = dstmArgv(...args);
  const p = spawn(cmd, rest, { env: process.env });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => p.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('dstm status', function () {
  this.timeout(60_000);
  let dir: string;
  let server: DstmServer;
  let client: DstmClient;
  let keeper: LeaseKeeper;
  let suspended = 0;
  let control: Server | undefined;
  let port: number;

  before(async () => {
    port = await freePort();
    dir = mkdtempSync(join(tmpdir(), 'dstm-status-'));
    const file = join(dir, 'dstm.json');
    writeFileSync(file, JSON.stringify({ server: { rpcbind: 'off', lease: 600 } }));
    const { config } = loadServerConfig({
      config: file,
      listen: [`[::1]:${port}`],
      pool: ['198.51.100.0/29'],
      tep: '2001:db8:1::1,192.0.2.1',
      'state-dir': join(dir, 'state'),
    });
    server = await DstmServer.start(config, createLogger({ level: 'error' }));
    client = await DstmClient.connect({ host: '::1', port, program: config.program });
    // the wall clock a test may move forward (a suspend: the monotonic clock stood still meanwhile)
    keeper = new LeaseKeeper(client, {
      clock: { monotonic: () => performance.now(), wall: () => Date.now() + suspended },
    });
  });

  after(async () => {
    control?.close();
    await keeper.stop();
    await client.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The DTI side: its real counters and the lease as it is on the device (a DTI's public state). */
  function dtiState(counters: Counters, on: boolean): NonNullable<NodeParts['dti']> {
    const l = keeper.current!;
    const current = on
      ? { address: parseIPv4(l.address), peer: parseIPv4(l.tep4), tep: parseIPv6(l.tep6), local: parseIPv6(l.local) }
      : undefined;
    return { name: 'dti0', current, counters, tunnel: { tunnelMtu: 1460 } };
  }

  it('reports no lease before the keeper has one', () => {
    const s = nodeStatus({ server: `[::1]:${port}`, keeper });
    expect(s).to.deep.equal({ server: `[::1]:${port}`, state: 'no_lease', lease: null, dti: null });
    expect(formatNodeStatus(s).join('\n'))
      .to.match(/lease +none/)
      .and.match(/interface +none/);
  });

  it('counts the time remaining on the node clock, from the request, time suspended included', async () => {
    const lease = await keeper.start();
    expect(lease.keep).to.be.within(599, 600);
    expect(nodeStatus({ server: '', keeper }).lease!.remaining).to.be.within(lease.keep - 1, lease.keep);
    suspended = 100_000;
    const s = nodeStatus({ server: `[::1]:${port}`, keeper });
    expect(s.state).to.equal('leased');
    expect(s.lease!.remaining).to.be.within(lease.keep - 101, lease.keep - 100);
    expect(s.lease!.renew_in).to.be.within(Math.max(0, lease.extend - 101), Math.max(0, lease.extend - 100));
    suspended = 10_000_000;
    expect(nodeStatus({ server: '', keeper }).lease!.remaining).to.equal(0);
    suspended = 0;
  });

  it('prints the state read from the control socket, human and --json', async () => {
    const counters = new Counters();
    counters.count(Event.encapsulated, 3);
    counters.count(Event.bytes_encapsulated, 252);
    counters.count(Event.decapsulated, 2);
    counters.count(Event.bytes_decapsulated, 168);
    counters.drop(Drop.spoofed_source);
    const path = join(dir, 'node.sock');
    control = await serveControl(path, () =>
      nodeStatus({ server: `[::1]:${port}`, keeper, dti: dtiState(counters, true) }),
    );
    const lease = keeper.current!;

    const json = await dstm('status', '--control', path, '--json');
    expect(json.code, json.stderr).to.equal(0);
    const s = JSON.parse(json.stdout) as NodeStatus;
    expect(s.state).to.equal('leased');
    expect(s.lease).to.include({ ipv4: lease.address, tep6: '2001:db8:1::1', tep4: '192.0.2.1', ipv6: lease.local });
    expect(s.lease!.ipv4).to.match(/^198\.51\.100\.[1-6]$/);
    expect(s.lease!.remaining).to.be.within(590, 600);
    expect(s.dti).to.deep.include({
      device: 'dti0',
      mtu: 1460,
      address: lease.address,
      peer: '192.0.2.1',
      tep: '2001:db8:1::1',
      source: lease.local,
    });
    expect(s.dti!.packets).to.deep.equal({
      encapsulated: 3,
      decapsulated: 2,
      bytes_encapsulated: 252,
      bytes_decapsulated: 168,
      dropped: 1,
    });
    expect(s.dti!.drops.spoofed_source).to.equal(1);

    const human = await dstm('status', '--control', path);
    expect(human.code, human.stderr).to.equal(0);
    expect(human.stdout).to.include(`lease       ${lease.address} (mask ${lease.mask}) for ${lease.local}`);
    expect(human.stdout).to.include(`interface   dti0 mtu 1460 inet ${lease.address} peer 192.0.2.1`);
    expect(human.stdout).to.include('sent        3 packets, 252 bytes');
    expect(human.stdout).to.match(/spoofed_source +1/);
  });

  it('exits 7 (no reply) naming the socket when no node answers', async () => {
    const r = await dstm('status', '--control', join(dir, 'absent.sock'));
    expect(r.code).to.equal(7);
    // oclif wraps the message at the terminal width, continuing lines with " ›"
    expect(r.stderr.replace(/\s*\n\s*›\s*/g, ' ')).to.include(
      `cannot read the node's statistics from ${join(dir, 'absent.sock')}: no node is running there`,
    );
  });
});
