// Our server and client with a real rpcbind (started here if none runs): registration seen by rpcinfo, rpcinfo
// pinging our server over udp6 and tcp6, our client finding the port through rpcbind, unregistration on close.
import { expect } from 'chai';
import { lookupPort, RPCBIND_PROGRAM, RpcClient, RpcError, RpcServer, type BoundAddress } from '../../src/rpc';
import type { Service } from '../../src/rpc/types';
import type { XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';
import { ADD1, ensureRpcbind, run, TEST_PROGRAM, testService } from './util';
import { skipIf } from '../support/skip';

/** An rpcbind v3/v4 call's arguments (struct rpcb), decoded by the rpcbinds these tests play. */
const rpcb = {
  encode() {},
  decode: (r: XdrReader) => ({
    prog: r.uint(),
    vers: r.uint(),
    netid: r.string(),
    addr: r.string(),
    owner: r.string(),
  }),
};

describe('rpc with a real rpcbind', function () {
  this.timeout(30_000);
  let stopRpcbind: (() => Promise<void>) | null;
  let server: RpcServer;
  let bound: BoundAddress[];
  // A program number of its own, so that a concurrent run of another test does not see this one's registrations.
  const program = TEST_PROGRAM - 1 - (process.pid % 1000);

  before(async function () {
    stopRpcbind = await ensureRpcbind();
    skipIf(this, stopRpcbind ? undefined : 'rpcbind is not installed');
    server = new RpcServer().register(testService(), program).register(testService({}, 2), program);
    bound = await server.listen([
      { host: '::', port: 0 },
      { host: '0.0.0.0', port: 0 },
    ]);
  });

  after(async () => {
    await server?.close(100);
    await stopRpcbind?.();
  });

  it('registers every version on udp6, tcp6, udp and tcp (RFC 1833 v4)', async () => {
    const regs = await server.registerWithRpcbind();
    expect(regs).to.have.length(8);
    expect(regs.every((r) => r.rpcbindVersion === 4)).to.equal(true);
    expect(regs.map((r) => r.netid).sort()).to.deep.equal(['tcp', 'tcp', 'tcp6', 'tcp6', 'udp', 'udp', 'udp6', 'udp6']);
    const dump = (await run('rpcinfo', [])).stdout;
    const v6 = bound.find((b) => b.family === 'IPv6')!.port;
    const v4 = bound.find((b) => b.family === 'IPv4')!.port;
    for (const netid of ['udp6', 'tcp6'])
      expect(dump).to.match(new RegExp(`${program}\\s+1\\s+${netid}\\s+::\\.${v6 >> 8}\\.${v6 & 255}\\s`));
    for (const netid of ['udp', 'tcp'])
      expect(dump).to.match(new RegExp(`${program}\\s+2\\s+${netid}\\s+0\\.0\\.0\\.0\\.${v4 >> 8}\\.${v4 & 255}\\s`));
  });

  it('is listed by rpcinfo -p (portmap v2 view of the IPv4 registrations)', async () => {
    const { stdout } = await run('rpcinfo', ['-p']);
    const v4 = bound.find((b) => b.family === 'IPv4')!.port;
    for (const [vers, proto] of [
      [1, 'udp'],
      [1, 'tcp'],
      [2, 'udp'],
      [2, 'tcp'],
    ])
      expect(stdout).to.match(new RegExp(`${program}\\s+${vers}\\s+${proto}\\s+${v4}\\b`));
  });

  for (const netid of ['udp6', 'tcp6']) {
    it(`answers rpcinfo -T ${netid} ::1 (a NULL call found through rpcbind)`, async () => {
      const r = await run('rpcinfo', ['-T', netid, '::1', String(program), '1']);
      expect(r.stdout.trim(), r.stderr).to.equal(`program ${program} version 1 ready and waiting`);
      const all = await run('rpcinfo', ['-T', netid, '::1', String(program)]);
      expect(all.stdout).to.contain(`program ${program} version 2 ready and waiting`);
    });
  }

  it('lets our client find the port through rpcbind (v4 GETADDR)', async () => {
    for (const transport of ['udp', 'tcp'] as const) {
      expect(await lookupPort({ host: '::1', program, version: 1, transport })).to.equal(bound[0].port);
      expect(await lookupPort({ host: '127.0.0.1', program, version: 2, transport })).to.equal(
        bound.find((b) => b.family === 'IPv4')!.port,
      );
      const c = await RpcClient.connect({ host: '::1', transport, program, version: 1 });
      expect(await c.call(program, 1, ADD1, 1)).to.equal(2);
      await c.close();
    }
    try {
      await lookupPort({ host: '::1', program: program + 7, version: 1, transport: 'udp' });
      expect.fail('an unregistered program was found');
    } catch (e) {
      expect((e as RpcError).kind).to.equal('NOT_REGISTERED');
      expect((e as Error).message).to.match(/rpcbind on ::1 knows no udp6 address for program \d+ version 1/);
    }
  });

  it('unregisters on close', async () => {
    await server.close(100);
    const dump = (await run('rpcinfo', [])).stdout;
    expect(dump).to.not.contain(`${program} `);
    const r = await run('rpcinfo', ['-T', 'udp6', '::1', String(program), '1']);
    expect(r.code).to.not.equal(0);
  });

  it('falls back to v3 GETADDR, then portmap v2 GETPORT, on an older rpcbind', async () => {
    // Older rpcbinds, played by our own server: one serving only version 3, one only portmap version 2.
    const u32 = { encode: (w: XdrWriter, v: number) => w.uint(v), decode: (r: XdrReader) => r.uint() };
    const str = { encode: (w: XdrWriter, v: string) => w.string(v), decode: (r: XdrReader) => r.string() };
    const mapping = {
      encode() {},
      decode: (r: XdrReader) => ({ prog: r.uint(), vers: r.uint(), prot: r.uint(), port: r.uint() }),
    };
    const seen: string[] = [];
    const v3: Service = {
      definition: {
        programName: 'RPCBPROG',
        versionName: 'RPCBVERS',
        program: RPCBIND_PROGRAM,
        version: 3,
        procedures: new Map([[3, { name: 'GETADDR', number: 3, args: rpcb, result: str }]]),
      },
      handlers: new Map([[3, (a: { netid: string }) => (seen.push(`v3 ${a.netid}`), '::1.4.1')]]),
    };
    const v2: Service = {
      definition: {
        programName: 'PMAPPROG',
        versionName: 'PMAPVERS',
        program: RPCBIND_PROGRAM,
        version: 2,
        procedures: new Map([[3, { name: 'GETPORT', number: 3, args: mapping, result: u32 }]]),
      },
      handlers: new Map([[3, (m: { prot: number }) => (seen.push(`v2 ${m.prot}`), 2049)]]),
    };
    for (const [svc, expected] of [
      [v3, 1025],
      [v2, 2049],
    ] as const) {
      const old = new RpcServer().register(svc);
      const [{ port }] = await old.listen({ host: '::1', port: 0, transport: 'udp' });
      expect(await lookupPort({ host: '::1', port, program, version: 1, transport: 'tcp' })).to.equal(expected);
      await old.close(0);
    }
    expect(seen).to.deep.equal(['v3 tcp6', 'v2 6']);
  });
});

describe('rpc server registrations with an rpcbind elsewhere (played by our own server)', () => {
  /** An rpcbind v4 on ::1 that logs SET and UNSET and refuses the SETs of `refuse` netids. */
  async function fakeRpcbind(refuse: string[]): Promise<{ port: number; seen: string[]; close: () => Promise<void> }> {
    const seen: string[] = [];
    const bool = { encode: (w: XdrWriter, v: boolean) => w.bool(v), decode: (r: XdrReader) => r.bool() };
    const svc: Service = {
      definition: {
        programName: 'RPCBPROG',
        versionName: 'RPCBVERS4',
        program: RPCBIND_PROGRAM,
        version: 4,
        procedures: new Map([
          [1, { name: 'SET', number: 1, args: rpcb, result: bool }],
          [2, { name: 'UNSET', number: 2, args: rpcb, result: bool }],
        ]),
      },
      handlers: new Map([
        [1, (a: { netid: string }) => (seen.push(`SET ${a.netid}`), !refuse.includes(a.netid))],
        [2, (a: { netid: string }) => (seen.push(`UNSET ${a.netid}`), true)],
      ]),
    };
    const s = new RpcServer().register(svc);
    const [{ port }] = await s.listen({ host: '::1', port: 0, transport: 'udp' });
    return { port, seen, close: () => s.close(0) };
  }

  it('unregisters on close from the rpcbind it registered with', async () => {
    const rpcbind = await fakeRpcbind([]);
    const server = new RpcServer().register(testService());
    await server.listen({ host: '::1', port: 0 });
    await server.registerWithRpcbind({ rpcbindHost: '::1', rpcbindPort: rpcbind.port });
    await server.close(0);
    expect(rpcbind.seen).to.deep.equal([
      'UNSET udp6',
      'SET udp6',
      'UNSET tcp6',
      'SET tcp6',
      'UNSET udp6',
      'UNSET tcp6',
    ]);
    await rpcbind.close();
  });

  it('registers all or none: a refusal undoes the registrations made before it', async () => {
    const rpcbind = await fakeRpcbind(['tcp6']);
    const server = new RpcServer().register(testService());
    await server.listen({ host: '::1', port: 0 });
    let err: unknown = null;
    await server.registerWithRpcbind({ rpcbindHost: '::1', rpcbindPort: rpcbind.port }).catch((e) => (err = e));
    expect(String(err)).to.match(/refused to register program/);
    expect(rpcbind.seen).to.deep.equal(['UNSET udp6', 'SET udp6', 'UNSET tcp6', 'SET tcp6', 'UNSET udp6']);
    await server.close(0);
    expect(rpcbind.seen, 'nothing left to undo at close').to.have.length(5);
    await rpcbind.close();
  });
});
