// The server's counters, by name. Per-procedure results are plain objects with one field per result (a fixed
// shape, incremented in place on the hot path); stats() turns them into the snapshot below.
import type { Histogram } from '../lib/metrics';
import type { Registry } from './server-registry';
import { T_TCP, T_UDP } from './server-peer';
import type { TlsServerStats } from './tls';
import type { Transport } from './types';
import type { BatchUdpCounters } from './udp-batch';

/** Results counted per procedure; the names are the reply status or what became of the call. */
export interface ResultCounts {
  SUCCESS: number;
  GARBAGE_ARGS: number;
  SYSTEM_ERR: number;
  AUTH_ERROR: number;
  PROC_UNAVAIL: number;
  DUPLICATE_REPLAYED: number;
  DUPLICATE_DROPPED: number;
  /** A call over UDP to a procedure registered TCP only (answered AUTH_ERROR, AUTH_TOOWEAK). */
  TCP_ONLY: number;
  /** A UDP reply over the amplification limit, replaced by AUTH_ERROR, AUTH_TOOWEAK. */
  REPLY_TOO_LARGE: number;
}
export type ResultName = keyof ResultCounts;

export function resultCounts(): ResultCounts {
  return {
    SUCCESS: 0,
    GARBAGE_ARGS: 0,
    SYSTEM_ERR: 0,
    AUTH_ERROR: 0,
    PROC_UNAVAIL: 0,
    DUPLICATE_REPLAYED: 0,
    DUPLICATE_DROPPED: 0,
    TCP_ONLY: 0,
    REPLY_TOO_LARGE: 0,
  };
}

/** Per transport, indexed by T_UDP / T_TCP. */
export type ByTransport<T> = [udp: T, tcp: T];

/** Calls refused before a procedure was chosen. */
export interface Rejections {
  RPC_MISMATCH: number;
  AUTH_ERROR: number;
  PROG_UNAVAIL: number;
  PROG_MISMATCH: number;
}

/** Why the server closed a TCP connection (or refused it) on its own. */
export interface TcpCutoffs {
  /** A fragment header announced a record over maxRecordSize. */
  oversizedRecords: number;
  /** A record of more than maxFragmentsPerRecord fragments. */
  tooManyFragments: number;
  /** A record begun and not finished within recordTimeoutMs. */
  recordTimeouts: number;
  /** No call served for idleTimeoutMs. */
  idleTimeouts: number;
  /**
   * Closed to admit a new connection when the server, or the newcomer's peer, was full: the one longest without a call
   * (of those evictable, TcpConn; of that peer's, when the peer was).
   */
  evictedIdle: number;
  /** Refused at accept: maxConnections (less the reserved share, for other peers) reached, and none evictable. */
  refusedFull: number;
  /** Refused at accept: the peer's prefix already had maxConnectionsPerPeer, and none of them evictable. */
  refusedPerPeer: number;
  /** Refused at accept: the peer had already reset the connection, leaving no address to judge. */
  refusedNoAddress: number;
}

export class ServerCounters {
  readonly rejected: ByTransport<Rejections> = [rejections(), rejections()];
  /** Records dropped because their call header could not be read (or they were not calls, or over udpRecvSize). */
  readonly garbageRecords: ByTransport<number> = [0, 0];
  readonly tcp: TcpCutoffs = {
    oversizedRecords: 0,
    tooManyFragments: 0,
    recordTimeouts: 0,
    idleTimeouts: 0,
    evictedIdle: 0,
    refusedFull: 0,
    refusedPerPeer: 0,
    refusedNoAddress: 0,
  };
  /** UDP calls dropped because maxInFlight calls were in progress. */
  overloadDrops = 0;
}

function rejections(): Rejections {
  return { RPC_MISMATCH: 0, AUTH_ERROR: 0, PROG_UNAVAIL: 0, PROG_MISMATCH: 0 };
}

/** A plain-object snapshot of the server's counters, for logs and metrics. */
export interface RpcServerStats {
  /** calls["PROGRAM.VERSION.PROCEDURE"][transport][result] = count (only non-zero counts appear). */
  calls: Record<string, Partial<Record<Transport, Partial<Record<ResultName, number>>>>>;
  /** latency["PROGRAM.VERSION.PROCEDURE"]: handler call to reply, seconds (the live histogram, not a copy). */
  latency: Record<string, Histogram>;
  /** Calls refused before a procedure was chosen, by transport and status. */
  rejected: Record<Transport, Rejections>;
  /** Records dropped because their call header could not be read (or they were not calls, or over udpRecvSize). */
  garbageRecords: Record<Transport, number>;
  /** TCP connections cut off for announcing a record over maxRecordSize. */
  oversizedRecords: number;
  /** TCP connections closed or refused by the server's limits, by reason (oversizedRecords included). */
  tcpCutoffs: TcpCutoffs;
  /** UDP calls dropped because maxInFlight calls were in progress. */
  overloadDrops: number;
  /**
   * UDP replies sent, refused by the kernel or longer than a datagram (failed), dropped (no room in a batched
   * socket's send queue, or answered after close()), and times a batched socket's send buffer was full (stalls).
   */
  udpReplies: BatchUdpCounters;
  inFlight: number;
  connections: number;
  /** Of which from reserved peers. */
  reservedConnections: number;
  duplicateCacheEntries: number;
  /** RPC-with-TLS probes, handshakes and refusals (when the server has a TLS policy). */
  tls?: TlsServerStats;
}

const TRANSPORTS: ByTransport<Transport> = ['udp', 'tcp'];

function addCalls(calls: RpcServerStats['calls'], key: string, counts: ByTransport<ResultCounts>): void {
  for (const t of [T_UDP, T_TCP]) {
    for (const [result, n] of Object.entries(counts[t]) as [ResultName, number][]) {
      if (n === 0) continue;
      ((calls[key] ??= {})[TRANSPORTS[t]] ??= {})[result] = n;
    }
  }
}

export function snapshot(
  registry: Registry,
  c: ServerCounters,
  live: {
    udpReplies: BatchUdpCounters;
    inFlight: number;
    connections: number;
    reservedConnections: number;
    duplicateCacheEntries: number;
    tls?: TlsServerStats;
  },
): RpcServerStats {
  const calls: RpcServerStats['calls'] = {};
  const latency: RpcServerStats['latency'] = {};
  for (const v of registry.versions()) {
    const prefix = `${v.definition.programName}.${v.definition.versionName}.`;
    addCalls(calls, prefix + 'NULL', v.nullProc.counts);
    for (const pe of v.procs.values()) {
      addCalls(calls, prefix + pe.name, pe.counts);
      latency[prefix + pe.name] = pe.latency;
    }
    addCalls(calls, prefix + '(unknown procedure)', v.unknownProc.counts);
  }
  return {
    calls,
    latency,
    rejected: { udp: { ...c.rejected[T_UDP] }, tcp: { ...c.rejected[T_TCP] } },
    garbageRecords: { udp: c.garbageRecords[T_UDP], tcp: c.garbageRecords[T_TCP] },
    oversizedRecords: c.tcp.oversizedRecords,
    tcpCutoffs: { ...c.tcp },
    overloadDrops: c.overloadDrops,
    ...live,
  };
}
