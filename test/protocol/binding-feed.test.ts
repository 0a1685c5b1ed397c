// BindingFeed (what a TEP runs) against a real dstm server process.
import { expect } from 'chai';
import { getEventListeners, once } from 'node:events';
import net from 'node:net';
import { type FeedBinding } from '../../src/protocol/binding-feed';
import { DstmClient, DstmRefusal } from '../../src/protocol/client';
import {
  freePort,
  loopbackAddresses,
  removeDir,
  sleep,
  startServer,
  tempDir,
  type ServerProcess,
} from '../server/helpers';
import { feedOn, nextEvent, nodeOn } from '../support/loopback-clients';

describe('binding feed', function () {
  this.timeout(60000);
  let lo: ReturnType<typeof loopbackAddresses>;
  let dir: string;
  let server: ServerProcess | undefined;
  const open: { close?(): Promise<void>; stop?(): Promise<void> }[] = [];
  before(() => {
    lo = loopbackAddresses(3);
  });
  after(() => lo.remove());
  beforeEach(() => {
    dir = tempDir('feed');
  });
  afterEach(async () => {
    for (const o of open.splice(0)) await (o.stop ?? o.close)!.call(o);
    await server?.stop('SIGKILL');
    server = undefined;
    removeDir(dir);
  });

  const node = async (i: number, port: number): Promise<DstmClient> => {
    const c = await nodeOn(port, lo.addresses[i]);
    open.push(c);
    return c;
  };

  it('starts from the whole state, and a long poll wakes at once on a change', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.93.0.0/24']);
    const a = await node(0, server.port);
    const la = await a.request();
    const feed = feedOn([server.port], { waitMs: 20000 });
    open.push(feed);
    const binds: FeedBinding[] = [];
    feed.on('bind', (b: FeedBinding) => binds.push(b));
    await feed.start();
    expect(binds.map((b) => [b.ip6, b.ip4])).to.deep.equal([[lo.addresses[0], la.address]]);
    expect(feed.byIPv4.get(la.address)!.ends).to.equal(la.ends);
    // The feed is now parked in a 20 s long poll; a new binding must arrive well before that.
    await sleep(300);
    const b = await node(1, server.port);
    const t0 = performance.now();
    const bound = nextEvent<FeedBinding>(feed, 'bind');
    const lb = await b.request();
    expect(await bound).to.include({ ip6: lo.addresses[1], ip4: lb.address });
    expect(performance.now() - t0).to.be.lessThan(1000);
    const unbound = nextEvent<FeedBinding>(feed, 'unbind');
    await a.release();
    expect(await unbound).to.include({ ip6: lo.addresses[0], ip4: la.address });
    expect(feed.byIPv6.has(lo.addresses[0])).to.equal(false);
    expect([...feed.byIPv4.keys()]).to.deep.equal([lb.address]);
  });

  it('resyncs when the server comes back with a rebuilt store (new epoch)', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.94.0.0/24']);
    const port = server.port;
    const a = await node(0, port);
    const la = await a.request();
    const feed = feedOn([port], { waitMs: 2000, retryMs: 100, retryMaxMs: 300 });
    open.push(feed);
    feed.on('error', () => undefined);
    await feed.start();
    const epoch = feed.position.epoch;
    const unbinds: FeedBinding[] = [];
    feed.on('unbind', (b: FeedBinding) => unbinds.push(b));
    const resynced = nextEvent<{ epoch: bigint; size: number }>(feed, 'resync');
    await server.stop('SIGKILL');
    removeDir(dir);
    server = await startServer(['--state-dir', dir, '--pool', '10.94.0.0/24'], { port });
    const info = await resynced;
    expect(info.epoch).to.not.equal(epoch);
    expect(unbinds.map((b) => [b.ip6, b.ip4])).to.deep.equal([[lo.addresses[0], la.address]]);
    expect(feed.byIPv4.size).to.equal(0);
    // And it follows the new store from there.
    const c = await node(2, port);
    const bound = nextEvent<FeedBinding>(feed, 'bind');
    const lc = await c.request();
    expect(await bound).to.include({ ip6: lo.addresses[2], ip4: lc.address });
  });

  it('rides out a restart of the server on the same store without starting over', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.95.0.0/24']);
    const port = server.port;
    const a = await node(0, port);
    await a.request();
    const feed = feedOn([port], { waitMs: 2000, retryMs: 100, retryMaxMs: 300 });
    open.push(feed);
    feed.on('error', () => undefined);
    await feed.start();
    const { epoch, since } = feed.position;
    let resyncs = 0;
    feed.on('resync', () => resyncs++);
    await server.stop('SIGKILL');
    server = await startServer(['--state-dir', dir, '--pool', '10.95.0.0/24'], { port });
    const b = await node(1, port);
    const bound = nextEvent<FeedBinding>(feed, 'bind');
    const lb = await b.request();
    expect(await bound).to.include({ ip6: lo.addresses[1], ip4: lb.address });
    expect(resyncs).to.equal(0);
    expect(feed.position.epoch).to.equal(epoch);
    expect(feed.position.since > since).to.equal(true);
    expect(feed.byIPv4.size).to.equal(2);
  });

  it('hands a complete state whole to onSnapshot, awaited, then follows with events', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.96.0.0/24']);
    const a = await node(0, server.port);
    const la = await a.request();
    const snapshots: string[][] = [];
    const binds: string[] = [];
    let applying = false;
    const feed = feedOn([server.port], {
      waitMs: 20000,
      onSnapshot: async (all) => {
        applying = true;
        snapshots.push([...all].map((b) => `${b.ip4}=${b.ip6}`));
        await sleep(200); // a TEP staging in chunks: the feed waits for it
        applying = false;
      },
    });
    open.push(feed);
    feed.on('bind', (b: FeedBinding) => binds.push(`${b.ip4}=${b.ip6}${applying ? ' during the snapshot' : ''}`));
    await feed.start();
    expect(applying).to.equal(false);
    expect(snapshots).to.deep.equal([[`${la.address}=${lo.addresses[0]}`]]);
    expect(binds).to.deep.equal([]);
    const bound = nextEvent<FeedBinding>(feed, 'bind');
    const lb = await (await node(1, server.port)).request();
    await bound;
    expect(binds).to.deep.equal([`${lb.address}=${lo.addresses[1]}`]);
    expect(feed.byIPv4.size).to.equal(2);
  });

  it('loads an empty state at once (a first call is not held)', async () => {
    server = await startServer(['--state-dir', dir]);
    const feed = feedOn([server.port], { waitMs: 20000 });
    open.push(feed);
    const t0 = performance.now();
    await feed.start();
    expect(performance.now() - t0).to.be.lessThan(2000);
    expect(feed.byIPv4.size).to.equal(0);
  });

  it('keeps no abort listener per retry (no leak while the server is away)', async () => {
    const feed = feedOn([await freePort()], { retryMs: 1, retryMaxMs: 1 });
    open.push(feed);
    let errors = 0;
    feed.on('error', () => errors++);
    void feed.start();
    while (errors < 50) await sleep(5);
    // at most the sleep in progress holds one; the old code kept one per retry
    expect(getEventListeners(feed['abort'].signal, 'abort').length).to.be.at.most(1);
  });

  it('is refused to a caller outside tep_allow', async () => {
    server = await startServer(['--state-dir', dir]);
    const feed = feedOn([server.port], { local: lo.addresses[0], retryMs: 5000 });
    open.push(feed);
    const err = nextEvent<unknown>(feed, 'error');
    void feed.start();
    const e = await err;
    expect(e).to.be.instanceOf(DstmRefusal);
    expect((e as DstmRefusal).status).to.equal('not_allowed');
  });

  it('stop() while its connect is pending closes the connection that completes after it', async () => {
    // a TCP listener that never answers: the feed's connect completes (after stop()), its call is never answered
    const conns: net.Socket[] = [];
    const srv = net.createServer((s) => conns.push(s.on('error', () => undefined)));
    srv.listen(0, '::1');
    await once(srv, 'listening');
    try {
      const feed = feedOn([(srv.address() as net.AddressInfo).port]);
      void feed.start();
      await feed.stop(); // the connect was issued but has not completed yet
      await sleep(300);
      expect(conns).to.have.length(1);
      expect(conns[0].closed || conns[0].readableEnded, 'the feed left its connection open').to.equal(true);
    } finally {
      for (const s of conns) s.destroy();
      srv.close();
    }
  });
});
