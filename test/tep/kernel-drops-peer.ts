// Run by kernel-drops.test.ts inside a namespace it made (lo up with the addresses below): a real TEP (startTep,
// as `dstm tep` runs it) whose event loop is blocked while a child floods it, so that the kernel's queues in front
// of it overflow. Prints one JSON line. Modes:
//   tep DIR: the TUN device's txqlen with the default configuration; then, with tx_queue_len 16 and socket_buffer
//            SMALL_BUFFER, the statistics before and after the flood from the control socket, `dstm tep stats`
//            (text) and the metrics.
//   flood:   IPv4 routed into the TUN device (UDP from a local socket) and tunnel packets to the TEP's raw socket.
import { createSocket } from 'node:dgram';
import { execFile, execFileSync } from 'node:child_process';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { parseWithOverrides } from '../../src/config/schema';
import { tepFields, type TepConfig } from '../../src/config/tep-schema';
import { RawIpipSocket } from '../../src/dti/device';
import { parseIPv4, parseIPv6 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { queryControl } from '../../src/lib/control';
import { startTep } from '../../src/tep/daemon';
import type { TepStats } from '../../src/tep/tep';
import { dstmArgv, tsArgv } from '../support/dstm-procs';
import { ipv4, ipv6 } from '../dti/build';
import { sleep } from '../support/wait';

export const TEP6 = '2001:db8:1::1';
export const NODE6 = '2001:db8:1::10';
/** An IPv4 address of the namespace, the source of what is routed into the TUN device. */
export const HOST4 = '192.0.2.2';
const POOL4 = '198.51.100.0/28';
const DST4 = '198.51.100.5';
export const TINY_QUEUE = 16;
export const SMALL_BUFFER = 1 << 20;
/** The IPv4 packet in each tunnel packet of the flood: what the raw socket's buffer is charged at least. */
export const TUNNEL_PACKET = 1028;
/** Each more than the queue in front of the TEP holds (the TUN ring; a raw socket's 2 MiB receive buffer). */
export const UDP_FLOOD = 2000;
export const TUNNEL_FLOOD = 20_000;

const log = createLogger({ level: 'error' });

function txqlen(dev: string): number {
  return (JSON.parse(execFileSync('ip', ['-j', 'link', 'show', dev], { encoding: 'utf8' })) as { txqlen: number }[])[0]
    .txqlen;
}

function metrics(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ host: '::1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
}

async function tep(dir: string): Promise<void> {
  const config = (over: Record<string, unknown>): TepConfig =>
    parseWithOverrides(
      tepFields,
      { address: TEP6, ipv4: '192.0.2.1', pools: [POOL4], control: `${dir}/tep.sock`, ...over },
      'tep',
      [],
    );
  const plain = await startTep(config({ device: 'dstm-kd0' }), log);
  const defaultQueue = txqlen('dstm-kd0');
  await plain.stop();

  const c = config({
    device: 'dstm-kd1',
    tx_queue_len: TINY_QUEUE,
    socket_buffer: SMALL_BUFFER,
    metrics: '[::1]:9787',
  });
  const running = await startTep(c, log);
  try {
    running.queues.bind(parseIPv4(DST4), parseIPv6(NODE6), Date.now() / 1000 + 60);
    const before = (await queryControl(c.control)) as TepStats;
    // the TEP reads nothing while this runs: its event loop waits for the child
    const [cmd, ...flood] = tsArgv(__filename, 'flood');
    const sendErrors = Number(execFileSync(cmd, flood, { encoding: 'utf8', timeout: 60_000 }));
    await sleep(500); // the TEP reads what the queues held
    const after = (await queryControl(c.control)) as TepStats;
    const [node, ...argv] = dstmArgv('tep', 'stats', '--control', c.control);
    const { stdout: text } = await promisify(execFile)(node, argv, { env: process.env, timeout: 60_000 });
    const scraped = await metrics(9787);
    const queue = txqlen('dstm-kd1');
    process.stdout.write(
      JSON.stringify({ defaultQueue, queue, sendErrors, before, after, text, metrics: scraped }) + '\n',
    );
  } finally {
    await running.stop();
  }
}

async function flood(): Promise<void> {
  const raw = RawIpipSocket.open();
  const pkt = Uint8Array.from(
    ipv6(NODE6, TEP6, 4, ipv4({ src: DST4, dst: HOST4, proto: 17, payload: Array(TUNNEL_PACKET - 28).fill(7) })),
  );
  const n = TUNNEL_FLOOD;
  raw.sendBatch(pkt, new Uint32Array(n), new Uint32Array(n).fill(pkt.length), n);
  raw.close();
  const udp = createSocket('udp4');
  const payload = Buffer.alloc(100);
  let errors = 0;
  await Promise.all(
    Array.from(
      { length: UDP_FLOOD },
      () => new Promise<void>((resolve) => udp.send(payload, 9, DST4, (err) => resolve(void (errors += err ? 1 : 0)))),
    ),
  );
  udp.close();
  process.stdout.write(String(errors));
}

const [mode, dir] = process.argv.slice(2);
if (mode === 'tep') void tep(dir);
else if (mode === 'flood') void flood();
