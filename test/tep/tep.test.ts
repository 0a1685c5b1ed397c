// The TEP's per-packet decisions on real packets, without devices: Tep's tunnel pipeline fed receive batches.
import { expect } from 'chai';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { Ipv4Header, OK, parseIpv4, readU32 } from '../../src/dti/packet';
import { Tep, type TepOptions } from '../../src/tep/tep';
import { SCAN_SLOTS, SWEEP_SLOTS } from '../../src/tep/bindings';
import { reconfigureStatics } from '../../src/tep/daemon';
import type { FeedBinding } from '../../src/protocol/binding-feed';
import { batchOf, icmpv6, ipv4, ipv6 } from '../dti/build';
import { seeded } from '../support/random';

const TEP6 = '2001:db8:1::1';
const NODE6 = '2001:db8:1::10';
const log = createLogger({ level: 'error' });

type Over = Partial<Pick<TepOptions, 'unreachable' | 'clock' | 'monotonic' | 'batch' | 'hashKey' | 'bindingCapacity'>>;

function makeTep(over: Over = {}): Tep {
  return new Tep({
    address: parseIPv6(TEP6),
    ipv4: parseIPv4('192.0.2.1'),
    pools: [parsePrefix4('198.51.100.0/28')],
    prefixes: [parsePrefix6('2001:db8:1::/64')],
    statics: [{ ipv4: parseIPv4('198.51.100.200'), ipv6: parseIPv6('2001:db8:1::20') }],
    device: 'unused',
    pathMtu: 1500,
    log,
    ...over,
  });
}

const tunnelled = (src6: string, src4: string): number[] => ipv6(src6, TEP6, 4, ipv4({ src: src4, dst: '192.0.2.2' }));

describe('tep forwarding decisions', () => {
  it('decapsulates only packets whose inner source is bound to their outer source', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    const rx = batchOf(
      [
        tunnelled(NODE6, '198.51.100.5'), // ok
        tunnelled(NODE6, '198.51.100.6'), // spoofed
        tunnelled('2001:db8:1::99', '198.51.100.5'), // no binding for this node
        tunnelled('2001:db8:7::10', '198.51.100.5'), // outside the domain
        tunnelled('2001:db8:1::20', '198.51.100.200'), // static mapping
      ],
      0,
    );
    tep.tunnel.decapBatch(5, rx);
    expect(tep.tunnel.toTun.count).to.equal(2);
    expect(tep.stats().drops).to.include({ spoofed_source: 1, unbound_source: 1, outside_prefix: 1 });
  });

  it('encapsulates IPv4 for a bound address to its node, drops it for unbound ones and after the binding ends', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    const rx = batchOf([
      ipv4({ src: '192.0.2.2', dst: '198.51.100.5' }),
      ipv4({ src: '192.0.2.2', dst: '198.51.100.6' }),
    ]);
    tep.tunnel.encapBatch(2, rx);
    const out = tep.tunnel.toRaw;
    expect(out.count).to.equal(1);
    expect(formatIPv6(out.buf, out.offsets[0] + 24)).to.equal(NODE6);
    expect(formatIPv6(out.buf, out.offsets[0] + 8)).to.equal(TEP6);
    expect(tep.stats().drops.no_binding).to.equal(1);

    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 - 1); // ended
    tep.tunnel.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.5' })]));
    expect(tep.tunnel.toRaw.count).to.equal(0);
    expect(tep.stats().drops.no_binding).to.equal(2);
  });

  it('answers IPv4 for an address no node holds with ICMPv4 host unreachable from its IPv4 address, unless told not to', () => {
    const tep = makeTep();
    tep.tunnel.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.6' })]));
    const icmp = tep.tunnel.toTunIcmp;
    expect(icmp.count).to.equal(1);
    const at = icmp.offsets[0];
    expect([...icmp.buf.subarray(at + 12, at + 20)]).to.deep.equal([192, 0, 2, 1, 192, 0, 2, 2]); // TEP -> sender
    expect([icmp.buf[at + 9], icmp.buf[at + 20], icmp.buf[at + 21]]).to.deep.equal([1, 3, 1]); // ICMP, unreachable, host
    expect([...icmp.buf.subarray(at + 28 + 16, at + 28 + 20)]).to.deep.equal([198, 51, 100, 6]); // quotes the packet
    expect(tep.stats().drops.no_binding).to.equal(1);
    expect(tep.stats().events.icmp4_sent).to.equal(1);

    tep.tunnel.unreachable = false; // what a reload with --no-unreachable does
    tep.tunnel.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.6' })]));
    expect(tep.tunnel.toTunIcmp.count).to.equal(0);
    expect(tep.stats().drops.no_binding).to.equal(2);
    const silent = makeTep({ unreachable: false });
    silent.tunnel.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.6' })]));
    expect(silent.tunnel.toTunIcmp.count).to.equal(0);
  });

  it('reconfigures while forwarding: the domain checks the next packet, pools and statics change the routed prefixes', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.reconfigure({
      prefixes: [parsePrefix6('2001:db8:9::/64')],
      pools: [parsePrefix4('198.51.100.0/28'), parsePrefix4('203.0.113.0/24')],
      statics: [{ ipv4: parseIPv4('198.51.100.201'), ipv6: parseIPv6('2001:db8:9::21') }],
      unreachable: false,
    });
    tep.tunnel.decapBatch(1, batchOf([tunnelled(NODE6, '198.51.100.5')], 0));
    expect(tep.tunnel.toTun.count).to.equal(0);
    expect(tep.stats().drops.outside_prefix).to.equal(1);
    expect(tep.routedPrefixes()).to.deep.equal(['198.51.100.0/28', '203.0.113.0/24', '198.51.100.201/32']);
    expect(tep.stats().bindings.map((b) => [b.ipv4, b.source])).to.have.deep.members([
      ['198.51.100.5', 'server'],
      ['198.51.100.201', 'static'],
    ]);
    tep.tunnel.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.6' })]));
    expect(tep.tunnel.toTunIcmp.count).to.equal(0);
  });

  it('the statistics for the metrics list no binding (no sort of every binding on the forwarding thread), and count them', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.5' })]));
    const table = (tep as unknown as { bindings: { list: (n: number) => unknown[] } }).bindings;
    const list = table.list.bind(table);
    let listed = 0;
    table.list = (n) => (listed++, list(n));
    const lean = tep.stats({ bindings: false });
    expect(listed).to.equal(0);
    expect(lean.bindings).to.deep.equal([]);
    expect(lean.binding_count).to.equal(2);
    expect(lean.top_talkers.map((b) => b.ipv4)).to.deep.equal(['198.51.100.5']);
    expect(tep.stats().bindings).to.have.length(2);
    expect(listed).to.equal(1);
  });

  it('keeps static mappings over server bindings and routes static addresses outside the pools', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.200'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.unbind(parseIPv4('198.51.100.200'));
    tep.bind(parseIPv4('198.51.100.7'), parseIPv6('2001:db8:1::20'), Date.now() / 1000 + 60); // the static node
    expect(tep.stats().bindings).to.deep.equal([
      {
        ipv4: '198.51.100.200',
        ipv6: '2001:db8:1::20',
        tep4: '192.0.2.1',
        tep6: TEP6,
        starts: null,
        ends: null,
        source: 'static',
        forwarded: { to_ipv4: 0, to_ipv6: 0, bytes_to_ipv4: 0, bytes_to_ipv6: 0 },
      },
    ]);
    expect(tep.routedPrefixes()).to.deep.equal(['198.51.100.0/28', '198.51.100.200/32']);
  });

  it('binds the server bindings a reload frees: the address and the node of a static mapping that goes or moves', () => {
    const tep = makeTep(); // static 198.51.100.200 = 2001:db8:1::20
    const ends = Math.floor(Date.now() / 1000) + 60;
    const served: FeedBinding[] = [
      { ip4: '198.51.100.200', ip6: NODE6, starts: ends - 120, ends }, // the static address, another node
      { ip4: '198.51.100.7', ip6: '2001:db8:1::20', starts: ends - 120, ends }, // the static node, another address
    ];
    const feed = {
      byIPv4: new Map(served.map((b) => [b.ip4, b])),
      byIPv6: new Map(served.map((b) => [b.ip6, b])),
    };
    for (const b of served) tep.bind(parseIPv4(b.ip4), parseIPv6(b.ip6), b.ends, b.starts); // both refused
    const sources = (): string[][] => tep.stats().bindings.map((b) => [b.ipv4, b.ipv6, b.source]);
    expect(sources()).to.deep.equal([['198.51.100.200', '2001:db8:1::20', 'static']]);
    const config = { prefixes: tep.opts.prefixes, pools: tep.opts.pools, unreachable: true };

    // the mapping moves to another node: its old node is the server's again, its address stays static
    const moved = [{ ipv4: parseIPv4('198.51.100.200'), ipv6: parseIPv6('2001:db8:1::21') }];
    reconfigureStatics(tep, feed, tep.opts.statics, { ...config, statics: moved });
    expect(sources()).to.have.deep.members([
      ['198.51.100.200', '2001:db8:1::21', 'static'],
      ['198.51.100.7', '2001:db8:1::20', 'server'],
    ]);

    // the mapping goes: its address is the server's binding at once, and its node's packets are forwarded
    reconfigureStatics(tep, feed, tep.opts.statics, { ...config, statics: [] });
    expect(sources()).to.have.deep.members([
      ['198.51.100.200', NODE6, 'server'],
      ['198.51.100.7', '2001:db8:1::20', 'server'],
    ]);
    tep.tunnel.decapBatch(1, batchOf([tunnelled(NODE6, '198.51.100.200')], 0));
    expect(tep.tunnel.toTun.count).to.equal(1);
  });

  it("shows a server binding in the JSON contract: the feed's start and end in seconds, the TEP's addresses", async () => {
    const tep = makeTep();
    const ends = Math.floor(Date.now() / 1000) + 60;
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), ends, ends - 100);
    await tep.resync([
      { ipv4: parseIPv4('198.51.100.6'), ipv6: parseIPv6('2001:db8:1::21'), starts: ends - 200, ends },
    ]);
    tep.bind(parseIPv4('198.51.100.7'), parseIPv6('2001:db8:1::22'), ends); // a start the feed did not give
    expect(
      tep
        .stats()
        .bindings.filter((b) => b.source === 'server')
        .map((b) => [b.ipv4, b.tep4, b.tep6, b.starts, b.ends]),
    ).to.deep.equal([
      ['198.51.100.6', '192.0.2.1', TEP6, ends - 200, ends],
      ['198.51.100.7', '192.0.2.1', TEP6, null, ends],
    ]);
  });
});

describe('tep ICMPv6 errors', () => {
  const NODE_B = '2001:db8:1::11';
  const A4 = '198.51.100.5';
  const B4 = '198.51.100.6';
  const PEER4 = '192.0.2.2';
  const bigDf = (dst: string): number[] => ipv4({ src: PEER4, dst, df: true, proto: 17, payload: Array(1400).fill(0) });
  /** An ICMPv6 packet-too-big from `from` quoting a tunnel packet TEP -> node6 carrying IPv4 src4 -> dst4. */
  const ptb = (from: string, node6: string, src4: string, dst4: string, mtu: number): number[] =>
    icmpv6(
      from,
      TEP6,
      2,
      0,
      mtu,
      ipv6(TEP6, node6, 4, ipv4({ src: src4, dst: dst4, df: true, proto: 17, payload: Array(40).fill(0) })),
    );

  it('finding 8: a forged packet-too-big neither lowers the path MTU for every node nor sends frag-needed where the forger says', () => {
    let now = 1_000_000;
    const tep = makeTep({ clock: () => now });
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), now / 1000 + 3600);
    tep.bind(parseIPv4(B4), parseIPv6(NODE_B), now / 1000 + 3600);
    const t = tep.tunnel;
    const victim = '203.0.113.66';

    // quoting a packet to node A for B's address (no binding explains it), or from outside the domain: ignored
    t.icmp6Batch(
      2,
      batchOf([ptb('2001:db8:1::99', NODE6, victim, B4, 1280), ptb('2001:db8:7::1', NODE6, victim, A4, 1280)], 0),
    );
    expect(t.toTunIcmp.count).to.equal(0);
    expect(tep.stats().drops).to.include({ icmp6_unbound: 1, icmp6_outside_prefix: 1 });
    t.encapBatch(2, batchOf([bigDf(A4), bigDf(B4)]));
    expect(t.toRaw.count).to.equal(2);

    // a packet-too-big that quotes a packet of A's binding lowers A's path only, and is relayed
    t.icmp6Batch(1, batchOf([ptb('2001:db8:1::99', NODE6, PEER4, A4, 1280)], 0));
    expect(t.toTunIcmp.count).to.equal(1);
    expect(tep.stats().events.pmtu_updated).to.equal(1);
    t.encapBatch(2, batchOf([bigDf(A4), bigDf(B4)]));
    expect(t.toRaw.count).to.equal(1);
    expect(formatIPv6(t.toRaw.buf, t.toRaw.offsets[0] + 24)).to.equal(NODE_B);
    const icmp = t.toTunIcmp;
    expect(icmp.count).to.equal(1);
    const m = icmp.buf.subarray(icmp.offsets[0], icmp.offsets[0] + icmp.lengths[0]);
    expect([m[20], m[21], (m[26] << 8) | m[27]]).to.deep.equal([3, 4, 1240]);

    // RFC 8201 ageing: ten minutes later A's path is back at the configured MTU
    now += 600_001;
    tep.tick();
    t.encapBatch(1, batchOf([bigDf(A4)]));
    expect(t.toRaw.count).to.equal(1);
  });

  it('finding 5: a packet-too-big reporting no less than the configured path MTU is neither kept nor relayed', () => {
    const tep = makeTep();
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 3600);
    const t = tep.tunnel;
    t.icmp6Batch(
      2,
      batchOf([ptb('2001:db8:1::99', NODE6, PEER4, A4, 1500), ptb('2001:db8:1::99', NODE6, PEER4, A4, 9000)], 0),
    );
    expect(t.toTunIcmp.count).to.equal(0);
    const st = tep.stats();
    expect(st.path_mtu_lowered).to.equal(0);
    expect(st.events).to.include({ pmtu_updated: 0, icmp_relayed: 0 });
    expect(st.drops.icmp6_not_relayed).to.equal(2);
    t.encapBatch(1, batchOf([ipv4({ src: PEER4, dst: A4, df: true, proto: 17, payload: Array(1460 - 20).fill(0) })]));
    expect(t.toRaw.count).to.equal(1); // 1460 bytes still fit the 1500-byte path (tunnel MTU 1460)
  });

  it('finding 6: a packet-too-big renews a lowered path MTU, however high below the configured one, on every queue', () => {
    let now = 1_000_000;
    const tep = makeTep({ clock: () => now });
    const other = makeTep({ clock: () => now }); // another queue, told what queue 0 learns
    tep.onPathMtuLowered = (node, mtu) => other.lowerPathMtu(node, mtu);
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), now / 1000 + 3600);
    tep.tunnel.icmp6Batch(1, batchOf([ptb('2001:db8:1::99', NODE6, PEER4, A4, 1300)], 0));
    now += 400_000;
    tep.tunnel.icmp6Batch(1, batchOf([ptb('2001:db8:1::99', NODE6, PEER4, A4, 1400)], 0));
    now += 200_001; // past the first one's ten minutes, not the last one's
    for (const q of [tep, other]) {
      q.tick();
      expect(q.pmtu.get(parseIPv6(NODE6), 0, now, 1500)).to.equal(1300);
    }
    expect(tep.stats().events.pmtu_updated).to.equal(1);
  });

  it('finding 3: a node flooding ICMPv6 errors about its own packets relays nothing from itself and never drains the relays about another node', () => {
    // a fixed hash key, under which A and B share no bucket, and a clock that stands still: no token comes back
    const tep = makeTep({ hashKey: new Uint8Array(32).fill(3), monotonic: () => 0 });
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 3600);
    tep.bind(parseIPv4(B4), parseIPv6(NODE_B), Date.now() / 1000 + 3600);
    const t = tep.tunnel;
    // port unreachable about "TEP -> node A, inner 203.0.113.77 -> A's address": a victim of A's choosing
    const aboutA = (from: string): number[] =>
      icmpv6(
        from,
        TEP6,
        1,
        4,
        0,
        ipv6(TEP6, NODE6, 4, ipv4({ src: '203.0.113.77', dst: A4, proto: 17, payload: Array(12).fill(0) })),
      );
    const flood = (from: string): void =>
      t.icmp6Batch(
        60,
        batchOf(
          Array.from({ length: 60 }, () => aboutA(from)),
          0,
        ),
      );

    flood(NODE6); // from node A itself: refused
    expect(t.toTunIcmp.count).to.equal(0);
    expect(tep.stats().drops.icmp6_from_node).to.equal(60);

    flood('2001:db8:1::10:1'); // from another of A's addresses: relayed up to the burst of A's bucket
    expect(t.toTunIcmp.count).to.equal(50);
    expect(tep.stats().drops.icmp_rate_limited).to.equal(10);

    // a router's genuine packet-too-big about node B is still relayed: frag-needed to B's peer
    t.icmp6Batch(1, batchOf([ptb('2001:db8:1::99', NODE_B, PEER4, B4, 1280)], 0));
    expect(t.toTunIcmp.count).to.equal(1);
    const m = t.toTunIcmp.buf.subarray(t.toTunIcmp.offsets[0], t.toTunIcmp.offsets[0] + t.toTunIcmp.lengths[0]);
    expect([formatIPv4(readU32(m, 16)), m[20], m[21]]).to.deep.equal([PEER4, 3, 4]);
  });

  it('rate-limits each kind of ICMPv4 error in its own bucket: unreachables cannot starve frag-needed', () => {
    const tep = makeTep();
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.tunnel.setPathMtu(1280);
    const flood = Array.from({ length: 60 }, () => ipv4({ src: PEER4, dst: '198.51.100.9' }));
    tep.tunnel.encapBatch(60, batchOf(flood));
    expect(tep.stats().drops.icmp_rate_limited).to.be.greaterThan(0);
    tep.tunnel.encapBatch(1, batchOf([bigDf(A4)]));
    expect(tep.tunnel.toTunIcmp.count).to.equal(1);
  });
});

describe('tep hairpinning and per-binding counters', () => {
  const A4 = '198.51.100.5';
  const B4 = '198.51.100.6';
  const NODE_B = '2001:db8:1::11';
  const from = (src6: string, o: Parameters<typeof ipv4>[0]): number[] => ipv6(src6, TEP6, 4, ipv4(o));

  it("forwards a node's packet for another node's address tunnel to tunnel, after the anti-spoofing check, and counts it", () => {
    const tep = makeTep();
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.bind(parseIPv4(B4), parseIPv6(NODE_B), Date.now() / 1000 + 60);
    const toB = ipv4({ src: A4, dst: B4, ttl: 9 });
    tep.decapBatch(
      4,
      batchOf(
        [
          ipv6(NODE6, TEP6, 4, toB), // hairpinned
          from(NODE6, { src: B4, dst: B4 }), // spoofed: B's address from A's node
          from(NODE6, { src: A4, dst: '192.0.2.2' }), // to the IPv4 side
          from(NODE6, { src: A4, dst: B4, ttl: 1 }), // left to the kernel, which answers time exceeded
        ],
        0,
      ),
    );
    const hp = tep.toRawHairpin;
    expect(hp.count).to.equal(1);
    const o = hp.offsets[0];
    expect(hp.lengths[0]).to.equal(40 + toB.length);
    expect(formatIPv6(hp.buf, o + 8)).to.equal(TEP6);
    expect(formatIPv6(hp.buf, o + 24)).to.equal(NODE_B);
    expect([hp.buf[o + 6], hp.buf[o + 40 + 8]]).to.deep.equal([4, 8]); // IPIP; the TTL went down by one
    expect(parseIpv4(hp.buf, o + 40, toB.length, new Ipv4Header())).to.equal(OK); // checksum updated
    expect(tep.tunnel.toTun.count).to.equal(2);
    const st = tep.stats();
    expect(st.drops.spoofed_source).to.equal(1);
    expect(st.events).to.include({ hairpinned: 1, bytes_hairpinned: toB.length });
    const a = st.bindings.find((b) => b.ipv4 === A4);
    const b = st.bindings.find((b) => b.ipv4 === B4);
    expect(a?.forwarded).to.deep.include({ to_ipv4: 2, to_ipv6: 0 }); // the two for the IPv4 side (TTL 1 included)
    expect(b?.forwarded).to.deep.equal({ to_ipv4: 0, to_ipv6: 1, bytes_to_ipv4: 0, bytes_to_ipv6: toB.length });
  });

  it('finding 7: counts a hairpinned packet to_ipv6, not to_ipv4, so the bindings sum to what the TEP forwarded', () => {
    const tep = makeTep();
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.bind(parseIPv4(B4), parseIPv6(NODE_B), Date.now() / 1000 + 60);
    const toB = ipv4({ src: A4, dst: B4, proto: 17, payload: Array(100).fill(1) }); // 120 bytes, hairpinned
    const out = ipv4({ src: A4, dst: '192.0.2.2' }); // 36 bytes, to the IPv4 side
    const fromPeer = ipv4({ src: '192.0.2.2', dst: B4, proto: 17, payload: Array(30).fill(2) }); // 50 bytes, to B
    tep.decapBatch(2, batchOf([ipv6(NODE6, TEP6, 4, toB), ipv6(NODE6, TEP6, 4, out)], 0));
    tep.encapBatch(1, batchOf([fromPeer]));
    const st = tep.stats();
    expect(st.forwarded).to.deep.equal({ to_ipv4: 1, to_ipv6: 2, bytes_to_ipv4: 36, bytes_to_ipv6: 120 + 50 });
    const sum = (k: keyof typeof st.forwarded): number => st.bindings.reduce((n, x) => n + x.forwarded[k], 0);
    for (const k of ['to_ipv4', 'to_ipv6', 'bytes_to_ipv4', 'bytes_to_ipv6'] as const)
      expect(sum(k), k).to.equal(st.forwarded[k]);
    expect(st.events).to.include({ hairpinned: 1, bytes_hairpinned: 120 });
    expect(st.queues[0]).to.include({ to_ipv4: 1, to_ipv6: 2 });
  });

  it('counts packets and bytes per binding each way and names the top talkers', () => {
    const tep = makeTep();
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.bind(parseIPv4(B4), parseIPv6(NODE_B), Date.now() / 1000 + 60);
    const big = ipv4({ src: '192.0.2.2', dst: B4, proto: 17, payload: Array(1000).fill(1) });
    tep.encapBatch(3, batchOf([ipv4({ src: '192.0.2.2', dst: A4 }), big, big]));
    tep.tunnel.setPathMtu(1280);
    tep.encapBatch(1, batchOf([ipv4({ src: '192.0.2.2', dst: A4, proto: 17, payload: Array(1300).fill(2) })])); // fragments
    expect(tep.tunnel.toRawFragments.count).to.equal(2);
    const st = tep.stats();
    expect(st.top_talkers.map((b) => [b.ipv4, b.forwarded.to_ipv6, b.forwarded.bytes_to_ipv6])).to.deep.equal([
      [B4, 2, 2 * big.length],
      [A4, 2, 36 + 1320], // an echo request, and a packet sent as two fragments
    ]);
    expect(st.binding_count).to.equal(3);
  });

  it('counts outer fragments the pipeline sends mid-batch (offloads: more than the fragment list holds)', () => {
    const tep = makeTep({ batch: 1 });
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.tunnel.offload = true;
    // A UDP super-packet (GSO_UDP_L4, segments of 1480 bytes, DF=0): 10 segments of 2 outer fragments each at the
    // 1460-byte tunnel MTU, where a batch of 1 has room for 8 fragments.
    const udp = [0x9c, 0x40, 0, 53, 0, 0, 0, 0, ...Array(10 * 1452).fill(3)];
    const b = batchOf([ipv4({ src: '192.0.2.2', dst: A4, proto: 17, payload: udp })], 48, 1 << 20);
    b.buf.set([0, 5, 0, 0, 1452 & 0xff, 1452 >> 8, 0, 0, 0, 0], 48 - 10); // virtio_net_hdr: UDP_L4, gso_size
    let sent = 0;
    tep.encapBatch(1, { ...b, scratch: 1 << 16 }, (list) => {
      sent += list.count;
      list.count = 0;
    });
    sent += tep.tunnel.toRawFragments.count;
    expect(sent).to.equal(20);
    expect(tep.counters.snapshot().dropped).to.equal(0);
    const a = tep.stats().bindings.find((x) => x.ipv4 === A4);
    expect(a?.forwarded).to.deep.include({ to_ipv6: 10, bytes_to_ipv6: 10 * 1480 });
  });
});

describe('tep hairpinning with many static mappings (Annex A)', () => {
  const STATICS = 10_000;
  const BASE = parseIPv4('100.64.0.0');
  // spread out, so that the addresses between them are neither statics nor in a pool
  const static4 = (i: number): number => BASE + i * 7;
  const static6 = (i: number): Uint8Array => {
    const a = parseIPv6('2001:db8:1::1:0');
    a[14] = i >> 8;
    a[15] = i & 0xff;
    return a;
  };
  const mappings = Array.from({ length: STATICS }, (_, i) => ({ ipv4: static4(i), ipv6: static6(i) }));
  const A4 = '198.51.100.5';

  function decapTo(tep: Tep, dsts: number[]): { hairpinnedTo: string[]; toIpv4: string[] } {
    const rx = batchOf(
      dsts.map((d) => ipv6(NODE6, TEP6, 4, ipv4({ src: A4, dst: formatIPv4(d) }))),
      0,
    );
    tep.decapBatch(dsts.length, rx);
    const hp = tep.toRawHairpin;
    const out = tep.tunnel.toTun;
    return {
      hairpinnedTo: Array.from({ length: hp.count }, (_, i) => formatIPv6(hp.buf, hp.offsets[i] + 24)),
      toIpv4: Array.from({ length: out.count }, (_, i) => formatIPv4(readU32(out.buf, out.offsets[i] + 16))),
    };
  }

  it('hairpins to the first and the last of 10^4 statics, not to an address between them, also after a reload', () => {
    const tep = makeTep();
    tep.reconfigure({
      prefixes: [parsePrefix6('2001:db8:1::/64')],
      pools: [parsePrefix4('198.51.100.0/28')],
      statics: mappings,
    });
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    const first = static4(0);
    const last = static4(STATICS - 1);
    const absent = static4(STATICS / 2) + 1;
    expect(decapTo(tep, [first, last, absent])).to.deep.equal({
      hairpinnedTo: [formatIPv6(static6(0)), formatIPv6(static6(STATICS - 1))],
      toIpv4: [formatIPv4(absent)],
    });
    // the last mapping removed: its address is no longer routed to the TEP, so IPv4 forwarding decides
    tep.reconfigure({
      prefixes: [parsePrefix6('2001:db8:1::/64')],
      pools: [parsePrefix4('198.51.100.0/28')],
      statics: mappings.slice(0, -1),
    });
    expect(decapTo(tep, [first, last])).to.deep.equal({
      hairpinnedTo: [formatIPv6(static6(0))],
      toIpv4: [formatIPv4(last)],
    });
    expect(tep.stats().events.hairpinned).to.equal(3);
  });

  it('refuses server bindings for a static address or node among 10^4, and keeps the others', () => {
    const tep = makeTep();
    tep.reconfigure({
      prefixes: [parsePrefix6('2001:db8:1::/64')],
      pools: [parsePrefix4('198.51.100.0/28')],
      statics: mappings,
    });
    const ends = Date.now() / 1000 + 60;
    tep.bind(static4(STATICS - 1), parseIPv6(NODE6), ends); // a static address
    tep.bind(parseIPv4('198.51.100.6'), static6(STATICS - 1), ends); // a static node
    tep.bind(parseIPv4(A4), parseIPv6(NODE6), ends);
    expect(tep.bindings.get(static4(STATICS - 1))).to.deep.include({
      ipv6: formatIPv6(static6(STATICS - 1)),
      source: 'static',
    });
    expect(tep.bindings.get(parseIPv4('198.51.100.6'))).to.equal(undefined);
    expect(tep.bindings.get(parseIPv4(A4))).to.deep.include({ ipv6: NODE6, source: 'server' });
    expect(tep.stats().binding_count).to.equal(STATICS + 1);
  });
});

describe('tep binding updates by generation', () => {
  it('never drops packets of bindings that stay while a resync runs, and switches the others at one instant', async () => {
    const tep = makeTep();
    const node = (i: number): string => `2001:db8:1::${(0x1000 + i).toString(16)}`;
    const addr = (i: number): number => parseIPv4('198.51.0.0') + i;
    const ends = Date.now() / 1000 + 600;
    for (let i = 0; i < 2000; i++) tep.bind(addr(i), parseIPv6(node(i)), ends);
    // the new state: 0..1499 stay (but 1 moves to a new node), 1500..1999 go, 2000..2999 are new
    const next = [...Array(3000).keys()]
      .filter((i) => i < 1500 || i >= 2000)
      .map((i) => ({ ipv4: addr(i), ipv6: parseIPv6(node(i === 1 ? 5000 : i)), starts: 0, ends }));
    const rand = seeded(3);
    const pick = (n: number): number => Math.floor(rand() * n);
    const up = (i: number): number[] => ipv6(node(i), TEP6, 4, ipv4({ src: formatIPv4(addr(i)), dst: '192.0.2.2' }));
    const down = (i: number): number[] => ipv4({ src: '192.0.2.2', dst: formatIPv4(addr(i)) });
    let done = false;
    const resync = tep.resync(next, 100).then(() => (done = true));
    let turns = 0;
    let goneForwarded = 0;
    while (!done) {
      const stay = Array.from({ length: 32 }, () => 2 + pick(1498));
      tep.decapBatch(32, batchOf(stay.map(up), 0));
      expect(tep.tunnel.toTun.count).to.equal(32);
      tep.encapBatch(32, batchOf(stay.map(down)));
      expect(tep.tunnel.toRaw.count).to.equal(32);
      // a binding that goes still forwards until the commit; a new one not before it
      const gone = 1500 + pick(500);
      tep.decapBatch(2, batchOf([up(gone), up(2000 + pick(1000))], 0));
      expect(tep.tunnel.toTun.count).to.equal(1);
      if (readU32(tep.tunnel.toTun.buf, tep.tunnel.toTun.offsets[0] + 12) === addr(gone)) goneForwarded++;
      turns++;
      await new Promise((r) => setImmediate(r));
    }
    await resync;
    expect(turns).to.be.greaterThan(10); // the resync really ran beside the traffic
    expect(goneForwarded).to.equal(turns);
    tep.decapBatch(
      3,
      batchOf([up(1500), up(2500), ipv6(node(5000), TEP6, 4, ipv4({ src: formatIPv4(addr(1)), dst: '192.0.2.2' }))], 0),
    );
    expect(tep.tunnel.toTun.count).to.equal(2); // the new binding and the moved one
    expect(tep.stats().drops.spoofed_source + tep.stats().drops.unbound_source).to.equal(turns + 1);
    expect(tep.bindings.size).to.equal(2501); // 2500 from the server + the static mapping
    expect(tep.stats().bindings.find((b) => b.ipv4 === '198.51.100.200')?.source).to.equal('static');
  });
});

describe('tep: no O(bindings) step on the forwarding thread (finding 4)', () => {
  it('ends bindings a bounded part of the table per tick, and gathers the statistics between batches', async () => {
    let now = 1_700_000_000_000;
    const tep = makeTep({ clock: () => now, bindingCapacity: 1 << 18 }); // four sweeps or scan steps a pass
    const N = 60_000;
    const addr = (i: number): number => parseIPv4('10.0.0.0') + i;
    const node = (i: number): Uint8Array => {
      const b = parseIPv6('2001:db8:1::');
      b.set([0, 1, i >>> 8, i & 255], 12);
      return b;
    };
    await tep.resync(
      Array.from({ length: N }, (_, i) => ({
        ipv4: addr(i),
        ipv6: node(i),
        starts: 0,
        ends: now / 1000 + (i % 2 ? 60 : 3600),
      })),
    );
    expect(tep.bindings.size).to.equal(N + 1); // and the static mapping
    now += 61_000;
    for (let tick = 0; tick < 4; tick++) {
      const before = tep.bindings.scanned;
      tep.tick();
      expect(tep.bindings.scanned - before).to.be.at.most(SWEEP_SLOTS);
    }
    expect(tep.bindings.size).to.equal(N / 2 + 1);

    // a packet of a binding that stays is forwarded on every turn while the statistics are gathered
    const up = ipv6(formatIPv6(node(0)), TEP6, 4, ipv4({ src: formatIPv4(addr(0)), dst: '192.0.2.2' }));
    let done = false;
    const gathered = tep.statsChunked().then((s) => ((done = true), s));
    let turns = 0;
    while (!done) {
      tep.decapBatch(1, batchOf([up], 0));
      expect(tep.tunnel.toTun.count).to.equal(1);
      turns++;
      await new Promise((r) => setImmediate(r));
    }
    expect(turns).to.be.at.least(2 * ((1 << 18) / SCAN_SLOTS - 1)); // a turn between steps: the list, the top talkers
    const st = await gathered;
    const once = tep.stats();
    // the same bindings (the traffic of the one forwarded for went on after it was read)
    expect(st.bindings.map((b) => b.ipv4)).to.deep.equal(once.bindings.map((b) => b.ipv4));
    expect(st.top_talkers.map((b) => b.ipv4)).to.deep.equal(once.top_talkers.map((b) => b.ipv4));
    expect(st.bindings.length).to.equal(10_000);
    expect(st.binding_count).to.equal(N / 2 + 1);
  });
});
