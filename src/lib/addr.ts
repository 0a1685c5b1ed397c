// IPv4 and IPv6 addresses and prefixes, the one place every part of dstm parses and formats them: IPv4 as an
// unsigned 32-bit number (so a pool is an integer range and a packet field is one read), IPv6 as 16 bytes (the
// Annex B and packet wire form). Text is parsed by ip-address, which knows every RFC 4291 form; formatting is ours
// (RFC 5952) so that it can read straight from a packet buffer. Configuration-time code: these allocate.
import { Address4, Address6 } from 'ip-address';

export function parseIPv4(s: string): number {
  if (!Address4.isValid(s) || s.includes('/')) throw new Error(`"${s}" is not an IPv4 address`);
  return Number(new Address4(s).bigInt());
}

export function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function ipv4ToBytes(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

export function ipv4FromBytes(b: Uint8Array): number {
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

/** 16 bytes from any RFC 4291 text form (including an embedded IPv4 tail); a zone ("%eth0") is ignored. */
export function parseIPv6(text: string): Uint8Array {
  const plain = parsePlainIPv6(text);
  if (plain) return plain;
  const s = text.replace(/%.*$/, '');
  if (s.includes('/') || !Address6.isValid(s)) throw new Error(`"${text}" is not an IPv6 address`);
  return Uint8Array.from(new Address6(s).toUnsignedByteArray());
}

const groups = new Uint16Array(8);

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  c |= 0x20; // lower case
  return c >= 97 && c <= 102 ? c - 87 : -1;
}

/**
 * The form sockets report peers in (hex groups and at most one "::"; no IPv4 tail, no zone), parsed by hand: the
 * server parses one per call, and ip-address costs microseconds. Undefined for any other text, valid or not, which
 * parseIPv6 then gives to ip-address, so both paths accept and refuse the same texts.
 */
function parsePlainIPv6(s: string): Uint8Array | undefined {
  const len = s.length;
  if (len < 2 || len > 39) return undefined;
  let n = 0;
  let gap = -1;
  let i = 0;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return undefined;
    gap = 0;
    i = 2;
  }
  while (i < len) {
    if (n === 8) return undefined;
    let v = 0;
    let digits = 0;
    for (let h; i < len && (h = hexDigit(s.charCodeAt(i))) >= 0; i++) {
      if (++digits > 4) return undefined;
      v = (v << 4) | h;
    }
    if (digits === 0) return undefined;
    groups[n++] = v;
    if (i === len) break;
    if (s.charCodeAt(i++) !== 58 || i === len) return undefined;
    if (s.charCodeAt(i) === 58) {
      if (gap >= 0) return undefined;
      gap = n;
      i++;
    }
  }
  if (gap < 0 ? n !== 8 : n > 7) return undefined;
  const out = new Uint8Array(16);
  const shift = gap < 0 ? 0 : 8 - n;
  for (let k = 0; k < n; k++) {
    const at = 2 * (gap >= 0 && k >= gap ? k + shift : k);
    out[at] = groups[k] >> 8;
    out[at + 1] = groups[k] & 255;
  }
  return out;
}

/** RFC 5952 canonical text of the 16 bytes at `off`: lower case, longest run (>= 2) of zero groups compressed. */
export function formatIPv6(b: Uint8Array, off = 0): string {
  const g: number[] = [];
  for (let i = off; i < off + 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

export function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Why a tunnel cannot go to this IPv6 address, or undefined when it can: the unspecified address (nowhere), loopback
 * (back to this host), a multicast group (to every member), an IPv4-mapped address (no IPv6 destination).
 */
export function tunnelEndProblem(b: Uint8Array): string | undefined {
  if (b[0] === 0xff) return 'a multicast address';
  if (isV4Mapped(b)) return 'an IPv4-mapped address';
  for (let i = 0; i < 15; i++) if (b[i] !== 0) return undefined;
  return b[15] === 0 ? 'the unspecified address' : b[15] === 1 ? 'the loopback address' : undefined;
}

export function isZero(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface Prefix6 {
  bytes: Uint8Array;
  len: number;
}

/** "2001:db8::/32", or a bare address meaning /128. Host bits must be zero, so a typo cannot widen a prefix. */
export function parsePrefix6(text: string): Prefix6 {
  const [addr, lenText, extra] = text.split('/');
  if (extra !== undefined) throw new Error(`"${text}" has more than one "/"`);
  const bytes = parseIPv6(addr);
  const len = lenText === undefined ? 128 : Number(lenText);
  if (!/^\d{1,3}$/.test(lenText ?? '128') || len > 128) throw new Error(`prefix length "${lenText}" is not 0-128`);
  if (!equalBytes(masked6(bytes, len), bytes)) throw new Error(`host bits are set past /${len}`);
  return { bytes, len };
}

function masked6(b: Uint8Array, len: number): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, len - 8 * i));
    out[i] = b[i] & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

export function prefixContains6(p: Prefix6, addr: Uint8Array): boolean {
  const full = p.len >> 3;
  for (let i = 0; i < full; i++) if (p.bytes[i] !== addr[i]) return false;
  const rem = p.len & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (p.bytes[full] & mask) === (addr[full] & mask);
}

export function formatPrefix6(p: Prefix6): string {
  return `${formatIPv6(p.bytes)}/${p.len}`;
}

export interface Prefix4 {
  /** First address of the prefix. */
  base: number;
  len: number;
}

/** "192.0.2.0/24", or a bare address meaning /32; host bits must be zero. */
export function parsePrefix4(text: string): Prefix4 {
  const [addr, lenText, extra] = text.split('/');
  if (extra !== undefined) throw new Error(`"${text}" has more than one "/"`);
  const base = parseIPv4(addr);
  const len = lenText === undefined ? 32 : Number(lenText);
  if (!/^\d{1,2}$/.test(lenText ?? '32') || len > 32) throw new Error(`prefix length "${lenText}" is not 0-32`);
  if (base % prefixSize4(len) !== 0) throw new Error(`host bits are set past /${len}`);
  return { base, len };
}

export function prefixSize4(len: number): number {
  return 2 ** (32 - len);
}

export function formatPrefix4(p: Prefix4): string {
  return `${formatIPv4(p.base)}/${p.len}`;
}

export function prefixContains4(p: Prefix4, addr: number): boolean {
  return addr >= p.base && addr < p.base + prefixSize4(p.len);
}

/** Longest-prefix-match over a few IPv6 prefixes (TEP map, ACLs): entries are kept longest first. */
export class PrefixTable<T> {
  private readonly entries: { prefix: Prefix6; value: T }[] = [];

  constructor(items: Iterable<[Prefix6, T]> = []) {
    for (const [p, v] of items) this.entries.push({ prefix: p, value: v });
    this.entries.sort((a, b) => b.prefix.len - a.prefix.len);
  }

  lookup(addr: Uint8Array): T | undefined {
    for (const e of this.entries) if (prefixContains6(e.prefix, addr)) return e.value;
    return undefined;
  }

  get size(): number {
    return this.entries.length;
  }
}

/** True when `addr` is inside any of the prefixes. */
export function inAny6(prefixes: readonly Prefix6[], addr: Uint8Array): boolean {
  return prefixes.some((p) => prefixContains6(p, addr));
}

/** A route destination: "default" (or "0.0.0.0/0") or an IPv4 prefix, as canonical text ("default", "192.0.2.0/24"). */
export function parseRoute4(text: string): string {
  const r = text.trim();
  return r === 'default' || r === '0.0.0.0/0' ? 'default' : formatPrefix4(parsePrefix4(r));
}
