// One TCP connection of the server: the peer its calls answer to, its record reader, the record waiting for a call
// slot, write backpressure (a peer that does not read its replies stops being read until the socket drains), the
// deadline of a record begun (a peer trickling a byte now and then cannot hold a connection forever), its idle clock
// (only a call served winds it: bytes, garbage and refused calls do not) and a peer's half-close (its calls are still
// answered). After an RPC-with-TLS probe its socket, reader and session are replaced by the TLS ones (secured()).
import type net from 'node:net';
import { RecordReader } from './record';
import { T_TCP, type Peer } from './server-peer';
import type { Admission } from './server-tcp-limits';
import type { TlsSession } from './tls';

/** What a connection needs of its transport. */
export interface ConnOwner {
  onRecord(rec: Buffer, c: TcpConn): void;
  /** Gather a reply of the chunk being served (a view of the writer: copied now). */
  stage(reply: Uint8Array): void;
  /** A record was begun more than the record timeout ago and is still not complete. */
  onRecordTimeout(c: TcpConn): void;
  /** No call was served for the idle timeout, and none is in progress or waiting. */
  onIdle(c: TcpConn): void;
  /** A probe was answered STARTTLS and its reply written: hand the socket to TLS. */
  upgradeTls(c: TcpConn): void;
}

/** A connection's limits (the transport's options). */
export interface ConnOptions {
  maxRecordSize: number;
  maxFragments: number;
  /** A record begun must be complete within this (0: no limit). */
  recordTimeoutMs: number;
  /** Close a connection that served no call for this long, with none in progress or waiting (0: never). */
  idleTimeoutMs: number;
}

/**
 * A deadline `ms` after the last start(). Moving it costs a clock read, not a timer: the one timer, when it fires,
 * re-arms itself for what is left. With ms 0 (or once disposed) it only keeps the time (`since`) and never expires.
 */
export class Deadline {
  /** When the clock was last started (performance.now()); -1 while stopped. */
  since = -1;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private ms: number,
    private readonly expired: () => void,
  ) {}

  get running(): boolean {
    return this.since >= 0;
  }

  start(): void {
    this.since = performance.now();
    if (this.ms > 0) this.timer ??= setTimeout(this.check, this.ms);
  }

  stop(): void {
    this.since = -1;
  }

  /** For good: a call that ends after its connection closed must not arm it again. */
  dispose(): void {
    this.ms = 0;
    this.stop();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private readonly check = (): void => {
    this.timer = null;
    if (this.since < 0) return;
    const left = this.since + this.ms - performance.now();
    if (left > 0) this.timer = setTimeout(this.check, left);
    else {
      this.since = -1;
      this.expired();
    }
  };
}

export class TcpConn implements Peer {
  readonly transport = 'tcp';
  readonly t = T_TCP;
  /** True while the records of a received chunk are served: replies are then gathered by the transport. */
  copies = false;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** The accepted socket, then the TLS socket over it once upgraded. */
  socket: net.Socket;
  reader: RecordReader;
  /** The TLS session once the connection is upgraded (RPC-with-TLS), else null. */
  tls: TlsSession | null = null;
  /** A probe was answered in the chunk being served: upgrade once its reply is written. */
  startTls = false;
  /**
   * The record waiting for a free call slot (maxInFlight reached). The reader stops after it, the rest of its chunk
   * kept unread until the record is served: a waiting connection holds its bytes, not an object per record.
   */
  parked: Buffer | null = null;
  writeBlocked = false;
  /** Calls of this connection whose handler has not finished. */
  active = 0;
  /** Since the last call served (or the connection began). */
  readonly idle: Deadline;
  /** Since the record being received was begun; and how many records came before it. */
  private readonly record: Deadline;
  private recordsBefore = 0;
  /** The peer shut down its side: it sends nothing more. */
  private ended = false;

  constructor(
    socket: net.Socket,
    private readonly owner: ConnOwner,
    readonly admission: Admission,
    private readonly o: ConnOptions,
  ) {
    this.socket = socket;
    this.address = socket.remoteAddress ?? '';
    this.port = socket.remotePort ?? 0;
    this.family = socket.remoteFamily === 'IPv4' ? 'IPv4' : 'IPv6';
    this.reader = this.newReader();
    this.record = new Deadline(o.recordTimeoutMs, () => owner.onRecordTimeout(this));
    this.idle = new Deadline(o.idleTimeoutMs, this.idleOut);
    this.idle.start();
  }

  private newReader(): RecordReader {
    return new RecordReader(this.o.maxRecordSize, (rec) => this.owner.onRecord(rec, this), this.o.maxFragments);
  }

  /** A record of this connection waits for a call slot: the server, not the peer, holds it (its clocks wait). */
  get held(): boolean {
    return this.parked !== null;
  }

  /** What the server may close to make room when full: no call in progress or waiting, not a reserved peer's. */
  get evictable(): boolean {
    return this.active === 0 && !this.held && !this.admission.reserved;
  }

  /** A plain connection with no call in progress, whose replies therefore cannot cross into TLS. */
  get upgradable(): boolean {
    return this.tls === null && !this.startTls && this.active === 0 && !this.held;
  }

  /** The probe was answered STARTTLS (the reader stopped): upgrade once the reply is written. */
  probeAnswered(): void {
    this.idle.start(); // a call served (once: a connection is upgraded once), so its handshake has the whole time
    // Inside a chunk the reply is gathered and written when the chunk is done; the upgrade follows it there.
    if (this.copies) this.startTls = true;
    else this.owner.upgradeTls(this);
  }

  /** The handshake is done: records now come from the TLS socket, through a new reader. */
  secured(s: net.Socket, session: TlsSession): void {
    this.socket = s;
    this.tls = session;
    this.reader = this.newReader();
    this.record.stop();
  }

  /**
   * After each received chunk, and when the server reads the connection again: start the clock of a record begun,
   * or stop it (no record begun, the peer can send no more, or the server holds the connection).
   */
  watchRecord(): void {
    const r = this.reader;
    if (!r.inRecord || this.ended || this.held) this.record.stop();
    else if (!this.record.running || r.records !== this.recordsBefore) {
      this.record.start();
      this.recordsBefore = r.records;
    }
  }

  private readonly idleOut = (): void => {
    if (this.active > 0 || this.held) this.idle.start();
    else this.owner.onIdle(this);
  };

  /** The peer shut down its side (half-close): end ours once its calls are answered. */
  peerEnded(): void {
    this.ended = true;
    this.record.stop();
    this.endIfDone();
  }

  /** Once the peer has ended and no call of its own is in progress or waiting; end() flushes the replies first. */
  endIfDone(): void {
    if (this.ended && this.active === 0 && !this.held) this.socket.end();
  }

  /** The socket closed. */
  closed(): void {
    this.record.dispose();
    this.idle.dispose();
    this.reader.stop();
    this.reader.takeRest();
    this.parked = null;
  }

  detach(): Peer {
    return this;
  }

  callStarted(): void {
    this.active++;
  }

  callFinished(): void {
    this.active--;
    this.idle.start();
    this.endIfDone();
  }

  send(reply: Uint8Array): void {
    if (this.socket.destroyed) return;
    if (this.copies) this.owner.stage(reply);
    else this.coalesce(reply);
  }

  /**
   * A reply from a handler that finished after its chunk was served: the replies of one tick (handlers resolved
   * together) leave in one write, and over TLS in one TLS record, instead of a syscall (and a record) each.
   */
  private coalesce(reply: Uint8Array): void {
    const s = this.socket;
    if (s.writableCorked === 0) {
      s.cork();
      process.nextTick(uncork, s);
    }
    this.write(reply);
  }

  write(reply: Uint8Array): void {
    if (!this.socket.write(reply) && !this.writeBlocked) {
      this.writeBlocked = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.writeBlocked = false;
        if (!this.held) this.socket.resume();
      });
    }
  }
}

function uncork(s: net.Socket): void {
  s.uncork();
}
