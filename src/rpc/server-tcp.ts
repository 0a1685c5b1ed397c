// The server's TCP transport: listening, accepting connections, feeding each connection's byte stream to its record
// reader, holding records while every call slot is taken, and gathering the replies to the records of one received
// chunk (a pipelining client) into one write (replies of handlers that finish later are gathered per tick, TcpConn).
//
// Every connection passes through accept() (its admission and set-up) and every received chunk through receive()
// (chunk -> records -> dispatch): a layer below the records (TLS) belongs at these two places. RPC-with-TLS: once
// the reply to a probe is written, upgradeTls() hands the socket (and what came after the probe) to TLS, and the
// TLS socket is served like the accepted one (wire()).
//
// Limits: admission by ConnectionLimits (total, per peer prefix, a reserved share), where a newcomer to a full server
// takes the slot of the connection longest without a call (so idle connections cannot lock peers out); a record
// begun must be complete within recordTimeoutMs; a connection that served no call for idleTimeoutMs is closed. Both
// clocks wait while the server holds a connection's records (every call slot taken).
//
// A peer may shut down its side after its calls (half-close): they are answered, then the connection is ended.
import net from 'node:net';
import type { Dispatcher } from './server-dispatch';
import { noop } from './server-peer';
import type { ServerCounters } from './server-stats';
import { TcpConn, type ConnOptions } from './server-tcp-conn';
import { ConnectionLimits, type Admission, type ConnectionLimitOptions, type Refusal } from './server-tcp-limits';
import type { RpcTlsServer } from './tls';

export interface TcpOptions extends ConnectionLimitOptions, ConnOptions {
  /** RPC-with-TLS: what upgrades a connection after its probe (answered by the dispatcher's TlsGate); null: none. */
  tls: RpcTlsServer | null;
}

export class TcpTransport {
  private readonly servers: net.Server[] = [];
  private readonly conns = new Set<TcpConn>();
  /** Connections with records waiting for a call slot. */
  private readonly waiting = new Set<TcpConn>();
  /** Replies to the records of the chunk being served, sent as one write when the chunk is done. */
  private out = new Uint8Array(16384);
  private outLen = 0;
  private gathering = false;
  private draining = false;
  private readonly limits: ConnectionLimits;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly counters: ServerCounters,
    private readonly o: TcpOptions,
  ) {
    this.limits = new ConnectionLimits(o);
    for (const k of ['recordTimeoutMs', 'idleTimeoutMs'] as const)
      if (!(o[k] >= 0)) throw new RangeError(`${k} must be 0 or more`);
    dispatcher.onCallDone = () => {
      if (this.waiting.size > 0) this.feedWaiting();
    };
  }

  get connections(): number {
    return this.conns.size;
  }

  get reservedConnections(): number {
    return this.limits.reservedCount;
  }

  /** Listen; connections are served at once (adopt() the server to have close() close it). */
  listen(
    host: string,
    port: number,
  ): Promise<{ address: string; family: 'IPv4' | 'IPv6'; port: number; socket: net.Server }> {
    // allowHalfOpen: a peer that shuts down its side after its calls still gets their replies.
    const srv = net.createServer({ noDelay: true, allowHalfOpen: true }, (sock) => this.accept(sock));
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port, ipv6Only: net.isIPv6(host), backlog: 511 }, () => {
        srv.off('error', reject);
        const a = srv.address() as net.AddressInfo;
        resolve({ address: a.address, family: a.family === 'IPv4' ? 'IPv4' : 'IPv6', port: a.port, socket: srv });
      });
    });
  }

  adopt(srv: net.Server): void {
    this.servers.push(srv);
  }

  /** Stop accepting connections. */
  stopListening(): void {
    for (const s of this.servers) s.close();
  }

  /** Close every connection; resolves when the listeners are closed. */
  async close(): Promise<void> {
    for (const c of this.conns) {
      this.drop(c);
      c.socket.uncork(); // replies gathered for this tick (TcpConn) leave before the connection closes
      c.socket.destroy();
    }
    await Promise.all(
      this.servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.once('close', resolve) : resolve()))),
    );
  }

  /** A new connection: admitted, or refused (closed at once, counted). */
  private accept(sock: net.Socket): void {
    // remoteAddress is undefined for a socket already reset by its peer.
    const address = sock.remoteAddress;
    const admission = this.dispatcher.closing || !address ? null : this.admit(address);
    if (admission === null || typeof admission === 'string') {
      if (admission === 'full') this.counters.tcp.refusedFull++;
      else if (admission === 'perPeer') this.counters.tcp.refusedPerPeer++;
      else if (!address) this.counters.tcp.refusedNoAddress++;
      sock.on('error', noop);
      sock.destroy();
      return;
    }
    const c = new TcpConn(sock, this, admission, this.o);
    this.conns.add(c);
    this.wire(c, sock);
  }

  /**
   * Admission by the limits. When the server is full, the connection longest without a call makes room; when the
   * newcomer's peer (a /64: usually a whole LAN of nodes) is at its own limit, that peer's connection longest without
   * a call does. So idle connections, a flood's or those nodes leave open after their calls, keep no one out, and a
   * peer over its limit still takes no other peer's slot.
   */
  private admit(address: string): Admission | Refusal {
    const admission = this.limits.admit(address);
    if (typeof admission !== 'string') return admission;
    const idlest = this.idlest(admission === 'perPeer' ? this.limits.peerKey(address) : null);
    if (!idlest) return admission;
    this.counters.tcp.evictedIdle++;
    this.drop(idlest);
    idlest.socket.destroy();
    return this.limits.admit(address);
  }

  /** The evictable connection longest without a call: of `peer` (an Admission.key), or of any peer. */
  private idlest(peer: string | null): TcpConn | null {
    let found: TcpConn | null = null;
    for (const c of this.conns)
      if (
        c.evictable &&
        (peer === null || c.admission.key === peer) &&
        (found === null || c.idle.since < found.idle.since)
      )
        found = c;
    return found;
  }

  /** Forget a connection and free its slot (at once: an evicted connection's slot is taken before it closes). */
  private drop(c: TcpConn): void {
    if (!this.conns.delete(c)) return;
    c.closed();
    this.limits.leave(c.admission);
    this.waiting.delete(c);
  }

  /** Serve a connection's socket: the accepted one, then the TLS socket that replaces it after a probe. */
  private wire(c: TcpConn, sock: net.Socket): void {
    sock.on('data', (chunk: Buffer) => this.receive(c, chunk));
    sock.on('error', noop);
    // Not the plain socket under a TLS one.
    sock.on('end', () => {
      if (c.socket === sock) c.peerEnded();
    });
    sock.on('close', () => {
      if (c.socket === sock) this.drop(c);
    });
  }

  /** Bytes received on a connection: to its record reader, which hands each complete record to onRecord. */
  private receive(c: TcpConn, chunk: Buffer): void {
    // Replies to the records of one chunk are gathered and leave in one write.
    // (Chunks are not served inside one another; if one ever were, its replies would simply be written directly.)
    let cut: string | null;
    if (this.gathering) cut = c.reader.push(chunk);
    else {
      this.gathering = c.copies = true;
      try {
        cut = c.reader.push(chunk);
      } finally {
        this.gathering = c.copies = false;
        this.flush(c);
      }
    }
    this.afterPush(c, cut);
  }

  /** After the reader was fed: the record clock, a cut-off stream closed, or the upgrade after a probe. */
  private afterPush(c: TcpConn, cut: string | null): void {
    c.watchRecord();
    if (cut !== null) {
      if (c.reader.cut === 'fragments') this.counters.tcp.tooManyFragments++;
      else this.counters.tcp.oversizedRecords++;
      c.socket.destroy();
    } else if (c.startTls) this.upgradeTls(c);
  }

  /** After the reply to a probe: hand the socket, and what came after the probe, to TLS; serve the TLS socket. */
  upgradeTls(c: TcpConn): void {
    c.startTls = false;
    const raw = c.socket;
    raw.removeAllListeners('data');
    this.o.tls!.upgrade(raw, c.reader.takeRest(), (s, session) => {
      if (this.dispatcher.closing || raw.destroyed) return s.destroy();
      c.secured(s, session);
      this.wire(c, s);
    });
  }

  onRecordTimeout(c: TcpConn): void {
    this.counters.tcp.recordTimeouts++;
    c.socket.destroy();
  }

  onIdle(c: TcpConn): void {
    this.counters.tcp.idleTimeouts++;
    c.socket.destroy();
  }

  /** A complete record: dispatched, or kept until a call slot is free (the reader stops after it, see parked). */
  onRecord(rec: Buffer, c: TcpConn): void {
    if (this.dispatcher.closing) return;
    if (this.dispatcher.full) {
      c.parked = rec;
      c.reader.stop();
      c.socket.pause();
      this.waiting.add(c);
      return;
    }
    this.dispatcher.dispatch(rec, 0, rec.length, c);
  }

  stage(reply: Uint8Array): void {
    const n = this.outLen + reply.length;
    if (n > this.out.length) {
      const bigger = new Uint8Array(Math.max(n, this.out.length * 2));
      bigger.set(this.out.subarray(0, this.outLen));
      this.out = bigger;
    }
    this.out.set(reply, this.outLen);
    this.outLen = n;
  }

  private flush(c: TcpConn): void {
    const n = this.outLen;
    if (n === 0) return;
    this.outLen = 0;
    // Let a burst's buffer go rather than keep it for good.
    const big = this.out;
    if (big.length > 1 << 20) this.out = new Uint8Array(16384);
    if (c.socket.destroyed) return;
    const out = Buffer.allocUnsafe(n);
    out.set(big.subarray(0, n));
    c.write(out);
  }

  /** A call slot came free: serve waiting records, and the rest of their chunks, oldest connection first. */
  private feedWaiting(): void {
    // Not re-entered: a synchronous handler dispatched from here calls back in, and the loop below goes on instead.
    if (this.draining) return;
    this.draining = true;
    for (const c of this.waiting) {
      while (c.parked !== null && !this.dispatcher.full) {
        const rec = c.parked;
        c.parked = null;
        this.dispatcher.dispatch(rec, 0, rec.length, c);
        this.afterPush(c, c.reader.resume()); // may park the next record
      }
      if (c.held) break;
      this.waiting.delete(c);
      c.watchRecord();
      c.endIfDone();
      if (!c.writeBlocked) c.socket.resume();
    }
    this.draining = false;
  }
}
