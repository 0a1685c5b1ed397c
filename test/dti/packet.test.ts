import { expect } from 'chai';
import { Counters, Drop } from '../../src/dti/counters';
import {
  DecapResult,
  EncapConfig,
  HEADROOM,
  Icmp6Relay,
  Ipv4Header,
  OK,
  RateTable,
  buildIcmpv4Error,
  decapsulate,
  ecnDecap,
  encapsulate,
  fragmentIpv6,
  internetChecksum,
  parseIcmpv6Error,
  parseIpv4,
  tunnelMtu,
} from '../../src/dti/packet';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../../src/lib/addr';
import { HASH_KEY_BYTES, HashKey } from '../../src/lib/keyed-hash';
import { cksum, icmpv6, ipv4, ipv6, place, sum16, v6 } from './build';

const SELF = '2001:db8:1::10';
const TEP = '2001:db8:1::1';
const self6 = Uint8Array.from(v6(SELF));
const tep6 = Uint8Array.from(v6(TEP));

function encap(pkt: number[], cfg = new EncapConfig(self6)): { buf: Uint8Array; off: number; len: number } {
  const buf = place(pkt, HEADROOM);
  const off = encapsulate(buf, HEADROOM, pkt.length, tep6, 0, cfg);
  expect(off).to.be.at.least(0);
  return { buf, off, len: pkt.length + cfg.overhead };
}

describe('dti/packet: IPv4 validation', () => {
  // The classic example header (Wikipedia "IPv4 header checksum"): checksum 0xb861.
  const known = [0x45, 0, 0x00, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xb8, 0x61, 192, 168, 0, 1, 192, 168, 0, 199];

  it('accepts a known-good header and computes its checksum', () => {
    const pkt = [...known, ...Array<number>(0x73 - 20).fill(0)];
    const h = new Ipv4Header();
    expect(parseIpv4(Uint8Array.from(pkt), 0, pkt.length, h)).to.equal(OK);
    expect(h).to.include({ hlen: 20, totalLen: 0x73, protocol: 17, ttl: 64, df: true, mf: false, fragOffset: 0 });
    expect(formatIPv4(h.src)).to.equal('192.168.0.1');
    expect(formatIPv4(h.dst)).to.equal('192.168.0.199');
    const zeroed = Uint8Array.from(known);
    zeroed[10] = zeroed[11] = 0;
    expect(internetChecksum(zeroed, 0, 20)).to.equal(0xb861);
  });

  it('refuses malformed headers by reason, checking lengths before reading', () => {
    const good = ipv4();
    const h = new Ipv4Header();
    const check = (bytes: number[], len = bytes.length) => parseIpv4(Uint8Array.from(bytes), 0, len, h);
    expect(check(good)).to.equal(OK);
    expect(check(good.slice(0, 19))).to.equal(Drop.ipv4_malformed); // shorter than a header
    expect(check([0x65, ...good.slice(1)])).to.equal(Drop.not_ipv4); // version 6 (e.g. ND on the DTI)
    expect(check([0x44, ...good.slice(1)])).to.equal(Drop.ipv4_malformed); // IHL 4
    expect(check([0x4f, ...good.slice(1)])).to.equal(Drop.ipv4_malformed); // IHL 60 > bytes present
    expect(check(good, good.length - 1)).to.equal(Drop.ipv4_malformed); // total length > bytes
    const short = [...good];
    short[2] = 0;
    short[3] = 10; // total length < header length
    expect(check(short)).to.equal(Drop.ipv4_malformed);
    const bad = [...good];
    bad[8] ^= 1; // TTL changed, checksum not
    expect(check(bad)).to.equal(Drop.ipv4_bad_checksum);
    expect(parseIpv4(new Uint8Array(10), 0, 20, h)).to.equal(Drop.ipv4_malformed); // range beyond the buffer
  });
});

describe('dti/packet: encapsulation', () => {
  it('writes the outer IPv6 header in place, byte for byte', () => {
    const pkt = ipv4({ tos: 0xb9 }); // DSCP 46, ECN ECT(1)
    const cfg = new EncapConfig(self6, { hopLimit: 17, flowLabel: 0xabcde });
    const { buf, off, len } = encap(pkt, cfg);
    expect(off).to.equal(HEADROOM - 40);
    const plen = pkt.length;
    expect(Array.from(buf.subarray(off, off + 40))).to.deep.equal([
      0x6b,
      0x9a,
      0xbc,
      0xde,
      plen >> 8,
      plen & 0xff,
      4,
      17,
      ...v6(SELF),
      ...v6(TEP),
    ]);
    expect(Array.from(buf.subarray(off + 40, off + len))).to.deep.equal(pkt); // inner untouched
  });

  it('writes the same header at unaligned offsets (byte path) and refuses the loop there too', () => {
    const pkt = ipv4();
    const cfg = new EncapConfig(self6);
    const aligned = encap(pkt, cfg);
    const buf = place(pkt, HEADROOM + 1);
    const off = encapsulate(buf, HEADROOM + 1, pkt.length, tep6, 0, cfg);
    expect(off).to.equal(HEADROOM - 39);
    expect(Array.from(buf.subarray(off, off + 40 + pkt.length))).to.deep.equal(
      Array.from(aligned.buf.subarray(aligned.off, aligned.off + aligned.len)),
    );
    expect(encapsulate(buf, HEADROOM + 1, pkt.length, self6, 0, cfg)).to.equal(-Drop.tunnel_loop);
    const looped = place(ipv6(SELF, TEP, 4, pkt), 1);
    expect(decapsulate(looped, 1, 40 + pkt.length, new DecapResult(), cfg)).to.equal(Drop.tunnel_loop);
    expect(decapsulate(looped, 1, 40 + pkt.length, new DecapResult(), new EncapConfig(tep6))).to.equal(OK);
  });

  it('follows a source address changed after construction (a node learns it with the lease)', () => {
    const cfg = new EncapConfig(new Uint8Array(16));
    cfg.src = self6;
    const { buf, off } = encap(ipv4(), cfg);
    expect(Array.from(buf.subarray(off + 8, off + 24))).to.deep.equal(v6(SELF));
    expect(() => (cfg.src = new Uint8Array(4))).to.throw(/16 bytes/);
  });

  it('uses a fixed DSCP but still copies ECN (RFC 6040 normal mode), and derives a stable flow label', () => {
    const pkt = ipv4({ tos: 0x03 });
    const cfg = new EncapConfig(self6, { tclass: 0x20, flowLabel: -1 });
    const a = encap(pkt, cfg);
    const tc = ((a.buf[a.off] & 0x0f) << 4) | (a.buf[a.off + 1] >> 4);
    expect(tc).to.equal(0x23);
    const fl = ((a.buf[a.off + 1] & 0x0f) << 16) | (a.buf[a.off + 2] << 8) | a.buf[a.off + 3];
    expect(fl).to.be.above(0);
    const b = encap(pkt, cfg);
    expect(Array.from(b.buf.subarray(b.off, b.off + 4))).to.deep.equal(Array.from(a.buf.subarray(a.off, a.off + 4)));
  });

  it('adds a Tunnel Encapsulation Limit destination option when configured (RFC 2473 §4.1.1)', () => {
    const pkt = ipv4();
    const cfg = new EncapConfig(self6, { encapLimit: 4 });
    expect(cfg.overhead).to.equal(48);
    expect(tunnelMtu(1500, cfg)).to.equal(1452);
    expect(tunnelMtu(1500, new EncapConfig(self6))).to.equal(1460);
    const { buf, off, len } = encap(pkt, cfg);
    expect(off).to.equal(0);
    expect(buf[off + 6]).to.equal(60);
    expect(Array.from(buf.subarray(40, 48))).to.deep.equal([4, 0, 4, 1, 4, 1, 1, 0]);
    const r = new DecapResult();
    expect(decapsulate(buf, off, len, r)).to.equal(OK);
    expect(r.encapLimit).to.equal(4);
    expect(r.innerOff).to.equal(48);
  });

  it('refuses to tunnel to itself and needs headroom (RFC 2473 §4.1.2)', () => {
    const buf = place(ipv4(), HEADROOM);
    expect(encapsulate(buf, HEADROOM, 36, self6, 0, new EncapConfig(self6))).to.equal(-Drop.tunnel_loop);
    expect(encapsulate(buf, 10, 36, tep6, 0, new EncapConfig(self6))).to.equal(-Drop.buffer_too_small);
  });
});

describe('dti/packet: decapsulation', () => {
  it('round-trips: returns the inner packet and the outer source', () => {
    const pkt = ipv4({ payload: Array.from({ length: 100 }, (_, i) => i), proto: 17 });
    const { buf, off, len } = encap(pkt);
    const r = new DecapResult();
    expect(decapsulate(buf, off, len, r)).to.equal(OK);
    expect(r.innerOff).to.equal(HEADROOM);
    expect(r.innerLen).to.equal(pkt.length);
    expect(formatIPv6(buf, r.outerSrcOff)).to.equal(SELF);
    expect(r.encapLimit).to.equal(-1);
    expect(r.ecnChanged).to.equal(false);
  });

  it('skips other destination options safely, refuses options that must not be skipped', () => {
    const inner = ipv4();
    // Dest opts: PadN(2), unknown type 0x1e (action 00: skip) len 0, Pad1, Pad1 → 8 bytes.
    const skippable = [4, 0, 1, 0, 0x1e, 0, 0, 0];
    const r = new DecapResult();
    let b = Uint8Array.from(ipv6(TEP, SELF, 60, [...skippable, ...inner]));
    expect(decapsulate(b, 0, b.length, r)).to.equal(OK);
    expect(r.innerOff).to.equal(48);
    const mustDiscard = [4, 0, 0x5e, 0, 1, 0, 0, 0]; // action bits 01
    b = Uint8Array.from(ipv6(TEP, SELF, 60, [...mustDiscard, ...inner]));
    expect(decapsulate(b, 0, b.length, r)).to.equal(Drop.ipv6_bad_option);
    const overrun = [4, 0, 1, 9, 0, 0, 0, 0]; // PadN longer than the header
    b = Uint8Array.from(ipv6(TEP, SELF, 60, [...overrun, ...inner]));
    expect(decapsulate(b, 0, b.length, r)).to.equal(Drop.ipv6_malformed);
    const truncatedExt = Uint8Array.from(ipv6(TEP, SELF, 60, [4, 3, 0, 0])); // claims 32 bytes
    expect(decapsulate(truncatedExt, 0, truncatedExt.length, r)).to.equal(Drop.ipv6_malformed);
  });

  it('counts malformed and foreign packets by reason', () => {
    const r = new DecapResult();
    const c = new Counters();
    const inner = ipv4();
    const cases: [number[], number][] = [
      [ipv6(TEP, SELF, 6, inner), Drop.not_ipip],
      [ipv6(TEP, SELF, 4, inner).slice(0, 39), Drop.ipv6_malformed],
      [[0x40, ...ipv6(TEP, SELF, 4, inner).slice(1)], Drop.ipv6_malformed],
      [ipv6(TEP, SELF, 4, inner).slice(0, 50), Drop.ipv6_malformed], // payload length > bytes
      [ipv6(TEP, SELF, 4, inner.slice(0, 30)), Drop.ipv4_malformed], // inner longer than the IPv6 payload
      [ipv6(TEP, SELF, 44, [4, 0, 0, 1, 0, 0, 0, 1, ...inner]), Drop.ipv6_fragment],
      [ipv6(SELF, SELF, 4, inner), Drop.tunnel_loop], // from ourselves
    ];
    for (const [bytes, want] of cases) {
      const b = Uint8Array.from(bytes);
      const code = decapsulate(b, 0, b.length, r, new EncapConfig(self6));
      expect(code, JSON.stringify(bytes.slice(0, 8))).to.equal(want);
      c.drop(code);
    }
    const snap = c.snapshot();
    expect(snap.drops.ipv6_malformed).to.equal(3);
    expect(snap.drops.not_ipip).to.equal(1);
    expect(snap.dropped).to.equal(cases.length);
  });

  it('applies the RFC 6040 §4.2 ECN table', () => {
    // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer Not-ECT, ECT(0), ECT(1), CE. -1 = drop.
    const NOT = 0,
      E1 = 1,
      E0 = 2,
      CE = 3;
    const table: [number, number[]][] = [
      [NOT, [NOT, NOT, NOT, -1]],
      [E0, [E0, E0, E1, CE]],
      [E1, [E1, E1, E1, CE]],
      [CE, [CE, CE, CE, CE]],
    ];
    const outers = [NOT, E0, E1, CE];
    for (const [inner, row] of table) {
      outers.forEach((outer, k) => expect(ecnDecap(inner, outer), `inner ${inner} outer ${outer}`).to.equal(row[k]));
    }
    // Through decapsulate: outer CE over ECT(0) marks CE and keeps the inner checksum valid; over Not-ECT drops.
    const r = new DecapResult();
    let b = Uint8Array.from(ipv6(TEP, SELF, 4, ipv4({ tos: 0x02 }), 0x03));
    expect(decapsulate(b, 0, b.length, r)).to.equal(OK);
    expect(r.ecnChanged).to.equal(true);
    expect(b[41] & 3).to.equal(3);
    expect(cksum(b, 40, 60)).to.equal(0);
    b = Uint8Array.from(ipv6(TEP, SELF, 4, ipv4({ tos: 0x00 }), 0x03));
    expect(decapsulate(b, 0, b.length, r)).to.equal(Drop.ecn_drop);
  });
});

describe('dti/packet: MTU, fragmentation and ICMP', () => {
  it('fragments the outer packet (DF=0) so that it reassembles to the original', () => {
    const pkt = ipv4({ proto: 17, payload: Array.from({ length: 2980 }, (_, i) => (i * 7) & 0xff) });
    const { buf, off, len } = encap(pkt);
    const slot = 2048;
    const out = new Uint8Array(4 * slot);
    const lens = new Uint32Array(4);
    const n = fragmentIpv6(buf, off, len, 1280, 0xdeadbeef, out, 0, slot, 4, lens, 0);
    expect(n).to.equal(3);
    const payload: number[] = [];
    for (let i = 0; i < n; i++) {
      const f = out.subarray(i * slot, i * slot + lens[i]);
      expect(f.length).to.be.at.most(1280);
      expect(f[6]).to.equal(44);
      expect((f[4] << 8) | f[5]).to.equal(f.length - 40);
      expect(f[40]).to.equal(4); // next header of the fragmentable part
      const fo = ((f[42] << 8) | f[43]) & 0xfff8;
      expect(fo).to.equal(payload.length);
      expect(f[43] & 1).to.equal(i < n - 1 ? 1 : 0);
      expect(Array.from(f.subarray(44, 48))).to.deep.equal([0xde, 0xad, 0xbe, 0xef]);
      if (i < n - 1) expect((f.length - 48) % 8).to.equal(0);
      payload.push(...f.subarray(48));
    }
    expect(payload).to.deep.equal(pkt);
    // Reassembled packet decapsulates to the original IPv4 packet.
    const whole = Uint8Array.from(ipv6(SELF, TEP, 4, payload));
    const r = new DecapResult();
    expect(decapsulate(whole, 0, whole.length, r)).to.equal(OK);
    expect(Array.from(whole.subarray(r.innerOff, r.innerOff + r.innerLen))).to.deep.equal(pkt);
    expect(fragmentIpv6(buf, off, len, 1280, 1, out, 0, slot, 2, lens, 0)).to.equal(-Drop.buffer_too_small);
  });

  it('builds ICMPv4 fragmentation-needed with the next-hop MTU, quoting the original', () => {
    const pkt = ipv4({ df: true, src: '198.51.100.7', dst: '192.0.2.2', proto: 6, payload: Array(1400).fill(1) });
    const out = new Uint8Array(600);
    const n = buildIcmpv4Error(3, 4, 1240, parseIPv4('192.0.2.1'), Uint8Array.from(pkt), 0, pkt.length, out, 0, 576);
    expect(n).to.equal(576);
    expect(cksum(out, 0, 20)).to.equal(0); // IPv4 header checksum
    expect(out[9]).to.equal(1);
    expect(Array.from(out.subarray(12, 20))).to.deep.equal([192, 0, 2, 1, 198, 51, 100, 7]);
    expect(Array.from(out.subarray(20, 28))).to.deep.equal([3, 4, out[22], out[23], 0, 0, 1240 >> 8, 1240 & 0xff]);
    expect(cksum(out, 20, n)).to.equal(0); // ICMP checksum
    expect(Array.from(out.subarray(28, n))).to.deep.equal(pkt.slice(0, 548));
  });

  it('turns ICMPv6 errors about our tunnel packets into ICMPv4 (RFC 2473 §8.2)', () => {
    const inner = ipv4({ df: true, src: '198.51.100.7', dst: '192.0.2.2', proto: 6, payload: Array(40).fill(0) });
    const quoted = ipv6(SELF, TEP, 4, inner);
    const router = '2001:db8:9::1';
    const r = new Icmp6Relay();
    const parse = (bytes: number[]) => parseIcmpv6Error(Uint8Array.from(bytes), 0, bytes.length, self6, r);

    expect(parse(icmpv6(router, SELF, 2, 0, 1300, quoted))).to.equal(OK);
    expect(r).to.include({ pathMtu: 1300, relay: true, icmpType: 3, icmpCode: 4, innerOff: 88 });
    expect(formatIPv4(r.ip4.src)).to.equal('198.51.100.7');

    expect(parse(icmpv6(router, SELF, 2, 0, 1000, quoted))).to.equal(OK);
    expect(r.pathMtu).to.equal(1280); // clamped to the IPv6 minimum

    const noDf = ipv6(SELF, TEP, 4, ipv4({ df: false, src: '198.51.100.7' }));
    expect(parse(icmpv6(router, SELF, 2, 0, 1300, noDf))).to.equal(OK);
    expect(r.relay).to.equal(false); // DF=0: we fragment from now on, nothing to tell the source

    for (const type of [1, 3]) {
      expect(parse(icmpv6(router, SELF, type, 0, 0, quoted))).to.equal(OK);
      expect(r).to.include({ relay: true, icmpType: 3, icmpCode: 1 }); // host unreachable
    }

    // Parameter problem pointing at our encap-limit option → host unreachable; elsewhere → not relayed.
    const withLimit = ipv6(SELF, TEP, 60, [4, 0, 4, 1, 0, 1, 1, 0, ...inner]);
    expect(parse(icmpv6(router, SELF, 4, 0, 44, withLimit))).to.equal(OK);
    expect(r.relay).to.equal(true);
    expect(parse(icmpv6(router, SELF, 4, 0, 6, withLimit))).to.equal(OK);
    expect(r.relay).to.equal(false);

    // Not about us, not about IPIP, bad checksum.
    expect(parse(icmpv6(router, SELF, 1, 0, 0, ipv6(TEP, SELF, 4, inner)))).to.equal(Drop.icmp_unrelated);
    expect(parse(icmpv6(router, SELF, 1, 0, 0, ipv6(SELF, TEP, 17, inner)))).to.equal(Drop.icmp_unrelated);
    expect(parse(icmpv6(router, SELF, 128, 0, 0, quoted))).to.equal(Drop.icmp_unrelated); // echo request
    const corrupt = icmpv6(router, SELF, 1, 0, 0, quoted);
    corrupt[60] ^= 0xff;
    expect(parse(corrupt)).to.equal(Drop.ipv6_malformed);
    // A quote truncated inside the IPv4 header is unrelated, never read past.
    expect(parse(icmpv6(router, SELF, 1, 0, 0, quoted.slice(0, 50)))).to.equal(Drop.icmp_unrelated);
  });

  it('rate-limits with a token bucket per key', () => {
    const b = new RateTable(10, 2); // 10/s, burst 2, one bucket for every key
    expect([b.take(1, 0), b.take(2, 0), b.take(3, 0)]).to.deep.equal([true, true, false]);
    expect(b.take(1, 50)).to.equal(false); // half a token
    expect(b.take(1, 100)).to.equal(true);
    expect(b.take(1, 100)).to.equal(false);
    expect([b.take(1, 10_000), b.take(1, 10_000), b.take(1, 10_000)]).to.deep.equal([true, true, false]); // burst cap

    // 1024 buckets: draining one key's leaves the others theirs (a fixed hash key, under which these do not share)
    const t = new RateTable(10, 2, 1024, new HashKey(new Uint8Array(HASH_KEY_BYTES).fill(7)));
    const flooder = 0xc6336405;
    for (let i = 0; i < 100; i++) t.take(flooder, 0);
    expect(t.take(flooder, 0)).to.equal(false);
    const others = Array.from({ length: 20 }, (_, i) => 0xc6336406 + i);
    expect(others.map((k) => t.take(k, 0))).to.deep.equal(others.map(() => true));
    expect(() => new RateTable(10, 2, 1000)).to.throw(/power of two/);
  });
});

describe('dti/packet: addresses and checksums', () => {
  it('converts IPv4 and IPv6 text', () => {
    expect(formatIPv4(parseIPv4('198.51.100.255'))).to.equal('198.51.100.255');
    expect(() => parseIPv4('1.2.3.256')).to.throw(/not an IPv4/);
    for (const t of ['2001:db8::1', '::', '::1', 'fe80::1:2:3:4', '2001:db8:1:2:3:4:5:6', '::ffff:192.0.2.1']) {
      const want = t === '::ffff:192.0.2.1' ? '::ffff:c000:201' : t;
      expect(formatIPv6(parseIPv6(t))).to.equal(want);
    }
    expect(Array.from(parseIPv6('2001:db8:1::10'))).to.deep.equal(v6('2001:db8:1::10'));
    for (const bad of ['1::2::3', '12345::', '1:2:3:4:5:6:7:8:9', 'x::']) expect(() => parseIPv6(bad)).to.throw();
  });

  it('matches an independent checksum on odd lengths', () => {
    const bytes = Uint8Array.from({ length: 33 }, (_, i) => (i * 37) & 0xff);
    expect(internetChecksum(bytes, 0, 33)).to.equal(cksum(bytes));
    expect(sum16(bytes)).to.be.a('number');
  });
});
