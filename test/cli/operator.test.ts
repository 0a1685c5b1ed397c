// What an operator expects of any command line tool (issue 13, "Operator basics"), run on the compiled CLI: help and
// version every usual way, a typo answered with the nearest command, an unknown flag with one line (not the whole
// help), flags with one meaning (old names kept as warned aliases), --program in hex, [IPV6]:PORT examples quoted,
// and a non-root first start told what to do.
import { expect } from 'chai';
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCommands, ROOT } from '../docs/commands';
import { cliUnavailable, runDstmSync } from '../support/dstm-procs';
import { skipIf } from '../support/skip';
import { parseUint32 } from '../../src/cli/flags';
import { editDistance, suggestions } from '../../src/cli/not-found';
import { freePort } from '../server/helpers';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

describe('operator basics', function () {
  this.timeout(120_000);
  before(function () {
    skipIf(this, cliUnavailable());
  });

  it('help: dstm help, dstm help COMMAND, --help and -h print the same help', () => {
    const list = runDstmSync(['help']);
    expect(list.code, list.stderr).to.equal(0);
    for (const c of ['server', 'request', 'leases', 'tep', 'help', 'version']) expect(list.stdout).to.include(c);
    const byHelp = runDstmSync(['help', 'tep', 'stats']);
    expect(byHelp.code).to.equal(0);
    expect(byHelp.stdout).to.match(/USAGE\s+\$ dstm tep stats/);
    for (const flag of ['--help', '-h']) expect(runDstmSync(['tep', 'stats', flag]).stdout).to.equal(byHelp.stdout);
    // an unknown command after help: one line with the nearest commands, exit 2 (not a stack trace, exit 1)
    const bad = runDstmSync(['help', 'relase']);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.equal(
      "dstm help: 'relase' is not a dstm command. Did you mean 'dstm release'? 'dstm help' lists them.\n",
    );
  });

  it('version: dstm version, --version and -v print the package version', () => {
    for (const args of [['version'], ['--version'], ['-v']]) {
      const r = runDstmSync(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).to.equal(0);
      expect(r.stdout.trim()).to.match(new RegExp(`^dstm/${VERSION.replace(/\./g, '\\.')} `));
    }
  });

  it('a mistyped command: exit 2, one line with the nearest commands; nothing near: no guess', () => {
    let r = runDstmSync(['relase']);
    expect(r.code).to.equal(2);
    expect(r.stderr.trim().split('\n')).to.deep.equal([
      "dstm: 'relase' is not a dstm command. Did you mean 'dstm release'? 'dstm help' lists them.",
    ]);
    r = runDstmSync(['frobnicate']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.not.include('Did you mean');
    r = runDstmSync(['statu', '--json']);
    expect(JSON.parse(r.stderr)).to.deep.equal({
      error: {
        message: "'statu' is not a dstm command. Did you mean 'dstm status'? 'dstm help' lists them.",
        exit: 2,
        command: '',
      },
    });
  });

  it('suggestions: within a third of the word, nearest first, prefixes and swapped letters count', () => {
    const ids = ['completion', 'leases', 'release', 'request', 'server', 'static', 'status', 'tep', 'tep stats'];
    expect(editDistance('relaese', 'release')).to.equal(1);
    expect(suggestions('relaese', ids)).to.deep.equal(['release']);
    expect(suggestions('stat', ids)).to.deep.equal(['static', 'status']);
    expect(suggestions('sever', ids)).to.deep.equal(['server']);
    expect(suggestions('xyz', ids)).to.deep.equal([]);
  });

  it('an unknown flag or a bad value: exit 2, one line naming it and one pointing at --help, not the help', () => {
    let r = runDstmSync(['release', '--bogus']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.equal(
      "dstm release: Nonexistent flag: --bogus\nTry 'dstm release --help' for more information.\n",
    );
    r = runDstmSync(['request', '--transport', 'sctp']);
    expect(r.code).to.equal(2);
    expect(r.stderr.trim().split('\n')).to.have.length(2);
    expect(r.stderr).to.match(/^dstm request: Expected --transport=sctp to be one of: udp, tcp\n/);
  });

  it('--program takes decimal and 0x hexadecimal, and refuses anything else with exit 2', () => {
    const check = (p: string) => runDstmSync(['server', '--check', '--program', p, '--state-dir', '/tmp']);
    for (const p of ['0x2D53544E', '760435790']) {
      const r = check(p);
      expect(r.code, r.stderr).to.equal(0);
      expect((JSON.parse(r.stdout) as { server: { program: number } }).server.program).to.equal(0x2d53544e);
    }
    const bad = check('0x1FFFFFFFF');
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.match(/^dstm server: --program: 0x1FFFFFFFF is not a number from 0 to 4294967295/);
    expect(parseUint32('0xffffffff')).to.equal(0xffffffff);
    expect(() => parseUint32('12abc')).to.throw(/not a number/);
  });

  it('one meaning per flag noun: dstm tep --ipv6 (--address still works, with a warning); request --device', async () => {
    const tep = ['tep', '--check', '--ipv4', '192.0.2.1', '--pool', '198.51.100.0/24'];
    const now = runDstmSync([...tep, '--ipv6', '2001:db8:1::1']);
    expect(now.code, now.stderr).to.equal(0);
    expect(now.stderr).to.equal('');
    const old = runDstmSync([...tep, '--address', '2001:db8:1::1']);
    expect(old.code, old.stderr).to.equal(0);
    expect(old.stderr).to.match(/"--address" flag has been deprecated\. Use "--ipv6"/);
    expect(old.stdout).to.equal(now.stdout);
    // --routes needs --device; the old name --dti satisfies it too
    expect(runDstmSync(['request', '--hold', '--routes', 'default']).stderr).to.match(/--device/);
    // the device name is checked as dstm tep's is, before anything is opened: exit 2 naming the flag, not the kernel's
    // EINVAL as "cannot start"
    for (const name of ['dti 0', 'a-name-of-16-byte']) {
      const bad = runDstmSync(['request', '--hold', '--device', name, '--server', '[::1]:1', '--timeout', '100']);
      expect(bad.code, bad.stderr).to.equal(2);
      expect(bad.stderr).to.match(/^dstm request: --device: ".*" is not valid: expected an interface name of 1 to 15/);
    }
    const commands = await loadCommands();
    const nouns = new Map<string, Set<string>>();
    for (const c of commands)
      for (const f of Object.values(c.flags))
        if (!f.hidden) nouns.set(f.name, (nouns.get(f.name) ?? new Set()).add(c.id));
    expect(nouns.get('dti'), '--dti is an alias only').to.equal(undefined);
    expect([...(nouns.get('address') ?? [])].sort()).to.deep.equal(['leases', 'release', 'static']);
  });

  it('request: the flags of --hold (--control, --log-level, --device) are refused without it; DSTM_LOG_LEVEL is not', async () => {
    for (const flag of [
      ['--control', '/tmp/node.sock'],
      ['--log-level', 'debug'],
      ['--device', 'dti9'],
    ]) {
      const r = runDstmSync(['request', ...flag]);
      expect(r.code, r.stderr).to.equal(2);
      expect(r.stderr).to.equal(
        `dstm request: All of the following must be provided when using ${flag[0]}: --hold\n` +
          "Try 'dstm request --help' for more information.\n",
      );
    }
    // the variable is for --hold too, but set in the environment it does not stop a plain request
    const server = `[::1]:${await freePort()}`;
    const plain = runDstmSync(['request', '--server', server, '--timeout', '200'], {
      env: { DSTM_LOG_LEVEL: 'debug' },
    });
    expect(plain.code, plain.stderr).to.equal(7);
    const bad = runDstmSync(['request', '--hold', '--server', server], { env: { DSTM_LOG_LEVEL: 'loud' } });
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.match(/^dstm request: DSTM_LOG_LEVEL: "loud" is not valid/);
  });

  it('leases --state-dir refuses the flags of the server call it replaces (--server, --tls, ...); DSTM_SERVER is ignored', () => {
    const dir = '/nonexistent/dstm-state';
    const calls: [string[], string][] = [
      [['--server', '[::1]:3786'], '--server=[::1]:3786'],
      [['--tls'], '--tls=true'],
      [['--timeout', '100'], '--timeout=100'],
    ];
    for (const [flag, shown] of calls) {
      const r = runDstmSync(['leases', '--state-dir', dir, ...flag]);
      expect(r.code, r.stderr).to.equal(2);
      expect(r.stderr).to.equal(
        `dstm leases: ${shown} cannot also be provided when using --state-dir\n` +
          "Try 'dstm leases --help' for more information.\n",
      );
    }
    const r = runDstmSync(['leases', '--state-dir', dir], { env: { DSTM_SERVER: '[::1]:3786' } });
    expect(r.stderr).to.match(/^dstm leases list: no DSTM store in \/nonexistent\/dstm-state /);
  });

  it('help texts: --json of leases and release says nothing of --hold; descriptions have no hard line breaks', async () => {
    for (const c of await loadCommands()) {
      const json = c.flags.json;
      if (json && c.id !== 'request')
        expect(`${json.summary ?? ''}${json.description ?? ''}`, c.id).to.not.include('--hold');
      for (const para of (c.description ?? '').split('\n\n')) {
        expect(para.trim().split('\n'), `${c.id}: a line break inside a paragraph of its description`).to.have.length(
          1,
        );
      }
    }
  });

  it('every [IPV6]:PORT in a command line of --help, the man pages and the README is quoted', async () => {
    const lines: { where: string; line: string }[] = [];
    for (const c of await loadCommands())
      for (const e of c.examples ?? [])
        lines.push({ where: `dstm ${c.id} example`, line: typeof e === 'string' ? e : e.command });
    for (const f of readdirSync(join(ROOT, 'man'))) {
      readFileSync(join(ROOT, 'man', f), 'utf8')
        .split('\n')
        .forEach((line) => lines.push({ where: `man/${f}`, line: line.replace(/\\-/g, '-') }));
    }
    readFileSync(join(ROOT, 'README.md'), 'utf8')
      .split('\n')
      .forEach((line) => lines.push({ where: 'README.md', line }));
    const bare = /(^|\s)\[[0-9a-fA-F:.]*\]:(\d+|\$\{[A-Z_]+\})/;
    const commandLines = lines.filter(({ line }) => /(^|\s|\$ )(dstm|<%= config\.bin %>) .*--[a-z]/.test(line));
    expect(commandLines.length).to.be.greaterThan(20);
    expect(
      commandLines.filter(({ line }) => bare.test(line)).map(({ where, line }) => `${where}: ${line}`),
    ).to.deep.equal([]);
  });

  it('a first start without root: cannot create /var/lib/dstm, says once to use --state-dir or run as root (exit 3)', async function () {
    skipIf(this, process.getuid?.() === 0 ? undefined : 'needs root to run the CLI as nobody');
    const port = await freePort();
    const asNobody = (...flags: string[]) =>
      runDstmSync(['server', '--listen', `[::1]:${port}`, ...flags], {
        uid: 65534,
        gid: 65534,
        cwd: '/tmp',
        env: { HOME: '/tmp' },
      });
    const advice = 'give a directory this user can write with --state-dir (or server.state_dir), or run as root';
    let r = asNobody();
    expect(r.code, r.stderr).to.equal(3);
    expect(r.stderr).to.equal(
      `dstm server: cannot start: state directory /var/lib/dstm: cannot create /var/lib/dstm: EACCES; ${advice}\n`,
    );
    // a directory that exists but is root's: the store cannot be opened, and the advice is given once too
    const dir = mkdtempSync(join(tmpdir(), 'dstm-root-'));
    try {
      chmodSync(dir, 0o755);
      r = asNobody('--state-dir', dir);
      expect(r.code, r.stderr).to.equal(3);
      expect(r.stderr).to.match(/^dstm server: cannot start: /);
      expect(r.stderr).to.have.string(`; ${dir} is not writable by this user: ${advice}\n`);
      expect(r.stderr.split('run as root')).to.have.length(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a state directory whose dstm.lock this user cannot write: refused (exit 3) naming the lock, never shared', async function () {
    skipIf(this, process.getuid?.() === 0 ? undefined : 'needs root to run the CLI as nobody');
    // SQLite opens a file it cannot write read-only, where a lock is only ever shared: every server would get it.
    const dir = mkdtempSync(join(tmpdir(), 'dstm-lock-'));
    try {
      chownSync(dir, 65534, 65534);
      writeFileSync(join(dir, 'dstm.lock'), '', { mode: 0o644 });
      const r = runDstmSync(['server', '--state-dir', dir, '--listen', `[::1]:${await freePort()}`], {
        uid: 65534,
        gid: 65534,
        cwd: '/tmp',
        env: { HOME: '/tmp' },
        timeout: 20_000,
      });
      expect(r.code, r.stderr).to.equal(3);
      expect(r.stderr).to.have.string(`cannot take the lock ${join(dir, 'dstm.lock')}: this user cannot write it`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
