// Keyed hashes for tables whose keys others choose (IPv4 addresses, nodes' IPv6 addresses, the hosts ICMP errors
// go to): the key is random per process (tests may give one), so which keys share a bucket cannot be worked out
// offline, and no one can pick keys that all land in one probe chain or one rate-limit bucket. Multiply–xorshift
// with secret offsets and odd multipliers, then MurmurHash3's finaliser: a few integer operations per 32-bit word
// and no allocation, not a cryptographic PRF (someone able to time lookups finely might still learn something).
import { randomBytes } from 'node:crypto';

/** Bytes of key a HashKey takes. */
export const HASH_KEY_BYTES = 32;

export class HashKey {
  private readonly k0: number;
  private readonly k1: number;
  private readonly k2: number;
  private readonly k3: number;
  private readonly m0: number;
  private readonly m1: number;
  private readonly m2: number;
  private readonly m3: number;

  /** `key`: HASH_KEY_BYTES bytes; default random (crypto.randomBytes). */
  constructor(key: Uint8Array = randomBytes(HASH_KEY_BYTES)) {
    if (key.length !== HASH_KEY_BYTES) throw new RangeError(`a hash key is ${HASH_KEY_BYTES} bytes`);
    const w = (i: number): number => (key[i] << 24) | (key[i + 1] << 16) | (key[i + 2] << 8) | key[i + 3];
    [this.k0, this.k1, this.k2, this.k3] = [w(0), w(4), w(8), w(12)];
    [this.m0, this.m1, this.m2, this.m3] = [w(16) | 1, w(20) | 1, w(24) | 1, w(28) | 1];
  }

  /** Hash of a 32-bit value (an IPv4 address): an int32. */
  h32(a: number): number {
    return fmix(Math.imul(a ^ this.k0, this.m0) ^ this.k1);
  }

  /** Hash of the 16 bytes at buf[off..off+16) (an IPv6 address, in place in a packet): an int32. */
  h128(b: Uint8Array, off: number): number {
    let h = Math.imul(word(b, off) ^ this.k0, this.m0);
    h = Math.imul(h ^ (h >>> 16) ^ word(b, off + 4) ^ this.k1, this.m1);
    h = Math.imul(h ^ (h >>> 16) ^ word(b, off + 8) ^ this.k2, this.m2);
    h = Math.imul(h ^ (h >>> 16) ^ word(b, off + 12) ^ this.k3, this.m3);
    return fmix(h);
  }
}

function word(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}

/** MurmurHash3's 32-bit finaliser: every input bit reaches every output bit (the low ones index the tables). */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}
