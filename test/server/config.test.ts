import { expect } from 'chai';
import { DEFAULT_CONFIG_FILE, parseConfigText, readConfig } from '../../src/config/load';
import {
  ConfigError,
  describe as keyTable,
  field,
  integer,
  list,
  parseWithOverrides,
  record,
  showRecord,
} from '../../src/config/schema';
import { serverFields, serverKeys, serverSchema } from '../../src/config/server-schema';
import { redactUrl } from '../../src/config/types';
import { formatIPv4 } from '../../src/lib/addr';

function refusal(f: () => unknown): ConfigError {
  try {
    f();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('config schema', () => {
  it('fills every default and parses values', () => {
    const c = serverSchema.parse({ pools: ['10.1.0.0/16'] }, 'server');
    expect(c.lease).to.equal(3600);
    expect(c.pools.map((p) => `${formatIPv4(p.base)}/${p.len}`)).to.deep.equal(['10.1.0.0/16']);
    expect(c.listen[0]).to.deep.include({ host: '::', port: 3786 });
    expect(c.tep).to.equal(undefined);
  });

  it('names the key path, the bad value and what was expected', () => {
    const e = refusal(() =>
      serverSchema.parse({ teps: [{ prefix: '2001:db8::/32', ipv6: '2001:db8::1', ipv4: '10.0.0.300' }] }, 'server'),
    );
    expect(e.path).to.equal('server.teps[0].ipv4');
    expect(e.message).to.contain('"10.0.0.300"').and.contain('IPv4 address');
  });

  it('refuses unknown keys, missing required keys and IPv4 listen addresses', () => {
    expect(refusal(() => serverSchema.parse({ leese: 5 }, 'server')).message).to.match(
      /server\.leese: unknown key .*lease/,
    );
    expect(refusal(() => serverSchema.parse({ tep: { ipv6: '2001:db8::1' } }, 'server')).message).to.equal(
      'server.tep.ipv4: missing: expected an IPv4 address like "192.0.2.1"',
    );
    for (const [ipv6, problem] of [
      ['::', 'the unspecified address'],
      ['ff02::1', 'a multicast address'],
      ['::ffff:192.0.2.1', 'an IPv4-mapped address'],
    ])
      expect(
        refusal(() => serverSchema.parse({ teps: [{ prefix: '2001:db8::/32', ipv6, ipv4: '192.0.2.1' }] }, 'server'))
          .message,
        'a TEP nodes cannot tunnel to',
      ).to.contain(problem);
    expect(refusal(() => serverSchema.parse({ listen: ['192.0.2.1:3786'] }, 'server')).message).to.contain('IPv6');
    expect(refusal(() => serverSchema.parse({ pools: ['192.0.2.1/24'] }, 'server')).message).to.contain('host bits');
  });

  it('takes a store URL with settings of its own, but not an application_name (dstm names its connections)', () => {
    const url = 'postgresql://dstm:secret@db.example:5432/dstm?sslmode=require&options=-c%20search_path%3Ddstm';
    expect(serverSchema.parse({ store: url }, 'server').store).to.equal(url);
    const e = refusal(() => serverSchema.parse({ store: `${url}&application_name=mine` }, 'server'));
    expect(e.path).to.equal('server.store');
    expect(e.message).to.contain('application_name is set by dstm').and.not.contain('secret');
    // libpq's unix-socket form: no host before the database, the socket directory in ?host=
    const socket = 'postgresql://dstm:secret@/dstm?host=/run/postgresql';
    expect(serverSchema.parse({ store: socket }, 'server').store).to.equal(socket);
    expect(redactUrl(socket)).to.equal('postgresql://dstm:***@/dstm?host=/run/postgresql');
  });

  it('never shows a password of a store URL, encoded or not, in the URL or its parameters', () => {
    for (const [url, shown] of [
      ['postgresql://u:se%2Fcret@h/d', 'postgresql://u:***@h/d'],
      // not percent-encoded: "/", "?", "#", "@" and ":" in the password
      ['postgresql://u:se/cret@h/d', 'postgresql://u:***@h/d'],
      ['postgresql://u:s@e/c:r?e#t@[::1]:5432/d', 'postgresql://u:***@[::1]:5432/d'],
      [
        'postgres://u@h/d?sslmode=require&password=secret&sslpassword=secret',
        'postgres://u@h/d?sslmode=require&password=***&sslpassword=***',
      ],
      ['postgresql://u@[::1]:5432/d', 'postgresql://u@[::1]:5432/d'],
      // no password, an "@" in a parameter: left alone
      ['postgresql://u@h:5432/d?sslrootcert=/etc/a@b.pem', 'postgresql://u@h:5432/d?sslrootcert=/etc/a@b.pem'],
    ]) {
      expect(redactUrl(url)).to.equal(shown);
    }
    const e = refusal(() => serverSchema.parse({ store: 'postgresql://u:se/cret@h/d' }, 'server'));
    expect(e.message).to.contain('not a valid URL').and.not.contain('cret');
    // URLs that parse, with part of the password as host and database (or fragment): refused, naming the cause
    for (const url of ['postgresql://u:s@e/c:ret@h/d', 'postgresql://u:5#secret@h/d']) {
      const m = refusal(() => serverSchema.parse({ store: url }, 'server')).message;
      expect(m)
        .to.contain('must be percent-encoded')
        .and.not.match(/c:ret|secret/);
    }
  });

  it('reads back what --check shows: an optional key given as null is not set; other keys refuse null', () => {
    const c = parseWithOverrides(serverFields, { pools: ['198.51.100.0/24'], tls: { policy: 'off' } }, 'server');
    const shown = showRecord(serverFields, c);
    expect(shown.tep).to.equal(null);
    expect((shown.tls as Record<string, unknown>).cert).to.equal(null);
    expect(parseWithOverrides(serverFields, JSON.parse(JSON.stringify(shown)), 'server')).to.deep.equal(c);
    expect(() => parseWithOverrides(serverFields, { lease: null }, 'server')).to.throw(
      /server\.lease: null is not valid/,
    );
  });

  it('lets a flag override a key and names the flag when the flag is bad', () => {
    const c = parseWithOverrides(serverFields, { lease: 100 }, 'server', [{ key: 'lease', flag: '--lease', value: 7 }]);
    expect(c.lease).to.equal(7);
    expect(
      refusal(() => parseWithOverrides(serverFields, {}, 'server', [{ key: 'lease', flag: '--lease', value: -1 }]))
        .path,
    ).to.equal('--lease');
  });

  it('reports JSON syntax errors with line and column, and unknown sections', () => {
    expect(() => parseConfigText('{\n  "server": {\n    "lease": 5,\n  }\n}', 'f.json')).to.throw(
      /f\.json: not valid JSON at line 4, column 3/,
    );
    expect(() => parseConfigText('{"sevrer": {}}', 'f.json')).to.throw(/unknown section/);
  });

  it('refuses a key given twice in one object (JSON.parse keeps the last), naming its path and both places', () => {
    const error = (text: string): string => {
      try {
        parseConfigText(text, 'f.json');
      } catch (err) {
        expect(err).to.be.instanceOf(ConfigError);
        return (err as Error).message;
      }
      return '';
    };
    expect(error('{"server": {"pools": ["198.51.100.0/24"],\n "pools": ["203.0.113.0/24"]}}')).to.equal(
      'f.json: server.pools: given twice (line 2, column 2, first at line 1, column 13)',
    );
    expect(error('{"tep": {}, "server": {}, "tep": {}}')).to.match(/^f\.json: tep: given twice /);
    // the key as JSON reads it, escapes and all; inside a list the item's index
    expect(error('{"server": {"teps": [{}, {"prefix": "::/0", "\\u0070refix": "::/0"}]}}')).to.match(
      /^f\.json: server\.teps\[1\]\.prefix: given twice /,
    );
    // the same key in different objects, and strings holding quotes, braces and colons, are not keys given twice
    const text = '{"server": {"tls": {"key": "a\\"}{:"}, "key": ["{\\"key\\": 1}", {"key": 1}]}, "tep": {"key": 2}}';
    expect(error(text)).to.equal('');
  });

  it('takes an empty DSTM_CONFIG as unset, and refuses an empty --config naming it', () => {
    const saved = process.env.DSTM_CONFIG;
    process.env.DSTM_CONFIG = '';
    try {
      expect([undefined, DEFAULT_CONFIG_FILE]).to.include(readConfig().file);
    } finally {
      if (saved === undefined) delete process.env.DSTM_CONFIG;
      else process.env.DSTM_CONFIG = saved;
    }
    expect(() => readConfig('')).to.throw(ConfigError, '--config: "" is not valid: expected a file path');
  });

  it('gives a line and column for every JSON syntax error, without quoting the file, and skips a UTF-8 BOM', () => {
    const error = (text: string): string => {
      try {
        parseConfigText(text, 'f.json');
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    };
    // V8 says "Unexpected token 'x', "<the text>" is not valid JSON": no position, and the text may hold a password
    expect(error('{\n  "server": {"store": "postgresql://u:secret@h/d", "lease": x}\n}')).to.equal(
      `f.json: not valid JSON at line 2, column 61: Unexpected token 'x'`,
    );
    expect(error('{"server": {"lease": tru}}')).to.equal(
      `f.json: not valid JSON at line 1, column 25: Unexpected token '}'`,
    );
    expect(error('[1,\n]')).to.equal(`f.json: not valid JSON at line 2, column 1: Unexpected token ']'`);
    expect(error('{"server": {}} x')).to.equal(
      'f.json: not valid JSON at line 1, column 16: Unexpected non-whitespace character after JSON',
    );
    expect(error('{"server": {}')).to.match(/^f\.json: not valid JSON at line 1, column 14: /);
    expect(error('')).to.equal('f.json: not valid JSON at line 1, column 1: Unexpected end of JSON input');
    expect(parseConfigText('\uFEFF{"server": {"lease": 5}}', 'f.json')).to.deep.equal({ server: { lease: 5 } });
  });

  it('exports a key table with nested keys for the man page check', () => {
    const keys = serverKeys().map((k) => k.key);
    expect(keys).to.include.members([
      'server.lease',
      'server.teps[].prefix',
      'server.tep.ipv4',
      'server.reservations[].ipv4',
    ]);
    for (const k of serverKeys()) expect(k.doc, k.key).to.not.equal('');
    const t = keyTable({ a: field(list(record({ b: field(integer(0, 9), 1, 'B') })), [], 'A') }, 'x');
    expect(t).to.deep.equal([
      { key: 'x.a', type: 'list of object', default: [], doc: 'A' },
      { key: 'x.a[].b', type: 'integer', default: 1, doc: 'B' },
    ]);
  });
});
