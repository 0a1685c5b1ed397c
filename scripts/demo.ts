// npm run demo: DSTM working, end to end, in throwaway network namespaces (needs root). Builds the draft §4
// topology, runs the real dstm server, TEP and node, sends ordinary IPv4 traffic from the IPv6-only node and says
// in plain words what happens at each step; then the same with Annex A static tunnels; then tears it all down.
import {
  cliUnavailable,
  SERVER,
  startNode,
  startServer,
  startStaticNode,
  startTep,
  tepStats,
} from '../test/support/dstm-procs';
import { ADDR, Topology, netnsUnavailable, stopChild, toolsMissing, waitForOutput } from '../test/support/netns';
import { capture, inject, ping, startEchoServer, tcpHello } from '../test/support/traffic';

const say = (text: string): void => console.log(`\n== ${text}`);
const detail = (text: string): void => console.log(`   ${text}`);

async function ipv6Only(t: Topology, run: () => Promise<unknown>): Promise<void> {
  const cap = await capture(t, t.ns.x, 'eth-y');
  await run();
  const lines = await cap.stop();
  const v4 = lines.filter((l) => !l.startsWith('IP6 ')).length;
  detail(
    `on the X–Y link: ${lines.length} packets captured, ${lines.length - v4} IPv6, ${v4} plain IPv4. For example:`,
  );
  for (const l of lines.slice(0, 2)) detail(`  ${l}`);
}

async function withServer(t: Topology): Promise<void> {
  say(`S: the DSTM server leases addresses from ${ADDR.pool4} and names Y (${ADDR.y6}, ${ADDR.y4}) as the TEP`);
  await startServer(t, ['--lease', '60']);
  say("Y: the TEP follows the server's binding feed; it forwards only for addresses the server has bound");
  const tep = await startTep(t, ['--server', SERVER]);
  await waitForOutput(tep, /bindings synchronised/);
  await startEchoServer(t, t.ns.z);
  detail(`Z (${ADDR.z4}, IPv4 only) runs a TCP server that tells each client the address it sees`);

  say(`X: IPv6 only (${ADDR.x6}); \`dstm request --hold --device dti0\` asks S for a temporary IPv4 address`);
  const node = startNode(t);
  const lease = JSON.parse(await waitForOutput(node, /"event":"lease"/)) as {
    ipv4: string;
    tep6: string;
    ends: number;
  };
  detail(`lease: ${lease.ipv4} until ${new Date(lease.ends * 1000).toISOString()}, tunnel to ${lease.tep6}`);
  detail('the DTI dti0 now has that address, and IPv4 routes point into it');
  await new Promise((r) => setTimeout(r, 300));

  say('An unmodified IPv4 TCP client on X (bash /dev/tcp) connects to Z');
  await ipv6Only(t, async () => detail(`Z answers: "${await tcpHello(t, t.ns.x)}"`));
  detail('Z saw the leased address; its reply came back through Y, which wrapped it in IPv6 for X');
  detail(`ping X -> Z: ${await ping(t, t.ns.x, ADDR.z4, 3)} of 3 replies`);

  say('Anti-spoofing: X sends tunnelled packets claiming another IPv4 address');
  await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.9', dst4: ADDR.z4 });
  const s = await tepStats(t);
  detail(
    `Y dropped them: spoofed_source = ${s.drops.spoofed_source}; forwarded so far ${s.forwarded.to_ipv4} packets to IPv4, ${s.forwarded.to_ipv6} back`,
  );

  say('X stops: the lease is released, the address and routes leave the DTI');
  await stopChild(node);
  await new Promise((r) => setTimeout(r, 500));
  detail(`ping X -> Z now: ${await ping(t, t.ns.x, ADDR.z4, 2)} replies (X has no IPv4 any more)`);
  await ping(t, t.ns.z, lease.ipv4, 2);
  const after = await tepStats(t);
  detail(
    `Z -> ${lease.ipv4}: dropped at Y as no_binding (${after.drops.no_binding}); Y holds ${after.bindings.length} bindings`,
  );
}

async function withoutServer(t: Topology): Promise<void> {
  say(`Annex A, no server: \`dstm tep --static ${ADDR.static4}=${ADDR.x6}\` on Y, \`dstm static\` on X`);
  await startTep(t, ['--static', `${ADDR.static4}=${ADDR.x6}`]);
  await startStaticNode(t);
  await startEchoServer(t, t.ns.z);
  await ipv6Only(t, async () => detail(`Z answers: "${await tcpHello(t, t.ns.x)}"`));
  detail(`ping X -> Z: ${await ping(t, t.ns.x, ADDR.z4, 3)} of 3 replies`);
}

async function main(): Promise<void> {
  const why = netnsUnavailable() ?? cliUnavailable() ?? toolsMissing(['ping', 'tcpdump']);
  if (why) {
    console.error(`npm run demo: ${why}`);
    process.exit(1);
  }
  let current: Topology | undefined;
  process.once('SIGINT', () => {
    void current?.destroy().finally(() => process.exit(130));
  });
  for (const part of [withServer, withoutServer]) {
    const t = await Topology.create();
    current = t;
    try {
      if (part === withServer) detail(`namespaces ${Object.values(t.ns).join(', ')} created`);
      await part(t);
    } finally {
      await t.destroy();
    }
  }
  say('Done: every namespace and process is gone.');
}

main().catch((err: unknown) => {
  console.error(`\ndemo failed: ${(err as Error).message}`);
  process.exit(1);
});
