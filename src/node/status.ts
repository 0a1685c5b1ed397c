// A node's state for `dstm status`: the lease its LeaseKeeper holds and its DTI (device, addresses, counters),
// served by `dstm request --hold` on a unix control socket the same way the TEP serves `dstm tep stats`
// (src/lib/control.ts: one JSON document per connection). Times are counted on the node's own clock, from
// when the lease's reply arrived, as the LeaseKeeper counts them, so clock skew with the server does not show.
import type { Dti } from './dti-node';
import { renewAfter } from './lease-keeper';
import type { Lease } from '../protocol/client';
import { leaseJson, type LeaseJson } from '../protocol/binding-json';
import type { CountersSnapshot } from '../dti/counters';
import { formatIPv4, formatIPv6 } from '../lib/addr';

/** Where `dstm request --hold` answers and `dstm status` asks, unless --control says otherwise. */
export const DEFAULT_NODE_CONTROL_PATH = '/run/dstm/node.sock';

export interface NodeStatus {
  /** The DSTM server called (as [IPV6]:PORT). */
  server: string;
  /** "leased" while a lease is held; "no_lease" while requesting, retrying, or waiting for the first packet. */
  state: 'leased' | 'no_lease';
  /**
   * The held lease as every --json binding (starts and ends are server times, seconds since 1970), with its times left.
   */
  lease:
    | (LeaseJson & {
        /** Seconds until the lease runs out unless renewed (its valid lifetime left), and until the next renewal. */
        remaining: number;
        renew_in: number;
      })
    | null;
  /** Without --device, null: the lease is only held, no interface carries it. */
  dti: {
    device: string;
    mtu: number;
    /** The address, TEP and tunnel source on the device now; null while it has no address. */
    address: string | null;
    peer: string | null;
    tep: string | null;
    source: string | null;
    packets: {
      encapsulated: number;
      decapsulated: number;
      bytes_encapsulated: number;
      bytes_decapsulated: number;
      dropped: number;
    };
    drops: Record<string, number>;
    events: Record<string, number>;
  } | null;
}

/** What nodeStatus needs of a LeaseKeeper and a Dti (their public getters). */
export interface NodeParts {
  server: string;
  keeper: { readonly current: Lease | undefined; readonly leaseAge: number };
  dti?: Pick<Dti, 'name' | 'current' | 'counters'> & { tunnel: { tunnelMtu: number } };
}

/** The node's status now, its times left counted as the keeper counts them (so a suspend shortens them too). */
export function nodeStatus(parts: NodeParts): NodeStatus {
  const l = parts.keeper.current;
  const age = parts.keeper.leaseAge;
  const left = (s: number): number => (l ? Math.max(0, Math.round(s - age / 1000)) : 0);
  const d = parts.dti;
  const on = d?.current;
  const c: CountersSnapshot | undefined = d?.counters.snapshot();
  return {
    server: parts.server,
    state: l ? 'leased' : 'no_lease',
    lease: l ? { ...leaseJson(l), remaining: left(l.keep), renew_in: left(renewAfter(l)) } : null,
    dti:
      d && c
        ? {
            device: d.name,
            mtu: d.tunnel.tunnelMtu,
            address: on ? formatIPv4(on.address) : null,
            peer: on?.peer === undefined ? null : formatIPv4(on.peer),
            tep: on ? formatIPv6(on.tep) : null,
            source: on?.local ? formatIPv6(on.local) : null,
            packets: {
              encapsulated: c.events.encapsulated,
              decapsulated: c.events.decapsulated,
              bytes_encapsulated: c.events.bytes_encapsulated,
              bytes_decapsulated: c.events.bytes_decapsulated,
              dropped: c.dropped,
            },
            drops: c.drops,
            events: c.events,
          }
        : null,
  };
}

function duration(s: number): string {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** The human form of `dstm status`, one line per fact. */
export function formatNodeStatus(s: NodeStatus): string[] {
  const out = [`server      ${s.server}`];
  const l = s.lease;
  if (l) {
    out.push(`lease       ${l.ipv4} (mask ${l.mask}) for ${l.ipv6}`);
    out.push(`TEP         ${l.tep6} / ${l.tep4}`);
    out.push(
      `remaining   ${duration(l.remaining)} (renewal in ${duration(l.renew_in)}; ends ${new Date(l.ends * 1000).toISOString()} server time)`,
    );
  } else {
    out.push('lease       none (requesting, retrying, or waiting for the first IPv4 packet)');
  }
  const d = s.dti;
  if (!d) {
    out.push('interface   none (no --device)');
    return out;
  }
  out.push(
    `interface   ${d.device} mtu ${d.mtu}${d.address ? ` inet ${d.address}${d.peer ? ` peer ${d.peer}` : ''}` : ' (no address)'}`,
  );
  if (d.tep) out.push(`tunnel      ${d.source ?? '?'} -> ${d.tep}`);
  out.push(
    `offload     ${d.events.offload_active ? 'on (TUN super-packets segmented and coalesced)' : 'off (plain TUN device)'}`,
  );
  const p = d.packets;
  out.push(`sent        ${p.encapsulated} packets, ${p.bytes_encapsulated} bytes (encapsulated to the TEP)`);
  out.push(`received    ${p.decapsulated} packets, ${p.bytes_decapsulated} bytes (decapsulated from the TEP)`);
  const drops = Object.entries(d.drops).filter(([, n]) => n > 0);
  out.push(drops.length ? `dropped     ${p.dropped} packets:` : 'dropped     none');
  for (const [reason, n] of drops) out.push(`  ${reason.padEnd(22)} ${n}`);
  return out;
}
