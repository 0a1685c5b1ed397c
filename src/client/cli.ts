// What the client commands share: where the server is (flag, environment, configuration file), how errors become
// one line and a documented exit code, and the JSON form of a lease.
import { loadSection } from '../config/load';
import { ConfigError, overrides } from '../config/schema';
import { clientFields, type ClientConfig } from '../config/client-schema';
import { RpcError } from '../rpc';
import { EXIT, type ExitCode } from '../exit-codes';
import { DstmRefusal, type Lease, type Refusal } from './dstm-client';

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
  if (err instanceof ConfigError) return { code: EXIT.usage, message: err.message };
  if (err instanceof RpcError) {
    const unreachable = ['TIMEOUT', 'UNREACHABLE', 'CLOSED', 'NOT_REGISTERED'].includes(err.kind);
    return { code: unreachable ? EXIT.unreachable : EXIT.serverError, message: unreachable ? `server unreachable: ${err.message}` : `server error: ${err.message}` };
  }
  const e = err as NodeJS.ErrnoException;
  if (e && ['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'ECONNREFUSED'].includes(e.code ?? '')) return { code: EXIT.unreachable, message: `server unreachable: ${e.message}` };
  return { code: EXIT.internal, message: (err as Error)?.message ?? String(err) };
}

export interface ClientFlags {
  config?: string;
  server?: string;
  program?: number;
  timeout?: number;
  lease?: number;
}

/** The "client" section with flags on top; DSTM_SERVER stands in for --server. */
export function loadClientConfig(flags: ClientFlags): ClientConfig {
  return loadSection(clientFields, 'client', flags.config, overrides([
    ['server', flags.server !== undefined ? '--server' : 'DSTM_SERVER', flags.server ?? process.env.DSTM_SERVER],
    ['program', '--program', flags.program],
    ['timeout', '--timeout', flags.timeout],
    ['lease', '--lease', flags.lease],
  ])).config;
}

/** The lease as `--json` prints it (also the human form's source). */
export function leaseJson(l: Lease): Record<string, string | number> {
  return { address: l.address, mask: l.mask, local: l.local, tep6: l.tep6, tep4: l.tep4, starts: l.starts, ends: l.ends, extend: l.extend, keep: l.keep };
}

export function leaseText(l: Lease): string {
  const when = (t: number): string => new Date(t * 1000).toISOString();
  return `${l.address} (mask ${l.mask}) for ${l.local}, TEP ${l.tep6} / ${l.tep4}, from ${when(l.starts)} until ${when(l.ends)} (renew in ${l.extend} s)`;
}
