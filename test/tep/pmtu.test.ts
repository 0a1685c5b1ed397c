// The TEP's path MTU cache: per destination, only lowered, aged out, bounded.
import { expect } from 'chai';
import { parseIPv6 } from '../../src/lib/addr';
import { PMTU_KEPT, PMTU_LOWERED, PMTU_RENEWED, PathMtuCache } from '../../src/tep/pmtu';

const node = (i: number): Uint8Array => parseIPv6(`2001:db8:1::${(i + 1).toString(16)}`);

describe('tep path MTU cache', () => {
  it('keeps the lowest MTU per destination until it ages out', () => {
    const c = new PathMtuCache(16, 1000);
    expect(c.get(node(1), 0, 0, 1500)).to.equal(1500);
    expect(c.lower(node(1), 0, 1400, 0)).to.equal(PMTU_LOWERED);
    expect(c.lower(node(1), 0, 1450, 10)).to.equal(PMTU_KEPT); // a larger value never raises it
    expect(c.lower(node(1), 0, 1300, 10)).to.equal(PMTU_LOWERED);
    expect(c.get(node(1), 0, 500, 1500)).to.equal(1300);
    expect(c.get(node(2), 0, 500, 1500)).to.equal(1500);
    expect(c.get(node(1), 0, 1011, 1500)).to.equal(1500);
    expect(c.size(1011)).to.equal(0);
  });

  it('holds at most its capacity, evicting what expires first, and still finds the newest entries', () => {
    const c = new PathMtuCache(64, 60_000);
    for (let i = 0; i < 1000; i++) c.lower(node(i), 0, 1280 + (i % 100), i);
    expect(c.size(1000)).to.be.at.most(64);
    for (let i = 990; i < 1000; i++) expect(c.get(node(i), 0, 1000, 1500)).to.equal(1280 + (i % 100));
  });
  it('finding 6: holds for its age after the last packet-too-big below the configured MTU, the same or higher', () => {
    const age = 600_000;
    const c = new PathMtuCache(16, age);
    expect(c.lower(node(1), 0, 1300, 0)).to.equal(PMTU_LOWERED);
    expect(c.lower(node(1), 0, 1300, 100_000)).to.equal(PMTU_RENEWED); // the same MTU
    expect(c.lower(node(1), 0, 1400, 400_000)).to.equal(PMTU_RENEWED); // higher, still lower than configured
    expect(c.lower(node(1), 0, 1400, 400_500)).to.equal(PMTU_KEPT); // renewed half a second ago: nothing to tell
    expect(c.get(node(1), 0, age + 1, 1500)).to.equal(1300); // past the first one's age: still the lowest MTU
    expect(c.get(node(1), 0, 400_000 + age - 1, 1500)).to.equal(1300);
    expect(c.get(node(1), 0, 400_000 + age, 1500)).to.equal(1500); // the last one's age is over
  });
});
