// inject.ts SRC6 DST6 SRC4 DST4 COUNT: sends COUNT IPv4-in-IPv6 UDP packets with exactly these addresses through
// a raw socket (the outer source may be any address: the point is to show what the TEP drops).
import { RawIpipSocket } from '../../src/dti/device';
import { EncapConfig, HEADROOM, encapsulate, setIpv4Checksum, writeU16, writeU32 } from '../../src/dti/packet';
import { parseIPv4, parseIPv6 } from '../../src/lib/addr';

const [src6, dst6, src4, dst4, countText] = process.argv.slice(2);
const count = Number(countText);
const cfg = new EncapConfig(parseIPv6(src6));
const dst = parseIPv6(dst6);
const sock = RawIpipSocket.open();
const buf = new Uint8Array(HEADROOM + 64);
for (let i = 0; i < count; i++) {
  const p = HEADROOM;
  buf.fill(0, p);
  buf[p] = 0x45;
  writeU16(buf, p + 2, 28 + 4); // IPv4 + UDP headers + 4 bytes
  writeU16(buf, p + 4, i);
  buf[p + 8] = 64;
  buf[p + 9] = 17;
  writeU32(buf, p + 12, parseIPv4(src4));
  writeU32(buf, p + 16, parseIPv4(dst4));
  setIpv4Checksum(buf, p);
  writeU16(buf, p + 20, 40000);
  writeU16(buf, p + 22, 9);
  writeU16(buf, p + 24, 12); // UDP length; checksum 0 (none)
  const off = encapsulate(buf, p, 32, dst, 0, cfg);
  if (off < 0) throw new Error(`encapsulate refused: ${-off}`);
  const sent = sock.sendBatch(buf, Uint32Array.of(off), Uint32Array.of(32 + cfg.overhead), 1);
  if (sent !== 1) throw new Error(`send failed: errno ${sock.lastSend().errno}`);
}
sock.close();
