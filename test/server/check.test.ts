// Issue 13, findings 10 and 11: `--check` refuses what a start would refuse, naming the flag or key, and a state
// directory that cannot be made is a clear error (exit 3), not a hang. `dstm` is the compiled CLI.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseWithOverrides } from '../../src/config/schema';
import { serverFields } from '../../src/config/server-schema';
import { staticFields } from '../../src/config/static-schema';
import { MAX_PATH_MTU } from '../../src/config/types';
import { HEADROOM } from '../../src/dti/packet';
import { dstmArgv, runDstmSync } from '../support/dstm-procs';
import { removeDir, tempDir } from './helpers';

describe('configuration checks and start-up errors (issue 13)', function () {
  this.timeout(120_000);
  let dir: string;
  before(() => {
    dir = tempDir('check');
  });
  after(() => removeDir(dir));

  it('finding 10: --check refuses pools no host address can come from, naming --pool or the key', () => {
    for (const pool of ['0.0.0.0/8', '224.0.0.0/4', '255.255.255.255']) {
      const r = runDstmSync(['server', '--check', '--pool', pool]);
      expect(r.code, pool).to.equal(2);
      expect(r.stderr, pool).to.match(
        new RegExp(
          `^dstm server: --pool\\[0\\]: "${pool.replace(/\./g, '\\.')}" is not valid: expected an IPv4 unicast prefix`,
        ),
      );
    }
    for (const pool of ['0.0.0.0/0', '127.0.0.0/24', '169.254.1.0/24', '239.1.0.0/16', '240.0.0.0/24', '126.0.0.0/7']) {
      expect(
        () => parseWithOverrides(serverFields, {}, 'server', [{ key: 'pools', flag: '--pool', value: [pool] }]),
        pool,
      ).to.throw(/^--pool\[0\]: .* expected an IPv4 unicast prefix/);
    }
    for (const pool of ['1.0.0.0/8', '126.0.0.0/8', '128.0.0.0/3', '223.255.255.0/24']) {
      expect(parseWithOverrides(serverFields, { pools: [pool] }, 'server').pools, pool).to.have.length(1);
    }
    const file = join(dir, 'pools.json');
    writeFileSync(
      file,
      JSON.stringify({
        server: { pools: ['10.0.0.0/8', '224.0.0.0/24'] },
        tep: { address: 'fd00::1', ipv4: '192.0.2.1', pools: ['127.0.0.0/8'] },
      }),
    );
    expect(runDstmSync(['server', '--check', '--config', file]).stderr).to.match(
      /server\.pools\[1\]: "224\.0\.0\.0\/24" is not valid.*multicast/,
    );
    expect(runDstmSync(['tep', '--check', '--config', file]).stderr).to.match(
      /tep\.pools\[0\]: "127\.0\.0\.0\/8" is not valid.*loopback/,
    );
  });

  it('finding 10: --check refuses a null section, too large a path MTU, too long a device name; overlapping --pool flags are named --pool', () => {
    const file = join(dir, 'null.json');
    writeFileSync(file, '{"server": null, "tep": null}');
    const s = runDstmSync(['server', '--check', '--config', file]);
    expect(s.code).to.equal(2);
    expect(s.stderr).to.match(/: server: null is not valid: expected an object/);
    expect(runDstmSync(['tep', '--check', '--config', file]).stderr).to.match(
      /: tep: null is not valid: expected an object/,
    );
    const tep = ['tep', '--check', '--ipv6', 'fd00::1', '--ipv4', '192.0.2.1', '--static', '198.51.100.9=fd00::9'];
    const mtu = runDstmSync([...tep, '--path-mtu', '9000']);
    expect(mtu.code).to.equal(2);
    expect(mtu.stderr).to.match(
      new RegExp(`^dstm tep: --path-mtu: 9000 is not valid: expected an integer from 1280 to ${MAX_PATH_MTU}`),
    );
    const dev = runDstmSync([...tep, '--device', 'a-27-character-device-name0']);
    expect(dev.code).to.equal(2);
    expect(dev.stderr).to.match(
      /^dstm tep: --device: "a-27-character-device-name0" is not valid: expected an interface name of 1 to 15 bytes/,
    );
    expect(runDstmSync([...tep, '--device', 'dstm-tep-15char']).code).to.equal(0);
    expect(() =>
      parseWithOverrides(staticFields, { tep: 'fd00::1', address: '198.51.100.9', device: 'x'.repeat(16) }, 'static'),
    ).to.throw(/^static\.device: "x{16}" is not valid/);
    const overlap = runDstmSync(['server', '--check', '--pool', '10.1.0.0/16', '--pool', '10.1.2.0/24']);
    expect(overlap.code).to.equal(2);
    expect(overlap.stderr).to.match(
      /^dstm server: --pool: "10\.1\.2\.0\/24" is not valid: expected prefixes that do not overlap/,
    );
  });

  it('--check reads the TLS files as a start (or a reload) would, so a missing one fails the check, not the start', () => {
    const missing = join(dir, 'none.pem');
    const server = runDstmSync([
      'server',
      '--check',
      '--tls',
      'opportunistic',
      '--tls-cert',
      missing,
      '--tls-key',
      missing,
    ]);
    expect(server.code, server.stderr).to.equal(2);
    expect(server.stderr).to.equal(`dstm server: cannot read the TLS certificate ${missing}: ENOENT\n`);
    const tep = ['tep', '--check', '--ipv6', '2001:db8::1', '--ipv4', '192.0.2.1', '--pool', '198.51.100.0/24'];
    const r = runDstmSync([...tep, '--server', '[2001:db8::10]:3786', '--tls', '--tls-ca', missing]);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.equal(`dstm tep: cannot read the TLS CA file ${missing}: ENOENT\n`);
  });

  it("finding 10: the largest path MTU fits the data plane's receive slots", () => {
    // a 2048-byte slot less its headroom holds the tunnel MTU, which is the path MTU less 40
    expect(MAX_PATH_MTU - 40).to.equal(2048 - HEADROOM);
  });

  it('finding 11: --state-dir /proc/self/xx is a clear error with exit 3 within seconds, not a hang', async () => {
    const [node, ...argv] = dstmArgv(
      'server',
      '--listen',
      '[::1]:0',
      '--state-dir',
      '/proc/self/xx',
      '--pool',
      '10.93.0.0/24',
    );
    const p = spawn(node, argv, { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const killer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((res) => p.on('exit', (c) => res(c)));
    clearTimeout(killer);
    expect(code, stderr).to.equal(3);
    expect(stderr).to.match(/cannot start: state directory \/proc\/self\/xx: cannot create \/proc\/self\/xx: ENOENT/);
  });
});
