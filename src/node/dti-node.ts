// The node's Dynamic Tunneling Interface (draft §5): a TUN device the IPv4 routes point at, whose packets are
// encapsulated to the TEP, and the raw IPIP socket whose packets from that TEP are decapsulated into it.
//
// The DTI follows a lease: up(lease) gives the TUN device the leased address (/32, peer = the TEP's IPv4), routes
// IPv4 into it and tunnels to the lease's TEP; down() removes address and routes and from then on nothing is sent.
// A fixed lease is Annex A's static configuration (dstm static).
//
// On-demand mode (§5.1, §5.2): the device is up and routed but has no address. The first IPv4 packet starts the
// request (the trigger callback) and packets wait in a bounded queue (counted as queue_full when it is full)
// until up(), which sends them. Without an address the kernel sends them from 0.0.0.0; queued ICMP and UDP packets
// get the leased source (checksums adjusted). A TCP connection opened before the address exists is bound to
// 0.0.0.0 by the kernel and cannot be saved: its SYN is dropped (counted as no_address) and the application's
// retry after the address is set succeeds.
import { createSocket } from 'node:dgram';
import { Counters, Drop, type DropCode } from '../dti/counters';
import { Icmp6ErrorSocket, RawIpipSocket, TunDevice, type RxBatch } from '../dti/device';
import type { BatchSink, BatchSource } from '../dti/tunnel';
import { ifSysctl, ip, runIp, writeSysctl, type IpCommand } from '../dti/netconfig';
import {
  EncapConfig,
  HEADROOM,
  type Icmp6Relay,
  bytesEqual,
  copyBytes,
  readU32,
  setIpv4Checksum,
  writeU32,
} from '../dti/packet';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parseRoute4, tunnelEndProblem } from '../lib/addr';
import { Tunnel } from '../dti/tunnel';
import {
  GSO_NONE,
  VNET_F_NEEDS_CSUM,
  VNET_HDR_LEN,
  VnetHeader,
  WordSum,
  completeChecksum,
  readVnetHeader,
  writePlainVnetHeader,
} from '../dti/offload';
import type { Logger } from '../lib/log';
import type { Lease } from '../protocol/client';
import type { LeaseHooks } from './lease-keeper';

/** The devices a DTI forwards with: the kernel's (openDtiDevices, root) or in-memory fakes in tests. */
export interface DtiDevices {
  tun: BatchSource & BatchSink & { readonly name: string; close(): void };
  raw: BatchSource & BatchSink & { close(): void };
  icmp6: BatchSource & { close(): void };
}

/** How a DTI changes the system around it: iproute2 commands and sysctls (recorded instead in tests). */
export interface DtiSystem {
  ip(cmds: readonly IpCommand[]): Promise<void>;
  sysctl(key: string, value: string): void;
}

const kernel: DtiSystem = { ip: (cmds) => runIp(cmds), sysctl: writeSysctl };

/** What the DTI asks of its devices; `offload`: the TUN device with IFF_VNET_HDR offloads where the kernel has them. */
export interface DeviceOptions {
  name: string;
  mtu: number;
  batch?: number;
  offload: boolean;
}

/** The real devices: a TUN device, the raw IPIP socket and the socket for ICMPv6 errors about the tunnel. */
function openDtiDevices(o: DeviceOptions): DtiDevices {
  const tun = TunDevice.open({ name: o.name, mtu: o.mtu, batch: o.batch, offload: o.offload });
  try {
    return { tun, raw: RawIpipSocket.open({ batch: o.batch }), icmp6: Icmp6ErrorSocket.open({ batch: o.batch }) };
  } catch (err) {
    tun.close();
    throw err;
  }
}

export interface DtiOptions {
  /** TUN device name. */
  name: string;
  /** IPv4 prefixes routed into the DTI ("default" for 0.0.0.0/0). */
  routes: string[];
  /** Path MTU towards the TEP; the DTI's MTU is 40 less (RFC 2473 §6.7). */
  pathMtu: number;
  /** Packets held while an on-demand request is in flight. */
  queue?: number;
  batch?: number;
  /** TUN offloads (TSO/GRO through virtio-net headers) when the kernel has them; default on. */
  offload?: boolean;
  log: Logger;
  /** Default: openDtiDevices. */
  devices?: (o: DeviceOptions) => DtiDevices;
  /** Default: the kernel's (ip, /proc/sys). */
  system?: DtiSystem;
  /** Monotonic clock in ms, for path MTU ageing (tests inject one); default performance.now. */
  now?: () => number;
}

/** What the DTI needs from a lease (or from Annex A flags). */
export interface DtiLease {
  address: number;
  /** The TEP's IPv4 address: the point-to-point peer of the DTI (Annex A may leave it out). */
  peer?: number;
  /** The TEP's IPv6 address: the tunnel destination. */
  tep: Uint8Array;
  /** Our IPv6 source (the address of the interface towards the TEP, §5.3); found by a route lookup if absent. */
  local?: Uint8Array;
}

const SLOT = 2048;
const PROTO_TCP = 6;
const PROTO_UDP = 17;

/** Drop reasons of the node (besides the DTI's built-in ones). */
const NOT_FROM_TEP = 'not_from_tep'; // tunnelled packet whose outer source is not our TEP
const NOT_FOR_US = 'not_for_us'; // decapsulated packet not addressed to our leased address

/** The IPv6 source the kernel would use towards `dst` (a connected UDP socket sends nothing). */
export async function sourceTowards(dst: Uint8Array): Promise<Uint8Array> {
  const sock = createSocket('udp6');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(9, formatIPv6(dst), () => resolve());
    });
    return parseIPv6(sock.address().address);
  } catch (err) {
    throw new Error(`no IPv6 route to the TEP ${formatIPv6(dst)}: ${(err as Error).message}`);
  } finally {
    sock.close();
  }
}

export class Dti {
  readonly counters = new Counters();
  readonly tunnel: Tunnel;
  private readonly tep = new Uint8Array(16);
  private readonly notFromTep: DropCode;
  private readonly notForUs: DropCode;
  private lease: DtiLease | undefined;
  private onDemand: (() => void) | undefined;
  private triggered = false;
  private readonly queued: RxBatch & { count: number };
  private readonly tun: DtiDevices['tun'];
  private readonly raw: DtiDevices['raw'];
  private readonly icmp6: DtiDevices['icmp6'];
  private readonly system: DtiSystem;
  private readonly vh = new VnetHeader();
  private readonly ws = new WordSum();

  constructor(readonly opts: DtiOptions) {
    this.notFromTep = this.counters.define(NOT_FROM_TEP);
    this.notForUs = this.counters.define(NOT_FOR_US);
    this.tunnel = new Tunnel({
      encap: new EncapConfig(new Uint8Array(16)),
      pathMtu: opts.pathMtu,
      icmpSource: 0,
      batch: opts.batch,
      counters: this.counters,
      // Only the leased address leaves (draft 5.2: the server allocates the source): a packet the node forwards for
      // another host, or one an application sent from an address of its own choosing, is not ours to tunnel.
      route: (src) => (!this.lease ? Drop.no_address : src === this.lease.address ? this.tep : Drop.spoofed_source),
      accept: (buf, srcOff, src, dst) => {
        if (!this.lease) return Drop.no_address;
        if (!bytesEqual(buf, srcOff, this.tep, 0, 16)) return this.notFromTep;
        if (dst !== this.lease.address) return this.notForUs;
        // Our own address as the source is always forged (we reach ourselves over lo), and the kernel, told to
        // accept_local on the DTI for our ICMPv4 errors, would take it as one of its own.
        return src === this.lease.address ? Drop.spoofed_source : 0;
      },
      icmp6Policy: (buf, _off, r) => this.vetIcmp6(buf, r),
      now: opts.now,
    });
    const q = opts.queue ?? 64;
    const offsets = new Uint32Array(q).map((_, i) => i * SLOT + HEADROOM);
    this.queued = { buf: new Uint8Array(q * SLOT), offsets, lengths: new Uint32Array(q), count: 0 };
    this.system = opts.system ?? kernel;
    ({
      tun: this.tun,
      raw: this.raw,
      icmp6: this.icmp6,
    } = (opts.devices ?? openDtiDevices)({
      name: opts.name,
      mtu: this.tunnel.tunnelMtu,
      batch: opts.batch,
      offload: opts.offload ?? true,
    }));
    this.tunnel.attach(this.tun, this.raw, this.icmp6);
  }

  get name(): string {
    return this.tun.name;
  }

  get current(): DtiLease | undefined {
    return this.lease;
  }

  /** The device up at the tunnel MTU, without an address; with `trigger`, routed and waiting (on-demand). */
  async start(trigger?: () => void): Promise<void> {
    // IPv6 on the DTI would only send router solicitations and MLD reports into the IPv4 tunnel
    this.system.sysctl(ifSysctl('ipv6', this.name, 'disable_ipv6'), '1');
    // The ICMPv4 errors the DTI writes for local applications come from the node's own address (icmpSource):
    // without accept_local the kernel drops them as martians.
    this.system.sysctl(ifSysctl('ipv4', this.name, 'accept_local'), '1');
    const cmds = [ip.linkMtu(this.name, this.tunnel.tunnelMtu), ip.linkUp(this.name)];
    if (trigger) {
      this.onDemand = trigger;
      this.tun.onBatch((n, rx) => this.hold(n, rx));
      cmds.push(...this.routeCommands('add'));
    }
    await this.system.ip(cmds);
  }

  /** Configures the lease on the device and tunnels to its TEP; sends what waited for it. */
  async up(lease: DtiLease): Promise<void> {
    const local = lease.local ?? (await sourceTowards(lease.tep));
    const prev = this.lease;
    if (prev && (prev.address !== lease.address || prev.peer !== lease.peer)) await this.down();
    this.tep.set(lease.tep);
    this.tunnel.encap.src = local;
    this.tunnel.icmpSource = lease.address; // source of the ICMPv4 errors the DTI sends its own applications
    if (!this.lease) await this.system.ip(dtiUpCommands(this.name, lease, this.opts.routes));
    this.lease = { ...lease, local };
    this.tunnel.attach(this.tun, this.raw, this.icmp6);
    this.opts.log.info('dti up', {
      device: this.name,
      address: formatIPv4(lease.address),
      peer: lease.peer === undefined ? null : formatIPv4(lease.peer),
      tep: formatIPv6(lease.tep),
      local: formatIPv6(local),
      mtu: this.tunnel.tunnelMtu,
      offload: this.tunnel.offload,
    });
    this.sendQueued(lease.address);
  }

  /** Removes the address (and the routes unless on-demand, which waits for the next packet again). */
  async down(): Promise<void> {
    const lease = this.lease;
    if (!lease) return;
    this.lease = undefined;
    this.triggered = false;
    if (this.onDemand) this.tun.onBatch((n, rx) => this.hold(n, rx));
    const addr = ip.addrDel(this.name, `${formatIPv4(lease.address)}/32`, peerCidr(lease));
    // On demand the routes must bring the next packet here, but the kernel deletes every route through a device
    // whose last IPv4 address goes: they are put back after it, without the leased address as their source.
    await this.system.ip(this.onDemand ? [addr, ...this.routeCommands('add')] : [...this.routeCommands('del'), addr]);
    this.opts.log.info('dti down', { device: this.name, address: formatIPv4(lease.address) });
  }

  close(): void {
    for (const d of [this.icmp6, this.raw, this.tun]) d.close();
  }

  /**
   * The ICMPv6 socket sees every ICMPv6 error to this host, and parseIcmpv6Error only checks that the quote is from
   * our IPv6 address and carries IPv4: an error changes nothing unless the packet it quotes is one we tunnelled,
   * to our TEP from our leased address. A packet-too-big then lowers the path MTU for PATH_MTU_AGE_MS.
   */
  private vetIcmp6(buf: Uint8Array, r: Icmp6Relay): DropCode {
    const lease = this.lease;
    if (lease === undefined || r.ip4.src !== lease.address) return Drop.icmp_unrelated;
    if (!bytesEqual(buf, r.outer.upperOff + 8 + 24, this.tep, 0, 16)) return Drop.icmp_unrelated; // quoted destination
    if (r.pathMtu !== 0) this.tunnel.lowerPathMtu(r.pathMtu);
    return 0;
  }

  /** The --routes through the DTI without a preferred source (with one they come from dtiUpCommands). */
  private routeCommands(op: 'add' | 'del'): IpCommand[] {
    return this.opts.routes.map((r) => (op === 'add' ? ip.routeReplace(r, this.name) : ip.routeDel(r, this.name)));
  }

  /**
   * On-demand, no lease yet: copy packets into the queue (this is the rare path) and start the request once.
   * With offloads the virtio-net header is queued too, a partial checksum completed first (sendQueued rewrites
   * the source and adjusts a complete checksum); super-packets do not fit the queue's slots.
   */
  private hold(count: number, rx: RxBatch): void {
    const q = this.queued;
    const pre = this.tun.offload ? VNET_HDR_LEN : 0;
    for (let i = 0; i < count; i++) {
      const off = rx.offsets[i];
      const len = rx.lengths[i];
      if (q.count === q.offsets.length || len > SLOT - HEADROOM) {
        this.counters.drop(Drop.queue_full, rx.buf, off, len);
        continue;
      }
      if (pre) {
        const code = this.finishChecksum(rx.buf, off, len);
        if (code !== 0) {
          this.counters.drop(code, rx.buf, off, len);
          continue;
        }
      }
      copyBytes(rx.buf, off - pre, q.buf, q.offsets[q.count] - pre, len + pre);
      q.lengths[q.count++] = len;
    }
    if (!this.triggered && this.onDemand) {
      this.triggered = true;
      this.opts.log.info('first IPv4 packet on the DTI: requesting an address', { device: this.name });
      this.onDemand();
    }
  }

  /** Completes a partial checksum in place and marks the virtio-net header plain; refuses super-packets. */
  private finishChecksum(buf: Uint8Array, off: number, len: number): DropCode {
    const v = this.vh;
    readVnetHeader(buf, off - VNET_HDR_LEN, v);
    if (v.gsoType !== GSO_NONE) return Drop.queue_full;
    if ((v.flags & VNET_F_NEEDS_CSUM) === 0) return 0;
    const total = len >= 4 ? (buf[off + 2] << 8) | buf[off + 3] : 0;
    const code = total <= len ? completeChecksum(buf, off, total, v, this.ws) : Drop.ipv4_malformed;
    if (code === 0) writePlainVnetHeader(buf, off - VNET_HDR_LEN);
    return code;
  }

  private sendQueued(address: number): void {
    const q = this.queued;
    if (q.count === 0) return;
    const pre = this.tun.offload ? VNET_HDR_LEN : 0;
    let kept = 0;
    for (let i = 0; i < q.count; i++) {
      const off = q.offsets[i];
      if (q.lengths[i] >= 20 && readU32(q.buf, off + 12) === 0) {
        if (q.buf[off + 9] === PROTO_TCP) {
          this.counters.drop(Drop.no_address, q.buf, off, q.lengths[i]);
          continue;
        }
        setSource(q.buf, off, q.lengths[i], address);
      }
      q.lengths[kept] = q.lengths[i];
      if (kept !== i) copyBytes(q.buf, off - pre, q.buf, q.offsets[kept] - pre, q.lengths[i] + pre);
      kept++;
    }
    this.tunnel.encapBatch(kept, q);
    this.tunnel.flush(this.tunnel.toRaw, this.raw);
    this.tunnel.flush(this.tunnel.toRawFragments, this.raw);
    this.tunnel.flush(this.tunnel.toTunIcmp, this.tun);
    q.count = 0;
  }
}

/**
 * Sets the source of a queued IPv4 packet sent from 0.0.0.0: header checksum recomputed, UDP checksum adjusted
 * for the pseudo-header (RFC 1624 incremental update; the old source words were zero). Only a whole datagram or
 * its first fragment holds the UDP header; later fragments carry data there.
 */
export function setSource(buf: Uint8Array, off: number, len: number, address: number): void {
  writeU32(buf, off + 12, address);
  setIpv4Checksum(buf, off);
  const hlen = (buf[off] & 0x0f) << 2;
  const c = off + hlen + 6;
  const fragOffset = ((buf[off + 6] << 8) | buf[off + 7]) & 0x1fff;
  if (buf[off + 9] !== PROTO_UDP || fragOffset !== 0 || len < hlen + 8) return;
  const old = (buf[c] << 8) | buf[c + 1];
  if (old === 0) return; // no checksum
  let sum = (~old & 0xffff) + (address >>> 16) + (address & 0xffff);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const now = ~sum & 0xffff || 0xffff;
  buf[c] = now >>> 8;
  buf[c + 1] = now & 0xff;
}

/** The iproute2 commands that give a DTI its lease: address/32 with the TEP as peer, routes through it. */
export function dtiUpCommands(dev: string, lease: Pick<DtiLease, 'address' | 'peer'>, routes: string[]): IpCommand[] {
  const src = formatIPv4(lease.address);
  return [ip.addrAdd(dev, `${src}/32`, peerCidr(lease)), ...routes.map((r) => ip.routeReplace(r, dev, { src }))];
}

function peerCidr(lease: Pick<DtiLease, 'peer'>): string | undefined {
  return lease.peer === undefined ? undefined : `${formatIPv4(lease.peer)}/32`;
}

/** --routes values: "default" or IPv4 prefixes, each flag value possibly comma-separated. */
export function parseRoutes(values: string[]): string[] {
  return values
    .flatMap((v) => v.split(','))
    .map((r) => r.trim())
    .filter((r) => r !== '')
    .map((r) => {
      try {
        return parseRoute4(r);
      } catch (err) {
        throw new Error(`--routes: "${r}" is not "default" or an IPv4 prefix (${(err as Error).message})`);
      }
    });
}

/** Annex A's KAME configuration for the same DTI: gif0 tunnel, point-to-point address, routes via the TEP. */
export function annexALines(
  local: string,
  tep: string,
  lease: Pick<DtiLease, 'address' | 'peer'>,
  routes: string[],
): string[] {
  const peer = lease.peer === undefined ? undefined : formatIPv4(lease.peer);
  const gw = peer ?? '-interface gif0';
  return [
    `gifconfig gif0 inet6 ${local} ${tep}`,
    `ifconfig gif0 inet ${formatIPv4(lease.address)}${peer ? ` ${peer}` : ''} netmask 255.255.255.255 up`,
    ...routes.map((r) => (r === 'default' ? `route change default ${gw}` : `route add -net ${r} ${gw}`)),
  ];
}

/**
 * A lease from the DSTM server as the DTI needs it: our address, the TEP (both families), our IPv6 source. A server
 * with no TEP for this node sends zeros: the lease cannot be carried (the tunnel would go to ::, the peer be
 * 0.0.0.0), so this throws, as for any TEP no tunnel can go to, and the keeper gives the lease back and asks again.
 */
export function dtiLease(l: Lease): DtiLease {
  const tep = parseIPv6(l.tep6);
  const problem = tunnelEndProblem(tep);
  if (problem) throw new Error(`the lease of ${l.address} names no TEP to tunnel to: tep6 ${l.tep6} is ${problem}`);
  // No IPv4 address for the TEP (zero): the DTI then has no point-to-point peer, its routes point at the device.
  const peer = parseIPv4(l.tep4) || undefined;
  return { address: parseIPv4(l.address), peer, tep, local: parseIPv6(l.local) };
}

/** LeaseKeeper hooks that put each lease on the DTI and take it off when it ends (released, expired, replaced). */
export function dtiHooks(dti: Dti): LeaseHooks {
  return { up: (l) => dti.up(dtiLease(l)), down: () => dti.down() };
}
