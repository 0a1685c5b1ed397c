// The DSTM program over ONC RPC: version 1 (Annex B, byte-exact) and version 2 (status codes, binding feed, admin).
// Identity is the RPC peer's IPv6 address: `local` must equal it (or be link-local, as Annex B has it), AUTH_SYS
// credentials are accepted but never trusted, and addresses that cannot be one node's identity are refused. Under
// the mutual TLS policy the verified client certificate must also vouch for the caller: it names the node's address
// (or a configured mapping covers it), it is a TEP's for the feed, an admin's for the admin procedures. The abuse
// limits (TCP-only procedures, per-prefix rate and binding caps) are applied here, before the lease logic. How each
// refusal travels in each version, and what each setting stops, is documented in dstm-rpc(7).
import {
  RELEASE_REP,
  RELEASE_REQ,
  REQUEST_REP,
  REQUEST_REQ,
  RPC_ONE_service,
  RPC_TWO_service,
  type dstm_bindings_reply,
  type dstm_reply,
  type packet,
} from '../protocol/generated/dstm';
import type { PrefixCap, PrefixRate, TcpOnly } from '../config/server-schema';
import type { Logger } from '../lib/log';
import { prefixKey, RateLimiter } from '../lib/rate-limit';
import { AuthStat, RpcAuthError, RpcError } from '../rpc';
import type { TlsIdentity } from '../rpc/tls';
import type { CallContext, Service } from '../rpc/types';
import {
  equalBytes,
  formatIPv4,
  formatIPv6,
  inAny6,
  ipv4FromBytes,
  ipv4ToBytes,
  isV4Mapped,
  parseIPv6,
  prefixContains6,
  type Prefix6,
} from '../lib/addr';
import { STATUS, type StatusName } from '../protocol/status';
import type { LeaseClock } from './clock';
import { StoreUnavailable, type Grant, type LeaseService } from './leases';
import { MAX_LEASE_TIME } from './store';
import { PrefixCaps } from './prefix-cap';
import { RefusalLog } from './refusal-log';

export interface Access {
  /** Nodes allowed to REQUEST. */
  allow: readonly Prefix6[];
  /** Peers allowed to read the binding feed (the configured TEP addresses are added by the caller). */
  tepAllow: readonly Prefix6[];
  /** Peers allowed to call LIST, REVOKE and ALLOCATE. */
  adminAllow: readonly Prefix6[];
  /** Longest wait of a BINDINGS call, milliseconds. */
  feedMaxWait: number;
  /** Procedures refused over UDP: admin ones, or every state-changing one. */
  tcpOnly: TcpOnly;
  /** Shortest lease granted, seconds: a node asking for less gets this. */
  minLease: number;
  /** Most nodes with an active binding per IPv6 prefix. */
  perPrefix?: PrefixCap;
  /** REQUEST and RELEASE calls per second per IPv6 prefix. */
  rateLimit?: PrefixRate;
  /** Certificate rules of the mutual TLS policy; null under any other policy (the address alone identifies). */
  certs?: CertRules | null;
}

/** Who a verified client certificate may be (server.tls.nodes, admin, teps; names as certMatches reads them). */
export interface CertRules {
  nodes: readonly { name: string; prefix: Prefix6 }[];
  admin: readonly string[];
  teps: readonly string[];
  /** The configured TEPs' IPv6 addresses: a certificate naming one of them is that TEP's. */
  tepAddresses: readonly Uint8Array[];
}

/** A name from the configuration against a certificate: its CN, a DNS subjectAltName, or "sha256:" + key pin. */
export function certMatches(id: TlsIdentity, name: string): boolean {
  if (name.startsWith('sha256:')) return name.slice(7).toLowerCase() === id.keyFingerprint;
  return id.commonName === name || id.dnsNames.includes(name.toLowerCase());
}

function certNamesAddress(id: TlsIdentity, ip6: Uint8Array): boolean {
  return id.ipAddresses.some((a) => a.includes(':') && equalBytes(parseIPv6(a), ip6));
}

function certLabel(id: TlsIdentity | null | undefined): string {
  return id ? `certificate "${id.subject.replace(/\n/g, ', ')}"` : 'no client certificate';
}

/** Prefixes whose rate buckets are remembered at once (bounded memory: about 100 bytes each). */
export const RATE_LIMIT_KEYS = 65536;

/**
 * Largest TCP record the server takes. The largest DSTM call is 904 bytes: a 24-byte call header, a credential and
 * a verifier of at most 8 + 400 bytes each (longer ones are dropped unread), and a 64-byte packet (the largest
 * arguments: REQUEST and RELEASE; BINDINGS, LIST, REVOKE and ALLOCATE take 8 to 24). 8 KiB leaves room for arguments
 * to grow while 1024 connections' part-received records hold at most 8 MiB, not the runtime's 1 GiB.
 */
export const MAX_CALL_RECORD = 8192;

/** Changes per BINDINGS reply: UDP replies stay within one 8 KiB datagram, TCP ones within ~40 KiB. */
const FEED_MAX = { udp: 200, tcp: 1000 } as const;
/** XDR sizes of a BINDINGS reply: the RPC reply header and fixed fields, and each change. */
const FEED_REPLY_FIXED = 52;
const FEED_CHANGE_SIZE = 40;
const LIST_MAX = 1000;

const ZERO4 = new Uint8Array(4);
const ZERO16 = new Uint8Array(16);
const HOST_MASK = new Uint8Array([255, 255, 255, 255]);

/** The type of each operation's reply packet, refusals included: REVOKE ends a binding, so it answers as RELEASE. */
const REPLY_TYPE = { request: REQUEST_REP, release: RELEASE_REP, allocate: REQUEST_REP, revoke: RELEASE_REP } as const;
type Op = keyof typeof REPLY_TYPE;

/** A refusal decided before the lease logic runs (who is calling, what they sent). */
class Refused extends Error {
  constructor(
    readonly status: StatusName,
    message: string,
    /** The metrics label when it differs from the status (a limit). */
    readonly reason: string = status,
    /** What its log line is limited by when not the caller (RefusalLog): a limit's prefix, or the reason alone. */
    readonly logKey?: string,
  ) {
    super(message);
  }
}

/** In fe80::/10. */
function isLinkLocal(b: Uint8Array): boolean {
  return b[0] === 0xfe && (b[1] & 0xc0) === 0x80;
}

/**
 * Why an IPv6 source cannot be a node's identity, or undefined when it can. Unspecified and multicast addresses are
 * no node's; IPv4-mapped and IPv4-compatible ones are IPv4 peers (draft section 6: "MUST be in IPv6"); a link-local
 * address names a node only together with its link (zone), which the store does not keep, so link-local peers are
 * refused rather than letting fe80::1 on one link renew or release fe80::1's binding on another.
 */
export function identityProblem(b: Uint8Array): string | undefined {
  if (b[0] === 0xff) return 'a multicast address';
  if (isLinkLocal(b)) return 'link-local (use a global or unique local address)';
  if (isV4Mapped(b)) return 'IPv4-mapped: DSTM is served over IPv6 only';
  for (let i = 0; i < 12; i++) if (b[i] !== 0) return undefined;
  const v4 = (b[12] | b[13] | b[14]) !== 0 || b[15] > 1;
  if (v4) return 'IPv4-compatible: DSTM is served over IPv6 only';
  return b[15] === 0 ? 'the unspecified address' : undefined;
}

/** The caller's IPv6 address, or a refusal for IPv4 peers and addresses that cannot be a node's identity. */
export function peerIPv6(ctx: CallContext): Buffer {
  if (ctx.family !== 'IPv6')
    throw new Refused('not_allowed', `IPv4 peer ${ctx.peerAddress} refused: DSTM is served over IPv6 only`);
  const b = Buffer.from(parseIPv6(ctx.peerAddress));
  const problem = identityProblem(b);
  if (problem) throw new Refused('not_allowed', `peer ${ctx.peerAddress} refused: ${problem}`, 'bad_peer', 'bad_peer');
  return b;
}

/** Admin procedures, and the node procedures that change state: served over TCP only under server.tcp_only. */
function tcpOnly(setting: TcpOnly, kind: 'admin' | 'node'): boolean {
  return setting === 'changes' || (setting === 'admin' && kind === 'admin');
}

export class DstmRpc {
  /** Refusals decided here, before the lease logic ("op:reason" -> count), for metrics. */
  private readonly refusals = new Map<string, number>();
  private rate: RateLimiter | undefined;
  private rateSetting = '';
  private caps: PrefixCaps | undefined;
  private readonly refusalLog: RefusalLog;

  constructor(
    private readonly leases: LeaseService,
    private access: Access,
    private readonly log: Logger,
    /**
     * The embedded store's lease clock, whose times go on the wire as wall-clock times (clock.ts); none for a store
     * on the wall clock (PostgreSQL's database clock).
     */
    private readonly clock?: Pick<LeaseClock, 'behind'>,
  ) {
    this.refusalLog = new RefusalLog(log);
    this.configure(access);
  }

  /** Apply (re)loaded access rules; a limiter is rebuilt only when its own setting changed. */
  configure(access: Access): void {
    const r = access.rateLimit;
    if (!r) this.rate = undefined;
    else if (!this.rate || JSON.stringify(r) !== this.rateSetting)
      this.rate = new RateLimiter({ rate: r.rate, burst: r.burst, maxKeys: RATE_LIMIT_KEYS });
    this.rateSetting = JSON.stringify(r);
    const c = access.perPrefix;
    if (!c) this.caps = undefined;
    else if (!this.caps || this.caps.cap.len !== c.len || this.caps.cap.max !== c.max)
      this.caps = new PrefixCaps(c, this.leases);
    this.access = access;
  }

  /** The refusals counted here as metric samples {op, reason}. */
  refusalSamples(): { labels: { op: string; reason: string }; value: number }[] {
    return [...this.refusals].map(([k, value]) => {
      const [op, reason] = k.split(':');
      return { labels: { op, reason }, value };
    });
  }

  /** Seconds to add to the store's lease times for the wire (clock.ts): read once per reply. */
  private behind(): number {
    return this.clock ? this.clock.behind() : 0;
  }

  /** A refusal decided here: always counted (as `what` in lower case), logged as RefusalLog lets it. */
  private refuse(what: string, ctx: CallContext, err: Refused): void {
    const k = `${what.toLowerCase()}:${err.reason}`;
    this.refusals.set(k, (this.refusals.get(k) ?? 0) + 1);
    if (this.refusalLog.admit(err.reason, err.logKey ?? ctx.peerAddress))
      this.log.info(`${what} refused`, { peer: ctx.peerAddress, why: err.message, reason: err.reason });
  }

  services(program: number): Service[] {
    return [
      RPC_ONE_service(
        { REQUEST: (a, c) => this.v1(a, c, 'request'), RELEASE: (a, c) => this.v1(a, c, 'release') },
        program,
      ),
      RPC_TWO_service(
        {
          REQUEST: (a, c) => this.v2(a, c, 'request'),
          RELEASE: (a, c) => this.v2(a, c, 'release'),
          BINDINGS: (a, c) => this.bindings(a.since, a.max, a.wait_ms, a.epoch, c),
          LIST: (a, c) => this.list(a.after, a.max, c),
          REVOKE: (a, c) => this.admin(c, 'revoke', () => this.leases.revoke(Buffer.from(a.ip6), ipv4FromBytes(a.ip4))),
          ALLOCATE: (a, c) =>
            this.admin(c, 'allocate', () => this.allocate(Buffer.from(a.ip6), ipv4FromBytes(a.ip4), a.lease)),
        },
        program,
      ),
    ];
  }

  /** Validate the caller and its packet, then run the lease operation. */
  private async exchange(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<Grant> {
    if (ctx.transport === 'udp' && tcpOnly(this.access.tcpOnly, 'node'))
      throw new Refused(
        'not_allowed',
        `${op.toUpperCase()} over UDP refused: server.tcp_only is "changes"`,
        'tcp_only',
        'tcp_only',
      );
    const peer = peerIPv6(ctx);
    const want = op === 'request' ? REQUEST_REQ : RELEASE_REQ;
    if (p.type !== want) throw new Refused('bad_request', `${op.toUpperCase()} with type ${p.type}, expected ${want}`);
    // Annex B calls local a "Link-local address": a node that sends its link-local address is still identified by
    // the call's source (the reply echoes the local it sent); any other local must be that source.
    if (!isLinkLocal(p.local) && !equalBytes(p.local, peer))
      throw new Refused('not_allowed', `local ${formatIPv6(p.local)} is not the caller ${formatIPv6(peer)}`);
    const certs = this.access.certs;
    if (certs) {
      // RFC 9289 identity: the certificate names the node, or a configured mapping lets it act for the node.
      const id = ctx.tls?.peer;
      if (
        !id ||
        !(
          certNamesAddress(id, peer) ||
          certs.nodes.some((n) => prefixContains6(n.prefix, peer) && certMatches(id, n.name))
        )
      ) {
        throw new Refused(
          'not_allowed',
          `${certLabel(id)} does not name node ${formatIPv6(peer)} (no subjectAltName IP and no server.tls.nodes entry)`,
        );
      }
    }
    if (op === 'request' && !inAny6(this.access.allow, peer))
      throw new Refused('not_allowed', `${formatIPv6(peer)} is not in the allow list`);
    const r = this.access.rateLimit;
    if (r && this.rate && !this.rate.take(prefixKey(peer, r.len))) {
      throw new Refused(
        'unavailable',
        `over server.rate_limit (${r.rate}/s from each /${r.len})`,
        'rate_limited',
        `rate:${prefixKey(peer, r.len)}`,
      );
    }
    const ip4 = ipv4FromBytes(p.i4addr);
    if (op === 'release') return this.logged(await this.leases.release(peer, ip4), op, peer, ctx);
    const admission = await this.caps?.admit(peer);
    if (admission && !admission.ok) {
      throw new Refused(
        'not_allowed',
        `over server.per_prefix: ${this.caps!.cap.max} nodes of this /${this.caps!.cap.len} hold a binding`,
        'prefix_cap',
        `cap:${admission.key}`,
      );
    }
    // A node asking for less than the shortest lease gets the shortest one (0 still means the server's default).
    const keep = p.keep === 0 ? 0 : Math.max(p.keep, this.access.minLease);
    try {
      return this.logged(await this.leases.request(peer, ip4, keep), op, peer, ctx);
    } finally {
      admission?.done();
    }
  }

  /** A grant's line: at debug, or for a refusal by the lease logic at info, as RefusalLog lets it. */
  private logged(g: Grant, op: string, peer: Buffer, ctx: CallContext): Grant {
    const ok = g.status === 'ok';
    const level = ok ? 'debug' : 'info';
    // Formatting addresses costs more than the rest of a call: only when the record is written.
    if (this.log.enabled(level) && (ok || this.refusalLog.admit(g.status, ctx.peerAddress)))
      this.log[level](ok ? op : `${op} refused`, {
        node: formatIPv6(peer),
        ipv4: formatIPv4(g.ip4),
        status: g.status,
        transport: ctx.transport,
      });
    return g;
  }

  /**
   * A call the store could not serve: counted as refused (unavailable), and logged under one key whoever called: an
   * outage refuses every call, and the store logs the outage itself.
   */
  private storeRefused(op: string, ctx: CallContext, err: StoreUnavailable): void {
    this.refuse(op, ctx, new Refused('unavailable', err.message, 'unavailable', 'store'));
  }

  /** Version 1: not-allowed and bad requests are RPC-level errors; no address / no binding is a zero i4addr. */
  private async v1(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<packet> {
    try {
      return replyPacket(await this.exchange(p, ctx, op), op, p.local, this.behind());
    } catch (err) {
      if (err instanceof Refused) {
        this.refuse(op, ctx, err);
        if (err.status === 'bad_request') throw new RpcError('GARBAGE_ARGS', err.message);
        if (err.status === 'unavailable') throw new RpcError('SYSTEM_ERR', err.message);
        throw new RpcAuthError(AuthStat.AUTH_TOOWEAK, err.message);
      }
      if (err instanceof StoreUnavailable) {
        this.storeRefused(op, ctx, err);
        throw new RpcError('SYSTEM_ERR', err.message);
      }
      throw err;
    }
  }

  private async v2(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<dstm_reply> {
    try {
      const g = await this.exchange(p, ctx, op);
      return { status: STATUS[g.status], lease: replyPacket(g, op, p.local, this.behind()) };
    } catch (err) {
      return this.v2Refusal(err, ctx, op, p.local);
    }
  }

  /** A refusal as a version 2 reply; anything else (a bug) goes up to the RPC server as SYSTEM_ERR. */
  private v2Refusal(err: unknown, ctx: CallContext, op: Op, local: Uint8Array): dstm_reply {
    if (!(err instanceof Refused) && !(err instanceof StoreUnavailable)) throw err;
    const status: StatusName = err instanceof Refused ? err.status : 'unavailable';
    if (err instanceof Refused) this.refuse(op, ctx, err);
    else this.storeRefused(op, ctx, err);
    return { status: STATUS[status], lease: emptyPacket(REPLY_TYPE[op], local.length === 16 ? local : ZERO16) };
  }

  private async bindings(
    since: bigint,
    max: number,
    waitMs: number,
    epoch: bigint,
    ctx: CallContext,
  ): Promise<dstm_bindings_reply> {
    const empty = (status: StatusName): dstm_bindings_reply => ({
      status: STATUS[status],
      epoch: this.leases.epoch,
      next: 0n,
      changes: [],
      more: false,
    });
    let peer: Buffer;
    try {
      peer = peerIPv6(ctx);
    } catch (err) {
      this.refuse('BINDINGS', ctx, err as Refused);
      return empty((err as Refused).status);
    }
    if (!inAny6(this.access.tepAllow, peer)) {
      this.refuse('BINDINGS', ctx, new Refused('not_allowed', 'not in tep_allow'));
      return empty('not_allowed');
    }
    const certs = this.access.certs;
    const id = ctx.tls?.peer;
    if (
      certs &&
      !(id && (certs.tepAddresses.some((a) => certNamesAddress(id, a)) || certs.teps.some((n) => certMatches(id, n))))
    ) {
      this.refuse(
        'BINDINGS',
        ctx,
        new Refused(
          'not_allowed',
          `${certLabel(id)} is not a TEP's (server.tls.teps, or a TEP address in its subjectAltName)`,
        ),
      );
      return empty('not_allowed');
    }
    // A caller from another epoch (a rebuilt store) starts over from the whole state.
    const from = epoch !== 0n && epoch !== this.leases.epoch ? 0 : Number(since);
    // Over UDP a reply may be only a few times its call (no amplification, dstm-rpc(7) RPC LIMITS): fewer changes.
    const fits = Math.floor((ctx.maxReplySize - FEED_REPLY_FIXED) / FEED_CHANGE_SIZE);
    const limit = Math.max(1, Math.min(max || FEED_MAX[ctx.transport], FEED_MAX[ctx.transport], fits));
    let r: Awaited<ReturnType<LeaseService['changes']>>;
    try {
      r = await this.leases.changes(from, limit);
      // a caller without the current epoch gets the (possibly empty) full state at once, not after a wait
      if (r.changes.length === 0 && !r.reset && waitMs > 0 && epoch === this.leases.epoch) {
        await this.leases.waitForChange(from, Math.min(waitMs, this.access.feedMaxWait));
        r = await this.leases.changes(from, limit);
      }
    } catch (err) {
      if (!(err instanceof StoreUnavailable)) throw err;
      return empty('unavailable');
    }
    // Beyond the last sequence number (a restored store): epoch 0 with more set, so the caller starts over from 0.
    if (r.reset) return { status: STATUS.ok, epoch: 0n, next: 0n, changes: [], more: true };
    const behind = this.behind();
    return {
      status: STATUS.ok,
      epoch: this.leases.epoch,
      next: BigInt(r.next),
      more: r.more,
      changes: r.changes.map((c) => ({
        seq: BigInt(c.seq),
        ip6: c.ip6,
        ip4: ipv4ToBytes(c.ip4),
        starts: onWire(c.starts, behind),
        ends: onWire(c.ends, behind),
        active: c.active,
      })),
    };
  }

  private adminAllowed(ctx: CallContext, what: string): boolean {
    if (ctx.transport === 'udp' && tcpOnly(this.access.tcpOnly, 'admin')) {
      this.refuse(
        what,
        ctx,
        new Refused(
          'not_allowed',
          `${what} over UDP refused: server.tcp_only is "${this.access.tcpOnly}"`,
          'tcp_only',
          'tcp_only',
        ),
      );
      return false;
    }
    let why = 'not in admin_allow';
    try {
      if (inAny6(this.access.adminAllow, peerIPv6(ctx))) {
        const certs = this.access.certs;
        const id = ctx.tls?.peer;
        if (!certs || (id && certs.admin.some((n) => certMatches(id, n)))) return true;
        why = `${certLabel(id)} is not in server.tls.admin`;
      }
    } catch {
      // IPv4 peers and peers that cannot be an identity are refused like any peer outside admin_allow
    }
    this.refuse(what, ctx, new Refused('not_allowed', why));
    return false;
  }

  private async list(after: Uint8Array, max: number, ctx: CallContext) {
    if (!this.adminAllowed(ctx, 'LIST')) return { status: STATUS.not_allowed, leases: [], more: false };
    let page: Awaited<ReturnType<LeaseService['list']>>;
    try {
      page = await this.leases.list(ipv4FromBytes(after), Math.max(1, Math.min(max || LIST_MAX, LIST_MAX)));
    } catch (err) {
      if (!(err instanceof StoreUnavailable)) throw err;
      return { status: STATUS.unavailable, leases: [], more: false };
    }
    const { leases, more } = page;
    const behind = this.behind();
    return {
      status: STATUS.ok,
      more,
      leases: leases.map((b) => ({
        ip6: b.ip6,
        ip4: ipv4ToBytes(b.ip4),
        tep6: b.tep?.ipv6 ?? ZERO16,
        tep4: b.tep ? ipv4ToBytes(b.tep.ipv4) : ZERO4,
        starts: onWire(b.starts, behind),
        ends: onWire(b.ends, behind),
        state: b.state,
      })),
    };
  }

  /** An admin allocation: only to an address that can be a node's identity, for at least the shortest lease. */
  private allocate(ip6: Buffer, ip4: number, seconds: number): Promise<Grant> {
    const problem = identityProblem(ip6);
    if (problem) throw new Refused('bad_request', `ALLOCATE for ${formatIPv6(ip6)} refused: ${problem}`);
    return this.leases.allocate(ip6, ip4, seconds === 0 ? 0 : Math.max(seconds, this.access.minLease));
  }

  private async admin(ctx: CallContext, what: 'revoke' | 'allocate', run: () => Promise<Grant>): Promise<dstm_reply> {
    if (!this.adminAllowed(ctx, what.toUpperCase()))
      return { status: STATUS.not_allowed, lease: emptyPacket(REPLY_TYPE[what], ZERO16) };
    try {
      const g = await run();
      this.log.info(what, { node: formatIPv6(g.ip6), ipv4: formatIPv4(g.ip4), status: g.status, by: ctx.peerAddress });
      const op = what === 'revoke' ? 'release' : 'request';
      return { status: STATUS[g.status], lease: replyPacket(g, op, g.ip6, this.behind()) };
    } catch (err) {
      return this.v2Refusal(err, ctx, what, ZERO16);
    }
  }
}

/**
 * A stored lease time as replies carry it: on the wall clock (`behind`: clock.ts), and within 32 bits, which the
 * stores keep to but a lagging clock's translation, or a row stored by an older version, may pass.
 */
function onWire(t: number, behind: number): number {
  return Math.min(t + behind, MAX_LEASE_TIME);
}

function emptyPacket(type: number, local: Uint8Array): packet {
  return { type, local, mask: ZERO4, i4addr: ZERO4, tep4: ZERO4, tep6: ZERO16, ends: 0, starts: 0, extend: 0, keep: 0 };
}

/**
 * The Annex B reply: starts/ends absolute (seconds since 1970 UTC: the store's times plus `behind`); keep = seconds
 * the lease is valid from now, extend = seconds from now after which the node should renew (half the lease). A
 * refusal has i4addr 0.0.0.0.
 * A REQUEST's starts is when this lease starts (Annex B: "When the lease starts"), the grant, so that ends - starts
 * is keep on a renewal too; a RELEASE's is the binding's (when the node first got the address), as LIST has it.
 */
function replyPacket(g: Grant, op: 'request' | 'release', local: Uint8Array, behind: number): packet {
  const type = REPLY_TYPE[op];
  if (g.status !== 'ok') return emptyPacket(type, local);
  const live = op === 'request';
  return {
    type,
    local,
    mask: live ? HOST_MASK : ZERO4,
    i4addr: ipv4ToBytes(g.ip4),
    tep4: g.tep ? ipv4ToBytes(g.tep.ipv4) : ZERO4,
    tep6: g.tep?.ipv6 ?? ZERO16,
    starts: onWire(live ? g.at : g.starts, behind),
    ends: onWire(g.ends, behind),
    keep: live ? g.duration : 0,
    // never 0: a node renewing "after 0 seconds" would renew in a loop
    extend: live ? Math.max(1, Math.floor(g.duration / 2)) : 0,
  };
}
