// Run by queues.test.ts inside a namespace it made (lo up, the addresses below on lo): real TUN queues and raw
// sockets. Prints one JSON line with what it saw. Modes:
//   filter: two raw IPIP sockets filtered as queues 0 and 1 of 2, and a third without a filter, receive packets of
//           many flows, fragments, non-TCP/UDP and runts: how many each got.
//   tep:    a TepQueues on 2 queues driven through bind, unbind, resync, a resync of RESYNC_BIG bindings (staged in
//           chunks) followed at once by an unbind and a bind, a packet-too-big and reconfigure, with tunnel packets
//           of many flows sent in and IPv4 of many flows routed out between the steps: the summed stats after each
//           (their binding lists cut to a few).
//   offload: a further queue of a multi-queue TUN device whose offloads differ from the first queue's, through
//           TunDevice and through a Tep on queue 1 of 2: what it got or the error, and the device's flags after;
//           the first queue's receive buffer (default batch) with and without offloads.
import { createSocket } from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { RawIpipSocket, TunDevice } from '../../src/dti/device';
import { createLogger } from '../../src/lib/log';
import { parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { TepQueues } from '../../src/tep/queues';
import { Tep, type ServerBinding, type TepOptions } from '../../src/tep/tep';
import { icmpv6, ipv4, ipv6 } from '../dti/build';
import { sleep } from '../support/wait';

export const TEP6 = '2001:db8:1::1';
export const NODE1 = '2001:db8:2::1';
export const NODE2 = '2001:db8:2::2';
/** A router between the TEP and the nodes (the source of the packet-too-big). */
export const ROUTER6 = '2001:db8:2::fe';
const FLOWS = 32;
/** Bindings of the big resync: several of the TEP's chunks (RESYNC_CHUNK, 4096), so it yields between them. */
export const RESYNC_BIG = 20_000;

/**
 * A UDP packet of flow `i` from `src4` to 192.0.2.x (or to 192.0.2.1 from source port 32768 + 2i, as Linux numbers a
 * client's connections: `evenPorts`), tunnelled from `node` to the TEP.
 */
function tunnelled(
  node: string,
  src4: string,
  i: number,
  opts: { proto?: number; frag?: boolean; evenPorts?: boolean } = {},
): number[] {
  const sport = opts.evenPorts ? 32768 + 2 * i : 20000 + i * 7;
  const udp = [sport >> 8, sport & 255, 0x1f, 0x90, 0, 12, 0, 0, 1, 2, 3, 4];
  const dst = `192.0.2.${opts.evenPorts ? 1 : 1 + (i % 5)}`;
  const inner = ipv4({ src: src4, dst, proto: opts.proto ?? 17, payload: udp });
  if (opts.frag) inner[6] |= 0x20; // MF: the first fragment
  return ipv6(node, TEP6, 4, inner);
}

function sendAll(sock: RawIpipSocket, pkts: number[][]): void {
  for (const p of pkts) {
    const buf = Uint8Array.from(p);
    if (sock.sendBatch(buf, Uint32Array.of(0), Uint32Array.of(buf.length), 1) !== 1) {
      throw new Error(`send failed: errno ${sock.lastSend().errno}`);
    }
  }
}

async function filter(): Promise<void> {
  const got = [0, 0, 0];
  const socks = [
    RawIpipSocket.open({ bind: parseIPv6(TEP6), queue: { index: 0, count: 2 } }),
    RawIpipSocket.open({ bind: parseIPv6(TEP6), queue: { index: 1, count: 2 } }),
    RawIpipSocket.open({ bind: parseIPv6(TEP6) }),
  ];
  socks.forEach((s, k) => s.onBatch((n) => (got[k] += n)));
  const pkts: number[][] = [];
  for (let i = 0; i < FLOWS; i++) pkts.push(tunnelled(NODE1, '10.0.0.1', i));
  for (let i = 0; i < 8; i++) pkts.push(tunnelled(NODE1, '10.0.0.1', i, { frag: true }));
  for (let i = 0; i < 8; i++) pkts.push(tunnelled(NODE1, '10.0.0.1', i, { proto: 47 }));
  for (let n = 0; n < 20; n++) pkts.push(ipv6(NODE1, TEP6, 4, Array(n).fill(0x45))); // runts, 0-19 bytes
  const evenPorts = Array.from({ length: 24 }, (_, i) => tunnelled(NODE1, '10.0.0.1', i, { evenPorts: true }));
  const sender = RawIpipSocket.open();
  sendAll(sender, pkts);
  await sleep(500);
  const before = [...got];
  sendAll(sender, evenPorts);
  await sleep(500);
  for (const s of [...socks, sender]) s.close();
  process.stdout.write(
    JSON.stringify({
      sent: pkts.length,
      queue0: before[0],
      queue1: before[1],
      unfiltered: before[2],
      evenPorts: { sent: evenPorts.length, queue0: got[0] - before[0], queue1: got[1] - before[1] },
    }) + '\n',
  );
}

const tepOptions = (device: string): TepOptions => ({
  address: parseIPv6(TEP6),
  ipv4: parseIPv4('192.0.2.254'),
  pools: [parsePrefix4('10.0.0.0/8')],
  prefixes: [parsePrefix6('2001:db8::/32')],
  statics: [],
  device,
  pathMtu: 1500,
  unreachable: false,
  log: createLogger({ level: 'error' }),
});

/** What `open()` gave: the TUN device's offloads, or the error's message; closed with `close` after. */
function attempt(open: () => TunDevice, close: () => void): { offload: boolean; flags: number } | { error: string } {
  try {
    const tun = open();
    close();
    return { offload: tun.offload, flags: tun.offloadFlags };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** The device's IFF_* flags, as the kernel has them (IFF_VNET_HDR: 0x4000). */
const tunFlags = (name: string): number => Number(readFileSync(`/sys/class/net/${name}/tun_flags`, 'utf8'));

async function offload(): Promise<void> {
  const out: Record<string, unknown> = {};
  for (const first of [false, true]) {
    const name = `qoff${Number(first)}`;
    const q0 = TunDevice.open({ name, multiQueue: true, offload: first });
    const other = !q0.offload;
    let tun: TunDevice | undefined;
    const tep = new Tep({ ...tepOptions(name), offload: other, queue: { index: 1, count: 2 } });
    out[name] = {
      first: q0.offload,
      rxBytes: q0.rx.buf.length,
      flagsBefore: tunFlags(name),
      tun: attempt(
        () => (tun = TunDevice.open({ name, multiQueue: true, offload: other })),
        () => tun?.close(),
      ),
      tep: attempt(
        () => tep.open(),
        () => tep.close(),
      ),
      flagsAfter: tunFlags(name),
    };
    q0.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

async function tep(): Promise<void> {
  const q = await TepQueues.open(tepOptions('qtest0'), 2);
  execFileSync('ip', ['link', 'set', 'qtest0', 'up']);
  execFileSync('ip', ['addr', 'add', '192.0.2.254/32', 'dev', 'qtest0']);
  execFileSync('ip', ['route', 'add', '10.0.0.0/8', 'dev', 'qtest0']);
  const sender = RawIpipSocket.open();
  const steps: Record<string, unknown> = {};
  const snap = async (name: string): Promise<void> => {
    const stats = await q.stats();
    steps[name] = { ...stats, bindings: stats.bindings.slice(0, 4) };
  };
  const step = async (name: string, node: string, src4: string, to4?: string): Promise<void> => {
    sendAll(
      sender,
      Array.from({ length: FLOWS }, (_, i) => tunnelled(node, src4, i)),
    );
    // IPv4 to a pool address, one flow per source socket: the kernel spreads them over the TUN queues
    if (to4) {
      for (let i = 0; i < FLOWS; i++) {
        const s = createSocket('udp4');
        await new Promise<void>((r) => s.bind(0, r));
        await new Promise<void>((r) => s.send(Buffer.from('x'), 9000 + i, to4, () => r()));
        s.close();
      }
    }
    await sleep(400);
    await snap(name);
  };
  const ends = Math.floor(Date.now() / 1000) + 3600;
  q.bind(parseIPv4('10.0.0.1'), parseIPv6(NODE1), ends);
  await step('bound', NODE1, '10.0.0.1', '10.0.0.1');
  q.unbind(parseIPv4('10.0.0.1'));
  await step('unbound', NODE1, '10.0.0.1', '10.0.0.1');
  await q.resync([{ ipv4: parseIPv4('10.0.0.2'), ipv6: parseIPv6(NODE2), starts: 0, ends }]);
  await step('resynced', NODE2, '10.0.0.2', '10.0.0.2');
  await step('resynced_old', NODE1, '10.0.0.1');
  // A big resync, then at once (as the feed does once the main thread's resync is done) an unbind of one of its
  // bindings and a bind that moves another: every queue must end with the newer state, even one still staging the
  // resync when they arrive. Both are staged last, so a resync committed after them would undo them.
  const filler = (i: number): ServerBinding => ({
    ipv4: parseIPv4('10.1.0.0') + i,
    ipv6: parseIPv6(`2001:db8:5::${(i + 1).toString(16)}`),
    starts: 0,
    ends,
  });
  const big = Array.from({ length: RESYNC_BIG - 2 }, (_, i) => filler(i));
  big.push({ ipv4: parseIPv4('10.0.0.1'), ipv6: parseIPv6(NODE1), starts: 0, ends });
  big.push({ ipv4: parseIPv4('10.0.0.2'), ipv6: parseIPv6('2001:db8:5::ffff:ffff'), starts: 0, ends });
  await q.resync(big);
  q.unbind(parseIPv4('10.0.0.1'));
  q.bind(parseIPv4('10.0.0.2'), parseIPv6(NODE2), ends);
  // until every queue has committed the resync (its table no longer the small one), so the traffic below tests
  // the state the queues end with rather than the one before the resync, still visible while it is staged
  while ((await q.stats()).queues.some((s) => s.binding_count < RESYNC_BIG - 2)) await sleep(50);
  await step('newer_bind', NODE2, '10.0.0.2', '10.0.0.2');
  await step('newer_unbind', NODE1, '10.0.0.1', '10.0.0.1');
  // a packet-too-big from a router about a tunnel packet to the node: queue 0 reads it, every queue lowers the path MTU
  const quoted = ipv6(TEP6, NODE2, 4, ipv4({ src: '192.0.2.1', dst: '10.0.0.2', df: true, proto: 17, payload: [] }));
  sendAll(sender, [icmpv6(ROUTER6, TEP6, 2, 0, 1300, quoted)]);
  await sleep(400);
  await snap('ptb');
  q.reconfigure({ prefixes: [parsePrefix6('2001:db8:3::/48')], pools: [parsePrefix4('10.0.0.0/8')], statics: [] });
  await step('reconfigured', NODE2, '10.0.0.2');
  sender.close();
  await q.close();
  process.stdout.write(JSON.stringify(steps) + '\n');
}

if (require.main === module) {
  const modes: Record<string, () => Promise<void>> = { filter, offload, tep };
  void modes[process.argv[2]]().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
