// Address prefixes the TEP checks: the IPv4 pool(s) it routes and the IPv6 prefixes of the DSTM domain it accepts
// tunnelled packets from. Parsed at configuration time; contains() runs per packet without allocating.
import { ipv4FromString, ipv6FromString } from '../dti/packet';

export interface Ipv4Prefix {
  base: number;
  len: number;
  text: string;
}

export function parseIpv4Prefix(text: string): Ipv4Prefix {
  const [addr, lenText = '32'] = text.split('/');
  const len = Number(lenText);
  if (!/^\d{1,2}$/.test(lenText) || len > 32) throw new Error(`"${text}": prefix length must be 0-32`);
  const a = ipv4FromString(addr);
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  if ((a & ~mask) >>> 0 !== 0) throw new Error(`"${text}": host bits set (did you mean ${ipv4PrefixText(a & mask, len)}?)`);
  return { base: a, len, text: ipv4PrefixText(a, len) };
}

function ipv4PrefixText(a: number, len: number): string {
  return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}/${len}`;
}

export function ipv4InPrefix(a: number, p: Ipv4Prefix): boolean {
  return p.len === 0 || (a ^ p.base) >>> (32 - p.len) === 0;
}

/** A list of IPv6 prefixes; an empty list contains every address. */
export class Ipv6PrefixList {
  private readonly bytes: Uint8Array; // 16 bytes per prefix, host bits zero
  private readonly lens: Uint8Array;
  readonly texts: string[];

  constructor(prefixes: readonly string[]) {
    this.bytes = new Uint8Array(prefixes.length * 16);
    this.lens = new Uint8Array(prefixes.length);
    this.texts = [];
    prefixes.forEach((text, i) => {
      const [addr, lenText = '128'] = text.split('/');
      const len = Number(lenText);
      if (!/^\d{1,3}$/.test(lenText) || len > 128) throw new Error(`"${text}": prefix length must be 0-128`);
      const b = ipv6FromString(addr);
      for (let bit = len; bit < 128; bit++) {
        if (b[bit >> 3] & (0x80 >> (bit & 7))) throw new Error(`"${text}": host bits set`);
      }
      this.bytes.set(b, i * 16);
      this.lens[i] = len;
      this.texts.push(text);
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
    return (buf[off + full] & m) === this.bytes[p + full];
  }
}
