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
import { Counters, Drop, dropLoggerTo, type DropCode } from '../dti/counters';
import { Icmp6ErrorSocket, RawIpipSocket, TunDevice } from '../dti/device';
import { EncapConfig, bytesEqual } from '../dti/packet';
import { formatIPv4, formatIPv6, formatPrefix4, type Prefix4, type Prefix6, prefixContains4 } from '../lib/addr';
import { Tunnel } from '../dti/tunnel';
import type { Logger } from '../lib/log';
import type { Registry } from '../lib/metrics';
import { BindingTable, type Binding } from './bindings';
import { Ipv6PrefixList } from './prefixes';
import { jsonSeconds, type BindingJson } from '../protocol/binding-json';

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
  /** Answer IPv4 for addresses no node holds with ICMPv4 host unreachable (rate-limited), as a router does; default on. */
  unreachable?: boolean;
  batch?: number;
  log: Logger;
}

/** The counters of `dstm tep stats`, in the JSON form of dstm(1) (snake_case; times in seconds since 1970). */
export interface TepStats {
  forwarded: { to_ipv4: number; to_ipv6: number; bytes_to_ipv4: number; bytes_to_ipv6: number };
  drops: Record<string, number>;
  events: Record<string, number>;
  bindings: (BindingJson & { source: Binding['source'] })[];
}

/** Drop reasons the TEP adds to the DTI's (Drop.no_binding, spoofed_source and outside_prefix are built in). */
const UNBOUND_SOURCE = 'unbound_source'; // tunnelled packet from an IPv6 node that holds no binding

export class Tep {
  readonly bindings = new BindingTable();
  readonly counters = new Counters();
  readonly tunnel: Tunnel;
  private domain: Ipv6PrefixList;
  private readonly unboundSource: DropCode;
  /** Coarse wall clock (ms) for binding end checks, refreshed by the sweep timer rather than read per packet. */
  private now = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private tun: TunDevice | undefined;
  private raw: RawIpipSocket | undefined;
  private icmp6: Icmp6ErrorSocket | undefined;

  constructor(readonly opts: TepOptions) {
    // draft §2.2: a silently discarded packet can be logged with its contents (at debug level)
    if (opts.log.enabled('debug')) this.counters.logger = dropLoggerTo(opts.log);
    this.domain = new Ipv6PrefixList(opts.prefixes);
    this.unboundSource = this.counters.define(UNBOUND_SOURCE);
    this.tunnel = new Tunnel({
      encap: new EncapConfig(opts.address),
      pathMtu: opts.pathMtu,
      icmpSource: opts.ipv4,
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
    for (const s of opts.statics) this.bindings.set(s.ipv4, s.ipv6, Infinity, 'static');
  }

  /**
   * Applies what can change while forwarding (a reload): the domain's prefixes, the pools (the caller reroutes
   * the TUN device for routedPrefixes()), the static mappings and unreachable.
   */
  reconfigure(c: Pick<TepOptions, 'prefixes' | 'pools' | 'statics' | 'unreachable'>): void {
    this.domain = new Ipv6PrefixList(c.prefixes);
    for (const s of this.opts.statics) this.bindings.delete(s.ipv4);
    for (const s of c.statics) this.bindings.set(s.ipv4, s.ipv6, Infinity, 'static');
    this.opts.prefixes = c.prefixes;
    this.opts.pools = c.pools;
    this.opts.statics = c.statics;
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
    this.tun = TunDevice.open({ name: this.opts.device, mtu: this.tunnel.tunnelMtu, batch });
    this.raw = RawIpipSocket.open({ bind: this.opts.address, batch });
    this.icmp6 = Icmp6ErrorSocket.open({ bind: this.opts.address, batch });
    this.tunnel.attach(this.tun, this.raw, this.icmp6);
    this.timer = setInterval(() => this.tick(), 250);
    return this.tun;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const d of [this.icmp6, this.raw, this.tun]) d?.close();
    this.tun = this.raw = this.icmp6 = undefined;
  }

  // --- bindings from the DSTM server's feed -------------------------------------------------------------------

  /** `ipv6` holds `ipv4` from `startsSec` until `endsSec` (seconds since 1970). */
  bind(ipv4: number, ipv6: Uint8Array, endsSec: number, startsSec = this.now / 1000): void {
    this.now = Date.now();
    if (endsSec * 1000 <= this.now) return this.unbind(ipv4);
    if (this.opts.statics.some((s) => s.ipv4 === ipv4 || bytesEqual(s.ipv6, 0, ipv6, 0, 16))) {
      this.opts.log.warn('server binding ignored: a static mapping holds the address or the node', { ipv4: formatIPv4(ipv4), ipv6: formatIPv6(ipv6) });
      return;
    }
    this.bindings.set(ipv4, ipv6, endsSec * 1000, 'server', startsSec * 1000);
    this.opts.log.info('binding', { ipv4: formatIPv4(ipv4), ipv6: formatIPv6(ipv6), ends: new Date(endsSec * 1000).toISOString() });
  }

  unbind(ipv4: number): void {
    const b = this.bindings.get(ipv4);
    if (!b || b.source === 'static') return;
    this.bindings.delete(ipv4);
    this.opts.log.info('binding removed', { ipv4: b.ipv4, ipv6: b.ipv6 });
  }

  private tick(): void {
    this.now = Date.now();
    if (this.bindings.nextEnd() > this.now) return;
    for (const b of this.bindings.sweep(this.now)) this.opts.log.info('binding ended', { ipv4: b.ipv4, ipv6: b.ipv6 });
  }

  // --- statistics -------------------------------------------------------------------------------------------

  stats(): TepStats {
    const snap = this.counters.snapshot();
    const tep4 = formatIPv4(this.opts.ipv4);
    const tep6 = formatIPv6(this.opts.address);
    return {
      forwarded: {
        to_ipv4: snap.events.decapsulated,
        to_ipv6: snap.events.encapsulated,
        bytes_to_ipv4: snap.events.bytes_decapsulated,
        bytes_to_ipv6: snap.events.bytes_encapsulated,
      },
      drops: snap.drops,
      events: snap.events,
      bindings: this.bindings.list().map((b) => ({
        ipv4: b.ipv4,
        ipv6: b.ipv6,
        tep4,
        tep6,
        starts: b.source === 'static' ? null : jsonSeconds(b.starts),
        ends: jsonSeconds(b.ends),
        source: b.source,
      })),
    };
  }

  /** Exposes the counters on a Prometheus registry, read at scrape time. */
  register(registry: Registry): void {
    registry.collector('dstm_tep_packets_total', 'Packets forwarded by the TEP, by direction.', 'counter', () => [
      { labels: { direction: 'to_ipv4' }, value: this.counters.event('decapsulated') },
      { labels: { direction: 'to_ipv6' }, value: this.counters.event('encapsulated') },
    ]);
    registry.collector('dstm_tep_bytes_total', 'IPv4 bytes forwarded by the TEP, by direction.', 'counter', () => [
      { labels: { direction: 'to_ipv4' }, value: this.counters.event('bytes_decapsulated') },
      { labels: { direction: 'to_ipv6' }, value: this.counters.event('bytes_encapsulated') },
    ]);
    registry.collector('dstm_tep_dropped_total', 'Packets discarded by the TEP, by reason.', 'counter', () =>
      Object.entries(this.counters.snapshot().drops).map(([reason, value]) => ({ labels: { reason }, value })),
    );
    registry.collector('dstm_tep_bindings', 'Bindings the TEP forwards for.', 'gauge', () => [{ value: this.bindings.size }]);
  }
}
