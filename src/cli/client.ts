// What the client commands share: where the server is (flag, environment, configuration file), how errors become
// one line and a documented exit code, and the JSON form of a lease.
import { loadSection } from '../config/load';
import { ConfigError } from '../config/schema';
import { flagOverrides, type FlagsOf } from '../config/settings';
import { clientFields, type ClientConfig } from '../config/client-schema';
import { AuthStat, RpcAuthError, RpcError, type TlsClientOptions } from '../rpc';
import { loadClientTls } from '../rpc/tls';
import { EXIT, type ExitCode } from './exit-codes';
import { parseIPv4, parseIPv6, parsePrefix4, parsePrefix6, prefixContains4, prefixContains6 } from '../lib/addr';
import { DstmRefusal, type Lease, type LeaseRow, type Refusal } from '../protocol/client';
import { isUnreachable, NoServerAnswered } from '../protocol/failover';

const REFUSAL_EXIT: Record<Refusal, ExitCode> = {
  not_allowed: EXIT.notAllowed,
  no_address: EXIT.noAddress,
  no_binding: EXIT.noBinding,
  bad_request: EXIT.serverError,
  conflict: EXIT.serverError,
  unavailable: EXIT.serverError,
};

/** The exit code and one-line message for an error from a client operation. */
export function classify(err: unknown): { code: ExitCode; message: string } {
  if (err instanceof DstmRefusal) return { code: REFUSAL_EXIT[err.status], message: err.message };
  if (err instanceof NoServerAnswered) {
    // all unreachable: 7; else what the first server that did answer (e.g. "unavailable") makes of it
    const answered = err.failures.find((f) => !isUnreachable(f.error));
    return { code: answered ? classify(answered.error).code : EXIT.unreachable, message: err.message };
  }
  if (err instanceof ConfigError) return { code: EXIT.usage, message: err.message };
  if (err instanceof RpcError && err.kind === 'TLS') return { code: EXIT.tls, message: `RPC-with-TLS: ${err.message}` };
  // Version 2 refuses with statuses, not AUTH_ERROR: AUTH_TOOWEAK is the TLS policy refusing a plain call.
  if (err instanceof RpcAuthError && err.stat === AuthStat.AUTH_TOOWEAK) {
    return { code: EXIT.tls, message: `${err.message}: the server requires RPC-with-TLS (--tls)` };
  }
  if (err instanceof RpcError) {
    const unreachable = ['TIMEOUT', 'UNREACHABLE', 'CLOSED', 'NOT_REGISTERED'].includes(err.kind);
    return {
      code: unreachable ? EXIT.unreachable : EXIT.serverError,
      message: unreachable ? `server unreachable: ${err.message}` : `server error: ${err.message}`,
    };
  }
  if (isUnreachable(err)) return { code: EXIT.unreachable, message: `server unreachable: ${(err as Error).message}` };
  return { code: EXIT.internal, message: (err as Error)?.message ?? String(err) };
}

/** The client commands' flags for the "client" section: one per key that declares one (client-schema.ts). */
export type ClientFlags = FlagsOf<typeof clientFields> & { config?: string };

/** The "client" section with flags on top; DSTM_SERVER (comma-separated) stands in for --server. */
export function loadClientConfig(flags: ClientFlags): ClientConfig {
  return loadSection(clientFields, 'client', flags.config, flagOverrides(clientFields, flags)).config;
}

/**
 * The RPC client's TLS options from a "tls" section (client or tep), files read now; undefined when disabled. A file
 * that cannot be read is a configuration error (exit 2, naming it), as a configuration file is.
 */
export function tlsClientOf(t: ClientConfig['tls']): TlsClientOptions | undefined {
  if (!t.enabled) return undefined;
  if ((t.cert === undefined) !== (t.key === undefined))
    throw new ConfigError('tls.cert', t.cert, 'a certificate and its key together (--tls-cert with --tls-key)');
  try {
    return loadClientTls(t);
  } catch (err) {
    throw new ConfigError('tls', undefined, 'readable TLS files', (err as Error).message);
  }
}

export function leaseText(l: Lease): string {
  const when = (t: number): string => new Date(t * 1000).toISOString();
  return `${l.address} (mask ${l.mask}) for ${l.local}, TEP ${l.tep6} / ${l.tep4}, from ${when(l.starts)} until ${when(l.ends)} (renew in ${l.extend} s)`;
}

/** What `dstm leases list` shows: bindings of nodes in `node`, of addresses in `address`, in one of `states`. */
export interface LeaseFilter {
  /** An IPv6 prefix or address. */
  node?: string;
  /** An IPv4 prefix or address. */
  address?: string;
  states?: readonly LeaseRow['state'][];
}

/** A predicate for the rows a filter keeps; the filter's texts are checked here (a bad one throws, naming it). */
export function leaseFilter(f: LeaseFilter): (row: LeaseRow) => boolean {
  const node = f.node === undefined ? undefined : labelled(`NODE ${f.node}`, () => parsePrefix6(f.node!));
  const address =
    f.address === undefined ? undefined : labelled(`--address ${f.address}`, () => parsePrefix4(f.address!));
  const states = f.states?.length ? new Set(f.states) : undefined;
  return (row) =>
    (!node || prefixContains6(node, parseIPv6(row.ipv6))) &&
    (!address || prefixContains4(address, parseIPv4(row.ipv4))) &&
    (!states || states.has(row.state));
}

function labelled<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new Error(`${what}: ${(err as Error).message}`);
  }
}
