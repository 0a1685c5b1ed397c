// Client side of the DSTM program: REQUEST and RELEASE over ONC RPC, version 2 by default (explicit status) or
// version 1 (Annex B as is, refusals read from RPC errors and zero addresses). `local` is the IPv6 source address
// the server will see, found by asking the kernel for the route to the server.
import dgram from 'node:dgram';
import { RELEASE_REQ, REQUEST_REQ, RPC_ONE_Client, RPC_TWO_Client, type packet } from './generated/dstm';
import { stateName, statusName, type Refusal, type StateName } from './status';
import { RpcClient, RpcError, type TlsClientOptions } from '../rpc';
import type { Transport } from '../rpc/types';
import { formatIPv4, formatIPv6, ipv4FromBytes, ipv4ToBytes, isZero, parseIPv6 } from '../lib/addr';

/**
 * A lease as the node holds it. Times: starts/ends absolute (server clock); extend/keep relative to when the request
 * was first sent (the node's LeaseKeeper counts them from there).
 */
export interface Lease {
  address: string;
  mask: string;
  /** This node's IPv6 address, the one bound to `address`. */
  local: string;
  tep6: string;
  tep4: string;
  starts: number;
  ends: number;
  /** Seconds after receipt at which to renew. */
  extend: number;
  /** Seconds after receipt at which the lease ends (its valid lifetime). */
  keep: number;
}

/** One binding as the admin LIST shows it. */
export interface LeaseRow {
  ipv6: string;
  ipv4: string;
  tep6: string;
  tep4: string;
  starts: number;
  ends: number;
  state: StateName;
}

export type { Refusal };

const WORDS: Record<Refusal, string> = {
  no_address: 'no IPv4 address is free (the pool is exhausted)',
  not_allowed:
    "not allowed (this node is not in the server's allow list, or its source address is not the one it claims)",
  bad_request: 'the server found the request malformed',
  no_binding: 'this node has no binding to release',
  conflict: 'the address is bound to another node',
  unavailable: 'the server cannot commit to its store right now',
};

/** The server answered with a refusal. */
export class DstmRefusal extends Error {
  constructor(
    readonly status: Refusal,
    readonly server: string,
  ) {
    super(`${server} refused: ${WORDS[status]}`);
    this.name = 'DstmRefusal';
  }
}

export interface ClientOptions {
  host: string;
  port: number;
  program: number;
  /** 2 (default) or 1 (Annex B). */
  version?: 1 | 2;
  transport?: Transport;
  timeoutMs?: number;
  /** IPv6 source address to call from; default: the one the kernel routes to the server with. */
  local?: string;
  /** RPC-with-TLS (transport tcp, the default with it). */
  tls?: TlsClientOptions;
}

/** The IPv6 address this host sends from towards `host` (no packet is sent: a connected UDP socket is enough). */
export async function sourceAddressFor(host: string, port: number): Promise<string> {
  const s = dgram.createSocket({ type: 'udp6' });
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.connect(port, host, () => resolve());
    });
    return s.address().address;
  } finally {
    s.close();
  }
}

const ZERO4 = new Uint8Array(4);
const ZERO16 = new Uint8Array(16);

/** A REQUEST or RELEASE packet as a node sends it: its IPv6 address, the IPv4 address it asks for (0: any). */
export function dstmPacket(type: number, local: Uint8Array, ip4: number, keep: number): packet {
  return {
    type,
    local,
    mask: ZERO4,
    i4addr: ip4 ? ipv4ToBytes(ip4) : ZERO4,
    tep4: ZERO4,
    tep6: ZERO16,
    ends: 0,
    starts: 0,
    extend: 0,
    keep,
  };
}

export class DstmClient {
  private constructor(
    readonly rpc: RpcClient,
    readonly local: Uint8Array,
    readonly version: 1 | 2,
    private readonly program: number,
  ) {}

  get server(): string {
    return this.rpc.where;
  }

  static async connect(o: ClientOptions): Promise<DstmClient> {
    const local = o.local ?? (await sourceAddressFor(o.host, o.port));
    const rpc = await RpcClient.connect({
      host: o.host,
      port: o.port,
      transport: o.transport ?? (o.tls ? 'tcp' : 'udp'),
      program: o.program,
      version: o.version ?? 2,
      timeoutMs: o.timeoutMs ?? 5000,
      family: 6,
      localAddress: local,
      tls: o.tls,
      // a server that refuses or cannot be reached is given up at once: the caller moves on or retries itself
      failOnIcmpError: true,
    });
    return new DstmClient(rpc, parseIPv6(local), o.version ?? 2, o.program);
  }

  /** REQUEST: a new lease, or the renewal of `current` (an IPv4 address as a number, 0 for none). */
  async request(current = 0, seconds = 0): Promise<Lease> {
    const reply = await this.call('request', dstmPacket(REQUEST_REQ, this.local, current, seconds));
    if (isZero(reply.i4addr)) throw new DstmRefusal('no_address', this.server);
    return toLease(reply);
  }

  /** RELEASE of `address` (0: whatever this node holds). */
  async release(address = 0): Promise<Lease> {
    const reply = await this.call('release', dstmPacket(RELEASE_REQ, this.local, address, 0));
    if (isZero(reply.i4addr)) throw new DstmRefusal('no_binding', this.server);
    return toLease(reply);
  }

  /** Admin LIST (version 2): every binding, in address order, a page at a time. */
  async *list(page = 500): AsyncGenerator<LeaseRow> {
    const c = new RPC_TWO_Client(this.rpc, this.program);
    let after: Uint8Array = ZERO4;
    for (;;) {
      const r = await c.LIST({ after, max: page });
      const s = statusName(r.status);
      if (s !== 'ok') throw new DstmRefusal(s, this.server);
      for (const l of r.leases) {
        yield {
          ipv6: formatIPv6(l.ip6),
          ipv4: formatIPv4(ipv4FromBytes(l.ip4)),
          tep6: formatIPv6(l.tep6),
          tep4: formatIPv4(ipv4FromBytes(l.tep4)),
          starts: l.starts,
          ends: l.ends,
          state: stateName(l.state),
        };
      }
      if (!r.more || r.leases.length === 0) return;
      after = r.leases[r.leases.length - 1].ip4;
    }
  }

  /** Admin REVOKE (version 2) of `ipv6`'s binding (only if it is `ipv4`, when given). */
  revoke(ipv6: string, ipv4 = 0): Promise<Lease> {
    return this.admin('revoke', ipv6, ipv4, 0);
  }

  /** Admin ALLOCATE (version 2): bind `ipv6` to `ipv4` (0: any free address) without the node asking. */
  allocate(ipv6: string, ipv4 = 0, seconds = 0): Promise<Lease> {
    return this.admin('allocate', ipv6, ipv4, seconds);
  }

  private async admin(op: 'revoke' | 'allocate', ipv6: string, ipv4: number, lease: number): Promise<Lease> {
    const c = new RPC_TWO_Client(this.rpc, this.program);
    const args = { ip6: parseIPv6(ipv6), ip4: ipv4 ? ipv4ToBytes(ipv4) : ZERO4, lease };
    const r = op === 'revoke' ? await c.REVOKE(args) : await c.ALLOCATE(args);
    const s = statusName(r.status);
    if (s !== 'ok') throw new DstmRefusal(s, this.server);
    return toLease(r.lease);
  }

  close(): Promise<void> {
    return this.rpc.close();
  }

  private async call(op: 'request' | 'release', p: packet): Promise<packet> {
    if (this.version === 2) {
      const c = new RPC_TWO_Client(this.rpc, this.program);
      const r = op === 'request' ? await c.REQUEST(p) : await c.RELEASE(p);
      const s = statusName(r.status);
      if (s !== 'ok') throw new DstmRefusal(s, this.server);
      return r.lease;
    }
    const c = new RPC_ONE_Client(this.rpc, this.program);
    try {
      return op === 'request' ? await c.REQUEST(p) : await c.RELEASE(p);
    } catch (err) {
      // Version 1 refusals travel as RPC errors (dstm-rpc(7)).
      if (err instanceof RpcError && err.kind === 'AUTH_ERROR') throw new DstmRefusal('not_allowed', this.server);
      if (err instanceof RpcError && err.kind === 'GARBAGE_ARGS') throw new DstmRefusal('bad_request', this.server);
      if (err instanceof RpcError && err.kind === 'SYSTEM_ERR') throw new DstmRefusal('unavailable', this.server);
      throw err;
    }
  }
}

/** The lease in a reply. */
export function toLease(p: packet): Lease {
  return {
    address: formatIPv4(ipv4FromBytes(p.i4addr)),
    mask: formatIPv4(ipv4FromBytes(p.mask)),
    local: formatIPv6(p.local),
    tep6: formatIPv6(p.tep6),
    tep4: formatIPv4(ipv4FromBytes(p.tep4)),
    starts: p.starts,
    ends: p.ends,
    extend: p.extend,
    keep: p.keep,
  };
}
