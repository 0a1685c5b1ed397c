// The wait of a durable round (a sync, a batch) for the calls expected to join it.
import { expect } from 'chai';
import { GATHER_FRACTION, Gathering } from '../../src/server/gathering';

describe('Gathering', () => {
  it('starts at once when nothing is expected, before any round ended', () => {
    expect(new Gathering(10).left(1, 1000)).to.equal(0);
  });

  it('waits for as many calls as the last round answered plus those then waiting, up to a fraction of a round', () => {
    const g = new Gathering(10);
    g.ended(10, 3, 2);
    const window = 10 * GATHER_FRACTION;
    expect(g.left(4, 1000)).to.equal(window);
    // The wait is counted from the first look, not from each.
    expect(g.left(4, 1001)).to.equal(window - 1);
    expect(g.left(5, 1001)).to.equal(0);
    expect(g.left(4, 1000 + window)).to.equal(0);
    expect(g.left(4, 1000 + window + 5)).to.equal(0);
  });

  it('gathers afresh for each round', () => {
    const g = new Gathering(10);
    g.ended(10, 2, 0);
    g.left(1, 1000);
    g.started();
    expect(g.left(1, 2000)).to.equal(10 * GATHER_FRACTION);
  });

  it("follows the rounds' duration as a moving average, and the last round's calls", () => {
    const g = new Gathering(10);
    g.ended(90, 1, 1);
    // 10 + (90 - 10) / 8
    expect(g.left(1, 0.5)).to.be.closeTo(20 * GATHER_FRACTION, 1e-9);
    g.started();
    g.ended(20, 1, 0);
    expect(g.left(1, 0.5)).to.equal(0);
  });
});
