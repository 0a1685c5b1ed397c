// Issue 13, the server's policy findings: each test is named after the finding it closes. Real sockets on the
// loopback (addresses added to lo by the test), a real RpcServer and SQLite store, real `dstm` processes.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { DEFAULT_PROGRAM, serverFields } from '../../src/config/server-schema';
import { parseWithOverrides } from '../../src/config/schema';
import { RateLimiter, prefixKey } from '../../src/lib/rate-limit';
import { formatIPv4, parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import {
  RELEASE_REQ,
  REQUEST_REQ,
  RPC_ONE_Client,
  RPC_TWO_Client,
  dstm_status,
  type packet,
} from '../../src/protocol/generated/dstm';
import { RpcClient, RpcError, RpcServer, type Transport } from '../../src/rpc';
import { LeaseClock } from '../../src/server/clock';
import { checkServerConfig, policyOf } from '../../src/server/daemon';
import { LeaseService } from '../../src/server/leases';
import { dstmPacket } from '../../src/protocol/client';
import { DstmRpc, identityProblem, type Access } from '../../src/server/rpc';
import { SqliteStore } from '../../src/server/sqlite-store';
import { loopbackAddresses, removeDir, runDstm, sleep, tempDir } from './helpers';
import { captureLog } from '../support/log-capture';

const request = (local: Uint8Array, keep = 0): packet => dstmPacket(REQUEST_REQ, local, 0, keep);

const ALL = [parsePrefix6('::/0')];

/** A DstmRpc on a real RpcServer over UDP and TCP on [::1], with its own store. */
async function serve(access: Partial<Access>, pool = '10.66.0.0/24') {
  const dir = tempDir('policy');
  const store = new SqliteStore(dir);
  const leases = await LeaseService.open(store, {
    lease: 600,
    maxLease: 3600,
    hold: 0,
    pools: [parsePrefix4(pool)],
    exclude: [],
    skipNetworkBroadcast: true,
    reservations: [],
    teps: [],
  });
  const { log, records: lines } = captureLog();
  const dstm = new DstmRpc(
    leases,
    { allow: ALL, tepAllow: ALL, adminAllow: ALL, feedMaxWait: 100, tcpOnly: 'admin', minLease: 60, ...access },
    log,
  );
  const server = new RpcServer();
  for (const s of dstm.services(DEFAULT_PROGRAM)) server.register(s);
  const [u] = await server.listen({ host: '::1', port: 0, transport: 'udp' });
  const [t] = await server.listen({ host: '::1', port: 0, transport: 'tcp' });
  const clients: RpcClient[] = [];
  const client = async (transport: Transport, local: string, version: 1 | 2 = 2): Promise<RpcClient> => {
    const c = await RpcClient.connect({
      host: '::1',
      port: transport === 'udp' ? u.port : t.port,
      transport,
      program: DEFAULT_PROGRAM,
      version,
      family: 6,
      localAddress: local,
      timeoutMs: 3000,
    });
    clients.push(c);
    return c;
  };
  return {
    dstm,
    store,
    lines,
    client,
    close: async () => {
      for (const c of clients) await c.close();
      await server.close();
      store.close();
      removeDir(dir);
    },
  };
}

describe('server policy (issue 13)', function () {
  this.timeout(30000);
  let lo: ReturnType<typeof loopbackAddresses>;
  before(() => {
    lo = loopbackAddresses(6);
  });
  after(() => lo.remove());

  it('finding 1: the TEP address is never leased, with a warning; a reservation of it is refused naming the key', async () => {
    const dir = tempDir('finding1');
    const raw = {
      pools: ['10.77.0.0/29'],
      tep: { ipv6: 'fd00::1', ipv4: '10.77.0.6' },
      teps: [{ prefix: 'fd01::/16', ipv6: 'fd01::1', ipv4: '10.77.0.5' }],
    };
    const config = parseWithOverrides(serverFields, raw, 'server');
    const store = new SqliteStore(dir);
    try {
      const leases = await LeaseService.open(store, policyOf(config));
      // asked for by name: another address is given
      const g = await leases.request(Buffer.from(parseIPv6('fd53::1')), parseIPv4('10.77.0.6'), 0);
      expect(g.status).to.equal('ok');
      expect(formatIPv4(g.ip4)).to.not.equal('10.77.0.6');
      // the whole pool: .1-.6 without network, broadcast and both TEP addresses leaves .1-.4
      const got = [g.ip4];
      for (let i = 2; i < 10; i++) {
        const r = await leases.request(Buffer.from(parseIPv6(`fd53::${i}`)), 0, 0);
        if (r.status === 'ok') got.push(r.ip4);
      }
      expect(got.map(formatIPv4).sort()).to.deep.equal(['10.77.0.1', '10.77.0.2', '10.77.0.3', '10.77.0.4']);
      expect((await leases.allocate(Buffer.from(parseIPv6('fd53::99')), parseIPv4('10.77.0.5'), 0)).status).to.equal(
        'conflict',
      );
    } finally {
      store.close();
      removeDir(dir);
    }
    const bad = parseWithOverrides(
      serverFields,
      { ...raw, reservations: [{ ipv6: 'fd53::7', ipv4: '10.77.0.6' }] },
      'server',
    );
    expect(() => checkServerConfig(bad, 'server')).to.throw(
      /^server\.reservations\[0\]\.ipv4: "10\.77\.0\.6" is not valid/,
    );
    // the documented example: accepted, with the warning in --check
    const r = await runDstm(['server', '--check', '--pool', '198.18.0.0/16', '--tep', 'fd00::1,198.18.255.254']);
    expect(r.code).to.equal(0);
    expect(JSON.parse(r.stdout).warnings).to.deep.equal([
      'server.tep.ipv4 198.18.255.254 is inside pool 198.18.0.0/16: it is never leased',
    ]);
  });

  it("finding 2: peers that cannot be a node's identity are refused (unspecified, multicast, IPv4-mapped and -compatible), loopback and global ones are not", async () => {
    for (const a of ['::', 'ff02::1', 'ff0e::42', '::ffff:192.0.2.1', '::192.0.2.1', 'fe80::1', 'febf::1'])
      expect(identityProblem(parseIPv6(a)), a).to.be.a('string');
    for (const a of ['::1', '2001:db8::1', 'fd53:544d::1', 'fec0::1'])
      expect(identityProblem(parseIPv6(a)), a).to.equal(undefined);
    // ALLOCATE (an admin naming the node) is held to the same rule
    const s = await serve({});
    try {
      const v2 = new RPC_TWO_Client(await s.client('tcp', '::1'));
      const r = await v2.ALLOCATE({ ip6: parseIPv6('::'), ip4: new Uint8Array(4), lease: 0 });
      expect(r.status).to.equal(dstm_status.DSTM_BAD_REQUEST);
      expect((await s.store.counts()).active).to.equal(0);
    } finally {
      await s.close();
    }
  });

  it('finding 2: per-prefix binding caps (--per-prefix LEN:MAX): a renewal passes, a new node over the cap is refused, counted, logged once per interval', async () => {
    const s = await serve({ perPrefix: { len: 96, max: 2 } });
    try {
      const call = async (i: number) =>
        new RPC_TWO_Client(await s.client('udp', lo.addresses[i])).REQUEST(request(parseIPv6(lo.addresses[i])));
      // calls in one commit count against the cap too
      const first = await Promise.all([call(0), call(1), call(2)]);
      expect(first.map((r) => r.status).sort()).to.deep.equal(
        [dstm_status.DSTM_OK, dstm_status.DSTM_OK, dstm_status.DSTM_NOT_ALLOWED].sort(),
      );
      const holders = first.flatMap((r, i) => (r.status === dstm_status.DSTM_OK ? [i] : []));
      expect((await call(holders[0])).status).to.equal(dstm_status.DSTM_OK); // renewal
      expect((await call(3)).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
      expect((await s.store.counts()).active).to.equal(2);
      const refused = s.dstm.refusalSamples().find((x) => x.labels.reason === 'prefix_cap');
      expect(refused?.value).to.equal(2);
      expect(s.lines.filter((l) => l.reason === 'prefix_cap')).to.have.length(1);
      // a release makes room
      const c = new RPC_TWO_Client(await s.client('udp', lo.addresses[holders[0]]));
      const rel = dstmPacket(RELEASE_REQ, parseIPv6(lo.addresses[holders[0]]), 0, 0);
      expect((await c.RELEASE(rel)).status).to.equal(dstm_status.DSTM_OK);
      // once the release is durable (answered at its commit, synced soon after) and the cap has read it
      let status = -1;
      for (const end = Date.now() + 5000; status !== dstm_status.DSTM_OK && Date.now() < end; await sleep(50))
        status = (await call(4)).status;
      expect(status).to.equal(dstm_status.DSTM_OK);
    } finally {
      await s.close();
    }
  });

  it('finding 2: request rate limits per prefix (--rate-limit LEN:RATE:BURST): DSTM_UNAVAILABLE in version 2, SYSTEM_ERR in version 1, counted, logged once', async () => {
    const s = await serve({ rateLimit: { len: 64, rate: 0.001, burst: 3 } });
    try {
      const v2 = new RPC_TWO_Client(await s.client('udp', lo.addresses[0]));
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await v2.REQUEST(request(parseIPv6(lo.addresses[0])))).status);
      expect(statuses).to.deep.equal(
        [0, 0, 0, 1, 1].map((k) => (k ? dstm_status.DSTM_UNAVAILABLE : dstm_status.DSTM_OK)),
      );
      // another node of the same /64 shares the bucket
      const v1 = new RPC_ONE_Client(await s.client('udp', lo.addresses[1], 1));
      const err = await v1.REQUEST(request(parseIPv6(lo.addresses[1]))).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(RpcError);
      expect((err as RpcError).kind).to.equal('SYSTEM_ERR');
      expect(
        s.dstm
          .refusalSamples()
          .filter((x) => x.labels.reason === 'rate_limited')
          .reduce((n, x) => n + x.value, 0),
      ).to.equal(3);
      expect(s.lines.filter((l) => l.reason === 'rate_limited')).to.have.length(1);
    } finally {
      await s.close();
    }
  });

  it('finding 2: the rate limiter keeps bounded memory and refills at its rate', () => {
    let now = 0;
    const r = new RateLimiter({ rate: 2, burst: 2, maxKeys: 100, now: () => now });
    expect([r.take('a'), r.take('a'), r.take('a')]).to.deep.equal([true, true, false]);
    now += 500;
    expect([r.take('a'), r.take('a')]).to.deep.equal([true, false]);
    for (let i = 0; i < 10000; i++) r.take(`k${i}`);
    expect(r.size).to.equal(100);
    expect(prefixKey(parseIPv6('2001:db8:1:2:3::1'), 64)).to.equal(prefixKey(parseIPv6('2001:db8:1:2:ffff::9'), 64));
    expect(prefixKey(parseIPv6('2001:db8:1:2::1'), 63)).to.equal(prefixKey(parseIPv6('2001:db8:1:3::1'), 63));
    expect(prefixKey(parseIPv6('2001:db8:1:2::1'), 64)).to.not.equal(prefixKey(parseIPv6('2001:db8:1:3::1'), 64));
  });

  it('finding 2: admin procedures are served over TCP only by default; --tcp-only changes refuses REQUEST and RELEASE over UDP too', async () => {
    let s = await serve({});
    try {
      const udp = new RPC_TWO_Client(await s.client('udp', '::1'));
      expect((await udp.REVOKE({ ip6: parseIPv6(lo.addresses[0]), ip4: new Uint8Array(4), lease: 0 })).status).to.equal(
        dstm_status.DSTM_NOT_ALLOWED,
      );
      expect(
        (await udp.ALLOCATE({ ip6: parseIPv6(lo.addresses[0]), ip4: new Uint8Array(4), lease: 0 })).status,
      ).to.equal(dstm_status.DSTM_NOT_ALLOWED);
      expect((await udp.LIST({ after: new Uint8Array(4), max: 10 })).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
      expect((await s.store.counts()).active).to.equal(0);
      const tcp = new RPC_TWO_Client(await s.client('tcp', '::1'));
      expect(
        (await tcp.ALLOCATE({ ip6: parseIPv6(lo.addresses[0]), ip4: new Uint8Array(4), lease: 0 })).status,
      ).to.equal(dstm_status.DSTM_OK);
      expect((await udp.REQUEST(request(parseIPv6('::1')))).status).to.equal(dstm_status.DSTM_OK);
    } finally {
      await s.close();
    }
    s = await serve({ tcpOnly: 'changes' });
    try {
      const udp = new RPC_TWO_Client(await s.client('udp', lo.addresses[0]));
      expect((await udp.REQUEST(request(parseIPv6(lo.addresses[0])))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
      const v1 = new RPC_ONE_Client(await s.client('udp', lo.addresses[0], 1));
      expect(
        await v1.REQUEST(request(parseIPv6(lo.addresses[0]))).then(
          () => 'granted',
          () => 'refused',
        ),
      ).to.equal('refused');
      expect((await s.store.counts()).active).to.equal(0);
      const tcp = new RPC_TWO_Client(await s.client('tcp', lo.addresses[0]));
      expect((await tcp.REQUEST(request(parseIPv6(lo.addresses[0])))).status).to.equal(dstm_status.DSTM_OK);
      expect(s.dstm.refusalSamples().find((x) => x.labels.reason === 'tcp_only')?.value).to.equal(2);
    } finally {
      await s.close();
    }
  });

  it('finding 7: link-local peers are refused (their zone is no part of the stored identity)', async () => {
    const ll = 'fe80::5eed:' + (process.pid % 0xffff).toString(16);
    execFileSync('ip', ['-6', 'addr', 'add', `${ll}/64`, 'dev', 'lo', 'nodad']);
    const s = await serve({});
    try {
      const v2 = new RPC_TWO_Client(await s.client('udp', `${ll}%lo`));
      const r = await v2.REQUEST(request(parseIPv6(ll)));
      expect(r.status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
      expect((await s.store.counts()).active).to.equal(0);
      expect(s.lines.some((l) => /link-local/.test(String(l.why)))).to.equal(true);
    } finally {
      await s.close();
      execFileSync('ip', ['-6', 'addr', 'del', `${ll}/64`, 'dev', 'lo']);
    }
  });

  it('finding 9: a node asking for a tiny lease gets the minimum (60 s by default); a server lease under it is refused naming the flag', async () => {
    const s = await serve({});
    try {
      const r = await new RPC_TWO_Client(await s.client('udp', lo.addresses[0])).REQUEST(
        request(parseIPv6(lo.addresses[0]), 1),
      );
      expect(r.status).to.equal(dstm_status.DSTM_OK);
      expect(r.lease.keep).to.equal(60);
      expect(r.lease.extend).to.equal(30);
    } finally {
      await s.close();
    }
    const bad = await runDstm(['server', '--check', '--lease', '1']);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.match(/--lease: 1 is not valid: expected at least server\.min_lease \(60\)/);
  });

  it("clock: a wall clock stepped forward past hold reclaims no address before its node's lease has ended", async () => {
    const dir = tempDir('clock');
    let wall = 1_800_000_000_000;
    let mono = 1000;
    const clock = new LeaseClock(600 / 3600, { wall: () => wall, monotonic: () => mono });
    const store = new SqliteStore(dir, { clock: clock.now });
    try {
      const leases = await LeaseService.open(store, {
        lease: 3600,
        maxLease: 3600,
        hold: 600,
        pools: [parsePrefix4('10.78.0.0/30')],
        exclude: [],
        skipNetworkBroadcast: true,
        reservations: [],
        teps: [],
      });
      const g = await leases.request(Buffer.from(parseIPv6('fd53::1')), 0, 0);
      const granted = mono;
      // 10 s later the wall clock steps a day ahead
      mono += 10_000;
      wall += 10_000 + 86_400_000;
      expect(await leases.sweepDue()).to.equal(false);
      await leases.sweep();
      expect((await store.counts()).active).to.equal(1);
      // another node cannot get the address
      expect((await leases.request(Buffer.from(parseIPv6('fd53::2')), g.ip4, 0)).ip4).to.not.equal(g.ip4);
      // by the node's own count the lease ends after 3600 s; the address is free again no earlier than that
      for (let t = 0; t + 70 < 3600; t += 60) {
        mono += 60_000;
        wall += 60_000;
        await leases.sweep();
        expect((await store.boundAddresses()).includes(g.ip4), `after ${t + 70} s`).to.equal(true);
      }
      // the clock catches up with the wall clock at its slew rate: slew seconds per monotonic second since the step
      // (counted from the last reading before it, the grant)
      expect(clock.behind()).to.be.closeTo(86_400 - ((mono - granted) / 1000) * (600 / 3600), 1);
      // and follows a step backward at once
      wall -= 2 * 86_400_000;
      expect(clock.now()).to.equal(Math.floor(wall / 1000));
    } finally {
      store.close();
      removeDir(dir);
    }
  });

  it('clock: with server.hold 0 (no slew allowed) a forward step is still caught up with, at MIN_SLEW', () => {
    let wall = 1_800_000_000_000;
    let mono = 1000;
    const clock = new LeaseClock(0 / 86400, { wall: () => wall, monotonic: () => mono });
    expect(clock.slew).to.equal(0.001);
    wall += 7_200_000;
    expect(clock.now()).to.equal(1_800_000_000);
    expect(clock.behind()).to.equal(7200);
    // at 1/1000 of the time that passes: half the step after 3600 * 1000 s, all of it after twice that
    for (const left of [3600, 0]) {
      mono += 3_600_000_000;
      wall += 3_600_000_000;
      clock.now();
      expect(clock.behind()).to.be.closeTo(left, 1);
    }
    expect(clock.now()).to.equal(Math.floor(wall / 1000));
  });
});
