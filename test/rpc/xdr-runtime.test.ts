import { expect } from 'chai';
import { XdrError, XdrReader, XdrWriter } from '../../src/rpc/xdr/runtime';

describe('XDR runtime', () => {
  it('pads opaque and strings with zeros and reads them back', () => {
    const w = new XdrWriter(4);
    w.varOpaque(Uint8Array.of(1, 2, 3), 8);
    w.string('héllo', 16);
    w.hyper(-2n);
    const bytes = w.toBytes();
    expect(Array.from(bytes.subarray(0, 8))).to.deep.equal([0, 0, 0, 3, 1, 2, 3, 0]);
    const r = new XdrReader(bytes);
    expect(Array.from(r.varOpaque(8))).to.deep.equal([1, 2, 3]);
    expect(r.string(16)).to.equal('héllo');
    expect(r.hyper()).to.equal(-2n);
    r.done();
  });

  it('refuses a length beyond its maximum or beyond the bytes left, before allocating', () => {
    const w = new XdrWriter();
    w.uint(0x7fffffff);
    expect(() => new XdrReader(w.toBytes()).varOpaque()).to.throw(XdrError, /exceeds the 0 bytes left/);
    expect(() => new XdrReader(w.toBytes()).varOpaque(10)).to.throw(XdrError, /exceeds the maximum of 10/);
  });

  it('refuses non-zero padding, bad bools and trailing bytes', () => {
    expect(() => new XdrReader(Uint8Array.of(0, 0, 0, 1, 9, 0, 0, 1)).varOpaque()).to.throw(/non-zero padding/);
    expect(() => new XdrReader(Uint8Array.of(0, 0, 0, 2)).bool()).to.throw(/0 or 1/);
    const r = new XdrReader(Uint8Array.of(0, 0, 0, 1, 0));
    r.uint();
    expect(() => r.done()).to.throw(/1 trailing bytes/);
  });

  it('checks array counts against the bytes left', () => {
    const r = new XdrReader(Uint8Array.of(0, 0, 0x10, 0, 0, 0, 0, 0));
    expect(() => r.count(0xffffffff, 4, 'list')).to.throw(/cannot fit/);
  });
});
