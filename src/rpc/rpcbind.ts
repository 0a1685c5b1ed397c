// rpcbind (RFC 1833) and portmap v2 (RFC 1833 section 3): registering a server's addresses and looking one up.
//
// Registration talks to the local rpcbind the way libtirpc does, over its local stream socket (/run/rpcbind.sock),
// since rpcbind accepts SET/UNSET from the network only with -i or -L; failing that it tries the loopback address.
// Versions are tried newest first: v4, then v3 (same SET/UNSET/GETADDR), then portmap v2 (SET/UNSET/GETPORT by
// protocol and port). Addresses are universal addresses (RFC 5665): "h1.h2.h3.h4.p1.p2" or "x:...:x.p1.p2".
import { existsSync } from 'node:fs';
import net from 'node:net';
import { RpcClient } from './client';
import { RpcError } from './errors';
import type { Procedure, Transport } from './types';
import type { Codec } from './xdr/runtime';

export const RPCBIND_PROGRAM = 100000;
export const RPCBIND_PORT = 111;
const LOCAL_SOCKETS = ['/run/rpcbind.sock', '/var/run/rpcbind.sock'];

interface Rpcb {
  program: number;
  version: number;
  netid: string;
  uaddr: string;
  owner: string;
}

interface Mapping {
  program: number;
  version: number;
  protocol: number;
  port: number;
}

const rpcbCodec: Codec<Rpcb> = {
  encode(w, v) {
    w.uint(v.program);
    w.uint(v.version);
    w.string(v.netid);
    w.string(v.uaddr);
    w.string(v.owner);
  },
  decode(r) {
    return { program: r.uint(), version: r.uint(), netid: r.string(), uaddr: r.string(), owner: r.string() };
  },
};

const mappingCodec: Codec<Mapping> = {
  encode(w, v) {
    w.uint(v.program);
    w.uint(v.version);
    w.uint(v.protocol);
    w.uint(v.port);
  },
  decode(r) {
    return { program: r.uint(), version: r.uint(), protocol: r.uint(), port: r.uint() };
  },
};

const boolCodec: Codec<boolean> = { encode: (w, v) => w.bool(v), decode: (r) => r.bool() };
const uintCodec: Codec<number> = { encode: (w, v) => w.uint(v), decode: (r) => r.uint() };
const stringCodec: Codec<string> = {
  encode: (w, v) => w.string(v),
  decode: (r) => r.string(1024, 'universal address'),
};

const RPCBPROC_SET: Procedure<Rpcb, boolean> = { name: 'RPCBPROC_SET', number: 1, args: rpcbCodec, result: boolCodec };
const RPCBPROC_UNSET: Procedure<Rpcb, boolean> = {
  name: 'RPCBPROC_UNSET',
  number: 2,
  args: rpcbCodec,
  result: boolCodec,
};
const RPCBPROC_GETADDR: Procedure<Rpcb, string> = {
  name: 'RPCBPROC_GETADDR',
  number: 3,
  args: rpcbCodec,
  result: stringCodec,
};
const PMAPPROC_SET: Procedure<Mapping, boolean> = {
  name: 'PMAPPROC_SET',
  number: 1,
  args: mappingCodec,
  result: boolCodec,
};
const PMAPPROC_UNSET: Procedure<Mapping, boolean> = {
  name: 'PMAPPROC_UNSET',
  number: 2,
  args: mappingCodec,
  result: boolCodec,
};
const PMAPPROC_GETPORT: Procedure<Mapping, number> = {
  name: 'PMAPPROC_GETPORT',
  number: 3,
  args: mappingCodec,
  result: uintCodec,
};

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

/** The netid of a transport over an address family: udp6, tcp6, udp or tcp. */
export function netidFor(transport: Transport, address: string): string {
  return net.isIPv4(address) ? transport : `${transport}6`;
}

/** RFC 5665 universal address of an IP address and port. */
export function toUniversalAddress(address: string, port: number): string {
  return `${address}.${port >> 8}.${port & 255}`;
}

/** Parse a universal address; throws RangeError if it is not an IPv4 or IPv6 one. */
export function fromUniversalAddress(uaddr: string): { address: string; port: number } {
  const m = /^(.*)\.(\d{1,3})\.(\d{1,3})$/.exec(uaddr);
  const hi = m ? Number(m[2]) : 256;
  const lo = m ? Number(m[3]) : 256;
  if (!m || hi > 255 || lo > 255 || net.isIP(m[1]) === 0)
    throw new RangeError(`not an IP universal address: ${JSON.stringify(uaddr)}`);
  return { address: m[1], port: hi * 256 + lo };
}

/** A registration made with rpcbind, kept to undo it. */
export interface RpcbindRegistration {
  program: number;
  version: number;
  netid: string;
  uaddr: string;
  port: number;
  /** The rpcbind version that took it (4, 3 or 2). */
  rpcbindVersion: number;
  /** How rpcbind was reached: a local socket path, or "host:port". */
  via: string;
}

/** Which rpcbind to register with: the local one (its local socket, else ::1), or the one at rpcbindHost. */
export interface RpcbindTarget {
  rpcbindHost?: string;
  /** rpcbind's port on rpcbindHost (111). */
  rpcbindPort?: number;
  timeoutMs?: number;
}

/** Run `f` with a client of the local rpcbind, saying in plain words when rpcbind is not there. */
async function withLocalRpcbind<T>(t: RpcbindTarget, f: (c: RpcClient) => Promise<T>): Promise<T> {
  const c = await localRpcbind(t);
  try {
    return await f(c);
  } catch (e) {
    if (e instanceof RpcError && (e.kind === 'TIMEOUT' || e.kind === 'UNREACHABLE'))
      throw new RpcError(e.kind, `rpcbind does not answer at ${c.where} (is it running?): ${e.message}`);
    throw e;
  } finally {
    await c.close();
  }
}

/** How to reach the local rpcbind for SET/UNSET: its local socket if present, else UDP on the loopback address. */
async function localRpcbind(t: RpcbindTarget): Promise<RpcClient> {
  const timeoutMs = t.timeoutMs ?? 3000;
  const path = t.rpcbindHost ? undefined : LOCAL_SOCKETS.find((p) => existsSync(p));
  if (path) {
    try {
      return await RpcClient.connect({
        host: 'localhost',
        path,
        transport: 'tcp',
        program: RPCBIND_PROGRAM,
        version: 4,
        timeoutMs,
        reconnect: false,
      });
    } catch {
      // fall through to the network
    }
  }
  return RpcClient.connect({
    host: t.rpcbindHost ?? '::1',
    port: t.rpcbindPort ?? RPCBIND_PORT,
    transport: 'udp',
    program: RPCBIND_PROGRAM,
    version: 4,
    timeoutMs,
    retransmitMs: 250,
  });
}

function isVersionProblem(e: unknown): boolean {
  return e instanceof RpcError && (e.kind === 'PROG_MISMATCH' || e.kind === 'PROC_UNAVAIL');
}

/**
 * Register program/version at address:port over transport with the local rpcbind (replacing any old registration
 * of the same netid). Throws if rpcbind cannot be reached or refuses.
 */
export async function registerService(
  s: { program: number; version: number; transport: Transport; address: string; port: number } & RpcbindTarget,
): Promise<RpcbindRegistration> {
  const netid = netidFor(s.transport, s.address);
  const uaddr = toUniversalAddress(s.address, s.port);
  return withLocalRpcbind(s, async (c) => {
    const rpcb: Rpcb = {
      program: s.program,
      version: s.version,
      netid,
      uaddr,
      owner: String(process.getuid?.() ?? ''),
    };
    for (const v of [4, 3]) {
      try {
        await c.call(RPCBIND_PROGRAM, v, RPCBPROC_UNSET, rpcb);
        if (!(await c.call(RPCBIND_PROGRAM, v, RPCBPROC_SET, rpcb)))
          throw new Error(
            `rpcbind (${c.where}) refused to register program ${s.program} version ${s.version} on ${netid} ${uaddr}`,
          );
        return { program: s.program, version: s.version, netid, uaddr, port: s.port, rpcbindVersion: v, via: c.where };
      } catch (e) {
        if (!isVersionProblem(e)) throw e;
      }
    }
    const m: Mapping = {
      program: s.program,
      version: s.version,
      protocol: s.transport === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP,
      port: s.port,
    };
    await c.call(RPCBIND_PROGRAM, 2, PMAPPROC_UNSET, m);
    if (!(await c.call(RPCBIND_PROGRAM, 2, PMAPPROC_SET, m)))
      throw new Error(
        `portmap (${c.where}) refused to register program ${s.program} version ${s.version} ${s.transport} port ${s.port}`,
      );
    return { program: s.program, version: s.version, netid, uaddr, port: s.port, rpcbindVersion: 2, via: c.where };
  });
}

/** Undo a registration. Resolves to whether rpcbind had it. */
export async function unregisterService(reg: RpcbindRegistration, t: RpcbindTarget = {}): Promise<boolean> {
  return withLocalRpcbind(t, (c) => {
    if (reg.rpcbindVersion === 2) {
      const protocol = reg.netid.startsWith('tcp') ? IPPROTO_TCP : IPPROTO_UDP;
      return c.call(RPCBIND_PROGRAM, 2, PMAPPROC_UNSET, {
        program: reg.program,
        version: reg.version,
        protocol,
        port: reg.port,
      });
    }
    return c.call(RPCBIND_PROGRAM, reg.rpcbindVersion, RPCBPROC_UNSET, {
      program: reg.program,
      version: reg.version,
      netid: reg.netid,
      uaddr: reg.uaddr,
      owner: '',
    });
  });
}

/**
 * Ask the rpcbind at host (an IP address) for the port of program/version over transport: v4 GETADDR, then v3
 * GETADDR, then portmap v2 GETPORT. Throws RpcError NOT_REGISTERED when rpcbind knows none.
 */
export async function lookupPort(q: {
  host: string;
  program: number;
  version: number;
  transport: Transport;
  port?: number;
  timeoutMs?: number;
}): Promise<number> {
  const c = await RpcClient.connect({
    host: q.host,
    port: q.port ?? RPCBIND_PORT,
    transport: 'udp',
    program: RPCBIND_PROGRAM,
    version: 4,
    timeoutMs: q.timeoutMs ?? 3000,
    retransmitMs: 250,
  });
  const netid = netidFor(q.transport, q.host);
  const missing = () =>
    new RpcError(
      'NOT_REGISTERED',
      `rpcbind on ${q.host} knows no ${netid} address for program ${q.program} version ${q.version}`,
    );
  try {
    for (const v of [4, 3]) {
      try {
        const uaddr = await c.call(RPCBIND_PROGRAM, v, RPCBPROC_GETADDR, {
          program: q.program,
          version: q.version,
          netid,
          uaddr: '',
          owner: '',
        });
        if (uaddr === '') throw missing();
        return fromUniversalAddress(uaddr).port;
      } catch (e) {
        if (!isVersionProblem(e)) throw e;
      }
    }
    const port = await c.call(RPCBIND_PROGRAM, 2, PMAPPROC_GETPORT, {
      program: q.program,
      version: q.version,
      protocol: q.transport === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP,
      port: 0,
    });
    if (port === 0) throw missing();
    return port;
  } catch (e) {
    if (e instanceof RpcError && e.kind === 'TIMEOUT')
      throw new RpcError(
        'TIMEOUT',
        `rpcbind on ${q.host} does not answer, so the port of program ${q.program} is unknown: ${e.message}`,
      );
    throw e;
  } finally {
    await c.close();
  }
}
