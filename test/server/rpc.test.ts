// The DSTM program's access rules at the RPC layer, with a real RpcServer and client on the loopback.
import { expect } from 'chai';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import {
  REQUEST_REQ,
  RPC_ONE_Client,
  RPC_TWO_Client,
  dstm_status,
  type packet,
} from '../../src/protocol/generated/dstm';
import { createLogger } from '../../src/lib/log';
import { AuthStat, RpcAuthError, RpcClient, RpcServer } from '../../src/rpc';
import { parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { LeaseService } from '../../src/server/leases';
import { DstmRpc } from '../../src/server/rpc';
import { SqliteStore } from '../../src/server/sqlite-store';
import { removeDir, tempDir } from './helpers';

const quiet = createLogger({ level: 'error' });

function request(local: Uint8Array): packet {
  return {
    type: REQUEST_REQ,
    local,
    mask: new Uint8Array(4),
    i4addr: new Uint8Array(4),
    tep4: new Uint8Array(4),
    tep6: new Uint8Array(16),
    starts: 0,
    ends: 0,
    extend: 0,
    keep: 0,
  };
}

describe('DSTM program access rules', () => {
  let dir: string;
  let store: SqliteStore;
  let server: RpcServer;
  let client: RpcClient | undefined;
  beforeEach(async () => {
    dir = tempDir('rpc');
    store = new SqliteStore(dir);
    const leases = await LeaseService.open(store, {
      lease: 60,
      maxLease: 60,
      hold: 0,
      pools: [parsePrefix4('10.66.0.0/24')],
      exclude: [],
      skipNetworkBroadcast: true,
      reservations: [],
      teps: [],
    });
    const all = [parsePrefix6('::/0')];
    const dstm = new DstmRpc(
      leases,
      { allow: all, tepAllow: all, adminAllow: all, feedMaxWait: 100, tcpOnly: 'admin', minLease: 60 },
      quiet,
    );
    server = new RpcServer();
    for (const s of dstm.services(DEFAULT_PROGRAM)) server.register(s);
  });
  afterEach(async () => {
    await client?.close();
    await server.close();
    await store.close();
    removeDir(dir);
  });

  it('refuses an IPv4 peer even where the server is made to listen on IPv4: AUTH_ERROR in version 1, a status in version 2', async () => {
    const [b] = await server.listen({ host: '127.0.0.1', port: 0, transport: 'udp' });
    client = await RpcClient.connect({
      host: '127.0.0.1',
      port: b.port,
      transport: 'udp',
      program: DEFAULT_PROGRAM,
      version: 1,
    });
    const err = await new RPC_ONE_Client(client).REQUEST(request(parseIPv6('::ffff:127.0.0.1'))).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(RpcAuthError);
    expect((err as RpcAuthError).stat).to.equal(AuthStat.AUTH_TOOWEAK);
    const v2 = new RPC_TWO_Client(client);
    expect((await v2.REQUEST(request(parseIPv6('::ffff:127.0.0.1')))).status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    const feed = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(feed.status).to.equal(dstm_status.DSTM_NOT_ALLOWED);
    expect((await store.counts()).active).to.equal(0);
  });

  it('answers over IPv6 on the same service', async () => {
    const [b] = await server.listen({ host: '::1', port: 0, transport: 'udp' });
    client = await RpcClient.connect({
      host: '::1',
      port: b.port,
      transport: 'udp',
      program: DEFAULT_PROGRAM,
      version: 2,
    });
    const r = await new RPC_TWO_Client(client).REQUEST(request(parseIPv6('::1')));
    expect(r.status).to.equal(dstm_status.DSTM_OK);
    expect([...r.lease.i4addr]).to.deep.equal([10, 66, 0, 1]);
    expect(r.lease.keep).to.equal(60);
  });
});

describe('DSTM program: the binding feed', () => {
  let dir: string;
  let store: SqliteStore;
  let server: RpcServer;
  let client: RpcClient | undefined;
  beforeEach(async () => {
    dir = tempDir('rpc-feed');
    store = new SqliteStore(dir);
    const leases = await LeaseService.open(store, {
      lease: 60,
      maxLease: 60,
      hold: 0,
      pools: [parsePrefix4('10.67.0.0/24')],
      exclude: [],
      skipNetworkBroadcast: true,
      reservations: [],
      teps: [],
    });
    const all = [parsePrefix6('::/0')];
    const dstm = new DstmRpc(
      leases,
      { allow: all, tepAllow: all, adminAllow: all, feedMaxWait: 5000, tcpOnly: 'none', minLease: 1 },
      quiet,
    );
    server = new RpcServer();
    for (const s of dstm.services(DEFAULT_PROGRAM)) server.register(s);
  });
  afterEach(async () => {
    await client?.close();
    await server.close();
    await store.close();
    removeDir(dir);
  });

  it('finding 6: a caller beyond the last sequence number (a restored store) is told at once to start over, then gets the whole state', async () => {
    const [b] = await server.listen({ host: '::1', port: 0, transport: 'tcp' });
    client = await RpcClient.connect({
      host: '::1',
      port: b.port,
      transport: 'tcp',
      program: DEFAULT_PROGRAM,
      version: 2,
    });
    const v2 = new RPC_TWO_Client(client);
    expect((await v2.REQUEST(request(parseIPv6('::1')))).status).to.equal(dstm_status.DSTM_OK);
    const full = await v2.BINDINGS({ since: 0n, max: 10, wait_ms: 0, epoch: 0n });
    expect(full.changes).to.have.length(1);
    // The caller saw numbers up to 15 of this epoch: the store went back in time.
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
