// The DTI pipeline shared by the DSTM node, the TEP and static tunnels: batches in, batches out.
//
//   IPv4 side (TUN) ──encapBatch──▶ IPv6 packets for the raw socket   (+ ICMPv4 frag-needed back to TUN)
//   raw IPIP socket ──decapBatch──▶ IPv4 packets for TUN
//   raw ICMPv6 socket ─icmp6Batch─▶ ICMPv4 errors for TUN             (RFC 2473 §8 relay, path MTU learning)
//
// The pipeline itself does no I/O: it fills OutLists (offset/length lists) that the caller sends with one
// sendBatch per list (attach() wires real devices). Encapsulation and decapsulation are in place in the receive
// buffer; only fragments and ICMP errors are written to the pipeline's own scratch buffers, all allocated once.
// With TUN offloads (the TUN device's `offload`), TUN reads carry a virtio-net header: super-packets are
// segmented (offload.ts) into the TUN buffer's scratch region and each segment encapsulated like any packet, in
// order in the same toRaw list; partial checksums are completed. Decapsulated TCP segments are coalesced into
// super-packets (in the raw socket buffer's scratch) and every TUN write gets its virtio-net header.
// Per-packet decisions that depend on DSTM state (which TEP or node an IPv4 address maps to, anti-spoofing)
// are hooks, so the same code serves a node (one fixed TEP) and a TEP (bindings from the DSTM server).
import { Counters, Drop, DropCode, Event } from './counters';
import type { RxBatch } from './device';
import {
  DecapResult,
  EncapConfig,
  ICMP4_CODE_FRAG_NEEDED,
  ICMP4_CODE_HOST_UNREACH,
  ICMP4_DEST_UNREACH,
  Icmp6Relay,
  IPV6_MIN_MTU,
  IPV4_MIN_MTU,
  Ipv4Header,
  OK,
  RateTable,
  buildIcmpv4Error,
  decapsulate,
  encapsulate,
  fragmentIpv6,
  icmpv4ErrorAllowed,
  parseIcmpv6Error,
  parseIpv4,
  tunnelMtu,
} from './packet';
import {
  Coalescer,
  GSO_NONE,
  NO_ROOM,
  SegmentRoom,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  VnetHeader,
  WordSum,
  completeChecksum,
  readVnetHeader,
  segment,
  writePlainVnetHeader,
} from './offload';
import { HashKey } from '../lib/keyed-hash';

/**
 * Chooses the tunnel exit point for an IPv4 packet leaving by the DTI: the 16-byte IPv6 address (kept by the
 * caller, not allocated per call) or a Drop code (e.g. Drop.no_binding). A node returns its TEP; a TEP looks the
 * destination up in its bindings.
 */
export type EncapRoute = (innerSrc: number, innerDst: number) => Uint8Array | DropCode;

/**
 * Accepts or refuses a decapsulated packet: OK (0) or a Drop code. `buf[outerSrcOff..+16)` is the outer IPv6
 * source. A TEP checks that innerSrc is the address bound to that IPv6 source (anti-spoofing) and that the
 * source is inside its prefixes; a node checks that the packet comes from its TEP and is for its address.
 */
export type DecapPolicy = (buf: Uint8Array, outerSrcOff: number, innerSrc: number, innerDst: number) => DropCode;

/**
 * Vets an ICMPv6 error about one of our tunnel packets (parsed into `r`; the error itself at buf[off..]) before it
 * changes anything: OK or a Drop code. With this hook the path MTU is the hook's business: a TEP records it per
 * destination and serves it by pathMtuOf, a node (one destination) calls lowerPathMtu.
 */
export type Icmp6Policy = (buf: Uint8Array, off: number, r: Icmp6Relay) => DropCode;

/**
 * How long a path MTU lowered by packet-too-big holds before the configured one is tried again: RFC 8201 §4 allows
 * no sooner than 5 minutes after the last packet-too-big, §5.3 recommends 10 (the TEP's PathMtuCache uses the same).
 */
export const PATH_MTU_AGE_MS = 600_000;

export interface TunnelOptions {
  encap: EncapConfig;
  route: EncapRoute;
  accept?: DecapPolicy;
  /**
   * Path MTU towards the tunnel exit points (default 1500); lowered by ICMPv6 packet-too-big (lowerPathMtu) for
   * pathMtuAgeMs after the last one.
   */
  pathMtu?: number;
  /** Default PATH_MTU_AGE_MS. */
  pathMtuAgeMs?: number;
  /** Path MTU towards one exit point (≤ pathMtu), for a tunnel with many (a TEP); default: pathMtu for all. */
  pathMtuOf?: (dst: Uint8Array) => number;
  icmp6Policy?: Icmp6Policy;
  /** IPv4 source of the ICMPv4 errors we send (the DTI's or the TEP's IPv4 address). */
  icmpSource: number;
  /**
   * ICMPv4 errors per second and burst (RFC 1812 §4.3.2.8) for each key of each kind (ICMP_RATE_KEYS): host
   * unreachable and frag-needed per host they go to, relayed ICMPv6 errors per IPv4 destination of the packet they
   * quote (at a TEP, the node's address), so a flood of one kind, towards one host or about one node cannot starve
   * the others' errors; default 100/s, burst 50.
   */
  icmpRate?: number;
  icmpBurst?: number;
  /** Key of the rate tables' hash (HASH_KEY_BYTES); default random. Tests give one to know which keys share. */
  hashKey?: Uint8Array;
  /** Answer packets the route hook refuses with ICMPv4 host unreachable (rate-limited); default off. */
  unreachable?: boolean;
  /** Largest batch handled (the devices' batch size); default 64. */
  batch?: number;
  counters?: Counters;
  /** Monotonic clock in ms (tests inject one); default performance.now. */
  now?: () => number;
  /** Called when the path MTU changes: set, lowered by a packet-too-big, or back at the configured one. */
  onPathMtu?: (pathMtu: number, tunnelMtu: number) => void;
}

/** A list of packets in one buffer, ready for a device's sendBatch. */
export class OutList {
  count = 0;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;

  constructor(
    public buf: Uint8Array,
    readonly capacity: number,
  ) {
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  /** Appends a packet; false (nothing written) when the list is full, so count never exceeds the arrays. */
  push(off: number, len: number): boolean {
    if (this.count === this.capacity) return false;
    this.offsets[this.count] = off;
    this.lengths[this.count++] = len;
    return true;
  }
}

/** What sendBatch needs: satisfied by TunDevice and RawIpipSocket. */
export interface BatchSink {
  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  readonly txStatus: Int32Array;
  /** A TUN device whose reads and writes carry a virtio-net header. */
  readonly offload?: boolean;
  /** A TUN device whose batches go through io_uring. */
  readonly uring?: boolean;
}

/**
 * Sends an output list mid-batch, when it is too full for what comes next (with offloads one TUN batch can make
 * more segments, and outer fragments of them, than the lists hold); the pipeline then reuses the list.
 */
export type Spill = (list: OutList) => void;

export interface BatchSource {
  onBatch(cb: (count: number, rx: RxBatch) => void): void;
}

/** An ICMPv4 error (576 bytes at most) and the virtio-net header in front of it. */
const ICMP_SLOT = 576 + VNET_HDR_LEN;
/** Segments one TUN batch may add to toRaw before it is flushed (a spill): 64 KiB of 1-byte-MSS segments. */
const MAX_SEGMENTS = 4096;
/** Kinds of ICMPv4 error, each with its own rate-limit table. */
const UNREACHABLE = 0;
const FRAG_NEEDED = 1;
const RELAYED = 2;
type IcmpKind = typeof UNREACHABLE | typeof FRAG_NEEDED | typeof RELAYED;
/**
 * Buckets in each kind's rate table (16 bytes each): keys beyond share them, two keys one bucket with odds 1 in
 * this many (a keyed hash, so no one chooses which).
 */
export const ICMP_RATE_KEYS = 1024;
/** Fragments per packet we can emit: enough for a 9000-byte packet at the IPv6 minimum MTU. */
const MAX_FRAGS = 8;

export class Tunnel {
  readonly counters: Counters;
  readonly encap: EncapConfig;
  /** IPv6 packets for the raw socket: in place in the TUN receive buffer (buf is that buffer). */
  readonly toRaw: OutList;
  /** Outer fragments for the raw socket (RFC 2473 §7.2, DF=0 packets larger than the tunnel MTU). */
  readonly toRawFragments: OutList;
  /** IPv4 packets for TUN: decapsulated in place in the raw socket's receive buffer. */
  readonly toTun: OutList;
  /** ICMPv4 errors for TUN (frag-needed, RFC 2473 §8 relays). */
  readonly toTunIcmp: OutList;

  private pathMtu: number;
  private mtu: number;
  /** The configured path MTU (constructor, setPathMtu), which a lowered one returns to at raiseAt. */
  private configuredPathMtu: number;
  private readonly pathMtuAge: number;
  private raiseAt = 0;
  private fragId = (Math.random() * 0x100000000) >>> 0;
  private readonly route: EncapRoute;
  /** Answer what the route hook refuses with ICMPv4 host unreachable; settable (a TEP reloads it). */
  unreachable: boolean;
  private readonly accept: DecapPolicy | undefined;
  /** IPv4 source of the ICMPv4 errors we send; settable (a node learns its TEP's IPv4 address with the lease). */
  icmpSource: number;
  /** One rate table per kind of ICMPv4 error: unreachable, frag-needed, relayed. */
  private readonly limits: [RateTable, RateTable, RateTable];
  private readonly pathMtuOf: TunnelOptions['pathMtuOf'];
  private readonly icmp6Policy: Icmp6Policy | undefined;
  private readonly now: () => number;
  private readonly onPathMtu: TunnelOptions['onPathMtu'];
  private readonly h4 = new Ipv4Header();
  private readonly dr = new DecapResult();
  private readonly relay = new Icmp6Relay();
  private readonly fragSlot: number;
  /** TUN reads and writes carry virtio-net headers (set by attach() from the TUN device, or by tests). */
  private vnet = false;
  private readonly vh = new VnetHeader();
  private readonly ws = new WordSum();
  private readonly coalescer: Coalescer;
  private readonly room: SegmentRoom = { pos: 0, end: 0, headroom: 0, idx: 0, cap: 0 };
  /** The spill hook of the encapBatch call under way. */
  private spill: Spill | undefined;

  constructor(opts: TunnelOptions) {
    const batch = opts.batch ?? 64;
    this.counters = opts.counters ?? new Counters();
    this.encap = opts.encap;
    this.route = opts.route;
    this.unreachable = opts.unreachable ?? false;
    this.accept = opts.accept;
    this.icmpSource = opts.icmpSource;
    const hash = new HashKey(opts.hashKey);
    const table = (): RateTable => new RateTable(opts.icmpRate ?? 100, opts.icmpBurst ?? 50, ICMP_RATE_KEYS, hash);
    this.limits = [table(), table(), table()];
    this.pathMtuOf = opts.pathMtuOf;
    this.icmp6Policy = opts.icmp6Policy;
    this.now = opts.now ?? (() => performance.now());
    this.onPathMtu = opts.onPathMtu;
    this.pathMtu = opts.pathMtu ?? 1500;
    if (this.pathMtu < IPV6_MIN_MTU) throw new RangeError(`path MTU ${this.pathMtu} is below the IPv6 minimum 1280`);
    this.configuredPathMtu = this.pathMtu;
    this.pathMtuAge = opts.pathMtuAgeMs ?? PATH_MTU_AGE_MS;
    this.mtu = tunnelMtu(this.pathMtu, this.encap);
    const empty = new Uint8Array(0);
    this.toRaw = new OutList(empty, batch + MAX_SEGMENTS);
    this.coalescer = new Coalescer(batch);
    this.toTun = new OutList(empty, batch);
    const fragSlot = Math.max(this.pathMtu, 2048);
    this.toRawFragments = new OutList(new Uint8Array(batch * MAX_FRAGS * fragSlot), batch * MAX_FRAGS);
    this.fragSlot = fragSlot;
    this.toTunIcmp = new OutList(new Uint8Array(batch * ICMP_SLOT), batch);
  }

  /** Whether the TUN side carries virtio-net headers (offloads); the offload_active gauge follows. */
  get offload(): boolean {
    return this.vnet;
  }

  set offload(on: boolean) {
    this.vnet = on;
    this.counters.set(Event.offload_active, on ? 1 : 0);
  }

  /** The tunnel MTU: largest IPv4 packet sent unfragmented (path MTU − 40, − 8 more with an encap limit). */
  get tunnelMtu(): number {
    return this.mtu;
  }

  get currentPathMtu(): number {
    return this.pathMtu;
  }

  /**
   * IPv4 packets read from TUN → toRaw / toRawFragments (IPv6) and toTunIcmp (frag-needed, unreachable).
   * Validates each packet, asks the route hook for the exit point, applies the RFC 2473 §7.2 MTU rules and
   * encapsulates. Without `spill`, what does not fit the lists is dropped as queue_full.
   */
  encapBatch(count: number, rx: RxBatch, spill?: Spill): void {
    this.checkBatch(count);
    this.agePathMtu();
    this.spill = spill;
    const { buf, offsets, lengths } = rx;
    const c = this.counters;
    const h = this.h4;
    const v = this.vh;
    const out = this.toRaw;
    out.buf = buf;
    out.count = 0;
    this.toRawFragments.count = 0;
    this.toTunIcmp.count = 0;
    const room = this.room;
    room.pos = rx.scratch ?? buf.length;
    room.end = buf.length;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (this.vnet) readVnetHeader(buf, off - VNET_HDR_LEN, v);
      const code = parseIpv4(buf, off, len, h);
      if (code !== OK) {
        c.drop(code, buf, off, len);
        continue;
      }
      const dst = this.route(h.src, h.dst);
      if (typeof dst === 'number') {
        c.drop(dst, buf, off, len);
        if (this.unreachable) this.icmpError(UNREACHABLE, h.src, ICMP4_CODE_HOST_UNREACH, 0, buf, off, h.totalLen, h);
        continue;
      }
      if (this.vnet && v.gsoType !== GSO_NONE) {
        this.encapSegments(buf, off, len, dst, rx);
        continue;
      }
      if (this.vnet && (v.flags & VNET_F_NEEDS_CSUM) !== 0) {
        const bad = completeChecksum(buf, off, h.totalLen, v, this.ws);
        if (bad !== OK) {
          c.drop(bad, buf, off, len);
          continue;
        }
        c.count(Event.csum_completed);
      }
      this.encapOne(buf, off, len, dst);
    }
  }

  /** The RFC 2473 §7.2 MTU rules and encapsulation of one IPv4 packet (parsed into h4) to `dst`. */
  private encapOne(buf: Uint8Array, off: number, len: number, dst: Uint8Array): void {
    const c = this.counters;
    const h = this.h4;
    const pmtu = this.pathMtuOf === undefined ? this.pathMtu : this.pathMtuOf(dst);
    const mtu = pmtu === this.pathMtu ? this.mtu : this.mtuFor(pmtu);
    if (h.totalLen > mtu) {
      if (h.df) {
        c.drop(Drop.too_big_df, buf, off, len);
        this.icmpError(FRAG_NEEDED, h.src, ICMP4_CODE_FRAG_NEEDED, mtu, buf, off, h.totalLen, h);
      } else {
        this.encapFragmented(buf, off, h.totalLen, dst, pmtu);
      }
      return;
    }
    // A super-packet's segments may have filled toRaw (segment() only checks room for its own).
    const out = this.toRaw;
    if (out.count === out.capacity && this.spill !== undefined) {
      this.spill(out);
      out.count = 0;
    }
    const o = encapsulate(buf, off, h.totalLen, dst, 0, this.encap);
    if (o < 0) {
      c.drop(-o, buf, off, len);
      return;
    }
    if (!out.push(o, h.totalLen + this.encap.overhead)) {
      c.drop(Drop.queue_full, buf, off, len);
      return;
    }
    c.count(Event.encapsulated);
    c.count(Event.bytes_encapsulated, h.totalLen);
  }

  /**
   * A super-packet (virtio-net header in this.vh): segmented into the scratch region, then each segment goes the
   * way of any packet (encapOne). When the scratch or toRaw is full, toRaw is spilled and the room reused.
   */
  private encapSegments(buf: Uint8Array, off: number, len: number, dst: Uint8Array, rx: RxBatch): void {
    const c = this.counters;
    const spill = this.spill;
    const out = this.toRaw;
    const room = this.room;
    room.headroom = this.encap.overhead;
    room.cap = out.capacity;
    room.idx = out.count;
    let n = segment(buf, off, this.h4, this.vh, buf, room, out, this.ws);
    if (n === NO_ROOM && spill !== undefined && out.count > 0) {
      spill(out);
      out.count = 0;
      room.pos = rx.scratch ?? buf.length;
      room.idx = 0;
      n = segment(buf, off, this.h4, this.vh, buf, room, out, this.ws);
    }
    if (n < 0) {
      c.drop(n === NO_ROOM ? Drop.queue_full : -n, buf, off, len);
      return;
    }
    c.count(Event.gso_split);
    c.count(Event.gso_segments, n);
    // segment() listed the segments in toRaw; take them out and put each back encapsulated (or not at all).
    const first = room.idx - n;
    out.count = first;
    const h = this.h4;
    for (let k = first; k < first + n; k++) {
      const so = out.offsets[k];
      h.totalLen = out.lengths[k];
      this.encapOne(buf, so, h.totalLen, dst);
    }
  }

  private encapFragmented(buf: Uint8Array, off: number, len: number, dst: Uint8Array, pathMtu: number): void {
    const c = this.counters;
    const o = encapsulate(buf, off, len, dst, 0, this.encap);
    if (o < 0) {
      c.drop(-o, buf, off, len);
      return;
    }
    const fr = this.toRawFragments;
    if (fr.capacity - fr.count < MAX_FRAGS && this.spill !== undefined) {
      this.spill(fr);
      fr.count = 0;
    }
    const room = Math.min(MAX_FRAGS, fr.capacity - fr.count);
    this.fragId = (this.fragId + 1) >>> 0;
    const n = fragmentIpv6(
      buf,
      o,
      len + this.encap.overhead,
      pathMtu,
      this.fragId,
      fr.buf,
      fr.count * this.fragSlot,
      this.fragSlot,
      room,
      fr.lengths,
      fr.count,
    );
    if (n < 0) {
      c.drop(room < MAX_FRAGS ? Drop.queue_full : -n, buf, off, len);
      return;
    }
    for (let k = 0; k < n; k++) fr.offsets[fr.count + k] = (fr.count + k) * this.fragSlot;
    fr.count += n;
    c.count(Event.fragmented);
    c.count(Event.encapsulated);
    c.count(Event.bytes_encapsulated, len);
  }

  /** The tunnel MTU for a path MTU (never below the IPv4 minimum). */
  private mtuFor(pathMtu: number): number {
    return Math.max(tunnelMtu(pathMtu, this.encap), IPV4_MIN_MTU);
  }

  /**
   * Queues an ICMPv4 error (destination unreachable) about the packet at buf[off..+len) if allowed and not rate
   * limited in the bucket of `key`.
   */
  private icmpError(
    kind: IcmpKind,
    key: number,
    code: number,
    mtu: number,
    buf: Uint8Array,
    off: number,
    len: number,
    h: Ipv4Header,
  ): boolean {
    const list = this.toTunIcmp;
    if (!icmpv4ErrorAllowed(buf, off, h, len)) return false;
    if (list.count === list.capacity) {
      this.counters.drop(Drop.queue_full, buf, off, len);
      return false;
    }
    if (!this.limits[kind].take(key, this.now())) {
      this.counters.drop(Drop.icmp_rate_limited, buf, off, len);
      return false;
    }
    const at = list.count * ICMP_SLOT + VNET_HDR_LEN;
    const n = buildIcmpv4Error(
      ICMP4_DEST_UNREACH,
      code,
      mtu,
      this.icmpSource,
      buf,
      off,
      len,
      list.buf,
      at,
      ICMP_SLOT - VNET_HDR_LEN,
    );
    if (n < 0) {
      this.counters.drop(-n, buf, off, len);
      return false;
    }
    if (this.vnet) {
      writePlainVnetHeader(list.buf, at - VNET_HDR_LEN);
      list.push(at - VNET_HDR_LEN, n + VNET_HDR_LEN);
    } else {
      list.push(at, n);
    }
    this.counters.count(Event.icmp4_sent);
    return true;
  }

  /**
   * IPv6 packets from the raw IPIP socket → toTun (the inner IPv4 packets, in place). Validates and
   * decapsulates (encap-limit option accepted, RFC 6040 ECN, loop check) and applies the accept policy. With
   * offloads, toTun is then coalesced (GRO) and each entry starts with its virtio-net header; `beforeCoalesce` sees
   * (and may drop from) toTun while it still holds one IPv4 packet per entry.
   */
  decapBatch(count: number, rx: RxBatch, beforeCoalesce?: () => void): void {
    this.checkBatch(count);
    const { buf, offsets, lengths } = rx;
    const c = this.counters;
    const r = this.dr;
    const out = this.toTun;
    const self = this.encap;
    const accept = this.accept;
    out.buf = buf;
    out.count = 0;
    let bytes = 0;
    let marked = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (len === 0) {
        c.drop(Drop.rx_truncated); // cut to the slot by the kernel (device.ts): e.g. a reassembled tunnel packet
        continue;
      }
      let code = decapsulate(buf, off, len, r, self);
      if (code === OK && accept !== undefined) code = accept(buf, r.outerSrcOff, r.ip4.src, r.ip4.dst);
      if (code !== OK) {
        c.drop(code, buf, off, len);
        continue;
      }
      if (!out.push(r.innerOff, r.innerLen)) {
        c.drop(Drop.queue_full, buf, off, len);
        continue;
      }
      if (r.ecnChanged) marked++;
      bytes += r.innerLen;
    }
    c.count(Event.decapsulated, out.count);
    c.count(Event.bytes_decapsulated, bytes);
    c.count(Event.ecn_marked, marked);
    beforeCoalesce?.();
    if (this.vnet) {
      const g = this.coalescer;
      g.coalesce(out, rx.scratch ?? buf.length, buf.length);
      c.count(Event.gro_super_packets, g.stats.superPackets);
      c.count(Event.gro_merged, g.stats.merged);
      c.count(Event.gro_bad_checksum, g.stats.badChecksum);
    }
  }

  /**
   * ICMPv6 errors (from the raw ICMPv6 socket) → toTunIcmp. Those about our tunnel packets become ICMPv4 errors
   * to the original IPv4 source (RFC 2473 §8.2); packet-too-big also lowers the path MTU (RFC 2473 §7.1).
   */
  icmp6Batch(count: number, rx: RxBatch): void {
    this.checkBatch(count);
    this.agePathMtu();
    const { buf, offsets, lengths } = rx;
    const c = this.counters;
    const r = this.relay;
    this.toTunIcmp.count = 0;
    for (let i = 0; i < count; i++) {
      const off = offsets[i];
      const len = lengths[i];
      if (len === 0) {
        c.drop(Drop.rx_truncated);
        continue;
      }
      const code = parseIcmpv6Error(buf, off, len, this.encap.src, r);
      if (code !== OK) {
        c.drop(code, buf, off, len);
        continue;
      }
      // A packet-too-big no lower than the configured path MTU teaches nothing (the packet it quotes fitted), and
      // would otherwise be kept as a lowered path or relayed as a frag-needed naming the MTU already in use.
      if (r.pathMtu >= this.configuredPathMtu) {
        c.drop(Drop.icmp6_not_relayed, buf, off, len);
        continue;
      }
      if (this.icmp6Policy !== undefined) {
        const refused = this.icmp6Policy(buf, off, r);
        if (refused !== OK) {
          c.drop(refused, buf, off, len);
          continue;
        }
      } else if (r.pathMtu !== 0) {
        this.lowerPathMtu(r.pathMtu);
      }
      // What it taught (a path MTU) is kept; the error itself goes no further: a packet-too-big about a packet
      // without DF (fragmented instead), a parameter problem not at our option, or a quote no ICMPv4 error may be
      // sent about (an ICMP error, a fragment other than the first, a source that is not a unicast host).
      if (!r.relay || !icmpv4ErrorAllowed(buf, r.innerOff, r.ip4, r.innerLen)) {
        c.drop(Drop.icmp6_not_relayed, buf, off, len);
        continue;
      }
      const mtu = r.icmpCode === ICMP4_CODE_FRAG_NEEDED ? this.mtuFor(Math.min(r.pathMtu, this.pathMtu)) : 0;
      const relayed = this.icmpError(RELAYED, r.ip4.dst, r.icmpCode, mtu, buf, r.innerOff, r.innerLen, r.ip4);
      if (relayed) c.count(Event.icmp_relayed);
    }
  }

  /** The output lists hold one batch: a larger one is a configuration error (devices and pipeline disagree). */
  private checkBatch(count: number): void {
    if (count > this.toRaw.capacity) {
      throw new RangeError(`batch of ${count} packets exceeds the pipeline's batch size ${this.toRaw.capacity}`);
    }
  }

  /** Sets the configured path MTU, which then holds until a packet-too-big; the tunnel MTU follows. */
  setPathMtu(pathMtu: number): void {
    this.configuredPathMtu = Math.max(pathMtu, IPV6_MIN_MTU);
    this.applyPathMtu(this.configuredPathMtu);
    this.counters.count(Event.pmtu_updated);
  }

  /**
   * A packet-too-big (vetted by the caller): lowers the path MTU, never raises it, and keeps it for pathMtuAge after
   * the last one below the configured path MTU, however high (as the TEP's PathMtuCache), so a stale or forged one
   * does not hold for good.
   */
  lowerPathMtu(pathMtu: number): void {
    const p = Math.max(pathMtu, IPV6_MIN_MTU);
    if (p >= this.configuredPathMtu) return;
    this.raiseAt = this.now() + this.pathMtuAge;
    if (p >= this.pathMtu) return;
    this.applyPathMtu(p);
    this.counters.count(Event.pmtu_updated);
  }

  /** Back to the configured path MTU once a lowered one has aged (RFC 8201 §4); a compare per batch otherwise. */
  private agePathMtu(): void {
    if (this.pathMtu !== this.configuredPathMtu && this.now() >= this.raiseAt) {
      this.applyPathMtu(this.configuredPathMtu);
    }
  }

  private applyPathMtu(pathMtu: number): void {
    this.pathMtu = pathMtu;
    this.mtu = this.mtuFor(pathMtu);
    this.onPathMtu?.(this.pathMtu, this.mtu);
  }

  /** Sends a list with one sendBatch; refused packets count as send_failed, the unsent tail as queue_full. */
  flush(list: OutList, sink: BatchSink): void {
    if (list.count === 0) return;
    const sent = sink.sendBatch(list.buf, list.offsets, list.lengths, list.count);
    const failed = sink.txStatus[1];
    if (failed > 0) this.counters.dropMany(Drop.send_failed, failed);
    const unsent = list.count - sent - failed;
    if (unsent > 0) this.counters.dropMany(Drop.queue_full, unsent);
    list.count = 0;
  }

  /**
   * Wires devices: TUN batches are encapsulated to `raw`, raw batches decapsulated to `tun`, and ICMPv6 errors
   * (if an Icmp6ErrorSocket is given) relayed to `tun`.
   */
  attach(tun: BatchSource & BatchSink, raw: BatchSource & BatchSink, icmp6?: BatchSource): void {
    this.offload = tun.offload === true;
    this.counters.set(Event.tun_uring, tun.uring === true ? 1 : 0);
    const spill = (list: OutList): void => this.flush(list, raw);
    tun.onBatch((n, rx) => {
      this.encapBatch(n, rx, spill);
      this.flush(this.toRaw, raw);
      this.flush(this.toRawFragments, raw);
      this.flush(this.toTunIcmp, tun);
    });
    raw.onBatch((n, rx) => {
      this.decapBatch(n, rx);
      this.flush(this.toTun, tun);
    });
    icmp6?.onBatch((n, rx) => {
      this.icmp6Batch(n, rx);
      this.flush(this.toTunIcmp, tun);
    });
  }
}
