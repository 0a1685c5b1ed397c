// The server's UDP transport. Where the addon is built, a batched socket (./udp-batch, native/udp.c): one recvmmsg
// drains up to `udpBatch` calls, every call of the batch is dispatched, the replies of synchronous handlers are
// copied straight from the writer into one send buffer and leave with one sendmmsg when the batch is done; a later
// answer (async handler) is sent on the next tick, with the others that came in the same tick. Each reply leaves from
// the address its call came to. Without the addon (or with udpBatch 0), Node's dgram serves a datagram at a time.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Dispatcher } from './server-dispatch';
import { noop, T_UDP, type Peer } from './server-peer';
import type { ServerCounters } from './server-stats';
import { BatchUdpSocket, batchedUdpAvailable, type BatchUdpCounters } from './udp-batch';

/** A UDP peer: no call state of its own. */
abstract class UdpPeerBase {
  readonly transport = 'udp';
  readonly t = T_UDP;
  readonly tls = null;
  callStarted(): void {}
  callFinished(): void {}
}

/** The sender of a datagram received through dgram. */
class UdpPeer extends UdpPeerBase implements Peer {
  readonly copies = false;
  constructor(
    private readonly udp: UdpTransport,
    private readonly socket: dgram.Socket,
    readonly address: string,
    readonly port: number,
    readonly family: 'IPv4' | 'IPv6',
  ) {
    super();
  }
  send(reply: Uint8Array): void {
    this.udp.sendDgram(this.socket, reply, this.port, this.address);
  }
  detach(): Peer {
    return this;
  }
}

/**
 * The peer of the call being dispatched from a batch: one object per socket, pointed at each datagram in turn. Its
 * replies join the batch's send queue; detach() saves the addresses for an answer that comes after the batch.
 */
class BatchUdpPeer extends UdpPeerBase implements Peer {
  readonly copies = true;
  readonly family: 'IPv4' | 'IPv6';
  address = '';
  port = 0;
  slot = 0;
  constructor(private readonly socket: BatchUdpSocket) {
    super();
    this.family = socket.family;
  }
  send(reply: Uint8Array): void {
    this.socket.reply(this.slot, reply);
  }
  detach(): Peer {
    return new SavedUdpPeer(this.socket, this.address, this.port, this.family, this.socket.saveMeta(this.slot));
  }
}

/** A batch peer kept for a later answer: its datagram's addresses saved. */
class SavedUdpPeer extends UdpPeerBase implements Peer {
  readonly copies = true;
  constructor(
    private readonly socket: BatchUdpSocket,
    readonly address: string,
    readonly port: number,
    readonly family: 'IPv4' | 'IPv6',
    private readonly meta: Uint32Array,
  ) {
    super();
  }
  send(reply: Uint8Array): void {
    this.socket.send(reply, this.meta);
  }
  detach(): Peer {
    return this;
  }
}

function literalLookup(
  address: string,
  family: unknown,
  cb: (err: Error | null, address: string, family: number) => void,
): void {
  cb(null, address, typeof family === 'number' ? family : net.isIPv4(address) ? 4 : 6);
}

export interface UdpOptions {
  /** Calls read, and replies sent, per system call by the batched socket; 0: dgram. */
  batch: number;
  /** Longest call received whole by the batched socket. */
  recvSize: number;
}

export type UdpSocket = dgram.Socket | BatchUdpSocket;

export class UdpTransport {
  private readonly sockets: UdpSocket[] = [];
  /** The dgram sockets' replies (a batched socket counts its own); dgram has no bounded queue to stall or overflow. */
  private readonly dgramReplies: BatchUdpCounters = { sent: 0, failed: 0, dropped: 0, stalls: 0 };
  // Without a completion callback dgram drops send errors silently (no 'error' event): this one counts them.
  private readonly dgramSent = (err: Error | null): void => {
    if (err) this.dgramReplies.failed++;
    else this.dgramReplies.sent++;
  };
  private closed = false;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly counters: ServerCounters,
    private readonly o: UdpOptions,
  ) {}

  /** Bind a socket; it serves calls once adopt()ed. */
  async bind(
    host: string,
    port: number,
  ): Promise<{ address: string; family: 'IPv4' | 'IPv6'; port: number; socket: UdpSocket }> {
    if (this.o.batch > 0 && batchedUdpAvailable()) {
      const s = await BatchUdpSocket.bind(host, port, { batch: this.o.batch, slotSize: this.o.recvSize });
      const peer = new BatchUdpPeer(s);
      s.onBatch(
        (count) => this.onBatch(s, peer, count),
        (err) => {
          throw err; // a socket that silently stopped reading would be worse
        },
      );
      return { address: s.address, family: s.family, port: s.port, socket: s };
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
        s.on('error', noop); // a receive error concerns one datagram only (send errors go to dgramSent)
        s.on('message', (msg, rinfo) => this.onDatagram(s, msg, rinfo));
        const a = s.address();
        resolve({ address: a.address, family: a.family === 'IPv4' ? 'IPv4' : 'IPv6', port: a.port, socket: s });
      });
    });
  }

  adopt(s: UdpSocket): void {
    this.sockets.push(s);
  }

  /** UDP replies sent, failed, dropped, and send-buffer stalls, over every socket. */
  replies(): BatchUdpCounters {
    const sum = { ...this.dgramReplies };
    for (const s of this.sockets) {
      if (!(s instanceof BatchUdpSocket)) continue;
      for (const k of Object.keys(sum) as (keyof BatchUdpCounters)[]) sum[k] += s.counters[k];
    }
    return sum;
  }

  /** A reply through dgram. One that comes after close() (a handler outliving the grace) is dropped: dgram throws. */
  sendDgram(s: dgram.Socket, reply: Uint8Array, port: number, address: string): void {
    if (this.closed) this.dgramReplies.dropped++;
    else s.send(reply, port, address, this.dgramSent);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.sockets) if (s instanceof BatchUdpSocket) s.close();
    await Promise.all(
      this.sockets.map((s) =>
        s instanceof BatchUdpSocket ? undefined : new Promise<void>((resolve) => s.close(() => resolve())),
      ),
    );
  }

  private onDatagram(s: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.dispatcher.closing) return;
    this.dispatcher.dispatch(
      msg,
      0,
      msg.length,
      new UdpPeer(this, s, rinfo.address, rinfo.port, rinfo.family === 'IPv4' ? 'IPv4' : 'IPv6'),
    );
  }

  /**
   * A batch of datagrams from a batched socket: each is dispatched in turn; the socket sends the replies after. What
   * escapes a dispatch (onHandlerError throwing) is rethrown once the rest of the batch is served, as it would have
   * escaped that datagram's own 'message' event.
   */
  private onBatch(s: BatchUdpSocket, peer: BatchUdpPeer, count: number): void {
    if (this.dispatcher.closing) return;
    const rx = s.rx;
    const size = s.slotSize;
    const lengths = s.rxLengths;
    let escaped: { e: unknown } | null = null;
    for (let i = 0; i < count; i++) {
      if (s.truncated(i)) {
        this.counters.garbageRecords[T_UDP]++;
        continue;
      }
      peer.slot = i;
      peer.address = s.peerAddress(i);
      peer.port = s.peerPort(i);
      try {
        this.dispatcher.dispatch(rx, i * size, lengths[i], peer);
      } catch (e) {
        escaped ??= { e };
      }
    }
    if (escaped) throw escaped.e;
  }
}
