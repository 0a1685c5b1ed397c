// The DSTM program's access rules at the RPC layer, with a real RpcServer and client on the loopback.
import { expect } from 'chai';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import {
  RELEASE_REQ,
  REQUEST_REQ,
  RPC_ONE_Client,
  RPC_TWO_Client,
  dstm_status,
  type packet,
} from '../../src/protocol/generated/dstm';
import { createLogger } from '../../src/lib/log';
import { AuthStat, RpcAuthError, RpcClient, RpcServer } from '../../src/rpc';
import { parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { LeaseClock } from '../../src/server/clock';
import { LeaseService } from '../../src/server/leases';
import { DstmRpc, type Access } from '../../src/server/rpc';
import { dstmPacket } from '../../src/protocol/client';
import { SqliteStore } from '../../src/server/sqlite-store';
import { removeDir, tempDir } from './helpers';

const quiet = createLogger({ level: 'error' });

const request = (local: Uint8Array): packet => dstmPacket(REQUEST_REQ, local, 0, 0);

type Limits = Omit<Access, 'allow' | 'tepAllow' | 'adminAllow'>;

/**
 * Hooks of a describe block: before each test the DSTM program on a fresh SQLite store with one pool (its clock
 * `opts.clock`, or the daemon's lease clock `opts.leaseClock`, when given), open to every peer, registered on an RpcServer the test makes listen; after it, all of that closed and removed.
 */
function useProgram(
  tag: string,
  pool: string,
  limits: Limits,
  opts: { clock?: () => number; leaseClock?: LeaseClock } = {},
) {
  const t = {} as {
    dir: string;
    store: SqliteStore;
    server: RpcServer;
    client?: RpcClient;
    client1?: RpcClient;
    /** Listen on [::1] over `transport` and connect a version 2 client (t.client, closed after the test). */
    v2(transport: 'udp' | 'tcp'): Promise<RPC_TWO_Client>;
    /** Listen on [::1] over UDP and connect a client of each version (closed after the test). */
    both(): Promise<{ v1: RPC_ONE_Client; v2: RPC_TWO_Client }>;
  };
  const connect = (port: number, transport: 'udp' | 'tcp', version: 1 | 2) =>
    RpcClient.connect({ host: '::1', port, transport, program: DEFAULT_PROGRAM, version });
  t.v2 = async (transport) => {
    const [b] = await t.server.listen({ host: '::1', port: 0, transport });
    t.client = await connect(b.port, transport, 2);
    return new RPC_TWO_Client(t.client);
  };
  t.both = async () => {
    const [b] = await t.server.listen({ host: '::1', port: 0, transport: 'udp' });
    t.client1 = await connect(b.port, 'udp', 1);
    t.client = await connect(b.port, 'udp', 2);
    return { v1: new RPC_ONE_Client(t.client1), v2: new RPC_TWO_Client(t.client) };
  };
  beforeEach(async () => {
    t.dir = tempDir(tag);
    t.store = new SqliteStore(t.dir, { clock: opts.clock ?? opts.leaseClock?.now });
    const leases = await LeaseService.open(t.store, {
      lease: 60,
      maxLease: 60,
      hold: 0,
      pools: [parsePrefix4(pool)],
      exclude: [],
      skipNetworkBroadcast: true,
      reservations: [],
      teps: [],
    });
    const all = [parsePrefix6('::/0')];
    const access = { allow: all, tepAllow: all, adminAllow: all, ...limits };
    const dstm = new DstmRpc(leases, access, quiet, opts.leaseClock);
    t.server = new RpcServer();
    for (const s of dstm.services(DEFAULT_PROGRAM)) t.server.register(s);
    t.client = t.client1 = undefined;
  });
  afterEach(async () => {
    await t.client?.close();
    await t.client1?.close();
    await t.server.close();
    await t.store.close();
    removeDir(t.dir);
  });
  return t;
}

describe('DSTM program access rules', () => {
  const t = useProgram('rpc', '10.66.0.0/24', { feedMaxWait: 100, tcpOnly: 'admin', minLease: 60 });

  it('refuses an IPv4 peer even where the server is made to listen on IPv4: AUTH_ERROR in version 1, a status in version 2', async () => {
    const [b] = await t.server.listen({ host: '127.0.0.1', port: 0, transport: 'udp' });
    t.client = await RpcClient.connect({
      host: '127.0.0.1',
      port: b.port,
      transport: 'udp',
      program: DEFAULT_PROGRAM,
      version: 1,
    });
    const err = await new RPC_ONE_Client(t.client).REQUEST(request(parseIPv6('::ffff:127.0.0.1'))).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(RpcAuthError);
    expect((err as RpcAuthError).stat).to.equal(AuthStat.AUTH_TOOWEAK);
    const v2 = new RPC_TWO_Client(t.client);
    expect((await v2.REQUEST(request(parseIPv6('::ffff:127.0.0.1')))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    const feed = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(feed.status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    expect((await t.store.counts()).active).to.equal(0);
  });

  it('answers over IPv6 on the same service', async () => {
    const r = await (await t.v2('udp')).REQUEST(request(parseIPv6('::1')));
    expect(r.status).to.equal(dstm_status.DSTM_OK);
    expect([...r.lease.i4addr]).to.deep.equal([10, 66, 0, 1]);
    expect(r.lease.keep).to.equal(60);
  });
});

describe('DSTM program: the binding feed', () => {
  const t = useProgram('rpc-feed', '10.67.0.0/24', { feedMaxWait: 5000, tcpOnly: 'none', minLease: 1 });

  it('finding 6: a caller beyond the last sequence number (a restored store) is told at once to start over, then gets the whole state', async () => {
    const v2 = await t.v2('tcp');
    expect((await v2.REQUEST(request(parseIPv6('::1')))).status).to.equal(dstm_status.DSTM_OK);
    const full = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(full.changes).to.have.length(1);
    // The caller saw numbers up to 15 of this epoch: the t.store went back in time.
    const t0 = Date.now();
    const ahead = await v2.BINDINGS({ since: 15n, max: 10, wait_ms: 5000, epoch: full.epoch });
    expect(Date.now() - t0, 'answered at once, not held').to.be.below(1000);
    expect(ahead).to.include({ status: dstm_status.DSTM_OK, epoch: 0n, next: 0n, more: true });
    expect(ahead.changes).to.have.length(0);
    // Starting over (epoch 0, since 0): the whole state under the store's epoch.
    const again = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(again.epoch).to.equal(full.epoch);
    expect(again.changes.map((c) => c.seq)).to.deep.equal(full.changes.map((c) => c.seq));
  });
});

describe('DSTM program: REVOKE replies', () => {
  const t = useProgram('rpc-revoke', '10.68.0.0/24', { feedMaxWait: 100, tcpOnly: 'admin', minLease: 60 });

  it('every REVOKE reply, refusals included, is RELEASE_REP (4); ALLOCATE refusals stay REQUEST_REP (2)', async () => {
    const [u] = await t.server.listen({ host: '::1', port: 0, transport: 'udp' });
    const [tc] = await t.server.listen({ host: '::1', port: 0, transport: 'tcp' });
    const connect = (transport: 'udp' | 'tcp', port: number) =>
      RpcClient.connect({ host: '::1', port, transport, program: DEFAULT_PROGRAM, version: 2 });
    const udp = await connect('udp', u.port);
    t.client = await connect('tcp', tc.port);
    try {
      const node = parseIPv6('::1');
      const args = { ip6: node, ip4: new Uint8Array(4), lease: 0 };
      const overUdp = await new RPC_TWO_Client(udp).REVOKE(args);
      expect([overUdp.status, overUdp.lease.type], 'refused over UDP').to.deep.equal([dstm_status.DSTM_NOT_ALLOWED, 4]);
      const alloc = await new RPC_TWO_Client(udp).ALLOCATE(args);
      expect([alloc.status, alloc.lease.type], 'ALLOCATE over UDP').to.deep.equal([dstm_status.DSTM_NOT_ALLOWED, 2]);
      const v2 = new RPC_TWO_Client(t.client);
      const none = await v2.REVOKE(args);
      expect([none.status, none.lease.type], 'no binding').to.deep.equal([dstm_status.DSTM_NO_BINDING, 4]);
      expect((await v2.REQUEST(request(node))).status).to.equal(dstm_status.DSTM_OK);
      const ok = await v2.REVOKE(args);
      expect([ok.status, ok.lease.type], 'revoked').to.deep.equal([dstm_status.DSTM_OK, 4]);
      await t.store.close();
      const down = await v2.REVOKE(args);
      expect([down.status, down.lease.type], 'store down').to.deep.equal([dstm_status.DSTM_UNAVAILABLE, 4]);
    } finally {
      await udp.close();
    }
  });
});

describe('DSTM program: a link-local local (Annex B: "Link-local address")', () => {
  const t = useProgram('rpc-linklocal', '10.69.0.0/24', { feedMaxWait: 100, tcpOnly: 'admin', minLease: 60 });

  it('binds the source address, echoes the local sent, in version 1 and 2, for REQUEST and RELEASE', async () => {
    const { v1, v2 } = await t.both();
    const ll = parseIPv6('fe80::1');
    const source = [...parseIPv6('::1')];
    const stored = async () => (await t.store.list(0, 10)).map((r) => ({ ip6: [...r.ip6], state: r.state }));
    const addr = [10, 69, 0, 1];

    const r2 = await v2.REQUEST(request(ll));
    expect(r2.status).to.equal(dstm_status.DSTM_OK);
    expect([...r2.lease.local], 'v2 REQUEST echoes local').to.deep.equal([...ll]);
    expect([...r2.lease.i4addr]).to.deep.equal(addr);
    expect(await stored()).to.deep.equal([{ ip6: source, state: 0 }]);
    const r1 = await v1.REQUEST(request(ll));
    expect([...r1.local], 'v1 REQUEST echoes local').to.deep.equal([...ll]);
    expect([...r1.i4addr], 'the same binding, renewed').to.deep.equal(addr);

    const x2 = await v2.RELEASE(dstmPacket(RELEASE_REQ, ll, 0, 0));
    expect([x2.status, x2.lease.type, [...x2.lease.local], [...x2.lease.i4addr]]).to.deep.equal([
      dstm_status.DSTM_OK,
      4,
      [...ll],
      addr,
    ]);
    expect(await stored()).to.deep.equal([{ ip6: source, state: 1 }]);
    expect([...(await v1.REQUEST(request(ll))).i4addr], 'the node has its address back').to.deep.equal(addr);
    const x1 = await v1.RELEASE(dstmPacket(RELEASE_REQ, ll, 0, 0));
    expect([x1.type, [...x1.local], [...x1.i4addr]], 'v1 RELEASE').to.deep.equal([4, [...ll], addr]);
    expect(await stored()).to.deep.equal([{ ip6: source, state: 1 }]);

    // Any other local must still be the caller.
    expect((await v2.REQUEST(request(parseIPv6('fd00::9')))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
  });
});

describe('DSTM program: lease times of a renewal', () => {
  let now = 1_800_000_000;
  const t = useProgram(
    'rpc-renewal',
    '10.70.0.0/24',
    { feedMaxWait: 100, tcpOnly: 'none', minLease: 60 },
    { clock: () => now },
  );

  it("a REQUEST reply's starts is the grant (ends - starts = keep); LIST and the feed keep when the node first got it", async () => {
    const { v1: c1, v2 } = await t.both();
    const first = now;
    const r = await v2.REQUEST(request(parseIPv6('::1')));
    expect([r.lease.starts, r.lease.ends, r.lease.keep]).to.deep.equal([first, first + 60, 60]);
    now += 25;
    const renewed = await v2.REQUEST(request(parseIPv6('::1')));
    expect([renewed.lease.starts, renewed.lease.ends, renewed.lease.keep]).to.deep.equal([first + 25, first + 85, 60]);
    now += 10;
    const v1 = await c1.REQUEST(request(parseIPv6('::1')));
    expect([v1.starts, v1.ends, v1.keep], 'version 1').to.deep.equal([first + 35, first + 95, 60]);
    const listed = await v2.LIST({ after: new Uint8Array(4), max: 10 });
    expect(listed.leases.map((l) => [l.starts, l.ends])).to.deep.equal([[first, first + 95]]);
    const feed = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(feed.changes.map((c) => [c.starts, c.ends])).to.deep.equal([[first, first + 95]]);
  });
});

describe('DSTM program: lease times on the wire after a wall clock step', () => {
  let wall = 1_800_000_000_000;
  let mono = 5000;
  const clock = new LeaseClock(600 / 86400, { wall: () => wall, monotonic: () => mono });
  const t = useProgram(
    'rpc-step',
    '10.71.0.0/24',
    { feedMaxWait: 100, tcpOnly: 'none', minLease: 60 },
    { leaseClock: clock },
  );

  it('are wall-clock times: after a +7200 s step a grant still has its keep left by the wall clock, in every reply', async () => {
    const v2 = await t.v2('udp');
    const wallSec = () => Math.floor(wall / 1000);
    const node = parseIPv6('::1');
    const first = await v2.REQUEST(request(node));
    expect([first.lease.starts - wallSec(), first.lease.ends - wallSec()]).to.deep.equal([0, 60]);
    // The wall clock steps 2 h ahead; the lease clock follows at 1/144 of the time that passes.
    wall += 7_200_000;
    const renewed = await v2.REQUEST(request(node));
    expect(clock.behind(), 'the lease clock lags').to.equal(7200);
    expect([renewed.lease.starts - wallSec(), renewed.lease.ends - wallSec(), renewed.lease.keep]).to.deep.equal([
      0, 60, 60,
    ]);
    const other = await v2.ALLOCATE({ ip6: parseIPv6('fd00::2'), ip4: new Uint8Array(4), lease: 0 });
    expect([other.status, other.lease.ends - wallSec()], 'ALLOCATE').to.deep.equal([dstm_status.DSTM_OK, 60]);
    const feed = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(feed.changes.map((c) => [c.active, c.ends - wallSec()])).to.deep.equal([
      [true, 60],
      [true, 60],
    ]);
    const list = await v2.LIST({ after: new Uint8Array(4), max: 10 });
    expect(list.leases.map((l) => l.ends - wallSec())).to.deep.equal([60, 60]);
    // 30 s on, caught up by 30/144 s: 30 s left by either clock, give or take the second the catch-up rounds to.
    wall += 30_000;
    mono += 30_000;
    const later = await v2.LIST({ after: new Uint8Array(4), max: 10 });
    for (const l of later.leases) expect(l.ends - wallSec()).to.be.within(29, 30);
    const released = await v2.RELEASE(dstmPacket(RELEASE_REQ, node, 0, 0));
    expect(released.lease.ends - wallSec(), 'a release ends the lease now').to.be.within(-1, 0);
    // RELEASE: when the node first got the address, 30 s ago by the wall clock as it reads now
    expect(released.lease.starts - wallSec()).to.be.within(-31, -30);
  });
});

describe('DSTM program: lease times past 32 bits', () => {
  const t = useProgram('rpc-u32', '10.72.0.0/24', { feedMaxWait: 100, tcpOnly: 'none', minLease: 60 });

  it('a stored time past 2^32 - 1 (stored by an older version) goes out as 2^32 - 1, not as SYSTEM_ERR', async () => {
    const v2 = await t.v2('udp');
    expect((await v2.REQUEST(request(parseIPv6('::1')))).status).to.equal(dstm_status.DSTM_OK);
    t.store.db.exec('UPDATE bindings SET ends = 4294967296; UPDATE feed SET ends = 4294967296');
    const list = await v2.LIST({ after: new Uint8Array(4), max: 10 });
    expect(list.leases.map((l) => l.ends)).to.deep.equal([0xffffffff]);
    const feed = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(feed.changes.map((c) => c.ends)).to.deep.equal([0xffffffff]);
  });
});
