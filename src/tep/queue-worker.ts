// One forwarding queue of a TEP on several (queues.ts): a Tep over queue `index` of the devices, its binding table
// kept identical to the main thread's by applying the control plane's messages in order.
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../lib/log';
import { Tep, type ServerBinding } from './tep';
import type { FromWorker, QueueWorkerData, ToWorker } from './queues';

const data = workerData as QueueWorkerData;
const port = parentPort!;
const log = createLogger({ level: data.logLevel }).child({ queue: data.queue.index });
const tep = new Tep({ ...data.opts, queue: data.queue, log });
tep.open();

function* unpack(m: Extract<ToWorker, { op: 'resync' }>): Iterable<ServerBinding> {
  for (let i = 0; i < m.ipv4.length; i++) {
    yield { ipv4: m.ipv4[i], ipv6: m.ipv6.subarray(i * 16, i * 16 + 16), starts: m.starts[i], ends: m.ends[i] };
  }
}

const reply = (m: FromWorker): void => port.postMessage(m);

function apply(m: ToWorker): void | Promise<void> {
  switch (m.op) {
    case 'bind':
      return tep.bind(m.ipv4, m.ipv6, m.ends, m.starts);
    case 'unbind':
      return tep.unbind(m.ipv4);
    case 'resync':
      return tep.resync(unpack(m));
    case 'reconfigure':
      return tep.reconfigure(m.config);
    case 'pmtu':
      return tep.lowerPathMtu(m.node, m.mtu);
    case 'stats':
      return tep.statsChunked({ bindings: m.bindings }).then((stats) => reply({ op: 'stats', stats }));
    case 'traffic':
      return reply({ op: 'traffic', traffic: tep.trafficOf(m.ipv4) });
    case 'stop':
      tep.close();
      reply({ op: 'stopped' });
      return port.close();
  }
}

// Strictly one after another: a resync stages in chunks and yields between them, and a bind or unbind applied
// meanwhile would be undone by its commit (a later stage() wins), leaving this queue with an older state than the
// main thread's. A failure is the worker's, as a throw from the handler was: TepQueues treats it as fatal.
let applied: Promise<void> = Promise.resolve();
port.on('message', (m: ToWorker) => {
  applied = applied
    .then(() => apply(m))
    .catch((err: unknown) => {
      process.nextTick(() => {
        throw err;
      });
    });
});
reply({ op: 'ready' });
