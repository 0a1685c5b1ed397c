// Ordinary IPv4 applications and observers for the end-to-end tests and the demo: a TCP server on Z that tells each
// client the source address it sees, a plain IPv4 TCP client (bash's /dev/tcp), ping, a packet capture, and a
// sender of hand-made IPv4-in-IPv6 packets for the anti-spoofing checks.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ADDR, type Namespaces, output, stopChild, waitForOutput } from './netns';
import { ROOT, tsArgv } from './dstm-procs';

export const ECHO_PORT = 7000;

const ECHO_SERVER = `
require('node:net').createServer((s) => s.end('hello from Z, you are ' + s.remoteAddress + '\\n'))
  .listen(${ECHO_PORT}, '0.0.0.0', () => console.log('listening'));`;

/** A TCP server on Z (namespace `z`) answering "hello from Z, you are ADDRESS". */
export async function startEchoServer(t: Namespaces, z: string): Promise<ChildProcess> {
  const server = t.spawn(z, [process.execPath, '-e', ECHO_SERVER]);
  await waitForOutput(server, /listening/);
  return server;
}

/** Connects from `ns` to Z's echo server with bash's /dev/tcp (an unmodified IPv4 client); returns its answer. */
export async function tcpHello(t: Namespaces, ns: string, timeoutSec = 5): Promise<string> {
  const script = `exec 3<>/dev/tcp/${ADDR.z4}/${ECHO_PORT} && read -r line <&3 && echo "$line"`;
  const { stdout } = await t.exec(ns, ['timeout', String(timeoutSec), 'bash', '-c', script]);
  return stdout.trim();
}

/**
 * What ping from `ns` printed, whether or not a reply came (ping exits 1 when none did; so does an unreachable
 * network).
 */
async function pingOutput(t: Namespaces, ns: string, dst: string, count: number): Promise<string> {
  try {
    return (await t.exec(ns, ['ping', '-n', '-c', String(count), '-i', '0.2', '-W', '1', dst])).stdout;
  } catch (err) {
    return ((err as Error).cause as { stdout?: string } | undefined)?.stdout ?? '';
  }
}

/** Pings from `ns`; resolves with the number of replies (0 when none came back or the network is unreachable). */
export async function ping(t: Namespaces, ns: string, dst: string, count = 3): Promise<number> {
  return Number(/(\d+) received/.exec(await pingOutput(t, ns, dst, count))?.[1] ?? 0);
}

/**
 * Pings from `ns`; resolves with the ICMP errors ping reported, "FROM TEXT" each (e.g. "192.0.2.1 Destination Host
 * Unreachable").
 */
export async function pingErrors(t: Namespaces, ns: string, dst: string, count = 3): Promise<string[]> {
  return [...(await pingOutput(t, ns, dst, count)).matchAll(/^From (\S+) icmp_seq=\d+ (.+)$/gm)].map(
    (m) => `${m[1]} ${m[2]}`,
  );
}

/** A running tcpdump on one interface; stop() returns the packets it saw, one summary line each. */
export interface Capture {
  stop(): Promise<string[]>;
}

export async function capture(t: Namespaces, ns: string, dev: string): Promise<Capture> {
  const dump = t.spawn(ns, ['tcpdump', '-n', '-l', '-t', '-i', dev]);
  await waitForOutput(dump, /listening on/);
  return {
    async stop() {
      await new Promise((r) => setTimeout(r, 200)); // let the last packets be printed
      await stopChild(dump);
      return output(dump)
        .split('\n')
        .filter((l) => /^(IP6?|ARP) /.test(l));
    },
  };
}

/** Sends `count` IPv4-in-IPv6 UDP packets from `ns` with the given outer and inner addresses (spoofing allowed). */
export async function inject(
  t: Namespaces,
  ns: string,
  p: { src6: string; dst6: string; src4: string; dst4: string; count?: number },
): Promise<void> {
  await t.exec(
    ns,
    tsArgv(join(ROOT, 'test', 'support', 'inject.ts'), p.src6, p.dst6, p.src4, p.dst4, String(p.count ?? 5)),
  );
}
