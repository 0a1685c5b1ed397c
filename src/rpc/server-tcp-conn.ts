// One TCP connection of the server: the peer its calls answer to, its record reader, the records waiting for a call
// slot, and write backpressure (a peer that does not read its replies stops being read until the socket drains).
import type net from 'node:net';
import { RecordReader } from './record';
import { T_TCP, type Peer } from './server-peer';

/** What a connection needs of its transport. */
export interface ConnOwner {
  onRecord(rec: Buffer, c: TcpConn): void;
  /** Gather a reply of the chunk being served (a view of the writer: copied now). */
  stage(reply: Uint8Array): void;
}

export class TcpConn implements Peer {
  readonly transport = 'tcp';
  readonly t = T_TCP;
  /** True while the records of a received chunk are served: replies are then gathered by the transport. */
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
    private readonly owner: ConnOwner,
    maxRecordSize: number,
  ) {
    this.address = socket.remoteAddress ?? '';
    this.port = socket.remotePort ?? 0;
    this.family = socket.remoteFamily === 'IPv4' ? 'IPv4' : 'IPv6';
    this.reader = new RecordReader(maxRecordSize, (rec) => owner.onRecord(rec, this));
  }

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
    else this.write(reply);
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
