// "[IPV6]:PORT", "IPV6", "[IPV6]", "IPV4:PORT", "IPV4" or ":PORT": the one parser for every --listen, --server and
// --metrics flag, so all commands accept and reject the same spellings with the same message.
import { isIP } from 'node:net';

export interface Endpoint {
  host: string;
  port: number;
  family: 4 | 6;
}

export function parseEndpoint(text: string, defaultPort: number, defaultHost = '::'): Endpoint {
  const fail = (why: string): never => {
    throw new Error(`"${text}" is not an endpoint: ${why} (expected [IPV6]:PORT, IPV6, IPV4:PORT or :PORT)`);
  };
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracket) {
    host = bracket[1];
    portText = bracket[2];
  } else if (text.startsWith(':') && !text.startsWith('::')) {
    host = defaultHost;
    portText = text.slice(1);
  } else if (text.split(':').length === 2) {
    [host, portText] = text.split(':');
  } else {
    host = text;
  }
  const family = isIP(host);
  if (family === 0) fail(`"${host}" is not an IP address`);
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) fail(`port "${portText}" is not 0-65535`);
    port = Number(portText);
  }
  return { host, port, family: family as 4 | 6 };
}

/** The canonical text form, with brackets around IPv6 hosts. */
export function formatEndpoint(e: { host: string; port: number }): string {
  return isIP(e.host) === 6 ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}
