// dstm leases export and import (issue 13, operator basics): JSON lines out of a real store and into another, SQLite
// to PostgreSQL and back unchanged; every bad line refused with its number and nothing written; a new epoch; held
// and revoked bindings kept; a store a server uses refused.
import { expect } from 'chai';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { formatIPv4, parseIPv4, parsePrefix4 } from '../../src/lib/addr';
import type { LeasePolicy } from '../../src/server/leases';
import { exportLeases, ImportRules, importLeases, LeaseLineError } from '../../src/server/lease-io';
import { PostgresStore } from '../../src/server/postgres-store';
import { SqliteStore } from '../../src/server/sqlite-store';
import { StoreInUse, type Binding, type Store } from '../../src/server/store';
import { needPostgres, PostgresCluster } from '../support/postgres';
import { seeded } from '../support/random';
import { removeDir, runDstm, startServer, tempDir } from './helpers';
import { node, policy as basePolicy } from './store-conformance';

const POOL = '192.0.2.0/24';
const policy = (): LeasePolicy =>
  basePolicy({
    pools: [parsePrefix4(POOL)],
    tep: { ipv6: basePolicy().tep!.ipv6, ipv4: parseIPv4('192.0.2.254') },
    exclude: [parsePrefix4('192.0.2.254/32'), parsePrefix4('192.0.2.200/29')],
  });
const rules = (): ImportRules => new ImportRules(policy());
const lines = (...ls: string[]): Readable => Readable.from([ls.join('\n')]);

async function exported(store: Store): Promise<string[]> {
  const out: string[] = [];
  for await (const l of exportLeases(store, policy())) out.push(l);
  return out;
}

async function dumped(store: Store): Promise<Binding[]> {
  const out: Binding[] = [];
  for await (const b of store.dump()) out.push(b);
  return out;
}

/** A store with `n` bindings made by the store's own operations (seeded): active, released (held) and revoked. */
async function populate(store: Store, n: number, seed: number): Promise<void> {
  const rnd = seeded(seed);
  let next = parseIPv4('192.0.2.1');
  for (let i = 1; i <= n; i++) {
    const ip6 = node(i);
    let given = false;
    const candidates = { next: () => (given ? undefined : ((given = true), next++)), unused: () => undefined };
    await store.grant({ ip6, duration: 60 + Math.floor(rnd() * 3600), candidates });
    const r = rnd();
    if (r < 0.25) await store.release(ip6, 0);
    else if (r < 0.4) await store.revoke(ip6, 0);
  }
}

describe('dstm leases export and import', function () {
  this.timeout(60_000);
  const dirs: string[] = [];
  const stores: Store[] = [];
  const dir = (): string => {
    const d = tempDir('leaseio');
    dirs.push(d);
    return d;
  };
  const sqlite = (d: string, restore = false): SqliteStore => {
    const s = new SqliteStore(d, { restore });
    stores.push(s);
    return s;
  };
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    for (const d of dirs.splice(0)) removeDir(d);
  });

  const good = (ipv4: string, ipv6: string, state = 'active'): string =>
    JSON.stringify({ ipv6, ipv4, tep6: '2001:db8::fe', tep4: '198.51.100.1', starts: 1000, ends: 2000, state });

  describe('every bad line: refused with its number, nothing written', () => {
    let target: SqliteStore;
    let before: Binding[];
    beforeEach(async () => {
      target = sqlite(dir(), true);
      await target.restore([{ ip4: parseIPv4('192.0.2.50'), ip6: node(0x50), state: 0, starts: 10, ends: 20 }], false);
      before = await dumped(target);
    });

    const cases: [string, string[], RegExp][] = [
      ['bad JSON', ['{"ipv4": '], /not JSON/],
      ['not an object', ['[1, 2]'], /not a JSON object/],
      ['null', ['null'], /not a JSON object/],
      ['an unknown key', [good('192.0.2.1', '2001:db8::1').replace('"state"', '"stat"')], /unknown key "stat"/],
      ['a missing key', [JSON.stringify({ ipv4: '192.0.2.1', ipv6: '2001:db8::1', starts: 1, ends: 2 })], /no "state"/],
      ['a bad IPv4 address', [good('192.0.2.300', '2001:db8::1')], /"ipv4": "192.0.2.300" is not an IPv4 address/],
      ['an IPv4 prefix', [good('192.0.2.1/32', '2001:db8::1')], /"ipv4"/],
      ['a bad IPv6 address', [good('192.0.2.1', '2001:db8::g')], /"ipv6": "2001:db8::g" is not an IPv6 address/],
      ['an IPv6 address with a zone', [good('192.0.2.1', 'fe80::1%eth0')], /has a zone/],
      ['the unspecified address', [good('192.0.2.1', '::')], /cannot be a node \(the unspecified address\)/],
      ['a multicast node', [good('192.0.2.1', 'ff02::1')], /cannot be a node \(a multicast address\)/],
      ['a link-local node', [good('192.0.2.1', 'fe80::1')], /cannot be a node \(link-local/],
      ['an IPv4-mapped node', [good('192.0.2.1', '::ffff:192.0.2.1')], /cannot be a node/],
      ['an address in no pool', [good('198.51.100.7', '2001:db8::1')], /198\.51\.100\.7 is in no pool/],
      ["the TEP's address", [good('192.0.2.254', '2001:db8::1')], /192\.0\.2\.254 is never leased/],
      ['an excluded address', [good('192.0.2.203', '2001:db8::1')], /192\.0\.2\.203 is never leased/],
      ["the pool's network address", [good('192.0.2.0', '2001:db8::1')], /192\.0\.2\.0 is never leased/],
      ["the pool's broadcast address", [good('192.0.2.255', '2001:db8::1')], /192\.0\.2\.255 is never leased/],
      [
        'an unknown state',
        [good('192.0.2.1', '2001:db8::1', 'expired')],
        /"state" is not one of active, held, revoked/,
      ],
      [
        'a time as text',
        [good('192.0.2.1', '2001:db8::1').replace('"starts":1000', '"starts":"1000"')],
        /"starts" is not a time/,
      ],
      [
        'a negative time',
        [good('192.0.2.1', '2001:db8::1').replace('"ends":2000', '"ends":-1')],
        /"ends" is not a time/,
      ],
      [
        'a fractional time',
        [good('192.0.2.1', '2001:db8::1').replace('"ends":2000', '"ends":2000.5')],
        /"ends" is not a time/,
      ],
      [
        'a time past 2^32 - 1 (replies carry 32 bits)',
        [
          good('192.0.2.1', '2001:db8::1'),
          good('192.0.2.2', '2001:db8::2').replace('"ends":2000', '"ends":4294967296'),
        ],
        /^line 2: "ends": 4294967296 is after 4294967295 \(2106-02-07\)/,
      ],
      [
        'a null time (a static mapping)',
        [good('192.0.2.1', '2001:db8::1').replace('"starts":1000', '"starts":null')],
        /"starts" is not a time/,
      ],
      ['a bad tep6', [good('192.0.2.1', '2001:db8::1').replace('2001:db8::fe', 'x')], /"tep6"/],
      ['a line too long', [`{"ipv4": "${' '.repeat(5000)}"}`], /longer than 4096 bytes/],
      [
        'a huge line with no end, after a good one (refused before it is buffered)',
        [good('192.0.2.1', '2001:db8::1'), 'x'.repeat(1 << 20)],
        /^line 2: longer than 4096 bytes/,
      ],
      [
        'one address twice',
        [
          good('192.0.2.1', '2001:db8::1'),
          good('192.0.2.2', '2001:db8::2'),
          good('192.0.2.1', '2001:db8::3', 'revoked'),
        ],
        /line 3: 192\.0\.2\.1 is bound on line 1 already/,
      ],
      [
        'two live bindings for one node',
        [good('192.0.2.1', '2001:db8::1', 'held'), '', good('192.0.2.2', '2001:db8::1')],
        /line 3: 2001:db8::1 has a live \(active or held\) binding on line 1 already/,
      ],
      [
        'an address bound in the store (after good lines: the transaction is rolled back)',
        [good('192.0.2.1', '2001:db8::1'), good('192.0.2.2', '2001:db8::2'), good('192.0.2.50', '2001:db8::3')],
        /line 3: 192\.0\.2\.50 is bound in the store already \(to 2001:db8::50, active\)/,
      ],
      [
        'a node with a live binding in the store',
        [good('192.0.2.1', '2001:db8::1'), good('192.0.2.2', '2001:db8::50', 'held')],
        /line 2: 2001:db8::50 has a live binding in the store already \(192\.0\.2\.50, active\)/,
      ],
    ];
    for (const [what, input, message] of cases) {
      it(what, async () => {
        const epoch = target.epoch;
        const err = await importLeases(target, lines(...input), rules(), false).catch((e: Error) => e);
        expect(err).to.be.instanceOf(LeaseLineError);
        expect((err as Error).message).to.match(/^line \d+: /);
        expect((err as Error).message).to.match(message);
        if (input.length === 1) expect((err as LeaseLineError).line).to.equal(1);
        expect(await dumped(target)).to.deep.equal(before);
        expect(target.epoch).to.equal(epoch);
        // What is on disk, read by another connection once the import's exclusive lock is gone.
        await target.close();
        const reopened = new SqliteStore(target.dir, { readonly: true });
        try {
          expect(await dumped(reopened)).to.deep.equal(before);
          expect(reopened.epoch).to.equal(epoch);
        } finally {
          await reopened.close();
        }
      });
    }

    it('a revoked binding beside a live one of the same node is accepted (a node is quarantined from its old address)', async () => {
      const r = await importLeases(
        target,
        lines(good('192.0.2.1', '2001:db8::1', 'revoked'), good('192.0.2.2', '2001:db8::1')),
        rules(),
        false,
      );
      expect(r.imported).to.equal(2);
    });
  });

  it('a new epoch, held and revoked bindings kept, the feed rebuilt; --replace empties the store first', async () => {
    const src = sqlite(dir());
    await populate(src, 40, 7);
    const text = (await exported(src)).join('\n');
    const target = sqlite(dir(), true);
    await populate(target, 3, 8);
    const epoch = target.epoch;
    const conflict = await importLeases(target, lines(text), rules(), false).catch((e: Error) => e);
    expect((conflict as Error).message).to.match(/^line 1: 192\.0\.2\.1 is bound in the store already/);
    const r = await importLeases(target, lines(text), rules(), true);
    expect(r.imported).to.equal(40);
    expect(r.epoch).to.not.equal(epoch);
    expect(target.epoch).to.equal(r.epoch);
    expect(await dumped(target)).to.deep.equal(await dumped(src));
    const states = await target.counts();
    expect(states).to.deep.equal(await src.counts());
    expect(states.held).to.be.greaterThan(0);
    expect(states.revoked).to.be.greaterThan(0);
    // A TEP starting over reads exactly the active bindings as active entries of the feed.
    const feed = await target.feedSince(0, 1000);
    const active = (await dumped(src)).filter((b) => b.state === 0).map((b) => formatIPv4(b.ip4));
    expect(feed.changes.filter((c) => c.active).map((c) => formatIPv4(c.ip4))).to.have.members(active);
    await target.close();
    const reopened = sqlite(target.dir);
    expect(reopened.epoch).to.equal(r.epoch);
  });

  it('a SQLite store a server has open is refused; the server then starts after the import', async () => {
    const d = dir();
    const server = sqlite(d);
    await populate(server, 2, 9);
    expect(() => new SqliteStore(d, { restore: true })).to.throw(StoreInUse, /in use .*stop the server first/);
    // A reader (dstm leases --state-dir) is harmless to the server, but an import waits for it to finish too.
    await server.close();
    const restoring = sqlite(d, true);
    expect(() => new SqliteStore(d)).to.throw(StoreInUse, /in use by another dstm server or a dstm leases import/);
    await restoring.close();
  });

  describe('with PostgreSQL', () => {
    let cluster: PostgresCluster;
    before(async function () {
      needPostgres(this);
      cluster = await PostgresCluster.start();
    });
    after(async () => cluster?.stop());

    const pgStore = async (url: string, tool = false): Promise<PostgresStore> => {
      const s = await PostgresStore.open(url, tool ? { poolSize: 1, applicationName: 'dstm-leases' } : { poolSize: 2 });
      stores.push(s);
      return s;
    };

    it('SQLite → JSON lines → PostgreSQL → JSON lines: identical, with a new epoch', async () => {
      const src = sqlite(dir());
      await populate(src, 150, 11);
      const first = await exported(src);
      expect(first).to.have.length(150);
      const url = await cluster.createDatabase();
      const pg = await pgStore(url, true);
      const epoch = pg.epoch;
      const r = await importLeases(pg, lines(...first), rules(), false);
      expect(r.imported).to.equal(150);
      expect(r.epoch).to.not.equal(epoch);
      await pg.close();
      // A server opening it keeps the imported epoch, and sees the same bindings.
      const server = await pgStore(url);
      expect(server.epoch).to.equal(r.epoch);
      expect(await exported(server)).to.deep.equal(first);
      const feed = await server.feedSince(0, 1000);
      expect(feed.changes.filter((c) => c.active)).to.have.length((await server.counts()).active);
    });

    it('refused while a server is connected, nothing written; a bad line on PostgreSQL writes nothing either', async () => {
      const url = await cluster.createDatabase();
      const server = await pgStore(url);
      const tool = await pgStore(url, true);
      const err = await tool
        .restore([{ ip4: parseIPv4('192.0.2.9'), ip6: node(9), state: 0, starts: 1, ends: 2 }], false)
        .catch((e: Error) => e);
      expect(err).to.be.instanceOf(StoreInUse);
      expect((err as Error).message).to.match(/in use by dstm servers \(connected from ::1\): stop every server/);
      await server.close();
      stores.splice(stores.indexOf(server), 1);
      await importLeases(tool, lines(good('192.0.2.1', '2001:db8::1')), rules(), false);
      const epoch = tool.epoch;
      const bad = await importLeases(
        tool,
        lines(good('192.0.2.2', '2001:db8::2'), good('192.0.2.3', '2001:db8::3'), good('192.0.2.1', '2001:db8::4')),
        rules(),
        false,
      ).catch((e: Error) => e);
      expect((bad as Error).message).to.match(/^line 3: 192\.0\.2\.1 is bound in the store already/);
      expect((await cluster.sql(url, 'SELECT ip4 FROM dstm_bindings')).rows.map((r) => Number(r.ip4))).to.deep.equal([
        parseIPv4('192.0.2.1'),
      ]);
      expect((await cluster.sql(url, "SELECT value FROM dstm_meta WHERE key = 'epoch'")).rows[0].value).to.equal(
        epoch.toString(),
      );
    });

    it('export writes nothing: a database without a store is refused (exit 3, no schema made), an older schema is read as it is', async () => {
      const d = dir();
      const config = join(d, 'dstm.json');
      writeFileSync(config, JSON.stringify({ server: { pools: [POOL] } }));
      const empty = await cluster.createDatabase();
      const none = await runDstm(['leases', 'export', '--store', empty, '--config', config]);
      expect(none.code).to.equal(3);
      expect(none.stderr).to.match(/no dstm store in this database/);
      expect(none.stdout).to.equal('');
      expect((await cluster.sql(empty, "SELECT to_regclass('dstm_meta') AS t")).rows[0].t).to.equal(null);
      const url = await cluster.createDatabase();
      const s = await pgStore(url);
      await populate(s, 3, 13);
      await s.close();
      await cluster.sql(url, "UPDATE dstm_meta SET value = '3' WHERE key = 'schema_version'");
      const old = await runDstm(['leases', 'export', '--store', url, '--config', config]);
      expect(old.code, old.stderr).to.equal(0);
      expect(old.stdout.trim().split('\n')).to.have.length(3);
      expect(
        (await cluster.sql(url, "SELECT value FROM dstm_meta WHERE key = 'schema_version'")).rows[0].value,
      ).to.equal('3');
    });

    it('the commands: export from SQLite, import into PostgreSQL, a running server refused, errors as JSON', async () => {
      const d = dir();
      const src = sqlite(d);
      await populate(src, 20, 12);
      await src.close();
      const config = join(d, 'dstm.json');
      writeFileSync(
        config,
        JSON.stringify({ server: { pools: [POOL], tep: { ipv6: '2001:db8:1::1', ipv4: '192.0.2.254' } } }),
      );
      const out = await runDstm(['leases', 'export', '--state-dir', d, '--config', config]);
      expect(out.code, out.stderr).to.equal(0);
      expect(out.stdout.trim().split('\n')).to.have.length(20);
      const file = join(d, 'leases.jsonl');
      writeFileSync(file, out.stdout);
      const url = await cluster.createDatabase();
      const server = await startServer(['--store', url, '--config', config]);
      try {
        const refused = await runDstm(['leases', 'import', file, '--store', url, '--config', config, '--json']);
        expect(refused.code).to.equal(3);
        expect(JSON.parse(refused.stderr).error.message).to.match(/in use by dstm servers/);
      } finally {
        await server.stop();
      }
      const done = await runDstm(['leases', 'import', file, '--store', url, '--config', config, '--json']);
      expect(done.code, done.stderr).to.equal(0);
      const result = JSON.parse(done.stdout);
      expect(result).to.include({ action: 'import', imported: 20, replace: false });
      expect(result.epoch).to.match(/^\d+$/);
      const back = await runDstm(['leases', 'export', '--store', url, '--config', config]);
      expect(back.stdout).to.equal(out.stdout);
      // The server sees them all, through LIST.
      const s2 = await startServer(['--store', url, '--config', config]);
      try {
        const list = await runDstm(['leases', '--server', `[::1]:${s2.port}`, '--json']);
        expect(JSON.parse(list.stdout)).to.deep.equal(
          out.stdout
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l)),
        );
      } finally {
        await s2.stop();
      }
      writeFileSync(file, `${out.stdout}{"ipv4": "10.0.0.1"}\n`);
      const bad = await runDstm(['leases', 'import', file, '--state-dir', join(d, 'new'), '--config', config]);
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.match(new RegExp(`^dstm leases import: ${file}, line 21: no "ipv6"`));
      // Checked before the store is opened: not even an empty store was made.
      expect(existsSync(join(d, 'new'))).to.equal(false);
    });
  });
});
