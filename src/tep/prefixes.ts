// The IPv6 prefixes of the DSTM domain the TEP accepts tunnelled packets from. contains() runs per packet on the
// source address in place in the packet buffer, without allocating.
import { formatPrefix6, type Prefix6 } from '../lib/addr';

/** A list of IPv6 prefixes; an empty list contains every address. */
export class Ipv6PrefixList {
  private readonly bytes: Uint8Array; // 16 bytes per prefix
  private readonly lens: Uint8Array;
  readonly texts: string[];

  constructor(prefixes: readonly Prefix6[]) {
    this.bytes = new Uint8Array(prefixes.length * 16);
    this.lens = new Uint8Array(prefixes.length);
    this.texts = prefixes.map(formatPrefix6);
    prefixes.forEach((p, i) => {
      this.bytes.set(p.bytes, i * 16);
      this.lens[i] = p.len;
    });
  }

  get length(): number {
    return this.lens.length;
  }

  contains(buf: Uint8Array, off: number): boolean {
    const n = this.lens.length;
    if (n === 0) return true;
    for (let i = 0; i < n; i++) if (this.matches(i, buf, off)) return true;
    return false;
  }

  private matches(i: number, buf: Uint8Array, off: number): boolean {
    const len = this.lens[i];
    const p = i * 16;
    const full = len >> 3;
    for (let k = 0; k < full; k++) if (buf[off + k] !== this.bytes[p + k]) return false;
    const rest = len & 7;
    if (rest === 0) return true;
    const m = (0xff << (8 - rest)) & 0xff;
    return (buf[off + full] & m) === (this.bytes[p + full] & m);
  }
}
