// Judging and serving one call, in the order of RFC 5531 section 9 and libtirpc: RPC version (RPC_MISMATCH),
// authentication (AUTH_ERROR), program (PROG_UNAVAIL), version (PROG_MISMATCH with the registered low/high),
// procedure (PROC_UNAVAIL; NULL is always answered), the procedure's transport (AUTH_TOOWEAK for a TCP-only one over
// UDP), the duplicate request cache and the in-flight cap (UDP), arguments (GARBAGE_ARGS if they fail to decode or
// leave bytes over), then the handler (see Replier.error for what its exceptions become). A record whose call header
// cannot be read (or is not a CALL) is dropped and counted, as the RFC gives no way to answer it; so is an
// opaque_auth over 400 bytes, as libtirpc does. With RPC-with-TLS, the TLS policy (./server-tls) judges each call
// right after its RPC version, before authentication.
import type { ServerAuth } from './auth';
import { DRC_IN_PROGRESS, DRC_REPLAY, type DuplicateCache } from './drc';
import { AuthStat } from './errors';
import { AcceptStat, readCallHeader, type CallHeader } from './message';
import { T_UDP, type Peer } from './server-peer';
import type { ProcEntry, Registry } from './server-registry';
import type { Replier } from './server-reply';
import type { ServerCounters } from './server-stats';
import type { TlsGate } from './server-tls';
import type { CallContext, OpaqueAuth } from './types';
import { XdrReader } from './xdr/runtime';

export class Dispatcher {
  /** Calls whose handler has not finished, across all transports. */
  inFlight = 0;
  closing = false;
  /** Called after every call that finishes (the TCP transport feeds waiting records from it). */
  onCallDone: () => void = () => {};
  /** Called when the last call in flight finishes (a graceful close waits for it). */
  onIdle: (() => void) | null = null;
  /** Set by accept() for the call being dispatched (no object per call); read before its handler can re-enter. */
  private verf: OpaqueAuth = { flavor: 0, body: new Uint8Array(0) };
  private principal: unknown = undefined;

  constructor(
    private readonly registry: Registry,
    private readonly auth: ReadonlyMap<number, ServerAuth>,
    private readonly replier: Replier,
    private readonly counters: ServerCounters,
    private readonly drc: DuplicateCache | null,
    private readonly maxInFlight: number,
    private readonly tls: TlsGate | null,
  ) {}

  /** No call slot is free: TCP records wait in their connection, UDP calls are dropped. */
  get full(): boolean {
    return this.inFlight >= this.maxInFlight;
  }

  /** Judge and serve the call in buf[off, off + len). */
  dispatch(buf: Uint8Array, off: number, len: number, peer: Peer): void {
    // XdrReader reads a Buffer through a plain Uint8Array view: opaque fields are then decoded as copies (Buffer.slice
    // would alias the chunk, or the reused receive slots, and keep all of it alive for as long as the application
    // keeps a 16-byte field).
    const r = new XdrReader(buf, off, off + len);
    const h = this.accept(r, peer);
    if (!h) return;
    const verf = this.verf;
    const principal = this.principal;
    const pe = this.procedure(h, verf, peer);
    if (!pe) return;
    const drcToken = this.gate(h, pe, peer, r.buf, off, len);
    if (drcToken === null) return;
    let args: unknown;
    try {
      args = pe.proc!.args.decode(r);
      if (r.pos !== r.end) throw new Error('trailing bytes');
    } catch {
      pe.counts[peer.t].GARBAGE_ARGS++;
      return this.replier.status(peer, h.xid, verf, AcceptStat.GARBAGE_ARGS, drcToken);
    }
    this.invoke(
      h,
      verf,
      principal,
      pe,
      peer,
      args,
      peer.t === T_UDP ? Math.floor(pe.udpReplyRatio * len) : Infinity,
      drcToken,
    );
  }

  /** Read the call header and check the RPC version and the credential; null when answered (or dropped). */
  private accept(r: XdrReader, peer: Peer): CallHeader | null {
    const t = peer.t;
    let h: CallHeader | { xid: number; rpcVersion: number };
    try {
      h = readCallHeader(r);
    } catch {
      this.counters.garbageRecords[t]++;
      return null;
    }
    if (!('program' in h)) {
      this.counters.rejected[t].RPC_MISMATCH++;
      this.replier.rpcMismatch(peer, h.xid);
      return null;
    }
    if (this.tls !== null && this.tls.answered(h, peer)) return null;
    const flavor = this.auth.get(h.credential.flavor);
    const verdict = flavor ? flavor.validate(h.credential, h.verifier) : AuthStat.AUTH_REJECTEDCRED; // as libtirpc
    if (typeof verdict === 'number') {
      this.counters.rejected[t].AUTH_ERROR++;
      this.replier.authError(peer, h.xid, verdict);
      return null;
    }
    this.verf = flavor!.replyVerifier(verdict.principal, h.xid);
    this.principal = verdict.principal;
    return h;
  }

  /** Find the program, version and procedure; null when answered (PROG_UNAVAIL, PROG_MISMATCH, NULL, PROC_UNAVAIL). */
  private procedure(h: CallHeader, verf: OpaqueAuth, peer: Peer): ProcEntry | null {
    const t = peer.t;
    const p = this.registry.programs.get(h.program);
    if (!p) {
      this.counters.rejected[t].PROG_UNAVAIL++;
      this.replier.status(peer, h.xid, verf, AcceptStat.PROG_UNAVAIL);
      return null;
    }
    const v = p.versions.get(h.version);
    if (!v) {
      this.counters.rejected[t].PROG_MISMATCH++;
      this.replier.progMismatch(peer, h.xid, verf, p.low, p.high);
      return null;
    }
    if (h.procedure === 0) {
      v.nullProc.counts[t].SUCCESS++;
      this.replier.status(peer, h.xid, verf, AcceptStat.SUCCESS);
      return null;
    }
    const pe = v.procs.get(h.procedure);
    if (!pe) {
      v.unknownProc.counts[t].PROC_UNAVAIL++;
      this.replier.status(peer, h.xid, verf, AcceptStat.PROC_UNAVAIL);
      return null;
    }
    return pe;
  }

  /**
   * The gates before a handler runs: a TCP-only procedure over UDP, the duplicate request cache (UDP only: over TCP
   * the transport does not make the client retransmit), the in-flight cap. Returns the cache token (-1: none), or
   * null when the call was answered or dropped.
   */
  private gate(h: CallHeader, pe: ProcEntry, peer: Peer, buf: Uint8Array, off: number, len: number): number | null {
    const t = peer.t;
    if (t === T_UDP && pe.tcpOnly) {
      pe.counts[t].TCP_ONLY++;
      this.replier.authError(peer, h.xid, AuthStat.AUTH_TOOWEAK);
      return null;
    }
    const drc = t === T_UDP ? this.drc : null;
    if (drc) {
      const seen = drc.lookup(
        peer.address,
        peer.port,
        h.xid,
        off === 0 && len === buf.length ? buf : buf.subarray(off, off + len),
      );
      if (seen === DRC_REPLAY) {
        pe.counts[t].DUPLICATE_REPLAYED++;
        peer.send(drc.replay!);
        return null;
      }
      if (seen === DRC_IN_PROGRESS) {
        pe.counts[t].DUPLICATE_DROPPED++;
        return null;
      }
    }
    if (this.inFlight >= this.maxInFlight) {
      // Only UDP gets here over the cap (a TCP record waits in its connection, parked): drop, the client retransmits.
      this.counters.overloadDrops++;
      return null;
    }
    if (!drc) return -1;
    const token = drc.begin(peer.port, h.xid);
    if (token < 0) {
      // Every cache entry is a call still running: dropped like a call over the cap, since run uncached a
      // retransmission of it would run it again.
      this.counters.overloadDrops++;
      return null;
    }
    return token;
  }

  /** Run the handler and answer now (a plain result) or when its Promise settles. */
  private invoke(
    h: CallHeader,
    verf: OpaqueAuth,
    principal: unknown,
    pe: ProcEntry,
    peer: Peer,
    args: unknown,
    maxReplySize: number,
    drcToken: number,
  ): void {
    const ctx: CallContext = {
      xid: h.xid,
      transport: peer.transport,
      peerAddress: peer.address,
      peerPort: peer.port,
      family: peer.family,
      credential: h.credential,
      principal,
      maxReplySize,
      tls: peer.tls,
    };
    this.inFlight++;
    peer.callStarted();
    const t0 = performance.now();
    let res: unknown;
    try {
      res = pe.handler!(args, ctx);
    } catch (e) {
      return this.answer(peer, ctx, verf, pe, drcToken, t0, true, e);
    }
    if (res instanceof Promise) {
      const later = peer.detach();
      res.then(
        (value) => this.answer(later, ctx, verf, pe, drcToken, t0, false, value),
        (e) => this.answer(later, ctx, verf, pe, drcToken, t0, true, e),
      );
      return;
    }
    this.answer(peer, ctx, verf, pe, drcToken, t0, false, res);
  }

  /** Reply with a handler's result, or what it threw; the call is done even if replying throws (onHandlerError may). */
  private answer(
    peer: Peer,
    ctx: CallContext,
    verf: OpaqueAuth,
    pe: ProcEntry,
    drcToken: number,
    t0: number,
    threw: boolean,
    outcome: unknown,
  ): void {
    try {
      if (threw) this.replier.error(peer, ctx, verf, pe, outcome, drcToken);
      else this.replier.result(peer, ctx, verf, pe, outcome, drcToken);
    } finally {
      // Replying threw (onHandlerError may): its cache entry must not stay running, never to be reused.
      if (drcToken >= 0) this.drc!.end(drcToken);
      this.callDone(peer, pe, t0);
    }
  }

  /**
   * A call answered (its reply sent or dropped): its time from decoded arguments to here goes to the procedure's
   * histogram.
   */
  private callDone(peer: Peer, pe: ProcEntry, t0: number): void {
    pe.latency.observe((performance.now() - t0) / 1000);
    this.inFlight--;
    peer.callFinished();
    this.onCallDone();
    if (this.inFlight === 0 && this.onIdle) this.onIdle();
  }
}
