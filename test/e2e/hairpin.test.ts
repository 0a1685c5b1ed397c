// Hairpinning at the TEP (dstm-tep(8) Forwarding rules): a tunnelled packet for another node's address goes back
// into the tunnel to that node, without leaving to IPv4, after the anti-spoofing check. Real TEP in Y; X plays two
// nodes (two IPv6 addresses, each with a static mapping) and sends raw tunnel packets.
import { expect } from 'chai';
import { cliUnavailable, startTep, tepStats } from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable } from '../support/netns';
import { capture, inject } from '../support/traffic';
import { skipIf } from '../support/skip';

const X6B = '2001:db8:1::11';
const B4 = '198.51.100.201';

describe('e2e: hairpinning at the TEP', function () {
  this.timeout(60_000);
  let t: Topology;

  before(async function () {
    skipIf(this, netnsUnavailable() ?? cliUnavailable());
    t = await Topology.create();
    await t.ip(t.ns.x, '-6', 'addr', 'add', `${X6B}/64`, 'dev', 'eth-y', 'nodad');
    await startTep(t, ['--static', `${ADDR.static4}=${ADDR.x6}`, '--static', `${B4}=${X6B}`]);
  });

  after(async () => {
    await t?.destroy();
  });

  it('forwards node to node through the tunnel, never to IPv4, counted; a spoofed packet is not', async () => {
    const toIpv4 = await capture(t, t.ns.y, 'eth-z');
    const toX = await capture(t, t.ns.x, 'eth-y');
    await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: ADDR.static4, dst4: B4, count: 3 });
    await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.7', dst4: B4, count: 2 }); // spoofed
    const ipv4Side = await toIpv4.stop();
    const lines = await toX.stop();
    const hairpinned = lines.filter(
      (l) => l.startsWith(`IP6 ${ADDR.y6} > ${X6B}:`) && l.includes(`${ADDR.static4}.40000 > ${B4}.9`),
    );
    expect(hairpinned, lines.join('\n')).to.have.length(3);
    expect(ipv4Side.filter((l) => l.includes(B4))).to.deep.equal([]);
    const st = await tepStats(t);
    expect(st.drops.spoofed_source).to.equal(2);
    expect(st.events.hairpinned).to.equal(3);
    expect(st.bindings.find((x) => x.ipv4 === B4)?.forwarded.to_ipv6).to.equal(3);
  });
});
