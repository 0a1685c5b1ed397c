// ONC RPC server (RFC 5531) over UDP and TCP, IPv6 first (IPv4 where an IPv4 address is configured).
//
// The stages: a Registry of programs, versions and procedures (./server-registry); a Dispatcher that judges each
// call and runs its handler (./server-dispatch), answering through a Replier that reuses one XdrWriter
// (./server-reply); the UDP transport (./server-udp: batched socket or dgram) and the TCP transport (./server-tcp:
// accept, record marking, backpressure); named counters (./server-stats); rpcbind registration (./server-rpcbind);
// RPC-with-TLS (./tls): the policy judged in dispatch (./server-tls), the upgrade in the TCP transport.
// UDP calls pass through a duplicate request cache (./drc); a cap on calls in progress drops UDP calls (the client
// retransmits) and stops reading TCP connections until calls finish.
import type dgram from 'node:dgram';
import net from 'node:net';
import { authNone, authSysServer, type ServerAuth } from './auth';
import { DuplicateCache } from './drc';
import { DEFAULT_MAX_FRAGMENTS, fragmentSizeOf } from './record';
import { Dispatcher } from './server-dispatch';
import { Registry, type RegisterOptions } from './server-registry';
import { Replier } from './server-reply';
import { RpcbindRegistrations } from './server-rpcbind';
import { ServerCounters, snapshot, type RpcServerStats } from './server-stats';
import { TcpTransport } from './server-tcp';
import { TlsGate } from './server-tls';
import { UdpTransport } from './server-udp';
import type { RpcTlsServer } from './tls';
import type { RpcbindRegistration, RpcbindTarget } from './rpcbind';
import type { BatchUdpSocket } from './udp-batch';
import type { CallContext, Service, Transport } from './types';

export type { RpcServerStats } from './server-stats';
export type { ProcedurePolicy, RegisterOptions } from './server-registry';

export interface RpcServerOptions {
  /** Calls whose handler has not yet finished, across all transports (default 1024). */
  maxInFlight?: number;
  /** Entries in the UDP duplicate request cache (default 4096; 0 turns it off). */
  duplicateCacheSize?: number;
  /** Reply bytes the duplicate request cache may hold (default 2 MiB, allocated up front). */
  duplicateCacheBytes?: number;
  /** Largest TCP record accepted, checked from each fragment header before buffering (default 1 MiB). */
  maxRecordSize?: number;
  /**
   * Fragments one TCP record may have (default 4096); a connection sending more is cut off. Whatever its fragments,
   * a record being assembled costs its own bytes (one buffer), not a buffer per fragment.
   */
  maxFragmentsPerRecord?: number;
  /** Largest fragment sent on TCP, 1 to 2^31 − 1; longer replies are split (default: one fragment per record). */
  fragmentSize?: number;
  /** Authentication flavors accepted (default AUTH_NONE and AUTH_SYS). Other flavors get AUTH_REJECTEDCRED. */
  auth?: ServerAuth[];
  /**
   * TCP connections at once (default 1024), reserved ones included. A newcomer over it takes the slot of the
   * connection longest without a call (none in progress or waiting, not a reserved peer's), counted in evictedIdle;
   * with no such connection it is refused (closed at accept).
   */
  maxConnections?: number;
  /**
   * TCP connections at once from one peer (default 32), a peer being an IPv6 /peerPrefix6 (default 64) or an IPv4
   * /peerPrefix4 (default 32): one host, or one network, cannot take every slot. A newcomer over it takes the slot of
   * its peer's connection longest without a call (evictedIdle), else it is refused. Reserved peers are exempt.
   */
  maxConnectionsPerPeer?: number;
  peerPrefix6?: number;
  peerPrefix4?: number;
  /**
   * Peers (addresses or prefixes, e.g. the TEPs of a DSTM server) for which `reservedConnections` of the
   * maxConnections slots are kept: other peers together never hold more than maxConnections − reservedConnections.
   */
  reservedPeers?: readonly string[];
  /** Slots kept for reservedPeers (default 32, or maxConnections if lower, when there are reserved peers; else 0). */
  reservedConnections?: number;
  /**
   * A TCP record begun (a byte of it received) must be complete within this (default 30 s), or the connection is
   * closed: a peer sending one byte now and then cannot hold a connection forever. The clock waits while the
   * server holds the connection's records for a call slot (maxInFlight). 0 turns this off.
   */
  recordTimeoutMs?: number;
  /**
   * Close a TCP connection that has had no call run by a handler for this long (default 120 s), with none in
   * progress or waiting: bytes, garbage records, NULL and refused calls do not count, so they cannot hold a
   * connection. 0 turns this off.
   */
  idleTimeoutMs?: number;
  /** Called when a handler throws something other than an RpcError, or a result fails to encode (SYSTEM_ERR). */
  onHandlerError?: (err: unknown, ctx: CallContext) => void;
  /**
   * UDP calls read per system call, and replies sent per system call, by the native batched socket (1–1024, default
   * 64). 0 serves UDP through Node's dgram one datagram at a time, as happens anyway where the addon is not built.
   */
  udpBatch?: number;
  /**
   * Longest UDP call received whole by the batched socket (default 65536: any datagram). A longer one arrives cut
   * short: it is counted in garbageRecords.udp and dropped.
   */
  udpRecvSize?: number;
  /**
   * Over UDP, no reply is longer than this multiple of its call (default 3, as QUIC's anti-amplification limit,
   * RFC 9000 section 8.1); a longer result is answered AUTH_ERROR, AUTH_TOOWEAK (use TCP). Per procedure too:
   * register(..., { procedures: { NAME: { udpReplyRatio } } }).
   */
  udpReplyRatio?: number;
  /** RPC-with-TLS (RFC 9289, ./tls): the policy and certificates; without it the AUTH_TLS probe is refused. */
  tls?: RpcTlsServer;
}

/** Where to listen. Without a transport, both UDP and TCP; port 0 picks one port shared by both. */
export interface ListenAddress {
  host: string;
  port: number;
  transport?: Transport;
}

export interface BoundAddress {
  transport: Transport;
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
}

type Listener = dgram.Socket | BatchUdpSocket | net.Server;

export class RpcServer {
  private readonly registry: Registry;
  private readonly counters = new ServerCounters();
  private readonly drc: DuplicateCache | null;
  private readonly dispatcher: Dispatcher;
  private readonly udp: UdpTransport;
  private readonly tcp: TcpTransport;
  private readonly rpcbind = new RpcbindRegistrations();
  private readonly bound: BoundAddress[] = [];
  private readonly tls: RpcTlsServer | null;
  private closing = false;

  constructor(options: RpcServerOptions = {}) {
    const udpBatch = options.udpBatch ?? 64;
    const udpRecvSize = options.udpRecvSize ?? 65536;
    if (!(Number.isInteger(udpBatch) && udpBatch >= 0 && udpBatch <= 1024))
      throw new RangeError('udpBatch must be 0–1024');
    if (!(Number.isInteger(udpRecvSize) && udpRecvSize >= 1 && udpRecvSize <= 65536))
      throw new RangeError('udpRecvSize must be 1–65536');
    const fragmentSize = fragmentSizeOf(options.fragmentSize);
    const drcSize = options.duplicateCacheSize ?? 4096;
    this.drc = drcSize > 0 ? new DuplicateCache(drcSize, options.duplicateCacheBytes ?? 2 << 20) : null;
    const auth = new Map<number, ServerAuth>();
    for (const a of options.auth ?? [authNone, authSysServer]) auth.set(a.flavor, a);
    this.registry = new Registry(options.udpReplyRatio ?? 3);
    const replier = new Replier(fragmentSize, this.drc, options.onHandlerError);
    this.tls = options.tls ?? null;
    const tlsGate = this.tls ? new TlsGate(this.tls, replier, this.counters) : null;
    this.dispatcher = new Dispatcher(
      this.registry,
      auth,
      replier,
      this.counters,
      this.drc,
      options.maxInFlight ?? 1024,
      tlsGate,
    );
    this.udp = new UdpTransport(this.dispatcher, this.counters, { batch: udpBatch, recvSize: udpRecvSize });
    this.tcp = new TcpTransport(this.dispatcher, this.counters, {
      maxRecordSize: options.maxRecordSize ?? 1 << 20,
      maxFragments: options.maxFragmentsPerRecord ?? DEFAULT_MAX_FRAGMENTS,
      maxConnections: options.maxConnections ?? 1024,
      maxConnectionsPerPeer: options.maxConnectionsPerPeer ?? 32,
      peerPrefix6: options.peerPrefix6 ?? 64,
      peerPrefix4: options.peerPrefix4 ?? 32,
      reservedPeers: options.reservedPeers ?? [],
      reservedConnections:
        options.reservedConnections ??
        (options.reservedPeers?.length ? Math.min(32, options.maxConnections ?? 1024) : 0),
      idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      recordTimeoutMs: options.recordTimeoutMs ?? 30_000,
      tls: this.tls,
    });
  }

  /**
   * Serve a program version. `program` overrides the number in the definition (e.g. a --program option).
   * Several versions of one program may be registered; PROG_MISMATCH reports the lowest and highest. `options`
   * sets per-procedure policies (TCP only, UDP reply ratio) by procedure name.
   */
  register(service: Service, program = service.definition.program, options?: RegisterOptions): this {
    this.registry.add(service, program, options);
    return this;
  }

  /**
   * Listen on each address (UDP and TCP when no transport is given; with port 0 both get the same port). Resolves
   * with what was bound. If it throws, what was bound before the failure stays bound until close().
   */
  async listen(addresses: ListenAddress | ListenAddress[]): Promise<BoundAddress[]> {
    const out: BoundAddress[] = [];
    for (const a of Array.isArray(addresses) ? addresses : [addresses]) {
      const transports = a.transport ? [a.transport] : (['udp', 'tcp'] as const);
      for (let attempt = 1; ; attempt++) {
        const got: { bound: BoundAddress; socket: Listener }[] = [];
        try {
          for (const transport of transports) {
            const port = got.length > 0 ? got[0].bound.port : a.port;
            const { socket, ...where } =
              transport === 'udp' ? await this.udp.bind(a.host, port) : await this.tcp.listen(a.host, port);
            got.push({ bound: { transport, ...where }, socket });
          }
        } catch (e) {
          for (const g of got) g.socket.close();
          // The port picked for UDP may be taken for TCP (e.g. by a connection's local port): pick another.
          if (a.port === 0 && got.length > 0 && (e as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 20)
            continue;
          throw e;
        }
        for (const g of got) {
          if (g.socket instanceof net.Server) this.tcp.adopt(g.socket);
          else this.udp.adopt(g.socket);
          out.push(g.bound);
          this.bound.push(g.bound);
        }
        break;
      }
    }
    return out;
  }

  /** Every address the server is listening on. */
  addresses(): BoundAddress[] {
    return this.bound.slice();
  }

  /**
   * Register every program version with the local rpcbind (or options.rpcbindHost) for every bound address (RFC 1833
   * v4, then v3, then portmap v2); close() unregisters them there. All or none: when one fails, those made before it
   * are undone and the error thrown. Returns the registrations made.
   */
  registerWithRpcbind(options: RpcbindTarget = {}): Promise<RpcbindRegistration[]> {
    return this.rpcbind.register(this.registry, this.bound, options);
  }

  /** Undo registerWithRpcbind (close() does this too). */
  unregisterFromRpcbind(): Promise<void> {
    return this.rpcbind.unregister();
  }

  stats(): RpcServerStats {
    return snapshot(this.registry, this.counters, {
      udpReplies: this.udp.replies(),
      inFlight: this.dispatcher.inFlight,
      connections: this.tcp.connections,
      reservedConnections: this.tcp.reservedConnections,
      duplicateCacheEntries: this.drc?.entries ?? 0,
      ...(this.tls ? { tls: this.tls.stats() } : {}),
    });
  }

  /**
   * Stop taking calls, let those in progress finish (up to `graceMs`), then close every socket and unregister from
   * rpcbind.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.closing) return;
    this.closing = this.dispatcher.closing = true;
    this.tcp.stopListening();
    if (this.dispatcher.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs);
        this.dispatcher.onIdle = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    await Promise.all([this.tcp.close(), this.udp.close()]);
    this.drc?.clear();
    await this.unregisterFromRpcbind();
  }
}
