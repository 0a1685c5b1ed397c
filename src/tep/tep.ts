// The DSTM border router (TEP, draft §3, §4, §5.3): IPv4-in-IPv6 from the DSTM domain is decapsulated and handed
// to the kernel's IPv4 forwarding through a TUN device routed for the pool; IPv4 for pool addresses comes back
// through that TUN and is encapsulated to the IPv6 node bound to the destination.
//
//   nodes ==IPv6==> raw IPIP socket --decap + anti-spoofing--> TUN dstm-tep0 --kernel IPv4 forwarding--> IPv4 LAN
//   IPv4 LAN --kernel: route pool dev dstm-tep0--> TUN --binding lookup + encap--> raw IPIP socket ==IPv6==> node
//
// Which node holds which address comes from the DSTM server's binding feed (or static Annex A mappings), never
// from traffic: a tunnelled packet is forwarded only if its inner IPv4 source is the address bound to its outer
// IPv6 source, and IPv4 for a pool address goes only to the node that address is bound to, until the binding ends.
import { Counters, Drop, Event, dropLoggerTo, type DropCode } from '../dti/counters';
import { Icmp6ErrorSocket, RawIpipSocket, TunDevice } from '../dti/device';
import { EncapConfig, IPV6_HDR, OK, bytesEqual, encapsulate, readU32, type Icmp6Relay } from '../dti/packet';
import { formatIPv4, formatIPv6, formatPrefix4, type Prefix4, type Prefix6, prefixContains4 } from '../lib/addr';
import { OutList, Tunnel, type Spill } from '../dti/tunnel';
import type { RxBatch } from '../dti/device';
import type { Logger } from '../lib/log';
import type { Registry } from '../lib/metrics';
import { BindingTable, runChunked, type Binding, type BindingSource, type BindingTraffic } from './bindings';
import { Ipv4Set } from './ipv4-set';
import { isOwnAddress } from './own-addresses';
import { PMTU_KEPT, PMTU_LOWERED, PathMtuCache } from './pmtu';
import { readReassembly, type ReassemblyStats } from './reassembly';
import { Ipv6PrefixList } from './prefixes';
import { jsonSeconds, type BindingJson } from '../protocol/binding-json';
import { leasable4 } from '../config/types';
import { HashKey } from '../lib/keyed-hash';

export interface StaticMapping {
  ipv4: number;
  ipv6: Uint8Array;
}

export interface TepOptions {
  /** The TEP's IPv6 address: nodes tunnel to it, and it is the outer source of what it sends them. */
  address: Uint8Array;
  /** The TEP's IPv4 address (the DTI peer given to nodes; source of the ICMPv4 errors it sends). */
  ipv4: number;
  /** IPv4 prefixes routed into the TUN device: the DSTM server's pools. */
  pools: Prefix4[];
  /** IPv6 prefixes of the DSTM domain; tunnelled packets from elsewhere are dropped. Empty: any source. */
  prefixes: Prefix6[];
  statics: StaticMapping[];
  /** Name of the TUN device. */
  device: string;
  /** Path MTU towards the nodes; the TUN MTU is 40 less (RFC 2473 §6.7). */
  pathMtu: number;
  /**
   * Answer IPv4 for addresses no node holds with ICMPv4 host unreachable (rate-limited), as a router does; default on.
   */
  unreachable?: boolean;
  /** TUN offloads (TSO/GRO through virtio-net headers) when the kernel has them; default on. */
  offload?: boolean;
  batch?: number;
  /** Receive and send buffer of the raw sockets, in bytes (RawOptions.bufferBytes); default DEFAULT_SOCKET_BUFFER. */
  socketBuffer?: number;
  /**
   * This pipeline's share of the traffic when several run (src/tep/queues.ts): queue `index` of `count` of the
   * multi-queue TUN device and of the tunnel packets (its raw socket's filter). Default: one queue, everything.
   */
  queue?: { index: number; count: number };
  log: Logger;
  /** Wall clock in ms (tests inject one); default Date.now. */
  clock?: () => number;
  /**
   * Slots the binding table starts with (rounded up to a power of two; default 16): the table doubles when full, a
   * step that stops forwarding for a moment, so a TEP that expects N bindings can size it once, at start.
   */
  bindingCapacity?: number;
  /** Monotonic clock in ms of the ICMP rate limits (tests inject one); default performance.now. */
  monotonic?: () => number;
  /**
   * Key of the hashes of the tables others' addresses index (bindings, path MTUs, ICMP rate limits; HASH_KEY_BYTES);
   * default random. For tests.
   */
  hashKey?: Uint8Array;
}

/** A binding as `dstm tep stats` shows it: the binding of dstm(1), its source and its traffic (snake_case). */
export type StatsBinding = BindingJson & { source: BindingSource; forwarded: TrafficJson };

/**
 * Packets and IPv4 bytes forwarded from the nodes to the IPv4 side (to_ipv4) and to the nodes, from the IPv4 side
 * or hairpinned from another node (to_ipv6). A type, not an interface: the queues' counters are summed key by key as
 * a Record<string, number>.
 */
export type TrafficJson = {
  to_ipv4: number;
  to_ipv6: number;
  bytes_to_ipv4: number;
  bytes_to_ipv6: number;
};

/** A binding's traffic in its JSON form; none (no binding) is all zeros. */
export function trafficJson(f?: BindingTraffic): TrafficJson {
  return f
    ? { to_ipv4: f.toIpv4, to_ipv6: f.toIpv6, bytes_to_ipv4: f.bytesToIpv4, bytes_to_ipv6: f.bytesToIpv6 }
    : { to_ipv4: 0, to_ipv6: 0, bytes_to_ipv4: 0, bytes_to_ipv6: 0 };
}

/**
 * One forwarding queue's share: what it forwarded, packets it dropped (all reasons), nodes whose path MTU it lowered,
 * and the bindings of its replica of the table (the same on every queue once the last change has reached them all).
 */
export type QueueJson = TrafficJson & { dropped: number; path_mtu_lowered: number; binding_count: number };

/** The counters of `dstm tep stats`, in the JSON form of dstm(1) (snake_case; times in seconds since 1970). */
export interface TepStats {
  forwarded: TrafficJson;
  drops: Record<string, number>;
  events: Record<string, number>;
  /** Bindings in force (all of them, even when `bindings` lists only the first STATS_BINDINGS). */
  binding_count: number;
  bindings: StatsBinding[];
  /** The TOP_TALKERS bindings that forwarded the most bytes. */
  top_talkers: StatsBinding[];
  /** Nodes whose path MTU a packet-too-big lowered (for PMTU_DEFAULTS.ageMs). */
  path_mtu_lowered: number;
  /** The kernel's reassembly of IPv6 fragments (tunnel packets arrive whole); absent where /proc cannot be read. */
  ipv6_reassembly?: ReassemblyStats;
  /** What each forwarding queue forwarded and dropped (one entry per queue; `forwarded` and `drops` sum them). */
  queues: QueueJson[];
}

/** Bindings listed in `stats()` (by IPv4 address), so the answer stays small with 10^6 of them. */
export const STATS_BINDINGS = 10_000;
/** Bindings in `top_talkers` and the dstm_tep_binding_bytes_total metric. */
export const TOP_TALKERS = 10;
/** Bindings staged per event-loop turn in a resync: forwarding goes on between chunks. */
const RESYNC_CHUNK = 4096;

/** A binding as the feed gives it: `starts` and `ends` in seconds since 1970. */
export interface ServerBinding {
  ipv4: number;
  ipv6: Uint8Array;
  starts: number;
  ends: number;
}

/** Drop reasons the TEP adds to the DTI's (Drop.no_binding, spoofed_source and outside_prefix are built in). */
const UNBOUND_SOURCE = 'unbound_source'; // tunnelled packet from an IPv6 node that holds no binding
const ICMP6_OUTSIDE_PREFIX = 'icmp6_outside_prefix'; // ICMPv6 error from a source outside the domain's prefixes
const ICMP6_UNBOUND = 'icmp6_unbound'; // ICMPv6 error quoting a tunnel packet no binding explains (forged or stale)
const ICMP6_FROM_NODE = 'icmp6_from_node'; // ICMPv6 error from the node the tunnel packet it quotes went to
/** Drops the kernel counts in front of the TEP (Tep.kernelDrops), shown among the reasons. */
const KERNEL_RX_OVERFLOW = 'kernel_rx_overflow'; // a raw socket's receive queue was full (tunnel packets, ICMPv6)
const TUN_TX_DROPPED = 'tun_tx_dropped'; // the TUN device's transmit queue was full (IPv4 for the nodes)

export class Tep {
  readonly bindings: BindingTable;
  readonly counters = new Counters();
  readonly tunnel: Tunnel;
  private domain: Ipv6PrefixList;
  private readonly unboundSource: DropCode;
  private readonly icmp6OutsidePrefix: DropCode;
  private readonly icmp6Unbound: DropCode;
  private readonly icmp6FromNode: DropCode;
  /** Path MTU per node, learnt from ICMPv6 packet-too-big that quote a packet of a binding (finding 8). */
  readonly pmtu: PathMtuCache;
  private readonly clock: () => number;
  /** Coarse wall clock (ms) for binding end checks, refreshed by the sweep timer rather than read per packet. */
  private now: number;
  private timer: NodeJS.Timeout | undefined;
  private tun: TunDevice | undefined;
  private raw: RawIpipSocket | undefined;
  private icmp6: Icmp6ErrorSocket | undefined;
  /** Sends a list to the raw socket now (mid-batch, when offloads fill toRaw or toRawFragments); set by open(). */
  private sendToRaw: Spill | undefined;
  /** Where the encapBatch call under way sends what it spills. */
  private send: Spill | undefined;
  /** Hairpinned packets (node to node, not leaving to IPv4): in place in the raw socket's receive buffer. */
  readonly toRawHairpin: OutList;
  private readonly hairpin = new Float64Array(2); // packets, bytes
  /**
   * Told when a packet-too-big lowers or renews a node's path MTU here, so that the other queues learn it
   * (lowerPathMtu).
   */
  onPathMtuLowered: ((node: Uint8Array, mtu: number) => void) | undefined;
  private resyncs = 0;
  /** What the warm-up passes read (kept so they are not optimised away), and their scratch. */
  warmth = 0;
  private readonly warmKeys: Uint32Array;
  private readonly warmOffs: Uint32Array;
  /**
   * What is routed into the TUN device, the only addresses a packet can be hairpinned to: the pools as [first, last]
   * pairs (a few prefixes, scanned) and the static addresses (thousands in Annex A deployments, a hash set).
   */
  private poolRanges: Float64Array;
  private staticSet: Ipv4Set;
  private readonly hash: HashKey;

  constructor(readonly opts: TepOptions) {
    // draft §2.2: a silently discarded packet can be logged with its contents (at debug level)
    if (opts.log.enabled('debug')) this.counters.logger = dropLoggerTo(opts.log);
    this.domain = new Ipv6PrefixList(opts.prefixes);
    this.unboundSource = this.counters.define(UNBOUND_SOURCE);
    this.icmp6OutsidePrefix = this.counters.define(ICMP6_OUTSIDE_PREFIX);
    this.icmp6Unbound = this.counters.define(ICMP6_UNBOUND);
    this.icmp6FromNode = this.counters.define(ICMP6_FROM_NODE);
    this.clock = opts.clock ?? Date.now;
    this.hash = new HashKey(opts.hashKey);
    this.bindings = new BindingTable(opts.bindingCapacity, this.hash);
    this.pmtu = new PathMtuCache(undefined, undefined, this.hash);
    this.now = this.clock();
    this.tunnel = new Tunnel({
      encap: new EncapConfig(opts.address),
      pathMtu: opts.pathMtu,
      pathMtuOf: (dst) => this.pmtu.get(dst, 0, this.now, this.tunnel.currentPathMtu),
      icmp6Policy: (buf, off, r) => this.vetIcmp6(buf, off, r),
      icmpSource: opts.ipv4,
      hashKey: opts.hashKey,
      now: opts.monotonic,
      unreachable: opts.unreachable ?? true,
      batch: opts.batch,
      counters: this.counters,
      route: (_src, dst) => {
        const slot = this.bindings.findByIpv4(dst, this.now);
        return slot < 0 ? Drop.no_binding : this.bindings.ipv6At(slot);
      },
      accept: (buf, srcOff, innerSrc) => {
        if (!this.domain.contains(buf, srcOff)) return Drop.outside_prefix;
        const slot = this.bindings.findByIpv6(buf, srcOff, this.now);
        if (slot < 0) return this.unboundSource;
        return this.bindings.ipv4At(slot) === innerSrc ? 0 : Drop.spoofed_source;
      },
    });
    // hairpinning and per-binding counting find the inner packet right after a 40-byte outer header
    if (this.tunnel.encap.overhead !== IPV6_HDR) throw new Error('the TEP sends no encapsulation limit option');
    this.toRawHairpin = new OutList(new Uint8Array(0), opts.batch ?? 64);
    this.warmKeys = new Uint32Array(opts.batch ?? 64);
    this.warmOffs = new Uint32Array(opts.batch ?? 64);
    for (const s of opts.statics) this.bindings.set(s.ipv4, s.ipv6, Infinity, 'static');
    this.poolRanges = poolRanges(opts.pools);
    this.staticSet = new Ipv4Set(
      opts.statics.map((s) => s.ipv4),
      this.hash,
    );
  }

  /** Whether IPv4 address `a` is routed into the TUN device: O(pools), whatever the number of static mappings. */
  private isRouted(a: number): boolean {
    const r = this.poolRanges;
    for (let i = 0; i < r.length; i += 2) if (a >= r[i] && a <= r[i + 1]) return true;
    return this.staticSet.has(a);
  }

  // --- forwarding: the shared pipeline, then the TEP's own steps on its output ---------------------------------

  /**
   * IPv4 from the TUN device → tunnel packets to nodes (Tunnel.encapBatch), counted per binding. With offloads the
   * pipeline may send toRaw or toRawFragments mid-batch through `send` (the raw socket once open() ran): what the
   * list holds is counted first.
   */
  encapBatch(count: number, rx: RxBatch, send: Spill | undefined = this.sendToRaw): void {
    const t = this.tunnel;
    const keys = this.warmKeys;
    for (let i = 0; i < count; i++) keys[i] = rx.lengths[i] >= 20 ? readU32(rx.buf, rx.offsets[i] + 16) : 0;
    this.warmth = this.bindings.warm4(keys, count);
    this.send = send;
    t.encapBatch(count, rx, send && this.spill);
    this.countEncapsulated();
    this.countFragments();
  }

  /** Counts what a list spilled mid-batch holds, then sends it (made once: no allocation per batch). */
  private readonly spill = (list: OutList): void => {
    if (list === this.tunnel.toRaw) this.countEncapsulated();
    else this.countFragments();
    this.send!(list);
  };

  /** Counts the tunnel packets in toRaw on the bindings they go to. */
  private countEncapsulated(): void {
    const now = this.now;
    const out = this.tunnel.toRaw;
    for (let i = 0; i < out.count; i++) {
      const slot = this.bindings.findByIpv4(readU32(out.buf, out.offsets[i] + IPV6_HDR + 16), now);
      if (slot >= 0) this.bindings.countToIpv6(slot, out.lengths[i] - IPV6_HDR);
    }
  }

  /** Counts the tunnel packets in toRawFragments on the bindings they go to, each once, by its first fragment. */
  private countFragments(): void {
    const now = this.now;
    const fr = this.tunnel.toRawFragments;
    for (let i = 0; i < fr.count; i++) {
      const o = fr.offsets[i];
      if (((fr.buf[o + 42] << 8) | fr.buf[o + 43]) & 0xfff8) continue;
      const inner = o + IPV6_HDR + 8;
      const slot = this.bindings.findByIpv4(readU32(fr.buf, inner + 16), now);
      if (slot >= 0) this.bindings.countToIpv6(slot, (fr.buf[inner + 2] << 8) | fr.buf[inner + 3]);
    }
  }

  /**
   * Tunnel packets from nodes → IPv4 for the TUN device (Tunnel.decapBatch: checks, anti-spoofing), counted per
   * binding; a packet for another node's address is hairpinned: re-encapsulated to that node (toRawHairpin).
   */
  decapBatch(count: number, rx: RxBatch): void {
    const t = this.tunnel;
    const keys = this.warmKeys;
    let n = 0;
    for (let i = 0; i < count; i++) {
      if (rx.lengths[i] < IPV6_HDR + 20) continue;
      keys[n] = readU32(rx.buf, rx.offsets[i] + IPV6_HDR + 12);
      this.warmOffs[n++] = rx.offsets[i];
    }
    this.warmth = this.bindings.warm6(rx.buf, this.warmOffs, 8, n) + this.bindings.warm4(keys, n);
    // the TEP's steps run on whole IPv4 packets, before the pipeline coalesces them (offloads)
    t.decapBatch(count, rx, this.afterDecap);
  }

  /**
   * Hairpinning and per-binding counting of the decapsulated packets in toTun, which keeps the rest. A hairpinned
   * packet counts as to_ipv6 on the binding it goes to, never as to_ipv4 (it does not reach IPv4).
   */
  private readonly afterDecap = (): void => {
    const out = this.tunnel.toTun;
    const buf = out.buf;
    const hp = this.toRawHairpin;
    hp.buf = buf;
    hp.count = 0;
    const now = this.now;
    let kept = 0;
    for (let i = 0; i < out.count; i++) {
      const off = out.offsets[i];
      const len = out.lengths[i];
      const dst = readU32(buf, off + 16);
      const to = this.isRouted(dst) ? this.bindings.findByIpv4(dst, now) : -1;
      if (to >= 0 && this.hairpinTo(to, buf, off, len)) continue;
      const from = this.bindings.findByIpv4(readU32(buf, off + 12), now);
      if (from >= 0) this.bindings.countToIpv4(from, len);
      out.offsets[kept] = off;
      out.lengths[kept++] = len;
    }
    out.count = kept;
  };

  /**
   * Forwards the IPv4 packet at buf[off..+len) tunnel to tunnel, to the node in `slot`, as a router would: TTL
   * decremented. What needs an ICMPv4 error (TTL 1, too big for that node's path) is left to the kernel's path
   * back into the TUN device, which sends it; returns whether the packet was hairpinned.
   */
  private hairpinTo(slot: number, buf: Uint8Array, off: number, len: number): boolean {
    const ttl = buf[off + 8];
    if (ttl <= 1) return false;
    const dst = this.bindings.ipv6At(slot);
    if (len + IPV6_HDR > this.pmtu.get(dst, 0, this.now, this.tunnel.currentPathMtu)) return false;
    const o = encapsulate(buf, off, len, dst, 0, this.tunnel.encap);
    if (o < 0) return false;
    buf[off + 8] = ttl - 1;
    let sum = ((buf[off + 10] << 8) | buf[off + 11]) + 0x0100; // RFC 1624 incremental update, as Linux does it
    if (sum >= 0xffff) sum = (sum + 1) & 0xffff;
    buf[off + 10] = sum >>> 8;
    buf[off + 11] = sum & 0xff;
    this.toRawHairpin.push(o, len + IPV6_HDR);
    this.bindings.countToIpv6(slot, len);
    this.hairpin[0]++;
    this.hairpin[1] += len;
    return true;
  }

  /**
   * Finding 8: an ICMPv6 error changes nothing unless it comes from inside the domain's prefixes and quotes a tunnel
   * packet the TEP could have sent: to a node (outer destination) that holds the quoted inner IPv4 destination.
   * A packet-too-big then lowers the path MTU towards that node only, for PathMtuCache's age.
   * Nor does one from that node itself: the packet reached it, so nothing on the way failed. What a node may say
   * about a tunnel packet it received (unrecognised next header while its DTI is down, a reassembly timeout) is
   * nothing for the IPv4 source, and a packet-too-big comes from a router that could not forward, never from the
   * destination; relaying them would let a node send ICMPv4 errors from the TEP to any IPv4 host it names.
   */
  private vetIcmp6(buf: Uint8Array, off: number, r: Icmp6Relay): number {
    this.now = this.clock();
    if (!this.domain.contains(buf, off + 8)) return this.icmp6OutsidePrefix;
    const node = r.outer.upperOff + 8 + 24; // the quoted outer header's destination
    if (bytesEqual(buf, off + 8, buf, node, 16)) return this.icmp6FromNode;
    const slot = this.bindings.findByIpv4(r.ip4.dst, this.now);
    if (slot < 0 || !this.bindings.ipv6Is(slot, buf, node)) return this.icmp6Unbound;
    // below the configured path MTU (Tunnel.icmp6Batch drops the others); a renewal reaches the other queues too
    const did = r.pathMtu === 0 ? PMTU_KEPT : this.pmtu.lower(buf, node, r.pathMtu, this.now);
    if (did === PMTU_LOWERED) this.counters.count(Event.pmtu_updated);
    if (did !== PMTU_KEPT) this.onPathMtuLowered?.(buf.slice(node, node + 16), r.pathMtu);
    return OK;
  }

  /** A path MTU another queue learnt from a packet-too-big (only queue 0 reads ICMPv6 errors). */
  lowerPathMtu(node: Uint8Array, mtu: number): void {
    this.now = this.clock();
    this.pmtu.lower(node, 0, mtu, this.now);
  }

  /**
   * Applies what can change while forwarding (a reload): the domain's prefixes, the pools (the caller reroutes
   * the TUN device for routedPrefixes()), the static mappings and unreachable.
   */
  reconfigure(c: Pick<TepOptions, 'prefixes' | 'pools' | 'statics' | 'unreachable'>): void {
    this.domain = new Ipv6PrefixList(c.prefixes);
    // one synchronous step between two batches; a mapping that stays keeps its slot and counters
    const next = new Map(c.statics.map((n) => [n.ipv4, n.ipv6]));
    const stays = (s: StaticMapping): boolean => {
      const v6 = next.get(s.ipv4);
      return v6 !== undefined && bytesEqual(v6, 0, s.ipv6, 0, 16);
    };
    for (const s of this.opts.statics) if (!stays(s)) this.bindings.delete(s.ipv4);
    for (const s of c.statics) this.bindings.set(s.ipv4, s.ipv6, Infinity, 'static');
    this.opts.prefixes = c.prefixes;
    this.opts.pools = c.pools;
    this.opts.statics = c.statics;
    this.poolRanges = poolRanges(c.pools);
    this.staticSet = new Ipv4Set(
      c.statics.map((s) => s.ipv4),
      this.hash,
    );
    this.tunnel.unreachable = c.unreachable ?? true;
  }

  /** The IPv4 prefixes the TUN device is routed for: the pools plus static addresses outside them. */
  routedPrefixes(): string[] {
    const statics = this.opts.statics.filter((s) => !this.opts.pools.some((p) => prefixContains4(p, s.ipv4)));
    return [...this.opts.pools.map(formatPrefix4), ...statics.map((s) => `${formatIPv4(s.ipv4)}/32`)];
  }

  /** Opens the devices and starts forwarding (the TUN device still has to be brought up and routed). */
  open(): TunDevice {
    const batch = this.opts.batch;
    const queue = this.opts.queue ?? { index: 0, count: 1 };
    this.tun = TunDevice.open({
      name: this.opts.device,
      mtu: queue.index === 0 ? this.tunnel.tunnelMtu : undefined,
      batch,
      offload: this.opts.offload ?? true,
      multiQueue: queue.count > 1,
    });
    // A further queue has the device's offloads, as queue 0 set them (openTun), whatever it asked: it was told
    // queue 0's (queues.ts), so a difference means the device is not the one queue 0 made.
    if (queue.index > 0 && this.tun.offload !== (this.opts.offload ?? true)) {
      const [got, asked] = [this.tun.offload, this.opts.offload ?? true].map((on) => (on ? 'on' : 'off'));
      this.tun.close();
      this.tun = undefined;
      throw new Error(
        `TUN device ${this.opts.device}: queue ${queue.index} got offloads ${got}, asked for ${asked} (queue 0's)`,
      );
    }
    const bufferBytes = this.opts.socketBuffer;
    this.raw = RawIpipSocket.open({ bind: this.opts.address, batch, queue, bufferBytes });
    // ICMPv6 errors are rare: queue 0 alone relays them and tells the others what path MTU it learnt
    if (queue.index === 0) this.icmp6 = Icmp6ErrorSocket.open({ bind: this.opts.address, batch, bufferBytes });
    // Tunnel.attach's wiring, with the TEP's steps (per-binding counters, hairpinning) after the pipeline's
    const [t, tun, raw] = [this.tunnel, this.tun, this.raw];
    t.offload = tun.offload === true;
    this.counters.set(Event.tun_uring, tun.uring ? 1 : 0);
    this.sendToRaw = (list: OutList): void => t.flush(list, raw);
    tun.onBatch((n, rx) => {
      this.encapBatch(n, rx);
      t.flush(t.toRaw, raw);
      t.flush(t.toRawFragments, raw);
      t.flush(t.toTunIcmp, tun);
    });
    raw.onBatch((n, rx) => {
      this.decapBatch(n, rx);
      t.flush(t.toTun, tun);
      t.flush(this.toRawHairpin, raw);
    });
    this.icmp6?.onBatch((n, rx) => {
      t.icmp6Batch(n, rx);
      t.flush(t.toTunIcmp, tun);
    });
    this.timer = setInterval(() => this.tick(), 250);
    return this.tun;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const d of [this.icmp6, this.raw, this.tun]) d?.close();
    this.tun = this.raw = this.icmp6 = this.sendToRaw = undefined;
  }

  // --- bindings from the DSTM server's feed -------------------------------------------------------------------

  /** `ipv6` holds `ipv4` from `startsSec` (0: unknown) until `endsSec` (seconds since 1970). */
  bind(ipv4: number, ipv6: Uint8Array, endsSec: number, startsSec = 0): void {
    this.now = this.clock();
    // the server moved the address to a holder the TEP refuses: it leaves its old holder all the same
    if (!this.admits(ipv4, ipv6, endsSec)) return this.unbind(ipv4);
    this.bindings.set(ipv4, ipv6, endsSec * 1000, 'server', startsSec * 1000);
    this.opts.log.info('binding', {
      ipv4: formatIPv4(ipv4),
      ipv6: formatIPv6(ipv6),
      ends: new Date(endsSec * 1000).toISOString(),
    });
  }

  /**
   * Whether a binding from the server's feed is forwarded for: one rule for bind() and resync(). Not once ended; and
   * refused (logged) for an address no host may lease (0/8, 127/8, 169.254/16, 224/4, 240/4: no pool has one), the
   * TEP host's own (its node could send as the TEP: the TUN device accepts local sources), or an address or node a
   * static mapping holds.
   */
  private admits(ipv4: number, ipv6: Uint8Array, endsSec: number): boolean {
    if (endsSec * 1000 <= this.now) return false;
    const why = !leasable4(ipv4)
      ? 'the address is not a unicast host address'
      : isOwnAddress(ipv4, this.opts.ipv4)
        ? "the address is the TEP's own"
        : this.staticHolds(ipv4, ipv6)
          ? 'a static mapping holds the address or the node'
          : undefined;
    if (why === undefined) return true;
    this.opts.log.warn('server binding refused', { reason: why, ipv4: formatIPv4(ipv4), ipv6: formatIPv6(ipv6) });
    return false;
  }

  /**
   * Replaces the server's bindings with a complete state (a feed resync), by generation: staged in chunks while
   * forwarding goes on, then shown at once, so packets of bindings that stay are never dropped and a binding that
   * goes or moves changes at one instant. Static mappings are kept. A newer resync abandons this one.
   */
  async resync(bindings: Iterable<ServerBinding>, chunk = RESYNC_CHUNK): Promise<void> {
    const t = this.bindings;
    const mine = ++this.resyncs;
    this.now = this.clock();
    t.begin();
    for (const s of this.opts.statics) t.stage(s.ipv4, s.ipv6, Infinity, 'static'); // kept: O(statics)
    let n = 0;
    for (const b of bindings) {
      if (this.admits(b.ipv4, b.ipv6, b.ends)) t.stage(b.ipv4, b.ipv6, b.ends * 1000, 'server', b.starts * 1000);
      if (++n % chunk === 0) {
        await new Promise((resolve) => setImmediate(resolve));
        if (mine !== this.resyncs) return;
      }
    }
    t.commit();
  }

  /** Whether a static mapping holds the address or the node (O(1): a resync asks for every server binding). */
  private staticHolds(ipv4: number, ipv6: Uint8Array): boolean {
    if (this.staticSet.has(ipv4)) return true;
    const slot = this.bindings.findByIpv6(ipv6, 0, this.now);
    return slot >= 0 && this.bindings.isStatic(slot);
  }

  unbind(ipv4: number): void {
    const b = this.bindings.get(ipv4);
    if (!b || b.source === 'static') return;
    this.bindings.delete(ipv4);
    this.opts.log.info('binding removed', { ipv4: b.ipv4, ipv6: b.ipv6 });
  }

  /**
   * Refreshes the coarse clock, ends bindings (a bounded part of the table per tick, BindingTable.sweep) and ages
   * path MTUs: every 250 ms while open (tests call it).
   */
  tick(): void {
    this.now = this.clock();
    this.pmtu.expire(this.now);
    for (const b of this.bindings.sweep(this.now)) this.opts.log.info('binding ended', { ipv4: b.ipv4, ipv6: b.ipv6 });
  }

  // --- statistics -------------------------------------------------------------------------------------------

  /** What this queue forwarded for each of `ipv4s` (zeros for an address it holds no binding for). */
  trafficOf(ipv4s: readonly string[]): TrafficJson[] {
    return ipv4s.map((a) => trafficJson(this.bindings.get(a)?.forwarded));
  }

  /**
   * Packets the kernel dropped in front of this queue's pipeline, read from the kernel when statistics are asked
   * (nothing per packet): its raw sockets' receive queues overflowing, and (queue 0 only, the count is the whole
   * device's) the TUN device's transmit queue overflowing. Zero while the devices are not open.
   */
  private kernelDrops(): Record<typeof KERNEL_RX_OVERFLOW | typeof TUN_TX_DROPPED, number> {
    const first = (this.opts.queue?.index ?? 0) === 0;
    return {
      [KERNEL_RX_OVERFLOW]: (this.raw?.kernelDrops() ?? 0) + (this.icmp6?.kernelDrops() ?? 0),
      [TUN_TX_DROPPED]: first ? (this.tun?.txDropped() ?? 0) : 0,
    };
  }

  /**
   * The statistics, at once: the binding list and the top talkers scan the whole table (O(capacity)) in one step.
   * `bindings: false` (the metrics) lists none: no metric shows it.
   */
  stats(opts: { bindings?: boolean } = {}): TepStats {
    const listed = opts.bindings === false ? [] : this.bindings.list(STATS_BINDINGS);
    return this.statsWith(listed, this.bindings.topTalkers(TOP_TALKERS));
  }

  /**
   * stats() for the daemon (`dstm tep stats`, the metrics): the scans of the table go SCAN_SLOTS slots per turn of
   * the event loop, so the thread forwards between them whatever the number of bindings.
   */
  async statsChunked(opts: { bindings?: boolean } = {}): Promise<TepStats> {
    const listed = opts.bindings === false ? [] : await runChunked(this.bindings.listSteps(STATS_BINDINGS));
    return this.statsWith(listed, await runChunked(this.bindings.topSteps(TOP_TALKERS)));
  }

  private statsWith(listed: Binding[], top: Binding[]): TepStats {
    const snap = this.counters.snapshot();
    const kernel = this.kernelDrops();
    for (const [reason, n] of Object.entries(kernel)) {
      snap.drops[reason] = n;
      snap.dropped += n;
    }
    snap.events.hairpinned = this.hairpin[0];
    snap.events.bytes_hairpinned = this.hairpin[1];
    const tep4 = formatIPv4(this.opts.ipv4);
    const tep6 = formatIPv6(this.opts.address);
    const json = (b: Binding): StatsBinding => ({
      ipv4: b.ipv4,
      ipv6: b.ipv6,
      tep4,
      tep6,
      starts: b.source === 'static' || b.starts === 0 ? null : jsonSeconds(b.starts),
      ends: jsonSeconds(b.ends),
      source: b.source,
      forwarded: trafficJson(b.forwarded),
    });
    // what the pipeline decapsulated less what went back into the tunnel, which went to a node as what it
    // encapsulated did: so the bindings' traffic sums to these
    const [hairpinned, bytesHairpinned] = this.hairpin;
    const forwarded = {
      to_ipv4: snap.events.decapsulated - hairpinned,
      to_ipv6: snap.events.encapsulated + hairpinned,
      bytes_to_ipv4: snap.events.bytes_decapsulated - bytesHairpinned,
      bytes_to_ipv6: snap.events.bytes_encapsulated + bytesHairpinned,
    };
    return {
      forwarded,
      drops: snap.drops,
      events: snap.events,
      binding_count: this.bindings.size,
      bindings: listed.map(json),
      top_talkers: top.map(json),
      path_mtu_lowered: this.pmtu.size(this.now),
      ipv6_reassembly: readReassembly(),
      queues: [
        {
          ...forwarded,
          dropped: snap.dropped,
          path_mtu_lowered: this.pmtu.size(this.now),
          binding_count: this.bindings.size,
        },
      ],
    };
  }
}

function poolRanges(pools: Prefix4[]): Float64Array {
  return Float64Array.from(pools.flatMap((p) => [p.base, p.base + 2 ** (32 - p.len) - 1]));
}

/**
 * Exposes a TEP's counters on a Prometheus registry: `read` gives the statistics of the scrape (one Tep's, or those
 * of every queue summed, read before rendering).
 */
export function registerTepMetrics(registry: Registry, read: () => TepStats): void {
  const traffic = (kind: 'packets' | 'bytes'): { labels: { direction: string }; value: number }[] => {
    const f = read().forwarded;
    return [
      { labels: { direction: 'to_ipv4' }, value: kind === 'packets' ? f.to_ipv4 : f.bytes_to_ipv4 },
      { labels: { direction: 'to_ipv6' }, value: kind === 'packets' ? f.to_ipv6 : f.bytes_to_ipv6 },
    ];
  };
  registry.collector('dstm_tep_packets_total', 'Packets forwarded by the TEP, by direction.', 'counter', () =>
    traffic('packets'),
  );
  registry.collector('dstm_tep_bytes_total', 'IPv4 bytes forwarded by the TEP, by direction.', 'counter', () =>
    traffic('bytes'),
  );
  registry.collector('dstm_tep_dropped_total', 'Packets discarded by the TEP, by reason.', 'counter', () =>
    Object.entries(read().drops).map(([reason, value]) => ({ labels: { reason }, value })),
  );
  registry.collector('dstm_tep_bindings', 'Bindings the TEP forwards for.', 'gauge', () => [
    { value: read().binding_count },
  ]);
  registry.collector(
    'dstm_tep_hairpinned_total',
    'Packets forwarded node to node without leaving to IPv4.',
    'counter',
    () => [{ value: read().events.hairpinned }],
  );
  registry.collector(
    'dstm_tep_binding_bytes_total',
    `IPv4 bytes forwarded for the ${TOP_TALKERS} bindings that forwarded the most (top talkers), by direction.`,
    'counter',
    () =>
      read().top_talkers.flatMap((b) => [
        { labels: { ipv4: b.ipv4, ipv6: b.ipv6, direction: 'to_ipv4' }, value: b.forwarded.bytes_to_ipv4 },
        { labels: { ipv4: b.ipv4, ipv6: b.ipv6, direction: 'to_ipv6' }, value: b.forwarded.bytes_to_ipv6 },
      ]),
  );
  registry.collector('dstm_tep_path_mtu_lowered', 'Nodes whose path MTU a packet-too-big lowered.', 'gauge', () => [
    { value: read().path_mtu_lowered },
  ]);
}
