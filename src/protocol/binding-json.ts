// The one JSON form of a binding, shared by every --json output and control-socket document (dstm(1), JSON OUTPUT):
// the same keys whether `dstm request`, `release`, `leases`, `status` or `tep stats` prints it. Times are absolute
// seconds since 1970 UTC; extend and keep are durations in seconds, counted from when the reply arrived.
import type { Lease } from './client';
import type { StateName } from './status';

export interface BindingJson {
  ipv4: string;
  /** The node. */
  ipv6: string;
  tep4: string;
  tep6: string;
  /** Seconds since 1970 UTC; null for a static mapping, which has no lease. */
  starts: number | null;
  ends: number | null;
  state?: StateName;
  mask?: string;
  extend?: number;
  keep?: number;
}

/** A lease as a node received it: the binding with its mask and renewal times. */
export type LeaseJson = Required<Omit<BindingJson, 'state' | 'starts' | 'ends'>> & { starts: number; ends: number };

export function leaseJson(l: Lease): LeaseJson {
  return {
    ipv4: l.address,
    ipv6: l.local,
    tep4: l.tep4,
    tep6: l.tep6,
    starts: l.starts,
    ends: l.ends,
    mask: l.mask,
    extend: l.extend,
    keep: l.keep,
  };
}

/** Milliseconds since 1970 (Date.now()'s clock) as the whole seconds every JSON time is in; Infinity reads as null. */
export function jsonSeconds(ms: number): number | null {
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}
