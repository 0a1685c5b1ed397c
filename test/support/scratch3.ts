import { Topology, ADDR, output } from './netns';
import { startTep, startStaticNode, tepStats } from './dstm-procs';
async function main() {
  const t = await Topology.create();
  try {
    const tep = await startTep(t, ['--config', '/tmp/tepdbg.json', '--static', `${ADDR.static4}=${ADDR.x6}`]);
    const n = await startStaticNode(t).catch((e) => { throw e; });
    console.log((await t.exec(t.ns.x, ['ping', '-c', '3', '-i', '0.2', ADDR.z4]).catch(e=>({stdout:e.message}))).stdout);
    console.log(JSON.stringify((await tepStats(t)).forwarded));
    console.log(output(n)); console.log(output(tep));
  } finally { await t.destroy(); }
}
main().catch((e) => { console.error(e); process.exit(1); });
