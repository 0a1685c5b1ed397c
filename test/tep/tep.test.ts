// The TEP's per-packet decisions on real packets, without devices: Tep's tunnel pipeline fed receive batches.
import { expect } from 'chai';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { Tep } from '../../src/tep/tep';
import { batchOf, ipv4, ipv6 } from '../dti/build';

const TEP6 = '2001:db8:1::1';
const NODE6 = '2001:db8:1::10';
const log = createLogger({ level: 'error' });

function makeTep(over: { unreachable?: boolean } = {}): Tep {
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
    const rx = batchOf([
      tunnelled(NODE6, '198.51.100.5'), // ok
      tunnelled(NODE6, '198.51.100.6'), // spoofed
      tunnelled('2001:db8:1::99', '198.51.100.5'), // no binding for this node
      tunnelled('2001:db8:7::10', '198.51.100.5'), // outside the domain
      tunnelled('2001:db8:1::20', '198.51.100.200'), // static mapping
    ], 0);
    tep.tunnel.decapBatch(5, rx);
    expect(tep.tunnel.toTun.count).to.equal(2);
    expect(tep.stats().drops).to.include({ spoofed_source: 1, unbound_source: 1, outside_prefix: 1 });
  });

  it('encapsulates IPv4 for a bound address to its node, drops it for unbound ones and after the binding ends', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.5'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    const rx = batchOf([ipv4({ src: '192.0.2.2', dst: '198.51.100.5' }), ipv4({ src: '192.0.2.2', dst: '198.51.100.6' })]);
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

  it('keeps static mappings over server bindings and routes static addresses outside the pools', () => {
    const tep = makeTep();
    tep.bind(parseIPv4('198.51.100.200'), parseIPv6(NODE6), Date.now() / 1000 + 60);
    tep.unbind(parseIPv4('198.51.100.200'));
    tep.bind(parseIPv4('198.51.100.7'), parseIPv6('2001:db8:1::20'), Date.now() / 1000 + 60); // the static node
    expect(tep.stats().bindings).to.deep.equal([{ ipv4: '198.51.100.200', ipv6: '2001:db8:1::20', tep4: '192.0.2.1', tep6: TEP6, starts: null, ends: null, source: 'static' }]);
    expect(tep.routedPrefixes()).to.deep.equal(['198.51.100.0/28', '198.51.100.200/32']);
  });
});
