import { expect } from 'chai';
import { type Codec, XdrError, XdrReader, XdrWriter, decode, encode, within, xdrVoid } from '../../src/rpc/xdr/runtime';

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

  it('a writer made with room for nothing grows', () => {
    const w = new XdrWriter(0);
    w.string('grows');
    expect(Array.from(w.toBytes())).to.deep.equal([0, 0, 0, 5, 0x67, 0x72, 0x6f, 0x77, 0x73, 0, 0, 0]);
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

  it('reads 64-bit and floating values at any byte offset, from buffers in turn', () => {
    const w = new XdrWriter();
    w.uhyper(0x0102030405060708n);
    w.double(-1.25);
    w.hyper(-5n);
    w.float(0.5);
    const bytes = w.toBytes();
    const a = new Uint8Array(bytes.length + 12);
    a.set(bytes, 12);
    const b = Uint8Array.from(bytes);
    for (const src of [a.subarray(12), b, a.subarray(12)]) {
      const r = new XdrReader(src);
      expect([r.uhyper(), r.double(), r.hyper(), r.float()]).to.deep.equal([0x0102030405060708n, -1.25, -5n, 0.5]);
      r.done();
    }
  });

  it('reads 64-bit values at their limits and around 2^32, as DataView does', () => {
    const edges = [0n, 1n, 0xffffffffn, 0x100000000n, 0x100000001n, 0x7fffffffffffffffn];
    const signed = [...edges, ...edges.map((x) => -x), -0x8000000000000000n, -0xffffffffn - 1n];
    const unsigned = [...edges, 0x8000000000000000n, 0xffffffff00000000n, 0xffffffffffffffffn];
    const w = new XdrWriter();
    for (const v of signed) w.hyper(v);
    for (const v of unsigned) w.uhyper(v);
    const bytes = w.toBytes();
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const r = new XdrReader(bytes);
    signed.forEach((v, i) => {
      expect(dv.getBigInt64(i * 8)).to.equal(v);
      expect(r.hyper()).to.equal(v);
    });
    unsigned.forEach((v, i) => {
      expect(dv.getBigUint64((signed.length + i) * 8)).to.equal(v);
      expect(r.uhyper()).to.equal(v);
    });
    r.done();
    expect(() => new XdrReader(bytes.subarray(0, 7)).uhyper('cookie')).to.throw(
      XdrError,
      /XDR cookie: needs 8 bytes, 7 left/,
    );
  });

  it('decoded opaque data is a plain Uint8Array copy, whatever its size', () => {
    for (const n of [3, 16, 40, 100, 5000]) {
      const w = new XdrWriter(8);
      w.varOpaque(Uint8Array.from({ length: n }, (_, i) => i & 0xff));
      const bytes = w.toBytes();
      expect(Object.getPrototypeOf(bytes)).to.equal(Uint8Array.prototype);
      const r = new XdrReader(bytes);
      const v = r.varOpaque();
      expect(Object.getPrototypeOf(v)).to.equal(Uint8Array.prototype);
      bytes[4] = 0xee;
      expect(v[0]).to.equal(0);
      expect(v.length).to.equal(n);
      expect(v[n - 1]).to.equal((n - 1) & 0xff);
    }
  });

  it('decoded opaque data and strings stay intact when a Buffer they came from is reused', () => {
    for (const n of [3, 16, 40, 64, 65, 100, 4095, 4096, 5000]) {
      const w = new XdrWriter(8);
      w.fixedOpaque(
        Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff),
        n,
      );
      w.varOpaque(Uint8Array.from({ length: n }, (_, i) => (i * 3) & 0xff));
      w.string('s'.repeat(n));
      // A receive buffer with the message at an offset, as a socket's Buffer can be.
      const received = Buffer.alloc(w.pos + 12);
      received.set(w.toBytes(), 12);
      const r = new XdrReader(received.subarray(12));
      const fixed = r.fixedOpaque(n);
      const variable = r.varOpaque();
      const s = r.string();
      r.done();
      received.fill(0xee);
      for (const [v, k] of [
        [fixed, 7],
        [variable, 3],
      ] as const) {
        expect(
          Buffer.compare(
            v,
            Uint8Array.from({ length: n }, (_, i) => (i * k) & 0xff),
          ),
          `${n} bytes`,
        ).to.equal(0);
        expect(Object.getPrototypeOf(v) === Uint8Array.prototype, `${n} bytes: a plain Uint8Array`).to.equal(true);
      }
      expect(s).to.equal('s'.repeat(n));
    }
  });

  it('codes strings as UTF-8, short and long, and refuses invalid UTF-8', () => {
    const short = [
      'a',
      'ab',
      'abc',
      'abcd',
      'abcde',
      'file-12.txt',
      'abcé',
      'abcdé',
      'é-abcdefg',
      'x'.repeat(29) + 'é',
      'w'.repeat(32),
    ];
    for (const s of ['', 'ascii', 'é', 'x'.repeat(31) + 'é', 'y'.repeat(100), 'z'.repeat(100) + '€', ...short]) {
      const w = new XdrWriter();
      w.string(s);
      expect(new XdrReader(w.toBytes()).string()).to.equal(s);
    }
    expect(() => new XdrReader(Uint8Array.of(0, 0, 0, 2, 0xc3, 0x28, 0, 0)).string(8, 'name')).to.throw(
      XdrError,
      /XDR name: not valid UTF-8/,
    );
  });

  it('refuses integers out of range when encoding, naming the field', () => {
    const w = new XdrWriter();
    expect(() => w.int(2 ** 31, 'f')).to.throw(XdrError, /XDR f: 2147483648 is not a 32-bit signed integer/);
    expect(() => w.int(1.5)).to.throw(XdrError);
    expect(() => w.uint(-1)).to.throw(XdrError);
    expect(() => w.uint(2 ** 32)).to.throw(XdrError);
    expect(() => w.hyper(2n ** 63n)).to.throw(XdrError);
    expect(() => w.uhyper(-1n)).to.throw(XdrError);
    expect(() => w.uhyper(5 as unknown as bigint)).to.throw(XdrError);
    w.int(-(2 ** 31));
    w.uint(2 ** 32 - 1);
    w.uhyper(2n ** 64n - 1n);
    expect(w.pos).to.equal(16);
  });

  it('encode() without a writer returns fresh bytes, also when a codec calls encode() itself or throws', () => {
    const u32: Codec<number> = { encode: (w, v) => w.uint(v), decode: (r) => r.uint() };
    // Carries a u32 as opaque<>, encoding it with encode() from inside encode().
    const wrapped: Codec<number> = {
      encode: (w, v) => w.varOpaque(encode(u32, v)),
      decode: (r) => decode(u32, r.varOpaque()),
    };
    const a = encode(wrapped, 7);
    const b = encode(wrapped, 0x01020304);
    expect(Array.from(a)).to.deep.equal([0, 0, 0, 4, 0, 0, 0, 7]);
    expect(Array.from(b)).to.deep.equal([0, 0, 0, 4, 1, 2, 3, 4]);
    expect(decode(wrapped, a)).to.equal(7);
    expect(() => encode(u32, -1)).to.throw(XdrError);
    expect(Array.from(encode(u32, 9))).to.deep.equal([0, 0, 0, 9]);
    const big = new Uint8Array(200000).fill(5);
    const bytes = encode({ encode: (w, v: Uint8Array) => w.varOpaque(v), decode: (r) => r.varOpaque() }, big);
    expect(bytes.length).to.equal(200004);
    expect(Array.from(encode(u32, 10))).to.deep.equal([0, 0, 0, 10]);
  });

  it('builds field paths as errors unwind, and the void codec is empty', () => {
    const e = new XdrError('seconds', 'needs 4 bytes, 0 left', 8);
    within(within(within(e, 'mtime'), '[2]'), 'entries');
    expect(e.message).to.equal('XDR entries[2].mtime.seconds: needs 4 bytes, 0 left (at byte 8)');
    const other = new RangeError('x');
    expect(within(other, 'f')).to.equal(other);
    const w = new XdrWriter();
    xdrVoid.encode(w, undefined);
    expect(w.pos).to.equal(0);
  });
});
