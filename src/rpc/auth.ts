// Authentication flavors (RFC 5531 sections 8.2 and 10, Appendix A). A flavor has a client half, which makes the
// credential and verifier of each call, and a server half, which judges them: a principal, or an auth_stat to
// refuse the call with. AUTH_NONE and AUTH_SYS are built in; a later flavor plugs in by implementing both halves.
import { hostname } from 'node:os';
import { AuthStat } from './errors';
import { AUTH_NONE, AUTH_SYS, NULL_AUTH } from './message';
import type { OpaqueAuth } from './types';
import { XdrError, XdrReader, XdrWriter } from './xdr/runtime';

/** Client half: what goes in each call's cred and verf fields, and (optionally) a check of each reply's verifier. */
export interface ClientAuth {
  readonly flavor: number;
  credential(): OpaqueAuth;
  verifier(): OpaqueAuth;
  /** False rejects the call with AUTH_INVALIDRESP (a bogus reply verifier). Built-in flavors do not check. */
  checkReplyVerifier?(verifier: OpaqueAuth, xid: number): boolean;
}

/** Server half: validates one flavor's credential and verifier. */
export interface ServerAuth {
  readonly flavor: number;
  /** Return the principal, or a number (an auth_stat other than AUTH_OK) to reply AUTH_ERROR with. */
  validate(credential: OpaqueAuth, verifier: OpaqueAuth): { principal: unknown } | number;
  /**
   * The verifier to put in an accepted reply to the call of this principal and XID (AUTH_NONE for both built-in
   * flavors; a flavor such as RPCSEC_GSS computes one per call).
   */
  replyVerifier(principal: unknown, xid: number): OpaqueAuth;
}

const ANONYMOUS = Object.freeze({ principal: null });

export const authNone: ClientAuth & ServerAuth = {
  flavor: AUTH_NONE,
  credential: () => NULL_AUTH,
  verifier: () => NULL_AUTH,
  // RFC 5531 section 10.1: the body is undefined (zero length only recommended), so any body is accepted, as
  // libtirpc does; the header reader has already bounded it to 400 bytes.
  validate: () => ANONYMOUS,
  replyVerifier: () => NULL_AUTH,
};

/** authsys_parms (RFC 5531 Appendix A). */
export interface AuthSysParams {
  stamp: number;
  /**
   * Encoded as UTF-8; decoded byte for byte (latin1), since RFC 5531 names no character set and libtirpc takes any
   * bytes: a name in Latin-1 or another 8-bit set is accepted, and Buffer.from(machinename, 'latin1') gives its bytes.
   */
  machinename: string;
  uid: number;
  gid: number;
  gids: number[];
}

export const AUTH_SYS_MAX_MACHINENAME = 255;
export const AUTH_SYS_MAX_GIDS = 16;

function writeAuthSys(w: XdrWriter, p: AuthSysParams): void {
  w.uint(p.stamp);
  w.string(p.machinename, AUTH_SYS_MAX_MACHINENAME);
  w.uint(p.uid);
  w.uint(p.gid);
  w.count(p.gids.length, AUTH_SYS_MAX_GIDS, 'gids');
  for (const g of p.gids) w.uint(g);
}

/** Decode an AUTH_SYS credential body strictly (limits, padding, no trailing bytes); throws XdrError. */
export function decodeAuthSys(body: Uint8Array): AuthSysParams {
  const r = new XdrReader(body);
  const stamp = r.uint();
  const name = r.varOpaque(AUTH_SYS_MAX_MACHINENAME, 'machinename');
  const machinename = Buffer.from(name.buffer, name.byteOffset, name.length).toString('latin1');
  const uid = r.uint();
  const gid = r.uint();
  const n = r.count(AUTH_SYS_MAX_GIDS, 4, 'gids');
  const gids = new Array<number>(n);
  for (let i = 0; i < n; i++) gids[i] = r.uint();
  r.done('authsys_parms');
  return { stamp, machinename, uid, gid, gids };
}

/** Encode an AUTH_SYS credential body; throws a RangeError naming the limit a field exceeds. */
export function encodeAuthSys(p: AuthSysParams): Uint8Array {
  if (Buffer.byteLength(p.machinename) > AUTH_SYS_MAX_MACHINENAME)
    throw new RangeError(
      `AUTH_SYS machine name is ${Buffer.byteLength(p.machinename)} bytes; at most ${AUTH_SYS_MAX_MACHINENAME} are allowed`,
    );
  if (p.gids.length > AUTH_SYS_MAX_GIDS)
    throw new RangeError(`AUTH_SYS carries at most ${AUTH_SYS_MAX_GIDS} groups; ${p.gids.length} given`);
  const w = new XdrWriter(64);
  try {
    writeAuthSys(w, p);
  } catch (e) {
    if (e instanceof XdrError) throw new RangeError(`AUTH_SYS credential: ${e.message}`);
    throw e;
  }
  return w.toBytes();
}

/** Client half of AUTH_SYS: the credential is encoded once, when the flavor is made. */
export class AuthSys implements ClientAuth {
  readonly flavor = AUTH_SYS;
  readonly params: AuthSysParams;
  private readonly cred: OpaqueAuth;

  constructor(p: Partial<AuthSysParams> = {}) {
    this.params = {
      stamp: p.stamp ?? Math.floor(Date.now() / 1000) >>> 0,
      machinename: p.machinename ?? hostname(),
      uid: p.uid ?? process.getuid?.() ?? 0,
      gid: p.gid ?? process.getgid?.() ?? 0,
      gids: p.gids ?? [],
    };
    this.cred = { flavor: AUTH_SYS, body: encodeAuthSys(this.params) };
  }

  credential(): OpaqueAuth {
    return this.cred;
  }

  verifier(): OpaqueAuth {
    return NULL_AUTH;
  }
}

/** Server half of AUTH_SYS: the principal is the decoded authsys_parms; a malformed body is AUTH_BADCRED. */
export const authSysServer: ServerAuth = {
  flavor: AUTH_SYS,
  validate(cred) {
    try {
      return { principal: decodeAuthSys(cred.body) };
    } catch {
      return AuthStat.AUTH_BADCRED;
    }
  },
  replyVerifier: () => NULL_AUTH,
};
