// LeaseKeeper and `dstm request --hold` against a real dstm server process.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { DstmClient, type Lease } from '../../src/protocol/client';
import { parseIPv4 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { Dti, dtiHooks } from '../../src/node/dti-node';
import { fakeDti } from '../support/fake-devices';
import { LeaseKeeper, type DownReason } from '../../src/node/lease-keeper';
import { FailoverClient } from '../../src/protocol/failover';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { SqliteStore } from '../../src/server/sqlite-store';
import { loopbackAddresses, removeDir, RUN, sleep, startServer, tempDir, type ServerProcess } from '../server/helpers';
import { nextEvent, nodeOn } from '../support/loopback-clients';

async function bindings(dir: string): Promise<number> {
  const s = new SqliteStore(dir, { readonly: true });
  try {
    return (await s.counts()).active;
  } finally {
    await s.close();
  }
}

/** `dstm server` on `dir` leasing `pool` for `lease` seconds (`--min-lease 1`: short tests). */
function serve(dir: string, pool: string, lease: number, more: string[] = [], port?: number): Promise<ServerProcess> {
  const args = ['--state-dir', dir, '--pool', pool, '--lease', String(lease), '--min-lease', '1', ...more];
  return startServer(args, { port });
}

describe('lease keeper', function () {
  this.timeout(60000);
  let lo: ReturnType<typeof loopbackAddresses>;
  let dir: string;
  let server: ServerProcess | undefined;
  let client: DstmClient | undefined;
  let keeper: LeaseKeeper | undefined;
  before(() => {
    lo = loopbackAddresses(4);
  });
  after(() => lo.remove());
  beforeEach(() => {
    dir = tempDir('keeper');
  });
  afterEach(async () => {
    await keeper?.stop();
    keeper = undefined;
    await client?.close();
    client = undefined;
    await server?.stop('SIGKILL');
    server = undefined;
    removeDir(dir);
  });

  it('renews before expiry, rides out a server restart, releases on stop', async () => {
    server = await serve(dir, '10.90.0.0/24', 6);
    const port = server.port;
    client = await nodeOn(port, lo.addresses[0], { timeoutMs: 1000 });
    const events: string[] = [];
    const hooks: [string, string, DownReason?][] = [];
    keeper = new LeaseKeeper(client, {
      retryMs: 200,
      hooks: {
        up: (l) => void hooks.push(['up', l.address]),
        down: (l, why) => void hooks.push(['down', l.address, why]),
      },
    });
    for (const e of ['lease', 'renewed', 'expired', 'released'])
      keeper.on(e, (l: Lease) => events.push(`${e} ${l.address}`));
    keeper.on('error', () => undefined);
    const first = await keeper.start();
    expect(hooks).to.deep.equal([['up', first.address]]);
    await nextEvent(keeper, 'renewed');
    // The server dies and comes back on the same state: the keeper's retries land on the new one. (A call to the
    // dead server fails at once on ICMP port unreachable, so the lease must outlast the restart itself.)
    await server.stop('SIGKILL');
    await sleep(800);
    server = await serve(dir, '10.90.0.0/24', 6, [], port);
    await nextEvent(keeper, 'renewed');
    expect(events.filter((e) => !e.startsWith('renewed'))).to.deep.equal([`lease ${first.address}`]);
    expect(keeper.current!.address).to.equal(first.address);
    await keeper.stop();
    expect(events[events.length - 1]).to.equal(`released ${first.address}`);
    expect(hooks[hooks.length - 1]).to.deep.equal(['down', first.address, 'released']);
    expect(await bindings(dir)).to.equal(0);
  });

  it('a RELEASE at stop that fails is reported once as unreleased, not as an error the keeper retries; one the server answers "no binding" is not', async () => {
    server = await serve(dir, '10.90.0.0/24', 60);
    const port = server.port;
    client = await nodeOn(port, lo.addresses[0], { timeoutMs: 300 });
    const events: string[] = [];
    const make = (): LeaseKeeper => {
      const k = new LeaseKeeper(client!, { retryMs: 200 });
      k.on('error', () => events.push('error'));
      k.on('unreleased', (l: Lease, err: Error) => events.push(`unreleased ${l.address} ${err.message}`));
      k.on('released', (l: Lease) => events.push(`released ${l.address}`));
      return k;
    };
    keeper = make();
    const lease = await keeper.start();
    await server.stop('SIGKILL');
    server = undefined;
    await keeper.stop();
    expect(events).to.have.length(2);
    expect(events[0]).to.match(new RegExp(`^unreleased ${lease.address.replace(/\./g, '\\.')} cannot reach`));
    expect(events[1], 'the node has given the address up').to.equal(`released ${lease.address}`);
    // The binding is gone from the server (here: a new one on an empty store), which is what the RELEASE was for.
    events.length = 0;
    removeDir(dir);
    dir = tempDir('keeper');
    server = await serve(dir, '10.90.0.0/24', 60, [], port);
    keeper = make();
    const second = await keeper.start();
    await server.stop('SIGKILL');
    removeDir(dir);
    dir = tempDir('keeper');
    server = await serve(dir, '10.90.0.0/24', 60, [], port);
    await keeper.stop();
    expect(events).to.deep.equal([`released ${second.address}`]);
  });

  it('drops the address when the lease runs out unrenewed, then leases again when the server is back', async () => {
    server = await serve(dir, '10.91.0.0/24', 2);
    const port = server.port;
    client = await nodeOn(port, lo.addresses[1], { timeoutMs: 300 });
    const downs: DownReason[] = [];
    keeper = new LeaseKeeper(client, {
      retryMs: 100,
      retryMaxMs: 300,
      hooks: { down: (_l, why) => void downs.push(why) },
    });
    keeper.on('error', () => undefined);
    const first = await keeper.start();
    const t0 = performance.now();
    await server.stop('SIGKILL');
    const expired = await nextEvent<Lease>(keeper, 'expired');
    expect(expired.address).to.equal(first.address);
    expect(performance.now() - t0).to.be.within(1000, 2600);
    expect(downs).to.deep.equal(['expired']);
    expect(keeper.current).to.equal(undefined);
    server = await serve(dir, '10.91.0.0/24', 2, [], port);
    const again = await nextEvent<Lease>(keeper, 'lease');
    expect(again.address).to.match(/^10\.91\.0\./);
    await keeper.stop();
  });

  it('renews through the next server when its server dies; a new TEP for the same address moves the tunnel only', async () => {
    server = await serve(dir, '10.89.0.0/24', 2, ['--tep', '2001:db8::a,10.89.0.254']);
    const dirB = tempDir('keeper-b');
    const b = await serve(dirB, '10.89.0.0/24', 2, ['--tep', '2001:db8::b,10.89.0.253']);
    try {
      const servers = [server, b].map((s) => ({ host: '::1', port: s.port }));
      const failover = new FailoverClient({
        servers,
        program: DEFAULT_PROGRAM,
        local: lo.addresses[3],
        timeoutMs: 500,
      });
      const hooks: string[] = [];
      keeper = new LeaseKeeper(failover, {
        retryMs: 100,
        hooks: {
          up: (l) => void hooks.push(`up ${l.address} ${l.tep6}`),
          down: (l, why) => void hooks.push(`down ${l.address} ${why}`),
        },
      });
      const events: string[] = [];
      for (const e of ['lease', 'renewed', 'expired']) keeper.on(e, (l: Lease) => events.push(`${e} ${l.tep6}`));
      keeper.on('error', () => undefined);
      const first = await keeper.start();
      await server.stop('SIGKILL');
      while (keeper.current?.tep6 !== '2001:db8::b') await nextEvent(keeper, 'renewed');
      expect(keeper.current.address).to.equal(first.address);
      expect(failover.server).to.equal(`[::1]:${b.port}/udp`);
      expect(hooks).to.deep.equal([`up ${first.address} 2001:db8::a`, `up ${first.address} 2001:db8::b`]);
      expect(events.filter((e) => !e.startsWith('renewed'))).to.deep.equal(['lease 2001:db8::a']);
      await keeper.stop();
      keeper = undefined;
      await failover.close();
    } finally {
      await b.stop('SIGKILL');
      removeDir(dirB);
    }
  });

  it('renews from the address the lease was made for, on every server and reconnect, though the kernel now prefers another', async () => {
    const tepA = '2001:db8::a,10.88.0.254';
    server = await serve(dir, '10.88.0.0/24', 3, ['--tep', tepA]);
    const portA = server.port;
    const dirB = tempDir('keeper-b');
    let b: ServerProcess | undefined = await serve(dirB, '10.88.0.0/24', 3, ['--tep', '2001:db8::b,10.88.0.253']);
    let failover: FailoverClient | undefined;
    try {
      // the source the kernel would choose now: lo[0] at first, later lo[1] (T1 deprecated, T2 preferred)
      let preferred = lo.addresses[0];
      failover = new FailoverClient({
        servers: [portA, b.port].map((port) => ({ host: '::1', port })),
        program: DEFAULT_PROGRAM,
        timeoutMs: 500,
        sourceFor: () => Promise.resolve(preferred),
      });
      keeper = new LeaseKeeper(failover, { retryMs: 100 });
      const events: string[] = [];
      for (const e of ['lease', 'expired']) keeper.on(e, (l: Lease) => events.push(`${e} ${l.address}`));
      keeper.on('error', () => undefined);
      const first = await keeper.start();
      expect(first.local).to.equal(lo.addresses[0]);
      // B holds the same binding, as a shared store would
      const n = await nodeOn(b.port, lo.addresses[0]);
      expect((await n.request(parseIPv4(first.address))).address).to.equal(first.address);
      await n.close();
      preferred = lo.addresses[1];
      const renewedVia = async (tep6: string): Promise<Lease> => {
        const t0 = performance.now();
        while (keeper!.current?.tep6 !== tep6 && performance.now() - t0 < 8000) await sleep(50);
        return keeper!.current!;
      };
      // A dies: the keeper goes on to B, a connection made afresh
      await server.stop('SIGKILL');
      expect(await renewedVia('2001:db8::b')).to.include({ address: first.address, local: lo.addresses[0] });
      // A comes back on its state and B dies: A is connected to again
      server = await serve(dir, '10.88.0.0/24', 3, ['--tep', tepA], portA);
      await b.stop('SIGKILL');
      b = undefined;
      expect(await renewedVia('2001:db8::a')).to.include({ address: first.address, local: lo.addresses[0] });
      expect(events).to.deep.equal([`lease ${first.address}`]);
      await keeper.stop();
      keeper = undefined;
      expect(await bindings(dir)).to.equal(0); // the RELEASE came from the lease's address too
    } finally {
      await failover?.close();
      await b?.stop('SIGKILL');
      removeDir(dirB);
    }
  });

  it("calls from the kernel's choice when the address of the lease is gone from the host", async () => {
    const gone = loopbackAddresses(1);
    server = await serve(dir, '10.87.0.0/24', 30);
    let preferred = gone.addresses[0];
    const failover = new FailoverClient({
      servers: [{ host: '::1', port: server.port }],
      program: DEFAULT_PROGRAM,
      timeoutMs: 500,
      sourceFor: () => Promise.resolve(preferred),
    });
    try {
      const first = await failover.request();
      expect(first.local).to.equal(gone.addresses[0]);
      gone.remove();
      const port = server.port;
      await server.stop('SIGKILL');
      await failover.request().catch(() => undefined); // refused: the connection is dropped
      server = await serve(dir, '10.87.0.0/24', 30, [], port);
      preferred = lo.addresses[2];
      expect((await failover.request()).local).to.equal(lo.addresses[2]);
    } finally {
      gone.remove();
      await failover.close();
    }
  });

  it('after a suspend (the wall clock ran on, the monotonic one did not) renews or drops the lease at once', async () => {
    server = await serve(dir, '10.86.0.0/24', 3600);
    client = await nodeOn(server.port, lo.addresses[0], { timeoutMs: 1000 });
    // real time plus what a suspend would add: to the wall clock all of it, to the monotonic one nothing
    let monoSkew = 0;
    let wallSkew = 0;
    const clock = { monotonic: () => performance.now() + monoSkew, wall: () => Date.now() + wallSkew };
    const downs: DownReason[] = [];
    keeper = new LeaseKeeper(client, { clock, sliceMs: 20, hooks: { down: (_l, why) => void downs.push(why) } });
    keeper.on('error', () => undefined);
    const first = await keeper.start();
    expect(first).to.include({ keep: 3600, extend: 1800 });
    const within = <T>(p: Promise<T>, ms: number): Promise<T | 'late'> =>
      Promise.race([p, sleep(ms).then(() => 'late' as const)]);
    // 40 minutes suspended, 1 s of it seen by the monotonic clock: past extend, before keep
    let renewed = nextEvent<Lease>(keeper, 'renewed');
    monoSkew += 1000;
    wallSkew += 40 * 60_000;
    expect(await within(renewed, 1000)).to.include({ address: first.address });
    // 3 hours suspended, 60 s seen by the monotonic clock: the lease has ended
    const expired = nextEvent<Lease>(keeper, 'expired');
    renewed = nextEvent<Lease>(keeper, 'renewed');
    monoSkew += 60_000;
    wallSkew += 3 * 3600_000;
    expect(await within(expired, 1000)).to.include({ address: first.address });
    expect(downs).to.deep.equal(['expired']);
    // a wall clock set back changes nothing: the monotonic clock still counts
    await nextEvent(keeper, 'lease');
    wallSkew -= 24 * 3600_000;
    monoSkew += 1801_000;
    expect(await within(renewed, 1000)).to.not.equal('late');
  });

  it("sets the DTI up again, with backoff, when moving it to a renewal's new TEP failed", async () => {
    server = await serve(dir, '10.85.0.0/24', 4, ['--tep', '2001:db8::a,10.85.0.254']);
    const dirB = tempDir('keeper-b');
    const b = await serve(dirB, '10.85.0.0/24', 4, ['--tep', '2001:db8::b,10.85.0.253']);
    const f = fakeDti();
    let failNext = false;
    const dti = new Dti({
      name: 'dti9',
      routes: ['default'],
      pathMtu: 1500,
      log: createLogger({ level: 'error' }),
      devices: f.devices,
      system: {
        // the first `ip` after failNext fails, as `ip` can (a netlink error, the device gone for a moment)
        ip: (cmds) => {
          if (!failNext) return f.system.ip(cmds);
          failNext = false;
          return Promise.reject(new Error('RTNETLINK answers: injected failure'));
        },
        sysctl: f.system.sysctl,
      },
    });
    const failover = new FailoverClient({
      servers: [server, b].map((s) => ({ host: '::1', port: s.port })),
      program: DEFAULT_PROGRAM,
      local: lo.addresses[1],
      timeoutMs: 500,
    });
    try {
      await dti.start();
      keeper = new LeaseKeeper(failover, { retryMs: 100, hooks: dtiHooks(dti) });
      const errors: string[] = [];
      keeper.on('error', (e: Error) => errors.push(e.message));
      const first = await keeper.start();
      expect(dti.current?.peer).to.equal(parseIPv4('10.85.0.254'));
      // B holds the same binding, as a shared store would
      const n = await nodeOn(b.port, lo.addresses[1]);
      await n.request(parseIPv4(first.address));
      await n.close();
      failNext = true;
      await server.stop('SIGKILL');
      while (!errors.some((e) => e.includes('injected'))) await sleep(20);
      // the move took the address down and failed to put it back: the keeper does it again, well before the next
      // renewal (2 s)
      const t0 = performance.now();
      while (dti.current === undefined && performance.now() - t0 < 1500) await sleep(20);
      expect(dti.current?.peer).to.equal(parseIPv4('10.85.0.253'));
      expect(dti.current?.address).to.equal(parseIPv4(first.address));
      expect(f.commands.filter((c) => c.startsWith('-4 addr add'))).to.have.length(2);
      await keeper.stop();
      keeper = undefined;
    } finally {
      dti.close();
      await failover.close();
      await b.stop('SIGKILL');
      removeDir(dirB);
    }
  });

  it('dstm request --hold prints each event as JSON and releases on SIGTERM', async () => {
    server = await serve(dir, '10.92.0.0/24', 2, ['--tep', '2001:db8::1,10.92.0.254']);
    const p = spawn(
      process.execPath,
      [RUN, 'request', '--hold', '--json', '--server', `[::1]:${server.port}`, '--local', lo.addresses[2]],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines: Record<string, unknown>[] = [];
    const rl = createInterface({ input: p.stdout! });
    const seen = (event: string): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (lines.some((l) => l.event === event)) resolve();
          else rl.once('line', check);
        };
        check();
      });
    rl.on('line', (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
    await seen('renewed');
    const lease = lines[0];
    expect(lease).to.include({
      event: 'lease',
      mask: '255.255.255.255',
      ipv6: lo.addresses[2],
      tep6: '2001:db8::1',
      tep4: '10.92.0.254',
      keep: 2,
      extend: 1,
    });
    expect(lease).to.have.keys('event', 'ipv4', 'mask', 'ipv6', 'tep6', 'tep4', 'starts', 'ends', 'extend', 'keep');
    expect(await bindings(dir)).to.equal(1);
    p.kill('SIGTERM');
    const [code] = (await once(p, 'exit')) as [number];
    expect(code).to.equal(0);
    expect(lines[lines.length - 1]).to.include({ event: 'released', ipv4: lease.ipv4 });
    expect(await bindings(dir)).to.equal(0);
  });

  it('finding 9: a 1-second lease (extend 0 by the old rounding) renews about once a second, not in a tight loop', async () => {
    server = await serve(dir, '10.94.0.0/24', 1);
    client = await nodeOn(server.port, lo.addresses[3], { timeoutMs: 1000 });
    keeper = new LeaseKeeper(client, { retryMs: 200 });
    keeper.on('error', () => undefined);
    // every REQUEST the keeper makes ends in a renewal, or, for a lease no longer than its extend, a new lease
    let requests = 0;
    keeper.on('renewed', () => requests++);
    keeper.on('lease', () => requests++);
    const first = await keeper.start();
    expect(first.extend).to.be.at.least(1);
    const before = requests;
    await sleep(3000);
    // the old keeper, told extend 0, renewed thousands of times in this time
    expect(requests - before).to.be.within(1, 4);
  });
});

describe('lease keeper against a fake server', () => {
  const lease: Lease = {
    address: '10.95.0.1',
    mask: '255.255.255.255',
    local: '2001:db8::1',
    tep6: '2001:db8::a',
    tep4: '10.95.0.254',
    starts: 0,
    ends: 2,
    extend: 10,
    keep: 2,
  };

  it('on stop takes the address down before the RELEASE, so it is never used once the server may lease it again', async () => {
    const steps: string[] = [];
    const server = {
      server: 'fake',
      request: () => Promise.resolve({ ...lease, extend: 1800, keep: 3600 }),
      release: () => {
        steps.push('release');
        return Promise.resolve(lease);
      },
    };
    const keeper = new LeaseKeeper(server, { hooks: { down: (_l, why) => void steps.push(`down ${why}`) } });
    await keeper.start();
    await keeper.stop();
    expect(steps).to.deep.equal(['down released', 'release']);
  });

  it('whose lease is of keep 0: drops it at once and asks again about once a second, not in a loop', async () => {
    let requests = 0;
    const server = {
      server: 'fake',
      request: () => {
        requests++;
        // answered on a later turn of the event loop, as over a network
        return new Promise<Lease>((resolve) => setImmediate(() => resolve({ ...lease, extend: 0, keep: 0 })));
      },
      release: () => Promise.resolve(lease),
    };
    const keeper = new LeaseKeeper(server);
    try {
      await keeper.start();
      await sleep(2500);
      expect(requests).to.be.within(2, 4);
    } finally {
      await keeper.stop();
    }
  });

  it('whose extend is not before keep: renews at half the lease instead of using the address past its end', async () => {
    // keep 2 s, extend 10 s: renewing at extend would use the address 8 s after the lease ended
    const calls: number[] = [];
    const t0 = performance.now();
    const server = {
      server: 'fake',
      request: () => {
        calls.push(performance.now() - t0);
        return Promise.resolve(lease);
      },
      release: () => Promise.resolve(lease),
    };
    const keeper = new LeaseKeeper(server, { sliceMs: 50 });
    const events: string[] = [];
    for (const e of ['renewed', 'expired']) keeper.on(e, () => events.push(e));
    try {
      await keeper.start();
      await Promise.race([nextEvent(keeper, 'renewed'), nextEvent(keeper, 'expired'), sleep(3000)]);
      expect(events).to.deep.equal(['renewed']);
      expect(calls[1]).to.be.within(900, 1900);
    } finally {
      await keeper.stop();
    }
  });

  it('drops the address when the lease ends with a renewal still under way (failover through silent servers), and ignores its late answer', async () => {
    // keep 2 s: the renewal at 1 s is answered only at 4 s, as after trying servers that do not answer
    const t0 = performance.now();
    const steps: string[] = [];
    let requests = 0;
    const server = {
      server: 'fake',
      request: () => {
        const n = ++requests;
        steps.push(`request ${n}`);
        if (n !== 2) return Promise.resolve(lease);
        return new Promise<Lease>((resolve) =>
          setTimeout(() => {
            steps.push('late answer');
            resolve(lease);
          }, 3000),
        );
      },
      release: () => {
        steps.push('release');
        return Promise.resolve(lease);
      },
    };
    const keeper = new LeaseKeeper(server, {
      sliceMs: 50,
      hooks: { down: (_l, why) => void steps.push(`down ${why}`) },
    });
    const events: string[] = [];
    for (const e of ['lease', 'renewed', 'expired']) keeper.on(e, () => events.push(e));
    try {
      await keeper.start();
      await Promise.race([nextEvent(keeper, 'expired'), sleep(3500)]);
      expect(events).to.deep.equal(['lease', 'expired']);
      expect(performance.now() - t0).to.be.within(1900, 2900);
      await Promise.race([nextEvent(keeper, 'lease'), sleep(4000)]);
      // the RELEASE waits for the renewal's answer (one call at a time), which changes nothing
      expect(steps).to.deep.equal(['request 1', 'request 2', 'down expired', 'late answer', 'release', 'request 3']);
      expect(events).to.deep.equal(['lease', 'expired', 'lease']);
    } finally {
      await keeper.stop();
    }
  });
});
