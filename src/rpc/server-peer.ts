// What the dispatcher knows of where a call came from and where its reply goes: a UDP sender or a TCP connection.
import type { TlsSession } from './tls';
import type { Transport } from './types';

/** Transport indices into per-transport counters. */
export const T_UDP = 0;
export const T_TCP = 1;

export interface Peer {
  readonly transport: Transport;
  /** T_UDP or T_TCP. */
  readonly t: number;
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** The TLS session of a connection upgraded by RPC-with-TLS, else null. */
  readonly tls: TlsSession | null;
  /** send() copies the reply before it returns: it may be a view of the reused writer. */
  readonly copies: boolean;
  send(reply: Uint8Array): void;
  /** This peer as it must be kept for an answer that comes later (a Promise handler). */
  detach(): Peer;
  /** A call of this peer starts or finishes running its handler. */
  callStarted(): void;
  callFinished(): void;
}

export function noop(): void {}
