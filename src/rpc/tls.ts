// RPC-with-TLS (RFC 9289) for any program: the AUTH_TLS probe, the server's policy and its upgrade of an accepted TCP
// connection to TLS, the client's probe and handshake, and the verified peer certificate as handlers see it.
//
// On the wire: the client sends a NULL call (procedure 0) with credential flavor AUTH_TLS (7), empty body, and an
// AUTH_NONE verifier; a server that offers TLS answers MSG_ACCEPTED/SUCCESS with an AUTH_NONE verifier whose body is
// the 8 bytes "STARTTLS"; both then run TLS 1.3 (ALPN "sunrpc") on the same connection and record marking goes on
// inside it. A server without TLS refuses the flavor (AUTH_REJECTEDCRED) or answers NULL with an empty verifier,
// which is why the client checks the verifier body and not only the status.
import { createHash, randomInt, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
import { AuthStat, RpcError } from './errors';
import { AUTH_NONE, readReplyHeader, writeCallHeader } from './message';
import { beginRecord, endRecord, RecordReader } from './record';
import type { OpaqueAuth } from './types';
import { XdrReader, XdrWriter } from './xdr/runtime';

/** The RPC-with-TLS probe flavor (RFC 9289 section 4.1). */
export const AUTH_TLS = 7;
/** The body of the verifier in the reply to a probe when the server offers TLS. */
export const STARTTLS = Buffer.from('STARTTLS', 'latin1');
/** The ALPN protocol identifier of RPC-with-TLS (RFC 9289 section 5.2). */
export const ALPN = 'sunrpc';

export const TLS_POLICIES = ['off', 'opportunistic', 'required', 'mutual'] as const;
/**
 * off: the probe is refused as an unknown flavor; opportunistic: TLS offered, plain calls served; required: every
 * call but the probe must come over TLS; mutual: required, and the client must present a certificate the CA signed.
 */
export type TlsPolicy = (typeof TLS_POLICIES)[number];

/** The verified certificate of a TLS peer, as handlers authorize on it. */
export interface TlsIdentity {
  /** The subject's distinguished name, one RDN per line as OpenSSL prints it (e.g. "CN=node1\nOU=tep"). */
  readonly subject: string;
  readonly commonName: string | null;
  readonly dnsNames: readonly string[];
  /** SAN IP addresses in their canonical text form (IPv6 compressed, lower case). */
  readonly ipAddresses: readonly string[];
  /** SHA-256 of the certificate's SubjectPublicKeyInfo (DER), lower-case hex: a pin that survives renewal. */
  readonly keyFingerprint: string;
}

/** What a call over TLS carries in its context; one object per connection. */
export interface TlsSession {
  readonly protocol: string;
  /** The client certificate, verified against the CA (mutual policy only; null otherwise). */
  readonly peer: TlsIdentity | null;
}

/** Key material as PEM text (or buffers). A server needs cert and key, and ca under the mutual policy; a client
 * verifies the server against ca (the system's CAs without it) and shows cert and key when it has them. */
export interface TlsMaterial {
  cert?: string | Buffer;
  key?: string | Buffer;
  ca?: string | Buffer;
}

/** Read PEM files named by a configuration; an error names the file and what it was for. */
export function loadTlsFiles(files: { cert?: string; key?: string; ca?: string }): TlsMaterial {
  const read = (what: string, file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (e) {
      throw new Error(
        `cannot read the TLS ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
  };
  return { cert: read('certificate', files.cert), key: read('key', files.key), ca: read('CA file', files.ca) };
}

/** A client's TLS options from a configuration's file names; undefined when TLS is not enabled. */
export function loadClientTls(c: {
  enabled: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  server_name?: string;
}): TlsClientOptions | undefined {
  return c.enabled ? { ...loadTlsFiles(c), serverName: c.server_name } : undefined;
}

/** The identity in a verified certificate. */
export function identityOf(cert: X509Certificate): TlsIdentity {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const [kind, value] of parseSubjectAltName(cert.subjectAltName ?? '')) {
    if (kind === 'DNS') dnsNames.push(value.toLowerCase());
    else if (kind === 'IP Address') ipAddresses.push(canonicalIp(value));
  }
  const cn = /^CN=(.*)$/m.exec(cert.subject);
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return {
    subject: cert.subject,
    commonName: cn ? cn[1] : null,
    dnsNames,
    ipAddresses,
    keyFingerprint: createHash('sha256').update(spki).digest('hex'),
  };
}

/** Node's subjectAltName text: "DNS:a, IP Address:1:2:0:0:0:0:0:3"; values with special characters are JSON-quoted. */
function parseSubjectAltName(text: string): [string, string][] {
  const out: [string, string][] = [];
  const re = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/gy;
  for (let m = re.exec(text); m && m[0] !== ''; m = re.exec(text))
    out.push([m[1], m[2].startsWith('"') ? JSON.parse(m[2]) : m[2]]);
  return out;
}

function canonicalIp(text: string): string {
  if (!text.includes(':')) return text;
  // Node prints IPv6 SANs uncompressed in upper case; URL parsing gives the RFC 5952 form.
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return text.toLowerCase();
  }
}

export interface TlsServerOptions extends TlsMaterial {
  policy: TlsPolicy;
  /** A connection that has not finished its handshake this long after the probe is closed (default 10 s). */
  handshakeTimeoutMs?: number;
}

/** What the server does with a call, from its credential and the connection's state. */
export const TLS_PASS = -1;
export const TLS_PROBE = -2;

/** Handshakes and refusals, for stats and metrics. */
export interface TlsServerStats {
  probes: number;
  handshakes: number;
  /** Connections closed during the handshake, by reason (certificate: a client certificate that does not verify). */
  failed: { timeout: number; error: number; closed: number; certificate: number };
  /** Calls refused because they did not come over TLS (AUTH_TOOWEAK), by transport. */
  plainRefused: { udp: number; tcp: number };
  /** Probes refused (not on NULL, a credential or verifier body, or on a connection that cannot start TLS). */
  badProbes: number;
}

/**
 * The server side: judges each call against the policy and turns a TCP connection into TLS after a probe. The
 * certificate and key live in a SecureContext that reload() replaces; connections already up keep theirs.
 */
export class RpcTlsServer {
  readonly policy: TlsPolicy;
  /**
   * Never listens: accepted connections are handed to it after their probe. It owns what Node does only for servers:
   * the verdict on client certificates, the handshake deadline, and the context that setSecureContext replaces.
   */
  private readonly server: tls.Server;
  /** Connections in their handshake, by TCP 4-tuple (what identifies the TLS socket the server makes of each). */
  private readonly handshaking = new Map<string, (s: tls.TLSSocket, session: TlsSession) => void>();
  private readonly counts = {
    probes: 0,
    handshakes: 0,
    timeout: 0,
    error: 0,
    closed: 0,
    certificate: 0,
    plainUdp: 0,
    plainTcp: 0,
    badProbes: 0,
  };

  constructor(o: TlsServerOptions) {
    if (o.policy === 'off')
      throw new Error('an RpcTlsServer with policy "off" makes no sense: pass no TLS to the server');
    this.policy = o.policy;
    const mutual = o.policy === 'mutual';
    checkMaterial(o, mutual);
    this.server = tls.createServer({
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      minVersion: 'TLSv1.3',
      ALPNProtocols: [ALPN],
      requestCert: mutual,
      rejectUnauthorized: mutual,
      handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
    });
    this.server.on('secureConnection', (s: tls.TLSSocket) => {
      const ready = this.take(s);
      if (!ready) return s.destroy();
      this.counts.handshakes++;
      const x = mutual ? s.getPeerX509Certificate() : undefined;
      ready(s, { protocol: s.getProtocol() ?? 'TLS', peer: x ? identityOf(x) : null });
    });
    // Emitted once per failed handshake; the socket may be destroyed already (its 4-tuple gone): its entry in
    // `handshaking` goes when the plain socket closes.
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
      const why =
        err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT'
          ? 'timeout'
          : s.authorizationError
            ? 'certificate'
            : err.code === 'ECONNRESET'
              ? 'closed'
              : 'error';
      this.counts[why]++;
      s.destroy();
    });
  }

  private take(s: net.Socket): ((s: tls.TLSSocket, session: TlsSession) => void) | undefined {
    const k = tupleOf(s);
    const ready = this.handshaking.get(k);
    this.handshaking.delete(k);
    return ready;
  }

  /** New certificate, key or CA for the connections to come (throws, keeping the old ones, when they do not load). */
  reload(m: TlsMaterial): void {
    checkMaterial(m, this.policy === 'mutual');
    this.server.setSecureContext({ cert: m.cert, key: m.key, ca: m.ca, minVersion: 'TLSv1.3' });
  }

  /**
   * TLS_PASS to go on, TLS_PROBE to answer STARTTLS and upgrade, or the auth_stat to refuse the call with.
   * `upgradable`: a TCP connection still in plain text with no call in progress; `secure`: one that runs TLS.
   */
  judge(
    credential: OpaqueAuth,
    verifier: OpaqueAuth,
    procedure: number,
    udp: boolean,
    upgradable: boolean,
    secure: boolean,
  ): number {
    if (credential.flavor === AUTH_TLS) {
      let stat: number = TLS_PROBE;
      if (!upgradable)
        stat = AuthStat.AUTH_REJECTEDCRED; // UDP, a connection already in TLS, or calls in progress
      else if (procedure !== 0 || credential.body.length !== 0) stat = AuthStat.AUTH_BADCRED;
      else if (verifier.flavor !== AUTH_NONE || verifier.body.length !== 0) stat = AuthStat.AUTH_BADVERF;
      if (stat === TLS_PROBE) this.counts.probes++;
      else this.counts.badProbes++;
      return stat;
    }
    if (secure || this.policy === 'opportunistic') return TLS_PASS;
    if (udp) this.counts.plainUdp++;
    else this.counts.plainTcp++;
    return AuthStat.AUTH_TOOWEAK;
  }

  /**
   * Run the server side of the handshake on `raw`, whose reader is detached and whose probe reply is written.
   * `rest` is what arrived after the probe record (a client that did not wait for the reply). Calls back once with
   * the TLS socket, or not at all when the handshake fails (the socket is then destroyed and the failure counted).
   */
  upgrade(raw: net.Socket, rest: Buffer | null, ready: (s: tls.TLSSocket, session: TlsSession) => void): void {
    raw.pause();
    if (rest && rest.length > 0) raw.unshift(rest); // the TLS socket reads what the socket holds before the wire
    const k = tupleOf(raw);
    this.handshaking.set(k, ready);
    raw.once('close', () => this.handshaking.delete(k));
    this.server.emit('connection', raw);
  }

  stats(): TlsServerStats {
    const c = this.counts;
    return {
      probes: c.probes,
      handshakes: c.handshakes,
      failed: { timeout: c.timeout, error: c.error, closed: c.closed, certificate: c.certificate },
      plainRefused: { udp: c.plainUdp, tcp: c.plainTcp },
      badProbes: c.badProbes,
    };
  }
}

function checkMaterial(m: TlsMaterial, mutual: boolean): void {
  if (!m.cert || !m.key) throw new Error('TLS needs a certificate and its key');
  if (mutual && !m.ca) throw new Error('the mutual TLS policy needs the CA that signs client certificates');
}

function tupleOf(s: net.Socket): string {
  return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`;
}

/** The verifier of a reply to the probe from a server that offers TLS. */
export const STARTTLS_VERIFIER: OpaqueAuth = Object.freeze({ flavor: AUTH_NONE, body: new Uint8Array(STARTTLS) });

export interface TlsClientOptions extends TlsMaterial {
  /** The name the server's certificate must carry (default: the address connected to, checked against SAN IPs). */
  serverName?: string;
}

/**
 * The client side, on a freshly connected TCP socket: send the probe, check that the reply's verifier is STARTTLS,
 * then handshake (TLS 1.3, ALPN sunrpc) verifying the server against the CA and `host` (or serverName). Resolves
 * with the TLS socket; rejects with RpcError 'TLS' saying which step failed. The caller owns `raw` either way.
 */
export function startTls(
  raw: net.Socket,
  host: string,
  program: number,
  version: number,
  o: TlsClientOptions,
  timeoutMs: number,
): Promise<tls.TLSSocket> {
  const where = `${host.includes(':') ? `[${host}]` : host}:${raw.remotePort}`;
  const xid = randomInt(0x7fffffff);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null, s?: tls.TLSSocket): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('close', onClose);
      raw.off('error', onError);
      if (err) reject(err);
      else resolve(s!);
    };
    const timer = setTimeout(
      () =>
        finish(
          new RpcError('TLS', `${where} did not finish the RPC-with-TLS probe and handshake within ${timeoutMs} ms`),
        ),
      timeoutMs,
    );
    const onClose = (): void =>
      finish(new RpcError('TLS', `${where} closed the connection during the RPC-with-TLS probe`));
    const onError = (e: Error): void => finish(new RpcError('TLS', `${where}: ${e.message}`));
    const reader = new RecordReader(1024, (rec) => {
      reader.stop();
      const why = probeReplyProblem(rec, xid);
      if (why) return finish(new RpcError('TLS', `${where} does not offer RPC-with-TLS: ${why}`));
      raw.off('data', onData);
      raw.pause();
      const rest = reader.takeRest();
      if (rest && rest.length > 0)
        return finish(new RpcError('TLS', `${where} sent bytes after its STARTTLS reply before the handshake`));
      handshake();
    });
    const onData = (chunk: Buffer): void => {
      if (reader.push(chunk) !== null)
        finish(new RpcError('TLS', `${where} does not offer RPC-with-TLS: its reply to the probe is too large`));
    };
    const handshake = (): void => {
      const name = o.serverName ?? host;
      const isName = !/^[\d.]+$|:/.test(name);
      const s = tls.connect({
        socket: raw,
        host: name,
        servername: isName ? name : undefined,
        ca: o.ca,
        cert: o.cert,
        key: o.key,
        minVersion: 'TLSv1.3',
        ALPNProtocols: [ALPN],
      });
      s.once('secureConnect', () => {
        if (s.alpnProtocol !== false && s.alpnProtocol !== ALPN) {
          s.destroy();
          return finish(new RpcError('TLS', `${where} chose ALPN protocol "${s.alpnProtocol}", not "${ALPN}"`));
        }
        s.removeListener('error', onTlsError);
        finish(null, s);
      });
      const onTlsError = (e: NodeJS.ErrnoException): void => {
        s.destroy();
        finish(new RpcError('TLS', `TLS handshake with ${where} failed: ${tlsWords(e, name)}`));
      };
      s.once('error', onTlsError);
    };
    raw.on('data', onData);
    raw.once('close', onClose);
    raw.once('error', onError);
    const w = new XdrWriter(64);
    beginRecord(w);
    writeCallHeader(w, {
      xid,
      program,
      version,
      procedure: 0,
      credential: { flavor: AUTH_TLS, body: new Uint8Array(0) },
      verifier: { flavor: AUTH_NONE, body: new Uint8Array(0) },
    });
    raw.write(endRecord(w, 0x7fffffff));
  });
}

/** Why a reply to the probe does not offer TLS, or null when it does. */
export function probeReplyProblem(rec: Uint8Array, xid: number): string | null {
  let h;
  try {
    h = readReplyHeader(new XdrReader(new Uint8Array(rec.buffer, rec.byteOffset, rec.length)));
  } catch (e) {
    return `its reply does not decode (${(e as Error).message})`;
  }
  if (h.xid !== xid) return `its reply has XID ${h.xid}, not ${xid}`;
  if (h.status === 'AUTH_ERROR') return `it refused the AUTH_TLS probe (auth_stat ${h.stat})`;
  if (h.status !== 'SUCCESS') return `it answered the probe with ${h.status}`;
  if (h.verifier.flavor !== AUTH_NONE || Buffer.compare(Buffer.from(h.verifier.body), STARTTLS) !== 0)
    return 'its reply to the probe has no STARTTLS verifier';
  return null;
}

/** OpenSSL's and Node's handshake errors in words a user can act on. */
function tlsWords(e: NodeJS.ErrnoException, name: string): string {
  switch (e.code) {
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the server's certificate does not name ${name} (${e.message})`;
    case 'CERT_HAS_EXPIRED':
      return "the server's certificate has expired";
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      return `the server's certificate does not verify against the CA (${e.code})`;
    default:
      return e.message;
  }
}
