// ONC RPC server (RFC 5531) over UDP and TCP, IPv6 first (IPv4 where an IPv4 address is configured).
//
// A call is judged in the order of RFC 5531 section 9 and libtirpc: RPC version (RPC_MISMATCH), authentication
// (AUTH_ERROR), program (PROG_UNAVAIL), version (PROG_MISMATCH with the registered low/high), procedure
// (PROC_UNAVAIL; NULL is always answered), arguments (GARBAGE_ARGS if they fail to decode or leave bytes over), then
// the handler: SYSTEM_ERR if it throws (onHandlerError hears of it), AUTH_ERROR with its auth_stat if it throws
// RpcAuthError, and PROC_UNAVAIL, GARBAGE_ARGS or SYSTEM_ERR if it throws an RpcError of that kind (e.g. arguments
// that decode but make no sense). A handler returns its result or a Promise of it. A record whose call header cannot
// be read (or is not a CALL) is dropped and counted, as the RFC gives no way to answer it; so is an opaque_auth over
// 400 bytes, as libtirpc does.
//
// The hot path reuses one XdrWriter for every reply and copies the finished reply out once; a synchronous handler
// is answered without a Promise. UDP calls pass through a duplicate request cache; a cap on calls in progress drops
// UDP calls (the client retransmits) and stops reading TCP connections until calls finish.
//
// UDP goes through a batched socket (./udp-batch, native/udp.c) where the addon is built: one recvmmsg drains up to
// `udpBatch` calls, every call of the batch is decoded and dispatched, the replies of synchronous handlers are copied
// straight from the writer into one send buffer and leave with one sendmmsg when the batch is done; a later answer
// (async handler) is sent on the next tick, with the others that came in the same tick. Each reply leaves from the
// address its call came to. Without the addon (or with udpBatch 0), Node's dgram serves UDP a datagram at a time.
import dgram from 'node:dgram';
import net from 'node:net';
import { authNone, authSysServer, type ServerAuth } from './auth';
import { DRC_IN_PROGRESS, DRC_REPLAY, DuplicateCache } from './drc';
import { AuthStat, RpcAuthError, RpcError } from './errors';
import {
  AcceptStat,
  readCallHeader,
  writeAcceptedReply,
  writeAuthErrorReply,
  writeProgMismatchReply,
  writeRpcMismatchReply,
  type CallHeader,
} from './message';
import { beginRecord, endRecord, frameRecord, LAST_FRAGMENT, MAX_FRAGMENT, RecordReader } from './record';
import { registerService, unregisterService, type RpcbindRegistration } from './rpcbind';
import { BatchUdpSocket, batchedUdpAvailable } from './udp-batch';
import type { CallContext, Handler, OpaqueAuth, Procedure, ProgramVersion, Service, Transport } from './types';
import { XdrReader, XdrWriter } from './xdr/runtime';
import { Histogram } from '../lib/metrics';

export interface RpcServerOptions {
  /** Calls whose handler has not yet finished, across all transports (default 1024). */
  maxInFlight?: number;
  /** Entries in the UDP duplicate request cache (default 4096; 0 turns it off). */
  duplicateCacheSize?: number;
  /** Reply bytes the duplicate request cache may hold (default 2 MiB, allocated up front). */
  duplicateCacheBytes?: number;
  /** Largest TCP record accepted, checked from each fragment header before buffering (default 1 MiB). */
  maxRecordSize?: number;
  /** Largest fragment sent on TCP; longer replies are split (default: one fragment per record). */
  fragmentSize?: number;
  /** Authentication flavors accepted (default AUTH_NONE and AUTH_SYS). Other flavors get AUTH_REJECTEDCRED. */
  auth?: ServerAuth[];
  /** TCP connections at once (default 1024); more are refused. */
  maxConnections?: number;
  /**
   * Close a TCP connection silent for this long (default 120 s) with no call of its own in progress, or holding a
   * part of a record: an idle or stalled peer does not keep its buffers forever. 0 turns this off.
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

/** Results counted per procedure; the names are the reply status or what became of the call. */
const RESULTS = ['SUCCESS', 'GARBAGE_ARGS', 'SYSTEM_ERR', 'AUTH_ERROR', 'PROC_UNAVAIL', 'DUPLICATE_REPLAYED', 'DUPLICATE_DROPPED'] as const;
const R_SUCCESS = 0;
const R_GARBAGE = 1;
const R_SYSERR = 2;
const R_AUTH = 3;
const R_PROC_UNAVAIL = 4;
const R_DUP_REPLAYED = 5;
const R_DUP_DROPPED = 6;
const NR = RESULTS.length;
const T_UDP = 0;
const T_TCP = 1;

interface ProcEntry {
  readonly name: string;
  readonly proc: Procedure<any, any> | null;
  readonly handler: Handler<any, any> | null;
  /** Counts by transport * NR + result. */
  readonly counts: Float64Array;
  /** Seconds from decoded arguments to the reply sent, of the calls that reached the handler. */
  readonly latency: Histogram;
}

interface VersionEntry {
  readonly definition: ProgramVersion;
  readonly program: number;
  readonly procs: Map<number, ProcEntry>;
  readonly nullProc: ProcEntry;
  /** Procedure numbers not in the program, by transport. */
  readonly procUnavail: Float64Array;
}

interface ProgramEntry {
  low: number;
  high: number;
  readonly versions: Map<number, VersionEntry>;
}

/** A plain-object snapshot of the server's counters, for logs and metrics. */
export interface RpcServerStats {
  /** calls["PROGRAM.VERSION.PROCEDURE"][transport][result] = count (only non-zero counts appear). */
  calls: Record<string, Partial<Record<Transport, Record<string, number>>>>;
  /** latency["PROGRAM.VERSION.PROCEDURE"]: handler call to reply, seconds (the live histogram, not a copy). */
  latency: Record<string, Histogram>;
  /** Calls refused before a procedure was chosen, by transport and status. */
  rejected: Record<Transport, { RPC_MISMATCH: number; AUTH_ERROR: number; PROG_UNAVAIL: number; PROG_MISMATCH: number }>;
  /** Records dropped because their call header could not be read (or they were not calls, or over udpRecvSize). */
  garbageRecords: Record<Transport, number>;
  /** TCP connections cut off for announcing a record over maxRecordSize. */
  oversizedRecords: number;
  /** UDP calls dropped because maxInFlight calls were in progress. */
  overloadDrops: number;
  inFlight: number;
  connections: number;
  duplicateCacheEntries: number;
}

/** Where a reply goes: a UDP sender, or a TCP connection. */
interface Peer {
  readonly transport: Transport;
  readonly t: number;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** send() copies the reply before it returns: it may be a view of the reused writer. */
  readonly copies: boolean;
  send(reply: Uint8Array): void;
  /** This peer as it must be kept for an answer that comes later (a Promise handler). */
  detach(): Peer;
}

class UdpPeer implements Peer {
  readonly transport = 'udp';
  readonly t = T_UDP;
  readonly copies = false;
  constructor(
    private readonly socket: dgram.Socket,
    readonly address: string,
    readonly port: number,
    readonly family: 'IPv4' | 'IPv6',
  ) {}
  send(reply: Uint8Array): void {
    // No completion callback: Node then sends synchronously without a request object; errors go to 'error'.
    this.socket.send(reply, this.port, this.address);
  }
  detach(): Peer {
    return this;
  }
}

/**
 * The peer of the call being dispatched from a batch: one object per socket, pointed at each datagram in turn. Its
 * replies join the batch's send queue; detach() saves the addresses for an answer that comes after the batch.
 */
class BatchUdpPeer implements Peer {
  readonly transport = 'udp';
  readonly t = T_UDP;
  readonly copies = true;
  readonly family: 'IPv4' | 'IPv6';
  address = '';
  port = 0;
  slot = 0;
  constructor(private readonly socket: BatchUdpSocket) {
    this.family = socket.family;
  }
  send(reply: Uint8Array): void {
    this.socket.reply(this.slot, reply);
  }
  detach(): Peer {
    return new SavedUdpPeer(this.socket, this.address, this.port, this.family, this.socket.saveMeta(this.slot));
  }
}

class SavedUdpPeer implements Peer {
  readonly transport = 'udp';
  readonly t = T_UDP;
  readonly copies = true;
  constructor(
    private readonly socket: BatchUdpSocket,
    readonly address: string,
    readonly port: number,
    readonly family: 'IPv4' | 'IPv6',
    private readonly meta: Uint32Array,
  ) {}
  send(reply: Uint8Array): void {
    this.socket.send(reply, this.meta);
  }
  detach(): Peer {
    return this;
  }
}

function noop(): void {}

function literalLookup(address: string, family: unknown, cb: (err: Error | null, address: string, family: number) => void): void {
  cb(null, address, typeof family === 'number' ? family : net.isIPv4(address) ? 4 : 6);
}

class TcpConn implements Peer {
  readonly transport = 'tcp';
  readonly t = T_TCP;
  /** True while the records of a received chunk are served: replies are then gathered by the server (stageTcp). */
  copies = false;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  readonly reader: RecordReader;
  /** Records waiting for a free call slot (maxInFlight reached). */
  readonly backlog: Buffer[] = [];
  writeBlocked = false;
  /** Calls of this connection whose handler has not finished. */
  active = 0;

  constructor(
    readonly socket: net.Socket,
    private readonly server: RpcServer,
    maxRecordSize: number,
  ) {
    this.address = socket.remoteAddress ?? '';
    this.port = socket.remotePort ?? 0;
    this.family = socket.remoteFamily === 'IPv4' ? 'IPv4' : 'IPv6';
    this.reader = new RecordReader(maxRecordSize, (rec) => server.onTcpRecord(rec, this));
  }

  detach(): Peer {
    return this;
  }

  send(reply: Uint8Array): void {
    if (this.socket.destroyed) return;
    if (this.copies) this.server.stageTcp(reply);
    else this.write(reply);
  }

  write(reply: Uint8Array): void {
    // Backpressure: a peer that does not read its replies stops being read until the socket drains.
    if (!this.socket.write(reply) && !this.writeBlocked) {
      this.writeBlocked = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.writeBlocked = false;
        if (this.backlog.length === 0) this.socket.resume();
      });
    }
  }
}

/** The reply statuses a handler may choose by throwing `new RpcError(kind, ...)`, with the result each is counted as. */
const HANDLER_STATUSES: Partial<Record<string, [stat: number, result: number]>> = {
  PROC_UNAVAIL: [AcceptStat.PROC_UNAVAIL, R_PROC_UNAVAIL],
  GARBAGE_ARGS: [AcceptStat.GARBAGE_ARGS, R_GARBAGE],
  SYSTEM_ERR: [AcceptStat.SYSTEM_ERR, R_SYSERR],
};

export class RpcServer {
  private readonly programs = new Map<number, ProgramEntry>();
  private readonly auth = new Map<number, ServerAuth>();
  private readonly w = new XdrWriter(1024);
  private readonly drc: DuplicateCache | null;
  private readonly maxInFlight: number;
  private readonly maxRecordSize: number;
  private readonly fragmentSize: number;
  private readonly maxConnections: number;
  private readonly idleTimeoutMs: number;
  private readonly onHandlerError?: (err: unknown, ctx: CallContext) => void;
  private readonly udpSockets: (dgram.Socket | BatchUdpSocket)[] = [];
  private readonly udpBatch: number;
  private readonly udpRecvSize: number;
  private readonly tcpServers: net.Server[] = [];
  private readonly conns = new Set<TcpConn>();
  /** TCP connections with records waiting for a call slot. */
  private readonly waiting = new Set<TcpConn>();
  private readonly bound: BoundAddress[] = [];
  /** Replies to the records of the TCP chunk being served, sent as one write when the chunk is done. */
  private tcpOut = new Uint8Array(16384);
  private tcpOutLen = 0;
  private gathering = false;
  private registrations: RpcbindRegistration[] = [];
  private inFlight = 0;
  private closing = false;
  private draining = false;
  private idle: (() => void) | null = null;
  private readonly rejected = [new Float64Array(4), new Float64Array(4)];
  private readonly garbage = new Float64Array(2);
  private oversized = 0;
  private overloadDrops = 0;

  constructor(options: RpcServerOptions = {}) {
    this.maxInFlight = options.maxInFlight ?? 1024;
    this.maxRecordSize = options.maxRecordSize ?? 1 << 20;
    this.fragmentSize = options.fragmentSize ?? MAX_FRAGMENT;
    this.maxConnections = options.maxConnections ?? 1024;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
    this.onHandlerError = options.onHandlerError;
    this.udpBatch = options.udpBatch ?? 64;
    this.udpRecvSize = options.udpRecvSize ?? 65536;
    if (!(Number.isInteger(this.udpBatch) && this.udpBatch >= 0 && this.udpBatch <= 1024)) throw new RangeError('udpBatch must be 0–1024');
    if (!(Number.isInteger(this.udpRecvSize) && this.udpRecvSize >= 1 && this.udpRecvSize <= 65536)) throw new RangeError('udpRecvSize must be 1–65536');
    const drcSize = options.duplicateCacheSize ?? 4096;
    this.drc = drcSize > 0 ? new DuplicateCache(drcSize, options.duplicateCacheBytes ?? 2 << 20) : null;
    for (const a of options.auth ?? [authNone, authSysServer]) this.auth.set(a.flavor, a);
  }

  /**
   * Serve a program version. `program` overrides the number in the definition (e.g. a --program option).
   * Several versions of one program may be registered; PROG_MISMATCH reports the lowest and highest.
   */
  register(service: Service, program = service.definition.program): this {
    const def = service.definition;
    let p = this.programs.get(program);
    if (!p) {
      p = { low: def.version, high: def.version, versions: new Map() };
      this.programs.set(program, p);
    }
    if (p.versions.has(def.version)) throw new Error(`program ${program} version ${def.version} is already registered`);
    const procs = new Map<number, ProcEntry>();
    for (const [num, proc] of def.procedures) {
      if (num === 0) continue;
      const handler = service.handlers.get(num);
      if (!handler) throw new Error(`no handler for procedure ${proc.name} (${num}) of ${def.programName}.${def.versionName}`);
      procs.set(num, { name: proc.name, proc, handler, counts: new Float64Array(2 * NR), latency: new Histogram() });
    }
    const nullProc: ProcEntry = { name: 'NULL', proc: null, handler: null, counts: new Float64Array(2 * NR), latency: new Histogram() };
    p.versions.set(def.version, { definition: def, program, procs, nullProc, procUnavail: new Float64Array(2) });
    p.low = Math.min(p.low, def.version);
    p.high = Math.max(p.high, def.version);
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
        const got: { bound: BoundAddress; socket: dgram.Socket | BatchUdpSocket | net.Server }[] = [];
        try {
          for (const transport of transports) {
            const port = got.length > 0 ? got[0].bound.port : a.port;
            got.push(transport === 'udp' ? await this.listenUdp(a.host, port) : await this.listenTcp(a.host, port));
          }
        } catch (e) {
          for (const g of got) g.socket.close();
          // The port picked for UDP may be taken for TCP (e.g. by a connection's local port): pick another.
          if (a.port === 0 && got.length > 0 && (e as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 20) continue;
          throw e;
        }
        for (const g of got) {
          if (g.socket instanceof net.Server) this.tcpServers.push(g.socket);
          else this.udpSockets.push(g.socket);
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
   * Register every program version with the local rpcbind for every bound address (RFC 1833 v4, then v3, then
   * portmap v2); close() unregisters them. Returns the registrations made.
   */
  async registerWithRpcbind(options: { rpcbindHost?: string; timeoutMs?: number } = {}): Promise<RpcbindRegistration[]> {
    const made: RpcbindRegistration[] = [];
    for (const [program, p] of this.programs) {
      for (const version of p.versions.keys()) {
        for (const b of this.bound) {
          made.push(await registerService({ program, version, transport: b.transport, address: b.address, port: b.port, ...options }));
        }
      }
    }
    this.registrations.push(...made);
    return made;
  }

  /** Undo registerWithRpcbind (close() does this too). */
  async unregisterFromRpcbind(): Promise<void> {
    const regs = this.registrations;
    this.registrations = [];
    for (const r of regs) await unregisterService(r).catch(noop);
  }

  stats(): RpcServerStats {
    const calls: RpcServerStats['calls'] = {};
    const latency: RpcServerStats['latency'] = {};
    const add = (key: string, counts: Float64Array): void => {
      for (let t = 0; t < 2; t++) {
        for (let i = 0; i < NR; i++) {
          const n = counts[t * NR + i];
          if (n === 0) continue;
          const byT = (calls[key] ??= {});
          (byT[t === T_UDP ? 'udp' : 'tcp'] ??= {})[RESULTS[i]] = n;
        }
      }
    };
    for (const p of this.programs.values()) {
      for (const v of p.versions.values()) {
        const prefix = `${v.definition.programName}.${v.definition.versionName}.`;
        add(prefix + 'NULL', v.nullProc.counts);
        for (const pe of v.procs.values()) {
          add(prefix + pe.name, pe.counts);
          latency[prefix + pe.name] = pe.latency;
        }
        const pu = new Float64Array(2 * NR);
        pu[T_UDP * NR + 4] = v.procUnavail[T_UDP];
        pu[T_TCP * NR + 4] = v.procUnavail[T_TCP];
        add(prefix + '(unknown procedure)', pu);
      }
    }
    const rej = (t: number) => {
      const r = this.rejected[t];
      return { RPC_MISMATCH: r[0], AUTH_ERROR: r[1], PROG_UNAVAIL: r[2], PROG_MISMATCH: r[3] };
    };
    return {
      calls,
      latency,
      rejected: { udp: rej(T_UDP), tcp: rej(T_TCP) },
      garbageRecords: { udp: this.garbage[T_UDP], tcp: this.garbage[T_TCP] },
      oversizedRecords: this.oversized,
      overloadDrops: this.overloadDrops,
      inFlight: this.inFlight,
      connections: this.conns.size,
      duplicateCacheEntries: this.drc?.entries ?? 0,
    };
  }

  /**
   * Stop taking calls, let those in progress finish (up to `graceMs`), then close every socket and unregister from
   * rpcbind.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const s of this.tcpServers) s.close();
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, graceMs);
        this.idle = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
    for (const s of this.udpSockets) if (s instanceof BatchUdpSocket) s.close();
    await Promise.all(this.udpSockets.map((s) => (s instanceof BatchUdpSocket ? undefined : new Promise<void>((resolve) => s.close(() => resolve())))));
    await Promise.all(this.tcpServers.map((s) => new Promise<void>((resolve) => (s.listening ? s.once('close', resolve) : resolve()))));
    this.drc?.clear();
    await this.unregisterFromRpcbind();
  }

  private async listenUdp(host: string, port: number): Promise<{ bound: BoundAddress; socket: dgram.Socket | BatchUdpSocket }> {
    if (this.udpBatch > 0 && batchedUdpAvailable()) {
      const s = await BatchUdpSocket.bind(host, port, { batch: this.udpBatch, slotSize: this.udpRecvSize });
      const peer = new BatchUdpPeer(s);
      s.onBatch(
        (count) => this.onUdpBatch(s, peer, count),
        (err) => {
          throw err; // a socket that silently stopped reading would be worse
        },
      );
      return { bound: { transport: 'udp', address: s.address, family: s.family, port: s.port }, socket: s };
    }
    const type = net.isIPv4(host) ? 'udp4' : 'udp6';
    // ipv6Only: IPv4 is served only where an IPv4 address is configured.
    // Replies go to the literal address a datagram came from: resolve it in place rather than through dns.lookup,
    // which would defer every send to another tick.
    const s = dgram.createSocket({ type, ipv6Only: type === 'udp6', recvBufferSize: 4 << 20, lookup: literalLookup });
    return new Promise((resolve, reject) => {
      s.once('error', (e) => {
        s.close();
        reject(e);
      });
      s.bind({ address: host, port, exclusive: true }, () => {
        s.removeAllListeners('error');
        s.on('error', noop); // send errors (e.g. unreachable peer) concern one reply only
        s.on('message', (msg, rinfo) => this.onUdp(s, msg, rinfo));
        const a = s.address();
        resolve({ bound: { transport: 'udp', address: a.address, family: a.family === 'IPv4' ? 'IPv4' : 'IPv6', port: a.port }, socket: s });
      });
    });
  }

  private listenTcp(host: string, port: number): Promise<{ bound: BoundAddress; socket: net.Server }> {
    const srv = net.createServer({ noDelay: true }, (sock) => this.onConnection(sock));
    srv.maxConnections = this.maxConnections;
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port, ipv6Only: net.isIPv6(host), backlog: 511 }, () => {
        srv.off('error', reject);
        const a = srv.address() as net.AddressInfo;
        resolve({ bound: { transport: 'tcp', address: a.address, family: a.family === 'IPv4' ? 'IPv4' : 'IPv6', port: a.port }, socket: srv });
      });
    });
  }

  private onConnection(sock: net.Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    const c = new TcpConn(sock, this, this.maxRecordSize);
    this.conns.add(c);
    sock.on('data', (chunk: Buffer) => {
      // Replies to the records of one chunk (a pipelining client) are gathered and leave in one write.
      // (Chunks are not served inside one another; if one ever were, its replies would simply be written directly.)
      let cut: string | null;
      if (this.gathering) cut = c.reader.push(chunk);
      else {
        this.gathering = c.copies = true;
        try {
          cut = c.reader.push(chunk);
        } finally {
          this.gathering = c.copies = false;
          this.flushTcp(c);
        }
      }
      if (cut !== null) {
        this.oversized++;
        sock.destroy();
      }
    });
    sock.on('error', noop);
    if (this.idleTimeoutMs > 0) {
      sock.setTimeout(this.idleTimeoutMs, () => {
        if (c.active === 0 || c.reader.buffered > 0) sock.destroy();
      });
    }
    sock.on('close', () => {
      c.reader.stop();
      c.backlog.length = 0;
      this.conns.delete(c);
      this.waiting.delete(c);
    });
  }

  private onUdp(s: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closing) return;
    this.dispatch(msg, 0, msg.length, new UdpPeer(s, rinfo.address, rinfo.port, rinfo.family === 'IPv4' ? 'IPv4' : 'IPv6'));
  }

  /**
   * A batch of datagrams from a batched socket: each is dispatched in turn; the socket sends the replies after. What
   * escapes a dispatch (onHandlerError throwing) is rethrown once the rest of the batch is served, as it would have
   * escaped that datagram's own 'message' event.
   */
  private onUdpBatch(s: BatchUdpSocket, peer: BatchUdpPeer, count: number): void {
    if (this.closing) return;
    const rx = s.rx;
    const size = s.slotSize;
    const lengths = s.rxLengths;
    let escaped: { e: unknown } | null = null;
    for (let i = 0; i < count; i++) {
      if (s.truncated(i)) {
        this.garbage[T_UDP]++;
        continue;
      }
      peer.slot = i;
      peer.address = s.peerAddress(i);
      peer.port = s.peerPort(i);
      try {
        this.dispatch(rx, i * size, lengths[i], peer);
      } catch (e) {
        escaped ??= { e };
      }
    }
    if (escaped) throw escaped.e;
  }

  /** Gather a reply of the chunk being served (a view of the writer: copied now). */
  stageTcp(reply: Uint8Array): void {
    const n = this.tcpOutLen + reply.length;
    if (n > this.tcpOut.length) {
      const bigger = new Uint8Array(Math.max(n, this.tcpOut.length * 2));
      bigger.set(this.tcpOut.subarray(0, this.tcpOutLen));
      this.tcpOut = bigger;
    }
    this.tcpOut.set(reply, this.tcpOutLen);
    this.tcpOutLen = n;
  }

  private flushTcp(c: TcpConn): void {
    const n = this.tcpOutLen;
    if (n === 0) return;
    this.tcpOutLen = 0;
    // Let a burst's buffer go rather than keep it for good.
    const big = this.tcpOut;
    if (big.length > 1 << 20) this.tcpOut = new Uint8Array(16384);
    if (c.socket.destroyed) return;
    const out = Buffer.allocUnsafe(n);
    out.set(big.subarray(0, n));
    c.write(out);
  }

  /** Called by a TCP connection's record reader for each complete record. */
  onTcpRecord(rec: Buffer, c: TcpConn): void {
    if (this.closing) return;
    if (c.backlog.length > 0 || this.inFlight >= this.maxInFlight) {
      c.backlog.push(rec);
      c.socket.pause();
      this.waiting.add(c);
      return;
    }
    this.dispatch(rec, 0, rec.length, c);
  }

  /** A call finished: wake connections waiting for a slot, or a graceful close. */
  private callDone(peer: Peer): void {
    this.inFlight--;
    if (peer.t === T_TCP) (peer as TcpConn).active--;
    // Not re-entered: a synchronous handler dispatched from here calls back in, and the loop below goes on instead.
    if (this.waiting.size > 0 && !this.draining) {
      this.draining = true;
      for (const c of this.waiting) {
        while (c.backlog.length > 0 && this.inFlight < this.maxInFlight) {
          const rec = c.backlog.shift()!;
          this.dispatch(rec, 0, rec.length, c);
        }
        if (c.backlog.length > 0) break;
        this.waiting.delete(c);
        if (!c.writeBlocked) c.socket.resume();
      }
      this.draining = false;
    }
    if (this.inFlight === 0 && this.idle) this.idle();
  }

  /** Judge and serve the call in buf[off, off + len). */
  private dispatch(buf: Uint8Array, off: number, len: number, peer: Peer): void {
    const t = peer.t;
    // XdrReader reads a Buffer through a plain Uint8Array view: opaque fields are then decoded as copies (Buffer.slice
    // would alias the chunk, or the reused receive slots, and keep all of it alive for as long as the application
    // keeps a 16-byte field).
    const r = new XdrReader(buf, off, off + len);
    let h: CallHeader | { xid: number; rpcVersion: number };
    try {
      h = readCallHeader(r);
    } catch {
      this.garbage[t]++;
      return;
    }
    const w = this.w;
    if (!('program' in h)) {
      this.rejected[t][0]++;
      this.begin(t);
      writeRpcMismatchReply(w, h.xid);
      return peer.send(this.finish(peer));
    }
    const flavor = this.auth.get(h.credential.flavor);
    const verdict = flavor ? flavor.validate(h.credential, h.verifier) : AuthStat.AUTH_REJECTEDCRED; // as libtirpc
    if (typeof verdict === 'number') {
      this.rejected[t][1]++;
      this.begin(t);
      writeAuthErrorReply(w, h.xid, verdict);
      return peer.send(this.finish(peer));
    }
    const verf = flavor!.replyVerifier(verdict.principal, h.xid);
    const p = this.programs.get(h.program);
    if (!p) {
      this.rejected[t][2]++;
      return this.replyStatus(peer, h.xid, verf, AcceptStat.PROG_UNAVAIL);
    }
    const v = p.versions.get(h.version);
    if (!v) {
      this.rejected[t][3]++;
      this.begin(t);
      writeProgMismatchReply(w, h.xid, verf, p.low, p.high);
      return peer.send(this.finish(peer));
    }
    if (h.procedure === 0) {
      v.nullProc.counts[t * NR + R_SUCCESS]++;
      return this.replyStatus(peer, h.xid, verf, AcceptStat.SUCCESS);
    }
    const pe = v.procs.get(h.procedure);
    if (!pe) {
      v.procUnavail[t]++;
      return this.replyStatus(peer, h.xid, verf, AcceptStat.PROC_UNAVAIL);
    }

    // The duplicate request cache (UDP only: over TCP the transport does not make the client retransmit).
    let drcToken = -1;
    const drc = t === T_UDP ? this.drc : null;
    if (drc) {
      const seen = drc.lookup(peer.address, peer.port, h.xid, off === 0 && len === r.buf.length ? r.buf : r.buf.subarray(off, off + len));
      if (seen === DRC_REPLAY) {
        pe.counts[t * NR + R_DUP_REPLAYED]++;
        return peer.send(drc.replay!);
      }
      if (seen === DRC_IN_PROGRESS) {
        pe.counts[t * NR + R_DUP_DROPPED]++;
        return;
      }
    }
    if (this.inFlight >= this.maxInFlight) {
      // Only UDP gets here over the cap (TCP records wait in their connection's backlog): drop, the client retransmits.
      this.overloadDrops++;
      return;
    }
    if (drc) drcToken = drc.begin(peer.port, h.xid);

    let args: unknown;
    try {
      args = pe.proc!.args.decode(r);
      if (r.pos !== r.end) throw new Error('trailing bytes');
    } catch {
      pe.counts[t * NR + R_GARBAGE]++;
      return this.replyStatus(peer, h.xid, verf, AcceptStat.GARBAGE_ARGS, drcToken);
    }
    const ctx: CallContext = {
      xid: h.xid,
      transport: peer.transport,
      peerAddress: peer.address,
      peerPort: peer.port,
      family: peer.family,
      credential: h.credential,
      principal: verdict.principal,
    };
    this.inFlight++;
    if (t === T_TCP) (peer as TcpConn).active++;
    const t0 = performance.now();
    let res: unknown;
    try {
      res = pe.handler!(args, ctx);
    } catch (e) {
      this.replyError(peer, ctx, verf, pe, e, drcToken);
      pe.latency.observe((performance.now() - t0) / 1000);
      return this.callDone(peer);
    }
    if (res instanceof Promise) {
      const later = peer.detach();
      res.then(
        (value) => {
          this.replyResult(later, ctx, verf, pe, value, drcToken);
          pe.latency.observe((performance.now() - t0) / 1000);
          this.callDone(later);
        },
        (e) => {
          this.replyError(later, ctx, verf, pe, e, drcToken);
          pe.latency.observe((performance.now() - t0) / 1000);
          this.callDone(later);
        },
      );
      return;
    }
    this.replyResult(peer, ctx, verf, pe, res, drcToken);
    pe.latency.observe((performance.now() - t0) / 1000);
    this.callDone(peer);
  }

  private begin(t: number): void {
    if (t === T_TCP) beginRecord(this.w);
    else this.w.reset();
  }

  /** The reply in the writer, ready for peer.send: a copy, or a view of the writer where send copies it at once. */
  private finish(peer: Peer): Uint8Array {
    const w = this.w;
    if (peer.t === T_TCP) {
      if (!peer.copies) return endRecord(w, this.fragmentSize);
      const len = w.pos - 4;
      if (len > this.fragmentSize) return frameRecord(w.buf.subarray(4, w.pos), this.fragmentSize);
      w.patchUint(0, (LAST_FRAGMENT | len) >>> 0);
      return w.buf.subarray(0, w.pos);
    }
    if (peer.copies) return w.buf.subarray(0, w.pos);
    const out = Buffer.allocUnsafe(w.pos);
    out.set(w.buf.subarray(0, w.pos));
    return out;
  }

  private send(peer: Peer, reply: Uint8Array, drcToken: number): void {
    if (drcToken >= 0) this.drc!.complete(drcToken, reply);
    peer.send(reply);
  }

  private replyStatus(peer: Peer, xid: number, verf: OpaqueAuth, stat: number, drcToken = -1): void {
    this.begin(peer.t);
    writeAcceptedReply(this.w, xid, verf, stat);
    this.send(peer, this.finish(peer), drcToken);
  }

  private replyResult(peer: Peer, ctx: CallContext, verf: OpaqueAuth, pe: ProcEntry, value: unknown, drcToken: number): void {
    const t = peer.t;
    this.begin(t);
    writeAcceptedReply(this.w, ctx.xid, verf, AcceptStat.SUCCESS);
    try {
      pe.proc!.result.encode(this.w, value);
    } catch (e) {
      return this.replyError(peer, ctx, verf, pe, e, drcToken);
    }
    pe.counts[t * NR + R_SUCCESS]++;
    this.send(peer, this.finish(peer), drcToken);
  }

  private replyError(peer: Peer, ctx: CallContext, verf: OpaqueAuth, pe: ProcEntry, e: unknown, drcToken: number): void {
    const t = peer.t;
    if (e instanceof RpcAuthError) {
      pe.counts[t * NR + R_AUTH]++;
      this.begin(t);
      writeAuthErrorReply(this.w, ctx.xid, e.stat);
      return this.send(peer, this.finish(peer), drcToken);
    }
    const chosen = e instanceof RpcError ? HANDLER_STATUSES[e.kind] : undefined;
    if (!chosen) this.onHandlerError?.(e, ctx);
    const [stat, result] = chosen ?? [AcceptStat.SYSTEM_ERR, R_SYSERR];
    pe.counts[t * NR + result]++;
    this.replyStatus(peer, ctx.xid, verf, stat, drcToken);
  }
}
