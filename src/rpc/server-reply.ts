// Writing replies: one XdrWriter reused for every reply, copied out once (or not at all where the peer copies), the
// reply kept by the duplicate request cache, and the result counted on its procedure.
import type { DuplicateCache } from './drc';
import { AuthStat, RpcAuthError, RpcError } from './errors';
import {
  AcceptStat,
  writeAcceptedReply,
  writeAuthErrorReply,
  writeProgMismatchReply,
  writeRpcMismatchReply,
} from './message';
import { beginRecord, endRecord, frameRecord, LAST_FRAGMENT } from './record';
import type { Peer } from './server-peer';
import { T_TCP, T_UDP } from './server-peer';
import type { ProcEntry } from './server-registry';
import type { ResultName } from './server-stats';
import type { CallContext, OpaqueAuth } from './types';
import { XdrWriter } from './xdr/runtime';

/**
 * The reply statuses a handler may choose by throwing `new RpcError(kind, ...)`, with the result each is counted as.
 */
const HANDLER_STATUSES: Partial<Record<string, [stat: number, result: ResultName]>> = {
  PROC_UNAVAIL: [AcceptStat.PROC_UNAVAIL, 'PROC_UNAVAIL'],
  GARBAGE_ARGS: [AcceptStat.GARBAGE_ARGS, 'GARBAGE_ARGS'],
  SYSTEM_ERR: [AcceptStat.SYSTEM_ERR, 'SYSTEM_ERR'],
};

export class Replier {
  private readonly w = new XdrWriter(1024);

  constructor(
    private readonly fragmentSize: number,
    private readonly drc: DuplicateCache | null,
    private readonly onHandlerError?: (err: unknown, ctx: CallContext) => void,
  ) {}

  rpcMismatch(peer: Peer, xid: number): void {
    this.begin(peer.t);
    writeRpcMismatchReply(this.w, xid);
    peer.send(this.finish(peer));
  }

  authError(peer: Peer, xid: number, stat: number, drcToken = -1): void {
    this.begin(peer.t);
    writeAuthErrorReply(this.w, xid, stat);
    this.send(peer, this.finish(peer), drcToken);
  }

  progMismatch(peer: Peer, xid: number, verf: OpaqueAuth, low: number, high: number): void {
    this.begin(peer.t);
    writeProgMismatchReply(this.w, xid, verf, low, high);
    peer.send(this.finish(peer));
  }

  status(peer: Peer, xid: number, verf: OpaqueAuth, stat: number, drcToken = -1): void {
    this.begin(peer.t);
    writeAcceptedReply(this.w, xid, verf, stat);
    this.send(peer, this.finish(peer), drcToken);
  }

  /** A handler's result; over UDP, one longer than ctx.maxReplySize is refused instead (no amplification). */
  result(peer: Peer, ctx: CallContext, verf: OpaqueAuth, pe: ProcEntry, value: unknown, drcToken: number): void {
    const t = peer.t;
    this.begin(t);
    writeAcceptedReply(this.w, ctx.xid, verf, AcceptStat.SUCCESS);
    try {
      pe.proc!.result.encode(this.w, value);
    } catch (e) {
      return this.error(peer, ctx, verf, pe, e, drcToken);
    }
    if (t === T_UDP && this.w.pos > ctx.maxReplySize) {
      pe.counts[t].REPLY_TOO_LARGE++;
      return this.authError(peer, ctx.xid, AuthStat.AUTH_TOOWEAK, drcToken);
    }
    pe.counts[t].SUCCESS++;
    this.send(peer, this.finish(peer), drcToken);
  }

  /** What a handler threw: the status it chose (RpcError, RpcAuthError) or SYSTEM_ERR. */
  error(peer: Peer, ctx: CallContext, verf: OpaqueAuth, pe: ProcEntry, e: unknown, drcToken: number): void {
    const counts = pe.counts[peer.t];
    if (e instanceof RpcAuthError) {
      counts.AUTH_ERROR++;
      return this.authError(peer, ctx.xid, e.stat, drcToken);
    }
    const chosen = e instanceof RpcError ? HANDLER_STATUSES[e.kind] : undefined;
    if (!chosen) this.onHandlerError?.(e, ctx);
    const [stat, result] = chosen ?? [AcceptStat.SYSTEM_ERR, 'SYSTEM_ERR'];
    counts[result]++;
    this.status(peer, ctx.xid, verf, stat, drcToken);
  }

  private begin(t: number): void {
    if (t === T_TCP) beginRecord(this.w);
    else this.w.reset();
  }

  /** The reply in the writer, ready for peer.send: a copy, or a view of the writer where send copies it at once. */
  private finish(peer: Peer): Uint8Array {
    const w = this.w;
    if (peer.t === T_TCP) {
      if (!peer.copies) return endRecord(w, this.fragmentSize);
      const len = w.pos - 4;
      if (len > this.fragmentSize) return frameRecord(w.buf.subarray(4, w.pos), this.fragmentSize);
      w.patchUint(0, (LAST_FRAGMENT | len) >>> 0);
      return w.buf.subarray(0, w.pos);
    }
    if (peer.copies) return w.buf.subarray(0, w.pos);
    const out = Buffer.allocUnsafe(w.pos);
    out.set(w.buf.subarray(0, w.pos));
    return out;
  }

  private send(peer: Peer, reply: Uint8Array, drcToken: number): void {
    if (drcToken >= 0) this.drc!.complete(drcToken, reply);
    peer.send(reply);
  }
}
