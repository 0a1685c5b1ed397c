// server.per_prefix's bookkeeping follows the compacted binding feed: one row per address, its latest change only.
import { expect } from 'chai';
import { parseIPv6 } from '../../src/lib/addr';
import { PrefixCaps, type Feed } from '../../src/server/prefix-cap';
import type { Change } from '../../src/server/store';

/** A compacted feed as the store keeps it: setting an address replaces its row under a new sequence number. */
class CompactedFeed implements Feed {
  private rows = new Map<number, Change>();
  private seq = 0;
  set(ip4: number, node: string, active: boolean): void {
    this.rows.set(ip4, { seq: ++this.seq, ip4, ip6: Buffer.from(parseIPv6(node)), starts: 0, ends: 0, active });
  }
  async changes(since: number, max: number) {
    const all = [...this.rows.values()].filter((c) => c.seq > since).sort((a, b) => a.seq - b.seq);
    const changes = all.slice(0, max);
    return { changes, more: all.length > max, next: changes.length ? changes[changes.length - 1].seq : since };
  }
}

describe('per-prefix binding caps', () => {
  it('finding 2: counts each node once, forgets a node whose address went to another unseen, and follows a node that moved', async () => {
    const feed = new CompactedFeed();
    const caps = new PrefixCaps({ len: 64, max: 2 }, feed);
    const a = parseIPv6('2001:db8:1:1::a');
    const b = parseIPv6('2001:db8:1:1::b');
    const c = parseIPv6('2001:db8:1:1::c');
    feed.set(1, '2001:db8:1:1::a', true);
    feed.set(2, '2001:db8:1:1::b', true);
    expect(await caps.holders(a)).to.equal(2);
    expect((await caps.admit(c)).ok).to.equal(false);
    expect((await caps.admit(a)).ok).to.equal(true); // a renewal
    feed.set(2, '2001:db8:1:1::b', true); // b renewed: still one node
    expect(await caps.holders(a)).to.equal(2);
    // a released address 1 and c took it, between two reads: only "1 -> c" is left in the feed
    feed.set(1, '2001:db8:1:1::a', false);
    feed.set(1, '2001:db8:1:1::c', true);
    expect(await caps.holders(a)).to.equal(2);
    // b moved from address 2 to 3, then 2 ended for good
    feed.set(3, '2001:db8:1:1::b', true);
    feed.set(2, '2001:db8:1:1::b', false);
    expect(await caps.holders(b)).to.equal(2);
    feed.set(3, '2001:db8:1:1::b', false);
    expect(await caps.holders(b)).to.equal(1);
    // admissions in flight count until done
    const first = await caps.admit(a);
    expect(first.ok).to.equal(true);
    expect((await caps.admit(parseIPv6('2001:db8:1:1::d'))).ok).to.equal(false);
    first.done();
    await caps.holders(a); // done() counts the admission until the feed has been read past it
    expect((await caps.admit(parseIPv6('2001:db8:1:1::d'))).ok).to.equal(true);
    // another /64 has its own count
    expect((await caps.admit(parseIPv6('2001:db8:1:2::a'))).ok).to.equal(true);
  });
});
