// Summing the statistics of several forwarding queues (queues.ts mergeStats), without devices.
import { expect } from 'chai';
import { mergeStats } from '../../src/tep/queues';
import type { StatsBinding, TepStats, TrafficJson } from '../../src/tep/tep';

const traffic = (bytes: number): TrafficJson => ({ to_ipv4: 1, to_ipv6: 1, bytes_to_ipv4: bytes, bytes_to_ipv6: 0 });

const binding = (ipv4: string, bytes: number): StatsBinding => ({
  ipv4,
  ipv6: '2001:db8::1',
  tep4: '192.0.2.1',
  tep6: '2001:db8:1::1',
  starts: null,
  ends: null,
  source: 'server',
  forwarded: traffic(bytes),
});

/** One queue's stats with 20000 bindings, none of the top talkers among the first listed (`bindings` empty here). */
const queue = (top: StatsBinding[]): TepStats => ({
  forwarded: traffic(0),
  drops: {},
  events: { offload_active: 1, tun_uring: 1 },
  binding_count: 20_000,
  bindings: [],
  top_talkers: top,
  path_mtu_lowered: 0,
  queues: [{ ...traffic(0), dropped: 0, path_mtu_lowered: 0, binding_count: 20_000 }],
});

describe('tep/queues mergeStats', () => {
  it("ranks every queue's top talkers by what all queues forwarded for them, listed or not", () => {
    // A tops queue 0 (900 bytes) and has 800 more on queue 1, where B tops (1000; 50 more on queue 0).
    const talkers = ['10.0.0.1', '10.0.0.2'];
    const merged = mergeStats([queue([binding('10.0.0.1', 900)]), queue([binding('10.0.0.2', 1000)])], talkers, [
      [traffic(900), traffic(50)],
      [traffic(800), traffic(1000)],
    ]);
    expect(merged.top_talkers.map((b) => [b.ipv4, b.forwarded.bytes_to_ipv4, b.forwarded.to_ipv4])).to.deep.equal([
      ['10.0.0.1', 1700, 2],
      ['10.0.0.2', 1050, 2],
    ]);
    expect(merged.queues).to.have.length(2);
  });
});
