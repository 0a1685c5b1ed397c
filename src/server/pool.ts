// The IPv4 address pool: which addresses may be leased, and which of them are free. Allocation is O(1): free
// addresses wait in a FIFO ring (ascending at start-up, then released addresses join the back, so the address used
// longest ago is reused first) and a bitmap says which ring entries are still free, so taking one specific address
// out (a reservation, an admin allocation) is O(1) too and leaves a stale ring entry that take() skips.
// The index lives in memory and is rebuilt from the store's bound addresses at start-up: one pass over the pool.
import { formatIPv4, formatPrefix4, type Prefix4, prefixSize4 } from '../lib/addr';

/** Largest total pool the index accepts: 2^24 addresses (a /8), 2 MiB of bitmap and 64 MiB of ring at most. */
export const MAX_POOL_ADDRESSES = 2 ** 24;

interface Range {
  prefix: Prefix4;
  first: number;
  /** One past the last address. */
  end: number;
  /** Index of `first` in the bitmap. */
  offset: number;
  /** Addresses of the range that may be handed out dynamically, and those of them free now (kept by take and give). */
  dynamic: number;
  free: number;
}

/** One configured pool as the metrics show it. */
export interface PoolStats {
  pool: Prefix4;
  /** Every address of the prefix. */
  size: number;
  /** Addresses that may be leased dynamically (less network, broadcast, exclusions, reservations). */
  dynamic: number;
  /** Dynamic addresses bound to no node (not active, held nor revoked). */
  free: number;
}

export interface PoolOptions {
  pools: readonly Prefix4[];
  exclude?: readonly Prefix4[];
  /** Skip the first and last address of prefixes shorter than /31 (network and broadcast addresses). */
  skipNetworkBroadcast?: boolean;
  /** Addresses that are never handed out dynamically (reservations). */
  reserved?: Iterable<number>;
}

export class AddressPool {
  private readonly ranges: Range[] = [];
  /** Bit set: the address may be handed out dynamically. */
  private readonly dynamic: Uint8Array;
  /** Bit set: the address is free now. */
  private readonly free: Uint8Array;
  private ring: Uint32Array;
  private head = 0;
  private count = 0;
  private freeCount = 0;
  readonly size: number;

  constructor(opts: PoolOptions) {
    const sorted = [...opts.pools].sort((a, b) => a.base - b.base);
    let total = 0;
    for (const p of sorted) {
      const first = p.base;
      const end = p.base + prefixSize4(p.len);
      const prev = this.ranges[this.ranges.length - 1];
      if (prev && first < prev.end) throw new Error(`pool ${formatPrefix4(p)} overlaps another pool`);
      this.ranges.push({ prefix: p, first, end, offset: total, dynamic: 0, free: 0 });
      total += end - first;
      if (total > MAX_POOL_ADDRESSES)
        throw new Error(`the pools hold more than ${MAX_POOL_ADDRESSES} addresses (a /8)`);
    }
    this.size = total;
    this.dynamic = new Uint8Array((total + 7) >> 3);
    this.free = new Uint8Array((total + 7) >> 3);
    for (const p of sorted) {
      const edges = opts.skipNetworkBroadcast !== false && p.len < 31;
      const first = p.base + (edges ? 1 : 0);
      const last = p.base + prefixSize4(p.len) - (edges ? 2 : 1);
      for (let a = first; a <= last; a++) setBit(this.dynamic, this.index(a));
    }
    for (const x of opts.exclude ?? []) {
      for (const r of this.ranges) {
        const from = Math.max(r.first, x.base);
        const to = Math.min(r.end, x.base + prefixSize4(x.len));
        for (let a = from; a < to; a++) clearBit(this.dynamic, r.offset + (a - r.first));
      }
    }
    for (const a of opts.reserved ?? []) {
      const i = this.index(a);
      if (i >= 0) clearBit(this.dynamic, i);
    }
    for (const r of this.ranges)
      for (let i = r.offset; i < r.offset + (r.end - r.first); i++) if (getBit(this.dynamic, i)) r.dynamic++;
    this.ring = new Uint32Array(Math.max(16, total));
  }

  /** Fill the free ring with every dynamic address not in `bound`, in ascending order. Call once, at start-up. */
  load(bound: Iterable<number>): void {
    const used = new Uint8Array(this.dynamic.length);
    for (const a of bound) {
      const i = this.index(a);
      if (i >= 0) setBit(used, i);
    }
    this.head = this.count = this.freeCount = 0;
    this.free.fill(0);
    for (const r of this.ranges) {
      r.free = 0;
      for (let a = r.first, i = r.offset; a < r.end; a++, i++) {
        if (getBit(this.dynamic, i) && !getBit(used, i)) {
          setBit(this.free, i);
          this.push(a);
          this.freeCount++;
          r.free++;
        }
      }
    }
  }

  /** Bitmap index of an address, or -1 when it is in no pool. */
  index(addr: number): number {
    for (const r of this.ranges) if (addr >= r.first && addr < r.end) return r.offset + (addr - r.first);
    return -1;
  }

  /** May this address be handed out dynamically (in a pool, not excluded, not reserved)? */
  isDynamic(addr: number): boolean {
    const i = this.index(addr);
    return i >= 0 && getBit(this.dynamic, i);
  }

  isFree(addr: number): boolean {
    const i = this.index(addr);
    return i >= 0 && getBit(this.free, i);
  }

  get available(): number {
    return this.freeCount;
  }

  /** Per configured pool: size, dynamic and free addresses, from counters (no pass over the pool). */
  stats(): PoolStats[] {
    return this.ranges.map((r) => ({ pool: r.prefix, size: r.end - r.first, dynamic: r.dynamic, free: r.free }));
  }

  /** The range holding an address known to be in the pools. */
  private rangeOf(addr: number): Range {
    for (const r of this.ranges) if (addr >= r.first && addr < r.end) return r;
    throw new RangeError(`${formatIPv4(addr)} is in no pool`);
  }

  /** The free address released longest ago (or never used), or undefined when the pool is exhausted. */
  take(): number | undefined {
    while (this.count > 0) {
      const a = this.ring[this.head];
      this.head = (this.head + 1) % this.ring.length;
      this.count--;
      const i = this.index(a);
      if (getBit(this.free, i)) {
        clearBit(this.free, i);
        this.freeCount--;
        this.rangeOf(a).free--;
        return a;
      }
    }
    return undefined;
  }

  /** Take one given address out of the free set; false when it is not free. */
  takeSpecific(addr: number): boolean {
    const i = this.index(addr);
    if (i < 0 || !getBit(this.free, i)) return false;
    clearBit(this.free, i);
    this.freeCount--;
    this.rangeOf(addr).free--;
    return true;
  }

  /**
   * Return an address to the back of the ring. Addresses that are not dynamic (reserved, excluded, out of the pools)
   * are ignored.
   */
  give(addr: number): void {
    const i = this.index(addr);
    if (i < 0 || !getBit(this.dynamic, i) || getBit(this.free, i)) return;
    setBit(this.free, i);
    this.freeCount++;
    this.rangeOf(addr).free++;
    this.push(addr);
  }

  private push(addr: number): void {
    if (this.count === this.ring.length) {
      // Stale entries (addresses taken out by takeSpecific and given back) can fill the ring: grow it.
      const next = new Uint32Array(this.ring.length * 2);
      for (let k = 0; k < this.count; k++) next[k] = this.ring[(this.head + k) % this.ring.length];
      this.ring = next;
      this.head = 0;
    }
    this.ring[(this.head + this.count) % this.ring.length] = addr;
    this.count++;
  }

  describe(): string {
    return this.ranges.map((r) => `${formatIPv4(r.first)}-${formatIPv4(r.end - 1)}`).join(', ');
  }
}

function setBit(b: Uint8Array, i: number): void {
  b[i >> 3] |= 1 << (i & 7);
}
function clearBit(b: Uint8Array, i: number): void {
  b[i >> 3] &= ~(1 << (i & 7));
}
function getBit(b: Uint8Array, i: number): boolean {
  return (b[i >> 3] & (1 << (i & 7))) !== 0;
}
