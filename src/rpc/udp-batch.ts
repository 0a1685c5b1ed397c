// A UDP socket that receives and sends datagrams a batch at a time (native/udp.c), for servers whose cost is per
// datagram: Node's dgram makes one system call, one Buffer, one rinfo object and one JavaScript callback per
// datagram received and one system call per datagram sent. Here, when the socket is readable, ONE recvmmsg drains
// up to `batch` datagrams into fixed slots of a buffer allocated once, JavaScript is called once, and the replies
// it queues leave with ONE sendmmsg when it returns.
//
// Each datagram's destination address is received too (IPV6_PKTINFO / IP_PKTINFO) and a reply to it is sent from
// that address: on a wildcard socket ([::] or 0.0.0.0) of a host with several addresses, the reply leaves from the
// address the call came to, as a client that checks the source of its replies needs.
//
//   const s = await BatchUdpSocket.bind('::', 0);
// s.onBatch((count) => { for (let i = 0; i < count; i++) s.reply(i, answer(s.datagram(i))); }, onError); // sent after
// const saved = s.saveMeta(i); ...later... s.send(bytes, saved); // next tick
//
// Linux only (recvmmsg/sendmmsg); batchedUdpAvailable() tells whether the addon is there.
import net from 'node:net';
import { loadAddon } from '../lib/addon';

/** Opaque handle of a native socket. */
type UdpHandle = { readonly __udp: unique symbol };

interface UdpAddon {
  udpOpen(
    host: string,
    port: number,
    ipv6: boolean,
    recvBufferSize: number,
  ): [fd: number, address: string, port: number];
  udpStart(
    fd: number,
    rx: Uint8Array,
    slotSize: number,
    meta: Uint32Array,
    lengths: Uint32Array,
    batch: number,
    ipv6: boolean,
    cb: (count: number) => void,
  ): UdpHandle;
  udpSend(
    h: UdpHandle,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    meta: Uint32Array,
    count: number,
    status: Int32Array,
  ): number;
  udpClose(h: UdpHandle): void;
  udpIfName(index: number): string;
  closeFd(fd: number): void;
}

/**
 * 32-bit words of metadata per datagram (see native/udp.c): peer address, scope, port, flags, family, local address.
 */
export const META_WORDS = 16;
const M_SCOPE = 4;
const M_PORT = 5;
const M_FLAGS = 6;
/** The datagram was longer than a slot: the kernel cut it short. */
export const UDP_TRUNCATED = 1;
/** A largest UDP payload: 65535 − 8 (UDP header) − 20 (an IPv4 header; IPv6 allows 65527 without jumbograms). */
const MAX_DATAGRAM = 65535;

let addon: UdpAddon | null | undefined;

function udpAddon(): UdpAddon {
  if (addon === undefined) {
    try {
      const a = loadAddon() as Partial<UdpAddon>;
      addon = process.platform === 'linux' && typeof a.udpOpen === 'function' ? (a as UdpAddon) : null;
    } catch {
      addon = null;
    }
  }
  if (!addon) throw new Error('batched UDP needs the native addon on Linux (npm rebuild)');
  return addon;
}

/** Whether BatchUdpSocket can be used here (Linux, addon built with native/udp.c). */
export function batchedUdpAvailable(): boolean {
  try {
    udpAddon();
    return true;
  } catch {
    return false;
  }
}

export interface BatchUdpOptions {
  /** Datagrams received per system call, and sent per system call (1–1024; default 64). */
  batch?: number;
  /** Bytes per receive slot: the longest datagram received whole (default 65536, any UDP datagram). */
  slotSize?: number;
  /** SO_RCVBUF (default 4 MiB, capped by net.core.rmem_max). */
  recvBufferSize?: number;
  /** Bytes of datagrams that may wait to be sent (default 1 MiB). */
  sendBufferBytes?: number;
  /** Datagrams that may wait to be sent, e.g. while the socket's send buffer is full (default 4 × batch). */
  sendQueue?: number;
}

/**
 * Datagrams sent, refused by the kernel (or longer than a datagram), and dropped: for want of room in the send queue
 * (the kernel's was full), or queued after close().
 */
export interface BatchUdpCounters {
  sent: number;
  failed: number;
  dropped: number;
  /** Times the kernel's send buffer was full (EAGAIN): sending then waited for the socket to drain. */
  stalls: number;
}

/**
 * Formats 16 address bytes as libuv's uv_inet_ntop does, so as dgram reports peers (ctx.peerAddress and the duplicate
 * request cache key stay what they were): RFC 5952, plus the "::a.b.c.d" and "::ffff:a.b.c.d" tails that
 * src/lib/addr.ts's formatIPv6 does not write (and the RPC runtime keeps to its own modules).
 */
function ntop6(b: Uint8Array, at: number): string {
  const w = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 8; i++) w[i] = (b[at + 2 * i] << 8) | b[at + 2 * i + 1];
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) best = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) s += ':';
      continue;
    }
    if (i !== 0) s += ':';
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      s += `${b[at + 12]}.${b[at + 13]}.${b[at + 14]}.${b[at + 15]}`;
      return s;
    }
    s += w[i].toString(16);
  }
  if (best >= 0 && best + bestLen === 8) s += ':';
  return s;
}

const CACHE = 64;

export class BatchUdpSocket {
  readonly family: 'IPv4' | 'IPv6';
  readonly batch: number;
  readonly slotSize: number;
  /** Received datagram i is rx[i * slotSize, + rxLengths[i]), its metadata rxMeta[i * META_WORDS, + META_WORDS). */
  readonly rx: Uint8Array;
  readonly rxLengths: Uint32Array;
  readonly rxMeta: Uint32Array;
  readonly counters: BatchUdpCounters = { sent: 0, failed: 0, dropped: 0, stalls: 0 };
  private readonly rxMetaBytes: Uint8Array;
  private readonly v6: boolean;
  private readonly a: UdpAddon;
  private handle: UdpHandle | null = null;
  private closed = false;
  // The send queue: datagram k is tx[txOffsets[k], + txLengths[k]) to the peer in txMeta[k * META_WORDS, ...).
  private readonly tx: Uint8Array;
  private readonly txOffsets: Uint32Array;
  private readonly txLengths: Uint32Array;
  private readonly txMeta: Uint32Array;
  private readonly txStatus = new Int32Array(3);
  private readonly txCap: number;
  private txCount = 0;
  private txUsed = 0;
  /** The last send found the socket's buffer full: wait for the writable callback. */
  private blocked = false;
  private flushQueued = false;
  private readonly flushSoon = (): void => {
    this.flushQueued = false;
    this.flush();
  };
  // Peer address text, direct-mapped by address and scope (a server hears the same few peers again and again).
  private readonly cacheKeys = new Uint32Array(CACHE * 5);
  private readonly cacheText: (string | undefined)[] = new Array<string | undefined>(CACHE);

  private constructor(
    private readonly fd: number,
    readonly address: string,
    readonly port: number,
    ipv6: boolean,
    opts: BatchUdpOptions,
  ) {
    this.a = udpAddon();
    this.v6 = ipv6;
    this.family = ipv6 ? 'IPv6' : 'IPv4';
    this.batch = opts.batch ?? 64;
    this.slotSize = opts.slotSize ?? 65536;
    if (!(Number.isInteger(this.batch) && this.batch >= 1 && this.batch <= 1024))
      throw new RangeError('batch must be 1–1024');
    if (!(Number.isInteger(this.slotSize) && this.slotSize >= 1 && this.slotSize <= 65536))
      throw new RangeError('slotSize must be 1–65536');
    // Zero-filled allocations are mapped lazily: slots only cost memory where datagrams were that long.
    this.rx = new Uint8Array(this.batch * this.slotSize);
    this.rxLengths = new Uint32Array(this.batch);
    this.rxMeta = new Uint32Array(this.batch * META_WORDS);
    this.rxMetaBytes = new Uint8Array(this.rxMeta.buffer);
    this.txCap = opts.sendQueue ?? 4 * this.batch;
    if (!(Number.isInteger(this.txCap) && this.txCap >= 1))
      throw new RangeError('sendQueue must be a positive integer');
    this.tx = new Uint8Array(Math.max(opts.sendBufferBytes ?? 1 << 20, MAX_DATAGRAM));
    this.txOffsets = new Uint32Array(this.txCap);
    this.txLengths = new Uint32Array(this.txCap);
    this.txMeta = new Uint32Array(this.txCap * META_WORDS);
  }

  /**
   * Binds a UDP socket to an IP literal (IPv6, possibly with %interface, is IPV6_V6ONLY; an IPv4 literal gives an
   * IPv4 socket). Port 0 picks one. Rejects with a Node-style error (code 'EADDRINUSE', ...) as dgram's bind does.
   */
  static async bind(host: string, port: number, opts: BatchUdpOptions = {}): Promise<BatchUdpSocket> {
    const a = udpAddon();
    const ipv6 = !net.isIPv4(host);
    const [fd, address, bound] = a.udpOpen(host, port, ipv6, opts.recvBufferSize ?? 4 << 20);
    try {
      return new BatchUdpSocket(fd, address, bound, ipv6, opts);
    } catch (e) {
      a.closeFd(fd);
      throw e;
    }
  }

  /**
   * Starts reading: `cb(count)` once per batch of received datagrams (see rx, rxLengths, rxMeta, datagram(i)); the
   * slots are reused by the next batch, so a datagram must be used (or copied) before cb returns. Replies queued
   * by cb are sent when it returns. If polling fails, reading stops and `onError` hears of it.
   */
  onBatch(cb: (count: number) => void, onError: (err: Error) => void): void {
    if (this.closed) throw new Error('the UDP socket is closed');
    if (this.handle) throw new Error('the UDP socket is already reading');
    this.handle = this.a.udpStart(
      this.fd,
      this.rx,
      this.slotSize,
      this.rxMeta,
      this.rxLengths,
      this.batch,
      this.v6,
      (count) => {
        if (count > 0) {
          try {
            cb(count);
          } finally {
            this.flush();
          }
        } else if (count === 0) {
          this.blocked = false;
          this.flush();
        } else {
          onError(new Error(`UDP socket ${this.address} port ${this.port}: polling failed (libuv error ${count})`));
        }
      },
    );
  }

  /** Received datagram i of the current batch, as a view of the receive buffer. */
  datagram(i: number): Uint8Array {
    return this.rx.subarray(i * this.slotSize, i * this.slotSize + this.rxLengths[i]);
  }

  /** Whether received datagram i was longer than a slot (its tail is lost). */
  truncated(i: number): boolean {
    return (this.rxMeta[i * META_WORDS + M_FLAGS] & UDP_TRUNCATED) !== 0;
  }

  peerPort(i: number): number {
    return this.rxMeta[i * META_WORDS + M_PORT];
  }

  /** The peer address of received datagram i, as Node's dgram reports it ('fe80::1%eth0' for a link-local peer). */
  peerAddress(i: number): string {
    const m = this.rxMeta;
    const o = i * META_WORDS;
    const w0 = m[o];
    const w1 = m[o + 1];
    const w2 = m[o + 2];
    const w3 = m[o + 3];
    const sc = m[o + M_SCOPE];
    const k =
      (Math.imul(
        w0 ^ Math.imul(w1, 0x9e3779b1) ^ Math.imul(w2, 0x85ebca6b) ^ Math.imul(w3 ^ sc, 0xc2b2ae35),
        0x27d4eb2f,
      ) >>>
        26) *
      5;
    const keys = this.cacheKeys;
    const hit = this.cacheText[k / 5];
    if (
      hit !== undefined &&
      keys[k] === w0 &&
      keys[k + 1] === w1 &&
      keys[k + 2] === w2 &&
      keys[k + 3] === w3 &&
      keys[k + 4] === sc
    )
      return hit;
    const b = this.rxMetaBytes;
    const at = o * 4;
    let text: string;
    if (!this.v6) text = `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
    else {
      text = ntop6(b, at);
      // As Node: a link-local peer's scope as its interface name.
      if (sc !== 0 && b[at] === 0xfe && (b[at + 1] & 0xc0) === 0x80) {
        const name = this.a.udpIfName(sc);
        if (name) text += `%${name}`;
      }
    }
    keys[k] = w0;
    keys[k + 1] = w1;
    keys[k + 2] = w2;
    keys[k + 3] = w3;
    keys[k + 4] = sc;
    this.cacheText[k / 5] = text;
    return text;
  }

  /** Queues `data` to the peer of received datagram i (of the current batch), from the address it came to. */
  reply(i: number, data: Uint8Array): void {
    this.queue(data, this.rxMeta, i * META_WORDS);
  }

  /** A copy of received datagram i's addresses, for send() after the batch (an answer that comes later). */
  saveMeta(i: number): Uint32Array {
    return this.rxMeta.slice(i * META_WORDS, (i + 1) * META_WORDS);
  }

  /** Queues `data` to the peer saved by saveMeta(); sent on the next tick with whatever else is queued by then. */
  send(data: Uint8Array, meta: Uint32Array): void {
    this.queue(data, meta, 0);
    if (!this.flushQueued && this.txCount > 0) {
      this.flushQueued = true;
      process.nextTick(this.flushSoon);
    }
  }

  private queue(data: Uint8Array, meta: Uint32Array, at: number): void {
    if (this.closed) {
      this.counters.dropped++;
      return;
    }
    const n = data.length;
    if (n > MAX_DATAGRAM) {
      this.counters.failed++; // as dgram's send: EMSGSIZE, for this datagram only
      return;
    }
    if (this.txCount === this.txCap || this.txUsed + n > this.tx.length) {
      this.flush();
      if (this.txCount === this.txCap || this.txUsed + n > this.tx.length) {
        this.counters.dropped++;
        return;
      }
    }
    const k = this.txCount++;
    this.tx.set(data, this.txUsed);
    this.txOffsets[k] = this.txUsed;
    this.txLengths[k] = n;
    this.txUsed += n;
    this.txMeta.set(meta.subarray(at, at + META_WORDS), k * META_WORDS);
  }

  /**
   * Sends what is queued (one sendmmsg per `batch` datagrams). What the kernel has no room for (EAGAIN) waits, and is
   * sent when the socket is writable again; meanwhile datagrams past the queue's room are dropped and counted.
   */
  flush(): void {
    if (this.txCount === 0 || this.blocked || this.closed) return;
    const done = this.a.udpSend(
      this.handle!,
      this.tx,
      this.txOffsets,
      this.txLengths,
      this.txMeta,
      this.txCount,
      this.txStatus,
    );
    this.counters.sent += this.txStatus[0];
    this.counters.failed += this.txStatus[1];
    if (done === this.txCount) {
      this.txCount = 0;
      this.txUsed = 0;
      return;
    }
    // The send buffer is full: keep the rest, at the front, until the addon says the socket is writable.
    this.blocked = true;
    this.counters.stalls++;
    const from = this.txOffsets[done];
    const left = this.txCount - done;
    this.tx.copyWithin(0, from, this.txUsed);
    for (let k = 0; k < left; k++) {
      this.txOffsets[k] = this.txOffsets[done + k] - from;
      this.txLengths[k] = this.txLengths[done + k];
    }
    this.txMeta.copyWithin(0, done * META_WORDS, this.txCount * META_WORDS);
    this.txCount = left;
    this.txUsed -= from;
  }

  /** Sends what is queued if the kernel takes it, then closes the socket (its port is free on return). */
  close(): void {
    if (this.closed) return;
    if (this.handle) {
      this.flush();
      this.closed = true;
      this.a.udpClose(this.handle);
      this.handle = null;
    } else {
      this.closed = true;
      this.a.closeFd(this.fd);
    }
  }
}
