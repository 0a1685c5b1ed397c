// Data plane through the draft §4 topology, X (node) -> Y (TEP) -> Z (IPv4 host), in throwaway namespaces:
// TCP throughput (iperf3) and 64-byte UDP packets/s delivered, for
//   kernel: plain routed IPv6 X -> Y -> Z, no tunnel (the kernel's limit on this machine);
//   C:      bench/c/forwarder.c, an unbatched TUN + raw-socket forwarder, on X and on Y;
//   dstm:   `dstm static` on X and `dstm tep --static` on Y (the batched userspace data plane).
// Needs root, iperf3 and a C compiler; skips with a message otherwise.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, cliUnavailable, startStaticNode, startTep } from '../test/support/dstm-procs';
import { ADDR, Topology, netnsUnavailable, stopChild, waitForOutput } from '../test/support/netns';

const SECONDS = Number(process.env.DSTM_BENCH_SECONDS ?? 5);

interface Figures {
  tcpMbps: number;
  udpPps: number;
}

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function buildForwarder(): string {
  const out = join(ROOT, 'bench', 'out');
  mkdirSync(out, { recursive: true });
  const bin = join(out, 'forwarder');
  execFileSync('cc', ['-O2', '-o', bin, join(ROOT, 'bench', 'c', 'forwarder.c')]);
  return bin;
}

/** TCP and 64-byte UDP from X to `dst` (an iperf3 server in Z). */
async function measure(t: Topology, dst: string): Promise<Figures> {
  const server = t.spawn(t.ns.z, ['iperf3', '-s', '--forceflush', '-B', dst.includes(':') ? '::' : '0.0.0.0']);
  await waitForOutput(server, /Server listening/);
  try {
    const tcp = JSON.parse((await t.exec(t.ns.x, ['iperf3', '-c', dst, '-t', String(SECONDS), '-J'], 60_000)).stdout);
    const udp = JSON.parse(
      (await t.exec(t.ns.x, ['iperf3', '-c', dst, '-u', '-l', '64', '-b', '0', '-t', String(SECONDS), '-J'], 60_000)).stdout,
    );
    const sum = udp.end.sum_received ?? udp.end.sum;
    const delivered = (sum.packets ?? udp.end.sum.packets) - (sum.lost_packets ?? udp.end.sum.lost_packets ?? 0);
    return { tcpMbps: tcp.end.sum_received.bits_per_second / 1e6, udpPps: delivered / (sum.seconds ?? SECONDS) };
  } finally {
    await stopChild(server);
  }
}

async function kernel(): Promise<Figures> {
  const t = await Topology.create();
  try {
    await t.enableIpv6ToZ();
    return await measure(t, ADDR.z6);
  } finally {
    await t.destroy();
  }
}

async function cForwarder(bin: string): Promise<Figures> {
  const t = await Topology.create();
  try {
    const fx = t.spawn(t.ns.x, [bin, 'dti0', ADDR.x6, ADDR.y6]);
    const fy = t.spawn(t.ns.y, [bin, 'tep0', ADDR.y6, ADDR.x6]);
    await Promise.all([waitForOutput(fx, /ready/), waitForOutput(fy, /ready/)]);
    await t.ip(t.ns.x, 'addr', 'add', ADDR.static4, 'peer', ADDR.y4, 'dev', 'dti0');
    await t.ip(t.ns.x, 'link', 'set', 'dti0', 'mtu', '1460', 'up');
    await t.ip(t.ns.x, 'route', 'add', 'default', 'dev', 'dti0');
    await t.ip(t.ns.y, 'link', 'set', 'tep0', 'mtu', '1460', 'up');
    await t.ip(t.ns.y, 'route', 'add', ADDR.static4, 'dev', 'tep0');
    return await measure(t, ADDR.z4);
  } finally {
    await t.destroy();
  }
}

async function dstm(): Promise<Figures> {
  const t = await Topology.create();
  try {
    await startTep(t, ['--static', `${ADDR.static4}=${ADDR.x6}`]);
    await startStaticNode(t);
    return await measure(t, ADDR.z4);
  } finally {
    await t.destroy();
  }
}

export async function run(): Promise<void> {
  const why = netnsUnavailable() ?? cliUnavailable() ?? (have('iperf3') ? undefined : 'iperf3 is not installed');
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  const bin = buildForwarder();
  const rows: [string, Figures][] = [];
  const scenarios: [string, () => Promise<Figures>][] = [
    ['kernel IPv6 (routed, no tunnel)', kernel],
    ['C forwarder (unbatched)', () => cForwarder(bin)],
    ['dstm (batched)', dstm],
  ];
  for (const [name, fn] of scenarios) {
    const f = await fn();
    rows.push([name, f]);
    console.log(`${name.padEnd(34)} TCP ${f.tcpMbps.toFixed(0).padStart(6)} Mbit/s   UDP-64 ${f.udpPps.toFixed(0).padStart(8)} packets/s`);
  }
  const [k, c, d] = rows.map((r) => r[1]);
  const ratio = (a: number, b: number): string => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  console.log(`dstm / C forwarder: TCP ${ratio(d.tcpMbps, c.tcpMbps)}x, UDP-64 ${ratio(d.udpPps, c.udpPps)}x (target >= 1.0x)`);
  console.log(`dstm / kernel IPv6: TCP ${ratio(d.tcpMbps, k.tcpMbps)}x, UDP-64 ${ratio(d.udpPps, k.udpPps)}x`);
}
