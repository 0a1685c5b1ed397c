// Packet devices for the DTI: a TUN interface (the IPv4 side) and raw IPv6 sockets (the tunnel side).
//
// Each device owns ONE receive buffer of `batch` fixed-size slots, allocated at open. When the fd becomes
// readable the addon drains up to `batch` packets into it and calls the onBatch handler once; the handler must
// finish with the packets before returning (the next readable event reuses the slots). It may rewrite packets
// in place and send them straight from that buffer with another device's sendBatch (zero copy).
//
// Receive layout, per slot i (rx.offsets[i] is where the packet starts, rx.lengths[i] its length):
//   TunDevice:  the IPv4 packet at i*slotSize + HEADROOM, leaving room to write the outer IPv6 headers in front.
//               With offloads (IFF_VNET_HDR) its virtio-net header is the 10 bytes just before it, slots hold
//               64 KiB super-packets, and every packet written must start with a virtio-net header.
//   RawSocket6: a 40-byte IPv6 header rebuilt from the socket's metadata (source, destination, traffic class,
//               hop limit, next header = the socket's protocol) followed by the payload at i*slotSize. The
//               kernel has already reassembled fragments and consumed extension headers. Length 0 = truncated.
// After the slots, rx.buf may hold a scratch region rx.buf[rx.scratch ..) that the pipeline builds packets in
// (segments, coalesced super-packets), so that they are sent from the same buffer, in one list, in order.
import { fstatSync, readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { HEADROOM } from './packet';
import { Coalescer, MAX_SUPER, VNET_HDR_LEN } from './offload';
import { KIND_RAW, KIND_TUN, KIND_TUN_VNET, ReaderHandle, SenderHandle, native } from './native';

export interface DeviceOptions {
  /** Packets drained per readable event and the largest send batch (1–1024); default 64. */
  batch?: number;
  /** Bytes per receive slot, headroom included; default 2048 (TUN with offloads: 64 KiB + headroom). */
  slotSize?: number;
  /** Bytes of scratch after the slots (RxBatch.scratch); default 0 (raw IPIP socket: enough to coalesce a batch). */
  scratch?: number;
  /**
   * TUN: read and write batches through io_uring where the kernel has it (one system call a batch, not one a
   * packet); false: the read()/write() loop. Default true. Raw sockets batch with recvmmsg/sendmmsg anyway.
   */
  uring?: boolean;
}

/** The receive batch: packet i is buf[offsets[i] .. offsets[i] + lengths[i]) for i < count. */
export interface RxBatch {
  readonly buf: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  /** Start of the scratch region buf[scratch ..); absent or buf.length: none. */
  readonly scratch?: number;
}

export type BatchHandler = (count: number, rx: RxBatch) => void;

/** Outcome of the last sendBatch: sent, refused by the kernel (skipped), and the last errno (0 if none). */
export interface SendStatus {
  sent: number;
  failed: number;
  errno: number;
}

/** A /proc file of this network namespace; '' where it cannot be read (statistics then read 0). */
function readProc(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** A TUN slot with offloads: the headroom, then the largest IPv4 packet (its virtio-net header is in the headroom). */
const SUPER_SLOT = HEADROOM + MAX_SUPER + 1;
/** Scratch of a TUN device with offloads, where super-packets are segmented (flushed mid-batch when full). */
export const SEGMENT_SCRATCH = 1 << 20;

abstract class PacketDevice {
  readonly rx: RxBatch;
  readonly batch: number;
  readonly slotSize: number;
  /** [sent, failed, errno] of the last sendBatch; the unsent tail is count − sent − failed (EAGAIN/ENOBUFS). */
  readonly txStatus = new Int32Array(3);
  /** Whether batches go through io_uring (a TUN device whose kernel has it; the tun_uring gauge). */
  readonly uring: boolean;
  private reader: ReaderHandle | undefined;
  private readonly sender: SenderHandle;
  private closed = false;

  protected constructor(
    readonly fd: number,
    private readonly kind: number,
    private readonly proto: number,
    headroom: number,
    opts: DeviceOptions,
  ) {
    this.batch = opts.batch ?? 64;
    this.slotSize = opts.slotSize ?? (kind === KIND_TUN_VNET ? SUPER_SLOT : 2048);
    if (!(this.batch >= 1 && this.batch <= 1024)) throw new RangeError('batch must be 1–1024');
    // At most 64 KiB: a raw slot's length goes into the 16-bit payload length of the rebuilt IPv6 header; a TUN
    // slot with offloads holds a 64 KiB super-packet after the headroom.
    const maxSlot = kind === KIND_TUN_VNET ? SUPER_SLOT : 65536;
    if (!(this.slotSize >= HEADROOM + 576 && this.slotSize <= maxSlot)) {
      throw new RangeError(`slotSize must be ${HEADROOM + 576}–${maxSlot}`);
    }
    const scratch = opts.scratch ?? 0;
    if (!(scratch >= 0 && scratch <= 64 << 20)) throw new RangeError('scratch must be 0–64 MiB');
    const offsets = new Uint32Array(this.batch);
    for (let i = 0; i < this.batch; i++) offsets[i] = i * this.slotSize + headroom;
    const slots = this.batch * this.slotSize;
    this.rx = { buf: new Uint8Array(slots + scratch), offsets, lengths: new Uint32Array(this.batch), scratch: slots };
    [this.sender, this.uring] = native().newSender(this.batch, kind !== KIND_RAW && opts.uring !== false);
  }

  /**
   * Starts reading: `cb(count, rx)` once per readable event. Replaces any previous handler. If polling the fd
   * fails, reading stops and `onError` is called (without one, the error is thrown as an uncaught exception:
   * a device that silently stops reading would be worse).
   */
  onBatch(cb: BatchHandler, onError?: (err: Error) => void): void {
    this.stopReading();
    const rx = this.rx;
    const headroom = this.kind === KIND_RAW ? 0 : HEADROOM;
    this.reader = native().startReader(
      this.fd,
      this.kind,
      rx.buf,
      this.slotSize,
      headroom,
      rx.lengths,
      this.batch,
      this.proto,
      this.uring,
      (count) => {
        if (count >= 0) return cb(count, rx);
        this.stopReading();
        const err = new Error(`${this.describe()}: polling failed (libuv error ${count})`);
        if (!onError) throw err;
        onError(err);
      },
    );
  }

  protected abstract describe(): string;

  /** Stops reading (the fd stays open: an idle device no longer keeps the process alive). */
  stopReading(): void {
    if (this.reader) native().stopReader(this.reader);
    this.reader = undefined;
  }

  /**
   * Sends packets buf[offsets[i] .. +lengths[i]) for i < count in one call (for raw sockets each must be a full
   * IPv6 packet; its destination address is the kernel destination). Returns how many were sent; see txStatus.
   * Batches larger than `batch` are sent in several system calls.
   */
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.closed) throw new Error('device is closed');
    return native().sendBatch(this.sender, this.fd, this.kind, buf, offsets, lengths, count, this.txStatus);
  }

  lastSend(): SendStatus {
    return { sent: this.txStatus[0], failed: this.txStatus[1], errno: this.txStatus[2] };
  }

  close(): void {
    if (this.closed) return;
    this.stopReading();
    this.closed = true;
    native().closeFd(this.fd);
  }
}

export interface TunOptions extends DeviceOptions {
  /** Interface name (≤ 15 bytes); '' or absent lets the kernel choose (tunN). */
  name?: string;
  /** Interface MTU to set at open (the tunnel MTU: path MTU − 40, RFC 2473 §6.7). */
  mtu?: number;
  /**
   * Ask for offloads (IFF_VNET_HDR, TUNSETOFFLOAD: checksum, TSO4/6, USO4/6 where the kernel has them); falls back
   * to the plain device when the kernel refuses. Default off.
   */
  offload?: boolean;
  /**
   * Open the device with IFF_MULTI_QUEUE: the fd is one queue, and opening the same name again (from another
   * thread) attaches another; the kernel spreads the packets it routes into the device over the queues by flow.
   * A further queue has the offloads the first set (the kernel keeps the device's flags): asking for them on a
   * device without gets none, and a queue that ends up without them on a device with them throws. Default off.
   */
  multiQueue?: boolean;
}

/** TUN_F_* flags (linux/if_tun.h), as openTun reports them. */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08, USO4: 0x20, USO6: 0x40 } as const;

/**
 * A TUN interface (IFF_TUN | IFF_NO_PI): reads and writes bare IPv4 packets, or with offloads IPv4 packets and
 * super-packets behind a virtio-net header. Bring it up with netconfig.
 */
export class TunDevice extends PacketDevice {
  readonly name: string;
  /** Whether reads and writes carry a virtio-net header (the kernel took TUNSETOFFLOAD). */
  readonly offload: boolean;
  /** The TUN_F_* flags in use (0 on the plain path). */
  readonly offloadFlags: number;

  private constructor(fd: number, name: string, flags: number, opts: TunOptions) {
    super(fd, flags ? KIND_TUN_VNET : KIND_TUN, 0, HEADROOM, flags ? { scratch: SEGMENT_SCRATCH, ...opts } : opts);
    this.name = name;
    this.offload = flags !== 0;
    this.offloadFlags = flags;
  }

  static open(opts: TunOptions = {}): TunDevice {
    const want = opts.name ?? '';
    const room = (opts.slotSize ?? 2048) - HEADROOM;
    if (opts.mtu !== undefined && opts.mtu > room) {
      throw new RangeError(`MTU ${opts.mtu} exceeds the ${room}-byte receive slots`);
    }
    if (Buffer.byteLength(want) > 15) throw new Error(`interface name "${want}" is longer than 15 bytes`);
    // offload.ts reads virtio-net headers in the little-endian layout, which TUN uses on little-endian hosts.
    const offload = (opts.offload ?? false) && endianness() === 'LE';
    const [fd, name, flags] = native().openTun(want, offload, opts.multiQueue ?? false);
    try {
      const dev = new TunDevice(fd, name, flags, opts);
      if (opts.mtu !== undefined) dev.setMtu(opts.mtu);
      return dev;
    } catch (err) {
      native().closeFd(fd);
      throw err;
    }
  }

  setMtu(mtu: number): void {
    native().setMtu(this.name, mtu);
  }

  /**
   * Packets the kernel routed into the device and dropped because the transmit queue (txqueuelen; for TUN, the ring
   * of packets not yet read) was full: tx_dropped of the whole device, all queues, from /proc/net/dev of this
   * network namespace. Read on demand (statistics), never per packet; 0 once the device is gone.
   */
  txDropped(): number {
    const line = readProc('/proc/net/dev')
      .split('\n')
      .find((l) => l.trimStart().startsWith(`${this.name}:`));
    if (!line) return 0;
    // after "NAME:", 8 receive columns, then transmit bytes, packets, errs, drop
    const columns = line.slice(line.indexOf(':') + 1).trim();
    return Number(columns.split(/\s+/)[11]);
  }

  protected describe(): string {
    return `TUN ${this.name}`;
  }
}

export interface RawOptions extends DeviceOptions {
  /** Source address to bind (the address of the interface the tunnel leaves by, draft §5.3). 16 bytes. */
  bind?: Uint8Array;
  /** Restrict to one interface (SO_BINDTODEVICE). */
  device?: string;
  /**
   * Receive and send buffer of the socket (SO_RCVBUFFORCE, SO_SNDBUFFORCE), in bytes, SOCKET_BUFFER_MIN to
   * SOCKET_BUFFER_MAX: what arrives while the process is off the CPU waits there. Default DEFAULT_SOCKET_BUFFER.
   */
  bufferBytes?: number;
  /**
   * One of several sockets sharing the protocol's packets (one per queue): keep only those of queue `index` of
   * `count` (native attachQueueFilter: a hash of the inner flow). Default: every packet.
   */
  queue?: { index: number; count: number };
}

/** Raw socket buffers (RawOptions.bufferBytes): 4 MiB, a few thousand small packets, by default. */
export const DEFAULT_SOCKET_BUFFER = 4 << 20;
export const SOCKET_BUFFER_MIN = 64 << 10;
export const SOCKET_BUFFER_MAX = 1 << 30;

/** A raw IPv6 socket for one protocol: see RawIpipSocket and Icmp6ErrorSocket. */
export class RawSocket6 extends PacketDevice {
  protected constructor(
    fd: number,
    readonly protocol: number,
    opts: RawOptions,
  ) {
    super(fd, KIND_RAW, protocol, 0, opts);
  }

  /** Options with the scratch that always lets the pipeline coalesce a whole batch (Coalescer.scratchFor). */
  protected static withGroScratch(opts: RawOptions): RawOptions {
    const batch = opts.batch ?? 64;
    return { scratch: Coalescer.scratchFor(batch, batch * (opts.slotSize ?? 2048)) + VNET_HDR_LEN, ...opts };
  }

  protected describe(): string {
    return `raw IPv6 socket (protocol ${this.protocol})`;
  }

  /**
   * Packets the kernel dropped in front of this socket, its receive queue being full (sk_drops: the "drops" column
   * of /proc/net/raw6, found by the socket's inode). Read on demand (statistics), never per packet; 0 once closed.
   */
  kernelDrops(): number {
    const inode = String(this.inode);
    for (const line of readProc('/proc/net/raw6').split('\n')) {
      const f = line.trim().split(/\s+/);
      // sl local remote st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
      if (f[9] === inode) return Number(f[12]);
    }
    return 0;
  }

  private readonly inode = fstatSync(this.fd).ino;

  protected static openFd(protocol: number, opts: RawOptions): number {
    if (opts.device && Buffer.byteLength(opts.device) > 15) throw new Error(`interface name "${opts.device}" too long`);
    const size = opts.bufferBytes ?? DEFAULT_SOCKET_BUFFER;
    if (!(Number.isInteger(size) && size >= SOCKET_BUFFER_MIN && size <= SOCKET_BUFFER_MAX)) {
      throw new RangeError(`socket buffer must be ${SOCKET_BUFFER_MIN}–${SOCKET_BUFFER_MAX} bytes`);
    }
    return native().openRaw6(protocol, opts.bind ?? null, opts.device ?? '', size);
  }
}

/**
 * IPv4-in-IPv6 (next header 4) on a raw socket: receives every tunnel packet addressed to this host (as
 * IPv6 header + IPv4 packet, see the layout above) and sends complete IPv6 packets built by encapsulate()
 * (IPV6_HDRINCL), fragments included.
 */
export class RawIpipSocket extends RawSocket6 {
  static open(opts: RawOptions = {}): RawIpipSocket {
    const fd = RawSocket6.openFd(4, opts);
    try {
      if (opts.queue && opts.queue.count > 1) native().attachQueueFilter(fd, opts.queue.index, opts.queue.count);
      return new RawIpipSocket(fd, 4, RawSocket6.withGroScratch(opts));
    } catch (err) {
      native().closeFd(fd);
      throw err;
    }
  }
}

/**
 * ICMPv6 error messages (destination unreachable, packet too big, time exceeded, parameter problem) addressed
 * to this host, for relaying those about our tunnel packets to the IPv4 source (RFC 2473 §8). Receive only.
 */
export class Icmp6ErrorSocket extends RawSocket6 {
  static open(opts: RawOptions = {}): Icmp6ErrorSocket {
    const fd = RawSocket6.openFd(58, opts);
    try {
      return new Icmp6ErrorSocket(fd, 58, opts);
    } catch (err) {
      native().closeFd(fd);
      throw err;
    }
  }

  override sendBatch(): number {
    throw new Error('Icmp6ErrorSocket is receive-only');
  }
}
