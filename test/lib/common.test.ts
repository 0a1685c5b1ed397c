import { expect } from 'chai';
import { get } from 'node:http';
import { PassThrough } from 'node:stream';
import { Address6 } from 'ip-address';
import { formatIPv6, parseIPv4, parseIPv6, parsePrefix4, parsePrefix6 } from '../../src/lib/addr';
import { formatEndpoint, parseEndpoint } from '../../src/lib/endpoint';
import { createLogger } from '../../src/lib/log';
import { Registry, serveMetrics } from '../../src/lib/metrics';
import { seeded } from '../support/random';

describe('addresses', () => {
  it('parses every RFC 4291 text form to 16 bytes and formats per RFC 5952', () => {
    expect(Array.from(parseIPv6('::ffff:192.0.2.1').subarray(10))).to.deep.equal([0xff, 0xff, 192, 0, 2, 1]);
    expect(formatIPv6(parseIPv6('2001:DB8:0:0:1:0:0:1'))).to.equal('2001:db8::1:0:0:1');
    expect(formatIPv6(parseIPv6('2001:db8:0:1:1:1:1:1'))).to.equal('2001:db8:0:1:1:1:1:1');
    expect(formatIPv6(parseIPv6('fe80::1%eth0'))).to.equal('fe80::1');
    const buf = new Uint8Array(20);
    buf.set(parseIPv6('::1'), 4);
    expect(formatIPv6(buf, 4)).to.equal('::1');
    expect(parseIPv4('192.0.2.255')).to.equal(0xc00002ff);
  });

  it('refuses malformed addresses and prefixes with host bits set', () => {
    for (const bad of ['1::2::3', '12345::', '::g', '2001:db8::/32', '1:2:3:4:5:6:7', ''])
      expect(() => parseIPv6(bad)).to.throw(`"${bad}" is not an IPv6 address`);
    for (const bad of ['01.2.3.4', '256.0.0.1', '1.2.3', '1.2.3.4/8'])
      expect(() => parseIPv4(bad)).to.throw(`"${bad}" is not an IPv4 address`);
    expect(() => parsePrefix4('192.0.2.1/24')).to.throw(/host bits are set past \/24/);
    expect(() => parsePrefix6('2001:db8::1/32')).to.throw(/host bits are set past \/32/);
    expect(parsePrefix6('2001:db8::/32').len).to.equal(32);
  });

  it('parses socket-style text by hand exactly as ip-address does, on valid and malformed texts alike', () => {
    const reference = (s: string): string =>
      Address6.isValid(s) ? Buffer.from(new Address6(s).toUnsignedByteArray()).toString('hex') : 'refused';
    const ours = (s: string): string => {
      try {
        return Buffer.from(parseIPv6(s)).toString('hex');
      } catch {
        return 'refused';
      }
    };
    const random = seeded(5952);
    const pick = (chars: string): string => chars[Math.floor(random() * chars.length)];
    const texts: string[] = [
      '::',
      '::1',
      '1::',
      '1:2:3:4:5:6:7:8',
      '1::2:3:4:5:6:7:8',
      '1:2:3:4:5:6:7::',
      ':1::',
      '1:',
      '::1:',
    ];
    for (let i = 0; i < 3000; i++) {
      // Random addresses, canonical and with the zero run spelt out or upper-cased, and random strings of the same
      // alphabet.
      const bytes = Uint8Array.from({ length: 16 }, () => (random() < 0.4 ? 0 : Math.floor(random() * 256)));
      const text = formatIPv6(bytes);
      texts.push(
        text,
        text.toUpperCase(),
        text.replace('::', ':0:0:'),
        Array.from({ length: Math.floor(random() * 42) }, () => pick('0123456789abcdefF::')).join(''),
      );
    }
    let plain = 0;
    for (const t of texts) {
      expect(ours(t), t).to.equal(reference(t));
      if (ours(t) !== 'refused') plain++;
    }
    // Every canonical and upper-cased address at least, so the comparison is not all refusals.
    expect(plain).to.be.at.least(6000);
  });
});

describe('endpoint parsing', () => {
  it('accepts every documented spelling', () => {
    expect(parseEndpoint('[2001:db8::1]:4000', 1)).to.deep.equal({ host: '2001:db8::1', port: 4000, family: 6 });
    expect(parseEndpoint('2001:db8::1', 7)).to.deep.equal({ host: '2001:db8::1', port: 7, family: 6 });
    expect(parseEndpoint('[::1]', 7).port).to.equal(7);
    expect(parseEndpoint('192.0.2.1:80', 7)).to.deep.equal({ host: '192.0.2.1', port: 80, family: 4 });
    expect(parseEndpoint(':9', 7)).to.deep.equal({ host: '::', port: 9, family: 6 });
    expect(formatEndpoint({ host: '::1', port: 5 })).to.equal('[::1]:5');
  });

  it('refuses bad hosts and ports with the expected forms in the message', () => {
    expect(() => parseEndpoint('[::1]:70000', 1)).to.throw(/port "70000" is not 0-65535.*expected \[IPV6\]:PORT/);
    expect(() => parseEndpoint('example.org:80', 1)).to.throw(/"example.org" is not an IP address/);
    expect(() => parseEndpoint('[::g]:1', 1)).to.throw(/not an IP address/);
  });
});

describe('logger', () => {
  it('writes JSON lines with bound fields off a terminal and honours the level', () => {
    const out = new PassThrough();
    const log = createLogger({ stream: out, level: 'info' }).child({ component: 'tep' });
    log.debug('hidden');
    log.warn('drop', { reason: 'spoofed', n: 2n });
    const rec = JSON.parse(String(out.read()));
    expect(rec).to.include({ level: 'warn', msg: 'drop', component: 'tep', reason: 'spoofed', n: '2' });
  });

  it('writes key=value text on a terminal', () => {
    const out = Object.assign(new PassThrough(), { isTTY: true });
    createLogger({ stream: out, level: 'debug' }).info('lease', { address: '192.0.2.7', note: 'two words' });
    expect(String(out.read())).to.equal('INFO  lease address=192.0.2.7 note="two words"\n');
  });
});

describe('metrics', () => {
  it('renders counters, gauges and collectors in Prometheus text format over HTTP', async () => {
    const reg = new Registry();
    reg.counter('dstm_requests_total', 'Requests by result.').inc({ result: 'ok' }, 3);
    let drops = 0;
    reg.collector('dstm_drops_total', 'Drops by reason.', 'counter', () => [
      { labels: { reason: 'a"b' }, value: drops },
    ]);
    drops = 5;
    expect(() => reg.gauge('dstm_requests_total', 'again')).to.throw(/registered twice/);
    const { server, port } = await serveMetrics(reg, '::1', 0);
    try {
      const body = await new Promise<string>((resolve, reject) =>
        get({ host: '::1', port, path: '/metrics' }, (res) => {
          let s = '';
          res.on('data', (c) => (s += c)).on('end', () => resolve(s));
        }).on('error', reject),
      );
      expect(body).to.contain('# TYPE dstm_requests_total counter\ndstm_requests_total{result="ok"} 3\n');
      expect(body).to.contain('dstm_drops_total{reason="a\\"b"} 5\n');
    } finally {
      server.close();
    }
  });
});
