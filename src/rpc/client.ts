// ONC RPC client (RFC 5531) over UDP or TCP (or a local stream socket, as rpcbind offers). Promise-based: each call
// has a timeout and may carry an AbortSignal; calls are matched to replies by XID, so any number may be in flight on
// one connection. Over UDP a call is retransmitted with the same XID, the delay doubling up to a ceiling (the
// server's duplicate request cache keeps it from running twice). Over TCP a lost connection is re-established and
// every call still waiting is sent again (TCP has no duplicate cache, so a call the old connection had delivered
// may run twice). Every failure is an RpcError whose `kind` names it (RpcAuthError, with its auth_stat in `stat`,
// for AUTH_ERROR), with a message in plain words. Writes are not throttled here: what is buffered is the calls in
// flight, which the caller bounds.
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { authNone, type ClientAuth } from './auth';
import { AuthStat, RpcAuthError, RpcError } from './errors';
import { readReplyHeader, writeCallHeader } from './message';
import { beginRecord, endRecord, fragmentSizeOf, RecordReader } from './record';
import { lookupPort } from './rpcbind';
import { startTls, type TlsClientOptions } from './tls';
import type { CallOptions, Procedure, RpcCaller, Transport } from './types';
import { XdrReader, XdrWriter, type Codec } from './xdr/runtime';

/** The codec of XDR void: zero bytes. */
export const xdrVoid: Codec<void> = { encode() {}, decode() {} };

/** Procedure 0 of every program: no arguments, no results. */
export const NULL_PROCEDURE: Procedure<void, void> = { name: 'NULL', number: 0, args: xdrVoid, result: xdrVoid };

export interface RpcClientOptions {
  /** Server host name or address (IPv6 preferred when a name has both). */
  host: string;
  /** Server port; when absent it is looked up with the host's rpcbind (v4, then v3, then portmap v2). */
  port?: number;
  transport: Transport;
  /** The program and version this client is for (used for the rpcbind lookup; calls name their own). */
  program: number;
  version: number;
  /** Default per-call timeout in milliseconds (10 s); also bounds a TCP connect, and then the TLS setup. */
  timeoutMs?: number;
  /** UDP: first retransmission after this many milliseconds (500), doubling up to retransmitMaxMs (4000); above 0. */
  retransmitMs?: number;
  retransmitMaxMs?: number;
  auth?: ClientAuth;
  /** TCP: largest fragment sent, 1 to 2^31 − 1; longer calls are split into several fragments (default: one per record). */
  fragmentSize?: number;
  /**
   * TCP: largest reply record accepted, checked from the fragment header (default 16 MiB); a larger one fails the
   * calls in flight with BAD_REPLY and closes the connection.
   */
  maxRecordSize?: number;
  /** TCP: re-establish a lost connection and re-send the calls in flight (default true). */
  reconnect?: boolean;
  /**
   * UDP: fail the calls in flight at once when the connected socket reports an ICMP error (port, host or network
   * unreachable), as glibc's clnt_udp does; default false: retransmit until the timeout, so a server that comes up
   * on the port meanwhile still answers.
   */
  failOnIcmpError?: boolean;
  /** Use only this address family for a host name. */
  family?: 4 | 6;
  /** Local address to bind to. */
  localAddress?: string;
  /** Connect to a local stream socket instead of host:port (transport must be 'tcp'), e.g. /run/rpcbind.sock. */
  path?: string;
  /** rpcbind's port for the lookup (111). */
  rpcbindPort?: number;
  /**
   * TCP: RPC-with-TLS (RFC 9289). Every connection starts with the AUTH_TLS probe and a TLS 1.3 handshake verifying
   * the server against `ca` and its address (or serverName); a server that does not offer TLS fails the connect
   * with RpcError 'TLS'. With another transport, connect() throws a RangeError.
   */
  tls?: TlsClientOptions;
}

interface Pending {
  readonly xid: number;
  readonly program: number;
  readonly version: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- calls of every procedure wait in one table
  readonly proc: Procedure<any, any>;
  /** The whole call as sent (record-marked for TCP), kept for retransmission and re-sending after a reconnect. */
  readonly bytes: Buffer;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- resolves the call of whichever procedure it is
  readonly resolve: (v: any) => void;
  readonly reject: (e: Error) => void;
  timer: NodeJS.Timeout | null;
  retransmit: NodeJS.Timeout | null;
  delay: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
}

export class RpcClient implements RpcCaller {
  readonly transport: Transport;
  /** The server as "address port/transport", for messages. */
  readonly where: string;
  private readonly pending = new Map<number, Pending>();
  private readonly w = new XdrWriter(512);
  private readonly auth: ClientAuth;
  private readonly timeoutMs: number;
  private readonly retransmitMs: number;
  private readonly retransmitMaxMs: number;
  private readonly fragmentSize: number;
  private readonly maxRecordSize: number;
  private readonly reconnect: boolean;
  private xid = randomInt(0x7fffffff);
  private closed = false;
  private udp: dgram.Socket | null = null;
  private tcp: net.Socket | null = null;
  private connected = false;
  private connecting: Promise<void> | null = null;
  private reconnectDelay = 50;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private lastError: Error | null = null;
  /** TLS sessions in a row that the server closed with calls in flight and no reply (see serve()). */
  private silentTlsCloses = 0;

  /** Resolve the server's address (and port, through rpcbind, when none is given) and connect. */
  static async connect(options: RpcClientOptions): Promise<RpcClient> {
    // Rather than calls in plain text where TLS was asked for: there is no RPC-with-TLS over UDP (no DTLS here).
    if (options.tls && options.transport !== 'tcp')
      throw new RangeError(`RPC-with-TLS runs over TCP only, not ${options.transport}`);
    // Before any I/O: 0 would re-send a UDP call in a tight loop, or time every call out at once.
    for (const key of ['timeoutMs', 'retransmitMs', 'retransmitMaxMs'] as const) {
      const v = options[key];
      if (v !== undefined && !(Number.isFinite(v) && v > 0)) throw new RangeError(`${key} must be above 0, not ${v}`);
    }
    fragmentSizeOf(options.fragmentSize);
    let address = options.host;
    if (!options.path && net.isIP(address) === 0) {
      let found: { address: string; family: number }[];
      try {
        found = await lookup(address, { all: true, family: options.family ?? 0 });
      } catch (e) {
        throw new RpcError('UNREACHABLE', `cannot resolve ${address}: ${(e as Error).message}`);
      }
      address = (found.find((a) => a.family === 6) ?? found[0]).address;
    }
    let port = options.port;
    if (port === undefined && !options.path) {
      port = await lookupPort({
        host: address,
        program: options.program,
        version: options.version,
        transport: options.transport,
        port: options.rpcbindPort,
        timeoutMs: options.timeoutMs,
      });
    }
    const c = new RpcClient(options, address, port ?? 0);
    await c.open();
    return c;
  }

  private constructor(
    private readonly options: RpcClientOptions,
    private readonly address: string,
    private readonly port: number,
  ) {
    this.transport = options.transport;
    this.where = options.path
      ? options.path
      : `${address.includes(':') ? `[${address}]` : address}:${port}/${options.transport}`;
    this.auth = options.auth ?? authNone;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retransmitMs = options.retransmitMs ?? 500;
    this.retransmitMaxMs = options.retransmitMaxMs ?? 4000;
    this.fragmentSize = fragmentSizeOf(options.fragmentSize);
    this.maxRecordSize = options.maxRecordSize ?? 16 << 20;
    this.reconnect = options.reconnect ?? true;
  }

  /** Calls waiting for a reply. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Call procedure 0 (NULL): a ping. */
  ping(options?: CallOptions, program = this.options.program, version = this.options.version): Promise<void> {
    return this.call(program, version, NULL_PROCEDURE, undefined, options);
  }

  call<A, R>(program: number, version: number, proc: Procedure<A, R>, args: A, options?: CallOptions): Promise<R> {
    if (this.closed) return Promise.reject(new RpcError('CLOSED', `the client for ${this.where} is closed`));
    const signal = options?.signal;
    if (signal?.aborted)
      return Promise.reject(new RpcError('ABORTED', `call ${proc.name} to ${this.where} aborted before it was sent`));
    const xid = (this.xid = (this.xid + 1) >>> 0);
    let bytes: Buffer;
    const w = this.w;
    try {
      if (this.transport === 'tcp') beginRecord(w);
      else w.reset();
      writeCallHeader(w, {
        xid,
        program,
        version,
        procedure: proc.number,
        credential: this.auth.credential(),
        verifier: this.auth.verifier(),
      });
      proc.args.encode(w, args);
      bytes = this.transport === 'tcp' ? endRecord(w, this.fragmentSize) : Buffer.from(w.view0());
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<R>((resolve, reject) => {
      const p: Pending = {
        xid,
        program,
        version,
        proc,
        bytes,
        resolve,
        reject,
        timer: null,
        retransmit: null,
        delay: this.retransmitMs,
        signal,
        onAbort: null,
      };
      const timeoutMs = options?.timeoutMs ?? this.timeoutMs;
      p.timer = setTimeout(() => {
        const why = this.lastError ? ` (last transport error: ${this.lastError.message})` : '';
        this.settle(
          p,
          new RpcError('TIMEOUT', `no reply from ${this.where} to ${proc.name} within ${timeoutMs} ms${why}`),
        );
      }, timeoutMs);
      if (signal) {
        p.onAbort = () => this.settle(p, new RpcError('ABORTED', `call ${proc.name} to ${this.where} aborted`));
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(xid, p);
      this.transmit(p);
    });
  }

  /** Fail every call in flight with CLOSED and release the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    for (const p of [...this.pending.values()])
      this.settle(
        p,
        new RpcError('CLOSED', `the client for ${this.where} was closed before ${p.proc.name} was answered`),
      );
    if (this.udp) {
      const s = this.udp;
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    this.tcp?.destroy();
  }

  private open(): Promise<void> {
    return this.transport === 'udp' ? this.openUdp() : this.openTcp();
  }

  private openUdp(): Promise<void> {
    const s = dgram.createSocket(net.isIPv4(this.address) ? 'udp4' : 'udp6');
    this.udp = s;
    s.on('message', (msg) => this.onReply(msg));
    s.on('error', (e) => {
      this.lastError = e;
      if (!this.options.failOnIcmpError || !ICMP_ERRORS.has((e as NodeJS.ErrnoException).code ?? '')) return;
      for (const p of [...this.pending.values()])
        this.settle(p, new RpcError('UNREACHABLE', `cannot reach ${this.where}: ${e.message}`));
    });
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => {
        s.close();
        reject(new RpcError('UNREACHABLE', `cannot reach ${this.where}: ${e.message}`));
      };
      s.once('error', fail);
      s.bind({ address: this.options.localAddress, port: 0 }, () => {
        // A connected UDP socket takes replies from the server's address only. A connect the kernel refuses (EINVAL
        // for a multicast address, or a link-local one without a zone) comes as the callback's argument, not as an
        // 'error' event; ignored, the first send threw from Node's argument checks.
        s.connect(this.port, this.address, (err?: Error) => {
          if (err) return fail(err);
          s.off('error', fail);
          this.connected = true;
          resolve();
        });
      });
    });
  }

  private openTcp(): Promise<void> {
    if (this.connecting) return this.connecting;
    const opts: net.NetConnectOpts = this.options.path
      ? { path: this.options.path }
      : { host: this.address, port: this.port, localAddress: this.options.localAddress, noDelay: true };
    const raw = net.connect(opts);
    this.tcp = raw;
    const reader = new RecordReader(this.maxRecordSize, (rec) => this.onReply(rec));
    this.connecting = new Promise<void>((resolve, reject) => {
      // A host that drops our SYNs would hold the connect for the kernel's retries (about 2 minutes); give up after
      // timeoutMs instead, so callers move on to their next server. (TLS setup then has its own timeoutMs.)
      const connectTimer = setTimeout(() => {
        if (!this.connecting || this.tcp !== raw) return;
        this.connecting = null;
        const e = new RpcError('TIMEOUT', `cannot connect to ${this.where}: no answer within ${this.timeoutMs} ms`);
        this.lastError = e;
        reject(e);
        raw.destroy();
      }, this.timeoutMs);
      raw.once('connect', () => clearTimeout(connectTimer));
      raw.once('close', () => clearTimeout(connectTimer));
      const ready = (s: net.Socket): void => {
        this.connecting = null;
        this.connected = true;
        this.reconnectDelay = 50;
        // Calls made while disconnected, or in flight when the last connection was lost, go out now.
        s.cork();
        for (const p of this.pending.values()) s.write(p.bytes);
        s.uncork();
        resolve();
      };
      const tlsOptions = this.options.tls;
      if (!tlsOptions) {
        raw.once('connect', () => ready(raw));
        return this.serve(raw, reader, reject);
      }
      raw.once('connect', () => {
        startTls(raw, this.address, this.options.program, this.options.version, tlsOptions, this.timeoutMs).then(
          (s) => {
            if (this.tcp !== raw) return s.destroy(); // closed meanwhile
            this.tcp = s;
            this.serve(s, reader, reject);
            ready(s);
          },
          (e: Error) => {
            // Not retried: a server that refuses TLS or a certificate that does not verify will not change.
            this.connecting = null;
            this.lastError = e;
            raw.destroy();
            for (const p of [...this.pending.values()]) this.settle(p, e);
            reject(e);
          },
        );
      });
      raw.on('error', (e) => {
        this.lastError = e;
        if (this.connecting && this.tcp === raw) {
          this.connecting = null;
          reject(new RpcError('UNREACHABLE', `cannot connect to ${this.where}: ${e.message}`));
        }
      });
      raw.on('close', () => this.tcp === raw && this.onTcpClose(raw));
    });
    return this.connecting;
  }

  /** Read replies from the connection's socket (the TCP one, or the TLS one over it). */
  private serve(s: net.Socket, reader: RecordReader, reject: (e: Error) => void): void {
    let answered = false;
    s.on('data', (chunk: Buffer) => {
      answered = true;
      this.silentTlsCloses = 0;
      const cut = reader.push(chunk);
      if (cut !== null) {
        // The stream cannot be read past it, and calls sent again would only run again and get it again: every call
        // in flight fails now (the reply is one of theirs; the others' would have come behind it).
        const e = new RpcError('BAD_REPLY', `${this.where} sent a reply too large: ${cut}`);
        this.lastError = e;
        for (const p of [...this.pending.values()]) this.settle(p, e);
        s.destroy();
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      this.lastError = e;
      // Under TLS 1.3 a server judges our certificate after our side of the handshake is done: its refusal comes
      // as an alert on the first read. Retrying cannot help, so the calls fail now, saying why.
      if (this.options.tls && e.code?.startsWith('ERR_SSL_')) {
        this.failTls(
          new RpcError(
            'TLS',
            `${this.where} ended the TLS session: ${e.message.replace(/^.*:(ssl3?|tls13|tlsv1)?_?alert /i, 'alert ')}`,
          ),
        );
      }
      if (this.connecting) {
        this.connecting = null;
        reject(new RpcError('UNREACHABLE', `cannot connect to ${this.where}: ${e.message}`));
      }
    });
    s.on('close', () => {
      // A server that refuses our certificate after the handshake may just close (Node does, without an alert). So
      // may one that crashed or restarted with our calls in flight: the first such close is a lost connection (the
      // calls are sent again on a new one), only a second in a row a refusal (the first, without reconnecting).
      if (
        this.options.tls &&
        !answered &&
        this.pending.size > 0 &&
        ++this.silentTlsCloses >= (this.reconnect ? 2 : 1)
      ) {
        this.failTls(
          new RpcError(
            'TLS',
            `${this.where} closed the TLS session before answering: it did not accept this client's certificate (none, expired, or not from its CA)`,
          ),
        );
      }
      this.onTcpClose(s);
    });
  }

  private failTls(err: RpcError): void {
    for (const p of [...this.pending.values()]) this.settle(p, err);
  }

  private onTcpClose(s: net.Socket): void {
    if (this.tcp !== s) return;
    this.connected = false;
    this.tcp = null;
    if (this.closed) return;
    if (!this.reconnect) {
      for (const p of [...this.pending.values()])
        this.settle(
          p,
          new RpcError('CLOSED', `the connection to ${this.where} was lost before ${p.proc.name} was answered`),
        );
      return;
    }
    if (this.pending.size > 0) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.closed) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.closed || this.tcp) return;
      this.openTcp().catch(() => {
        if (this.pending.size > 0) this.scheduleReconnect();
      });
    }, this.reconnectDelay);
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, 2000);
  }

  private transmit(p: Pending): void {
    if (this.transport === 'udp') {
      this.udp!.send(p.bytes, (e) => e && (this.lastError = e));
      p.retransmit = setTimeout(() => this.retransmitUdp(p), p.delay);
      return;
    }
    if (this.connected) {
      // Calls made in the same tick (e.g. a Promise.all) leave in one write.
      const s = this.tcp!;
      if (s.writableCorked === 0) {
        s.cork();
        process.nextTick(uncork, s);
      }
      s.write(p.bytes);
    } else if (!this.tcp) {
      if (!this.reconnect) return this.settle(p, new RpcError('CLOSED', `the connection to ${this.where} is lost`));
      this.openTcp().catch(() => this.scheduleReconnect());
    }
    // else: connecting; the connect handler sends every pending call.
  }

  private retransmitUdp(p: Pending): void {
    if (this.pending.get(p.xid) !== p) return;
    p.delay = Math.min(p.delay * 2, this.retransmitMaxMs);
    this.transmit(p);
  }

  private onReply(buf: Buffer): void {
    const r = new XdrReader(new Uint8Array(buf.buffer, buf.byteOffset, buf.length)); // results decoded as copies
    let h;
    try {
      h = readReplyHeader(r);
    } catch {
      return; // not a reply we can read: ignore it, the call will time out or be answered properly
    }
    const p = this.pending.get(h.xid);
    if (!p) return; // a late or duplicate reply
    const name = p.proc.name;
    if ('verifier' in h && this.auth.checkReplyVerifier && !this.auth.checkReplyVerifier(h.verifier, h.xid)) {
      return this.settle(
        p,
        new RpcAuthError(
          AuthStat.AUTH_INVALIDRESP,
          `the reply of ${this.where} to ${name} has a bogus verifier (AUTH_INVALIDRESP)`,
        ),
      );
    }
    switch (h.status) {
      case 'SUCCESS': {
        let v: unknown;
        try {
          v = p.proc.result.decode(r);
          r.done('results');
        } catch (e) {
          return this.settle(
            p,
            new RpcError('BAD_REPLY', `the reply of ${this.where} to ${name} does not decode: ${(e as Error).message}`),
          );
        }
        return this.settle(p, null, v);
      }
      case 'PROG_UNAVAIL':
        return this.settle(p, new RpcError('PROG_UNAVAIL', `${this.where} does not serve program ${prog(p.program)}`));
      case 'PROG_MISMATCH':
        return this.settle(
          p,
          new RpcError(
            'PROG_MISMATCH',
            `${this.where} does not serve version ${p.version} of program ${prog(p.program)}; it serves versions ${h.low} to ${h.high}`,
            h.low,
            h.high,
          ),
        );
      case 'PROC_UNAVAIL':
        return this.settle(
          p,
          new RpcError(
            'PROC_UNAVAIL',
            `${this.where} does not serve procedure ${name} (${p.proc.number}) of program ${prog(p.program)} version ${p.version}`,
          ),
        );
      case 'GARBAGE_ARGS':
        return this.settle(p, new RpcError('GARBAGE_ARGS', `${this.where} could not decode the arguments of ${name}`));
      case 'SYSTEM_ERR':
        return this.settle(p, new RpcError('SYSTEM_ERR', `${this.where} failed while serving ${name} (system error)`));
      case 'RPC_MISMATCH':
        return this.settle(
          p,
          new RpcError(
            'RPC_MISMATCH',
            `${this.where} does not speak ONC RPC version 2 (it speaks ${h.low} to ${h.high})`,
            h.low,
            h.high,
          ),
        );
      case 'AUTH_ERROR': {
        const e = new RpcAuthError(h.stat);
        e.message = `${this.where} refused ${name}: ${e.message}`;
        return this.settle(p, e);
      }
    }
  }

  private settle(p: Pending, err: Error | null, value?: unknown): void {
    if (this.pending.get(p.xid) !== p) return;
    this.pending.delete(p.xid);
    if (p.timer) clearTimeout(p.timer);
    if (p.retransmit) clearTimeout(p.retransmit);
    if (p.onAbort) p.signal!.removeEventListener('abort', p.onAbort);
    if (err) p.reject(err);
    else p.resolve(value);
  }
}

const ICMP_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH']);

/** A program number as people read them: decimal and hex. */
function prog(n: number): string {
  return `${n} (0x${n.toString(16)})`;
}

function uncork(s: net.Socket): void {
  s.uncork();
}
