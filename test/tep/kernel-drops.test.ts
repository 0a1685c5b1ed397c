// What the kernel drops in front of the TEP, for real (root only): a TEP in a namespace the test makes, its event
// loop blocked while a child floods it, so that the TUN device's transmit queue and the raw socket's receive queue
// overflow; both show among the drop reasons of the control socket, `dstm tep stats` and the metrics, and every
// packet sent is either forwarded or counted. Also: the TUN device gets tep.tx_queue_len, the raw sockets
// tep.socket_buffer.
import { expect } from 'chai';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_TX_QUEUE_LEN } from '../../src/config/tep-schema';
import type { TepStats } from '../../src/tep/tep';
import { tsArgv } from '../support/dstm-procs';
import { netnsUnavailable } from '../support/netns';
import { skipIf } from '../support/skip';
import {
  HOST4,
  NODE6,
  SMALL_BUFFER,
  TEP6,
  TINY_QUEUE,
  TUNNEL_FLOOD,
  TUNNEL_PACKET,
  UDP_FLOOD,
} from './kernel-drops-peer';

const NS = `dstm-kd-${process.pid}`;

interface PeerResult {
  defaultQueue: number;
  queue: number;
  sendErrors: number;
  before: TepStats;
  after: TepStats;
  text: string;
  metrics: string;
}

describe('tep: drops in front of the TEP, counted (real TUN device and raw socket)', function () {
  this.timeout(120_000);
  let dir: string;
  let r: PeerResult;

  before(async function () {
    skipIf(this, netnsUnavailable());
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    for (const a of [TEP6, NODE6]) execFileSync('ip', ['-n', NS, 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad']);
    execFileSync('ip', ['-n', NS, 'addr', 'add', `${HOST4}/32`, 'dev', 'lo']);
    dir = mkdtempSync(join(tmpdir(), 'dstm-kd-'));
    const script = join(__dirname, 'kernel-drops-peer.ts');
    const argv = ['netns', 'exec', NS, ...tsArgv(script, 'tep', dir)];
    const { stdout } = await promisify(execFile)('ip', argv, { timeout: 110_000, maxBuffer: 16 << 20 });
    r = JSON.parse(stdout.trim().split('\n').pop()!) as PeerResult;
  });

  after(() => {
    if (netnsUnavailable()) return;
    execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('gives the TUN device the configured transmit queue length, by default DEFAULT_TX_QUEUE_LEN', () => {
    expect(r.defaultQueue).to.equal(DEFAULT_TX_QUEUE_LEN);
    expect(r.queue).to.equal(TINY_QUEUE);
  });

  it('holds no more tunnel packets than tep.socket_buffer while the TEP is off the CPU', () => {
    // the kernel grants twice the size asked and charges each packet at least its length (the default, 4 MiB,
    // would hold four times as many)
    const held = r.after.forwarded.to_ipv4 - r.before.forwarded.to_ipv4;
    expect(held).to.be.above(0);
    expect(held).to.be.at.most(Math.floor((2 * SMALL_BUFFER) / TUNNEL_PACKET) + 1);
  });

  it('counts what the full TUN transmit queue dropped as tun_tx_dropped: every IPv4 packet forwarded or counted', () => {
    expect(r.before.drops.tun_tx_dropped).to.equal(0);
    const dropped = r.after.drops.tun_tx_dropped;
    expect(dropped).to.be.at.least(UDP_FLOOD - r.sendErrors - TINY_QUEUE);
    expect(r.after.forwarded.to_ipv6 - r.before.forwarded.to_ipv6).to.equal(UDP_FLOOD - r.sendErrors - dropped);
  });

  it('counts what the full raw socket receive queue dropped as kernel_rx_overflow: every tunnel packet decapsulated or counted', () => {
    expect(r.before.drops.kernel_rx_overflow).to.equal(0);
    const dropped = r.after.drops.kernel_rx_overflow;
    expect(dropped).to.be.above(0);
    expect(r.after.forwarded.to_ipv4 - r.before.forwarded.to_ipv4).to.equal(TUNNEL_FLOOD - dropped);
  });

  it('shows both in `dstm tep stats`, its queue totals and the metrics', () => {
    const { tun_tx_dropped: tun, kernel_rx_overflow: raw } = r.after.drops;
    expect(r.text).to.match(new RegExp(`^ {2}tun_tx_dropped +${tun}$`, 'm'));
    expect(r.text).to.match(new RegExp(`^ {2}kernel_rx_overflow +${raw}$`, 'm'));
    expect(r.after.queues[0].dropped).to.equal(Object.values(r.after.drops).reduce((a, b) => a + b));
    expect(r.metrics).to.include(`dstm_tep_dropped_total{reason="tun_tx_dropped"} ${tun}`);
    expect(r.metrics).to.include(`dstm_tep_dropped_total{reason="kernel_rx_overflow"} ${raw}`);
  });
});
