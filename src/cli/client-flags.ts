// Flags shared by dstm request, release and leases, so every client command spells and documents them alike.
import { Flags } from '@oclif/core';
import { isIPv6 } from 'node:net';
import { ConfigError } from '../config/schema';
import { DEFAULT_PORT } from '../config/server-schema';
import { loadClientConfig } from './client';
import { programFlag } from './flags';
import { DstmClient } from '../protocol/client';

export const clientFlags = {
  server: Flags.string({ summary: `DSTM server, [IPV6]:PORT (default: DSTM_SERVER, the config file's client.server, else [::1]:${DEFAULT_PORT}).` }),
  config: Flags.string({ summary: 'Configuration file (its "client" section); default DSTM_CONFIG or /etc/dstm/dstm.json if present.' }),
  program: programFlag('ONC RPC program number of the server, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).'),
  timeout: Flags.integer({ summary: 'Milliseconds to wait for a reply (default 5000).' }),
  json: Flags.boolean({ summary: 'Print the result as JSON (dstm(1), JSON OUTPUT).' }),
};

export const exchangeFlags = {
  ...clientFlags,
  transport: Flags.string({ summary: 'RPC transport.', options: ['udp', 'tcp'], default: 'udp' }),
  protocol: Flags.integer({ summary: 'DSTM program version: 2 (status codes) or 1 (Annex B as is).', options: ['1', '2'] as never, default: 2 }),
  local: Flags.string({ summary: 'IPv6 address to call from (default: the source address the kernel picks for the server).' }),
};

export type ExchangeFlags = {
  server?: string;
  config?: string;
  program?: number;
  timeout?: number;
  transport: string;
  protocol: number;
  local?: string;
  lease?: number;
};

/** Connect a DstmClient as the flags, environment and configuration file say. */
export async function connectFromFlags(flags: ExchangeFlags): Promise<{ client: DstmClient; lease: number }> {
  const c = loadClientConfig(flags);
  if (flags.local !== undefined && !isIPv6(flags.local)) throw new ConfigError('--local', flags.local, 'an IPv6 address');
  const client = await DstmClient.connect({
    host: c.server.host,
    port: c.server.port,
    program: c.program,
    timeoutMs: c.timeout,
    transport: flags.transport as 'udp' | 'tcp',
    version: flags.protocol === 1 ? 1 : 2,
    local: flags.local,
  });
  return { client, lease: c.lease };
}
