// The "client" section (dstm request, dstm release, dstm leases): where the DSTM server is and how to call it.
import { DEFAULT_PORT, DEFAULT_PROGRAM } from './server-schema';
import { describe, field, integer, type Infer, type KeyDoc } from './schema';
import { endpoints } from './types';

export const clientFields = {
  server: field(
    endpoints(DEFAULT_PORT, 6),
    `[::1]:${DEFAULT_PORT}`,
    'DSTM server to call, or a list of servers sharing one store: each call goes to the one that answered last, and on to the next at once when one refuses the connection or is unreachable, or after the timeout (--server, repeatable; the DSTM_SERVER environment variable, comma-separated, also sets it).',
  ),
  program: field(integer(1, 0xffffffff), DEFAULT_PROGRAM, 'ONC RPC program number of the DSTM server (--program).'),
  timeout: field(integer(1, 3600000), 5000, 'Milliseconds to wait for each reply before giving up (--timeout).'),
  lease: field(integer(0, 0x7fffffff), 0, 'Lease duration in seconds to ask for; 0 takes the server default (--lease).'),
};

export type ClientConfig = Infer<typeof clientFields>;

export function clientKeys(): KeyDoc[] {
  return describe(clientFields, 'client');
}
