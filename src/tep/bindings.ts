// The TEP's binding table: which IPv6 node holds which IPv4 address, until when (draft §5.3: the border router
// caches the association; here it is told by the DSTM server or by static configuration, never learned from
// traffic, so the table doubles as the anti-spoofing reference).
//
// Both directions are per-packet lookups: IPv4 destination -> IPv6 node (IPv4 side to tunnel) and IPv6 source ->
// bound IPv4 (tunnel to IPv4 side, anti-spoofing). Entries live in parallel typed arrays indexed by slot; two
// open-addressing hash indexes (linear probing, backward-shift deletion) map a uint32 IPv4 address or the 16
// bytes of an IPv6 address, read in place from the packet buffer, to a slot. Lookups allocate nothing; only
// set()/delete() (control path) may grow the arrays.
//
// A binding maps one IPv4 address to one IPv6 address and back: setting a binding for an address already bound
// replaces the old binding on either side. Entries carry their end time; lookups treat an ended entry as absent,
// and sweep() removes ended entries, so forwarding stops at `ends` whether or not the server says so.

import { readU32 } from '../dti/packet';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../lib/addr';

export type BindingSource = 'server' | 'static';

export interface Binding {
  ipv4: string;
  ipv6: string;
  /** Unix time in milliseconds when forwarding stops; Infinity for static mappings. */
  ends: number;
  /** Unix time in milliseconds when the node got the address (the server's starts); 0 for static mappings. */
  starts: number;
  source: BindingSource;
}

const EMPTY = -1;
const MIN_CAPACITY = 16;

function hash32(a: number): number {
  return Math.imul(a ^ (a >>> 16), 0x45d9f3b) ^ (Math.imul(a, 0x9e3779b1) >>> 15);
}

function hash128(b: Uint8Array, off: number): number {
  // the interface identifier (last 8 bytes) varies most between nodes of one domain, so it weighs most
  const h = Math.imul(hash32(readU32(b, off + 12)), 31) ^ hash32(readU32(b, off + 8));
  return h ^ Math.imul(readU32(b, off) ^ readU32(b, off + 4), 0x27d4eb2d);
}

export class BindingTable {
  private cap = 0;
  private count = 0;
  private ipv4 = new Uint32Array(0);
  private ipv6 = new Uint8Array(0); // 16 bytes per slot
  private ends = new Float64Array(0);
  private starts = new Float64Array(0);
  private isStatic = new Uint8Array(0);
  private used = new Uint8Array(0);
  private views: Uint8Array[] = [];
  private freeSlots: number[] = [];
  // hash indexes: bucket -> slot or EMPTY; sized 2x the slot capacity (load <= 0.5)
  private idx4 = new Int32Array(0);
  private idx6 = new Int32Array(0);
  private mask = 0;
  /** No binding ends before this (may be stale-early after renewals: the next sweep recomputes it). */
  private earliest = Infinity;

  constructor(initialCapacity = MIN_CAPACITY) {
    this.grow(Math.max(MIN_CAPACITY, initialCapacity));
  }

  get size(): number {
    return this.count;
  }

  // --- per-packet lookups (no allocation) ---------------------------------------------------------------------

  /** Slot of the binding for IPv4 address `a` that has not ended at `now` (ms), or -1. */
  findByIpv4(a: number, now: number): number {
    const slot = this.slot4(a);
    return slot >= 0 && this.ends[slot] > now ? slot : -1;
  }

  /** Slot of the binding for the IPv6 address at buf[off..off+16) that has not ended at `now`, or -1. */
  findByIpv6(buf: Uint8Array, off: number, now: number): number {
    const slot = this.slot6(buf, off);
    return slot >= 0 && this.ends[slot] > now ? slot : -1;
  }

  ipv4At(slot: number): number {
    return this.ipv4[slot];
  }

  /** The slot's IPv6 address as a 16-byte view made when the slot was filled (returning it allocates nothing). */
  ipv6At(slot: number): Uint8Array {
    return this.views[slot];
  }

  // --- control path ------------------------------------------------------------------------------------------

  /** Adds or replaces the binding ipv4 <-> ipv6 (any other binding of either address is removed first). */
  set(ipv4: number | string, ipv6: Uint8Array | string, ends: number, source: BindingSource, starts = 0): void {
    const a = typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4;
    const v6 = typeof ipv6 === 'string' ? parseIPv6(ipv6) : ipv6;
    const old4 = this.slot4(a);
    const old6 = this.slot6(v6, 0);
    if (ends < this.earliest) this.earliest = ends;
    if (old4 >= 0 && old4 === old6) {
      this.ends[old4] = ends;
      this.starts[old4] = starts;
      this.isStatic[old4] = source === 'static' ? 1 : 0;
      return;
    }
    if (old4 >= 0) this.remove(old4);
    if (old6 >= 0) this.remove(old6);
    if (this.freeSlots.length === 0) this.grow(this.cap * 2);
    const slot = this.freeSlots.pop() as number;
    this.used[slot] = 1;
    this.ipv4[slot] = a;
    this.ipv6.set(v6, slot << 4);
    this.ends[slot] = ends;
    this.starts[slot] = starts;
    this.isStatic[slot] = source === 'static' ? 1 : 0;
    this.insert4(slot);
    this.insert6(slot);
    this.count++;
  }

  /** Removes the binding of an IPv4 address; returns whether there was one. */
  delete(ipv4: number | string): boolean {
    const slot = this.slot4(typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4);
    if (slot < 0) return false;
    this.remove(slot);
    return true;
  }

  /** Removes bindings that ended at or before `now`; returns them (for logging and counting). */
  sweep(now: number): Binding[] {
    const ended: Binding[] = [];
    let earliest = Infinity;
    for (let s = 0; s < this.cap; s++) {
      if (!this.used[s]) continue;
      if (this.ends[s] <= now) {
        ended.push(this.describe(s));
        this.remove(s);
      } else if (this.ends[s] < earliest) {
        earliest = this.ends[s];
      }
    }
    this.earliest = earliest;
    return ended;
  }

  /** No binding ends before this time (Infinity if none): a sweep before it would find nothing. */
  nextEnd(): number {
    return this.earliest;
  }

  get(ipv4: number | string): Binding | undefined {
    const slot = this.slot4(typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4);
    return slot >= 0 ? this.describe(slot) : undefined;
  }

  list(): Binding[] {
    const out: Binding[] = [];
    for (let s = 0; s < this.cap; s++) if (this.used[s]) out.push(this.describe(s));
    return out.sort((p, q) => parseIPv4(p.ipv4) - parseIPv4(q.ipv4));
  }

  private describe(slot: number): Binding {
    return {
      ipv4: formatIPv4(this.ipv4[slot]),
      ipv6: formatIPv6(this.ipv6, slot << 4),
      ends: this.ends[slot],
      starts: this.starts[slot],
      source: this.isStatic[slot] ? 'static' : 'server',
    };
  }

  // --- hash indexes ------------------------------------------------------------------------------------------

  private slot4(a: number): number {
    for (let b = hash32(a) & this.mask; ; b = (b + 1) & this.mask) {
      const s = this.idx4[b];
      if (s === EMPTY) return -1;
      if (this.ipv4[s] === a) return s;
    }
  }

  private slot6(buf: Uint8Array, off: number): number {
    const v6 = this.ipv6;
    for (let b = hash128(buf, off) & this.mask; ; b = (b + 1) & this.mask) {
      const s = this.idx6[b];
      if (s === EMPTY) return -1;
      const o = s << 4;
      let i = 0;
      while (i < 16 && v6[o + i] === buf[off + i]) i++;
      if (i === 16) return s;
    }
  }

  private insert4(slot: number): void {
    let b = hash32(this.ipv4[slot]) & this.mask;
    while (this.idx4[b] !== EMPTY) b = (b + 1) & this.mask;
    this.idx4[b] = slot;
  }

  private insert6(slot: number): void {
    let b = hash128(this.ipv6, slot << 4) & this.mask;
    while (this.idx6[b] !== EMPTY) b = (b + 1) & this.mask;
    this.idx6[b] = slot;
  }

  private remove(slot: number): void {
    this.unindex(this.idx4, hash32(this.ipv4[slot]) & this.mask, slot, (s) => hash32(this.ipv4[s]));
    this.unindex(this.idx6, hash128(this.ipv6, slot << 4) & this.mask, slot, (s) => hash128(this.ipv6, s << 4));
    this.used[slot] = 0;
    this.ends[slot] = 0;
    this.freeSlots.push(slot);
    this.count--;
  }

  /** Linear-probing deletion with backward shift, so no tombstones slow later lookups. */
  private unindex(idx: Int32Array, start: number, slot: number, hashOf: (s: number) => number): void {
    let b = start;
    while (idx[b] !== slot) b = (b + 1) & this.mask;
    let hole = b;
    for (let j = (hole + 1) & this.mask; idx[j] !== EMPTY; j = (j + 1) & this.mask) {
      const home = hashOf(idx[j]) & this.mask;
      // move idx[j] into the hole unless its home lies cyclically in (hole, j]
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        idx[hole] = idx[j];
        hole = j;
      }
    }
    idx[hole] = EMPTY;
  }

  private grow(cap: number): void {
    const old = { cap: this.cap, ipv4: this.ipv4, ipv6: this.ipv6, ends: this.ends, starts: this.starts, st: this.isStatic, used: this.used };
    this.cap = cap;
    this.ipv4 = new Uint32Array(cap);
    this.ipv6 = new Uint8Array(cap * 16);
    this.ends = new Float64Array(cap);
    this.starts = new Float64Array(cap);
    this.isStatic = new Uint8Array(cap);
    this.used = new Uint8Array(cap);
    this.ipv4.set(old.ipv4);
    this.ipv6.set(old.ipv6);
    this.ends.set(old.ends);
    this.starts.set(old.starts);
    this.isStatic.set(old.st);
    this.used.set(old.used);
    this.views = Array.from({ length: cap }, (_, s) => this.ipv6.subarray(s << 4, (s + 1) << 4));
    this.mask = cap * 2 - 1;
    this.idx4 = new Int32Array(cap * 2).fill(EMPTY);
    this.idx6 = new Int32Array(cap * 2).fill(EMPTY);
    this.freeSlots = [];
    for (let s = cap - 1; s >= 0; s--) {
      if (s < old.cap && old.used[s]) {
        this.insert4(s);
        this.insert6(s);
      } else {
        this.freeSlots.push(s);
      }
    }
  }
}
