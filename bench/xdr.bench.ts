// encode+decode ops/s of rpcgen-ts codecs vs @stellar/js-xdr doing the same work (same types, same values, bytes
// checked identical first): struct packet (Annex B), NFSv3 fattr3, and READDIR3resok with 16 entries.
// "fresh bytes": like js-xdr's toXDR, every encode returns a new byte array (encode(codec, value)), which is then
// decoded.
// "writer reused": encode into one reused XdrWriter and decode from its buffer, as the RPC runtime's send path can.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { xdr_packet } from '../src/protocol/generated/dstm';
import { compileFile } from '../src/rpcgen';
import { type Codec, XdrReader, XdrWriter, decode, encode } from '../src/rpc/xdr/runtime';

// The machine is shared: the two sides are measured alternately, in ROUNDS slices each, and the best slice of
// each side is reported, so that a burst of someone else's load does not decide the ratio. Slices are timed in
// CPU time of this process (user + system, all its threads, GC included), the same clock for both sides: wall
// time would also count the time other processes run while this one waits for a core.
const ROUNDS = 7;
const SLICE_MS = 200;
const WARMUP_MS = 200;

/** CPU time used by this process so far, in milliseconds. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// js-xdr ships no type declarations; these are the few members used here.
interface JsInstance {
  toXDR(): Buffer;
}
interface JsType {
  new (...args: unknown[]): JsInstance;
  toXDR(v: unknown): Buffer;
  fromXDR(b: Buffer): JsInstance;
}
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- js-xdr ships no types
const jsxdr = require('@stellar/js-xdr') as { config(f: (x: any) => void): Record<string, JsType> };

const js = jsxdr.config((x) => {
  x.struct('packet', [
    ['type', x.int()],
    ['local', x.opaque(16)],
    ['mask', x.opaque(4)],
    ['i4addr', x.opaque(4)],
    ['tep4', x.opaque(4)],
    ['tep6', x.opaque(16)],
    ['ends', x.uint()],
    ['starts', x.uint()],
    ['extend', x.uint()],
    ['keep', x.uint()],
  ]);
  x.enum('ftype3', { nf3reg: 1, nf3dir: 2, nf3blk: 3, nf3chr: 4, nf3lnk: 5, nf3sock: 6, nf3fifo: 7 });
  x.struct('specdata3', [
    ['specdata1', x.uint()],
    ['specdata2', x.uint()],
  ]);
  x.struct('nfstime3', [
    ['seconds', x.uint()],
    ['nseconds', x.uint()],
  ]);
  x.struct('fattr3', [
    ['type', x.lookup('ftype3')],
    ['mode', x.uint()],
    ['nlink', x.uint()],
    ['uid', x.uint()],
    ['gid', x.uint()],
    ['size', x.uhyper()],
    ['used', x.uhyper()],
    ['rdev', x.lookup('specdata3')],
    ['fsid', x.uhyper()],
    ['fileid', x.uhyper()],
    ['atime', x.lookup('nfstime3')],
    ['mtime', x.lookup('nfstime3')],
    ['ctime', x.lookup('nfstime3')],
  ]);
  x.union('post_op_attr', {
    switchOn: x.bool(),
    switches: [
      [true, 'attributes'],
      [false, x.void()],
    ],
    arms: { attributes: x.lookup('fattr3') },
  });
  x.struct('entry3', [
    ['fileid', x.uhyper()],
    ['name', x.string()],
    ['cookie', x.uhyper()],
    ['nextentry', x.option(x.lookup('entry3'))],
  ]);
  x.struct('dirlist3', [
    ['entries', x.option(x.lookup('entry3'))],
    ['eof', x.bool()],
  ]);
  x.struct('READDIR3resok', [
    ['dir_attributes', x.lookup('post_op_attr')],
    ['cookieverf', x.opaque(8)],
    ['reply', x.lookup('dirlist3')],
  ]);
});

/** Calls per CPU second of `f` over about `ms` milliseconds of CPU time. */
function rate(f: () => void, ms: number): number {
  const start = cpuMs();
  const end = start + ms;
  let n = 0;
  let batch = 64;
  let now = start;
  while (now < end) {
    for (let i = 0; i < batch; i++) f();
    n += batch;
    now = cpuMs();
    if (now - start < ms / 20) batch *= 2;
  }
  return (n * 1000) / (now - start);
}

/** Best rate of each function, measured in turn. */
function race(fs: (() => void)[]): number[] {
  for (const f of fs) rate(f, WARMUP_MS);
  const best = fs.map(() => 0);
  for (let i = 0; i < ROUNDS; i++) fs.forEach((f, k) => (best[k] = Math.max(best[k], rate(f, SLICE_MS))));
  return best;
}

function compare(name: string, ours: Codec<unknown>, value: unknown, jsType: JsType, jsValue: unknown): void {
  const w = new XdrWriter();
  const mine = encode(ours, value, w);
  const theirs = jsType.toXDR(jsValue);
  if (Buffer.compare(Buffer.from(mine), theirs) !== 0)
    throw new Error(`${name}: js-xdr and rpcgen-ts encode differently`);
  if (Buffer.compare(jsType.fromXDR(theirs).toXDR(), theirs) !== 0)
    throw new Error(`${name}: js-xdr does not round-trip`);
  let sink = 0;
  const [js, fresh, reused] = race([
    () => {
      const v = jsType.fromXDR(jsType.toXDR(jsValue));
      sink += v === null ? 0 : 1;
    },
    () => {
      const v = decode(ours, encode(ours, value));
      sink += v === null ? 0 : 1;
    },
    () => {
      w.reset();
      ours.encode(w, value);
      const r = new XdrReader(w.buf, 0, w.pos);
      const v = ours.decode(r);
      r.done();
      sink += v === null ? 0 : 1;
    },
  ]);
  if (sink === 0) throw new Error('unreachable');
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US').padStart(10);
  console.log(
    `${`${name} (${mine.length} B)`.padEnd(34)} js-xdr ${fmt(js)} ops/s | rpcgen-ts fresh bytes ${fmt(fresh)} ops/s ${(fresh / js).toFixed(1).padStart(5)}x` +
      ` | writer reused ${fmt(reused)} ops/s ${(reused / js).toFixed(1).padStart(5)}x`,
  );
}

export async function run(): Promise<void> {
  // The NFSv3 codecs come from the conformance fixture, generated here as the build does for dstm.x.
  const out = join(__dirname, 'out');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'conformance.ts'),
    compileFile(join(__dirname, '../test/rpc/fixtures/conformance.x'), { runtime: '../../src/rpc' }),
  );
  const nfs = (await import(join(out, 'conformance.ts'))) as Record<string, Codec<unknown>>;

  const bytes = (n: number, f: number): Uint8Array => new Uint8Array(n).fill(f);
  const packet = {
    type: 1,
    local: bytes(16, 0xfe),
    mask: bytes(4, 0xff),
    i4addr: Uint8Array.of(10, 0, 0, 7),
    tep4: Uint8Array.of(192, 0, 2, 1),
    tep6: bytes(16, 0x20),
    ends: 1700003600,
    starts: 1700000000,
    extend: 3600,
    keep: 600,
  };
  const jsPacket = new js.packet({
    ...packet,
    local: Buffer.from(packet.local),
    mask: Buffer.from(packet.mask),
    i4addr: Buffer.from(packet.i4addr),
    tep4: Buffer.from(packet.tep4),
    tep6: Buffer.from(packet.tep6),
  });

  const time = { seconds: 1700000000, nseconds: 123456789 };
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
    atime: time,
    mtime: time,
    ctime: time,
  };
  const jsTime = (): unknown => new js.nfstime3(time);
  const jsFattr = new js.fattr3({
    ...fattr,
    type: (js.ftype3 as unknown as Record<string, () => unknown>).nf3dir(),
    rdev: new js.specdata3({ specdata1: 0, specdata2: 0 }),
    atime: jsTime(),
    mtime: jsTime(),
    ctime: jsTime(),
  });

  let entries: unknown = null;
  let jsEntries: unknown = null;
  for (let i = 15; i >= 0; i--) {
    entries = { fileid: BigInt(1000 + i), name: `file-${i}.txt`, cookie: BigInt(i + 1), nextentry: entries };
    jsEntries = new js.entry3({
      fileid: BigInt(1000 + i),
      name: `file-${i}.txt`,
      cookie: BigInt(i + 1),
      nextentry: jsEntries,
    });
  }
  const verf = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  const readdir = {
    dir_attributes: { attributes_follow: true, attributes: fattr },
    cookieverf: verf,
    reply: { entries, eof: true },
  };
  const jsAttr = new js.post_op_attr(true, jsFattr);
  const jsReaddir = new js.READDIR3resok({
    dir_attributes: jsAttr,
    cookieverf: Buffer.from(verf),
    reply: new js.dirlist3({ entries: jsEntries, eof: true }),
  });

  console.log(`ops/s per CPU second of this process, best of ${ROUNDS} slices of ${SLICE_MS} ms per side`);
  compare('struct packet', xdr_packet as Codec<unknown>, packet, js.packet, jsPacket);
  compare('fattr3', nfs.xdr_fattr3, fattr, js.fattr3, jsFattr);
  compare('READDIR3resok (16 entries)', nfs.xdr_READDIR3resok, readdir, js.READDIR3resok, jsReaddir);
}
