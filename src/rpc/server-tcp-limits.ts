// Admission of TCP connections: a total cap, a cap per peer prefix (so one host, or one /64, cannot take every
// slot), and a share of the slots kept for reserved peers (e.g. the TEPs' binding feed), which no number of other
// peers can take.
import net from 'node:net';
import {
  parseIPv4,
  parseIPv6,
  parsePrefix4,
  parsePrefix6,
  prefixContains4,
  prefixContains6,
  type Prefix4,
  type Prefix6,
} from '../lib/addr';

export interface ConnectionLimitOptions {
  /** Connections at once, reserved ones included. */
  maxConnections: number;
  /** Connections at once from one peer prefix (reserved peers are exempt). */
  maxConnectionsPerPeer: number;
  /** The prefix length that makes one IPv6 peer. */
  peerPrefix6: number;
  /** The prefix length that makes one IPv4 peer. */
  peerPrefix4: number;
  /** Addresses or prefixes ("2001:db8::1", "2001:db8::/48", "192.0.2.0/24") of reserved peers. */
  reservedPeers: readonly string[];
  /** Of maxConnections, the slots only reserved peers may take. */
  reservedConnections: number;
}

/** What admit() gave a connection; given back to leave() when it closes. */
export interface Admission {
  /** The peer prefix counted against maxConnectionsPerPeer; null for a reserved peer. */
  readonly key: string | null;
  readonly reserved: boolean;
}

export type Refusal = 'full' | 'perPeer';

export class ConnectionLimits {
  private readonly reserved6: Prefix6[] = [];
  private readonly reserved4: Prefix4[] = [];
  private readonly perPeer = new Map<string, number>();
  private total = 0;
  /** Connections of reserved peers. */
  reservedCount = 0;

  constructor(private readonly o: ConnectionLimitOptions) {
    for (const [name, v, max] of [
      ['maxConnections', o.maxConnections, Infinity],
      ['maxConnectionsPerPeer', o.maxConnectionsPerPeer, Infinity],
      ['peerPrefix6', o.peerPrefix6, 128],
      ['peerPrefix4', o.peerPrefix4, 32],
      ['reservedConnections', o.reservedConnections, o.maxConnections],
    ] as const) {
      if (!(Number.isInteger(v) || v === Infinity) || v < 0 || v > max)
        throw new RangeError(`${name} must be an integer 0–${max}, not ${v}`);
    }
    for (const p of o.reservedPeers) {
      if (net.isIPv4(p.split('/')[0])) this.reserved4.push(parsePrefix4(p));
      else this.reserved6.push(parsePrefix6(p));
    }
  }

  /**
   * Admit a connection from `address` (as the socket reports it), or say why not. 'full' means that one slot freed
   * by a connection of an unreserved peer would admit it; 'perPeer', that one freed by a connection of its own peer
   * would (the peer's own limit is judged first).
   */
  admit(address: string): Admission | Refusal {
    const { o } = this;
    const v4 = net.isIPv4(address) ? parseIPv4(address) : -1;
    const v6 = v4 < 0 ? parseIPv6(address) : null;
    if (v6 ? this.reserved6.some((p) => prefixContains6(p, v6)) : this.reserved4.some((p) => prefixContains4(p, v4))) {
      if (this.total >= o.maxConnections) return 'full';
      this.total++;
      this.reservedCount++;
      return { key: null, reserved: true };
    }
    const key = this.keyOf(v4, v6, address);
    const n = this.perPeer.get(key) ?? 0;
    if (n >= o.maxConnectionsPerPeer) return 'perPeer';
    if (this.total >= o.maxConnections || this.total - this.reservedCount >= o.maxConnections - o.reservedConnections)
      return 'full';
    this.perPeer.set(key, n + 1);
    this.total++;
    return { key, reserved: false };
  }

  /** The peer prefix `address` (as the socket reports it) is counted in: Admission.key of its connections. */
  peerKey(address: string): string {
    const v4 = net.isIPv4(address) ? parseIPv4(address) : -1;
    return this.keyOf(v4, v4 < 0 ? parseIPv6(address) : null, address);
  }

  /** peerKey() of an address parsed: `v4` when IPv4 (else -1), `v6` when IPv6. */
  private keyOf(v4: number, v6: Uint8Array | null, address: string): string {
    const { o } = this;
    return v6
      ? prefixKey6(v6, o.peerPrefix6, address)
      : `${Math.floor(v4 / 2 ** (32 - o.peerPrefix4))}/${o.peerPrefix4}`;
  }

  leave(a: Admission): void {
    this.total--;
    if (a.reserved) this.reservedCount--;
    if (a.key === null) return;
    const n = this.perPeer.get(a.key)! - 1;
    if (n === 0) this.perPeer.delete(a.key);
    else this.perPeer.set(a.key, n);
  }
}

/** The first `len` bits of the address, and its zone: fe80::/64 on two links are two peers. */
function prefixKey6(b: Uint8Array, len: number, text: string): string {
  let key = '';
  for (let i = 0; i * 8 < len; i++) {
    const bits = Math.min(8, len - i * 8);
    key += (b[i] & ((0xff << (8 - bits)) & 0xff)).toString(16).padStart(2, '0');
  }
  const zone = text.indexOf('%');
  return `${key}/${len}${zone >= 0 ? text.slice(zone) : ''}`;
}
