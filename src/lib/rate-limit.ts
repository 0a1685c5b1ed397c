// Token buckets keyed by an IPv6 prefix, in bounded memory. A key's bucket holds up to `burst` tokens and gains
// `rate` a second; a call takes one or is refused. At most `maxKeys` buckets are kept: the one touched longest ago
// is forgotten first (a forgotten key starts again with a full bucket, which is all an idle key would have anyway).

/** The first `len` bits of an IPv6 address as a map key (the other bits cleared). */
export function prefixKey(addr: Uint8Array, len: number): string {
  const bytes = Math.ceil(len / 8);
  let key = '';
  for (let i = 0; i < bytes; i++) {
    const keep = Math.min(8, len - i * 8);
    key += String.fromCharCode(addr[i] & ((0xff << (8 - keep)) & 0xff));
  }
  return `${len}/${key}`;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date, milliseconds. */
  at: number;
}

export interface RateLimitOptions {
  /** Tokens gained per second. */
  rate: number;
  /** Most tokens a bucket holds (the burst allowed after a pause); at least 1. */
  burst: number;
  /** Most keys remembered at once. */
  maxKeys: number;
  /** Milliseconds; performance.now() unless given (tests). */
  now?: () => number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;

  constructor(private readonly o: RateLimitOptions) {
    if (!(o.rate > 0) || !(o.burst >= 1) || !(o.maxKeys >= 1))
      throw new RangeError('rate limiter: rate > 0, burst >= 1 and maxKeys >= 1 are required');
    this.now = o.now ?? (() => performance.now());
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Take a token for `key`: true when the call may proceed. */
  take(key: string): boolean {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-inserted below: the Map's order is least recently touched first
      b.tokens = Math.min(this.o.burst, b.tokens + ((now - b.at) / 1000) * this.o.rate);
      b.at = now;
    } else {
      if (this.buckets.size >= this.o.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.o.burst, at: now };
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
