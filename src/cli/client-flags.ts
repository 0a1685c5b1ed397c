// Flags shared by dstm request, release and leases, so every client command spells and documents them alike.
import { Flags, type Interfaces } from '@oclif/core';
import { isIPv6 } from 'node:net';
import { ConfigError } from '../config/schema';
import { clientFields } from '../config/client-schema';
import { loadClientConfig, tlsClientOf, type ClientFlags } from './client';
import { settingFlags, configFlag } from './setting-flags';
import { FailoverClient } from '../protocol/failover';

/**
 * The client commands' flags: those of the "client" section's keys (--server, --program, --timeout and the --tls
 * ones; --lease is request's), the configuration file and --json.
 */
export const clientFlags = {
  ...settingFlags(clientFields, ['lease']),
  config: configFlag('client'),
  json: Flags.boolean({ summary: 'Print the result as JSON (dstm(1), JSON OUTPUT).' }),
};

/** How request and release call the server (not configuration keys: each call chooses). */
const callFlags = {
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
    helpValue: 'IPV6',
    summary: 'IPv6 address to call from (default: the source address the kernel picks for the server).',
  }),
};

export const exchangeFlags = { ...clientFlags, ...callFlags };

export type ExchangeFlags = ClientFlags & Interfaces.InferredFlags<typeof callFlags>;

/** A client of the servers the flags, environment and configuration file name (each connected at its first call). */
export async function connectFromFlags(flags: ExchangeFlags): Promise<{ client: FailoverClient; lease: number }> {
  const c = loadClientConfig(flags);
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
