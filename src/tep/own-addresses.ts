// The TEP host's own IPv4 addresses, which no node may be bound to. Read from the interfaces at most once a
// second (a full resync binds thousands of addresses at once), so an address added later is covered soon after.
import { networkInterfaces } from 'node:os';
import { parseIPv4 } from '../lib/addr';

const REFRESH_MS = 1000;
let cached = new Set<number>();
let readAt = -Infinity;

/** Is `ipv4` the TEP's configured address or any address of this host's interfaces? */
export function isOwnAddress(ipv4: number, tepIPv4: number): boolean {
  if (ipv4 === tepIPv4) return true;
  const now = performance.now();
  if (now - readAt >= REFRESH_MS) {
    readAt = now;
    cached = new Set(
      Object.values(networkInterfaces()).flatMap((list) =>
        (list ?? []).filter((a) => a.family === 'IPv4').map((a) => parseIPv4(a.address)),
      ),
    );
  }
  return cached.has(ipv4);
}
