// Conformance of rpcgen-ts codecs with rpcgen-generated C (gcc + libtirpc): for each XDR construct, bytes that C
// encodes decode in TypeScript to the expected values and re-encode to the same bytes, and bytes TypeScript
// encodes decode in C and re-encode to the same bytes.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Codec, decode, encode } from '../../src/rpc/xdr/runtime';
import { C_SAMPLES, TS_SAMPLES } from './support/samples';
import { type CDriver, FIXTURES, buildCDriver, buildSystemDriver, generate, hex, tempDir } from './support/toolchain';

/** What each fixture type exercises. */
const CONSTRUCTS: Record<string, string> = {
  prims: 'int, unsigned, hyper, unsigned hyper, float, double, bool, enum (contiguous and sparse), long/u_long/u_int',
  narrow: "char, short and their unsigned forms, int8_t..uint16_t: 32 bits each, within C's range",
  blobs: 'fixed opaque with padding, variable opaque (bounded, unbounded), string (bounded, unbounded), typedef opaque',
  arrays: 'fixed and variable arrays of int, hyper, struct, enum, bool, double, typedef string; typedef array',
  result: 'union on an enum with case fallthrough',
  choice: 'union on int with a void arm, a negative constant case and a default arm',
  onoff: 'union on bool (TRUE/FALSE)',
  wide: 'union on unsigned int with case 0xffffffff and a void default',
  node: 'optional data: recursive list with the link last',
  tagged: 'recursive list with a field after the link',
  tree: 'two optional self-references (binary tree)',
  holder: 'optional data anywhere in a struct, typedef of optional, struct X references, nested union',
  fattr3: 'nested NFSv3 fattr3: typedefs of unsigned hyper, nested structs, enum',
  post_op_attr: 'NFSv3 post_op_attr, void arm',
  READDIR3resok: 'nested NFSv3 READDIR3resok: union, fixed opaque, entry3 list',
};

function haveTools(): boolean {
  try {
    execFileSync('rpcgen', ['--version'], { stdio: 'ignore' });
  } catch (e) {
    // rpcgen --version exits non-zero on some builds but exists; only a missing binary is fatal.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
  }
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('rpcgen-ts conformance with rpcgen + libtirpc', function () {
  this.timeout(60000);
  const dir = tempDir('rpcgen-ts-conf-');
  let c: CDriver;
  let codecs: Record<string, Codec<unknown>>;

  before(async function () {
    if (!haveTools()) throw new Error('rpcgen and gcc are required (Debian: rpcsvc-proto, gcc, libtirpc-dev)');
    const x = join(FIXTURES, 'conformance.x');
    c = buildCDriver(x, join(FIXTURES, 'conformance_driver.c'), dir.path);
    const mod = (await import(generate(x, dir.path))) as Record<string, Codec<unknown>>;
    codecs = Object.fromEntries(Object.keys(CONSTRUCTS).map((t) => [t, mod[`xdr_${t}`]]));
  });

  after(() => dir.remove());

  for (const [type, construct] of Object.entries(CONSTRUCTS)) {
    describe(`${type}: ${construct}`, () => {
      C_SAMPLES[type].forEach((sample, n) => {
        it(`sample ${n}: C bytes decode to the value and both sides encode it identically`, () => {
          const fromC = c.encode(type, n);
          const decoded = decode(codecs[type], fromC);
          expect(decoded).to.deep.equal(sample);
          expect(hex(encode(codecs[type], decoded))).to.equal(hex(fromC));
          expect(hex(encode(codecs[type], sample))).to.equal(hex(fromC));
        });
      });
      [...C_SAMPLES[type], ...(TS_SAMPLES[type] ?? [])].forEach((value, n) => {
        it(`value ${n}: TypeScript bytes decode in C and re-encode identically`, () => {
          const fromTs = encode(codecs[type], value);
          expect(hex(c.reencode(type, fromTs))).to.equal(hex(fromTs));
          // Compared as bytes: chai's recursive deep-equal cannot walk a 5000-node list.
          expect(hex(encode(codecs[type], decode(codecs[type], fromTs)))).to.equal(hex(fromTs));
        });
      });
    });
  }

  // quadruple stays out of the fixtures while C cannot build it; this notices the day it can.
  it('quadruple: TypeScript codes it as 16 bytes; rpcgen emits xdr_quadruple, which C cannot build', async () => {
    const x = join(dir.path, 'quad.x');
    writeFileSync(x, 'struct quad { quadruple q; };\n');
    const quad = ((await import(generate(x, dir.path))) as Record<string, Codec<unknown>>).xdr_quad;
    const q = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 - i);
    expect(hex(encode(quad, { q }))).to.equal(hex(q));
    expect(decode(quad, q)).to.deep.equal({ q });
    execFileSync('rpcgen', ['-h', '-o', 'quad.h', 'quad.x'], { cwd: dir.path });
    execFileSync('rpcgen', ['-c', '-o', 'quad_xdr.c', 'quad.x'], { cwd: dir.path });
    expect(readFileSync(join(dir.path, 'quad_xdr.c'), 'utf8')).to.contain('xdr_quadruple');
    let stderr: string | undefined;
    try {
      execFileSync(
        'gcc',
        ['-shared', '-fPIC', '-Wl,--no-undefined', '-I/usr/include/tirpc', '-o', 'quad.so', 'quad_xdr.c', '-ltirpc'],
        { cwd: dir.path, stdio: 'pipe' },
      );
    } catch (e) {
      stderr = String((e as { stderr?: Buffer }).stderr);
    }
    expect(
      stderr,
      'rpcgen and libtirpc now support quadruple: add a quadruple field to fixtures/conformance.x',
    ).to.be.a('string');
    expect(stderr).to.match(/unknown type name .quadruple|undefined reference to .xdr_quadruple/);
  });

  it("a char or short out of C's range is refused by TypeScript, where C would take another value", () => {
    const narrow = { c: 0, uc: 0, s: 0, us: 0, uc2: 0, us2: 0, i8: 0, u8: 0, i16: 0, u16: 0 };
    const at = (field: number, v: string): Uint8Array =>
      Uint8Array.from(Buffer.from('00000000'.repeat(field) + v + '00000000'.repeat(9 - field), 'hex'));
    // unsigned short us = 70000 (0x11170) reaches C as 4464 (0x1170); char c = 256 as 0.
    expect(hex(c.reencode('narrow', at(3, '00011170')))).to.equal(hex(at(3, '00001170')));
    expect(hex(c.reencode('narrow', at(0, '00000100')))).to.equal(hex(at(0, '00000000')));
    expect(() => decode(codecs.narrow, at(3, '00011170'))).to.throw(/narrow\.us: 70000 is not between 0 and 65535/);
    expect(() => decode(codecs.narrow, at(0, '00000100'))).to.throw(/narrow\.c: 256 is not between -128 and 255/);
    // A char of 200, as a peer whose char is unsigned (ARM) sends it, is the 8 bits x86 C reads as -56.
    expect(hex(c.reencode('narrow', at(0, '000000c8')))).to.equal(hex(at(0, 'ffffffc8')));
    expect(decode(codecs.narrow, at(0, '000000c8'))).to.have.property('c', 200);
    expect(() => decode(codecs.narrow, at(6, 'ffffff7f'))).to.throw(/narrow\.i8: -129 is not between -128 and 127/);
    expect(() => encode(codecs.narrow, { ...narrow, us: 70000 })).to.throw(/narrow\.us: 70000 is not between/);
    expect(() => encode(codecs.narrow, { ...narrow, u8: 256 })).to.throw(/narrow\.u8: 256 is not between 0 and 255/);
    expect(() => encode(codecs.narrow, { ...narrow, s: 1.5 })).to.throw(/narrow\.s: 1\.5 is not between/);
  });

  it('both sides refuse a union discriminant that no arm declares', () => {
    const bad = Uint8Array.from(Buffer.from('0000000500000000', 'hex')); // union result with c = 5
    expect(() => c.reencode('result', bad)).to.throw(/exit status 3/);
    expect(() => decode(codecs.result, bad)).to.throw(/XDR result\.c: 5 is not a declared value/);
  });
});

/** Values of types from the system's own .x files, for C's decode and re-encode. */
const time = (s: number): unknown => ({ seconds: s, useconds: 999999 });
const fattr = {
  type: 2,
  mode: 0o40755,
  nlink: 3,
  uid: 0,
  gid: 0,
  size: 4096,
  blocksize: 4096,
  rdev: 0,
  blocks: 8,
  fsid: 0x801,
  fileid: 2,
  atime: time(1),
  mtime: time(2),
  ctime: time(3),
};
function list<T>(items: T[], make: (item: T, next: unknown) => unknown): unknown {
  return items.reduceRight<unknown>((next, item) => make(item, next), null);
}
const SYSTEM: { x: string; name: string; header: string; values: Record<string, unknown[]> }[] = [
  {
    x: '/usr/include/rpcsvc/nfs_prot.x',
    name: 'nfs_prot',
    header: '"nfs_prot.h"',
    values: {
      fattr: [fattr],
      attrstat: [{ status: 0, attributes: fattr }, { status: 70 }],
      diropres: [
        { status: 0, diropres: { file: { data: Uint8Array.from({ length: 32 }, (_, i) => i) }, attributes: fattr } },
        { status: 2 },
      ],
      readdirres: [
        {
          status: 0,
          reply: {
            entries: list(['.', '..', 'a file', 'x'.repeat(255)], (n, next) => ({
              fileid: n.length,
              name: n,
              cookie: Uint8Array.of(0, 0, 0, n.length),
              nextentry: next,
            })),
            eof: true,
          },
        },
        { status: 0, reply: { entries: null, eof: false } },
        { status: 13 },
      ],
    },
  },
  {
    x: '/usr/include/rpcsvc/mount.x',
    name: 'mount',
    header: '"mount.h"',
    values: {
      exports: [
        list(['/srv', '/home'], (dir, next) => ({
          ex_dir: dir,
          ex_groups: list(['lan', 'wan', '*'], (g, n) => ({ gr_name: g, gr_next: n })),
          ex_next: next,
        })),
        null,
      ],
      fhstatus: [{ fhs_status: 0, fhs_fhandle: new Uint8Array(32).fill(9) }, { fhs_status: 13 }],
      mountlist: [
        list(['a', 'b', 'c'], (h, next) => ({ ml_hostname: `host-${h}`, ml_directory: `/export/${h}`, ml_next: next })),
      ],
    },
  },
  {
    // rpcgen's C for rpcb_prot.x clashes with libtirpc's headers: libtirpc's own xdr_rpcb* (built from it) decode.
    x: '/usr/include/tirpc/rpc/rpcb_prot.x',
    name: 'rpcb_prot',
    header: '<rpc/rpc.h>',
    values: {
      rpcb: [{ r_prog: 100000, r_vers: 4, r_netid: 'udp6', r_addr: '::1.0.111', r_owner: 'superuser' }],
      rpcblist_ptr: [
        list(['tcp6', 'udp6', 'tcp', 'udp'], (netid, next) => ({
          rpcb_map: { r_prog: 0x2d53544d, r_vers: 1, r_netid: netid, r_addr: '::.3.232', r_owner: '0' },
          rpcb_next: next,
        })),
      ],
      rpcb_entry_list_ptr: [
        list([1, 2], (i, next) => ({
          rpcb_entry_map: {
            r_maddr: `::1.3.${i}`,
            r_nc_netid: 'tcp6',
            r_nc_semantics: 3,
            r_nc_protofmly: 'inet6',
            r_nc_proto: 'tcp',
          },
          rpcb_entry_next: next,
        })),
      ],
    },
  },
];

describe('rpcgen-ts conformance with the system .x files and their C routines', function () {
  this.timeout(60000);
  const dir = tempDir('rpcgen-ts-sys-');
  after(() => dir.remove());

  for (const sys of SYSTEM) {
    describe(sys.x, () => {
      let c: Pick<CDriver, 'reencode'>;
      let mod: Record<string, Codec<unknown>>;
      before(async () => {
        c = buildSystemDriver(
          dir.path,
          sys.name,
          sys.header,
          Object.keys(sys.values),
          sys.header.startsWith('"') ? sys.x : undefined,
        );
        mod = (await import(generate(sys.x, dir.path))) as Record<string, Codec<unknown>>;
      });
      for (const [type, values] of Object.entries(sys.values)) {
        values.forEach((value, n) => {
          it(`${type} value ${n}: TypeScript bytes decode in C, re-encode identically, and decode back to the value`, () => {
            const codec = mod[`xdr_${type}`];
            const fromTs = encode(codec, value);
            const fromC = c.reencode(type, fromTs);
            expect(hex(fromC)).to.equal(hex(fromTs));
            expect(decode(codec, fromC)).to.deep.equal(value);
          });
        });
      }
    });
  }
});
