import { Topology, ADDR, output, waitForOutput, stopChild } from './netns';
import { dstmArgv, startTep, tepStats } from './dstm-procs';
async function main() {
  const t = await Topology.create();
  try {
    const srv = t.spawn(t.ns.s, dstmArgv('server', '--listen', `[${ADDR.s6}]:3786`, '--pool', ADDR.pool4, '--tep', `${ADDR.y6},${ADDR.y4}`, '--state-dir', `/tmp/${t.ns.s}`, '--lease', '30'));
    await waitForOutput(srv, /listen|ready|serving/i).catch(e => { console.log(output(srv)); throw e; });
    const tep = await startTep(t, ['--server', `[${ADDR.s6}]:3786`]);
    await waitForOutput(tep, /synchronised/).catch(e => { console.log(output(tep)); throw e; });
    const node = t.spawn(t.ns.x, dstmArgv('request', '--server', `[${ADDR.s6}]:3786`, '--hold', '--dti', 'dti0', '--json'));
    await waitForOutput(node, /dti up/).catch(e => { console.log(output(node)); throw e; });
    console.log((await t.exec(t.ns.x, ['ping', '-c', '3', '-i', '0.2', ADDR.z4]).catch(e=>({stdout:e.message}))).stdout);
    console.log(JSON.stringify((await tepStats(t))));
    await stopChild(node);
    console.log('NODE', output(node));
    await new Promise(r => setTimeout(r, 500));
    console.log(JSON.stringify((await tepStats(t)).bindings));
    console.log('TEP', output(tep));
  } finally { await t.destroy(); }
}
main().catch((e) => { console.error(e); process.exit(1); });
