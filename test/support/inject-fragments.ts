// inject-fragments.ts SRC6 DST6 SRC4 DST4 all|first [BYTES]: sends one IPv4-in-IPv6 UDP packet of BYTES (default
// 2000, at most 4000) as IPv6 fragments at 1280 bytes (RFC 2473 §7.2, as a DTI does for DF=0), all of them or only
// the first (a reassembly that never completes).
import { RawIpipSocket } from '../../src/dti/device';
import {
  EncapConfig,
  HEADROOM,
  encapsulate,
  fragmentIpv6,
  setIpv4Checksum,
  writeU16,
  writeU32,
} from '../../src/dti/packet';
import { parseIPv4, parseIPv6 } from '../../src/lib/addr';

const [src6, dst6, src4, dst4, which, bytes = '2000'] = process.argv.slice(2);
const LEN = Number(bytes);
const cfg = new EncapConfig(parseIPv6(src6));
const buf = new Uint8Array(HEADROOM + LEN);
const p = HEADROOM;
buf[p] = 0x45;
writeU16(buf, p + 2, LEN);
writeU16(buf, p + 4, process.pid & 0xffff);
buf[p + 8] = 64;
buf[p + 9] = 17;
writeU32(buf, p + 12, parseIPv4(src4));
writeU32(buf, p + 16, parseIPv4(dst4));
setIpv4Checksum(buf, p);
writeU16(buf, p + 20, 40000);
writeU16(buf, p + 22, 9);
writeU16(buf, p + 24, LEN - 20); // UDP length; checksum 0 (none)
const off = encapsulate(buf, p, LEN, parseIPv6(dst6), 0, cfg);
if (off < 0) throw new Error(`encapsulate refused: ${-off}`);
const slot = 1280;
const out = new Uint8Array(4 * slot);
const lengths = new Uint32Array(4);
const n = fragmentIpv6(buf, off, LEN + cfg.overhead, 1280, process.pid, out, 0, slot, 4, lengths, 0);
if (n < 2) throw new Error(`fragmentIpv6: ${n}`);
const count = which === 'first' ? 1 : n;
const sock = RawIpipSocket.open();
const sent = sock.sendBatch(
  out,
  Uint32Array.from({ length: count }, (_, i) => i * slot),
  lengths,
  count,
);
if (sent !== count) throw new Error(`send failed: errno ${sock.lastSend().errno}`);
sock.close();
