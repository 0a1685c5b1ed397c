// A fixed set of IPv4 addresses for per-packet membership tests (the static mappings' addresses, which the hairpin
// check asks about for every decapsulated packet): open addressing with linear probing in one Int32Array, load at
// most 0.5, so a lookup is O(1) whatever the number of addresses and allocates nothing. Rebuilt, not updated.
import { HashKey } from '../lib/keyed-hash';

export class Ipv4Set {
  /** Two words per bucket: [address | 0, 1 if used]. */
  private readonly buckets: Int32Array;
  private readonly mask: number;
  readonly size: number;

  constructor(
    addresses: Iterable<number>,
    private readonly hash = new HashKey(),
  ) {
    const list = [...new Set(addresses)];
    let n = 4;
    while (n < list.length * 2) n *= 2;
    this.buckets = new Int32Array(n * 2);
    this.mask = n - 1;
    this.size = list.length;
    for (const a of list) {
      let b = this.hash.h32(a) & this.mask;
      while (this.buckets[b * 2 + 1]) b = (b + 1) & this.mask;
      this.buckets[b * 2] = a | 0;
      this.buckets[b * 2 + 1] = 1;
    }
  }

  has(a: number): boolean {
    const key = a | 0;
    for (let b = this.hash.h32(a) & this.mask; this.buckets[b * 2 + 1]; b = (b + 1) & this.mask) {
      if (this.buckets[b * 2] === key) return true;
    }
    return false;
  }
}
