// One TCP connection of the server: the peer its calls answer to, its record reader, the records waiting for a call
// slot, write backpressure (a peer that does not read its replies stops being read until the socket drains), and the
// deadline of a record begun (a peer trickling a byte now and then cannot hold a connection forever). After an
// RPC-with-TLS probe its socket, reader and session are replaced by the TLS ones (secured()).
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
  /** A probe was answered STARTTLS and its reply written: hand the socket to TLS. */
  upgradeTls(c: TcpConn): void;
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
  /** Records waiting for a free call slot (maxInFlight reached). */
  readonly backlog: Buffer[] = [];
  writeBlocked = false;
  /** Calls of this connection whose handler has not finished. */
  active = 0;
  /** When the record being received was begun (Date.now()), 0 when none is; and how many records came before it. */
  private recordSince = 0;
  private recordsBefore = 0;
  private deadline: NodeJS.Timeout | null = null;

  constructor(
    socket: net.Socket,
    private readonly owner: ConnOwner,
    private readonly maxRecordSize: number,
    private readonly maxFragments: number,
    readonly admission: Admission,
    private readonly recordTimeoutMs: number,
  ) {
    this.socket = socket;
    this.address = socket.remoteAddress ?? '';
    this.port = socket.remotePort ?? 0;
    this.family = socket.remoteFamily === 'IPv4' ? 'IPv4' : 'IPv6';
    this.reader = this.newReader();
  }

  private newReader(): RecordReader {
    return new RecordReader(this.maxRecordSize, (rec) => this.owner.onRecord(rec, this), this.maxFragments);
  }

  /** A plain connection with no call in progress, whose replies therefore cannot cross into TLS. */
  get upgradable(): boolean {
    return this.tls === null && !this.startTls && this.active === 0 && this.backlog.length === 0;
  }

  /** The probe was answered STARTTLS (the reader stopped): upgrade once the reply is written. */
  probeAnswered(): void {
    // Inside a chunk the reply is gathered and written when the chunk is done; the upgrade follows it there.
    if (this.copies) this.startTls = true;
    else this.owner.upgradeTls(this);
  }

  /** The handshake is done: records now come from the TLS socket, through a new reader. */
  secured(s: net.Socket, session: TlsSession): void {
    this.socket = s;
    this.tls = session;
    this.reader = this.newReader();
    this.recordSince = 0;
  }

  /** After each received chunk: start the clock of a record begun, or stop it. A timer only while one is running. */
  watchRecord(): void {
    const r = this.reader;
    if (!r.inRecord) {
      this.recordSince = 0;
      return;
    }
    if (this.recordSince === 0 || r.records !== this.recordsBefore) {
      this.recordSince = Date.now();
      this.recordsBefore = r.records;
    }
    this.deadline ??= setTimeout(this.checkDeadline, this.recordTimeoutMs);
  }

  /** The socket closed. */
  closed(): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.reader.stop();
    this.backlog.length = 0;
  }

  private readonly checkDeadline = (): void => {
    this.deadline = null;
    if (this.recordSince === 0 || this.socket.destroyed) return;
    const left = this.recordSince + this.recordTimeoutMs - Date.now();
    if (left > 0) this.deadline = setTimeout(this.checkDeadline, left);
    else this.owner.onRecordTimeout(this);
  };

  detach(): Peer {
    return this;
  }

  callStarted(): void {
    this.active++;
  }

  callFinished(): void {
    this.active--;
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
        if (this.backlog.length === 0) this.socket.resume();
      });
    }
  }
}

function uncork(s: net.Socket): void {
  s.uncork();
}
