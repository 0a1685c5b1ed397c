// XDR (RFC 4506) runtime: the primitives that generated codecs are built on, as libc's xdr_* are for rpcgen.
// The reader treats every byte as untrusted: lengths and counts are checked against their declared maximum and
// against the bytes left before anything is allocated, padding must be zero, and nesting depth is bounded.

/** One typed error for every decoding or encoding failure; `what` names the field or rule that failed. */
export class XdrError extends Error {
  constructor(
    public what: string,
    readonly detail: string,
    readonly offset = -1,
  ) {
    super(XdrError.text(what, detail, offset));
    this.name = 'XdrError';
  }

  private static text(what: string, detail: string, offset: number): string {
    return offset >= 0 ? `XDR ${what}: ${detail} (at byte ${offset})` : `XDR ${what}: ${detail}`;
  }

  /** Prefix the field path with the enclosing field or type (generated code calls this as an error unwinds). */
  within(outer: string): this {
    this.what = this.what === '' ? outer : this.what[0] === '[' ? outer + this.what : `${outer}.${this.what}`;
    this.message = XdrError.text(this.what, this.detail, this.offset);
    return this;
  }
}

/** For generated code's catch clauses: name the enclosing field in an XdrError; rethrow anything else as is. */
export function within(e: unknown, outer: string): unknown {
  return e instanceof XdrError ? e.within(outer) : e;
}

/** Encode and decode one XDR type. Generated code provides one of these per named type. */
export interface Codec<T> {
  encode(w: XdrWriter, v: T): void;
  decode(r: XdrReader): T;
}

/** The codec of `void`: zero bytes. */
export const xdrVoid: Codec<void> = {
  encode(): void {},
  decode(): void {},
};

export const DEFAULT_MAX_DEPTH = 128;
const UNBOUNDED = 0xffffffff;
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

function pad(n: number): number {
  return (4 - (n & 3)) & 3;
}

const SLAB = 8192;
let slab = new ArrayBuffer(SLAB);
/** Bytes of `slab` handed out, rounded up to 8 so that every copy starts aligned. */
let slabUsed = 0;

/**
 * A copy of `n` bytes of `src` (a plain Uint8Array: a Buffer's slice is a view) from `start`. Up to 64 bytes V8
 * allocates typed arrays on its heap (slice is fastest). From 65 bytes to 4 KiB the copy is a view of an 8 KiB slab
 * shared by such copies, as Node's Buffer pool does: an ArrayBuffer of its own would cost about 1 µs each, more than
 * decoding a whole message. So its .buffer is the slab: use byteOffset and byteLength with it.
 */
function copyBytes(src: Uint8Array, start: number, n: number): Uint8Array {
  if (n <= 16) {
    // Addresses and keys: a byte loop beats the call into slice.
    const v = new Uint8Array(n);
    for (let i = 0; i < n; i++) v[i] = src[start + i];
    return v;
  }
  if (n <= 64 || n >= 4096) return src.slice(start, start + n);
  if (slabUsed + n > SLAB) {
    slab = new ArrayBuffer(SLAB);
    slabUsed = 0;
  }
  const v = new Uint8Array(slab, slabUsed, n);
  slabUsed = (slabUsed + n + 7) & ~7;
  v.set(src.subarray(start, start + n));
  return v;
}

let lastBuffer: ArrayBufferLike | undefined;
let lastView: DataView | undefined;

/**
 * A DataView of `buffer`, reused while messages come from the same buffer (Node's Buffer pool slab, a socket's
 * receive buffer). Holds on to the last buffer seen until another one comes.
 */
function viewOf(buffer: ArrayBufferLike): DataView {
  if (buffer !== lastBuffer || lastView === undefined) {
    lastView = new DataView(buffer);
    lastBuffer = buffer;
  }
  return lastView;
}

/** A 64-bit value from its halves, making one BigInt when the high half is 0 (most sizes, ids and cookies). */
function join64(hi: number, lo: number): bigint {
  return hi === 0 ? BigInt(lo) : BigInt(hi) * 4294967296n + BigInt(lo);
}

/** Strings up to this many characters are coded byte by byte while ASCII: faster than a TextEncoder/Decoder call. */
const SHORT_STRING = 32;

export class XdrWriter {
  buf: Uint8Array;
  private view: DataView;
  pos = 0;

  constructor(initialSize = 512) {
    this.buf = new Uint8Array(initialSize);
    this.view = new DataView(this.buf.buffer);
  }

  /** Start over, keeping the buffer: a writer is meant to be reused for every message. */
  reset(): this {
    this.pos = 0;
    return this;
  }

  /** The bytes written so far, as a view (valid until the next write or reset). */
  view0(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /** A copy of the bytes written so far. */
  toBytes(): Uint8Array {
    return copyBytes(this.buf, 0, this.pos);
  }

  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    // From 64 at least: doubling a writer made with initialSize 0 would never grow.
    let size = Math.max(this.buf.length * 2, 64);
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** Overwrite a 32-bit unsigned value already written at `at` (e.g. a TCP record mark). */
  patchUint(at: number, v: number): void {
    this.view.setUint32(at, v);
  }

  int(v: number, what = 'int'): void {
    // (v | 0) === v holds exactly for numbers that are 32-bit signed integers (and -0).
    if ((v | 0) !== v) throw new XdrError(what, `${v} is not a 32-bit signed integer`);
    this.put32(v);
  }

  uint(v: number, what = 'unsigned int'): void {
    if (v >>> 0 !== v) throw new XdrError(what, `${v} is not a 32-bit unsigned integer`);
    this.put32(v);
  }

  /** C's char, short... (rpcgen dialect): sent as an int, but C would silently truncate a value outside lo..hi. */
  ranged(v: number, lo: number, hi: number, what: string): void {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new XdrError(what, `${v} is not between ${lo} and ${hi}`);
    this.put32(v);
  }

  private put32(v: number): void {
    const p = this.pos;
    if (p + 4 > this.buf.length) this.ensure(4);
    const b = this.buf;
    b[p] = v >>> 24;
    b[p + 1] = v >>> 16;
    b[p + 2] = v >>> 8;
    b[p + 3] = v;
    this.pos = p + 4;
  }

  hyper(v: bigint, what = 'hyper'): void {
    if (typeof v !== 'bigint' || BigInt.asIntN(64, v) !== v)
      throw new XdrError(what, `${v} is not a 64-bit signed integer`);
    this.ensure(8);
    this.view.setBigInt64(this.pos, v);
    this.pos += 8;
  }

  uhyper(v: bigint, what = 'unsigned hyper'): void {
    if (typeof v !== 'bigint' || BigInt.asUintN(64, v) !== v)
      throw new XdrError(what, `${v} is not a 64-bit unsigned integer`);
    this.ensure(8);
    this.view.setBigUint64(this.pos, v);
    this.pos += 8;
  }

  float(v: number, what = 'float'): void {
    if (typeof v !== 'number') throw new XdrError(what, `${v} is not a number`);
    this.ensure(4);
    this.view.setFloat32(this.pos, v);
    this.pos += 4;
  }

  double(v: number, what = 'double'): void {
    if (typeof v !== 'number') throw new XdrError(what, `${v} is not a number`);
    this.ensure(8);
    this.view.setFloat64(this.pos, v);
    this.pos += 8;
  }

  bool(v: boolean, what = 'bool'): void {
    if (typeof v !== 'boolean') throw new XdrError(what, `${v} is not a boolean`);
    this.put32(v ? 1 : 0);
  }

  /** opaque x[len]: exactly `len` bytes plus zero padding. */
  fixedOpaque(v: Uint8Array, len: number, what = 'opaque'): void {
    if (!(v instanceof Uint8Array) || v.length !== len)
      throw new XdrError(what, `fixed opaque[${len}] given ${v instanceof Uint8Array ? v.length : 'no'} bytes`);
    this.rawPadded(v);
  }

  /** opaque x<max>: length word, bytes, zero padding. */
  varOpaque(v: Uint8Array, max = UNBOUNDED, what = 'opaque'): void {
    if (!(v instanceof Uint8Array)) throw new XdrError(what, 'opaque data must be a Uint8Array');
    if (v.length > max) throw new XdrError(what, `${v.length} bytes exceed opaque<${max}>`);
    this.uint(v.length);
    this.rawPadded(v);
  }

  /** string x<max>: UTF-8 bytes (XDR strings are byte strings; ASCII is the common case). */
  string(s: string, max = UNBOUNDED, what = 'string'): void {
    if (typeof s !== 'string') throw new XdrError(what, `${s} is not a string`);
    // Reserve the worst case (3 bytes per UTF-16 unit), then write the length word once the size is known.
    this.ensure(4 + s.length * 3 + 3);
    const start = this.pos + 4;
    let written = s.length <= SHORT_STRING ? this.ascii(s, start) : -1;
    if (written < 0) written = utf8Encoder.encodeInto(s, this.buf.subarray(start)).written;
    if (written > max) throw new XdrError(what, `${written} bytes exceed string<${max}>`);
    this.view.setUint32(this.pos, written);
    this.pos = start + written;
    this.zeroPad(written);
  }

  /** Writes `s` at `at` if it is all ASCII and returns its length; -1 otherwise. */
  private ascii(s: string, at: number): number {
    const b = this.buf;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return -1;
      b[at + i] = c;
    }
    return s.length;
  }

  /** Array count or union discriminant helpers for generated code. */
  count(n: number, max: number, what: string): void {
    if (n > max) throw new XdrError(what, `${n} elements exceed the maximum of ${max}`);
    this.uint(n);
  }

  /** A fixed-length array's length, which is not encoded but must be exact. */
  fixedCount(n: number, len: number, what: string): void {
    if (n !== len) throw new XdrError(what, `${n} elements given for a fixed array of ${len}`);
  }

  /** A value that is not one of its enum's members, or a discriminant no arm of its union accepts. */
  undeclared(what: string, v: unknown): never {
    throw new XdrError(what, `${String(v)} is not a declared value`);
  }

  private rawPadded(v: Uint8Array): void {
    const n = v.length;
    if (this.pos + n + 3 > this.buf.length) this.ensure(n + 3);
    if (n <= 16) {
      const b = this.buf;
      const p = this.pos;
      for (let i = 0; i < n; i++) b[p + i] = v[i];
    } else this.buf.set(v, this.pos);
    this.pos += n;
    this.zeroPad(n);
  }

  private zeroPad(n: number): void {
    let p = pad(n);
    while (p-- > 0) this.buf[this.pos++] = 0;
  }
}

export class XdrReader {
  /**
   * Over the whole ArrayBuffer, made on first use (float, double) and shared by readers of the same buffer
   * (see viewOf): making a DataView costs more than decoding a small message, and asking a small on-heap typed
   * array for its ArrayBuffer moves it off the heap.
   */
  private dv: DataView | undefined;
  /** The bytes as a plain Uint8Array, whose slice is a copy (a Buffer's slice would be a view). */
  readonly buf: Uint8Array;
  pos: number;
  /** Current nesting depth of aggregate types; bounded by maxDepth. */
  depth = 0;

  constructor(
    buf: Uint8Array,
    offset = 0,
    readonly end = buf.length,
    readonly maxDepth = DEFAULT_MAX_DEPTH,
  ) {
    this.buf = buf.constructor === Uint8Array ? buf : new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
    this.pos = offset;
  }

  private get view(): DataView {
    return (this.dv ??= viewOf(this.buf.buffer));
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  fail(what: string, message: string): never {
    throw new XdrError(what, message, this.pos);
  }

  need(n: number, what: string): void {
    if (this.end - this.pos < n) this.fail(what, `needs ${n} bytes, ${this.end - this.pos} left`);
  }

  /** Fail when bytes are left over: a complete message must be consumed exactly. */
  done(what = 'message'): void {
    if (this.pos !== this.end) this.fail(what, `${this.end - this.pos} trailing bytes`);
  }

  enter(what: string): void {
    if (++this.depth > this.maxDepth) this.fail(what, `nesting deeper than ${this.maxDepth}`);
  }

  leave(): void {
    this.depth--;
  }

  int(what = 'int'): number {
    const p = this.pos;
    if (this.end - p < 4) this.need(4, what);
    const b = this.buf;
    this.pos = p + 4;
    return (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3];
  }

  uint(what = 'unsigned int'): number {
    const p = this.pos;
    if (this.end - p < 4) this.need(4, what);
    const b = this.buf;
    this.pos = p + 4;
    return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
  }

  /** C's char, short...: a value outside lo..hi is refused, where C would truncate it to another one. */
  ranged(lo: number, hi: number, what: string): number {
    const v = this.int(what);
    if (v < lo || v > hi) {
      this.pos -= 4;
      this.fail(what, `${v} is not between ${lo} and ${hi}`);
    }
    return v;
  }

  // 64-bit values are read as two 32-bit halves: faster than DataView.getBig(U)Int64 (see join64).
  hyper(what = 'hyper'): bigint {
    if (this.end - this.pos < 8) this.need(8, what);
    const hi = this.int(what);
    return join64(hi, this.uint(what));
  }

  uhyper(what = 'unsigned hyper'): bigint {
    if (this.end - this.pos < 8) this.need(8, what);
    const hi = this.uint(what);
    return join64(hi, this.uint(what));
  }

  float(what = 'float'): number {
    if (this.end - this.pos < 4) this.need(4, what);
    const v = this.view.getFloat32(this.buf.byteOffset + this.pos);
    this.pos += 4;
    return v;
  }

  double(what = 'double'): number {
    if (this.end - this.pos < 8) this.need(8, what);
    const v = this.view.getFloat64(this.buf.byteOffset + this.pos);
    this.pos += 8;
    return v;
  }

  bool(what = 'bool'): boolean {
    const v = this.uint(what);
    if (v > 1) {
      this.pos -= 4;
      this.fail(what, `bool must be 0 or 1, got ${v}`);
    }
    return v === 1;
  }

  /** opaque x[len]: a copy, so decoded values never alias a reused receive buffer. */
  fixedOpaque(len: number, what = 'opaque'): Uint8Array {
    const padded = len + pad(len);
    if (this.end - this.pos < padded) this.need(padded, what);
    const v = copyBytes(this.buf, this.pos, len);
    this.pos += len;
    if (padded !== len) this.checkPad(len, what);
    return v;
  }

  /** opaque x<max>: length checked against max and the bytes left before the copy is made. */
  varOpaque(max = UNBOUNDED, what = 'opaque'): Uint8Array {
    const len = this.length(max, what);
    return this.fixedOpaque(len, what);
  }

  /** string x<max>: must be valid UTF-8. */
  string(max = UNBOUNDED, what = 'string'): string {
    const len = this.length(max, what);
    const start = this.pos;
    const b = this.buf;
    let s = '';
    let ascii = true;
    if (len <= SHORT_STRING) {
      // Four characters per fromCharCode call: fewer intermediate strings. Any byte >= 0x80 sets bit 7 of `or`.
      const e = start + len;
      let i = start;
      let or = 0;
      for (; i + 4 <= e; i += 4) {
        const c0 = b[i];
        const c1 = b[i + 1];
        const c2 = b[i + 2];
        const c3 = b[i + 3];
        or |= c0 | c1 | c2 | c3;
        s += String.fromCharCode(c0, c1, c2, c3);
      }
      for (; i < e; i++) {
        const c = b[i];
        or |= c;
        s += String.fromCharCode(c);
      }
      ascii = or < 0x80;
    } else {
      for (let i = start, e = start + len; i < e; i++) {
        if (b[i] >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) s = Buffer.from(b.buffer, b.byteOffset + start, len).toString('latin1');
    }
    if (!ascii) {
      try {
        s = utf8Strict.decode(this.buf.subarray(start, start + len));
      } catch {
        this.fail(what, 'not valid UTF-8');
      }
    }
    this.pos += len;
    this.checkPad(len, what);
    return s;
  }

  /**
   * A variable array's element count: checked against the declared maximum and against the bytes left, given the
   * smallest encoded size of one element, so a forged count cannot make the decoder allocate.
   */
  count(max: number, minElementSize: number, what: string): number {
    const n = this.uint(what);
    if (n > max) {
      this.pos -= 4;
      this.fail(what, `${n} elements exceed the maximum of ${max}`);
    }
    if (n * minElementSize > this.end - this.pos) {
      this.pos -= 4;
      this.fail(what, `${n} elements cannot fit in the ${this.end - this.pos - 4} bytes left`);
    }
    return n;
  }

  /** A value read just now (4 bytes back) that is not one of its enum's members or union's cases. */
  undeclared(what: string, v: number | boolean): never {
    this.pos -= 4;
    return this.fail(what, `${String(v)} is not a declared value`);
  }

  private length(max: number, what: string): number {
    const len = this.uint(what);
    if (len > max) {
      this.pos -= 4;
      this.fail(what, `length ${len} exceeds the maximum of ${max}`);
    }
    if (len + pad(len) > this.end - this.pos) {
      this.pos -= 4;
      this.fail(what, `length ${len} exceeds the ${this.end - this.pos - 4} bytes left`);
    }
    return len;
  }

  private checkPad(len: number, what: string): void {
    let p = pad(len);
    while (p-- > 0) {
      if (this.buf[this.pos] !== 0) this.fail(what, 'non-zero padding');
      this.pos++;
    }
  }
}

/** The writer encode() uses when given none; a codec calling encode() while it is busy gets a new one. */
let scratch = new XdrWriter();
let scratchBusy = false;
/** A scratch writer grown past this is dropped after use, so that one huge message is not held on to. */
const SCRATCH_KEEP = 65536;

/**
 * Encode one value with a codec into a fresh byte array. Without `w`, the value is written into a writer kept
 * for the purpose and copied out once, right-sized.
 */
export function encode<T>(codec: Codec<T>, v: T, w?: XdrWriter): Uint8Array {
  if (w === undefined && !scratchBusy) {
    scratchBusy = true;
    try {
      return encode(codec, v, scratch);
    } finally {
      if (scratch.buf.length > SCRATCH_KEEP) scratch = new XdrWriter();
      scratchBusy = false;
    }
  }
  w = (w ?? new XdrWriter()).reset();
  codec.encode(w, v);
  return w.toBytes();
}

/** Decode exactly one value from `bytes`; trailing bytes are an error. */
export function decode<T>(codec: Codec<T>, bytes: Uint8Array): T {
  const r = new XdrReader(bytes);
  const v = codec.decode(r);
  r.done();
  return v;
}
