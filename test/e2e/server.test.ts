// DSTM end to end (draft §4.1): `dstm server` on S, `dstm tep --server` on Y, `dstm request --hold --device` on X,
// all real processes in real namespaces. X leases an address, an unmodified IPv4 client on X reaches Z through
// the TEP, only IPv6 crosses X–Y, and after release or expiry the TEP stops forwarding for that address.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import {
  SERVER,
  OFFLOAD_MODES,
  cliUnavailable,
  dstmArgv,
  nodeControlPath,
  startNode,
  startServer,
  startTep,
  tepControlPath,
  tepStats,
  type TepStatsJson,
} from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable, output, stopChild, waitForOutput } from '../support/netns';
import { until } from '../support/wait';
import { capture, inject, ping, startEchoServer, tcpHello } from '../support/traffic';
import { skipIf } from '../support/skip';

interface LeaseLine {
  event: string;
  ipv4: string;
  ipv6: string;
  tep6: string;
  tep4: string;
  starts: number;
  ends: number;
}

async function nextLease(node: ChildProcess, event = 'lease'): Promise<LeaseLine> {
  const line = await waitForOutput(node, new RegExp(`"event":"${event}"`), 20_000);
  return JSON.parse(line) as LeaseLine;
}

// Everything holds with TUN offloads (the default) and with --no-offload on both the node and the TEP.
for (const [label, flags] of OFFLOAD_MODES)
  describe(`e2e: DSTM server, TEP and node (dstm server + dstm tep --server + dstm request --hold --device), ${label}`, function () {
    this.timeout(90_000);
    let t: Topology;
    let tep: ChildProcess;

    let server: ChildProcess;

    before(async function () {
      skipIf(this, netnsUnavailable() ?? cliUnavailable());
      t = await Topology.create();
      server = await startServer(t, ['--lease', '60', '--min-lease', '1']);
      tep = await startTep(t, ['--server', SERVER, ...flags]);
      await waitForOutput(tep, /bindings synchronised/);
      await startEchoServer(t, t.ns.z);
    });

    after(async () => {
      await t?.destroy();
    });

    describe('with a held lease', () => {
      let node: ChildProcess;
      let lease: LeaseLine;

      before(async () => {
        node = startNode(t, flags);
        // the DTI's log line may come before or after the lease line: both waited for from the start
        [lease] = await Promise.all([nextLease(node), waitForOutput(node, /dti up/)]);
        // the TEP hears of the binding through the feed
        await until('the TEP has the binding', async () =>
          (await tepStats(t)).bindings.some((b) => b.ipv4 === lease.ipv4),
        );
      });

      it('the lease names the TEP, and the TEP holds the binding from the server (dstm tep stats --json in Y)', async () => {
        expect(lease.tep6).to.equal(ADDR.y6);
        expect(lease.tep4).to.equal(ADDR.y4);
        expect(lease.ipv6).to.equal(ADDR.x6);
        const { stdout } = await t.exec(t.ns.y, dstmArgv('tep', 'stats', '--json', '--control', tepControlPath(t)));
        const b = (JSON.parse(stdout) as TepStatsJson).bindings.find((x) => x.ipv4 === lease.ipv4);
        expect(b).to.include({
          ipv6: ADDR.x6,
          tep6: ADDR.y6,
          tep4: ADDR.y4,
          ends: lease.ends,
          source: 'server',
        });
        // The reply's starts is this grant; the feed's is when the node first got the address (dstm-rpc(7)), which
        // an earlier test of this file may have done.
        expect(b!.starts).to.be.at.most(lease.starts);
      });

      it('dstm status on X shows the lease on the DTI', async () => {
        const { stdout } = await t.exec(t.ns.x, dstmArgv('status', '--json', '--control', nodeControlPath(t)));
        const st = JSON.parse(stdout);
        expect(st.state).to.equal('leased');
        expect(st.dti).to.include({
          device: 'dti0',
          mtu: 1460,
          address: lease.ipv4,
          peer: ADDR.y4,
          tep: ADDR.y6,
          source: ADDR.x6,
        });
      });

      it(`the node's DTI and the TEP run the TUN path asked for (${label})`, async () => {
        const { stdout } = await t.exec(t.ns.x, dstmArgv('status', '--json', '--control', nodeControlPath(t)));
        const node = JSON.parse(stdout).dti.events.offload_active as number;
        expect([node, (await tepStats(t)).events.offload_active]).to.deep.equal(flags.length ? [0, 0] : [1, 1]);
      });

      it('an IPv4 TCP client on X reaches Z, which sees the leased address as the source', async () => {
        expect(await tcpHello(t, t.ns.x)).to.equal(`hello from Z, you are ${lease.ipv4}`);
      });

      it('ping from X to Z gets its replies; only IPv6 crosses the X–Y link', async () => {
        const cap = await capture(t, t.ns.x, 'eth-y');
        expect(await ping(t, t.ns.x, ADDR.z4, 3)).to.equal(3);
        const lines = await cap.stop();
        expect(
          lines.filter((l) => !l.startsWith('IP6 ')),
          lines.join('\n'),
        ).to.deep.equal([]);
        expect(lines.filter((l) => l.includes(`IP ${lease.ipv4} > ${ADDR.z4}: ICMP echo request`))).to.have.length(3);
        expect(lines.filter((l) => l.includes(`IP ${ADDR.z4} > ${lease.ipv4}: ICMP echo reply`))).to.have.length(3);
      });

      it('Y drops and counts a node claiming an address that is not its own', async () => {
        const before = (await tepStats(t)).drops.spoofed_source;
        await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.9', dst4: ADDR.z4 });
        expect((await tepStats(t)).drops.spoofed_source - before).to.equal(5);
      });

      it('after release, X sends no IPv4, the TEP forgets the binding and drops what still comes for or from it', async () => {
        expect(await stopChild(node)).to.equal(0);
        expect(output(node)).to.match(/"event":"released"/);
        await until('the TEP dropped the binding', async () => (await tepStats(t)).bindings.length === 0);
        const before = await tepStats(t);
        expect(await ping(t, t.ns.x, ADDR.z4, 2)).to.equal(0);
        await ping(t, t.ns.z, lease.ipv4, 2);
        await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: lease.ipv4, dst4: ADDR.z4 });
        const after = await tepStats(t);
        expect(after.forwarded.to_ipv4).to.equal(before.forwarded.to_ipv4);
        expect(after.drops.no_binding - before.drops.no_binding).to.equal(2);
        expect(after.drops.unbound_source - before.drops.unbound_source).to.equal(5);
      });
    });

    // Once (it kills the server): a lease running out is the node's and the TEP's timing, not their TUN path's.
    if (label === 'offloads')
      describe('when the server is gone', () => {
        it('the node drops the address when its lease runs out unrenewed (C.3 rule 2), the TEP forgets it on its own', async () => {
          const node = startNode(t, ['--lease', '3', ...flags]);
          try {
            const lease = await nextLease(node);
            expect(await ping(t, t.ns.x, ADDR.z4, 1)).to.equal(1);
            server.kill('SIGKILL'); // no renewal can succeed now
            // the TEP cannot hear from the server either: the binding ends there on its own, at its end time, not
            // when the feed dies; watched from the kill on, beside the node's expiry
            const forgotten = until(
              'the TEP expired the binding',
              async () => !(await tepStats(t)).bindings.some((b) => b.ipv4 === lease.ipv4),
            ).then(() => Date.now());
            forgotten.catch(() => {}); // awaited below: no unhandled rejection meanwhile
            await nextLease(node, 'expired');
            const { stdout } = await t.ip(t.ns.x, 'addr', 'show', 'dev', 'dti0');
            expect(stdout).to.not.include(lease.ipv4);
            expect(await ping(t, t.ns.x, ADDR.z4, 2)).to.equal(0);
            expect(await forgotten).to.be.at.least(lease.ends * 1000 - 300);
          } finally {
            await stopChild(node);
          }
        });
      });

    // Once: its packets are injected on the tunnel side and refused before the TEP's TUN device, the one thing the
    // mode changes.
    if (label === 'offloads')
      it('a binding that ends on the server stops forwarding at the TEP without a restart', async () => {
        // a one-shot lease of 4 s, never renewed: the TEP must stop at its end (the TEP learns it from the feed's
        // long-poll at once, and its stats are read from its control socket in this process)
        const { stdout } = await t.exec(t.ns.x, dstmArgv('request', '--server', SERVER, '--lease', '4', '--json'));
        const lease = JSON.parse(stdout) as LeaseLine;
        await until('the TEP has the binding', async () =>
          (await tepStats(t)).bindings.some((b) => b.ipv4 === lease.ipv4),
        );
        await until(
          'the binding ended at the TEP',
          async () => !(await tepStats(t)).bindings.some((b) => b.ipv4 === lease.ipv4),
          20_000,
        );
        expect(Date.now()).to.be.at.least(lease.ends * 1000 - 300);
        const before = (await tepStats(t)).drops.unbound_source;
        await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: lease.ipv4, dst4: ADDR.z4 });
        expect((await tepStats(t)).drops.unbound_source - before).to.equal(5);
      });

    it('on demand: the DTI comes up without an address, the first IPv4 packet requests the lease, traffic flows', async () => {
      const node = startNode(t, ['--on-demand', ...flags]);
      try {
        // routed, not merely created: the TUN device exists a moment before its routes do
        await until('the DTI is routed', async () =>
          (await t.ip(t.ns.x, '-4', 'route', 'show')).stdout.includes('dev dti0'),
        );
        expect(output(node)).to.not.match(/"event":"lease"/);
        // the first echo request waits in the queue while the lease is requested, then goes out
        const replies = await ping(t, t.ns.x, ADDR.z4, 10);
        expect(output(node)).to.match(/"event":"lease"/);
        expect(replies).to.be.at.least(6);
        expect(await tcpHello(t, t.ns.x)).to.match(/^hello from Z, you are 198\.51\.100\./);
      } finally {
        await stopChild(node);
      }
    });
  });
