// The durable binding store as the lease policy sees it: whole lease transactions, each atomic and durable before
// its promise settles, behind one interface that two engines implement (sqlite-store.ts, embedded in the state
// directory; postgres-store.ts, shared by several servers). The policy (who may get what, for how long, which
// addresses to try in which order) stays in LeaseService; a store executes. Uniqueness is the store's job: one row
// per IPv4 address and at most one live (active or held) binding per node, whatever the callers race.
// Lease times come from the store's clock, so servers sharing a store agree on who holds what.
// The change feed the TEPs follow is a compacted log: one row per address holding its latest change, under a
// strictly increasing sequence number, so reading it from 0 gives the whole current state and reading it from a
// later point gives what changed since. It shows only durable changes, in one order for every reader.

import { randomBytes } from 'node:crypto';
import type { dstm_state } from '../protocol/generated/dstm';
import { STATE, STATE_NAMES, type StateName } from '../protocol/status';

export { STATE, STATE_NAMES, type StateName };
/** A binding's state, stored as its dstm_state value. */
export type State = dstm_state;

/** The latest lease time: starts and ends are 32-bit unsigned seconds on the wire (xdr/dstm.x), so until 2106. */
export const MAX_LEASE_TIME = 0xffffffff;

/** When a lease granted at `now` for `duration` seconds ends: never past what the wire can carry. */
export function leaseEnd(now: number, duration: number): number {
  return Math.min(now + duration, MAX_LEASE_TIME);
}

export interface Binding {
  ip4: number;
  ip6: Buffer;
  state: State;
  /** Absolute seconds: when the node first got this address. */
  starts: number;
  /** Absolute seconds: when the current lease ends (for held and revoked rows: when it ended). */
  ends: number;
}

export interface Change {
  seq: number;
  ip4: number;
  ip6: Buffer;
  starts: number;
  ends: number;
  active: boolean;
}

/** A new epoch: random, non-zero (0 means "no epoch yet" on the wire). */
export function newEpoch(): bigint {
  return randomBytes(8).readBigUInt64BE() | 1n;
}

/**
 * The store cannot execute or make durable: the caller gets DSTM_UNAVAILABLE (or no reply), never a binding that may be
 * lost.
 */
export class StoreUnavailable extends Error {
  constructor(override readonly cause: unknown) {
    super(`the binding store is unavailable: ${(cause as Error)?.message ?? cause}`);
    this.name = 'StoreUnavailable';
  }
}

/**
 * The addresses a grant may bind, in the policy's order, drawn one at a time. An address the store finds bound is
 * dropped (the store is the authority); one drawn but not bound — not tried, or its transaction rolled back — is
 * handed back through unused().
 */
export interface Candidates {
  next(): number | undefined;
  unused(ip4: number): void;
}

export interface GrantOp {
  ip6: Buffer;
  /** Lease length from now, seconds. */
  duration: number;
  /** Only this address (admin ALLOCATE of one address): a node bound to another one is a 'mismatch', unchanged. */
  only?: number;
  /** Tried in order when the node has no live binding. */
  candidates: Candidates;
}

/** `now`: the store's clock (absolute seconds) when the transaction ran. */
export type GrantOutcome =
  { kind: 'renewed' | 'bound'; binding: Binding; now: number } | { kind: 'exhausted' | 'mismatch'; now: number };

/** RELEASE and REVOKE: the binding as the change left it, or none when the node had no live binding at `ip4`. */
export interface EndOutcome {
  binding?: Binding;
  now: number;
}

export interface SweepOutcome {
  /** Active bindings whose lease ended (now held). */
  expired: number;
  /** Held and revoked addresses whose hold time was over, now free. */
  reclaimed: number[];
}

/** restore(): row `index` of the import collides with a binding the store holds (`existing`). */
export class RestoreConflict extends Error {
  constructor(
    readonly index: number,
    readonly existing: Binding,
    readonly why: 'address' | 'node',
  ) {
    super(why === 'address' ? 'the address is bound in the store' : 'the node has a live binding in the store');
    this.name = 'RestoreConflict';
  }
}

/** Opening a store for restore(): a server (or another reader) has it open. */
export class StoreInUse extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreInUse';
  }
}

export interface StoreHealth {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
}

export type StateCounts = Record<StateName, number>;

/**
 * Events: 'change' (seq: number) when the last durable feed sequence number grew (whichever server wrote it);
 * 'health' (StoreHealth) when the store becomes unavailable or available again; 'numbering' (StoreHealth) when
 * feed numbering passes begin to fail (their changes wait for a later pass) or succeed again; 'batch' (size: number)
 * after each batch of operations that arrived together (one transaction, or one each when one of them failed it).
 */
export interface Store {
  readonly engine: 'sqlite' | 'postgresql';
  /** Several servers may write it: the policy's picture of free addresses is only a hint. */
  readonly shared: boolean;
  /** Identifies this store's history: a new, rebuilt or restored store has a new epoch, so TEPs start over. */
  readonly epoch: bigint;
  /** Last durable feed sequence number. */
  readonly lastSeq: number;
  /** What the logs may show of where the store is (never a password). */
  readonly where: string;
  /** Feed numbering passes that failed, for an engine that numbers the feed apart from the lease transactions. */
  readonly numberingFailures?: number;

  /** REQUEST and ALLOCATE: renew the node's live binding, or bind the first free candidate. */
  grant(op: GrantOp): Promise<GrantOutcome>;
  /**
   * RELEASE: the node's active binding (at `ip4` when non-zero) becomes held until the hold time ends, like an
   * expiry: the address goes to no other node before then (the node itself may have it back). May settle before it is
   * durable (losing a release leaves the address with the same node until its lease ends).
   */
  release(ip6: Buffer, ip4: number): Promise<EndOutcome>;
  /** Admin REVOKE: the node's live binding (at `ip4` when non-zero) ends now and is quarantined for the hold time. */
  revoke(ip6: Buffer, ip4: number): Promise<EndOutcome>;
  /** The node's live binding (active or held), if it has one. */
  liveBinding(ip6: Buffer): Promise<Binding | undefined>;
  /**
   * Expire ended leases and reclaim addresses held for `hold` seconds, a bounded batch at a time; safe on every server
   * at once.
   */
  sweep(hold: number): Promise<SweepOutcome>;
  /** Is there sweep work (something expired, a hold over)? */
  sweepDue(hold: number): Promise<boolean>;
  /**
   * Durable changes after `since`, oldest first, at most `max`; `more` when further ones are ready; `last`: the last
   * durable sequence number as the read saw it (a caller beyond it follows another history).
   */
  feedSince(since: number, max: number): Promise<{ changes: Change[]; more: boolean; last: number }>;
  /** Bindings with ip4 above `after`, ascending, at most `max`. */
  list(after: number, max: number): Promise<Binding[]>;
  /** Every address with a row (active, held or revoked): none of them is free. */
  boundAddresses(): Promise<number[]>;
  counts(): Promise<StateCounts>;
  /** Every binding, ascending by address, from one consistent snapshot (dstm leases export). */
  dump(): AsyncIterable<Binding>;
  /**
   * dstm leases import: write `rows` (valid, distinct addresses, at most one live binding per node), each with its
   * feed entry, in one transaction, after emptying the store when `replace`; without it a row that collides with
   * a stored binding rolls everything back (RestoreConflict). A restore is a new history: the store gets a new
   * epoch, returned. Only on a store opened for it, which no server uses (openStore's `restore`).
   */
  restore(rows: readonly Binding[], replace: boolean): Promise<bigint>;
  health(): StoreHealth;
  /**
   * For an engine whose feed shows a committed change after its reply (PostgreSQL: at the next numbering pass):
   * resolves once the feed shows every change this handle committed so far (or the pass that was to number them
   * failed).
   */
  settled?(): Promise<void>;
  /** Finish what is committed (made durable), then release the engine; later calls reject with StoreUnavailable. */
  close(): Promise<void>;

  on(event: 'change', listener: (seq: number) => void): this;
  on(event: 'health', listener: (health: StoreHealth) => void): this;
  on(event: 'numbering', listener: (health: StoreHealth) => void): this;
  on(event: 'batch', listener: (size: number) => void): this;
  off(event: 'change', listener: (seq: number) => void): this;
  off(event: 'health', listener: (health: StoreHealth) => void): this;
}
