// Flags shared by dstm request, release and leases, so every client command spells and documents them alike.
import { Flags } from '@oclif/core';
import { isIPv6 } from 'node:net';
import { ConfigError } from '../config/schema';
import { DEFAULT_PORT } from '../config/server-schema';
import { loadClientConfig, tlsClientOf } from './client';
import { FailoverClient } from '../protocol/failover';

/** RPC-with-TLS towards the server: dstm request, release, leases and tep spell these alike. */
export const tlsFlags = {
  tls: Flags.boolean({
    summary:
      'Call the server over TCP with RPC-with-TLS (RFC 9289): the AUTH_TLS probe, then TLS 1.3; fail if it is not offered.',
  }),
  'tls-ca': Flags.string({
    summary: "PEM file of the CA the server's certificate must verify against (default: the system's CAs).",
  }),
  'tls-cert': Flags.string({
    summary: "PEM file of this client's certificate (servers with the mutual policy ask for one).",
  }),
  'tls-key': Flags.string({ summary: 'PEM file of the key of --tls-cert.' }),
};

/** The TLS flags as the configuration loaders take them. */
export function tlsFlagValues(f: { tls?: boolean; 'tls-ca'?: string; 'tls-cert'?: string; 'tls-key'?: string }): {
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
} {
  return { tls: f.tls || undefined, tlsCa: f['tls-ca'], tlsCert: f['tls-cert'], tlsKey: f['tls-key'] };
}
import { programFlag } from './flags';

export const clientFlags = {
  server: Flags.string({
    summary: `DSTM server, '[IPV6]:PORT'; repeatable: servers sharing one store, tried in turn (default: DSTM_SERVER, the config file's client.server, else [::1]:${DEFAULT_PORT}).`,
    multiple: true,
  }),
  config: Flags.string({
    summary: 'Configuration file (its "client" section); default DSTM_CONFIG or /etc/dstm/dstm.json if present.',
  }),
  program: programFlag(
    'ONC RPC program number of the server, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).',
  ),
  timeout: Flags.integer({ summary: 'Milliseconds to wait for a reply (default 5000).' }),
  json: Flags.boolean({ summary: 'Print the result as JSON (dstm(1), JSON OUTPUT).' }),
  ...tlsFlags,
};

export const exchangeFlags = {
  ...clientFlags,
  transport: Flags.string({
    summary: 'RPC transport (tcp whenever --tls is on).',
    options: ['udp', 'tcp'],
    default: 'udp',
  }),
  protocol: Flags.integer({
    summary: 'DSTM program version: 2 (status codes) or 1 (Annex B as is).',
    options: ['1', '2'] as never,
    default: 2,
  }),
  local: Flags.string({
    summary: 'IPv6 address to call from (default: the source address the kernel picks for the server).',
  }),
};

export type ExchangeFlags = {
  server?: string[];
  config?: string;
  program?: number;
  timeout?: number;
  transport: string;
  protocol: number;
  local?: string;
  lease?: number;
  tls?: boolean;
  'tls-ca'?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
};

/** A client of the servers the flags, environment and configuration file name (each connected at its first call). */
export async function connectFromFlags(flags: ExchangeFlags): Promise<{ client: FailoverClient; lease: number }> {
  const c = loadClientConfig({ ...flags, ...tlsFlagValues(flags) });
  const tls = tlsClientOf(c.tls);
  if (flags.local !== undefined && !isIPv6(flags.local))
    throw new ConfigError('--local', flags.local, 'an IPv6 address');
  const client = new FailoverClient({
    servers: c.server,
    program: c.program,
    timeoutMs: c.timeout,
    transport: tls ? 'tcp' : (flags.transport as 'udp' | 'tcp'),
    tls,
    version: flags.protocol === 1 ? 1 : 2,
    local: flags.local,
  });
  return { client, lease: c.lease };
}
