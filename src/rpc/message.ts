// RPC messages (RFC 5531 section 9): the call header, and the reply in every accepted and denied form.
// Hand-written over the XDR runtime; the server's hot path writes replies straight into a reused writer.
import type { OpaqueAuth } from './types';
import { XdrError, type XdrReader, type XdrWriter } from './xdr/runtime';

export const RPC_VERSION = 2;
export const CALL = 0;
export const REPLY = 1;
export const MSG_ACCEPTED = 0;
export const MSG_DENIED = 1;
export const RPC_MISMATCH = 0;
export const AUTH_ERROR = 1;
/** opaque_auth bodies are at most 400 bytes (section 8.2). */
export const MAX_AUTH_BYTES = 400;

export const AcceptStat = {
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const;
export type AcceptStatName = keyof typeof AcceptStat;
const acceptNames = Object.keys(AcceptStat) as AcceptStatName[];

export const AUTH_NONE = 0;
export const AUTH_SYS = 1;
/** The shared AUTH_NONE credential/verifier: flavor 0 with an empty body. */
export const NULL_AUTH: OpaqueAuth = Object.freeze({ flavor: AUTH_NONE, body: new Uint8Array(0) });

export interface CallHeader {
  xid: number;
  program: number;
  version: number;
  procedure: number;
  credential: OpaqueAuth;
  verifier: OpaqueAuth;
}

/**
 * A reply header. For SUCCESS the procedure's results follow in the reader; PROG_MISMATCH and RPC_MISMATCH carry the
 * supported low/high versions; AUTH_ERROR carries the auth_stat.
 */
export type ReplyHeader =
  | {
      xid: number;
      status: 'SUCCESS' | 'PROG_UNAVAIL' | 'PROC_UNAVAIL' | 'GARBAGE_ARGS' | 'SYSTEM_ERR';
      verifier: OpaqueAuth;
    }
  | { xid: number; status: 'PROG_MISMATCH'; verifier: OpaqueAuth; low: number; high: number }
  | { xid: number; status: 'RPC_MISMATCH'; low: number; high: number }
  | { xid: number; status: 'AUTH_ERROR'; stat: number };

export function writeAuth(w: XdrWriter, a: OpaqueAuth): void {
  w.uint(a.flavor);
  w.varOpaque(a.body, MAX_AUTH_BYTES);
}

export function readAuth(r: XdrReader, what: string): OpaqueAuth {
  const flavor = r.uint();
  // The shared empty body keeps the common AUTH_NONE case free of allocation.
  if (
    r.remaining >= 4 &&
    r.buf[r.pos] === 0 &&
    r.buf[r.pos + 1] === 0 &&
    r.buf[r.pos + 2] === 0 &&
    r.buf[r.pos + 3] === 0
  ) {
    r.pos += 4;
    return flavor === AUTH_NONE ? NULL_AUTH : { flavor, body: NULL_AUTH.body };
  }
  return { flavor, body: r.varOpaque(MAX_AUTH_BYTES, what) };
}

export function writeCallHeader(w: XdrWriter, h: CallHeader): void {
  w.uint(h.xid);
  w.uint(CALL);
  w.uint(RPC_VERSION);
  w.uint(h.program);
  w.uint(h.version);
  w.uint(h.procedure);
  writeAuth(w, h.credential);
  writeAuth(w, h.verifier);
}

/**
 * The start of a call as the server sees it, read in the order the server must judge it: a message that is not a
 * CALL, or is cut short, throws (the caller drops it); a wrong RPC version is returned as such so that the server can
 * answer RPC_MISMATCH without reading further, since the rest of the header may have another layout.
 */
export function readCallHeader(r: XdrReader): CallHeader | { xid: number; rpcVersion: number } {
  const xid = r.uint();
  const mtype = r.uint();
  if (mtype !== CALL) r.fail('msg_type', `expected CALL (0), got ${mtype}`);
  const rpcVersion = r.uint();
  if (rpcVersion !== RPC_VERSION) return { xid, rpcVersion };
  const program = r.uint();
  const version = r.uint();
  const procedure = r.uint();
  const credential = readAuth(r, 'credential');
  const verifier = readAuth(r, 'verifier');
  return { xid, program, version, procedure, credential, verifier };
}

/** MSG_ACCEPTED with `stat`; for SUCCESS the caller writes the results next. */
export function writeAcceptedReply(w: XdrWriter, xid: number, verifier: OpaqueAuth, stat: number): void {
  w.uint(xid);
  w.uint(REPLY);
  w.uint(MSG_ACCEPTED);
  writeAuth(w, verifier);
  w.uint(stat);
}

export function writeProgMismatchReply(
  w: XdrWriter,
  xid: number,
  verifier: OpaqueAuth,
  low: number,
  high: number,
): void {
  writeAcceptedReply(w, xid, verifier, AcceptStat.PROG_MISMATCH);
  w.uint(low);
  w.uint(high);
}

export function writeRpcMismatchReply(w: XdrWriter, xid: number, low = RPC_VERSION, high = RPC_VERSION): void {
  w.uint(xid);
  w.uint(REPLY);
  w.uint(MSG_DENIED);
  w.uint(RPC_MISMATCH);
  w.uint(low);
  w.uint(high);
}

export function writeAuthErrorReply(w: XdrWriter, xid: number, stat: number): void {
  w.uint(xid);
  w.uint(REPLY);
  w.uint(MSG_DENIED);
  w.uint(AUTH_ERROR);
  w.uint(stat);
}

/** Any reply header (the results of a SUCCESS are written by the caller). */
export function writeReplyHeader(w: XdrWriter, h: ReplyHeader): void {
  switch (h.status) {
    case 'RPC_MISMATCH':
      return writeRpcMismatchReply(w, h.xid, h.low, h.high);
    case 'AUTH_ERROR':
      return writeAuthErrorReply(w, h.xid, h.stat);
    case 'PROG_MISMATCH':
      return writeProgMismatchReply(w, h.xid, h.verifier, h.low, h.high);
    default:
      return writeAcceptedReply(w, h.xid, h.verifier, AcceptStat[h.status]);
  }
}

/** Read a reply header; throws XdrError on anything that is not a well-formed reply. */
export function readReplyHeader(r: XdrReader): ReplyHeader {
  const xid = r.uint();
  const mtype = r.uint();
  if (mtype !== REPLY) r.fail('msg_type', `expected REPLY (1), got ${mtype}`);
  const rstat = r.uint();
  if (rstat === MSG_ACCEPTED) {
    const verifier = readAuth(r, 'verifier');
    const stat = r.uint();
    const status = acceptNames[stat];
    if (status === undefined) throw new XdrError('accept_stat', `unknown value ${stat}`, r.pos - 4);
    if (status === 'PROG_MISMATCH') return { xid, status, verifier, low: r.uint(), high: r.uint() };
    return { xid, status, verifier };
  }
  if (rstat !== MSG_DENIED) r.fail('reply_stat', `unknown value ${rstat}`);
  const reject = r.uint();
  if (reject === RPC_MISMATCH) return { xid, status: 'RPC_MISMATCH', low: r.uint(), high: r.uint() };
  if (reject === AUTH_ERROR) return { xid, status: 'AUTH_ERROR', stat: r.uint() };
  return r.fail('reject_stat', `unknown value ${reject}`);
}
