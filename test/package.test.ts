// rpcgen-ts for other people's .x files: the packed dstm, installed into a project of its own, generates NFS codecs
// that import the runtime by the package's name (dstm/rpc), type-check strictly under both of TypeScript's Node
// resolutions, and round-trip a value. Also checks what the tarball ships (no tests, benches or source maps), and that
// an install that runs the install scripts builds the addon and better-sqlite3 from source and gives a working dstm.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tempDir } from './rpc/support/toolchain';

const ROOT = resolve(__dirname, '..');
const NFS_X = '/usr/include/rpcsvc/nfs_prot.x';
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the npm package', function () {
  this.timeout(180_000);
  const dir = tempDir('dstm-pack-');
  let tarball = '';
  let files: string[] = [];

  before(function () {
    if (!existsSync(join(ROOT, 'dist/src/rpc/index.js'))) throw new Error('dist/ is not built: npm run build');
    const packed = JSON.parse(
      run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir.path, ROOT], ROOT),
    );
    tarball = join(dir.path, packed[0].filename);
    files = (packed[0].files as { path: string }[]).map((f) => f.path);
  });

  after(() => dir.remove());

  it('ships what dstm needs at run and install time, contrib/ and a LICENSE; no tests, benches or source maps', () => {
    const manPages = readdirSync(join(ROOT, 'man')).map((f) => `man/${f}`);
    const addonSources = readdirSync(join(ROOT, 'native')).map((f) => `native/${f}`);
    expect(files).to.include.members([
      'LICENSE',
      'bin/run.js',
      'dist/src/rpc/index.js',
      'dist/src/rpc/index.d.ts',
      'dist/src/commands/server.js',
      'oclif.manifest.json',
      'binding.gyp', // the addon is built at install, from these sources
      ...addonSources,
      'xdr/dstm.x',
      'contrib/systemd/dstm-server.service',
      ...manPages,
    ]);
    expect(files.filter((f) => /^dist\/(test|bench|scripts)\/|\.map$/.test(f))).to.deep.equal([]);
  });

  it('installed elsewhere, generates NFS codecs that import dstm/rpc, type-check and round-trip', function () {
    if (!existsSync(NFS_X)) throw new Error(`${NFS_X} is missing (Debian: libc6-dev / libtirpc-dev)`);
    const app = join(dir.path, 'app');
    run('mkdir', ['-p', app], dir.path);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'nfs-demo', version: '1.0.0', private: true }));
    run('npm', ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', tarball], app);
    run(join(app, 'node_modules/.bin/rpcgen-ts'), [NFS_X, '--out', 'gen'], app);
    const generated = readFileSync(join(app, 'gen/nfs_prot.ts'), 'utf8');
    expect(generated).to.contain('from "dstm/rpc/xdr/runtime"').and.contain('from "dstm/rpc/types"');

    writeFileSync(
      join(app, 'main.ts'),
      [
        "import { decode, encode } from 'dstm/xdr';",
        "import { xdr_diropargs, type diropargs } from './gen/nfs_prot';",
        "const v: diropargs = { dir: { data: Uint8Array.from({ length: 32 }, (_, i) => i * 7) }, name: 'readme.txt' };",
        'const bytes = encode(xdr_diropargs, v);',
        'const back = decode(xdr_diropargs, bytes);',
        "console.log(JSON.stringify({ hex: Buffer.from(bytes).toString('hex'), name: back.name, dir: Array.from(back.dir.data) }));",
      ].join('\n'),
    );
    const strict = [
      '--strict',
      '--target',
      'ES2022',
      '--skipLibCheck',
      '--types',
      'node',
      '--typeRoots',
      join(ROOT, 'node_modules/@types'),
    ];
    run('node', [TSC, ...strict, '--noEmit', '--module', 'node16', '--moduleResolution', 'node16', 'main.ts'], app);
    run(
      'node',
      [TSC, ...strict, '--module', 'commonjs', '--moduleResolution', 'node10', '--outDir', 'out', 'main.ts'],
      app,
    );
    expect(readdirSync(join(app, 'out'))).to.include('main.js');

    const got = JSON.parse(run('node', [join(app, 'out/main.js')], app));
    // XDR of diropargs: 32 opaque bytes of the file handle, then the name as a counted, padded string.
    const handle = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7)).toString('hex');
    const name = Buffer.from('readme.txt');
    const padded = Buffer.concat([name, Buffer.alloc((4 - (name.length % 4)) % 4)]).toString('hex');
    expect(got.hex).to.equal(`${handle}0000000a${padded}`);
    expect(got.name).to.equal('readme.txt');
    expect(got.dir).to.deep.equal(Array.from({ length: 32 }, (_, i) => i * 7));
  });

  it('installed with its install scripts, builds its native parts from source and runs', function () {
    this.timeout(900_000); // better-sqlite3 compiles SQLite
    const app = join(dir.path, 'installed');
    run('mkdir', ['-p', join(app, 'state')], dir.path);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'dstm-user', version: '1.0.0', private: true }));
    // As the README says for installs: prebuild-install must not try to download a binary.
    execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: app,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, npm_config_build_from_source: 'true' },
    });
    expect(existsSync(join(app, 'node_modules/dstm/build/Release/dstm_native.node'))).to.equal(true);
    const dstm = join(app, 'node_modules/.bin/dstm');
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
    expect(run(dstm, ['--version'], app)).to.contain(`dstm/${version}`);
    // The embedded store's engine (better-sqlite3, built above) writes and reads back a binding.
    const binding = { ipv4: '192.0.2.5', ipv6: '2001:db8::c', starts: 1796490000, ends: 1796493600, state: 'active' };
    execFileSync(dstm, ['leases', 'import', '-', '--state-dir', join(app, 'state')], {
      cwd: app,
      input: JSON.stringify(binding) + '\n',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const listed = JSON.parse(run(dstm, ['leases', '--state-dir', join(app, 'state'), '--json'], app));
    expect(listed).to.have.length(1);
    expect(listed[0]).to.include(binding);
  });
});
