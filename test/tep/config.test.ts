import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { annexALines, dtiUpCommands, parseRoutes } from '../../src/node/dti-node';
import { parseWithOverrides } from '../../src/config/schema';
import { tepFields } from '../../src/config/tep-schema';
import { formatIp } from '../../src/dti/netconfig';
import { parseIPv4 } from '../../src/lib/addr';
import { checkTep, describeTep } from '../../src/tep/daemon';
import { runDstmSync } from '../support/dstm-procs';

describe('tep configuration', () => {
  const base = { address: '2001:db8:1::1', ipv4: '192.0.2.1' };

  it('takes the file, with flags on top, and describes the result', () => {
    const c = parseWithOverrides(tepFields, { ...base, pools: ['198.51.100.0/24'] }, 'tep', [
      { key: 'static', flag: '--static', value: [{ ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' }] },
      { key: 'prefixes', flag: '--prefix', value: ['2001:db8::/32'] },
    ]);
    checkTep(c);
    const shown = describeTep(c);
    expect(Object.keys(shown), 'every key of the section').to.deep.equal(Object.keys(tepFields));
    expect(shown).to.deep.include({
      pools: ['198.51.100.0/24'],
      prefixes: ['2001:db8::/32'],
      static: [{ ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' }],
      device: 'dstm-tep0',
      path_mtu: 1500,
      feed_source: null,
      batch: 64,
    });
    // what --check shows is the file's syntax: read back (a key not set, null, left out), it is the same configuration
    const unset = (v: unknown): unknown =>
      v && typeof v === 'object' && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).flatMap(([k, x]) => (x === null ? [] : [[k, unset(x)]])))
        : v;
    expect(parseWithOverrides(tepFields, unset(shown), 'tep')).to.deep.equal(c);
  });

  it('refuses bad values naming the flag or key, and configurations that cannot forward', () => {
    expect(() =>
      parseWithOverrides(tepFields, base, 'tep', [{ key: 'pools', flag: '--pool', value: ['198.51.100.1/24'] }]),
    ).to.throw(/--pool\[0\].*host bits/);
    expect(() => parseWithOverrides(tepFields, { ipv4: '192.0.2.1' }, 'tep')).to.throw(/tep.address: missing/);
    expect(() => parseWithOverrides(tepFields, { ...base, path_mtu: 1000 }, 'tep')).to.throw(/tep.path_mtu/);
    expect(() => checkTep(parseWithOverrides(tepFields, base, 'tep'))).to.throw(/nothing to forward/);
    const noPool = parseWithOverrides(
      tepFields,
      { ...base, server: '[2001:db8:2::10]:3786', static: [{ ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' }] },
      'tep',
    );
    expect(() => checkTep(noPool)).to.throw(/--server needs the pools/);
  });
});

describe('dstm tep --check', function () {
  this.timeout(120_000);

  it('prints the configuration from the file and flags as JSON and exits 0, touching nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-tep-check-'));
    try {
      const file = join(dir, 'dstm.json');
      writeFileSync(
        file,
        JSON.stringify({
          tep: { address: '2001:db8:1::1', ipv4: '192.0.2.1', pools: ['198.51.100.0/24'], device: 'never-made0' },
        }),
      );
      const r = runDstmSync([
        'tep',
        '--check',
        '--config',
        file,
        '--static',
        '203.0.113.9=2001:db8:1::9',
        '--log-level',
        'debug',
      ]);
      expect(r.code, r.stderr).to.equal(0);
      const shown = JSON.parse(r.stdout) as Record<string, unknown>;
      expect(Object.keys(shown)).to.deep.equal(Object.keys(tepFields));
      expect(shown).to.deep.include({
        address: '2001:db8:1::1',
        pools: ['198.51.100.0/24'],
        static: [{ ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' }],
        device: 'never-made0',
        log_level: 'debug',
        tls: { enabled: false, ca: null, cert: null, key: null, server_name: null },
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exits 2 (usage or configuration error) with one line naming the key or flag', () => {
    let r = runDstmSync([
      'tep',
      '--check',
      '--ipv6',
      '2001:db8:1::1',
      '--ipv4',
      '192.0.2.1',
      '--pool',
      '198.51.100.1/24',
    ]);
    expect(r.code).to.equal(2);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/^dstm tep: --pool\[0\].*host bits/);
    r = runDstmSync(['tep', '--check', '--ipv6', '2001:db8:1::1', '--ipv4', '192.0.2.1']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('nothing to forward');
  });
});

describe('dstm static --print', () => {
  it("renders Annex A's own example as iproute2 and KAME lines", () => {
    const lease = { address: parseIPv4('193.109.121.195'), peer: parseIPv4('193.109.121.199') };
    const routes = parseRoutes(['default']);
    expect(dtiUpCommands('dti0', lease, routes).map((c) => formatIp(c))).to.deep.equal([
      'ip -4 addr add 193.109.121.195/32 peer 193.109.121.199/32 dev dti0',
      'ip -4 route replace default dev dti0 src 193.109.121.195',
    ]);
    expect(annexALines('3ffe:ffe:1002:1::1', '3ffe:3ffe:1002:1:260:caff:fe85:abcd', lease, routes)).to.deep.equal([
      'gifconfig gif0 inet6 3ffe:ffe:1002:1::1 3ffe:3ffe:1002:1:260:caff:fe85:abcd',
      'ifconfig gif0 inet 193.109.121.195 193.109.121.199 netmask 255.255.255.255 up',
      'route change default 193.109.121.199',
    ]);
  });

  it('reads the "static" section, flags on top, and refuses a missing or non-unicast TEP or a bad route naming the key or flag', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-static-conf-'));
    try {
      const file = join(dir, 'dstm.json');
      writeFileSync(
        file,
        JSON.stringify({
          static: {
            tep: '2001:db8:1::1',
            address: '198.51.100.200',
            peer: '192.0.2.1',
            local: '2001:db8:30::10',
            routes: ['203.0.113.0/24'],
            device: 'gif9',
            path_mtu: 1400,
          },
        }),
      );
      let r = runDstmSync(['static', '--config', file, '--print']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.contain(
        'ip -6 tunnel add gif9 mode ipip6 local 2001:db8:30::10 remote 2001:db8:1::1 encaplimit none',
      );
      expect(r.stdout).to.contain('ip link set dev gif9 mtu 1360');
      expect(r.stdout).to.contain('ip -4 route replace 203.0.113.0/24 dev gif9 src 198.51.100.200');
      // Flags win: the address, and the routes list as a whole.
      r = runDstmSync(['static', '--config', file, '--address', '198.51.100.201', '--routes', 'default', '--print']);
      expect(r.code, r.stderr).to.equal(0);
      expect(r.stdout).to.contain('ip -4 addr add 198.51.100.201/32 peer 192.0.2.1/32 dev gif9');
      expect(r.stdout).to.contain('ip -4 route replace default dev gif9 src 198.51.100.201');
      expect(r.stdout).to.not.contain('203.0.113.0/24');
      r = runDstmSync(['static', '--config', file, '--routes', '203.0.113.1/24', '--print']);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(/^dstm static: --routes\[0\]: "203.0.113.1\/24" is not valid.*host bits/);
      writeFileSync(file, JSON.stringify({ static: { address: '198.51.100.200' } }));
      r = runDstmSync(['static', '--config', file, '--print']);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(/^dstm static: .*static\.tep: missing: expected a unicast IPv6 address/);
      // a TEP nothing can be tunnelled to: the unspecified address, loopback, a group, an IPv4-mapped address
      for (const [tep, why] of [
        ['::', 'the unspecified address'],
        ['::1', 'the loopback address'],
        ['ff0e::1', 'a multicast address'],
        ['::ffff:192.0.2.1', 'an IPv4-mapped address'],
      ]) {
        r = runDstmSync(['static', '--config', file, '--tep', tep, '--print']);
        expect(r.code, tep).to.equal(2);
        expect(r.stderr).to.contain(`--tep: "${tep}" is not valid`).and.contain(`(${why})`);
      }
      // an address of this node no host can have: a group, loopback, the broadcast address
      for (const [address, range] of [
        ['224.0.0.251', '224.0.0.0/4'],
        ['127.0.0.2', '127.0.0.0/8'],
        ['255.255.255.255', '240.0.0.0/4'],
      ]) {
        r = runDstmSync(['static', '--config', file, '--tep', '2001:db8::1', '--address', address, '--print']);
        expect(r.code, address).to.equal(2);
        expect(r.stderr).to.contain(`--address: "${address}" is not valid`).and.contain(`it is in ${range}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses --routes lists and refuses what is not a prefix', () => {
    expect(parseRoutes(['203.0.113.0/24,default', '0.0.0.0/0'])).to.deep.equal([
      '203.0.113.0/24',
      'default',
      'default',
    ]);
    expect(annexALines('::1', '::2', { address: 1 }, ['203.0.113.0/24'])).to.deep.equal([
      'gifconfig gif0 inet6 ::1 ::2',
      'ifconfig gif0 inet 0.0.0.1 netmask 255.255.255.255 up',
      'route add -net 203.0.113.0/24 -interface gif0',
    ]);
    expect(() => parseRoutes(['203.0.113.1/24'])).to.throw(/--routes: "203.0.113.1\/24"/);
  });
});

describe('tep configuration rules (review finding 2)', () => {
  const base = { address: '2001:db8:1::1', ipv4: '192.0.2.1' };
  const refusal = (section: Record<string, unknown>): string => {
    try {
      checkTep(parseWithOverrides(tepFields, { ...base, ...section }, 'tep'));
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };

  it("refuses a static mapping of the TEP's own IPv4 address", () => {
    expect(refusal({ static: [{ ipv4: '192.0.2.1', ipv6: '2001:db8:1::9' }] })).to.equal(
      `tep.static[0].ipv4: "192.0.2.1" is not valid: expected an address other than the TEP's own IPv4 address (tep.ipv4): its node could send as the TEP`,
    );
  });

  it('refuses a static mapping of an address no node can have or tunnel from', () => {
    expect(refusal({ static: [{ ipv4: '224.0.0.1', ipv6: '2001:db8:1::9' }] })).to.match(
      /^tep\.static\[0\]\.ipv4: "224\.0\.0\.1" is not valid: .*it is in 224\.0\.0\.0\/4/,
    );
    expect(refusal({ static: [{ ipv4: '203.0.113.9', ipv6: 'ff02::1' }] })).to.match(
      /^tep\.static\[0\]\.ipv6: "ff02::1" is not valid: .*a multicast address/,
    );
  });

  it('refuses two static mappings of one IPv4 or one IPv6 address', () => {
    expect(
      refusal({
        static: [
          { ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' },
          { ipv4: '203.0.113.9', ipv6: '2001:db8:1::a' },
        ],
      }),
    ).to.equal(
      'tep.static[1].ipv4: "203.0.113.9" is not valid: expected a value not given before (the same as tep.static[0].ipv4)',
    );
    expect(
      refusal({
        static: [
          { ipv4: '203.0.113.9', ipv6: '2001:db8:1::9' },
          { ipv4: '203.0.113.10', ipv6: '2001:db8:1:0::9' },
        ],
      }),
    ).to.equal(
      'tep.static[1].ipv6: "2001:db8:1:0::9" is not valid: expected a value not given before (the same as tep.static[0].ipv6)',
    );
  });

  it('refuses overlapping or duplicate pools', () => {
    expect(refusal({ pools: ['198.51.100.0/24', '198.51.100.128/25'] })).to.match(
      /^tep\.pools: "198\.51\.100\.128\/25" is not valid: expected prefixes that do not overlap/,
    );
    expect(refusal({ pools: ['198.51.100.0/24', '198.51.100.0/24'] })).to.match(/^tep\.pools: .*overlaps/);
    expect(refusal({ pools: ['198.51.100.0/25', '198.51.100.128/25'] })).to.equal('');
  });

  it('tep --check exits 2 naming the flag', () => {
    const r = runDstmSync([
      'tep',
      '--check',
      '--ipv6',
      '2001:db8:1::1',
      '--ipv4',
      '192.0.2.1',
      '--static',
      '192.0.2.1=2001:db8:1::9',
    ]);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.match(
      /--static\[0\]\.ipv4: "192\.0\.2\.1" is not valid: expected an address other than the TEP's own/,
    );
  });
});
