// Several servers as one: FailoverClient (request, release, leases), the CLI's --server list, and the TEP's
// binding feed moving to the next server. Real `dstm server` processes on loopback, each with a state directory of
// its own (the shared store is PostgreSQL's job, issue 9): a binding made on both stands in for a shared one.
import { expect } from 'chai';

import { FailoverClient, NoServerAnswered } from '../../src/protocol/failover';
import { type FeedBinding } from '../../src/protocol/binding-feed';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { parseIPv4 } from '../../src/lib/addr';
import { formatEndpoint } from '../../src/lib/endpoint';
import { parseWithOverrides } from '../../src/config/schema';
import { clientFields } from '../../src/config/client-schema';
import { tepFields } from '../../src/config/tep-schema';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  freePort,
  freePorts,
  loopbackAddresses,
  removeDir,
  runDstm,
  startServer,
  tempDir,
  type ServerProcess,
} from '../server/helpers';
import { feedOn, nextEvent, nodeOn } from '../support/loopback-clients';

describe('failover across servers', function () {
  this.timeout(60000);
  let lo: ReturnType<typeof loopbackAddresses>;
  const dirs: string[] = [];
  const servers: ServerProcess[] = [];
  const open: { close?(): Promise<void>; stop?(): Promise<void> }[] = [];
  before(() => {
    lo = loopbackAddresses(4);
  });
  after(() => lo.remove());
  afterEach(async () => {
    for (const o of open.splice(0)) await (o.stop ?? o.close)!.call(o);
    for (const s of servers.splice(0)) await s.stop('SIGKILL');
    for (const d of dirs.splice(0)) removeDir(d);
  });

  /** A server with a store of its own; `tep` tells the servers apart in their replies. */
  const serve = async (pool: string, tep: string): Promise<ServerProcess> => {
    const dir = tempDir('failover');
    dirs.push(dir);
    const s = await startServer(['--state-dir', dir, '--pool', pool, '--tep', tep]);
    servers.push(s);
    return s;
  };
  const at = (port: number): { host: string; port: number } => ({ host: '::1', port });

  it('goes on to the next server at once when one refuses the connection, and stays with the one that answered', async () => {
    const b = await serve('10.96.0.0/24', '2001:db8::b,10.96.0.254');
    const dead = await freePort();
    const client = new FailoverClient({
      servers: [at(dead), at(b.port)],
      program: DEFAULT_PROGRAM,
      local: lo.addresses[0],
      timeoutMs: 5000,
    });
    open.push(client);
    const t0 = performance.now();
    const l = await client.request();
    // ICMP port unreachable ends the call to the dead server: far less than its 5 s timeout
    expect(performance.now() - t0).to.be.lessThan(1500);
    expect(l.tep6).to.equal('2001:db8::b');
    expect(client.server).to.equal(`[::1]:${b.port}/udp`);
    const again = await client.request(0);
    expect(again.address).to.equal(l.address);
    expect((await client.release()).address).to.equal(l.address);
  });

  it('renews with whichever server answers: the same address from the next one, with its TEP', async () => {
    const a = await serve('10.97.0.0/24', '2001:db8::a,10.97.0.254');
    const b = await serve('10.97.0.0/24', '2001:db8::b,10.97.0.254');
    const client = new FailoverClient({
      servers: [at(a.port), at(b.port)],
      program: DEFAULT_PROGRAM,
      local: lo.addresses[1],
      timeoutMs: 2000,
    });
    open.push(client);
    const first = await client.request();
    expect(first.tep6).to.equal('2001:db8::a');
    await a.stop('SIGKILL');
    const renewed = await client.request(parseIPv4(first.address));
    expect(renewed).to.include({ address: first.address, tep6: '2001:db8::b' });
    expect(client.server).to.equal(`[::1]:${b.port}/udp`);
  });

  it('throws NoServerAnswered naming every server when none answers, without waiting for the timeouts', async () => {
    const ports = await freePorts(2);
    const client = new FailoverClient({
      servers: ports.map(at),
      program: DEFAULT_PROGRAM,
      local: lo.addresses[2],
      timeoutMs: 5000,
    });
    open.push(client);
    const t0 = performance.now();
    const err = await client.request().then(
      () => expect.fail('a request with no server answered'),
      (e: unknown) => e,
    );
    expect(performance.now() - t0).to.be.lessThan(1500);
    expect(err).to.be.instanceOf(NoServerAnswered);
    expect((err as NoServerAnswered).failures.map((f) => f.server)).to.deep.equal(ports.map((p) => `[::1]:${p}/udp`));
    expect((err as Error).message).to.match(/ECONNREFUSED.*ECONNREFUSED/);
  });

  it('dstm request, release and leases take --server more than once; none answering is exit 7 at once', async () => {
    const b = await serve('10.98.0.0/24', '2001:db8::b,10.98.0.254');
    const [dead, dead2] = (await freePorts(2)).map((port) => `[::1]:${port}`);
    const live = `[::1]:${b.port}`;
    const local = ['--local', lo.addresses[3], '--timeout', '5000'];
    let r = await runDstm(['request', '--json', '--server', dead, '--server', live, ...local]);
    expect(r.code, r.stderr).to.equal(0);
    const lease = JSON.parse(r.stdout) as { ipv4: string };
    r = await runDstm(['leases', '--json', '--server', dead, '--server', live]);
    expect(r.code, r.stderr).to.equal(0);
    expect((JSON.parse(r.stdout) as { ipv4: string }[]).map((x) => x.ipv4)).to.deep.equal([lease.ipv4]);
    // the list in the environment and in the configuration file's existing key
    r = await runDstm(['release', '--json', ...local], { DSTM_SERVER: `${dead},${live}` });
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ released: true, ipv4: lease.ipv4 });
    const cfg = join(dirs[0], 'dstm.json');
    writeFileSync(cfg, JSON.stringify({ client: { server: [dead, live] } }));
    r = await runDstm(['request', '--config', cfg, ...local]);
    expect(r.code, r.stderr).to.equal(0);
    const t0 = performance.now();
    r = await runDstm(['request', '--server', dead, '--server', dead2, ...local]);
    expect(r.code).to.equal(7);
    expect(performance.now() - t0).to.be.lessThan(8000); // process start included (slow under load); the two timeouts would be 10 s
    expect(r.stderr).to.match(
      /^dstm request: no server answered: \[::1\]:\d+\/udp: .*ECONNREFUSED.*; \[::1\]:\d+\/udp: .*ECONNREFUSED/,
    );
  });

  it('client.server and tep.server: one endpoint as before, or a list; an empty list is refused naming the key', () => {
    const one = parseWithOverrides(clientFields, { server: '[2001:db8::1]:3786' }, 'client').server;
    expect(one.map(formatEndpoint)).to.deep.equal(['[2001:db8::1]:3786']);
    const two = parseWithOverrides(clientFields, {}, 'client', [
      { key: 'server', flag: '--server', value: ['[2001:db8::1]', '[2001:db8::2]:4000'] },
    ]).server;
    expect(two.map(formatEndpoint)).to.deep.equal(['[2001:db8::1]:3786', '[2001:db8::2]:4000']);
    expect(() =>
      parseWithOverrides(tepFields, { server: [], address: '2001:db8::9', ipv4: '192.0.2.9' }, 'tep'),
    ).to.throw(/^tep\.server: \[\] is not valid: .*at least one/);
    expect(() => parseWithOverrides(clientFields, { server: ['[::1]:3786', '192.0.2.1:3786'] }, 'client')).to.throw(
      /^client\.server\[1\]: .*IPv6 only/,
    );
  });

  it('the feed moves to the next server when its server dies, keeping the bindings both hold, and follows it', async () => {
    const a = await serve('10.99.0.0/24', '2001:db8::a,10.99.0.254');
    const b = await serve('10.99.0.0/24', '2001:db8::b,10.99.0.254');
    // the same binding on both stores, as a shared store would have it
    const n0 = await nodeOn(a.port, lo.addresses[0]);
    open.push(n0);
    const held = await n0.request();
    const n0b = await nodeOn(b.port, lo.addresses[0]);
    open.push(n0b);
    expect((await n0b.request(parseIPv4(held.address))).address).to.equal(held.address);
    const feed = feedOn([a.port, b.port], { waitMs: 20000, retryMs: 100, retryMaxMs: 300 });
    open.push(feed);
    const errors: string[] = [];
    feed.on('error', (_e: unknown, server: string) => errors.push(server));
    await feed.start();
    expect(feed.server).to.equal(`[::1]:${a.port}`);
    const unbinds: FeedBinding[] = [];
    feed.on('unbind', (b: FeedBinding) => unbinds.push(b));
    const moved = nextEvent<string>(feed, 'server');
    const resynced = nextEvent<{ size: number }>(feed, 'resync');
    const t0 = performance.now();
    await a.stop('SIGKILL');
    expect(await moved).to.equal(`[::1]:${b.port}`);
    // the held long poll ends with the connection: no wait for its 20 s
    expect(performance.now() - t0).to.be.lessThan(3000);
    expect((await resynced).size).to.equal(1);
    expect(unbinds).to.deep.equal([]);
    expect(feed.byIPv4.get(held.address)?.ip6).to.equal(lo.addresses[0]);
    expect(errors).to.deep.equal([`[::1]:${a.port}`]);
    const n1 = await nodeOn(b.port, lo.addresses[1]);
    open.push(n1);
    const bound = nextEvent<FeedBinding>(feed, 'bind');
    const l1 = await n1.request();
    expect(await bound).to.include({ ip6: lo.addresses[1], ip4: l1.address });
  });

  it('the feed starts from the next server when the first is down', async () => {
    const b = await serve('10.100.0.0/24', '2001:db8::b,10.100.0.254');
    const feed = feedOn([await freePort(), b.port], { waitMs: 20000, retryMs: 5000 });
    open.push(feed);
    feed.on('error', () => undefined);
    const t0 = performance.now();
    await feed.start();
    // the retry delay (5 s) is for a round in which every server failed, not for one server's failure
    expect(performance.now() - t0).to.be.lessThan(2000);
    expect(feed.server).to.equal(`[::1]:${b.port}`);
  });
});
