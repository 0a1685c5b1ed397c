// Typed errors of the ONC RPC runtime. Every reply status a server can send has a kind, so callers can say in plain
// words what went wrong (e.g. "program 0x2d53544d version 3 is not served; it serves versions 1 to 1").

/** Why a call failed. The first seven are statuses a server sent (RFC 5531 section 9); the rest are local. */
export type RpcErrorKind =
  | 'PROG_UNAVAIL'
  | 'PROG_MISMATCH'
  | 'PROC_UNAVAIL'
  | 'GARBAGE_ARGS'
  | 'SYSTEM_ERR'
  | 'RPC_MISMATCH'
  | 'AUTH_ERROR'
  /** No reply within the call's timeout. */
  | 'TIMEOUT'
  /** The caller's AbortSignal fired. */
  | 'ABORTED'
  /** The client was closed (or the connection lost and reconnecting is off) before the reply came. */
  | 'CLOSED'
  /** The transport could not be set up (connect refused, address not resolvable, ...). */
  | 'UNREACHABLE'
  /** The reply could not be decoded (bad header or results that do not match the procedure's result type). */
  | 'BAD_REPLY'
  /** rpcbind knows no address for the program, version and netid asked for. */
  | 'NOT_REGISTERED'
  /** RPC-with-TLS failed: the server does not offer it, or its certificate does not verify or name the server. */
  | 'TLS';

export class RpcError extends Error {
  constructor(
    readonly kind: RpcErrorKind,
    message: string,
    /** The versions the server supports, for PROG_MISMATCH (program versions) and RPC_MISMATCH (RPC protocol). */
    readonly low?: number,
    readonly high?: number,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** auth_stat values (RFC 5531 section 9). */
export const AuthStat = {
  AUTH_OK: 0,
  AUTH_BADCRED: 1,
  AUTH_REJECTEDCRED: 2,
  AUTH_BADVERF: 3,
  AUTH_REJECTEDVERF: 4,
  AUTH_TOOWEAK: 5,
  AUTH_INVALIDRESP: 6,
  AUTH_FAILED: 7,
  AUTH_KERB_GENERIC: 8,
  AUTH_TIMEEXPIRE: 9,
  AUTH_TKT_FILE: 10,
  AUTH_DECODE: 11,
  AUTH_NET_ADDR: 12,
  RPCSEC_GSS_CREDPROBLEM: 13,
  RPCSEC_GSS_CTXPROBLEM: 14,
} as const;

const authStatWords: Record<number, string> = {
  0: 'success',
  1: 'bad credential (seal broken)',
  2: 'credential rejected: the client must begin a new session',
  3: 'bad verifier (seal broken)',
  4: 'verifier expired or replayed',
  5: 'credential rejected for security reasons (too weak)',
  6: 'bogus response verifier',
  7: 'reason unknown',
  8: 'Kerberos generic error',
  9: 'credential lifetime expired',
  10: 'problem with ticket file',
  11: 'cannot decode authenticator',
  12: 'wrong network address in ticket',
  13: 'no credentials for user',
  14: 'problem with context',
};

export function authStatName(stat: number): string {
  for (const [k, v] of Object.entries(AuthStat)) if (v === stat) return k;
  return `auth_stat ${stat}`;
}

/**
 * AUTH_ERROR: the server rejected the call's authentication. A server handler throws one to make the server reply
 * MSG_DENIED/AUTH_ERROR with `stat`; a client rejects a call with one when the server replied so.
 */
export class RpcAuthError extends RpcError {
  constructor(
    readonly stat: number,
    message = `authentication failed: ${authStatWords[stat] ?? 'unknown reason'} (${authStatName(stat)})`,
  ) {
    super('AUTH_ERROR', message);
    this.name = 'RpcAuthError';
  }
}
