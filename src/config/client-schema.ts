// The "client" section (dstm request, dstm release, dstm leases): where the DSTM server is and how to call it.
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { boolean, describe, field, integer, optional, record, string, type Infer, type KeyDoc } from './schema';
import { flag } from './settings';
import { endpoints, path } from './types';

/** How a client (dstm request, release, leases, tep) speaks RPC-with-TLS to the server. */
export const clientTls = record(
  {
    enabled: field(
      boolean,
      false,
      'Call the server over TCP with RPC-with-TLS (RFC 9289): the AUTH_TLS probe, then TLS 1.3; fail (exit 9) when the server does not offer it.',
      {
        flag: flag.boolean('tls', {
          summary:
            'Call the server over TCP with RPC-with-TLS (RFC 9289): the AUTH_TLS probe, then TLS 1.3; fail if it is not offered.',
        }),
      },
    ),
    ca: optional(
      path,
      "PEM file of the CA(s) the server's certificate must verify against; without it the system's CAs.",
      {
        flag: flag.string('tls-ca', {
          helpValue: 'FILE',
          summary: "PEM file of the CA the server's certificate must verify against (default: the system's CAs).",
        }),
      },
    ),
    cert: optional(path, 'PEM file of the certificate of this client (or TEP), for servers with the mutual policy.', {
      flag: flag.string('tls-cert', {
        helpValue: 'FILE',
        summary: "PEM file of this client's certificate (servers with the mutual policy ask for one).",
      }),
    }),
    key: optional(path, 'PEM file of its private key.', {
      flag: flag.string('tls-key', { helpValue: 'FILE', summary: 'PEM file of the key of --tls-cert.' }),
    }),
    server_name: optional(
      string,
      "The name the server's certificate must carry; default: the server's IPv6 address, which must then be one of the certificate's subjectAltName IP addresses.",
    ),
  },
  'client-tls',
);

export const clientFields = {
  server: field(
    endpoints(DEFAULT_PORT, 6),
    `[::1]:${DEFAULT_PORT}`,
    'DSTM server to call, or a list of servers sharing one store: each call goes to the one that answered last, and on to the next at once when one refuses the connection or is unreachable, or after the timeout.',
    {
      man: 'For example ["[2001:db8:2::10]:3786", "[2001:db8:3::10]:3786"].',
      flag: flag.strings('server', {
        env: 'DSTM_SERVER',
        helpValue: '[IPV6]:PORT',
        summary: `DSTM server, '[IPV6]:PORT'; repeatable: servers sharing one store, tried in turn (default: DSTM_SERVER, the config file's client.server, else [::1]:${DEFAULT_PORT}).`,
      }),
    },
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server.', {
    flag: flag.uint32('program', {
      summary: 'ONC RPC program number of the server, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).',
    }),
  }),
  timeout: field(integer(1, 3600000), 5000, 'Milliseconds to wait for each reply before giving up.', {
    flag: flag.integer('timeout', {
      helpValue: 'MS',
      summary: 'Milliseconds to wait for a reply, 1 to 3600000 (default 5000).',
    }),
  }),
  lease: field(integer(0, 0x7fffffff), 0, 'Lease duration in seconds to ask for; 0 takes the server default.', {
    flag: flag.integer('lease', {
      helpValue: 'SECONDS',
      summary: 'Lease length to ask for, in seconds (default 0: the server decides).',
    }),
  }),
  tls: field(clientTls, {}, 'RPC-with-TLS (RFC 9289) towards the server; see dstm-rpc(7).'),
};

export type ClientConfig = Infer<typeof clientFields>;

export function clientKeys(): KeyDoc[] {
  return describe(clientFields, 'client');
}
