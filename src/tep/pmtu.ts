// Path MTU per tunnel destination (RFC 8201 §5.2: "per destination"; RFC 2473 §7.1): what an ICMPv6 packet-too-big
// taught the TEP about the path to one node, never more than the configured path MTU, forgotten after `ageMs`
// (RFC 8201 §5.3: try a larger MTU again no sooner than 5 minutes after a decrease, 10 recommended), so a forged or
// stale packet-too-big lowers one node's path for at most that long.
//
// Bounded: a set-associative cache of `capacity` entries (WAYS per set, the set chosen by a hash of the address).
// A new destination takes an expired or empty way, else the way that expires first; lookups compare at most WAYS
// addresses and allocate nothing. Memory: 26 bytes per entry (16 address, 2 MTU, 8 expiry).
import { HashKey } from '../lib/keyed-hash';

export const PMTU_DEFAULTS = {
  /** Entries kept (destinations with a lowered path MTU). */
  capacity: 8192,
  /** How long a lowered path MTU holds after the last packet-too-big (RFC 8201 §5.3 recommends 10 minutes). */
  ageMs: 600_000,
} as const;

const WAYS = 4;
/** A renewal moves an entry's expiry by at least this much (ms), so the other queues hear of it once a second. */
const RENEW_STEP = 1000;

/** What lower() did: nothing, renewed the entry's age (same or higher MTU), or lowered (or made) it. */
export const PMTU_KEPT = 0;
export const PMTU_RENEWED = 1;
export const PMTU_LOWERED = 2;

export class PathMtuCache {
  private readonly sets: number;
  private readonly addr: Uint8Array;
  private readonly mtu: Uint16Array;
  private readonly expires: Float64Array;
  private live = 0;

  constructor(
    readonly capacity: number = PMTU_DEFAULTS.capacity,
    readonly ageMs: number = PMTU_DEFAULTS.ageMs,
    private readonly hash = new HashKey(),
  ) {
    let sets = 1;
    while (sets * WAYS < capacity) sets <<= 1;
    this.sets = sets;
    this.addr = new Uint8Array(sets * WAYS * 16);
    this.mtu = new Uint16Array(sets * WAYS);
    this.expires = new Float64Array(sets * WAYS);
  }

  /** Path MTU learnt for the destination at buf[off..off+16), or `fallback` (none, or it has aged out). */
  get(buf: Uint8Array, off: number, now: number, fallback: number): number {
    if (this.live === 0) return fallback;
    const w = this.find(buf, off);
    return w >= 0 && this.expires[w] > now ? this.mtu[w] : fallback;
  }

  /**
   * Records a packet-too-big (below the configured path MTU): the path to the destination takes `mtu` if lower than
   * what holds, and holds for ageMs from now either way (RFC 8201 §5.3: after the last packet-too-big; a higher MTU
   * never raises it, §4). Returns PMTU_LOWERED, PMTU_RENEWED, or PMTU_KEPT (renewed less than RENEW_STEP ago).
   */
  lower(buf: Uint8Array, off: number, mtu: number, now: number): number {
    let w = this.find(buf, off);
    if (w >= 0 && this.expires[w] > now && this.mtu[w] <= mtu) {
      if (now + this.ageMs - this.expires[w] < RENEW_STEP) return PMTU_KEPT;
      this.expires[w] = now + this.ageMs;
      return PMTU_RENEWED;
    }
    if (w < 0) {
      w = this.victim(buf, off, now);
      if (this.expires[w] === 0) this.live++;
      this.addr.set(buf.subarray(off, off + 16), w * 16);
    }
    this.mtu[w] = mtu;
    this.expires[w] = now + this.ageMs;
    return PMTU_LOWERED;
  }

  /** Forgets entries that have aged out (so get() takes its fast path again once none is left). */
  expire(now: number): void {
    if (this.live === 0) return;
    let live = 0;
    for (let w = 0; w < this.expires.length; w++) {
      if (this.expires[w] > now) live++;
      else this.expires[w] = 0;
    }
    this.live = live;
  }

  /** Destinations whose path MTU is lowered now (for statistics). */
  size(now: number): number {
    this.expire(now);
    return this.live;
  }

  /** A keyed hash, so that no one can pick nodes that share a set and evict one another's entries. */
  private setOf(buf: Uint8Array, off: number): number {
    return (this.hash.h128(buf, off) & (this.sets - 1)) * WAYS;
  }

  private find(buf: Uint8Array, off: number): number {
    const first = this.setOf(buf, off);
    const a = this.addr;
    for (let w = first; w < first + WAYS; w++) {
      const o = w * 16;
      let i = 0;
      while (i < 16 && a[o + i] === buf[off + i]) i++;
      if (i === 16 && this.expires[w] !== 0) return w;
    }
    return -1;
  }

  /** The way a new destination takes: an empty or expired one, else the one that expires first. */
  private victim(buf: Uint8Array, off: number, now: number): number {
    const first = this.setOf(buf, off);
    let best = first;
    for (let w = first; w < first + WAYS; w++) {
      if (this.expires[w] <= now) return w;
      if (this.expires[w] < this.expires[best]) best = w;
    }
    return best;
  }
}
