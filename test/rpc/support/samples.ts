// The values test/rpc/fixtures/conformance_driver.c builds in C (sample N of each type), written as the objects
// rpcgen-ts decodes them to; and further values, edge cases included, that only TypeScript encodes.

const u8 = (...b: number[]): Uint8Array => Uint8Array.from(b);
const range = (n: number, f: (i: number) => number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => f(i));

/** A linked list of `node`s with values from..to. */
export function chain(from: number, to: number): unknown {
  let head: unknown = null;
  for (let v = to; v >= from; v--) head = { value: v, next: head };
  return head;
}

const leaf = (v: number): unknown => ({ v, left: null, right: null });

const fattr = {
  type: 2,
  mode: 0o755,
  nlink: 2,
  uid: 1000,
  gid: 1000,
  size: 4096n,
  used: 8192n,
  rdev: { specdata1: 0, specdata2: 0 },
  fsid: 0x1122334455667788n,
  fileid: 123456789012n,
  atime: { seconds: 1700000000, nseconds: 1 },
  mtime: { seconds: 1700000001, nseconds: 999999999 },
  ctime: { seconds: 1700000002, nseconds: 0 },
};

/** A READDIR3 entry list of `n` entries, as the C driver builds it. */
export function entries(n: number): unknown {
  let head: unknown = null;
  for (let i = n - 1; i >= 0; i--)
    head = { fileid: BigInt(1000 + i), name: `file-${i}`, cookie: BigInt(i + 1), nextentry: head };
  return head;
}

export const readdir16 = {
  dir_attributes: { attributes_follow: true, attributes: fattr },
  cookieverf: range(8, (i) => i + 1),
  reply: { entries: entries(16), eof: true },
};

/** Sample N of each type: identical to the C driver's fill_TYPE(N). */
export const C_SAMPLES: Record<string, unknown[]> = {
  prims: [
    {
      i: -123456,
      u: 4000000000,
      h: -1234567890123456789n,
      uh: 18446744073709551615n,
      f: 1.5,
      d: -2.25e100,
      b: true,
      c: 2,
      s: -1,
      l: -7,
      ul: 4294967295,
      ui: 42,
      bare: 7,
    },
    {
      i: -2147483648,
      u: 0,
      h: -9223372036854775808n,
      uh: 0n,
      f: 3.4028234663852886e38,
      d: 5e-324,
      b: false,
      c: 0,
      s: 0x100,
      l: 2147483647,
      ul: 0,
      ui: 0xffffffff,
      bare: 0,
    },
  ],
  narrow: [
    { c: -128, uc: 0, s: -32768, us: 0, uc2: 1, us2: 2, i8: -128, u8: 0, i16: -32768, u16: 0 },
    { c: 127, uc: 255, s: 32767, us: 65535, uc2: 255, us2: 65535, i8: 127, u8: 255, i16: 32767, u16: 65535 },
  ],
  blobs: [
    {
      fixed5: u8(1, 2, 3, 4, 5),
      var16: u8(0xaa, 0xbb, 0xcc),
      unbounded: u8(),
      name: 'hello',
      any: '',
      dg: range(8, (i) => i),
    },
    {
      fixed5: new Uint8Array(5),
      var16: range(16, (i) => i),
      unbounded: range(7, () => 0xff),
      name: 'x'.repeat(32),
      any: 'a longer string with spaces',
      dg: range(8, () => 0xff),
    },
  ],
  arrays: [
    {
      fixed_ints: [1, -2, 3],
      var_ints: [],
      hypers: [-1n, 1n << 40n],
      points: [
        { x: 1, y: 2 },
        { x: 3, y: 4 },
      ],
      colors: [1, 2],
      names: ['a', 'bc', ''],
      pair: [7, -7],
      flags: [true, false, true],
      ds: [0.5, -1e-10],
    },
  ],
  result: [
    { c: 0, code: -1 },
    { c: 2, msg: 'blue!' },
    { c: 1, msg: '' },
  ],
  choice: [
    { kind: 1, p: { x: 10, y: 20 } },
    { kind: 2 },
    { kind: -5, big: 9223372036854775807n },
    { kind: 99, raw: u8(1, 2, 3, 4, 5) },
  ],
  onoff: [{ on: true, value: 0xdeadbeef }, { on: false }],
  wide: [{ k: 0xffffffff, x: -9 }, { k: 3 }],
  node: [chain(1, 3)],
  tagged: [{ tag: 'a', next: { tag: 'bb', next: { tag: 'ccc', next: null, after: 3 }, after: 2 }, after: 1 }],
  tree: [{ v: 1, left: { v: 2, left: leaf(4), right: null }, right: { v: 3, left: null, right: leaf(5) } }],
  holder: [
    { id: 9, maybe: { x: 5, y: 6 }, list: chain(7, 8), also: null, res: { c: 0, code: 3 } },
    { id: 0, maybe: null, list: null, also: { x: 1, y: 1 }, res: { c: 1, msg: 'g' } },
  ],
  fattr3: [fattr],
  post_op_attr: [{ attributes_follow: false }],
  READDIR3resok: [
    readdir16,
    {
      dir_attributes: { attributes_follow: false },
      cookieverf: new Uint8Array(8),
      reply: { entries: null, eof: false },
    },
  ],
};

function tagged(n: number): unknown {
  let head: unknown = null;
  for (let i = n; i >= 1; i--) head = { tag: 't'.repeat(i % 7), next: head, after: -i };
  return head;
}

function leftTree(depth: number): unknown {
  let t: unknown = null;
  for (let i = depth; i >= 1; i--) t = { v: i, left: t, right: i % 10 === 0 ? leaf(-i) : null };
  return t;
}

/** Values only TypeScript encodes; C must decode each and encode it back to the same bytes. */
export const TS_SAMPLES: Record<string, unknown[]> = {
  prims: [
    {
      i: 2147483647,
      u: 0xffffffff,
      h: 9223372036854775807n,
      uh: 1n,
      f: -0.25,
      d: Math.PI,
      b: true,
      c: 1,
      s: 7,
      l: -2147483648,
      ul: 1,
      ui: 0,
      bare: 0xffffffff,
    },
  ],
  narrow: [{ c: -1, uc: 128, s: -1, us: 32768, uc2: 0, us2: 0, i8: -1, u8: 1, i16: 1, u16: 40000 }],
  blobs: [
    {
      fixed5: range(5, (i) => 250 + i),
      var16: u8(),
      unbounded: range(1000, (i) => i & 0xff),
      name: '',
      any: 'x'.repeat(1001),
      dg: new Uint8Array(8),
    },
  ],
  arrays: [
    {
      fixed_ints: [0, 0, 0],
      var_ints: Array.from({ length: 16 }, (_, i) => i * 0x10000001),
      hypers: [],
      points: [
        { x: -1, y: -1 },
        { x: 0, y: 0 },
        { x: 1, y: 1 },
        { x: 2, y: 2 },
      ],
      colors: [0, 0],
      names: ['y'.repeat(32), 'z', 'w'],
      pair: [-2147483648, 2147483647],
      flags: [],
      ds: [Number.MAX_VALUE, -Number.MIN_VALUE],
    },
  ],
  choice: [
    { kind: -5, big: -9223372036854775808n },
    { kind: 0, raw: u8() },
    { kind: 2147483647, raw: range(13, (i) => i) },
  ],
  wide: [{ k: 0 }, { k: 0xfffffffe }],
  node: [chain(1, 5000)],
  tagged: [tagged(100)],
  tree: [leftTree(60)],
  holder: [{ id: -1, maybe: { x: 0, y: 0 }, list: chain(1, 1), also: { x: 2, y: 3 }, res: { c: 2, msg: 'é, UTF-8' } }],
  READDIR3resok: [{ ...readdir16, reply: { entries: entries(300), eof: false } }],
};
