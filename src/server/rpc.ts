// The DSTM program over ONC RPC: version 1 (Annex B, byte-exact) and version 2 (status codes, binding feed, admin).
// Identity is the RPC peer's IPv6 address and nothing else: `local` must equal it, AUTH_SYS credentials are
// accepted but never trusted. How each refusal travels in each version is documented in dstm-rpc(7).
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
import type { Logger } from '../lib/log';
import { AuthStat, RpcAuthError, RpcError } from '../rpc';
import type { CallContext, Service } from '../rpc/types';
import { equalBytes, formatIPv4, formatIPv6, inAny6, ipv4FromBytes, ipv4ToBytes, isV4Mapped, parseIPv6, type Prefix6 } from '../lib/addr';
import { STATUS, type StatusName } from '../protocol/status';
import { StoreUnavailable, type Grant, type LeaseService } from './leases';

export interface Access {
  /** Nodes allowed to REQUEST. */
  allow: readonly Prefix6[];
  /** Peers allowed to read the binding feed (the configured TEP addresses are added by the caller). */
  tepAllow: readonly Prefix6[];
  /** Peers allowed to call LIST, REVOKE and ALLOCATE. */
  adminAllow: readonly Prefix6[];
  /** Longest wait of a BINDINGS call, milliseconds. */
  feedMaxWait: number;
}

/** Changes per BINDINGS reply: UDP replies stay within one 8 KiB datagram, TCP ones within ~40 KiB. */
const FEED_MAX = { udp: 200, tcp: 1000 } as const;
const LIST_MAX = 1000;

const ZERO4 = new Uint8Array(4);
const ZERO16 = new Uint8Array(16);
const HOST_MASK = new Uint8Array([255, 255, 255, 255]);

/** A refusal decided before the lease logic runs (who is calling, what they sent). */
class Refused extends Error {
  constructor(
    readonly status: StatusName,
    message: string,
  ) {
    super(message);
  }
}

/** The caller's IPv6 address, or a refusal for IPv4 and IPv4-mapped peers (draft section 6: "MUST be in IPv6"). */
export function peerIPv6(ctx: CallContext): Buffer {
  if (ctx.family !== 'IPv6') throw new Refused('not_allowed', `IPv4 peer ${ctx.peerAddress} refused: DSTM is served over IPv6 only`);
  const b = Buffer.from(parseIPv6(ctx.peerAddress));
  if (isV4Mapped(b)) throw new Refused('not_allowed', `IPv4-mapped peer ${ctx.peerAddress} refused: DSTM is served over IPv6 only`);
  return b;
}

export class DstmRpc {
  /** Refusals decided here, before the lease logic ("op:reason" -> count), for metrics. */
  private readonly refusals = new Map<string, number>();

  constructor(
    private readonly leases: LeaseService,
    private access: Access,
    private readonly log: Logger,
  ) {}

  configure(access: Access): void {
    this.access = access;
  }

  /** The refusals counted here as metric samples {op, reason}. */
  refusalSamples(): { labels: { op: string; reason: string }; value: number }[] {
    return [...this.refusals].map(([k, value]) => {
      const [op, reason] = k.split(':');
      return { labels: { op, reason }, value };
    });
  }

  private refused(op: string, reason: StatusName): void {
    const k = `${op}:${reason}`;
    this.refusals.set(k, (this.refusals.get(k) ?? 0) + 1);
  }

  services(program: number): Service[] {
    return [
      RPC_ONE_service({ REQUEST: (a, c) => this.v1(a, c, 'request'), RELEASE: (a, c) => this.v1(a, c, 'release') }, program),
      RPC_TWO_service(
        {
          REQUEST: (a, c) => this.v2(a, c, 'request'),
          RELEASE: (a, c) => this.v2(a, c, 'release'),
          BINDINGS: (a, c) => this.bindings(a.since, a.max, a.wait_ms, a.epoch, c),
          LIST: (a, c) => this.list(a.after, a.max, c),
          REVOKE: (a, c) => this.admin(c, 'revoke', () => this.leases.revoke(Buffer.from(a.ip6), ipv4FromBytes(a.ip4))),
          ALLOCATE: (a, c) => this.admin(c, 'allocate', () => this.leases.allocate(Buffer.from(a.ip6), ipv4FromBytes(a.ip4), a.lease)),
        },
        program,
      ),
    ];
  }

  /** Validate the caller and its packet, then run the lease operation. */
  private async exchange(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<Grant> {
    const peer = peerIPv6(ctx);
    const want = op === 'request' ? REQUEST_REQ : RELEASE_REQ;
    if (p.type !== want) throw new Refused('bad_request', `${op.toUpperCase()} with type ${p.type}, expected ${want}`);
    if (!equalBytes(p.local, peer)) throw new Refused('not_allowed', `local ${formatIPv6(p.local)} is not the caller ${formatIPv6(peer)}`);
    if (op === 'request' && !inAny6(this.access.allow, peer)) throw new Refused('not_allowed', `${formatIPv6(peer)} is not in the allow list`);
    const ip4 = ipv4FromBytes(p.i4addr);
    const g = op === 'request' ? await this.leases.request(peer, ip4, p.keep) : await this.leases.release(peer, ip4);
    // Formatting addresses costs more than the rest of a call: only when the record is written.
    const level = g.status === 'ok' ? 'debug' : 'info';
    if (this.log.enabled(level)) this.log[level](g.status === 'ok' ? op : `${op} refused`, { node: formatIPv6(peer), ipv4: formatIPv4(g.ip4), status: g.status, transport: ctx.transport });
    return g;
  }

  /** Version 1: not-allowed and bad requests are RPC-level errors; no address / no binding is a zero i4addr. */
  private async v1(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<packet> {
    try {
      return replyPacket(await this.exchange(p, ctx, op), op, p.local);
    } catch (err) {
      if (err instanceof Refused) {
        this.refused(op, err.status);
        this.log.info(`${op} refused`, { peer: ctx.peerAddress, why: err.message });
        if (err.status === 'bad_request') throw new RpcError('GARBAGE_ARGS', err.message);
        throw new RpcAuthError(AuthStat.AUTH_TOOWEAK, err.message);
      }
      if (err instanceof StoreUnavailable) throw new RpcError('SYSTEM_ERR', err.message);
      throw err;
    }
  }

  private async v2(p: packet, ctx: CallContext, op: 'request' | 'release'): Promise<dstm_reply> {
    try {
      const g = await this.exchange(p, ctx, op);
      return { status: STATUS[g.status], lease: replyPacket(g, op, p.local) };
    } catch (err) {
      return this.v2Refusal(err, ctx, op, p.local);
    }
  }

  /** A refusal as a version 2 reply; anything else (a bug) goes up to the RPC server as SYSTEM_ERR. */
  private v2Refusal(err: unknown, ctx: CallContext, op: string, local: Uint8Array): dstm_reply {
    if (!(err instanceof Refused) && !(err instanceof StoreUnavailable)) throw err;
    const status: StatusName = err instanceof Refused ? err.status : 'unavailable';
    if (err instanceof Refused) this.refused(op, status);
    this.log.info(`${op} refused`, { peer: ctx.peerAddress, why: err.message });
    const type = op === 'release' ? RELEASE_REP : REQUEST_REP;
    return { status: STATUS[status], lease: emptyPacket(type, local.length === 16 ? local : ZERO16) };
  }

  private async bindings(since: bigint, max: number, waitMs: number, epoch: bigint, ctx: CallContext): Promise<dstm_bindings_reply> {
    const empty = (status: StatusName): dstm_bindings_reply => ({ status: STATUS[status], epoch: this.leases.epoch, next: 0n, changes: [], more: false });
    let peer: Buffer;
    try {
      peer = peerIPv6(ctx);
    } catch (err) {
      this.refused('bindings', (err as Refused).status);
      return empty((err as Refused).status);
    }
    if (!inAny6(this.access.tepAllow, peer)) {
      this.refused('bindings', 'not_allowed');
      this.log.info('BINDINGS refused', { peer: ctx.peerAddress, why: 'not in tep_allow' });
      return empty('not_allowed');
    }
    // A caller from another epoch (a rebuilt store) starts over from the whole state.
    const from = epoch !== 0n && epoch !== this.leases.epoch ? 0 : Number(since);
    const limit = Math.max(1, Math.min(max || FEED_MAX[ctx.transport], FEED_MAX[ctx.transport]));
    let r = this.leases.changes(from, limit);
    // a caller without the current epoch gets the (possibly empty) full state at once, not after a wait
    if (r.changes.length === 0 && waitMs > 0 && epoch === this.leases.epoch) {
      await this.leases.waitForChange(from, Math.min(waitMs, this.access.feedMaxWait));
      r = this.leases.changes(from, limit);
    }
    return {
      status: STATUS.ok,
      epoch: this.leases.epoch,
      next: BigInt(r.next),
      more: r.more,
      changes: r.changes.map((c) => ({ seq: BigInt(c.seq), ip6: c.ip6, ip4: ipv4ToBytes(c.ip4), starts: c.starts, ends: c.ends, active: c.active })),
    };
  }

  private adminAllowed(ctx: CallContext, what: string): boolean {
    try {
      if (inAny6(this.access.adminAllow, peerIPv6(ctx))) return true;
    } catch {
      // IPv4 peers are refused like any peer outside admin_allow
    }
    this.refused(what.toLowerCase(), 'not_allowed');
    this.log.info(`${what} refused`, { peer: ctx.peerAddress, why: 'not in admin_allow' });
    return false;
  }

  private list(after: Uint8Array, max: number, ctx: CallContext) {
    if (!this.adminAllowed(ctx, 'LIST')) return { status: STATUS.not_allowed, leases: [], more: false };
    const { leases, more } = this.leases.list(ipv4FromBytes(after), Math.max(1, Math.min(max || LIST_MAX, LIST_MAX)));
    return {
      status: STATUS.ok,
      more,
      leases: leases.map((b) => ({
        ip6: b.ip6,
        ip4: ipv4ToBytes(b.ip4),
        tep6: b.tep?.ipv6 ?? ZERO16,
        tep4: b.tep ? ipv4ToBytes(b.tep.ipv4) : ZERO4,
        starts: b.starts,
        ends: b.ends,
        state: b.state,
      })),
    };
  }

  private async admin(ctx: CallContext, what: 'revoke' | 'allocate', run: () => Promise<Grant>): Promise<dstm_reply> {
    if (!this.adminAllowed(ctx, what.toUpperCase())) return { status: STATUS.not_allowed, lease: emptyPacket(REQUEST_REP, ZERO16) };
    try {
      const g = await run();
      this.log.info(what, { node: formatIPv6(g.ip6), ipv4: formatIPv4(g.ip4), status: g.status, by: ctx.peerAddress });
      return { status: STATUS[g.status], lease: replyPacket(g, what === 'revoke' ? 'release' : 'request', g.ip6) };
    } catch (err) {
      return this.v2Refusal(err, ctx, what, ZERO16);
    }
  }
}

function emptyPacket(type: number, local: Uint8Array): packet {
  return { type, local, mask: ZERO4, i4addr: ZERO4, tep4: ZERO4, tep6: ZERO16, ends: 0, starts: 0, extend: 0, keep: 0 };
}

/**
 * The Annex B reply: starts/ends absolute (seconds since 1970, server clock); keep = seconds the lease is valid from
 * now, extend = seconds from now after which the node should renew (half the lease). A refusal has i4addr 0.0.0.0.
 */
export function replyPacket(g: Grant, op: 'request' | 'release', local: Uint8Array): packet {
  const type = op === 'request' ? REQUEST_REP : RELEASE_REP;
  if (g.status !== 'ok') return emptyPacket(type, local);
  const live = op === 'request';
  return {
    type,
    local,
    mask: live ? HOST_MASK : ZERO4,
    i4addr: ipv4ToBytes(g.ip4),
    tep4: g.tep ? ipv4ToBytes(g.tep.ipv4) : ZERO4,
    tep6: g.tep?.ipv6 ?? ZERO16,
    starts: g.starts,
    ends: g.ends,
    keep: live ? g.duration : 0,
    extend: live ? Math.floor(g.duration / 2) : 0,
  };
}
