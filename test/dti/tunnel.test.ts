import { expect } from 'chai';
import { Counters, Drop, dropLoggerTo } from '../../src/dti/counters';
import { EncapConfig, OK, readU32 } from '../../src/dti/packet';
import { formatIPv4, parseIPv4 } from '../../src/lib/addr';
import { Tunnel } from '../../src/dti/tunnel';
import { batchOf, cksum, icmpv6, ipv4, ipv6, v6 } from './build';

const SELF = '2001:db8:1::10';
const TEP = '2001:db8:1::1';
const self6 = Uint8Array.from(v6(SELF));
const tep6 = Uint8Array.from(v6(TEP));
const LEASE = parseIPv4('198.51.100.7');

function nodeTunnel(extra: Partial<ConstructorParameters<typeof Tunnel>[0]> = {}) {
  const logged: string[] = [];
  const counters = new Counters((reason) => logged.push(reason));
  const t = new Tunnel({
    encap: new EncapConfig(self6),
    // A node: everything goes to its TEP, except a destination we pretend has no route.
    route: (_src, dst) => (dst === parseIPv4('10.9.9.9') ? Drop.no_binding : tep6),
    icmpSource: parseIPv4('192.0.2.1'),
    pathMtu: 1280,
    counters,
    ...extra,
  });
  return { t, counters, logged };
}

describe('dti/tunnel: TUN → raw (encapBatch)', () => {
  it('encapsulates good packets in place and counts every discard by reason', () => {
    const { t, counters, logged } = nodeTunnel();
    const good = ipv4({ src: '198.51.100.7', dst: '192.0.2.2' });
    const badSum = [...good];
    badSum[8] ^= 1;
    const pkts = [
      good,
      badSum,
      good.slice(0, 12),
      ipv4({ src: '198.51.100.7', dst: '10.9.9.9' }),
      ipv4({ src: '198.51.100.7', df: true, proto: 17, payload: Array(1300).fill(0) }), // 1320 > 1240, DF
      ipv4({ src: '198.51.100.7', df: false, proto: 17, payload: Array(1300).fill(0) }), // DF=0: fragments
    ];
    const rx = batchOf(pkts);
    t.encapBatch(pkts.length, rx);

    expect(t.tunnelMtu).to.equal(1240);
    expect(t.toRaw.count).to.equal(1);
    expect(t.toRaw.buf).to.equal(rx.buf); // zero copy: sent from the receive buffer
    const o = t.toRaw.offsets[0];
    expect(o).to.equal(rx.offsets[0] - 40);
    expect(Array.from(rx.buf.subarray(o, o + t.toRaw.lengths[0]))).to.deep.equal(ipv6(SELF, TEP, 4, good));

    expect(t.toRawFragments.count).to.equal(2);
    for (let i = 0; i < 2; i++) expect(t.toRawFragments.lengths[i]).to.be.at.most(1280);

    expect(t.toTunIcmp.count).to.equal(1);
    const icmp = t.toTunIcmp.buf.subarray(t.toTunIcmp.offsets[0], t.toTunIcmp.offsets[0] + t.toTunIcmp.lengths[0]);
    expect([icmp[20], icmp[21], (icmp[26] << 8) | icmp[27]]).to.deep.equal([3, 4, 1240]);
    expect(cksum(icmp, 20, icmp.length)).to.equal(0);

    const s = counters.snapshot();
    expect(s.drops).to.include({ ipv4_bad_checksum: 1, ipv4_malformed: 1, no_binding: 1, too_big_df: 1 });
    expect(s.dropped).to.equal(4);
    expect(s.events).to.include({ encapsulated: 2, fragmented: 1, icmp4_sent: 1 });
    expect(logged).to.deep.equal(['ipv4_bad_checksum', 'ipv4_malformed', 'no_binding', 'too_big_df']);
  });

  it('answers refused destinations with ICMPv4 host unreachable when asked to', () => {
    const { t, counters } = nodeTunnel({ unreachable: true });
    const pkt = ipv4({ src: '198.51.100.7', dst: '10.9.9.9', proto: 17, payload: Array(12).fill(7) });
    t.encapBatch(1, batchOf([pkt]));
    expect(counters.dropped('no_binding')).to.equal(1);
    expect(t.toTunIcmp.count).to.equal(1);
    const m = t.toTunIcmp.buf.subarray(t.toTunIcmp.offsets[0], t.toTunIcmp.offsets[0] + t.toTunIcmp.lengths[0]);
    expect([m[20], m[21]]).to.deep.equal([3, 1]);
    expect(Array.from(m.subarray(16, 20))).to.deep.equal([198, 51, 100, 7]);
    expect(Array.from(m.subarray(28))).to.deep.equal(pkt); // the whole (short) original is quoted
  });

  it('sends no ICMPv4 error about a packet to a multicast or the broadcast address (RFC 1122 3.2.2)', () => {
    const { t, counters } = nodeTunnel({ unreachable: true, route: () => Drop.no_binding });
    const to = (dst: string, df = false): number[] =>
      ipv4({ src: '198.51.100.7', dst, df, proto: 17, payload: Array(df ? 1300 : 12).fill(7) });
    t.encapBatch(3, batchOf([to('224.0.0.251'), to('255.255.255.255'), to('192.0.2.2')]));
    expect(counters.dropped('no_binding')).to.equal(3);
    expect(t.toTunIcmp.count).to.equal(1); // about the unicast one only
    const m = t.toTunIcmp.buf.subarray(t.toTunIcmp.offsets[0], t.toTunIcmp.offsets[0] + t.toTunIcmp.lengths[0]);
    expect(Array.from(m.subarray(28 + 16, 28 + 20))).to.deep.equal([192, 0, 2, 2]);
    const { t: big, counters: c2 } = nodeTunnel();
    big.encapBatch(1, batchOf([to('239.1.2.3', true)]));
    expect(c2.dropped('too_big_df')).to.equal(1);
    expect(big.toTunIcmp.count).to.equal(0);
  });

  it('rate-limits the ICMPv4 errors it generates and never answers an ICMP error', () => {
    let now = 0;
    const { t, counters } = nodeTunnel({ icmpRate: 1, icmpBurst: 1, now: () => now });
    const big = ipv4({ src: '198.51.100.7', df: true, proto: 17, payload: Array(1300).fill(0) });
    const bigIcmpError = ipv4({
      src: '198.51.100.7',
      df: true,
      proto: 1,
      payload: [3, 1, 0, 0, ...Array(1296).fill(0)],
    });
    t.encapBatch(3, batchOf([big, big, bigIcmpError]));
    expect(t.toTunIcmp.count).to.equal(1);
    expect(counters.dropped('icmp_rate_limited')).to.equal(1);
    expect(counters.dropped('too_big_df')).to.equal(3);
    now = 1000;
    t.encapBatch(1, batchOf([big]));
    expect(t.toTunIcmp.count).to.equal(1);
  });
});

describe('dti/tunnel: raw → TUN (decapBatch)', () => {
  it('decapsulates in place and applies the policy hook (anti-spoofing)', () => {
    const bound = new Map([[LEASE, tep6]]);
    const { t, counters, logged } = nodeTunnel({
      // TEP-style check: the inner source must be bound to the outer IPv6 source.
      accept: (buf, srcOff, innerSrc) => {
        const want = bound.get(innerSrc);
        if (!want) return Drop.no_binding;
        for (let i = 0; i < 16; i++) if (buf[srcOff + i] !== want[i]) return Drop.spoofed_source;
        return OK;
      },
    });
    const fromTep = ipv6(TEP, SELF, 4, ipv4({ src: '198.51.100.7', dst: '192.0.2.2' }));
    const spoofed = ipv6('2001:db8:1::66', SELF, 4, ipv4({ src: '198.51.100.7' }));
    const unbound = ipv6(TEP, SELF, 4, ipv4({ src: '198.51.100.8' }));
    const rx = batchOf([fromTep, spoofed, unbound, fromTep.slice(0, 30)], 0);
    t.decapBatch(4, rx);
    expect(t.toTun.count).to.equal(1);
    expect(t.toTun.buf).to.equal(rx.buf);
    expect(t.toTun.offsets[0]).to.equal(40);
    expect(formatIPv4(readU32(t.toTun.buf, t.toTun.offsets[0] + 12))).to.equal('198.51.100.7');
    expect(counters.snapshot().drops).to.include({ spoofed_source: 1, no_binding: 1, ipv6_malformed: 1 });
    expect(counters.event('decapsulated')).to.equal(1);
    expect(logged).to.deep.equal(['spoofed_source', 'no_binding', 'ipv6_malformed']);
  });

  it('counts a packet the kernel cut to the receive slot (length 0) as rx_truncated, not as malformed', () => {
    const { t, counters } = nodeTunnel();
    const p = ipv6(TEP, SELF, 4, ipv4({ src: '192.0.2.2', dst: '198.51.100.7' }));
    const rx = batchOf([p, p], 0);
    rx.lengths[1] = 0; // what the raw socket's reader reports for MSG_TRUNC
    t.decapBatch(2, rx);
    expect(t.toTun.count).to.equal(1);
    const err = icmpv6('2001:db8:9::1', SELF, 1, 0, 0, ipv6(SELF, TEP, 4, ipv4({ src: '198.51.100.7' })));
    const rx6 = batchOf([err], 0);
    rx6.lengths[0] = 0;
    t.icmp6Batch(1, rx6);
    expect(counters.snapshot().drops).to.include({ rx_truncated: 2, ipv6_malformed: 0 });
    expect(counters.snapshot().dropped).to.equal(2);
  });

  it('never lists more packets than toTun holds: the rest are counted as queue_full', () => {
    // checkBatch admits up to toRaw's capacity (batch + the segments of a TUN batch), more than toTun's.
    const { t, counters } = nodeTunnel({ batch: 2 });
    const p = ipv6(TEP, SELF, 4, ipv4({ src: '192.0.2.2', dst: '198.51.100.7' }));
    t.decapBatch(3, batchOf([p, p, p], 0));
    expect(t.toTun.count).to.equal(2);
    expect(counters.dropped('queue_full')).to.equal(1);
    expect(counters.event('decapsulated')).to.equal(2);
  });

  it('logs discarded packets with their first bytes in hex', () => {
    const records: Record<string, unknown>[] = [];
    const c = new Counters(dropLoggerTo({ debug: (_msg, fields) => records.push(fields ?? {}) }, 4));
    c.drop(Drop.not_ipip, Uint8Array.of(9, 0x60, 1, 2, 3, 4), 1, 5);
    expect(records).to.deep.equal([{ reason: 'not_ipip', len: 5, packet: '60010203' }]);
  });

  it('lets the TEP add its own drop reasons', () => {
    const c = new Counters();
    const code = c.define('tep_custom');
    expect(c.define('tep_custom')).to.equal(code);
    c.drop(code);
    expect(c.snapshot().drops.tep_custom).to.equal(1);
  });
});

describe('dti/tunnel: ICMPv6 errors (icmp6Batch)', () => {
  it('lowers the path MTU on packet-too-big and relays frag-needed with the new tunnel MTU', () => {
    const seen: number[][] = [];
    const { t, counters } = nodeTunnel({ pathMtu: 1500, onPathMtu: (p, m) => seen.push([p, m]) });
    const inner = ipv4({ df: true, src: '198.51.100.7', dst: '192.0.2.2', proto: 6, payload: Array(40).fill(0) });
    const ptb = icmpv6('2001:db8:9::1', SELF, 2, 0, 1400, ipv6(SELF, TEP, 4, inner));
    const unrelated = icmpv6('2001:db8:9::1', SELF, 1, 0, 0, ipv6(TEP, SELF, 4, inner));
    t.icmp6Batch(2, batchOf([ptb, unrelated], 0));
    expect(t.currentPathMtu).to.equal(1400);
    expect(t.tunnelMtu).to.equal(1360);
    expect(seen).to.deep.equal([[1400, 1360]]);
    expect(t.toTunIcmp.count).to.equal(1);
    const m = t.toTunIcmp.buf.subarray(t.toTunIcmp.offsets[0], t.toTunIcmp.offsets[0] + t.toTunIcmp.lengths[0]);
    expect(Array.from(m.subarray(16, 20))).to.deep.equal([198, 51, 100, 7]); // to the original IPv4 source
    expect([m[20], m[21], (m[26] << 8) | m[27]]).to.deep.equal([3, 4, 1360]);
    expect(counters.event('icmp_relayed')).to.equal(1);
    expect(counters.dropped('icmp_unrelated')).to.equal(1);
  });

  it('counts every ICMPv6 error it does not relay, and refuses a quote whose IPv4 header length is below 20', () => {
    const { t, counters } = nodeTunnel({ pathMtu: 1500 });
    const router = '2001:db8:9::1';
    const about = (inner: number[], type = 1, word = 0): number[] =>
      icmpv6(router, SELF, type, 0, word, ipv6(SELF, TEP, 4, inner));
    const udp = { src: '198.51.100.7', dst: '192.0.2.2', proto: 17, payload: Array(12).fill(0) };
    const icmpError = { ...udp, proto: 1, payload: [3, 1, 0, 0, 0, 0, 0, 0] }; // an ICMPv4 host unreachable
    const laterFragment = ipv4(udp);
    laterFragment[7] = 0xb9; // fragment offset 185 (1480 bytes)
    laterFragment[10] = laterFragment[11] = 0;
    const c4 = cksum(laterFragment, 0, 20);
    [laterFragment[10], laterFragment[11]] = [c4 >> 8, c4 & 0xff];
    // IHL 4: a 16-byte header, so the ICMP type would be read from the destination address (192: not an error)
    const shortHeader = ipv4(icmpError);
    shortHeader[0] = 0x44;
    const limit = [4, 0, 4, 1, 0, 1, 1, 0]; // destination options: encapsulation limit 0, PadN
    const withLimit = ipv6(SELF, TEP, 60, [...limit, ...ipv4(udp)]);
    const errors = [
      about(ipv4({ ...udp, df: false }), 2, 1400), // packet too big, DF=0: the path MTU is learnt, nothing relayed
      about(ipv4(icmpError)),
      about(laterFragment),
      about(ipv4({ ...udp, src: '224.0.0.9' })), // a multicast source
      icmpv6(router, SELF, 4, 0, 6, withLimit), // a parameter problem at the next header field
      about(shortHeader),
      icmpv6(router, SELF, 4, 0, 44, withLimit), // a parameter problem at our encapsulation limit: relayed
    ];
    t.icmp6Batch(errors.length, batchOf(errors, 0));
    expect(t.currentPathMtu).to.equal(1400);
    expect(t.toTunIcmp.count).to.equal(1);
    expect(counters.event('icmp_relayed')).to.equal(1);
    expect(counters.snapshot().drops).to.include({ icmp6_not_relayed: 5, icmp_unrelated: 1 });
    expect(counters.snapshot().dropped + counters.event('icmp_relayed')).to.equal(errors.length);
  });

  it('finding 6: keeps a lowered path MTU for its age after the last packet-too-big below the configured one, however high', () => {
    let now = 0;
    const { t } = nodeTunnel({ pathMtu: 1500, now: () => now });
    const inner = ipv4({ df: true, src: '198.51.100.7', dst: '192.0.2.2', proto: 6, payload: Array(40).fill(0) });
    const ptb = (mtu: number): number[] => icmpv6('2001:db8:9::1', SELF, 2, 0, mtu, ipv6(SELF, TEP, 4, inner));
    const big = ipv4({ src: '198.51.100.7', dst: '192.0.2.2', df: true, proto: 17, payload: Array(1300 - 20).fill(0) });
    t.icmp6Batch(1, batchOf([ptb(1280)], 0));
    now = 400_000;
    t.icmp6Batch(1, batchOf([ptb(1400)], 0)); // higher than the lowered 1280, lower than the configured 1500
    now = 600_001; // past the first one's age, not the last one's
    t.encapBatch(1, batchOf([big]));
    expect(t.currentPathMtu).to.equal(1280);
    expect(t.toRaw.count).to.equal(0); // 1300 bytes do not fit 1280 - 40
    now = 1_000_000; // the last one's age is over
    t.encapBatch(1, batchOf([big]));
    expect(t.currentPathMtu).to.equal(1500);
    expect(t.toRaw.count).to.equal(1);
  });
});
