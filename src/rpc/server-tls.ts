// RPC-with-TLS (RFC 9289, ./tls) in the server's call path: each call judged against the TLS policy before
// authentication (the probe's flavor, AUTH_TLS, is no ServerAuth's). A plain call where TLS is required is refused; a
// probe on a plain connection with no call in progress (whose replies could otherwise cross into TLS) is answered
// STARTTLS, and the TCP transport then hands the connection to TLS (TcpTransport.upgradeTls); any other probe is
// refused.
import { AcceptStat, type CallHeader } from './message';
import { T_TCP, type Peer } from './server-peer';
import type { Replier } from './server-reply';
import type { ServerCounters } from './server-stats';
import type { TcpConn } from './server-tcp-conn';
import { STARTTLS_VERIFIER, TLS_PASS, TLS_PROBE, type RpcTlsServer } from './tls';

export class TlsGate {
  constructor(
    private readonly tls: RpcTlsServer,
    private readonly replier: Replier,
    private readonly counters: ServerCounters,
  ) {}

  /** Whether the call was answered here (refused by the policy, or a probe answered STARTTLS); false: go on. */
  answered(h: CallHeader, peer: Peer): boolean {
    const c = peer.t === T_TCP ? (peer as TcpConn) : null;
    const v = this.tls.judge(
      h.credential,
      h.verifier,
      h.procedure,
      c === null,
      c !== null && c.upgradable,
      peer.tls !== null,
    );
    if (v === TLS_PASS) return false;
    if (v === TLS_PROBE) {
      // judge() answers TLS_PROBE only for an upgradable connection, so c is one.
      c!.reader.stop();
      this.replier.status(c!, h.xid, STARTTLS_VERIFIER, AcceptStat.SUCCESS);
      c!.probeAnswered();
    } else {
      this.counters.rejected[peer.t].AUTH_ERROR++;
      this.replier.authError(peer, h.xid, v);
    }
    return true;
  }
}
