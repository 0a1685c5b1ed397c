// The TEP on two forwarding queues (`dstm tep --queues 2`: a multi-queue TUN device and one raw socket per thread,
// each filtered to its share of the flows) with `dstm static` on X, real processes in real namespaces: traffic of
// many flows crosses both ways, both queues carry some of it, anti-spoofing holds on every queue, and
// `dstm tep stats` sums the queues.
import { expect } from 'chai';
import { OFFLOAD_MODES, cliUnavailable, startStaticNode, startTep, tepStats } from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable } from '../support/netns';
import { inject, ping, startEchoServer, tcpHello } from '../support/traffic';
import { skipIf } from '../support/skip';

const FLOWS = 24;

for (const [label, flags] of OFFLOAD_MODES)
  describe(`e2e: TEP with --queues 2 (${label})`, function () {
    this.timeout(90_000);
    let t: Topology;

    before(async function () {
      skipIf(this, netnsUnavailable() ?? cliUnavailable());
      t = await Topology.create();
      await startTep(t, ['--static', `${ADDR.static4}=${ADDR.x6}`, '--queues', '2', ...flags]);
      await startStaticNode(t, flags);
      await startEchoServer(t, t.ns.z);
    });

    after(async () => {
      await t?.destroy();
    });

    it('TCP connections and ping from X reach Z and come back, and both queues carry flows each way', async () => {
      // each connection has its own source port: a flow of its own for the TUN queues and for the raw sockets' hash
      for (let i = 0; i < FLOWS; i++)
        expect(await tcpHello(t, t.ns.x)).to.equal(`hello from Z, you are ${ADDR.static4}`);
      expect(await ping(t, t.ns.x, ADDR.z4, 3)).to.equal(3);
      const s = await tepStats(t);
      expect(s.queues).to.have.length(2);
      for (const q of s.queues) {
        expect(q.to_ipv4, JSON.stringify(s.queues)).to.be.above(0);
        expect(q.to_ipv6, JSON.stringify(s.queues)).to.be.above(0);
      }
    });

    it('stats are the sum over the queues: packets, bytes, and the binding’s own counters', async () => {
      // traffic of its own (not only the test before's), over several flows so that both queues carry some
      for (let i = 0; i < FLOWS / 3; i++)
        expect(await tcpHello(t, t.ns.x)).to.equal(`hello from Z, you are ${ADDR.static4}`);
      expect(await ping(t, t.ns.x, ADDR.z4, 2)).to.equal(2);
      const s = await tepStats(t);
      expect(s.forwarded.to_ipv4).to.be.above(0);
      expect(s.forwarded.to_ipv6).to.be.above(0);
      for (const k of ['to_ipv4', 'to_ipv6', 'bytes_to_ipv4', 'bytes_to_ipv6'] as const) {
        expect(s.forwarded[k]).to.equal(s.queues[0][k] + s.queues[1][k]);
      }
      expect(s.events.decapsulated).to.equal(s.forwarded.to_ipv4);
      const [b] = s.bindings;
      expect(b.ipv4).to.equal(ADDR.static4);
      // every packet of this test is the one binding's: its counters, summed over the queues, are the TEP's
      expect(b.forwarded.to_ipv4).to.equal(s.forwarded.to_ipv4);
      expect(b.forwarded.to_ipv6).to.equal(s.forwarded.to_ipv6);
      expect(s.top_talkers[0].forwarded).to.deep.equal(b.forwarded);
    });

    it('every queue drops and counts spoofed tunnel packets; the drops are summed', async () => {
      const before = await tepStats(t);
      // one flow per inner destination: spread over both raw sockets by their filters
      const dsts = Array.from({ length: 4 }, (_, i) => `192.0.2.${100 + i}`);
      for (const dst4 of dsts) {
        await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.7', dst4, count: 2 });
      }
      const after = await tepStats(t);
      expect(after.drops.spoofed_source - before.drops.spoofed_source).to.equal(2 * dsts.length);
      expect(after.forwarded.to_ipv4).to.equal(before.forwarded.to_ipv4);
      const grew = after.queues.map((q, i) => q.dropped - before.queues[i].dropped);
      expect(grew.reduce((a, b) => a + b)).to.equal(2 * dsts.length);
      expect(
        grew.every((n) => n > 0),
        `spoofed packets per queue: ${grew.join(', ')}`,
      ).to.equal(true);
    });
  });
