import { expect } from 'chai';
import { setSource } from '../../src/node/dti-node';
import { internetChecksum } from '../../src/dti/packet';
import { parseIPv4 } from '../../src/lib/addr';
import { ipv4, v4 } from '../dti/build';

/** UDP checksum of the packet at 0 as a receiver verifies it: 0 (or 0xffff) when correct. */
function udpCheck(p: Uint8Array): number {
  const len = p.length - 20;
  const pseudo = [...p.subarray(12, 20), 0, 17, len >> 8, len & 0xff];
  const buf = new Uint8Array([...pseudo, ...p.subarray(20)]);
  return internetChecksum(buf, 0, buf.length);
}

describe('on-demand DTI: queued packets sent from 0.0.0.0 get the leased source', () => {
  it('rewrites the source with valid IPv4 header and UDP checksums', () => {
    const udp = [40000 >> 8, 40000 & 0xff, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
    const raw = ipv4({ src: '0.0.0.0', dst: '192.0.2.2', proto: 17, payload: udp });
    const pseudo = [...v4('0.0.0.0'), ...v4('192.0.2.2'), 0, 17, 0, 12];
    const c = internetChecksum(new Uint8Array([...pseudo, ...udp]), 0, pseudo.length + udp.length);
    raw[26] = c >> 8;
    raw[27] = c & 0xff;
    const p = new Uint8Array(raw);
    expect(udpCheck(p)).to.equal(0);
    setSource(p, 0, p.length, parseIPv4('198.51.100.1'));
    expect([...p.subarray(12, 16)]).to.deep.equal([198, 51, 100, 1]);
    expect(internetChecksum(p, 0, 20)).to.equal(0);
    expect(udpCheck(p)).to.equal(0);
  });
});
