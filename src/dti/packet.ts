// IPv4-in-IPv6 packet processing for the DTI (draft-ietf-ngtrans-dstm-05 §5.3, RFC 2473, RFC 6040).
//
// Everything here is pure: no I/O, no allocation per packet. Functions work on caller-provided Uint8Arrays at
// offsets and return a length/offset (>= 0) or a Drop code, writing any structured result into a caller-owned
// result object that is allocated once. Untrusted lengths are checked before any field they cover is read.
//
// Encapsulation is in place: the device reads each IPv4 packet into its slot at HEADROOM, so the outer IPv6
// header is written just in front of it and the raw socket sends straight from the receive buffer (zero copy).
//
// Addresses: IPv4 as unsigned 32-bit numbers (cheap Map keys), IPv6 as 16 bytes at an offset in some buffer.

import { Drop, DropCode } from './counters';
import { HashKey } from '../lib/keyed-hash';

export const IPV4_HDR = 20;
export const IPV6_HDR = 40;
export const FRAG_HDR = 8;
/** Destination options header carrying only the Tunnel Encapsulation Limit option (+ PadN), RFC 2473 §4.1.1. */
export const ENCAP_LIMIT_HDR = 8;
/** Room kept in front of every received IPv4 packet for the outer headers. */
export const HEADROOM = IPV6_HDR + ENCAP_LIMIT_HDR;
export const IPV6_MIN_MTU = 1280;
export const IPV4_MIN_MTU = 68;

export const PROTO_ICMP = 1;
export const PROTO_IPIP = 4;
export const NH_HOPOPTS = 0;
export const NH_ROUTING = 43;
export const NH_FRAGMENT = 44;
export const NH_ICMPV6 = 58;
export const NH_DSTOPTS = 60;
const OPT_PAD1 = 0;
const OPT_PADN = 1;
const OPT_TUNNEL_ENCAP_LIMIT = 4;

/** Result code for "accepted"; every other code is a Drop reason. */
export const OK = 0;

// ---------------------------------------------------------------------------------------------------------------
// Checksums and addresses

/** One's complement sum of `len` bytes (odd tail padded with zero), folded to 16 bits, not inverted. */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[off + len - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** onesSum of a 20-byte IPv4 header, unrolled: it is on every packet's path. */
function sum20(b: Uint8Array, o: number): number {
  let s =
    ((b[o] << 8) | b[o + 1]) +
    ((b[o + 2] << 8) | b[o + 3]) +
    ((b[o + 4] << 8) | b[o + 5]) +
    ((b[o + 6] << 8) | b[o + 7]) +
    ((b[o + 8] << 8) | b[o + 9]) +
    ((b[o + 10] << 8) | b[o + 11]) +
    ((b[o + 12] << 8) | b[o + 13]) +
    ((b[o + 14] << 8) | b[o + 15]) +
    ((b[o + 16] << 8) | b[o + 17]) +
    ((b[o + 18] << 8) | b[o + 19]);
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/** Internet checksum (RFC 1071) of a byte range: the value to store in a checksum field that was zero. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~onesSum(buf, off, len, initial) & 0xffff;
}

/** Recomputes and stores the IPv4 header checksum. */
export function setIpv4Checksum(buf: Uint8Array, off: number): void {
  const hlen = (buf[off] & 0x0f) << 2;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const c = internetChecksum(buf, off, hlen);
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c & 0xff;
}

export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

export function writeU16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

export function bytesEqual(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, len: number): boolean {
  for (let i = 0; i < len; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/**
 * Copies bytes between (possibly overlapping) ranges. Within one ArrayBuffer this is copyWithin (memmove, no
 * allocation); across buffers it needs a temporary view, which only the slow paths (fragments, ICMP quotes) take.
 */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, len: number): void {
  if (src.buffer === dst.buffer) {
    const delta = src.byteOffset - dst.byteOffset;
    dst.copyWithin(dstOff, srcOff + delta, srcOff + delta + len);
  } else if (len <= 32) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i];
  } else {
    dst.set(src.subarray(srcOff, srcOff + len), dstOff);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// IPv4

/** Fields of a validated IPv4 header (filled by parseIpv4; allocate one per pipeline, reuse for every packet). */
export class Ipv4Header {
  hlen = 0;
  totalLen = 0;
  tos = 0;
  id = 0;
  df = false;
  mf = false;
  fragOffset = 0; // in bytes
  ttl = 0;
  protocol = 0;
  src = 0;
  dst = 0;
}

/**
 * Validates an IPv4 header at buf[off..off+len): version, IHL, total length against the bytes present, header
 * checksum. The packet is buf[off..off+h.totalLen) (trailing bytes, e.g. link padding, are ignored).
 */
export function parseIpv4(buf: Uint8Array, off: number, len: number, h: Ipv4Header): DropCode {
  if (len < 1 || off + len > buf.length) return Drop.ipv4_malformed;
  const vihl = buf[off];
  if (vihl >>> 4 !== 4) return Drop.not_ipv4;
  const hlen = (vihl & 0x0f) << 2;
  if (hlen < IPV4_HDR || hlen > len) return Drop.ipv4_malformed;
  const totalLen = (buf[off + 2] << 8) | buf[off + 3];
  if (totalLen < hlen || totalLen > len) return Drop.ipv4_malformed;
  if ((hlen === IPV4_HDR ? sum20(buf, off) : onesSum(buf, off, hlen)) !== 0xffff) return Drop.ipv4_bad_checksum;
  const frag = (buf[off + 6] << 8) | buf[off + 7];
  h.hlen = hlen;
  h.totalLen = totalLen;
  h.tos = buf[off + 1];
  h.id = (buf[off + 4] << 8) | buf[off + 5];
  h.df = (frag & 0x4000) !== 0;
  h.mf = (frag & 0x2000) !== 0;
  h.fragOffset = (frag & 0x1fff) << 3;
  h.ttl = buf[off + 8];
  h.protocol = buf[off + 9];
  h.src = readU32(buf, off + 12);
  h.dst = readU32(buf, off + 16);
  return OK;
}

// ---------------------------------------------------------------------------------------------------------------
// IPv6

/** Fields of a validated IPv6 packet and the walk of its extension headers (filled by parseIpv6). */
export class Ipv6Header {
  /** Traffic class (DSCP << 2 | ECN). */
  tclass = 0;
  /** Next header of the upper-layer payload after the extension headers walked. */
  upperProto = 0;
  /** Offset of the upper-layer payload (absolute, in buf). */
  upperOff = 0;
  /** Length of the upper-layer payload (bounded by the IPv6 payload length). */
  upperLen = 0;
  /** Tunnel Encapsulation Limit found in a destination option, or -1 (RFC 2473 §4.1.1). */
  encapLimit = -1;
  /** Offset of the encap-limit option's value byte (for ICMPv6 parameter-problem pointers), or -1. */
  encapLimitOff = -1;
}

/**
 * Validates an IPv6 header and walks hop-by-hop, routing (segments left 0), fragment and destination options
 * headers to the upper-layer payload. Destination options: Pad1/PadN and the Tunnel Encapsulation Limit are
 * understood; unknown options are skipped when their action bits are 00 and refused otherwise (RFC 8200 §4.2).
 * `quoted`: the packet is quoted in an ICMPv6 error: it may be truncated and may be a first fragment.
 */
export function parseIpv6(buf: Uint8Array, off: number, len: number, h: Ipv6Header, quoted = false): DropCode {
  if (len < IPV6_HDR || off + len > buf.length) return Drop.ipv6_malformed;
  if (buf[off] >>> 4 !== 6) return Drop.ipv6_malformed;
  const payloadLen = (buf[off + 4] << 8) | buf[off + 5];
  // Payload length 0 would mean a jumbogram (RFC 2675), which never fits a tunnel MTU.
  if (payloadLen === 0 || IPV6_HDR + payloadLen > len) {
    // ICMPv6 errors quote truncated packets: the quoted payload length may exceed what is present.
    if (!quoted || payloadLen === 0) return Drop.ipv6_malformed;
  }
  const end = off + Math.min(len, IPV6_HDR + payloadLen);
  h.tclass = ((buf[off] & 0x0f) << 4) | (buf[off + 1] >>> 4);
  h.encapLimit = -1;
  h.encapLimitOff = -1;
  let nh = buf[off + 6];
  let p = off + IPV6_HDR;
  for (let hops = 0; ; hops++) {
    if (nh === NH_DSTOPTS || nh === NH_HOPOPTS) {
      if (nh === NH_HOPOPTS && hops !== 0) return Drop.ipv6_malformed;
      if (p + 2 > end) return Drop.ipv6_malformed;
      const extLen = (buf[p + 1] + 1) << 3;
      if (p + extLen > end) return Drop.ipv6_malformed;
      let o = p + 2;
      const oend = p + extLen;
      while (o < oend) {
        const type = buf[o];
        if (type === OPT_PAD1) {
          o++;
          continue;
        }
        if (o + 2 > oend || o + 2 + buf[o + 1] > oend) return Drop.ipv6_malformed;
        const olen = buf[o + 1];
        if (type === OPT_TUNNEL_ENCAP_LIMIT && nh === NH_DSTOPTS) {
          if (olen !== 1) return Drop.ipv6_malformed;
          h.encapLimit = buf[o + 2];
          h.encapLimitOff = o + 2;
        } else if (type !== OPT_PADN && (type & 0xc0) !== 0) {
          return Drop.ipv6_bad_option;
        }
        o += 2 + olen;
      }
      nh = buf[p];
      p = oend;
    } else if (nh === NH_ROUTING) {
      if (p + 4 > end) return Drop.ipv6_malformed;
      const extLen = (buf[p + 1] + 1) << 3;
      // Segments left ≠ 0 would make us a forwarder of source-routed packets: refuse.
      if (p + extLen > end || buf[p + 3] !== 0) return Drop.ipv6_malformed;
      nh = buf[p];
      p += extLen;
    } else if (nh === NH_FRAGMENT) {
      if (p + FRAG_HDR > end) return Drop.ipv6_malformed;
      // Only a first fragment, quoted in an ICMPv6 error, still shows the headers that follow.
      if (!quoted || (((buf[p + 2] << 8) | buf[p + 3]) & 0xfff8) !== 0) return Drop.ipv6_fragment;
      nh = buf[p];
      p += FRAG_HDR;
    } else {
      break;
    }
    if (hops > 8) return Drop.ipv6_malformed;
  }
  h.upperProto = nh;
  h.upperOff = p;
  h.upperLen = end - p;
  return OK;
}

// ---------------------------------------------------------------------------------------------------------------
// Encapsulation (RFC 2473 §3.1, draft §5.3)

/** Tunnel parameters for encapsulation; build once per tunnel. */
export class EncapConfig {
  hopLimit = 64;
  /**
   * Outer traffic class. -1: copy the inner TOS byte (DSCP and ECN). Otherwise the DSCP bits are taken from this
   * value and the ECN bits are still copied from the inner packet (RFC 6040 §4.1 normal mode).
   */
  tclass = -1;
  /** Outer flow label: a fixed 20-bit value, or -1 to derive one from the inner addresses and protocol. */
  flowLabel = 0;
  /** Tunnel Encapsulation Limit to send in a destination option (RFC 2473 §4.1.1), or -1 for none. */
  encapLimit = -1;

  /** `src` as four little-endian 32-bit words, for the word-at-a-time header write. */
  readonly srcWords = new Int32Array(4);
  private source: Uint8Array = new Uint8Array(16);

  constructor(src: Uint8Array, init: Partial<Omit<EncapConfig, 'src' | 'srcWords' | 'overhead'>> = {}) {
    this.src = src;
    Object.assign(this, init);
  }

  /** Outer IPv6 source: the address of the interface the packet leaves by (draft §5.3). 16 bytes; settable. */
  get src(): Uint8Array {
    return this.source;
  }

  set src(src: Uint8Array) {
    if (src.length !== 16) throw new Error('EncapConfig: src must be 16 bytes');
    this.source = src;
    for (let k = 0; k < 4; k++) this.srcWords[k] = le32(src, k * 4);
  }

  /** Bytes of outer headers this tunnel adds (IPv6 header, plus the encap-limit option if any). */
  get overhead(): number {
    return IPV6_HDR + (this.encapLimit >= 0 ? ENCAP_LIMIT_HDR : 0);
  }
}

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
const NO_WORDS: Uint32Array = new Uint32Array(0);
// Two cached word views: a pipeline alternates between its TUN and raw-socket receive buffers, batch by batch.
let wordsOfA: Uint8Array | undefined;
let wordsA: Uint32Array = NO_WORDS;
let wordsOfB: Uint8Array | undefined;
let wordsB: Uint32Array = NO_WORDS;

/**
 * A 32-bit view of `buf` for word-at-a-time address access, or an empty view when that cannot be used
 * (unaligned buffer, big-endian host). Views are cached, so a new one is made only when the buffer changes.
 */
function wordView(buf: Uint8Array): Uint32Array {
  if (buf === wordsOfA) return wordsA;
  if (buf === wordsOfB) return wordsB;
  wordsOfB = wordsOfA;
  wordsB = wordsA;
  wordsOfA = buf;
  const usable = LITTLE_ENDIAN && (buf.byteOffset & 3) === 0;
  wordsA = usable ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2) : NO_WORDS;
  return wordsA;
}

/** Whether the 16 bytes at buf[off] are `cfg.src` (words when aligned, else bytes). */
function isOwnAddress(buf: Uint8Array, off: number, cfg: EncapConfig): boolean {
  const w = (off & 3) === 0 ? wordView(buf) : NO_WORDS;
  const i = off >>> 2;
  if (i + 4 > w.length) return bytesEqual(buf, off, cfg.src, 0, 16);
  const s = cfg.srcWords;
  return ((w[i] ^ s[0]) | (w[i + 1] ^ s[1]) | (w[i + 2] ^ s[2]) | (w[i + 3] ^ s[3])) === 0;
}

/** Four bytes as the little-endian 32-bit word that stores them in order. */
function le32(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
}

/** RFC 2473 §6.7: the tunnel MTU is the path MTU minus the encapsulation headers. */
export function tunnelMtu(pathMtu: number, cfg: EncapConfig): number {
  return pathMtu - cfg.overhead;
}

/**
 * Wraps the IPv4 packet at buf[innerOff..innerOff+innerLen) in IPv6, in place: the outer headers are written
 * in the `cfg.overhead` bytes before innerOff. `dst` (16 bytes at dstOff) is the tunnel exit point. Returns the
 * offset of the IPv6 packet (its length is innerLen + cfg.overhead), or a negative Drop code:
 * -Drop.tunnel_loop when dst is our own source (RFC 2473 §4.1.2), -Drop.buffer_too_small without headroom.
 */
export function encapsulate(
  buf: Uint8Array,
  innerOff: number,
  innerLen: number,
  dst: Uint8Array,
  dstOff: number,
  cfg: EncapConfig,
): number {
  const hdr = cfg.overhead;
  const off = innerOff - hdr;
  if (off < 0 || innerOff + innerLen > buf.length) return -Drop.buffer_too_small;
  const src = cfg.src;
  const tos = buf[innerOff + 1];
  const tc = cfg.tclass < 0 ? tos : (cfg.tclass & 0xfc) | (tos & 0x03);
  const fl = cfg.flowLabel >= 0 ? cfg.flowLabel : flowHash(buf, innerOff);
  buf[off] = 0x60 | (tc >>> 4);
  buf[off + 1] = ((tc & 0x0f) << 4) | ((fl >>> 16) & 0x0f);
  buf[off + 2] = (fl >>> 8) & 0xff;
  buf[off + 3] = fl & 0xff;
  const plen = innerLen + hdr - IPV6_HDR;
  buf[off + 4] = plen >>> 8;
  buf[off + 5] = plen & 0xff;
  buf[off + 7] = cfg.hopLimit;
  // The loop check (RFC 2473 §4.1.2) comes after writing, which only touched the headroom: one pass, not two.
  const w = (off & 3) === 0 ? wordView(buf) : NO_WORDS;
  const wi = (off + 8) >>> 2;
  if (wi + 8 <= w.length) {
    const s = cfg.srcWords;
    const d0 = le32(dst, dstOff);
    const d1 = le32(dst, dstOff + 4);
    const d2 = le32(dst, dstOff + 8);
    const d3 = le32(dst, dstOff + 12);
    w[wi] = s[0];
    w[wi + 1] = s[1];
    w[wi + 2] = s[2];
    w[wi + 3] = s[3];
    w[wi + 4] = d0;
    w[wi + 5] = d1;
    w[wi + 6] = d2;
    w[wi + 7] = d3;
    if (((d0 ^ s[0]) | (d1 ^ s[1]) | (d2 ^ s[2]) | (d3 ^ s[3])) === 0) return -Drop.tunnel_loop;
  } else {
    let diff = 0;
    for (let i = 0; i < 16; i++) {
      const d = dst[dstOff + i];
      buf[off + 8 + i] = src[i];
      buf[off + 24 + i] = d;
      diff |= src[i] ^ d;
    }
    if (diff === 0) return -Drop.tunnel_loop;
  }
  if (hdr === IPV6_HDR) {
    buf[off + 6] = PROTO_IPIP;
  } else {
    // Destination options: Tunnel Encapsulation Limit (type 4, length 1) then PadN to 8 bytes, as Linux sends.
    const o = off + IPV6_HDR;
    buf[off + 6] = NH_DSTOPTS;
    buf[o] = PROTO_IPIP;
    buf[o + 1] = 0;
    buf[o + 2] = OPT_TUNNEL_ENCAP_LIMIT;
    buf[o + 3] = 1;
    buf[o + 4] = cfg.encapLimit;
    buf[o + 5] = OPT_PADN;
    buf[o + 6] = 1;
    buf[o + 7] = 0;
  }
  return off;
}

/** A 20-bit flow label from the inner source, destination and protocol (RFC 6437 §3 style: stable per flow). */
function flowHash(buf: Uint8Array, ip: number): number {
  let h = Math.imul(readU32(buf, ip + 12) ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ readU32(buf, ip + 16) ^ (h >>> 13), 0xc2b2ae35);
  h = Math.imul(h ^ buf[ip + 9] ^ (h >>> 16), 0x27d4eb2f);
  return (h ^ (h >>> 15)) & 0xfffff || 1;
}

// ---------------------------------------------------------------------------------------------------------------
// Decapsulation (RFC 2473 §3.3, RFC 6040 §4.2)

/** Where the inner packet of a decapsulated IPv6 packet is, and what the outer packet said. Reused per packet. */
export class DecapResult {
  innerOff = 0;
  innerLen = 0;
  /** Offset of the outer IPv6 source address (16 bytes) in the same buffer. */
  outerSrcOff = 0;
  encapLimit = -1;
  /** True when the inner ECN field was changed (RFC 6040) and the inner checksum rewritten. */
  ecnChanged = false;
  readonly ip6 = new Ipv6Header();
  readonly ip4 = new Ipv4Header();
}

const NOT_ECT = 0;
const ECT1 = 1;
const ECT0 = 2;
const CE = 3;

/**
 * RFC 6040 §4.2 decapsulation table: the ECN field to give the inner packet, or -1 to drop.
 * Outer CE on a Not-ECT inner packet is dropped; outer CE on ECT marks CE; outer ECT(1) on ECT(0) gives ECT(1);
 * in every other case the inner field is kept.
 */
export function ecnDecap(innerEcn: number, outerEcn: number): number {
  if (outerEcn === CE) return innerEcn === NOT_ECT ? -1 : CE;
  if (outerEcn === ECT1 && innerEcn === ECT0) return ECT1;
  return innerEcn;
}

/**
 * Decapsulates the IPv6 packet at buf[off..off+len): validates the IPv6 header and its extension headers
 * (accepting a Tunnel Encapsulation Limit option), requires next header 4 and a valid IPv4 packet that fits the
 * IPv6 payload, applies RFC 6040 to the inner ECN field, and refuses packets from our own tunnel address
 * (`self.src`, RFC 2473 §4.1.2) when `self` is given. Result in `r`; returns OK or a Drop code.
 */
export function decapsulate(buf: Uint8Array, off: number, len: number, r: DecapResult, self?: EncapConfig): DropCode {
  const h6 = r.ip6;
  let code = parseIpv6(buf, off, len, h6);
  if (code !== OK) return code;
  if (h6.upperProto !== PROTO_IPIP) return Drop.not_ipip;
  if (self !== undefined && isOwnAddress(buf, off + 8, self)) return Drop.tunnel_loop;
  const ip = h6.upperOff;
  code = parseIpv4(buf, ip, h6.upperLen, r.ip4);
  if (code !== OK) return code;
  const inner = buf[ip + 1] & 3;
  const ecn = ecnDecap(inner, h6.tclass & 3);
  if (ecn < 0) return Drop.ecn_drop;
  r.ecnChanged = ecn !== inner;
  if (r.ecnChanged) {
    buf[ip + 1] = (buf[ip + 1] & 0xfc) | ecn;
    r.ip4.tos = buf[ip + 1];
    setIpv4Checksum(buf, ip);
  }
  r.innerOff = ip;
  r.innerLen = r.ip4.totalLen;
  r.outerSrcOff = off + 8;
  r.encapLimit = h6.encapLimit;
  return OK;
}

// ---------------------------------------------------------------------------------------------------------------
// Fragmentation of the outer packet (RFC 2473 §7.2, RFC 8200 §4.5)

/**
 * Splits the IPv6 packet at buf[off..off+len) (40-byte header, everything after it fragmentable) into fragments
 * of at most `mtu` bytes, written to out[outOff + i*slotSize] with lengths in lens[lensIdx + i]. Returns the
 * number of fragments or a negative Drop code (-Drop.buffer_too_small if more than maxFrags or slots too small).
 */
export function fragmentIpv6(
  buf: Uint8Array,
  off: number,
  len: number,
  mtu: number,
  id: number,
  out: Uint8Array,
  outOff: number,
  slotSize: number,
  maxFrags: number,
  lens: Uint32Array,
  lensIdx: number,
): number {
  const chunk = (Math.min(mtu, slotSize) - IPV6_HDR - FRAG_HDR) & ~7;
  const payload = len - IPV6_HDR;
  if (chunk <= 0 || payload <= 0) return -Drop.buffer_too_small;
  const n = Math.ceil(payload / chunk);
  if (n > maxFrags || outOff + (n - 1) * slotSize + Math.min(slotSize, IPV6_HDR + FRAG_HDR + chunk) > out.length) {
    return -Drop.buffer_too_small;
  }
  const nh = buf[off + 6];
  for (let i = 0; i < n; i++) {
    const o = outOff + i * slotSize;
    const fo = i * chunk;
    const size = Math.min(chunk, payload - fo);
    copyBytes(buf, off, out, o, IPV6_HDR);
    out[o + 6] = NH_FRAGMENT;
    writeU16(out, o + 4, FRAG_HDR + size);
    const f = o + IPV6_HDR;
    out[f] = nh;
    out[f + 1] = 0;
    writeU16(out, f + 2, fo | (i < n - 1 ? 1 : 0));
    writeU32(out, f + 4, id);
    copyBytes(buf, off + IPV6_HDR + fo, out, f + FRAG_HDR, size);
    lens[lensIdx + i] = IPV6_HDR + FRAG_HDR + size;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// ICMPv4 errors we generate (RFC 792, RFC 1191, RFC 1812 §4.3.2)

export const ICMP4_DEST_UNREACH = 3;
export const ICMP4_CODE_HOST_UNREACH = 1;
export const ICMP4_CODE_FRAG_NEEDED = 4;
/** RFC 1812 §4.3.2.3: quote as much of the original as fits a 576-byte datagram. */
const ICMP4_MAX = 576;

/**
 * Whether an ICMPv4 error may be sent about this packet (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7): not about an ICMP
 * error, a non-first fragment, a packet whose source is not a unicast host address, or one sent to a multicast or
 * the limited broadcast address (224.0.0.0/4 and up: class E ends with 255.255.255.255).
 */
export function icmpv4ErrorAllowed(buf: Uint8Array, off: number, h: Ipv4Header, len: number): boolean {
  if (h.fragOffset !== 0) return false;
  const s = h.src >>> 24;
  if (h.src === 0 || s === 127 || s >= 224 || h.dst >>> 24 >= 224) return false;
  if (h.protocol === PROTO_ICMP) {
    if (h.hlen + 1 > len) return false;
    const t = buf[off + h.hlen];
    // Only queries (echo, timestamp, …) may trigger errors; errors and redirects never do.
    if (t === 3 || t === 4 || t === 5 || t === 11 || t === 12) return false;
  }
  return true;
}

/**
 * Writes an ICMPv4 error (type/code, with `mtu` in the next-hop MTU field for frag-needed) about the IPv4
 * packet at orig[origOff..+origLen) into out[outOff..]: from `src` to the original source, quoting the original
 * header and as much data as fits 576 bytes and `outRoom`. Returns the length written or -Drop.buffer_too_small.
 * The caller checks icmpv4ErrorAllowed first.
 */
export function buildIcmpv4Error(
  type: number,
  code: number,
  mtu: number,
  src: number,
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  out: Uint8Array,
  outOff: number,
  outRoom: number,
): number {
  const quote = Math.min(origLen, ICMP4_MAX - IPV4_HDR - 8, outRoom - IPV4_HDR - 8);
  if (quote < IPV4_HDR || outOff + outRoom > out.length) return -Drop.buffer_too_small;
  const total = IPV4_HDR + 8 + quote;
  const o = outOff;
  out[o] = 0x45;
  out[o + 1] = 0xc0; // precedence "internetwork control", as routers send ICMP errors
  writeU16(out, o + 2, total);
  writeU16(out, o + 4, 0);
  writeU16(out, o + 6, 0);
  out[o + 8] = 64;
  out[o + 9] = PROTO_ICMP;
  writeU32(out, o + 12, src);
  for (let i = 0; i < 4; i++) out[o + 16 + i] = orig[origOff + 12 + i];
  setIpv4Checksum(out, o);
  const c = o + IPV4_HDR;
  out[c] = type;
  out[c + 1] = code;
  writeU32(out, c + 2, 0); // checksum 0 and first half of "unused"
  writeU16(out, c + 6, type === ICMP4_DEST_UNREACH && code === ICMP4_CODE_FRAG_NEEDED ? mtu : 0);
  copyBytes(orig, origOff, out, c + 8, quote);
  writeU16(out, c + 2, internetChecksum(out, c, 8 + quote));
  return total;
}

// ---------------------------------------------------------------------------------------------------------------
// ICMPv6 errors about our tunnel packets → ICMPv4 to the original source (RFC 2473 §8.2)

export const ICMP6_DEST_UNREACH = 1;
export const ICMP6_PACKET_TOO_BIG = 2;
export const ICMP6_PARAM_PROBLEM = 4;

/** What an ICMPv6 error told us (filled by parseIcmpv6Error). */
export class Icmp6Relay {
  type = 0;
  code = 0;
  /** For packet-too-big: the reported path MTU (clamped to ≥ 1280), else 0. */
  pathMtu = 0;
  /** The quoted inner IPv4 packet (header + whatever data the ICMPv6 message carried). */
  innerOff = 0;
  innerLen = 0;
  /** Whether the ICMPv4 relay is warranted (false e.g. for PTB about a DF=0 packet: we fragment instead). */
  relay = false;
  icmpType = 0;
  icmpCode = 0;
  readonly outer = new Ipv6Header();
  readonly quoted = new Ipv6Header();
  readonly ip4 = new Ipv4Header();
}

/**
 * Parses the IPv6 packet at buf[off..off+len) as an ICMPv6 error about a tunnel packet we sent from `self`
 * (the quoted packet's source must be `self` and its payload IPv4). Fills `r` with the ICMPv4 message to send
 * (RFC 2473 §8.2: packet too big → frag-needed with the new tunnel MTU if DF was set; unreachable, hop limit
 * exceeded, or a parameter problem at our encap-limit option → host unreachable). Returns OK or a Drop code
 * (icmp_unrelated for anything else).
 */
export function parseIcmpv6Error(buf: Uint8Array, off: number, len: number, self: Uint8Array, r: Icmp6Relay): DropCode {
  let code = parseIpv6(buf, off, len, r.outer);
  if (code !== OK) return code;
  if (r.outer.upperProto !== NH_ICMPV6) return Drop.icmp_unrelated;
  const c = r.outer.upperOff;
  const clen = r.outer.upperLen;
  if (clen < 8 + IPV6_HDR) return Drop.icmp_unrelated;
  if (onesSum(buf, c, clen, pseudoSum6(buf, off, clen, NH_ICMPV6)) !== 0xffff) return Drop.ipv6_malformed;
  const type = buf[c];
  if (type < ICMP6_DEST_UNREACH || type > ICMP6_PARAM_PROBLEM) return Drop.icmp_unrelated;
  const q = c + 8;
  code = parseIpv6(buf, q, clen - 8, r.quoted, true);
  if (code !== OK || r.quoted.upperProto !== PROTO_IPIP || !bytesEqual(buf, q + 8, self, 0, 16)) {
    return Drop.icmp_unrelated;
  }
  const ip = r.quoted.upperOff;
  const ilen = r.quoted.upperLen;
  // The quote may be truncated: only the IPv4 header must be complete and well formed (an IHL below 5 is no
  // packet we sent, and would put the quoted ICMP type inside the header).
  const hlen = (buf[ip] & 0x0f) << 2;
  if (ilen < IPV4_HDR || buf[ip] >>> 4 !== 4 || hlen < IPV4_HDR || hlen > ilen) return Drop.icmp_unrelated;
  const h4 = r.ip4;
  h4.hlen = hlen;
  h4.totalLen = (buf[ip + 2] << 8) | buf[ip + 3];
  h4.df = (buf[ip + 6] & 0x40) !== 0;
  h4.fragOffset = (((buf[ip + 6] << 8) | buf[ip + 7]) & 0x1fff) << 3;
  h4.protocol = buf[ip + 9];
  h4.src = readU32(buf, ip + 12);
  h4.dst = readU32(buf, ip + 16);
  r.type = type;
  r.code = buf[c + 1];
  r.innerOff = ip;
  r.innerLen = ilen;
  r.pathMtu = 0;
  r.relay = true;
  r.icmpType = ICMP4_DEST_UNREACH;
  r.icmpCode = ICMP4_CODE_HOST_UNREACH;
  if (type === ICMP6_PACKET_TOO_BIG) {
    r.pathMtu = Math.max(readU32(buf, c + 4), IPV6_MIN_MTU);
    r.icmpCode = ICMP4_CODE_FRAG_NEEDED;
    r.relay = h4.df;
  } else if (type === ICMP6_PARAM_PROBLEM) {
    // Only a problem with our own encapsulation-limit option concerns the IPv4 sender.
    const ptr = readU32(buf, c + 4);
    r.relay = r.quoted.encapLimitOff >= 0 && ptr === r.quoted.encapLimitOff - q;
  }
  return OK;
}

/** One's complement sum of the IPv6 pseudo-header (RFC 8200 §8.1) of the packet at off. */
export function pseudoSum6(buf: Uint8Array, off: number, upperLen: number, nh: number): number {
  let sum = onesSum(buf, off + 8, 32);
  sum += (upperLen >>> 16) + (upperLen & 0xffff) + nh;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

// ---------------------------------------------------------------------------------------------------------------
// Rate limiting of the ICMP errors we generate (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f))

/**
 * Token buckets, one per key (the host an error goes to, or the node it is about), as Linux limits ICMP per peer:
 * a flood towards or about one key empties its own bucket, not the others'. The keys are hashed (keyed: no one can
 * choose keys that share a bucket) into a fixed table of `size` buckets, 16 bytes each, so memory is bounded
 * whatever the keys; keys that do share a bucket share its tokens, never getting more than one bucket allows.
 */
export class RateTable {
  private readonly tokens: Float64Array;
  private readonly last: Float64Array;
  private readonly mask: number;

  /** `rate` tokens per second in each bucket, at most `burst` saved up; `size` a power of two. */
  constructor(
    readonly rate: number,
    readonly burst: number,
    readonly size = 1,
    private readonly hash = new HashKey(),
  ) {
    if (size < 1 || (size & (size - 1)) !== 0) throw new RangeError(`rate table size ${size} is not a power of two`);
    this.mask = size - 1;
    this.tokens = new Float64Array(size).fill(burst);
    this.last = new Float64Array(size).fill(-Infinity);
  }

  /** Takes a token from the bucket of the 32-bit `key` at `nowMs` (monotonic milliseconds); false when empty. */
  take(key: number, nowMs: number): boolean {
    const i = this.hash.h32(key) & this.mask;
    let t = this.tokens[i];
    if (this.last[i] !== -Infinity) t = Math.min(this.burst, t + ((nowMs - this.last[i]) * this.rate) / 1000);
    this.last[i] = nowMs;
    if (t < 1) {
      this.tokens[i] = t;
      return false;
    }
    this.tokens[i] = t - 1;
    return true;
  }
}
