// Shared pieces of the RPC runtime tests: a small hand-written program (so these tests need no generated code),
// helpers to talk raw bytes to a server, and process helpers for the C peers and rpcbind.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { XdrWriter, type Codec } from '../../src/rpc/xdr/runtime';
import { NULL_AUTH, writeCallHeader } from '../../src/rpc/message';
import type { OpaqueAuth } from '../../src/rpc/types';
import type { Handler, Procedure, ProgramVersion, Service } from '../../src/rpc/types';
import type { packet } from '../../src/protocol/generated/dstm';
import { sleep } from '../support/wait';

export const uintCodec: Codec<number> = { encode: (w, v) => w.uint(v), decode: (r) => r.uint() };
export const bytesCodec: Codec<Uint8Array> = { encode: (w, v) => w.varOpaque(v), decode: (r) => r.varOpaque() };
const voidCodec: Codec<void> = { encode() {}, decode() {} };

/** A test program: ECHO (opaque<> -> opaque<>), ADD1 (uint -> uint), SLOW (uint ms -> uint), FAIL (void -> void). */
export const TEST_PROGRAM = 0x3ffffff0;
export const ECHO: Procedure<Uint8Array, Uint8Array> = {
  name: 'ECHO',
  number: 1,
  args: bytesCodec,
  result: bytesCodec,
};
export const ADD1: Procedure<number, number> = { name: 'ADD1', number: 2, args: uintCodec, result: uintCodec };
export const SLOW: Procedure<number, number> = { name: 'SLOW', number: 3, args: uintCodec, result: uintCodec };
export const FAIL: Procedure<void, void> = { name: 'FAIL', number: 4, args: voidCodec, result: voidCodec };
/** A procedure the server does not have. */
export const MISSING: Procedure<void, void> = { name: 'MISSING', number: 99, args: voidCodec, result: voidCodec };

/** A version 1 call of TEST_PROGRAM as raw bytes (one datagram): `args` writes its arguments. */
export function testCall(
  xid: number,
  proc: number,
  args: (w: XdrWriter) => void = () => {},
  credential: OpaqueAuth = NULL_AUTH,
): Buffer {
  const w = new XdrWriter();
  writeCallHeader(w, { xid, program: TEST_PROGRAM, version: 1, procedure: proc, credential, verifier: NULL_AUTH });
  args(w);
  return Buffer.from(w.toBytes());
}

export function testDefinition(version = 1): ProgramVersion {
  return {
    programName: 'TESTPROG',
    versionName: `TESTVERS${version}`,
    program: TEST_PROGRAM,
    version,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- heterogeneous procedures
    procedures: new Map<number, Procedure<any, any>>([ECHO, ADD1, SLOW, FAIL].map((p) => [p.number, p])),
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the four test procedures' handlers, of four types
type AnyHandler = Handler<any, any>;

export function testService(
  overrides: Partial<Record<'ECHO' | 'ADD1' | 'SLOW' | 'FAIL', AnyHandler>> = {},
  version = 1,
): Service {
  const h: Record<string, AnyHandler> = {
    ECHO: (b: Uint8Array) => b,
    ADD1: (n: number) => (n + 1) >>> 0,
    SLOW: (ms: number) => new Promise((res) => setTimeout(() => res(ms), ms)),
    FAIL: () => {
      throw new Error('handler failure on purpose');
    },
    ...overrides,
  };
  return {
    definition: testDefinition(version),
    handlers: new Map([
      [1, h.ECHO],
      [2, h.ADD1],
      [3, h.SLOW],
      [4, h.FAIL],
    ]),
  };
}

/** Send one datagram and wait for one reply (or null after `ms`). */
export async function udpExchange(port: number, msg: Uint8Array, ms = 300, host = '::1'): Promise<Buffer | null> {
  const s = dgram.createSocket(net.isIPv4(host) ? 'udp4' : 'udp6');
  try {
    return await new Promise<Buffer | null>((resolve) => {
      const t = setTimeout(() => resolve(null), ms);
      s.on('message', (m) => {
        clearTimeout(t);
        resolve(m);
      });
      s.send(msg, port, host);
    });
  } finally {
    s.close();
  }
}

/** A raw TCP connection (from `localAddress`, when given) collecting everything received. */
export async function tcpConnect(
  port: number,
  host = '::1',
  localAddress?: string,
): Promise<{ sock: net.Socket; received: () => Buffer; closed: Promise<void> }> {
  const sock = net.connect({ host, port, localAddress });
  const chunks: Buffer[] = [];
  sock.on('data', (c) => chunks.push(c));
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  await new Promise<void>((r, j) => {
    sock.once('connect', () => r());
    sock.once('error', j);
  });
  return { sock, received: () => Buffer.concat(chunks), closed };
}

export { sleep };

/** Run a command without blocking the event loop (our servers in this process must keep answering). */
export function run(
  cmd: string,
  args: string[],
  timeoutMs = 10_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function canConnect(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Make sure an rpcbind is running: use the machine's if there is one, else start `rpcbind -f -w` (the test's own,
 * stopped by the function returned). Resolves to null when rpcbind is not installed.
 */
export async function ensureRpcbind(): Promise<(() => Promise<void>) | null> {
  if (await canConnect(111, '::1')) return async () => {};
  if (!existsSync('/usr/sbin/rpcbind') && !existsSync('/sbin/rpcbind')) return null;
  const child = spawn('rpcbind', ['-f', '-w'], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !(await canConnect(111, '::1')); i++) await sleep(50);
  return async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await exited;
  };
}

const ROOT = join(__dirname, '..', '..');

/** The C peers built from xdr/dstm.x with rpcgen, gcc and libtirpc. */
export interface CPeers {
  dir: string;
  client: string;
  server: string;
  /** The load generator of bench/c/rpc_load.c, when asked for. */
  load?: string;
}

/**
 * Generate the C stubs of xdr/dstm.x with rpcgen (-h, -c, -l, -m) into a temporary directory and compile the test
 * peers of test/rpc/c (and the bench's load generator) against libtirpc. Resolves to the reason when the tools are
 * missing (.ci/run installs rpcsvc-proto, libtirpc-dev and gcc).
 */
export async function buildCPeers(withLoad = false): Promise<CPeers | string> {
  for (const tool of ['rpcgen', 'gcc'])
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) return `${tool} is not installed`;
  if (!existsSync('/usr/include/tirpc/rpc/rpc.h')) return 'libtirpc-dev is not installed';
  const dir = mkdtempSync(join(tmpdir(), 'dstm-rpcgen-'));
  copyFileSync(join(ROOT, 'xdr', 'dstm.x'), join(dir, 'dstm.x'));
  const steps: [string, string[]][] = [
    ['rpcgen', ['-h', '-o', 'dstm.h', 'dstm.x']],
    ['rpcgen', ['-c', '-o', 'dstm_xdr.c', 'dstm.x']],
    ['rpcgen', ['-l', '-o', 'dstm_clnt.c', 'dstm.x']],
    ['rpcgen', ['-m', '-o', 'dstm_svc.c', 'dstm.x']],
  ];
  const cc = (out: string, ...srcs: string[]): [string, string[]] => [
    'gcc',
    [
      '-O2',
      '-I/usr/include/tirpc',
      `-I${dir}`,
      `-I${join(ROOT, 'test/rpc/c')}`,
      '-o',
      join(dir, out),
      ...srcs,
      join(dir, 'dstm_xdr.c'),
      '-ltirpc',
      '-lpthread',
    ],
  ];
  steps.push(cc('dstm_client', join(ROOT, 'test/rpc/c/dstm_client.c'), join(dir, 'dstm_clnt.c')));
  steps.push(
    cc(
      'dstm_server',
      join(ROOT, 'test/rpc/c/dstm_server.c'),
      join(ROOT, 'test/rpc/c/dstm_serve.c'),
      join(dir, 'dstm_svc.c'),
    ),
  );
  if (withLoad) steps.push(cc('rpc_load', join(ROOT, 'bench/c/rpc_load.c')));
  for (const [cmd, args] of steps) {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(cmd, args, { cwd: dir, timeout: 60_000 }, (err, _o, stderr) =>
        resolve({ code: err ? 1 : 0, stderr: String(stderr) }),
      ),
    );
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  }
  return {
    dir,
    client: join(dir, 'dstm_client'),
    server: join(dir, 'dstm_server'),
    load: withLoad ? join(dir, 'rpc_load') : undefined,
  };
}

/** Start the rpcgen C server (test/rpc/c/dstm_server.c) for `program`; resolves once it prints its ports. */
export async function startCServer(
  peers: CPeers,
  program: number,
): Promise<{ proc: ChildProcess; udp: number; tcp: number; stop: () => Promise<void> }> {
  const proc = spawn(peers.server, [String(program)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out);
    });
    proc.once('exit', (code) => reject(new Error(`the C server exited (${code}) before it was ready`)));
  });
  const [, udp, tcp] = line.trim().split(' ').map(Number);
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGTERM');
    await exited;
  };
  return { proc, udp, tcp, stop };
}

/** The reply transform every test server applies (the C one in test/rpc/c/dstm_peer.h): see there. */
export function transformPacket(p: packet): packet {
  return { ...p, type: p.type + 1, ends: (p.starts + p.extend) >>> 0, keep: (p.keep + 1) >>> 0 };
}

/** The i-th packet test/rpc/c/dstm_client.c sends. */
export function cClientPacket(i: number, type: number): packet {
  const b = (n: number, f: (k: number) => number) => Uint8Array.from({ length: n }, (_, k) => f(k) & 255);
  return {
    type,
    local: b(16, (k) => 0xfe + k + i),
    mask: b(4, (k) => 0xff - k),
    i4addr: b(4, (k) => 10 + k + i),
    tep4: b(4, (k) => 192 + k),
    tep6: b(16, (k) => 0x20 + k * 3 + i),
    ends: 7,
    starts: 1000 + i,
    extend: 3600,
    keep: 0xfffffffe,
  };
}

/** A packet as test/rpc/c/dstm_peer.h prints it. */
export function formatPacket(what: string, p: packet): string {
  const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');
  return `${what} type=${p.type} local=${hex(p.local)} mask=${hex(p.mask)} i4addr=${hex(p.i4addr)} tep4=${hex(p.tep4)} tep6=${hex(p.tep6)} ends=${p.ends} starts=${p.starts} extend=${p.extend} keep=${p.keep}`;
}
