import { expect } from 'chai';
import { Ipv4Set } from '../../src/tep/ipv4-set';
import { seeded } from '../support/random';

describe('Ipv4Set', () => {
  it('answers as a Set would for members and non-members, over the whole IPv4 range (seeded)', () => {
    const rand = seeded(20261205);
    const addr = (): number => Math.floor(rand() * 2 ** 32);
    const members = [0, 0xffffffff, 0x80000000, ...Array.from({ length: 5000 }, addr)];
    const set = new Ipv4Set([...members, ...members.slice(0, 100)]); // duplicates count once
    const truth = new Set(members);
    expect(set.size).to.equal(truth.size);
    for (const a of members) expect(set.has(a), `member ${a}`).to.equal(true);
    for (let i = 0; i < 20000; i++) {
      const a = addr();
      expect(set.has(a), `address ${a}`).to.equal(truth.has(a));
    }
  });

  it('is empty for no addresses', () => {
    const set = new Ipv4Set([]);
    expect([set.size, set.has(0), set.has(0xffffffff)]).to.deep.equal([0, false, false]);
  });
});
