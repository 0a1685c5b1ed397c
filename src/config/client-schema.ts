// The "client" section (dstm request, dstm release, dstm leases): where the DSTM server is and how to call it.
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { boolean, describe, field, integer, optional, record, string, type Infer, type KeyDoc } from './schema';
import { endpoints, path } from './types';

/** How a client (dstm request, release, leases, tep) speaks RPC-with-TLS to the server. */
export const clientTls = record(
  {
    enabled: field(
      boolean,
      false,
      'Call the server over TCP with RPC-with-TLS (RFC 9289): the AUTH_TLS probe, then TLS 1.3; fail when the server does not offer it (--tls).',
    ),
    ca: optional(
      path,
      "PEM file of the CA(s) the server's certificate must verify against; without it the system's CAs (--tls-ca).",
    ),
    cert: optional(path, "PEM file of this client's certificate, for servers with the mutual policy (--tls-cert)."),
    key: optional(path, 'PEM file of its private key (--tls-key).'),
    server_name: optional(
      string,
      "The name the server's certificate must carry; default: the server's IPv6 address, as a subjectAltName IP.",
    ),
  },
  'client-tls',
);

export const clientFields = {
  server: field(
    endpoints(DEFAULT_PORT, 6),
    `[::1]:${DEFAULT_PORT}`,
    'DSTM server to call, or a list of servers sharing one store: each call goes to the one that answered last, and on to the next at once when one refuses the connection or is unreachable, or after the timeout (--server, repeatable; the DSTM_SERVER environment variable, comma-separated, also sets it).',
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server (--program).'),
  timeout: field(integer(1, 3600000), 5000, 'Milliseconds to wait for each reply before giving up (--timeout).'),
  lease: field(
    integer(0, 0x7fffffff),
    0,
    'Lease duration in seconds to ask for; 0 takes the server default (--lease).',
  ),
  tls: field(clientTls, {}, 'RPC-with-TLS towards the server.'),
};

export type ClientConfig = Infer<typeof clientFields>;

export function clientKeys(): KeyDoc[] {
  return describe(clientFields, 'client');
}
