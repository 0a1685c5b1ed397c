// Interop with rpcgen: C peers generated from xdr/dstm.x by rpcgen and built with gcc and libtirpc in the test.
// An rpcgen client calls our server (built from the rpcgen-ts output of the same file) over udp6 and tcp6, and our
// client calls an rpcgen server over both; every Annex B field must survive both ways.
import { expect } from 'chai';
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import {
  RPC_ONE_Client,
  RPC_ONE_procedures,
  RPC_ONE_service,
  REQUEST_REQ,
  RELEASE_REQ,
  type packet,
} from '../../src/protocol/generated/dstm';
import { AuthSys, RpcClient, RpcError, RpcServer } from '../../src/rpc';
import type { CallContext, Procedure } from '../../src/rpc/types';
import { buildCPeers, cClientPacket, formatPacket, run, startCServer, transformPacket, type CPeers } from './util';
import { skipIf } from '../support/skip';

describe('rpc interop with rpcgen-generated C peers (xdr/dstm.x)', function () {
  this.timeout(120_000);
  let peers: CPeers;
  const program = 0x2d53544d;

  before(async function () {
    const built = await buildCPeers();
    skipIf(this, typeof built === 'string' ? built : undefined);
    peers = built as CPeers;
  });
  after(() => peers && rmSync(peers.dir, { recursive: true, force: true }));

  describe('an rpcgen C client calling our server', () => {
    let server: RpcServer;
    let port: number;
    let principal: unknown;
    const handler = {
      REQUEST: (p: packet, ctx: CallContext) => ((principal = ctx.principal), transformPacket(p)),
      RELEASE: transformPacket,
    };

    before(async () => {
      server = new RpcServer().register(RPC_ONE_service(handler));
      [{ port }] = await server.listen({ host: '::1', port: 0 });
    });
    after(() => server?.close(100));

    for (const netid of ['udp6', 'tcp6']) {
      it(`over ${netid}`, async () => {
        const r = await run(peers.client, [netid, '::1', String(port), String(program), '3']);
        expect(r.code, r.stderr + r.stdout).to.equal(0);
        const expected: string[] = [];
        for (let i = 0; i < 3; i++) {
          expected.push(formatPacket('REQUEST', transformPacket(cClientPacket(i, REQUEST_REQ))));
          expected.push(formatPacket('RELEASE', transformPacket(cClientPacket(i, RELEASE_REQ))));
        }
        expected.push('VERSION9 RPC: Program/version mismatch low=1 high=1', 'PROC99 RPC: Procedure unavailable');
        expect(r.stdout.trim().split('\n')).to.deep.equal(expected);
        const t = netid === 'udp6' ? 'udp' : 'tcp';
        expect(server.stats().calls['RPC.RPC_ONE.REQUEST'][t]).to.deep.equal({ SUCCESS: 3 });
      });
    }

    it("decodes libtirpc's AUTH_SYS credential (authsys_create_default)", async () => {
      const r = await run(peers.client, ['tcp6', '::1', String(port), String(program), '1', 'sys']);
      expect(r.code, r.stderr + r.stdout).to.equal(0);
      expect(principal).to.deep.include({ machinename: hostname(), uid: process.getuid!(), gid: process.getgid!() });
    });
  });

  describe('our client calling an rpcgen C server', () => {
    let c: Awaited<ReturnType<typeof startCServer>>;
    before(async () => {
      c = await startCServer(peers, program);
    });
    after(() => c?.stop());

    it('accepts our AUTH_SYS credential, at its limits (libtirpc decodes it, or answers AUTH_BADCRED)', async () => {
      const auth = new AuthSys({
        machinename: 'm'.repeat(255),
        uid: 1000,
        gid: 100,
        gids: Array.from({ length: 16 }, (_, i) => i),
      });
      const client = await RpcClient.connect({
        host: '::1',
        port: c.tcp,
        transport: 'tcp',
        program,
        version: 1,
        timeoutMs: 5000,
        auth,
      });
      try {
        const req = cClientPacket(0, REQUEST_REQ);
        expect(await new RPC_ONE_Client(client).REQUEST(req)).to.deep.equal(transformPacket(req));
      } finally {
        await client.close();
      }
    });

    for (const transport of ['udp', 'tcp'] as const) {
      it(`over ${transport}6`, async () => {
        const client = await RpcClient.connect({
          host: '::1',
          port: transport === 'udp' ? c.udp : c.tcp,
          transport,
          program,
          version: 1,
          timeoutMs: 5000,
        });
        try {
          const stub = new RPC_ONE_Client(client);
          await client.ping();
          for (let i = 0; i < 3; i++) {
            const req = cClientPacket(i, REQUEST_REQ);
            expect(await stub.REQUEST(req)).to.deep.equal(transformPacket(req));
            const rel = cClientPacket(i, RELEASE_REQ);
            expect(await stub.RELEASE(rel)).to.deep.equal(transformPacket(rel));
          }
          // pipelined
          const many = await Promise.all(
            Array.from({ length: 50 }, (_, i) => stub.REQUEST(cClientPacket(i, REQUEST_REQ))),
          );
          expect(many.map((p) => p.ends)).to.deep.equal(Array.from({ length: 50 }, (_, i) => 1000 + i + 3600));
          // libtirpc's error replies, as our client reports them
          const mm = await client.ping({}, program, 9).then(
            () => null,
            (e: RpcError) => e,
          );
          expect([mm?.kind, mm?.low, mm?.high]).to.deep.equal(['PROG_MISMATCH', 1, 1]);
          const missing: Procedure<void, void> = {
            ...RPC_ONE_procedures.REQUEST,
            number: 99,
            name: 'P99',
            args: { encode() {}, decode() {} },
            result: { encode() {}, decode() {} },
          };
          expect(
            await client.call(program, 1, missing, undefined).then(
              () => null,
              (e: RpcError) => e.kind,
            ),
          ).to.equal('PROC_UNAVAIL');
          if (transport === 'tcp') {
            // (Over UDP libtirpc decodes arguments from its whole receive buffer, past the datagram, so it cannot
            // tell.)
            const short: Procedure<void, unknown> = {
              ...RPC_ONE_procedures.REQUEST,
              args: { encode() {}, decode() {} },
            };
            expect(
              await client.call(program, 1, short, undefined).then(
                () => null,
                (e: RpcError) => e.kind,
              ),
            ).to.equal('GARBAGE_ARGS');
          }
          expect(
            await client.ping({}, program + 1, 1).then(
              () => null,
              (e: RpcError) => e.kind,
            ),
          ).to.equal('PROG_UNAVAIL');
        } finally {
          await client.close();
        }
      });
    }
  });
});
