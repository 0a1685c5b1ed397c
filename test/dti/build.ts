// Packet builders for the DTI tests, written independently of src/dti/packet.ts (plain arrays, their own
// checksum), so the tests check the module against a second implementation rather than against itself.

export function sum16(bytes: ArrayLike<number>, start = 0, end = bytes.length, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (bytes[i] << 8) + (i + 1 < end ? bytes[i + 1] : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >> 16);
  return s;
}

export const cksum = (bytes: ArrayLike<number>, start = 0, end = bytes.length, initial = 0): number =>
  ~sum16(bytes, start, end, initial) & 0xffff;

export function v4(text: string): number[] {
  return text.split('.').map(Number);
}

export function v6(text: string): number[] {
  const [head, tail = ''] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = text.includes('::') && tail ? tail.split(':') : [];
  const words = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t].map((w) => parseInt(w, 16));
  return words.flatMap((w) => [w >> 8, w & 0xff]);
}

export interface V4Opts {
  src?: string;
  dst?: string;
  proto?: number;
  tos?: number;
  df?: boolean;
  ttl?: number;
  id?: number;
  payload?: number[];
}

/** An IPv4 packet with a valid header checksum. Default: ICMP echo request 10.0.0.1 → 10.0.0.2. */
export function ipv4(o: V4Opts = {}): number[] {
  const payload = o.payload ?? icmpEcho(0x1234, 1, 8);
  const total = 20 + payload.length;
  const h = [
    0x45,
    o.tos ?? 0,
    total >> 8,
    total & 0xff,
    (o.id ?? 0x1c46) >> 8,
    (o.id ?? 0x1c46) & 0xff,
    o.df ? 0x40 : 0,
    0,
    o.ttl ?? 64,
    o.proto ?? 1,
    0,
    0,
    ...v4(o.src ?? '10.0.0.1'),
    ...v4(o.dst ?? '10.0.0.2'),
  ];
  const c = cksum(h);
  h[10] = c >> 8;
  h[11] = c & 0xff;
  return [...h, ...payload];
}

export function icmpEcho(id: number, seq: number, dataLen: number): number[] {
  const m = [
    8,
    0,
    0,
    0,
    id >> 8,
    id & 0xff,
    seq >> 8,
    seq & 0xff,
    ...Array.from({ length: dataLen }, (_, i) => i & 0xff),
  ];
  const c = cksum(m);
  m[2] = c >> 8;
  m[3] = c & 0xff;
  return m;
}

/** An IPv6 header + `ext` + payload with the given next header (of the first header after the fixed one). */
export function ipv6(src: string, dst: string, nh: number, body: number[], tclass = 0, hops = 64): number[] {
  const len = body.length;
  return [
    0x60 | (tclass >> 4),
    (tclass & 0x0f) << 4,
    0,
    0,
    len >> 8,
    len & 0xff,
    nh,
    hops,
    ...v6(src),
    ...v6(dst),
    ...body,
  ];
}

/** ICMPv6 message with a correct checksum over the pseudo-header. */
export function icmpv6(src: string, dst: string, type: number, code: number, word: number, quote: number[]): number[] {
  const m = [type, code, 0, 0, word >>> 24, (word >> 16) & 0xff, (word >> 8) & 0xff, word & 0xff, ...quote];
  const pseudo = [...v6(src), ...v6(dst), 0, 0, m.length >> 8, m.length & 0xff, 0, 0, 0, 58];
  const c = cksum(m, 0, m.length, sum16(pseudo));
  m[2] = c >> 8;
  m[3] = c & 0xff;
  return ipv6(src, dst, 58, m);
}

/** Places `pkt` in a fresh buffer at `off` (with headroom for in-place encapsulation). */
export function place(pkt: number[], off = 48, size = 4096): Uint8Array {
  const b = new Uint8Array(size);
  b.set(pkt, off);
  return b;
}

/** A receive batch like a device's, holding the given packets at `headroom` in 2048-byte slots. */
export function batchOf(pkts: number[][], headroom = 48, slot = 2048) {
  const buf = new Uint8Array(Math.max(1, pkts.length) * slot);
  const offsets = new Uint32Array(pkts.length);
  const lengths = new Uint32Array(pkts.length);
  pkts.forEach((p, i) => {
    offsets[i] = i * slot + headroom;
    lengths[i] = p.length;
    buf.set(p, offsets[i]);
  });
  return { buf, offsets, lengths };
}
