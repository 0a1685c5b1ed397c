// The TEP's policy for IPv6 fragments of tunnel packets (dstm-tep(8) FRAGMENTS): the kernel of Y reassembles them
// before the TEP reads them, within its memory and time bounds; what never completes is dropped and counted, and
// the TEP reports those counters and bounds. Real fragments from X, a real TEP in Y.
import { expect } from 'chai';
import { join } from 'node:path';
import { ROOT, cliUnavailable, startTep, tepStats, tsArgv } from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable } from '../support/netns';
import { until } from '../support/wait';
import { skipIf } from '../support/skip';

describe('e2e: IPv6 fragments of tunnel packets at the TEP', function () {
  this.timeout(60_000);
  let t: Topology;

  before(async function () {
    skipIf(this, netnsUnavailable() ?? cliUnavailable());
    t = await Topology.create();
    await t.sysctl(t.ns.y, 'net.ipv6.ip6frag_time', '1'); // the default is 60 s; the test cannot wait that long
    await startTep(t, ['--static', `${ADDR.static4}=${ADDR.x6}`]);
  });

  after(async () => {
    await t?.destroy();
  });

  const send = (which: 'all' | 'first', bytes = 2000): Promise<unknown> =>
    t.exec(
      t.ns.x,
      tsArgv(
        join(ROOT, 'test', 'support', 'inject-fragments.ts'),
        ...[ADDR.x6, ADDR.y6, ADDR.static4, ADDR.z4, which, String(bytes)],
      ),
    );

  it('forwards a fragmented tunnel packet once the kernel has reassembled it, and drops and counts one that never completes', async () => {
    const s0 = await tepStats(t);
    expect(s0.ipv6_reassembly).to.include({ timeout_seconds: 1 });
    expect(s0.ipv6_reassembly?.memory_limit_bytes).to.be.greaterThan(0);

    await send('all');
    // the TEP reads the reassembled packet on its own time: the counters are read once it did
    let s1 = s0;
    await until(
      'the TEP forwarded the packet',
      async () => (s1 = await tepStats(t)).forwarded.to_ipv4 > s0.forwarded.to_ipv4,
    );
    expect(s1.forwarded.to_ipv4 - s0.forwarded.to_ipv4).to.equal(1);
    expect(s1.forwarded.bytes_to_ipv4 - s0.forwarded.bytes_to_ipv4).to.equal(2000);
    expect(s1.ipv6_reassembly!.reassembled - s0.ipv6_reassembly!.reassembled).to.equal(1);

    await send('first');
    // the kernel drops the incomplete packet once ip6frag_time (1 s) is past
    let s2 = s1;
    await until(
      'the reassembly timed out',
      async () => (s2 = await tepStats(t)).ipv6_reassembly!.timeouts > s1.ipv6_reassembly!.timeouts,
    );
    expect(s2.forwarded.to_ipv4).to.equal(s1.forwarded.to_ipv4);
    expect(s2.ipv6_reassembly!.timeouts - s1.ipv6_reassembly!.timeouts).to.equal(1);
    expect(s2.ipv6_reassembly!.failed - s1.ipv6_reassembly!.failed).to.be.at.least(1);
  });

  it('drops and counts as rx_truncated a reassembled tunnel packet larger than its receive slot (2008 bytes of IPv4)', async () => {
    const s0 = await tepStats(t);
    await send('all', 3000);
    const s1 = await tepStats(t);
    expect(s1.ipv6_reassembly!.reassembled - s0.ipv6_reassembly!.reassembled).to.equal(1);
    expect(s1.drops.rx_truncated - s0.drops.rx_truncated).to.equal(1);
    expect(s1.drops.ipv6_malformed).to.equal(s0.drops.ipv6_malformed);
    expect(s1.forwarded.to_ipv4).to.equal(s0.forwarded.to_ipv4);
  });
});
