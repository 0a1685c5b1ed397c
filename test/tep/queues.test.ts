// More than one forwarding queue, with real TUN queues and raw sockets in a namespace the test makes (root only):
// the raw sockets' queue filters split the tunnel packets so each is read exactly once, and a TEP on 2 queues
// applies every control-plane change on both queues and sums their counters.
import { expect } from 'chai';
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TepStats } from '../../src/tep/tep';
import { tsArgv } from '../support/dstm-procs';
import { netnsUnavailable } from '../support/netns';
import { skipIf } from '../support/skip';
import { NODE1, NODE2, RESYNC_BIG, ROUTER6, TEP6 } from './queues-peer';

const execFileP = promisify(execFile);
const NS = `dstm-q-${process.pid}`;

/** Runs queues-peer.ts MODE in the namespace; its JSON line. */
async function peer<T>(mode: string): Promise<T> {
  const script = join(__dirname, 'queues-peer.ts');
  const { stdout } = await execFileP('ip', ['netns', 'exec', NS, ...tsArgv(script, mode)], { timeout: 60_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as T;
}

describe('tep on several queues (real TUN queues and raw sockets)', function () {
  this.timeout(90_000);

  before(function () {
    skipIf(this, netnsUnavailable());
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    for (const a of [TEP6, NODE1, NODE2, ROUTER6])
      execFileSync('ip', ['-n', NS, 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad']);
  });

  after(() => {
    if (!netnsUnavailable()) execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  });

  it('the raw sockets of queues 0 and 1 of 2 read every tunnel packet exactly once between them (flows, fragments, other protocols, runts), and a client’s connections with even source ports spread over both', async () => {
    type Counts = { sent: number; queue0: number; queue1: number };
    const r = await peer<Counts & { unfiltered: number; evenPorts: Counts }>('filter');
    expect(r.unfiltered).to.equal(r.sent);
    expect(r.queue0 + r.queue1).to.equal(r.sent);
    expect(r.queue0).to.be.above(0);
    expect(r.queue1).to.be.above(0);
    // one client's connections to one server, their source ports even and in steps of two (Linux's choice): spread
    const e = r.evenPorts;
    expect(e.queue0 + e.queue1).to.equal(e.sent);
    expect(e.queue0, JSON.stringify(e)).to.be.above(0);
    expect(e.queue1, JSON.stringify(e)).to.be.above(0);
  });

  it("a further queue never has other offloads than the device's first queue: it gets the first's or fails, and the device keeps its flags", async () => {
    type Attempt = { offload: boolean; flags: number } | { error: string };
    type Device = {
      first: boolean;
      rxBytes: number;
      flagsBefore: number;
      flagsAfter: number;
      tun: Attempt;
      tep: Attempt;
    };
    const r = await peer<Record<'qoff0' | 'qoff1', Device>>('offload');
    // a plain first queue: asking for offloads gets none (no TUNSETOFFLOAD on the plain device), and a Tep queue
    // that asked for them (told the first has them) refuses to start
    expect(r.qoff0.first).to.equal(false);
    expect(r.qoff0.tun).to.deep.equal({ offload: false, flags: 0 });
    expect(r.qoff0.tep).to.deep.equal({
      error: "TUN device qoff0: queue 1 got offloads off, asked for on (queue 0's)",
    });
    // a first queue with offloads (the kernel here has them): a queue without them would read virtio-net headers
    // as packets, so opening it fails with the reason, through TunDevice and through a Tep alike
    expect(r.qoff1.first, 'the kernel took TUNSETOFFLOAD on the first queue').to.equal(true);
    for (const a of [r.qoff1.tun, r.qoff1.tep])
      expect(a).to.deep.equal({
        error:
          "TUN device qoff1 has offloads (virtio-net headers) on, as its first queue set them, but this queue has them off; every queue must have the first one's",
      });
    const VNET_HDR = 0x4000;
    expect(r.qoff0.flagsBefore & VNET_HDR).to.equal(0);
    expect(r.qoff1.flagsBefore & VNET_HDR).to.equal(VNET_HDR);
    for (const d of [r.qoff0, r.qoff1]) expect(d.flagsAfter).to.equal(d.flagsBefore);
    // what offloads cost each queue's TUN receive buffer (default batch), as the man pages of its users say
    for (const page of ['dstm-tep.8', 'dstm-request.8', 'dstm-static.8']) {
      const text = readFileSync(join(__dirname, '..', '..', 'man', page), 'utf8').replace(/\n/g, ' ');
      const said = /(\d+) bytes \(([\d.]+) MiB\) more (?:per queue )?than without at the default batch/.exec(text);
      const more = r.qoff1.rxBytes - r.qoff0.rxBytes;
      expect(said?.slice(1).map(Number), page).to.deep.equal([more, Number((more / 2 ** 20).toFixed(1))]);
    }
  });

  it('bind, unbind, resync, path MTUs and reconfigure reach both queues, which forward and drop each their share, summed', async () => {
    const s = await peer<Record<string, TepStats>>('tep');
    const FLOWS = 32;
    const both = (st: TepStats, key: 'to_ipv4' | 'to_ipv6' | 'dropped'): void => {
      expect(
        st.queues.map((q) => q[key]).every((n) => n > 0),
        `${key} per queue: ${JSON.stringify(st.queues)}`,
      ).to.equal(true);
      expect(st.queues.reduce((a, q) => a + q[key], 0)).to.equal(
        key === 'dropped' ? Object.values(st.drops).reduce((a, b) => a + b) : st.forwarded[key],
      );
    };
    // bound: every tunnelled packet decapsulated, every routed one encapsulated, on both queues
    expect(s.bound.forwarded.to_ipv4).to.equal(FLOWS);
    expect(s.bound.forwarded.to_ipv6).to.equal(FLOWS);
    both(s.bound, 'to_ipv4');
    both(s.bound, 'to_ipv6');
    expect(s.bound.bindings[0].forwarded.to_ipv4).to.equal(FLOWS);
    // unbound: both queues refuse the node's packets and have no binding for its address
    expect(s.unbound.forwarded.to_ipv4).to.equal(FLOWS);
    expect(s.unbound.drops.unbound_source).to.equal(FLOWS);
    expect(s.unbound.drops.no_binding).to.equal(FLOWS);
    both(s.unbound, 'dropped');
    // resync: the new binding forwards on both queues, the old node stays refused
    expect(s.resynced.forwarded.to_ipv4 - s.unbound.forwarded.to_ipv4).to.equal(FLOWS);
    expect(s.resynced.forwarded.to_ipv6 - s.unbound.forwarded.to_ipv6).to.equal(FLOWS);
    expect(s.resynced.binding_count).to.equal(1);
    expect(s.resynced_old.drops.unbound_source - s.resynced.drops.unbound_source).to.equal(FLOWS);
    // the newer bind and unbind win over the big resync before them, on every queue: the moved address forwards
    // both ways on both, the unbound node is refused and its address unrouted on both
    const delta = (name: string, prev: string, i: number, key: 'to_ipv4' | 'to_ipv6'): number =>
      s[name].queues[i][key] - s[prev].queues[i][key];
    for (const i of [0, 1]) {
      expect(delta('newer_bind', 'resynced_old', i, 'to_ipv4'), `queue ${i} from the moved address`).to.be.above(0);
      expect(delta('newer_bind', 'resynced_old', i, 'to_ipv6'), `queue ${i} to the moved address`).to.be.above(0);
      expect(delta('newer_unbind', 'newer_bind', i, 'to_ipv4'), `queue ${i} from the unbound node`).to.equal(0);
      expect(delta('newer_unbind', 'newer_bind', i, 'to_ipv6'), `queue ${i} to the unbound address`).to.equal(0);
    }
    expect(s.newer_bind.forwarded.to_ipv4 - s.resynced_old.forwarded.to_ipv4).to.equal(FLOWS);
    expect(s.newer_bind.forwarded.to_ipv6 - s.resynced_old.forwarded.to_ipv6).to.equal(FLOWS);
    for (const reason of ['unbound_source', 'no_binding'])
      expect(s.newer_bind.drops[reason], reason).to.equal(s.resynced_old.drops[reason]);
    expect(s.newer_unbind.drops.unbound_source - s.newer_bind.drops.unbound_source).to.equal(FLOWS);
    expect(s.newer_unbind.drops.no_binding - s.newer_bind.drops.no_binding).to.equal(FLOWS);
    both(s.newer_unbind, 'dropped');
    expect(s.newer_unbind.queues.map((q) => q.binding_count)).to.deep.equal([RESYNC_BIG - 1, RESYNC_BIG - 1]);
    // a path MTU learnt by queue 0 (the only one reading ICMPv6 errors) reaches queue 1
    expect(s.ptb.queues.map((q) => q.path_mtu_lowered)).to.deep.equal([1, 1]);
    // reconfigure: the domain's new prefixes apply on both queues
    expect(s.reconfigured.drops.outside_prefix).to.equal(FLOWS);
    expect(s.reconfigured.forwarded.to_ipv4).to.equal(s.ptb.forwarded.to_ipv4);
    const grew = s.reconfigured.queues.map((q, i) => q.dropped - s.ptb.queues[i].dropped);
    expect(
      grew.every((n) => n > 0),
      `outside_prefix per queue: ${grew.join(', ')}`,
    ).to.equal(true);
  });
});
