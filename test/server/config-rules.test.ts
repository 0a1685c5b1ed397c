// Review findings on the server section: reservations must come from a pool (finding 1), and list entries that
// would collide at start or shadow each other are refused (finding 3). `dstm` is the compiled CLI.
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseWithOverrides } from '../../src/config/schema';
import { serverFields } from '../../src/config/server-schema';
import { checkServerConfig } from '../../src/server/daemon';
import { runDstmSync } from '../support/dstm-procs';
import { removeDir, tempDir } from './helpers';

/** Parse and cross-check a server section as `dstm server --check` does; the error message, or '' when accepted. */
function check(section: Record<string, unknown>): string {
  try {
    checkServerConfig(parseWithOverrides(serverFields, section, 'server'), 'server');
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('server configuration rules (review findings 1 and 3)', function () {
  this.timeout(60_000);
  const pools = ['10.1.0.0/24', '10.2.0.0/31'];

  it('finding 1: a reservation outside every pool, excluded, or a network/broadcast address is refused', () => {
    const res = (ipv4: string, more: Record<string, unknown> = {}): string =>
      check({ pools, exclude: ['10.1.0.128/25'], reservations: [{ ipv6: '2001:db8::1', ipv4 }], ...more });
    expect(res('127.0.0.1')).to.equal(
      'server.reservations[0].ipv4: "127.0.0.1" is not valid: expected an address inside server.pools (10.1.0.0/24, 10.2.0.0/31)',
    );
    expect(res('0.0.0.0')).to.match(/^server\.reservations\[0\]\.ipv4: "0\.0\.0\.0" .*inside server\.pools/);
    expect(res('10.1.0.200')).to.match(
      /^server\.reservations\[0\]\.ipv4: "10\.1\.0\.200" .*outside server\.exclude \(it is in 10\.1\.0\.128\/25\)/,
    );
    expect(res('10.1.0.0')).to.match(
      /^server\.reservations\[0\]\.ipv4: "10\.1\.0\.0" .*network or broadcast address of pool 10\.1\.0\.0\/24/,
    );
    expect(check({ pools: ['10.1.0.0/24'], reservations: [{ ipv6: '::1', ipv4: '10.1.0.255' }] })).to.match(
      /broadcast/,
    );
    // accepted: a host address, a /31's ends, and the edges when skip_network_broadcast is off
    expect(res('10.1.0.7')).to.equal('');
    expect(res('10.2.0.0')).to.equal('');
    expect(res('10.2.0.1')).to.equal('');
    expect(res('10.1.0.0', { skip_network_broadcast: false })).to.equal('');
  });

  it('finding 1: two reservations of one IPv6 prefix or one IPv4 address are refused', () => {
    expect(
      check({
        pools,
        reservations: [
          { ipv6: '2001:db8::/64', ipv4: '10.1.0.5' },
          { ipv6: '2001:0db8:0::/64', ipv4: '10.1.0.6' },
        ],
      }),
    ).to.equal(
      'server.reservations[1].ipv6: "2001:0db8:0::/64" is not valid: expected a value not given before (the same as server.reservations[0].ipv6)',
    );
    expect(
      check({
        pools,
        reservations: [
          { ipv6: '2001:db8::1', ipv4: '10.1.0.5' },
          { ipv6: '2001:db8::2', ipv4: '10.1.0.5' },
        ],
      }),
    ).to.match(/^server\.reservations\[1\]\.ipv4: "10\.1\.0\.5" .*the same as server\.reservations\[0\]\.ipv4/);
  });

  it('finding 1: server --check exits 2 naming the reservation', () => {
    const dir = tempDir('rules');
    try {
      const file = join(dir, 'res.json');
      writeFileSync(file, JSON.stringify({ server: { reservations: [{ ipv6: '::1', ipv4: '127.0.0.1' }] } }));
      const r = runDstmSync(['server', '--check', '--config', file]);
      expect(r.code, r.stderr).to.equal(2);
      expect(r.stderr).to.match(
        /server\.reservations\[0\]\.ipv4: "127\.0\.0\.1" is not valid: expected an address inside server\.pools/,
      );
    } finally {
      removeDir(dir);
    }
  });
  it('finding 3: the same listen endpoint (however spelt), transport or TEP prefix twice is refused', () => {
    expect(check({ listen: ['[::1]:4000', '[0:0::1]:4000'] })).to.equal(
      'server.listen[1]: "[0:0::1]:4000" is not valid: expected a value not given before (the same as server.listen[0])',
    );
    expect(check({ listen: ['[::]:3786', '::'] })).to.match(/^server\.listen\[1\]: "::" .*server\.listen\[0\]/);
    expect(check({ listen: ['[::1]:4000', '[::1]:4001'] })).to.equal('');
    // the wildcard address takes its port on every address
    expect(check({ listen: ['[::]:4000', '[2001:db8::1]:4000'] })).to.equal(
      'server.listen[1]: "[2001:db8::1]:4000" is not valid: expected a port that [::]:4000 (every address) does not take already',
    );
    expect(check({ listen: ['[::]:4000', '[2001:db8::1]:4001'] })).to.equal('');
    expect(check({ transports: ['udp', 'tcp', 'udp'] })).to.match(
      /^server\.transports\[2\]: "udp" is not valid: expected a value not given before \(the same as server\.transports\[0\]\)/,
    );
    const tep = { ipv6: '2001:db8:1::1', ipv4: '192.0.2.1' };
    expect(
      check({
        teps: [
          { prefix: '2001:db8:20::/48', ...tep },
          { prefix: '2001:db8:20:0::/48', ipv6: '2001:db8:1::2', ipv4: '192.0.2.2' },
        ],
      }),
    ).to.equal(
      'server.teps[1].prefix: "2001:db8:20:0::/48" is not valid: expected a value not given before (the same as server.teps[0].prefix)',
    );
  });

  it('finding 3: server --check exits 2 naming a repeated --listen flag', () => {
    const r = runDstmSync(['server', '--check', '--listen', '[::1]:4000', '--listen', '[::1]:4000']);
    expect(r.code, r.stderr).to.equal(2);
    expect(r.stderr).to.match(/--listen\[1\]: "\[::1\]:4000" is not valid: expected a value not given before/);
  });
});
