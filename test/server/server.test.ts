// dstm server as a real process, called from real IPv6 source addresses on lo.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createConnection } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DstmClient, DstmRefusal, dstmPacket } from '../../src/protocol/client';
import { DEFAULT_PROGRAM as DSTM_PROGRAM } from '../../src/config/server-schema';
import {
  RELEASE_REQ,
  REQUEST_REQ,
  RPC_ONE_Client,
  RPC_TWO_Client,
  dstm_status,
  type packet,
} from '../../src/protocol/generated/dstm';
import { RpcClient, RpcError } from '../../src/rpc';
import { REFUSAL_LOG_BURST } from '../../src/server/refusal-log';
import { SqliteStore } from '../../src/server/sqlite-store';
import { formatIPv4, formatIPv6, parseIPv6 } from '../../src/lib/addr';
import { ensureRpcbind } from '../rpc/util';
import {
  freePort,
  metricsPortOf,
  loopbackAddresses,
  removeDir,
  runDstm,
  sleep,
  startServer,
  tempDir,
  type ServerProcess,
} from './helpers';
import { skipIf } from '../support/skip';
import { until } from '../support/wait';

type Clients = DstmClient[];

/** Every client a test opened, closed after each test whatever happened. */
const open: { close(): Promise<void> }[] = [];

async function clientsFor(
  addresses: string[],
  port: number,
  o: { transport?: 'udp' | 'tcp'; version?: 1 | 2; timeoutMs?: number } = {},
): Promise<Clients> {
  const cs = await Promise.all(
    addresses.map((local) => DstmClient.connect({ host: '::1', port, program: DSTM_PROGRAM, local, ...o })),
  );
  open.push(...cs);
  return cs;
}

const scrape = async (port: number): Promise<string> => (await fetch(`http://[::1]:${port}/metrics`)).text();

/** The value of the sample `series` (a pattern of its name and labels) in a scrape; 0 when it is not there. */
const value = (text: string, series: RegExp): number =>
  Number(new RegExp(`^${series.source} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof DstmRefusal) return err.status;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('dstm server (process)', function () {
  this.timeout(60000);
  let lo: ReturnType<typeof loopbackAddresses>;
  let dir: string;
  let server: ServerProcess | undefined;
  before(() => {
    lo = loopbackAddresses(64);
  });
  after(() => lo.remove());
  beforeEach(() => {
    dir = tempDir('server');
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
    await server?.stop('SIGKILL');
    server = undefined;
    removeDir(dir);
  });

  it('gives concurrent clients distinct addresses, idempotently, over UDP and TCP', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.77.0.0/24', '--tep', '2001:db8::1,10.77.0.254']);
    const udp = await clientsFor(lo.addresses.slice(0, 32), server.port);
    const tcp = await clientsFor(lo.addresses.slice(32), server.port, { transport: 'tcp' });
    const all = [...udp, ...tcp];
    const first = await Promise.all(all.map((c) => c.request()));
    const addrs = first.map((l) => l.address);
    expect(new Set(addrs).size).to.equal(64);
    first.forEach((l, i) => {
      expect(l.local).to.equal(formatIPv6(all[i].local));
      expect(l).to.include({
        mask: '255.255.255.255',
        tep6: '2001:db8::1',
        tep4: '10.77.0.254',
        keep: 3600,
        extend: 1800,
      });
      expect(l.ends - l.starts).to.equal(3600);
    });
    // Repeats (from the other transport too) return the same binding.
    const again = await Promise.all(all.map((c) => c.request()));
    expect(again.map((l) => l.address)).to.deep.equal(addrs);
    const store = new SqliteStore(dir, { readonly: true });
    const rows = await store.list(-1, 1000);
    await store.close();
    expect(rows).to.have.length(64);
    expect(new Set(rows.map((r) => formatIPv6(r.ip6)))).to.deep.equal(new Set(lo.addresses));
  });

  it('keeps every replied binding across kill -9 mid-burst, with no duplicate, and resumes', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.78.0.0/16']);
    const port = server.port;
    const clients = await clientsFor(lo.addresses, port, { timeoutMs: 20000 });
    const replied = new Map<string, string>();
    let killed = false;
    let onKill: () => void = () => undefined;
    const kill = new Promise<void>((resolve) => (onKill = resolve));
    const burst = clients.map(async (c) => {
      const l = await c.request().catch(() => undefined);
      if (l && !killed) replied.set(l.local, l.address);
      if (!killed && replied.size >= 16) {
        killed = true;
        server!.proc.kill('SIGKILL');
        onKill();
      }
      return l;
    });
    await Promise.race([kill, sleep(15000)]);
    expect(killed, 'the server was killed during the burst').to.equal(true);
    await server.stop();
    server = await startServer(['--state-dir', dir, '--pool', '10.78.0.0/16'], { port });
    // Clients still waiting retransmit to the restarted server; everyone ends up with an address.
    const final = await Promise.all(burst);
    const store = new SqliteStore(dir, { readonly: true });
    const rows = new Map((await store.list(-1, 1000)).map((r) => [formatIPv6(r.ip6), formatIPv4(r.ip4)]));
    await store.close();
    for (const [node, addr] of replied) expect(rows.get(node), node).to.equal(addr);
    expect(new Set(rows.values()).size).to.equal(rows.size);
    const after = await Promise.all(clients.map((c) => c.request()));
    after.forEach((l) => {
      const before = replied.get(l.local);
      if (before) expect(l.address).to.equal(before);
    });
    expect(new Set(after.map((l) => l.address)).size).to.equal(clients.length);
    expect(final.filter(Boolean).length).to.be.greaterThan(0);
  });

  it('refuses a second server on the same state directory (exit 3), which the first goes on serving', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.79.0.0/16']);
    const second = await runDstm([
      'server',
      '--state-dir',
      dir,
      '--pool',
      '10.79.0.0/16',
      '--listen',
      `[::1]:${await freePort()}`,
    ]);
    expect(second.code).to.equal(3);
    expect(second.stderr).to.match(/in use by another dstm server .*dstm\.lock.*a state directory of its own/);
    const [c] = await clientsFor([lo.addresses[0]], server.port);
    expect((await c.request()).address).to.match(/^10\.79\./);
  });

  it('expires, holds, reclaims; renews; releases only the caller binding; exhausts a tiny pool', async () => {
    // Whole-second lease and hold, swept once a second: the hold is long enough that the check below that a's
    // address is still held cannot race its end on a loaded machine.
    const hold = 4;
    server = await startServer([
      '--state-dir',
      dir,
      '--pool',
      '10.79.0.0/30',
      '--lease',
      '2',
      '--min-lease',
      '1',
      '--config',
      writeConfig(dir, { hold }),
    ]);
    const [a, b, c] = await clientsFor(lo.addresses.slice(0, 3), server.port);
    const la = await a.request();
    const lb = await b.request();
    expect(await refusal(c.request())).to.equal('no_address');
    // Releasing someone else's address: refused, and their binding stays.
    expect(await refusal(c.release(ipNum(la.address)))).to.equal('no_binding');
    expect(await refusal(a.release(ipNum(lb.address)))).to.equal('no_binding');
    expect((await b.request()).address).to.equal(lb.address);
    // b renews, a does not: a's lease expires, its address is held (not reused) until the hold time is over.
    await sleep(1200);
    const renewed = await b.request(ipNum(lb.address));
    expect(renewed.address).to.equal(lb.address);
    expect(renewed.ends).to.be.greaterThan(lb.ends);
    await sleep(1800);
    expect(await refusal(c.request())).to.equal('no_address');
    // Once the hold is over, a's address goes to c (b keeps renewing meanwhile).
    const deadline = Date.now() + 10_000;
    let freed: string | undefined;
    while (freed === undefined) {
      expect(Date.now(), "a's address was never reclaimed").to.be.below(deadline);
      await b.request(ipNum(lb.address));
      const got = await c.request().catch(async (err: unknown) => {
        expect(await refusal(Promise.reject(err))).to.equal('no_address');
        return undefined;
      });
      if (got === undefined) await sleep(250);
      else freed = got.address;
    }
    expect(freed).to.equal(la.address);
    expect(Date.now(), 'reclaimed before the hold after its end was over').to.be.at.least(
      (la.ends + hold) * 1000 - 300,
    );
    expect((await b.release(ipNum(lb.address))).address).to.equal(lb.address);
    expect((await b.release()).address, 'released again: held, as after a lost reply').to.equal(lb.address);
    // A released address is held like an expired one: no other node gets it before the hold time is over.
    expect(await refusal(a.request())).to.equal('no_address');
  });

  it('refuses a spoofed local, over version 2 (status) and version 1 (AUTH_ERROR), and a node outside the allow list', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.80.0.0/24', '--allow', `${lo.addresses[0]}/128`]);
    const [a] = await clientsFor([lo.addresses[0]], server.port);
    const la = await a.request();
    // b sends from its own address a packet whose local is a's address.
    const rpc = await RpcClient.connect({
      host: '::1',
      port: server.port,
      transport: 'udp',
      program: DSTM_PROGRAM,
      version: 2,
      localAddress: lo.addresses[1],
    });
    open.push(rpc);
    const spoof = (type: number): packet => dstmPacket(type, parseIPv6(lo.addresses[0]), ipNum(la.address), 0);
    const v2 = new RPC_TWO_Client(rpc, DSTM_PROGRAM);
    expect((await v2.REQUEST(spoof(REQUEST_REQ))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    expect((await v2.RELEASE(spoof(RELEASE_REQ))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    expect((await v2.REQUEST(spoof(RELEASE_REQ))).status).to.equal(dstm_status.DSTM_BAD_REQUEST);
    const v1 = new RPC_ONE_Client(rpc, DSTM_PROGRAM);
    for (const call of [() => v1.REQUEST(spoof(REQUEST_REQ)), () => v1.RELEASE(spoof(RELEASE_REQ))]) {
      const err = await call().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(RpcError);
      expect((err as RpcError).kind).to.equal('AUTH_ERROR');
    }
    expect((await a.request()).address).to.equal(la.address);
    // b as itself is outside --allow.
    const [b] = await clientsFor([lo.addresses[1]], server.port);
    expect(await refusal(b.request())).to.equal('not_allowed');
    const res = await runDstm([
      'request',
      '--server',
      `[::1]:${server.port}`,
      '--local',
      lo.addresses[2],
      '--protocol',
      '1',
    ]);
    expect(res.code).to.equal(4);
    expect(res.stderr.trim().split('\n')).to.have.length(1);
    expect(res.stderr).to.contain('not allowed');
  });

  it('serves IPv6 only and refuses a malformed configuration with the key, value and expectation', async () => {
    const badValue = join(dir, 'bad.json');
    writeFileSync(
      badValue,
      JSON.stringify({
        server: { pools: ['10.0.0.0/8'], teps: [{ prefix: '2001:db8::/32', ipv6: '2001:db8::1', ipv4: '10.0.0.256' }] },
      }),
    );
    const badJson = join(dir, 'bad-json.json');
    writeFileSync(badJson, '{ "server": { "lease": 5, } }');
    // Each refused before anything starts, so all at once (seven CLI starts one after the other took seconds).
    const [value, json, listen, missing, check, tep, request] = await Promise.all([
      runDstm(['server', '--config', badValue, '--state-dir', dir]),
      runDstm(['server', '--config', badJson]),
      runDstm(['server', '--listen', '127.0.0.1:3786', '--state-dir', dir]),
      runDstm(['server', '--config', join(dir, 'missing.json')]),
      runDstm(['server', '--check', '--pool', '10.84.0.0/24', '--tep', '2001:db8::1,10.84.0.254', '--state-dir', dir]),
      runDstm(['server', '--check', '--tep', '2001:db8::1']),
      runDstm(['request', '--server', '127.0.0.1:3786']),
    ]);
    expect(value.code).to.equal(2);
    expect(value.stderr).to.contain('server.teps[0].ipv4').and.contain('"10.0.0.256"').and.contain('IPv4 address');
    expect(json.code).to.equal(2);
    expect(json.stderr).to.match(/not valid JSON at line 1, column \d+/);
    expect(listen.code).to.equal(2);
    expect(listen.stderr).to.contain('--listen[0]').and.contain('IPv6');
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.contain('cannot read the configuration file');
    expect(check.code, check.stderr).to.equal(0);
    expect(JSON.parse(check.stdout).server).to.deep.include({
      pools: ['10.84.0.0/24'],
      tep: { ipv6: '2001:db8::1', ipv4: '10.84.0.254' },
      listen: ['[::]:3786'],
      lease: 3600,
    });
    expect(tep.code).to.equal(2);
    expect(tep.stderr.trim()).to.equal(
      'dstm server: --tep: "2001:db8::1" is not valid: expected IPV6,IPV4 (e.g. 2001:db8::1,192.0.2.1)',
    );
    expect(request.code).to.equal(2);
    expect(request.stderr).to.contain('IPv4 is not allowed');
    // The server's sockets are IPv6-only: an IPv4 caller reaches nothing.
    server = await startServer(['--state-dir', dir]);
    const v4 = await runDstm(['request', '--server', `[::ffff:127.0.0.1]:${server.port}`, '--timeout', '500']);
    expect(v4.code).to.equal(7);
  });

  it('dstm leases lists (through the server and from the store), revokes and pre-allocates', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.83.0.0/29', '--tep', '2001:db8::1,10.83.0.254']);
    const srv = ['--server', `[::1]:${server.port}`];
    const [a] = await clientsFor([lo.addresses[0]], server.port);
    const la = await a.request();
    let r = await runDstm(['leases', 'allocate', lo.addresses[1], '--address', '10.83.0.5', '--json', ...srv]);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ action: 'allocate', ipv6: lo.addresses[1], ipv4: '10.83.0.5' });
    // The pre-allocated node gets that binding when it asks.
    const [b] = await clientsFor([lo.addresses[1]], server.port);
    expect((await b.request()).address).to.equal('10.83.0.5');
    r = await runDstm(['leases', 'allocate', lo.addresses[2], '--address', '10.83.0.5', ...srv]);
    expect(r.code).to.equal(8);
    r = await runDstm(['leases', '--json', ...srv]);
    const listed = JSON.parse(r.stdout) as { ipv6: string; ipv4: string; state: string; tep6: string }[];
    expect(listed.map((l) => [l.ipv6, l.ipv4, l.state, l.tep6])).to.deep.equal([
      [lo.addresses[0], la.address, 'active', '2001:db8::1'],
      [lo.addresses[1], '10.83.0.5', 'active', '2001:db8::1'],
    ]);
    r = await runDstm(['leases', 'revoke', lo.addresses[0], ...srv]);
    expect(r.code, r.stderr).to.equal(0);
    r = await runDstm(['leases', 'revoke', lo.addresses[0], ...srv]);
    expect(r.code).to.equal(6);
    r = await runDstm(['leases', '--state-dir', dir, '--json']);
    const stored = JSON.parse(r.stdout) as { ipv6: string; state: string }[];
    expect(stored.find((l) => l.ipv6 === lo.addresses[0])!.state).to.equal('revoked');
    // Filters, through the server and from the store alike: node prefix or address, IPv4 prefix or address, states.
    const pick = async (...args: string[]): Promise<string[]> => {
      const out = await runDstm(['leases', ...args, '--json']);
      expect(out.code, out.stderr).to.equal(0);
      return (JSON.parse(out.stdout) as { ipv6: string }[]).map((l) => l.ipv6);
    };
    // (read-only, so run at once: twelve CLI starts one after the other took seconds)
    await Promise.all(
      [srv, ['--state-dir', dir]].map(async (from) => {
        const [node, prefix, revoked, live, address, none] = await Promise.all([
          pick('list', lo.addresses[1], ...from),
          pick('list', `${lo.addresses[0].replace(/:[0-9a-f]+$/, ':0')}/112`, ...from),
          pick('--state', 'revoked', ...from),
          pick('--state', 'active', '--state', 'held', ...from),
          pick('--address', '10.83.0.5', ...from),
          pick('--address', '10.83.0.0/29', '--state', 'held', ...from),
        ]);
        expect(node).to.deep.equal([lo.addresses[1]]);
        expect(prefix).to.have.members([lo.addresses[0], lo.addresses[1]]);
        expect(revoked).to.deep.equal([lo.addresses[0]]);
        expect(live).to.deep.equal([lo.addresses[1]]);
        expect(address).to.deep.equal([lo.addresses[1]]);
        expect(none).to.deep.equal([]);
      }),
    );
    r = await runDstm(['leases', 'list', '2001:db8::1/32', ...srv]);
    expect([r.code, r.stderr.trim()]).to.deep.equal([
      2,
      'dstm leases list: NODE 2001:db8::1/32: host bits are set past /32',
    ]);
    expect((await a.request()).address).to.not.equal(la.address);
    r = await runDstm(['leases', ...srv]);
    expect(r.stdout.split('\n')[0]).to.match(/^IPV6\s+IPV4\s+TEP6\s+TEP4\s+START\s+END\s+STATE$/);
    // Only admin_allow (default ::1) may administer: a node may not revoke another.
    const [c] = await clientsFor([lo.addresses[2]], server.port);
    expect(await refusal(c.revoke(lo.addresses[1]))).to.equal('not_allowed');
    expect(await refusal(c.allocate(lo.addresses[2], 0, 0))).to.equal('not_allowed');
    expect((await b.request()).address).to.equal('10.83.0.5');
    // allocate's lease: --lease, else the configuration's client.lease, else the server's.
    const cfg = join(dir, 'client.json');
    writeFileSync(cfg, JSON.stringify({ client: { lease: 600 } }));
    const keep = async (...args: string[]): Promise<number> => {
      const out = await runDstm(['leases', 'allocate', ...args, '--config', cfg, '--json', ...srv]);
      expect(out.code, out.stderr).to.equal(0);
      return (JSON.parse(out.stdout) as { keep: number }).keep;
    };
    expect(await keep(lo.addresses[3])).to.equal(600);
    expect(await keep(lo.addresses[4], '--lease', '900')).to.equal(900);
  });

  it('finding 14: SIGTERM answers a held BINDINGS long-poll at once, runs no handler after the store is closed, and exits within 2 s', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.86.0.0/29']);
    const rpc = await RpcClient.connect({
      host: '::1',
      port: server.port,
      transport: 'tcp',
      program: DSTM_PROGRAM,
      version: 2,
      family: 6,
    });
    open.push(rpc);
    const feed = new RPC_TWO_Client(rpc);
    const first = await feed.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    const held = feed.BINDINGS(
      { since: first.next, max: 10, wait_ms: 30_000, epoch: first.epoch },
      { timeoutMs: 40_000 },
    );
    await sleep(300);
    const t0 = Date.now();
    const code = await server.stop('SIGTERM');
    expect(Date.now() - t0).to.be.below(2000);
    expect(code).to.equal(0);
    expect((await held).status, 'the long-poll was answered').to.equal(dstm_status.DSTM_OK);
    expect(server.logs.filter((r) => r.msg === 'handler failed')).to.deep.equal([]);
  });

  it('dstm request and release: the server from DSTM_SERVER or the config file, JSON out, distinct exit codes', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.85.0.0/30', '--tep', '2001:db8::1,10.85.0.254']);
    const local = ['--local', lo.addresses[0]];
    let r = await runDstm(['request', '--json', ...local], { DSTM_SERVER: `[::1]:${server.port}` });
    expect(r.code, r.stderr).to.equal(0);
    const lease = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(lease).to.include({
      ipv6: lo.addresses[0],
      mask: '255.255.255.255',
      tep6: '2001:db8::1',
      tep4: '10.85.0.254',
      keep: 3600,
    });
    expect(lease).to.include.keys('ipv4', 'starts', 'ends');
    const cfg = join(dir, 'client.json');
    writeFileSync(cfg, JSON.stringify({ client: { server: `[::1]:${server.port}` } }));
    r = await runDstm(['release', '--json', '--config', cfg, ...local]);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ released: true, ipv4: lease.ipv4 });
    // Again (as after a lost reply): the binding is held, released as before.
    r = await runDstm(['release', '--json', '--config', cfg, ...local]);
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.include({ released: true, ipv4: lease.ipv4 });
    const other = lease.ipv4 === '10.85.0.1' ? '10.85.0.2' : '10.85.0.1';
    r = await runDstm(['release', '--config', cfg, '--address', other, ...local]);
    expect(r.code).to.equal(6);
    expect(r.stderr).to.equal(
      'dstm release: [::1]:' + server.port + '/udp refused: this node has no binding to release\n',
    );
    // A /30 has two leasable addresses, and the released one is held: the next node is refused with its own exit code.
    expect((await runDstm(['request', '--config', cfg, '--local', lo.addresses[1]])).code).to.equal(0);
    r = await runDstm(['request', '--config', cfg, '--local', lo.addresses[2]]);
    expect(r.code).to.equal(5);
    expect(r.stderr).to.contain('pool is exhausted');
  });

  it('--metrics serves every family, read at scrape time: results, refusals, pools, RPC calls', async () => {
    server = await startServer([
      '--state-dir',
      dir,
      '--pool',
      '10.87.0.0/29',
      '--pool',
      '10.87.1.0/30',
      '--allow',
      `${lo.addresses[0]}/128`,
      '--metrics',
      '[::1]:0',
    ]);
    const metricsPort = await metricsPortOf(server);
    const before = await scrape(metricsPort);
    for (const family of [
      'operations_total',
      'refusals_total',
      'bindings',
      'pool_in_use',
      'pool_free',
      'pool_size',
      'feed_seq',
      'rpc_calls_total',
      'rpc_rejected_total',
      'rpc_udp_replies_total',
      'rpc_udp_send_stalls_total',
      'rpc_dropped_total',
      'rpc_tcp_closed_total',
      'rpc_duration_seconds',
    ]) {
      expect(before).to.match(new RegExp(`^# TYPE dstm_server_${family} (counter|gauge|histogram)$`, 'm'));
    }
    expect(before).to.match(/^dstm_build_info\{version="\d+\.\d+\.\d+",node="v\d+[^"]*",component="server"\} 1$/m);
    expect(value(before, /process_resident_memory_bytes/)).to.be.greaterThan(1e6);
    expect(value(before, /process_open_fds/)).to.be.within(5, value(before, /process_max_fds/));
    expect(before).to.match(/^process_cpu_seconds_total [\d.]+$/m);
    const head = await fetch(`http://[::1]:${metricsPort}/metrics`, { method: 'HEAD' });
    expect(head.status).to.equal(200);
    expect(head.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
    expect(await head.text()).to.equal('');
    expect(value(before, /dstm_server_pool_size\{pool="10\.87\.0\.0\/29"\}/)).to.equal(8);
    // a /29 without network and broadcast leaves 6, a /30 leaves 2
    expect(value(before, /dstm_server_pool_free\{pool="10\.87\.0\.0\/29"\}/)).to.equal(6);
    expect(value(before, /dstm_server_pool_free\{pool="10\.87\.1\.0\/30"\}/)).to.equal(2);
    const [a, b] = await clientsFor(lo.addresses.slice(0, 2), server.port);
    const la = await a.request();
    expect(await refusal(b.request())).to.equal('not_allowed');
    const after = await scrape(metricsPort);
    const pool = la.address.startsWith('10.87.0.') ? '10\\.87\\.0\\.0\\/29' : '10\\.87\\.1\\.0\\/30';
    expect(value(after, new RegExp(`dstm_server_pool_in_use\\{pool="${pool}"\\}`))).to.equal(1);
    expect(value(after, new RegExp(`dstm_server_pool_free\\{pool="${pool}"\\}`))).to.equal(
      value(before, new RegExp(`dstm_server_pool_free\\{pool="${pool}"\\}`)) - 1,
    );
    expect(value(after, /dstm_server_operations_total\{op="request",result="ok"\}/)).to.equal(1);
    expect(after).to.not.match(/status="/);
    // the two REQUESTs reached their handler: both timed
    const timed = (text: string): number =>
      [...text.matchAll(/^dstm_server_rpc_duration_seconds_count\{procedure="[^"]*REQUEST"\} (\d+)$/gm)].reduce(
        (n, m) => n + Number(m[1]),
        0,
      );
    expect(timed(after) - timed(before)).to.equal(2);
    expect(after).to.match(
      /^dstm_server_rpc_duration_seconds_bucket\{procedure="RPC\.RPC_TWO\.REQUEST",le="\+Inf"\} \d+$/m,
    );
    expect(value(after, /dstm_server_refusals_total\{op="request",reason="not_allowed"\}/)).to.equal(1);
    const calls = (text: string): number =>
      [
        ...text.matchAll(
          /^dstm_server_rpc_calls_total\{procedure="[^"]*REQUEST[^"]*",transport="udp",result="[^"]+"\} (\d+)$/gm,
        ),
      ].reduce((n, m) => n + Number(m[1]), 0);
    expect(calls(after) - calls(before)).to.equal(2);
    const replies = (text: string, result: string): number =>
      value(text, new RegExp(`dstm_server_rpc_udp_replies_total\\{result="${result}"\\}`));
    expect(replies(after, 'sent') - replies(before, 'sent'), 'the two replies over UDP').to.equal(2);
    expect([replies(after, 'failed'), replies(after, 'dropped')]).to.deep.equal([0, 0]);
    // What the RPC runtime cuts off is in the metrics too: a datagram that is not a call, a connection past the limit.
    const garbage = (text: string): number =>
      value(text, /dstm_server_rpc_dropped_total\{transport="udp",reason="garbage"\}/);
    const oversized = (text: string): number =>
      value(text, /dstm_server_rpc_tcp_closed_total\{reason="oversized_records"\}/);
    const udp = createSocket('udp6');
    await new Promise<void>((resolve) => udp.send(Buffer.from('not a call'), server!.port, '::1', () => resolve()));
    udp.close();
    const tcp = createConnection({ host: '::1', port: server.port });
    await new Promise((resolve) => tcp.once('connect', resolve));
    tcp.write(Buffer.from([0x80, 0xff, 0xff, 0xff]));
    await new Promise((resolve) => tcp.once('close', resolve));
    await until('both are counted', async () => {
      const now = await scrape(metricsPort);
      return garbage(now) === garbage(after) + 1 && oversized(now) === oversized(after) + 1;
    });
  });

  it('review finding: 500 refused UDP calls from 50 sources are all counted, and write a bounded number of log lines', async () => {
    server = await startServer(['--state-dir', dir, '--pool', '10.88.0.0/29', '--metrics', '[::1]:0']);
    const metricsPort = await metricsPortOf(server);
    const sources = lo.addresses.slice(0, 50);
    const rpcs = await Promise.all(
      sources.map((localAddress) =>
        RpcClient.connect({
          host: '::1',
          port: server!.port,
          transport: 'udp',
          program: DSTM_PROGRAM,
          version: 2,
          localAddress,
        }),
      ),
    );
    open.push(...rpcs);
    // From each source, five REQUESTs forging the next source's local (refused before the lease logic) and five
    // RELEASEs of its own, which has no binding (refused by the lease logic).
    const statuses = await Promise.all(
      rpcs.map(async (rpc, i) => {
        const v2 = new RPC_TWO_Client(rpc, DSTM_PROGRAM);
        const out: number[] = [];
        for (let k = 0; k < 5; k++) {
          out.push(
            (await v2.REQUEST(dstmPacket(REQUEST_REQ, parseIPv6(sources[(i + 1) % sources.length]), 0, 0))).status,
          );
          out.push((await v2.RELEASE(dstmPacket(RELEASE_REQ, parseIPv6(sources[i]), 0, 0))).status);
        }
        return out;
      }),
    );
    const counts = (want: number) => statuses.flat().filter((st) => st === want).length;
    expect([counts(dstm_status.DSTM_NOT_ALLOWED), counts(dstm_status.DSTM_NO_BINDING)]).to.deep.equal([250, 250]);
    const text = await scrape(metricsPort);
    expect(value(text, /dstm_server_refusals_total\{op="request",reason="not_allowed"\}/)).to.equal(250);
    expect(value(text, /dstm_server_refusals_total\{op="release",reason="no_binding"\}/)).to.equal(250);
    // A reason's lines are bounded whatever the number of sources (a bucket gains one line in 6 s: none here).
    for (const msg of ['request refused', 'release refused']) {
      const lines = server.logs.filter((r) => r.msg === msg);
      expect(lines.length, msg).to.be.within(1, REFUSAL_LOG_BURST);
    }
  });

  it('registers both versions with a running rpcbind and unregisters at stop', async function () {
    const stopRpcbind = await ensureRpcbind();
    skipIf(this, stopRpcbind ? undefined : 'rpcbind is not installed');
    try {
      server = await startServer(['--state-dir', dir]);
      await server.waitFor('registered with rpcbind');
      // Others may register the same program; ours are the entries on our port.
      const ours = (): string[] =>
        execFileSync('rpcinfo', { encoding: 'utf8' })
          .split('\n')
          .map((l) => l.trim().split(/\s+/)) // program version netid uaddr service owner
          .filter((f) => f[0] === '760435789' && f[3]?.endsWith(`.${port >> 8}.${port & 255}`))
          .map((f) => `${f[1]}/${f[2]}`)
          .sort();
      const port = server.port;
      expect(ours()).to.deep.equal(['1/tcp6', '1/udp6', '2/tcp6', '2/udp6']);
      execFileSync('rpcinfo', ['-T', 'udp6', '::1', '760435789', '2']);
      execFileSync('rpcinfo', ['-T', 'tcp6', '::1', '760435789', '1']);
      expect(await server.stop('SIGTERM')).to.equal(0);
      server = undefined;
      expect(ours()).to.deep.equal([]);
    } finally {
      await stopRpcbind?.();
    }
  });

  it('reloads its configuration on SIGHUP without losing a lease, and serves metrics', async () => {
    const metricsPort = await freePort(); // in the file: a reload must find the same address
    const cfg = writeConfig(dir, {
      pools: ['10.81.0.0/30'],
      lease: 100,
      metrics: `[::1]:${metricsPort}`,
      log_level: 'debug',
    });
    // The file's log level, not the environment's, so that changing it is a change of the file.
    server = await startServer(['--state-dir', dir, '--config', cfg], { env: { DSTM_LOG_LEVEL: '' } });
    const [a, b] = await clientsFor(lo.addresses.slice(0, 2), server.port);
    const la = await a.request();
    writeConfig(dir, {
      pools: ['10.81.0.0/30', '10.82.0.0/30'],
      lease: 200,
      tep: { ipv6: '2001:db8::9', ipv4: '10.82.0.3' },
      metrics: `[::1]:${metricsPort}`,
      log_level: 'warn',
    });
    server.proc.kill('SIGHUP');
    // The logger keeps its level until a restart (this info line is still written), and the log says so.
    expect((await server.waitFor('configuration reloaded')).needs_restart).to.deep.equal(['log_level']);
    const again = await a.request(ipNum(la.address));
    expect(again).to.include({ address: la.address, keep: 200, tep6: '2001:db8::9' });
    expect((await b.request()).address).to.match(/^10\.8[12]\.0\.[12]$/);
    const metrics = await (await fetch(`http://[::1]:${metricsPort}/metrics`)).text();
    expect(metrics).to.match(/^dstm_server_operations_total\{op="request",result="ok"\} [1-9]/m);
    expect(metrics).to.match(/^dstm_server_bindings\{state="active"\} 2$/m);
    expect(metrics).to.match(/^dstm_server_pool_size\{pool="10\.81\.0\.0\/30"\} 4$/m);
    expect(metrics).to.match(/^dstm_server_pool_size\{pool="10\.82\.0\.0\/30"\} 4$/m);
    writeFileSync(join(dir, 'dstm.json'), '{"server": {"pools": []}}');
    server.proc.kill('SIGHUP');
    await server.waitFor('configuration not reloaded; the running one stays');
    expect((await a.request()).address).to.equal(la.address);
    expect(await server.stop('SIGTERM')).to.equal(0);
    server = undefined;
  });
});

function ipNum(a: string): number {
  return a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
}

function writeConfig(dir: string, server: Record<string, unknown>): string {
  const f = join(dir, 'dstm.json');
  writeFileSync(f, JSON.stringify({ server }));
  return f;
}
