// The TEP's binding table: which IPv6 node holds which IPv4 address, until when (draft §5.3: the border router
// caches the association; here it is told by the DSTM server or by static configuration, never learned from
// traffic, so the table doubles as the anti-spoofing reference).
//
// Both directions are per-packet lookups: IPv4 destination -> IPv6 node (IPv4 side to tunnel) and IPv6 source ->
// bound IPv4 (tunnel to IPv4 side, anti-spoofing). Each slot is one 32-byte row (IPv6 address, IPv4 address, two
// generations, end in seconds) in a typed array, its traffic counters a 32-byte row in another; two
// open-addressing hash indexes (linear probing, load <= 0.5, backward-shift deletion; a keyed hash, random per
// table, so no one can choose addresses that share a probe chain) map a uint32 IPv4 address or the 16 bytes of an
// IPv6 address, read in place from the packet buffer, to a slot. A bucket holds the key (the IPv6 address's 32-bit
// hash) beside the slot, so a probe reads only the index and a hit one row: with 10^6 bindings, far beyond the CPU
// caches, a lookup costs about two cache misses, and allocates nothing. Only
// set()/delete()/stage() (control path) may grow the arrays. Memory per slot: 104 bytes (row 32, counters 32, two
// indexes 2 x 16, free list 4, start time 4, off the packet path); capacity doubles, so 104–208 bytes per binding:
// 10^6 bindings take 2^20 slots, 109 MB. A staged state's new or moved bindings take slots beside the visible ones
// until the commit (the peak: both states' bindings); growth holds old and new arrays at once (3x for a moment);
// the table never shrinks. End times are kept in whole seconds (the server's unit), rounded up.
//
// O(capacity) work: growth (one synchronous step, see grow(); the constructor can size the table instead) and
// abort() are single steps; sweep() goes SWEEP_SLOTS slots per call and the scans behind the statistics
// (listSteps, topSteps) SCAN_SLOTS per step, so the forwarding thread runs between them.
//
// A binding maps one IPv4 address to one IPv6 address and back: setting a binding for an address already bound
// replaces the old binding on either side. Entries carry their end time; lookups treat an ended entry as absent,
// and sweep() removes ended entries, so forwarding stops at `ends` whether or not the server says so.
//
// Generations: a complete new state (a feed resync, a reload of the static mappings) is staged beside the current
// one — begin(), stage() each binding (in as many chunks as the caller likes, forwarding on in between), commit() —
// and becomes visible at once when committed: an entry is visible while born <= gen <= seen. A binding that stays
// keeps its slot (and its counters) and is never absent; one that goes is visible until the commit; a new one from
// the commit on. Incremental set()/delete() apply to the current state and to the one being staged alike.

import { HashKey } from '../lib/keyed-hash';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../lib/addr';

export type BindingSource = 'server' | 'static';

/** Traffic of one binding, counted since it was made (a renewal keeps it, a new binding starts at zero). */
export interface BindingTraffic {
  toIpv4: number;
  toIpv6: number;
  bytesToIpv4: number;
  bytesToIpv6: number;
}

export interface Binding {
  ipv4: string;
  ipv6: string;
  /** Unix time in milliseconds when forwarding stops; Infinity for static mappings. */
  ends: number;
  /** Unix time in milliseconds when the node got the address (the server's starts); 0 if unknown or static. */
  starts: number;
  source: BindingSource;
  forwarded: BindingTraffic;
}

const EMPTY = -1;
const MIN_CAPACITY = 16;
/** Slots sweep() visits per call (the TEP calls it every 250 ms): a pass over 2^21 slots takes 32 calls. */
export const SWEEP_SLOTS = 65536;
/** Slots a stepped scan (listSteps, topSteps) visits per step: forwarding can run between two steps. */
export const SCAN_SLOTS = 65536;
const NEVER = 0xffffffff;
// a row: 8 uint32 words per slot
const ROW = 3; // log2 of the words per row
const W_IPV4 = 4; // words 0-3: the IPv6 address's 16 bytes
const W_BORN = 5;
const W_SEEN = 6;
const W_ENDS = 7; // seconds since 1970; NEVER: a static mapping
// traffic counters per slot, in `traffic` at slot * 4 + …
const PKT4 = 0;
const BYTES4 = 1;
const PKT6 = 2;
const BYTES6 = 3;

/** An end time in ms as stored: whole seconds, rounded up; never NEVER for a binding that ends. */
function endWord(ms: number, source: BindingSource): number {
  if (source === 'static') return NEVER;
  return Math.min(Math.max(Math.ceil(ms / 1000), 0), NEVER - 1);
}

/** A start time in ms as stored: whole seconds (0: unknown). */
function startWord(ms: number): number {
  return Math.min(Math.max(Math.floor(ms / 1000), 0), NEVER);
}

export class BindingTable {
  private cap = 0;
  private count = 0; // slots in use (visible, staged or dying)
  private live = 0; // visible entries
  private rows = new Uint32Array(0);
  private rows8 = new Uint8Array(0); // the same rows, bytewise (IPv6 addresses)
  private traffic = new Float64Array(0);
  private starts = new Uint32Array(0); // seconds since 1970 (0: unknown); read only by describe()
  private free = new Int32Array(0);
  private nfree = 0;
  // hash indexes: two words per bucket, [key, slot or EMPTY]; 2x the slot capacity in buckets (load <= 0.5)
  private idx4 = new Int32Array(0);
  private idx6 = new Int32Array(0);
  private mask = 0; // buckets - 1
  private wmask = 0; // words - 1 (a bucket's first word is even)
  /** The visible generation, and the one being staged (0: none). */
  private gen = 1;
  private staging = 0;
  private staged = 0; // entries that will be visible once `staging` is committed
  private nextGen = 2;
  /** Slots found by the warm-up passes (one batch). */
  private warmSlots = new Int32Array(256);
  /** What ipv6At returns: one buffer, overwritten by each call. */
  private readonly out6 = new Uint8Array(16);
  /** No binding ends before this (may be stale-early after renewals: the next sweep pass recomputes it). */
  private earliest = Infinity;
  /** Where the sweep pass under way goes on (0: none under way), and the earliest end it has seen. */
  private cursor = 0;
  private passMin = Infinity;
  /** Slots the control path's scans (sweep, list, top talkers) visited: how much work they did, for tests. */
  scanned = 0;

  /**
   * `hash`: the key of the indexes' hashes (default random), so that no one can choose addresses (a node picks its
   * interface identifiers) that share a probe chain; tests give one to place keys alike.
   */
  constructor(
    initialCapacity = MIN_CAPACITY,
    private readonly hash = new HashKey(),
  ) {
    let cap = MIN_CAPACITY;
    while (cap < initialCapacity) cap *= 2;
    this.grow(cap);
  }

  /** Slots in use: visible bindings, staged ones, and those ended or left behind that no sweep removed yet. */
  get used(): number {
    return this.count;
  }

  /** Slots the table has room for before it grows (a power of two). */
  get capacity(): number {
    return this.cap;
  }

  /** Bytes held by the table's arrays (what the memory figure above counts). */
  get memoryBytes(): number {
    return [this.rows, this.traffic, this.starts, this.free, this.idx4, this.idx6].reduce(
      (sum, a) => sum + a.byteLength,
      0,
    );
  }

  /** The home buckets of an IPv4 and of an IPv6 address in the indexes (where their probes start): for tests. */
  homes(ipv4: number, ipv6: Uint8Array): [number, number] {
    return [this.hash.h32(ipv4) & this.mask, this.hash.h128(ipv6, 0) & this.mask];
  }

  /** Bindings visible now. */
  get size(): number {
    return this.live;
  }

  // --- per-packet lookups and counters (no allocation) -------------------------------------------------------

  /** Slot of the binding for IPv4 address `a` that has not ended at `now` (ms), or -1. */
  findByIpv4(a: number, now: number): number {
    const idx = this.idx4;
    const key = a | 0;
    for (let b = (this.hash.h32(a) & this.mask) << 1; ; b = (b + 2) & this.wmask) {
      const s = idx[b + 1];
      if (s === EMPTY) return -1;
      if (idx[b] === key && this.visible(s)) return this.rows[(s << ROW) + W_ENDS] * 1000 > now ? s : -1;
    }
  }

  /** Slot of the binding for the IPv6 address at buf[off..off+16) that has not ended at `now`, or -1. */
  findByIpv6(buf: Uint8Array, off: number, now: number): number {
    const idx = this.idx6;
    const h = this.hash.h128(buf, off);
    for (let b = (h & this.mask) << 1; ; b = (b + 2) & this.wmask) {
      const s = idx[b + 1];
      if (s === EMPTY) return -1;
      if (idx[b] === h && this.ipv6Is(s, buf, off) && this.visible(s)) {
        return this.rows[(s << ROW) + W_ENDS] * 1000 > now ? s : -1;
      }
    }
  }

  /**
   * Touches what findByIpv4 and the counters will read for the `n` IPv4 addresses in keys4 (home buckets first, then
   * the rows and counters they name), so a batch starts its cache misses together before looking up packet by
   * packet: memory-level parallelism, as bulk lookups do in C. Returns a sum only so the loads stay.
   */
  warm4(keys4: Uint32Array, n: number): number {
    if (n > this.warmSlots.length) this.warmSlots = new Int32Array(n);
    const slots = this.warmSlots;
    for (let i = 0; i < n; i++) slots[i] = this.idx4[((this.hash.h32(keys4[i]) & this.mask) << 1) + 1];
    return this.warmRows(n);
  }

  /** As warm4, for findByIpv6 on the IPv6 addresses at buf[offs[i] + delta..+16). */
  warm6(buf: Uint8Array, offs: Uint32Array, delta: number, n: number): number {
    if (n > this.warmSlots.length) this.warmSlots = new Int32Array(n);
    const slots = this.warmSlots;
    for (let i = 0; i < n; i++) slots[i] = this.idx6[((this.hash.h128(buf, offs[i] + delta) & this.mask) << 1) + 1];
    return this.warmRows(n);
  }

  private warmRows(n: number): number {
    const slots = this.warmSlots;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const s = slots[i];
      if (s !== EMPTY) sum += this.rows[(s << ROW) + W_BORN] + this.traffic[s << 2];
    }
    return sum;
  }

  ipv4At(slot: number): number {
    return this.rows[(slot << ROW) + W_IPV4];
  }

  /** The slot's IPv6 address, copied into a buffer that the next call overwrites (so nothing is allocated). */
  ipv6At(slot: number): Uint8Array {
    const o = this.out6;
    const r = this.rows8;
    const p = slot << (ROW + 2);
    for (let i = 0; i < 16; i++) o[i] = r[p + i];
    return o;
  }

  /** Whether the slot's IPv6 address is the one at buf[off..off+16). */
  ipv6Is(slot: number, buf: Uint8Array, off: number): boolean {
    const r = this.rows8;
    const p = slot << (ROW + 2);
    let i = 0;
    while (i < 16 && r[p + i] === buf[off + i]) i++;
    return i === 16;
  }

  /** Counts a packet of `bytes` IPv4 bytes forwarded for the binding in `slot` from its node to the IPv4 side. */
  countToIpv4(slot: number, bytes: number): void {
    const t = slot << 2;
    this.traffic[t + PKT4]++;
    this.traffic[t + BYTES4] += bytes;
  }

  /** Counts a packet forwarded to the binding's node (from the IPv4 side, or hairpinned from another node). */
  countToIpv6(slot: number, bytes: number): void {
    const t = slot << 2;
    this.traffic[t + PKT6]++;
    this.traffic[t + BYTES6] += bytes;
  }

  // --- control path ------------------------------------------------------------------------------------------

  /** Adds or replaces the binding ipv4 <-> ipv6 (any other binding of either address is removed first). */
  set(ipv4: number | string, ipv6: Uint8Array | string, ends: number, source: BindingSource, starts = 0): void {
    const a = typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4;
    const v6 = typeof ipv6 === 'string' ? parseIPv6(ipv6) : ipv6;
    this.noteEnd(ends);
    const same = this.pairSlot(a, v6);
    if (same >= 0 && this.visible(same)) {
      this.rows[(same << ROW) + W_ENDS] = endWord(ends, source);
      this.starts[same] = startWord(starts);
      if (this.staging && this.seenOf(same) !== this.staging) {
        this.rows[(same << ROW) + W_SEEN] = this.staging;
        this.staged++;
      }
      this.removeOthers(a, v6, same);
      return;
    }
    this.removeOthers(a, v6, -1);
    const slot = this.insert(a, v6, endWord(ends, source), this.gen, this.staging || this.gen);
    this.starts[slot] = startWord(starts); // after insert(): it may grow the arrays
    this.live++;
    if (this.staging) this.staged++;
  }

  /** Removes the binding of an IPv4 address (in the current and the staged state); returns whether one was visible. */
  delete(ipv4: number | string): boolean {
    const a = typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4;
    let was = false;
    for (let s = this.any4(a); s >= 0; s = this.any4(a)) {
      was ||= this.visible(s);
      this.remove(s);
    }
    return was;
  }

  /** Opens a generation to stage a complete state in (an open one is abandoned first). */
  begin(): void {
    if (this.staging) this.abort();
    this.staging = this.nextGen++;
    this.staged = 0;
  }

  /** Stages one binding of the state being built: it is visible from commit() on (at once if it is already). */
  stage(ipv4: number | string, ipv6: Uint8Array | string, ends: number, source: BindingSource, starts = 0): void {
    const g = this.staging;
    if (!g) throw new Error('BindingTable.stage() outside begin()/commit()');
    const a = typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4;
    const v6 = typeof ipv6 === 'string' ? parseIPv6(ipv6) : ipv6;
    // a later stage() of either address wins over an earlier one
    for (let s = this.any4(a); s >= 0; s = this.next4(a, s)) if (!this.ipv6Is(s, v6, 0) && this.unstage(s)) s = -1;
    for (let s = this.any6(v6); s >= 0; s = this.next6(v6, s)) if (this.ipv4At(s) !== a && this.unstage(s)) s = -1;
    let slot = this.pairSlot(a, v6);
    if (slot >= 0 && !this.visible(slot) && this.bornOf(slot) !== g) {
      this.remove(slot); // dying leftovers of an older generation
      slot = -1;
    }
    this.noteEnd(ends);
    if (slot >= 0) {
      if (this.seenOf(slot) !== g) this.staged++;
      this.rows[(slot << ROW) + W_SEEN] = g;
      this.rows[(slot << ROW) + W_ENDS] = endWord(ends, source);
      this.starts[slot] = startWord(starts);
      return;
    }
    slot = this.insert(a, v6, endWord(ends, source), g, g);
    this.starts[slot] = startWord(starts); // after insert(): it may grow the arrays
    this.staged++;
  }

  /** Makes the staged state the visible one, at once; what was not staged is swept later (invisible already). */
  commit(): void {
    if (!this.staging) return;
    this.gen = this.staging;
    this.staging = 0;
    this.live = this.staged;
    // a (next) sweep pass removes what the commit left behind; one under way may have gone past some of it
    this.earliest = this.passMin = -Infinity;
  }

  /**
   * Abandons the state being staged: O(capacity), at once (what it staged must free its slots before the next one
   * stages), but only when a newer complete state arrives while one is being staged.
   */
  abort(): void {
    const g = this.staging;
    this.staging = 0;
    for (let s = 0; s < this.cap; s++) if (this.bornOf(s) === g) this.remove(s);
  }

  /**
   * Removes bindings that ended at or before `now`, and those a commit left behind; returns the ended ones. A pass
   * over the table starts when something may have ended (nextEnd() <= now) and goes on where the last call stopped,
   * `budget` slots per call, so no call costs O(capacity); lookups see an ended binding as absent meanwhile.
   */
  sweep(now: number, budget = SWEEP_SLOTS): Binding[] {
    const ended: Binding[] = [];
    if (this.cursor === 0) {
      if (this.earliest > now) return ended;
      this.passMin = Infinity;
    }
    const from = this.cursor;
    const to = Math.min(this.cap, from + budget);
    for (let s = from; s < to; s++) {
      if (this.bornOf(s) === NEVER) continue;
      const seen = this.seenOf(s);
      const ends = this.endsOf(s);
      if (seen < this.gen && seen !== this.staging) {
        this.remove(s);
      } else if (ends <= now) {
        if (this.visible(s)) ended.push(this.describe(s));
        this.remove(s);
      } else if (ends < this.passMin) {
        this.passMin = ends;
      }
    }
    this.scanned += to - from;
    this.cursor = to === this.cap ? 0 : to;
    // a whole pass seen: what it kept, and what set() and stage() added meanwhile (noteEnd), bound the next end
    if (this.cursor === 0) this.earliest = this.passMin;
    return ended;
  }

  /** No binding ends before this time (Infinity if none): a sweep before it would find nothing. */
  nextEnd(): number {
    return this.earliest;
  }

  private noteEnd(ends: number): void {
    if (ends < this.earliest) this.earliest = ends;
    if (ends < this.passMin) this.passMin = ends;
  }

  get(ipv4: number | string): Binding | undefined {
    const a = typeof ipv4 === 'string' ? parseIPv4(ipv4) : ipv4;
    for (let s = this.any4(a); s >= 0; s = this.next4(a, s)) if (this.visible(s)) return this.describe(s);
    return undefined;
  }

  /** The visible bindings by IPv4 address, the first `limit` of them, at once (listSteps, run through). */
  list(limit = Infinity): Binding[] {
    return runNow(this.listSteps(limit));
  }

  /** The `n` visible bindings that forwarded the most bytes (both directions), most first, at once (topSteps). */
  topTalkers(n: number): Binding[] {
    return runNow(this.topSteps(n));
  }

  /**
   * list() in steps of SCAN_SLOTS slots (a generator: the caller may let forwarding run between steps, runChunked).
   * Each step sorts the addresses it found (numbers, not objects) and keeps the `limit` lowest of all so far. The
   * table may change between steps: a binding made or moved meanwhile may be missing, one that went is left out.
   */
  *listSteps(limit = Infinity): Generator<void, Binding[]> {
    let best: Uint32Array = new Uint32Array(0);
    for (let from = 0; from < this.cap; from += SCAN_SLOTS) {
      const to = Math.min(this.cap, from + SCAN_SLOTS);
      const found = new Uint32Array(to - from);
      let n = 0;
      for (let s = from; s < to; s++) if (this.visible(s)) found[n++] = this.ipv4At(s);
      best = lowest(best, found.subarray(0, n).sort(), limit);
      this.scanned += to - from;
      if (to < this.cap) yield;
    }
    return Array.from(best, (a) => this.get(a)).filter((b): b is Binding => b !== undefined);
  }

  /** topTalkers() in steps of SCAN_SLOTS slots, as listSteps; the totals are read again at the end. */
  *topSteps(n: number): Generator<void, Binding[]> {
    const top: { ipv4: number; bytes: number }[] = [];
    for (let from = 0; from < this.cap; from += SCAN_SLOTS) {
      const to = Math.min(this.cap, from + SCAN_SLOTS);
      for (let s = from; s < to; s++) {
        if (!this.visible(s)) continue;
        const bytes = this.traffic[(s << 2) + BYTES4] + this.traffic[(s << 2) + BYTES6];
        if (bytes === 0 || (top.length === n && bytes <= top[n - 1].bytes)) continue;
        let i = top.length === n ? n - 1 : top.length;
        while (i > 0 && top[i - 1].bytes < bytes) i--;
        top.splice(i, 0, { ipv4: this.ipv4At(s), bytes });
        if (top.length > n) top.pop();
      }
      this.scanned += to - from;
      if (to < this.cap) yield;
    }
    const now = top.map((t) => this.get(t.ipv4)).filter((b): b is Binding => b !== undefined);
    const bytes = (b: Binding): number => b.forwarded.bytesToIpv4 + b.forwarded.bytesToIpv6;
    return now.sort((a, b) => bytes(b) - bytes(a));
  }

  private describe(slot: number): Binding {
    const t = slot << 2;
    return {
      ipv4: formatIPv4(this.ipv4At(slot)),
      ipv6: formatIPv6(this.rows8, slot << (ROW + 2)),
      ends: this.endsOf(slot),
      starts: this.starts[slot] * 1000,
      source: this.isStatic(slot) ? 'static' : 'server',
      forwarded: {
        toIpv4: this.traffic[t + PKT4],
        toIpv6: this.traffic[t + PKT6],
        bytesToIpv4: this.traffic[t + BYTES4],
        bytesToIpv6: this.traffic[t + BYTES6],
      },
    };
  }

  // --- rows and generations ----------------------------------------------------------------------------------

  private bornOf(s: number): number {
    return this.rows[(s << ROW) + W_BORN];
  }

  private seenOf(s: number): number {
    return this.rows[(s << ROW) + W_SEEN];
  }

  private endsOf(s: number): number {
    const w = this.rows[(s << ROW) + W_ENDS];
    return w === NEVER ? Infinity : w * 1000;
  }

  /** Whether the binding in slot `s` is a static mapping. */
  isStatic(s: number): boolean {
    return this.rows[(s << ROW) + W_ENDS] === NEVER;
  }

  /** Free slots have born NEVER, so they are never visible. */
  private visible(s: number): boolean {
    const o = s << ROW;
    return this.rows[o + W_BORN] <= this.gen && this.rows[o + W_SEEN] >= this.gen;
  }

  /**
   * Takes a slot out of the state being staged (staged-only entries go, visible ones die at the commit); returns
   * whether it was removed (the indexes shifted: a probe walk starts over).
   */
  private unstage(s: number): boolean {
    const g = this.staging;
    if (this.seenOf(s) !== g) return false;
    if (this.bornOf(s) === g) {
      this.remove(s);
      return true;
    }
    this.staged--;
    this.rows[(s << ROW) + W_SEEN] = this.gen;
    return false;
  }

  /** Removes every entry holding `a` or `v6` except `keep` (incremental set(): one binding per address). */
  private removeOthers(a: number, v6: Uint8Array, keep: number): void {
    for (let s = this.any4(a); s >= 0; s = this.next4(a, s)) {
      if (s === keep) continue;
      this.remove(s);
      s = -1; // indexes shifted: start over (next4 from -1 restarts)
    }
    for (let s = this.any6(v6); s >= 0; s = this.next6(v6, s)) {
      if (s === keep) continue;
      this.remove(s);
      s = -1;
    }
  }

  // --- hash indexes ------------------------------------------------------------------------------------------

  /** The entry (any generation) with exactly this pair, or -1. */
  private pairSlot(a: number, v6: Uint8Array): number {
    for (let s = this.any4(a); s >= 0; s = this.next4(a, s)) if (this.ipv6Is(s, v6, 0)) return s;
    return -1;
  }

  private any4(a: number): number {
    return this.next4(a, -1);
  }

  /** The next entry (any generation) holding IPv4 `a` after slot `after` in its probe sequence (-1: the first). */
  private next4(a: number, after: number): number {
    const idx = this.idx4;
    const key = a | 0;
    let past = after < 0;
    for (let b = (this.hash.h32(a) & this.mask) << 1; ; b = (b + 2) & this.wmask) {
      const s = idx[b + 1];
      if (s === EMPTY) return -1;
      if (idx[b] !== key) continue;
      if (past) return s;
      if (s === after) past = true;
    }
  }

  private any6(v6: Uint8Array): number {
    return this.next6(v6, -1);
  }

  private next6(v6: Uint8Array, after: number): number {
    const idx = this.idx6;
    const h = this.hash.h128(v6, 0);
    let past = after < 0;
    for (let b = (h & this.mask) << 1; ; b = (b + 2) & this.wmask) {
      const s = idx[b + 1];
      if (s === EMPTY) return -1;
      if (idx[b] !== h || !this.ipv6Is(s, v6, 0)) continue;
      if (past) return s;
      if (s === after) past = true;
    }
  }

  private insert(a: number, v6: Uint8Array, ends: number, born: number, seen: number): number {
    if (this.nfree === 0) this.grow(this.cap * 2);
    const slot = this.free[--this.nfree];
    const o = slot << ROW;
    this.rows8.set(v6, o << 2);
    this.rows[o + W_IPV4] = a;
    this.rows[o + W_BORN] = born;
    this.rows[o + W_SEEN] = seen;
    this.rows[o + W_ENDS] = ends;
    this.starts[slot] = 0;
    this.traffic.fill(0, slot << 2, (slot + 1) << 2);
    this.index(slot);
    this.count++;
    return slot;
  }

  private index(slot: number): void {
    const a = this.ipv4At(slot);
    let b = (this.hash.h32(a) & this.mask) << 1;
    while (this.idx4[b + 1] !== EMPTY) b = (b + 2) & this.wmask;
    this.idx4[b] = a;
    this.idx4[b + 1] = slot;
    const h = this.hash.h128(this.rows8, slot << (ROW + 2));
    b = (h & this.mask) << 1;
    while (this.idx6[b + 1] !== EMPTY) b = (b + 2) & this.wmask;
    this.idx6[b] = h;
    this.idx6[b + 1] = slot;
  }

  private remove(slot: number): void {
    if (this.visible(slot)) this.live--;
    if (this.staging && this.seenOf(slot) === this.staging) this.staged--;
    this.unindex(this.idx4, (this.hash.h32(this.ipv4At(slot)) & this.mask) << 1, slot, true);
    this.unindex(this.idx6, (this.hash.h128(this.rows8, slot << (ROW + 2)) & this.mask) << 1, slot, false);
    const o = slot << ROW;
    this.rows[o + W_BORN] = NEVER;
    this.rows[o + W_SEEN] = 0;
    this.rows[o + W_ENDS] = 0;
    this.free[this.nfree++] = slot;
    this.count--;
  }

  /**
   * Linear-probing deletion with backward shift, so no tombstones slow later lookups; a bucket's key gives its home.
   */
  private unindex(idx: Int32Array, start: number, slot: number, v4: boolean): void {
    let b = start;
    while (idx[b + 1] !== slot) b = (b + 2) & this.wmask;
    let hole = b;
    for (let j = (hole + 2) & this.wmask; idx[j + 1] !== EMPTY; j = (j + 2) & this.wmask) {
      const home = ((v4 ? this.hash.h32(idx[j]) : idx[j]) & this.mask) << 1;
      // move bucket j into the hole unless its home lies cyclically in (hole, j]
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        idx[hole] = idx[j];
        idx[hole + 1] = idx[j + 1];
        hole = j;
      }
    }
    idx[hole + 1] = EMPTY;
  }

  /**
   * Doubles (or first sizes) the arrays: rows and counters copied, the indexes rebuilt by walking the old ones in
   * order. A bucket keeps its key (the IPv6 hash, the IPv4 address), so no row is read, and a key's new home is its
   * old one or that plus the old size: two streams of writes that the caches follow, about 20 times faster than
   * indexing slot by slot (rows in random order). Still one synchronous step, O(capacity): see the header.
   */
  private grow(cap: number): void {
    const old = this.cap;
    const rows = new Uint32Array(cap << ROW).fill(NEVER);
    rows.set(this.rows);
    for (let s = old; s < cap; s++) rows[(s << ROW) + W_SEEN] = 0;
    this.rows = rows;
    this.rows8 = new Uint8Array(rows.buffer);
    const traffic = new Float64Array(cap * 4);
    traffic.set(this.traffic);
    this.traffic = traffic;
    const starts = new Uint32Array(cap);
    starts.set(this.starts);
    this.starts = starts;
    const free = new Int32Array(cap);
    free.set(this.free.subarray(0, this.nfree));
    this.free = free;
    this.cap = cap;
    this.mask = cap * 2 - 1;
    this.wmask = cap * 4 - 1;
    const [old4, old6] = [this.idx4, this.idx6];
    this.idx4 = this.rebuilt(old4, true);
    this.idx6 = this.rebuilt(old6, false);
    for (let s = cap - 1; s >= old; s--) this.free[this.nfree++] = s;
  }

  /** A new index of the current size holding the buckets of `from` (see grow()). */
  private rebuilt(from: Int32Array, v4: boolean): Int32Array<ArrayBuffer> {
    const idx = new Int32Array(this.cap * 4).fill(EMPTY);
    for (let j = 0; j < from.length; j += 2) {
      const slot = from[j + 1];
      if (slot === EMPTY) continue;
      const key = from[j];
      let b = ((v4 ? this.hash.h32(key) : key) & this.mask) << 1;
      while (idx[b + 1] !== EMPTY) b = (b + 2) & this.wmask;
      idx[b] = key;
      idx[b + 1] = slot;
    }
    return idx;
  }
}

/** The `limit` lowest of two sorted lists, sorted. */
function lowest(a: Uint32Array, b: Uint32Array, limit: number): Uint32Array {
  const out = new Uint32Array(Math.min(a.length + b.length, limit));
  let i = 0;
  let j = 0;
  for (let k = 0; k < out.length; k++) out[k] = j >= b.length || (i < a.length && a[i] <= b[j]) ? a[i++] : b[j++];
  return out;
}

/** Runs a stepped scan (listSteps, topSteps) through at once. */
export function runNow<T>(steps: Generator<void, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Runs a stepped scan one step per turn of the event loop, so that forwarding goes on between steps. */
export async function runChunked<T>(steps: Generator<void, T>): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
