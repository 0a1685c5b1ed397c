// Shared pieces of the RPC runtime tests: a small hand-written program (so these tests need no generated code),
// helpers to talk raw bytes to a server, and process helpers for the C peers and rpcbind.
import { execFile, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import net from 'node:net';
import type { Codec } from '../../src/rpc/xdr/runtime';
import type { Handler, Procedure, ProgramVersion, Service } from '../../src/rpc/types';

export const uintCodec: Codec<number> = { encode: (w, v) => w.uint(v), decode: (r) => r.uint() };
export const bytesCodec: Codec<Uint8Array> = { encode: (w, v) => w.varOpaque(v), decode: (r) => r.varOpaque() };
const voidCodec: Codec<void> = { encode() {}, decode() {} };

/** A test program: ECHO (opaque<> -> opaque<>), ADD1 (uint -> uint), SLOW (uint ms -> uint), FAIL (void -> void). */
export const TEST_PROGRAM = 0x3ffffff0;
export const ECHO: Procedure<Uint8Array, Uint8Array> = { name: 'ECHO', number: 1, args: bytesCodec, result: bytesCodec };
export const ADD1: Procedure<number, number> = { name: 'ADD1', number: 2, args: uintCodec, result: uintCodec };
export const SLOW: Procedure<number, number> = { name: 'SLOW', number: 3, args: uintCodec, result: uintCodec };
export const FAIL: Procedure<void, void> = { name: 'FAIL', number: 4, args: voidCodec, result: voidCodec };
/** A procedure the server does not have. */
export const MISSING: Procedure<void, void> = { name: 'MISSING', number: 99, args: voidCodec, result: voidCodec };

export function testDefinition(version = 1): ProgramVersion {
  return {
    programName: 'TESTPROG',
    versionName: `TESTVERS${version}`,
    program: TEST_PROGRAM,
    version,
    procedures: new Map<number, Procedure<any, any>>([ECHO, ADD1, SLOW, FAIL].map((p) => [p.number, p])),
  };
}

export function testService(overrides: Partial<Record<'ECHO' | 'ADD1' | 'SLOW' | 'FAIL', Handler<any, any>>> = {}, version = 1): Service {
  const h: Record<string, Handler<any, any>> = {
    ECHO: (b: Uint8Array) => b,
    ADD1: (n: number) => (n + 1) >>> 0,
    SLOW: (ms: number) => new Promise((res) => setTimeout(() => res(ms), ms)),
    FAIL: () => {
      throw new Error('handler failure on purpose');
    },
    ...overrides,
  };
  return { definition: testDefinition(version), handlers: new Map([[1, h.ECHO], [2, h.ADD1], [3, h.SLOW], [4, h.FAIL]]) };
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

/** A raw TCP connection collecting everything received. */
export async function tcpConnect(port: number, host = '::1'): Promise<{ sock: net.Socket; received: () => Buffer; closed: Promise<void> }> {
  const sock = net.connect({ host, port });
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

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Run a command without blocking the event loop (our servers in this process must keep answering). */
export function run(cmd: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
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
