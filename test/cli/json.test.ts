// The JSON contract of dstm(1) (JSON OUTPUT), checked on the real output of every command that has --json, run
// against a real server on loopback, a real `dstm request --hold` (for dstm status) and a real Tep's statistics on a
// real control socket (for dstm tep stats; no device is opened, so no root is needed), with the compiled CLI:
// snake_case keys, times in whole seconds since 1970, a binding with the same keys everywhere, an error as one JSON
// object on stderr.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { serveControl } from '../../src/lib/control';
import { parseIPv4, parseIPv6, parsePrefix4 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { STATE_NAMES } from '../../src/protocol/status';
import { Tep } from '../../src/tep/tep';
import { loadCommands, ROOT } from '../docs/commands';
import { cliUnavailable, dstmArgv } from '../support/dstm-procs';
import { skipIf } from '../support/skip';
import { freePort } from '../server/helpers';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without what would point dstm at another server or configuration file. */
function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete e.DSTM_CONFIG;
  delete e.DSTM_SERVER;
  return e;
}

function dstm(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const [cmd, ...argv] = dstmArgv(...args);
    const p = spawn(cmd, argv, { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Spawns a long-running dstm and resolves with it once a line of `stream` matches `re`. */
function daemon(
  args: string[],
  stream: 'stdout' | 'stderr',
  re: RegExp,
): Promise<{ proc: ChildProcess; line: string }> {
  const [cmd, ...argv] = dstmArgv(...args);
  const proc = spawn(cmd, argv, { env: env({ DSTM_LOG_LEVEL: 'info' }), stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    const seen: string[] = [];
    createInterface({ input: proc[stream]! }).on('line', (line) => {
      seen.push(line);
      if (re.test(line)) resolve({ proc, line });
    });
    proc.once('exit', (code) => reject(new Error(`dstm ${args[0]} exited (${code}): ${seen.join('\n')}`)));
  });
}

const SNAKE = /^[a-z][a-z0-9]*(_[a-z0-9]+)*$/;
const BINDING_KEYS = ['ipv4', 'ipv6', 'tep4', 'tep6', 'starts', 'ends'];
const NOW = Math.floor(Date.now() / 1000);

/** Every contract violation in a parsed document, as "path: problem" lines. */
function violations(doc: unknown, path = '$'): string[] {
  if (Array.isArray(doc)) return doc.flatMap((v, i) => violations(v, `${path}[${i}]`));
  if (doc === null || typeof doc !== 'object') return [];
  const o = doc as Record<string, unknown>;
  const bad: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (!SNAKE.test(k)) bad.push(`${path}.${k}: key is not snake_case`);
    if (
      (k === 'starts' || k === 'ends') &&
      v !== null &&
      !(Number.isInteger(v) && (v as number) > NOW - 86_400 && (v as number) < NOW + 10 * 86_400)
    ) {
      bad.push(`${path}.${k}: ${String(v)} is not whole seconds since 1970 near now`);
    }
    bad.push(...violations(v, `${path}.${k}`));
  }
  if ('ipv4' in o && 'ipv6' in o) {
    for (const k of BINDING_KEYS) if (!(k in o)) bad.push(`${path}: a binding without ${k}`);
    if ('state' in o && !STATE_NAMES.includes(o.state as never))
      bad.push(`${path}.state: ${String(o.state)} is not a state`);
    for (const k of ['extend', 'keep'])
      if (k in o && !Number.isInteger(o[k])) bad.push(`${path}.${k}: not whole seconds`);
    for (const k of ['address', 'local', 'node'])
      if (k in o) bad.push(`${path}.${k}: a binding names this ipv4 or ipv6`);
  }
  return bad;
}

/** Parses a command's --json stdout (JSON lines for request --hold) and checks the contract; returns the documents. */
function checked(r: Run, what: string): Record<string, unknown>[] {
  expect(r.code, `${what}: ${r.stderr}`).to.equal(0);
  const docs =
    r.stdout.trim().startsWith('[') || r.stdout.trim().startsWith('{\n')
      ? [JSON.parse(r.stdout)]
      : r.stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l));
  expect(violations(docs), what).to.deep.equal([]);
  return docs;
}

function checkedError(r: Run, code: number, command: string): void {
  expect(r.code, r.stderr).to.equal(code);
  expect(r.stdout, 'nothing on stdout').to.equal('');
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).to.have.length(1);
  const e = JSON.parse(lines[0]) as { error: { message: unknown; exit: unknown; command: unknown } };
  expect(e.error.message).to.be.a('string').with.length.greaterThan(0);
  expect(e.error).to.include({ exit: code, command });
}

describe('the JSON contract of dstm(1)', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(join(tmpdir(), 'dstm-json-'));
  const server: string[] = []; // --server and the port the server listens on, once chosen
  const tested = new Set<string>();
  const errored = new Set<string>();
  let srv: ChildProcess | undefined;
  let node: ChildProcess | undefined;
  let control: Server | undefined;

  before(async function () {
    skipIf(this, cliUnavailable());
    const port = await freePort();
    server.push('--server', `[::1]:${port}`);
    ({ proc: srv } = await daemon(
      [
        'server',
        '--listen',
        `[::1]:${port}`,
        '--pool',
        '198.51.100.0/29',
        '--tep',
        '2001:db8::1,192.0.2.1',
        '--state-dir',
        join(dir, 'state'),
      ],
      'stderr',
      /"msg":"listening"/,
    ));
  });

  after(() => {
    for (const p of [node, srv]) p?.kill('SIGTERM');
    control?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('dstm request, release and leases: bindings with the same keys, times in seconds', async () => {
    const [lease] = checked(await dstm('request', '--json', ...server), 'request');
    expect(lease).to.include({ ipv6: '::1', tep6: '2001:db8::1', tep4: '192.0.2.1' });
    const [listed] = checked(await dstm('leases', '--json', ...server), 'leases');
    expect(listed).to.deep.include({
      ipv4: lease.ipv4,
      ipv6: '::1',
      tep4: '192.0.2.1',
      tep6: '2001:db8::1',
      starts: lease.starts,
      ends: lease.ends,
      state: 'active',
    });
    const [released] = checked(await dstm('release', '--json', ...server), 'release');
    expect(released).to.include({ released: true, ipv4: lease.ipv4, ipv6: '::1' });
    const [allocated] = checked(
      await dstm('leases', 'allocate', '2001:db8::42', '--address', '198.51.100.3', '--json', ...server),
      'leases allocate',
    );
    expect(allocated).to.include({ action: 'allocate', ipv4: '198.51.100.3', ipv6: '2001:db8::42' });
    const [revoked] = checked(await dstm('leases', 'revoke', '2001:db8::42', '--json', ...server), 'leases revoke');
    expect(revoked).to.include({ action: 'revoke', ipv4: '198.51.100.3' });
    const [stored] = checked(await dstm('leases', '--state-dir', join(dir, 'state'), '--json'), 'leases --state-dir');
    expect((stored as unknown as { state: string }[]).map((b) => b.state)).to.include('revoked');
    ['request', 'release', 'leases'].forEach((c) => tested.add(c));
  });

  it('dstm leases export: one binding per line; dstm leases import: one object; errors as JSON', async () => {
    const config = join(dir, 'dstm.json');
    writeFileSync(
      config,
      JSON.stringify({ server: { pools: ['198.51.100.0/29'], tep: { ipv6: '2001:db8::1', ipv4: '192.0.2.1' } } }),
    );
    await dstm('request', ...server);
    // Read-only from the running server's store.
    const exported = await dstm('leases', 'export', '--state-dir', join(dir, 'state'), '--config', config, '--json');
    const lines = checked(exported, 'leases export');
    expect(lines.length).to.be.greaterThan(0);
    for (const l of lines) expect(l).to.have.keys('ipv4', 'ipv6', 'tep4', 'tep6', 'starts', 'ends', 'state');
    const file = join(dir, 'leases.jsonl');
    writeFileSync(file, exported.stdout);
    const restore = ['--state-dir', join(dir, 'restored'), '--config', config, '--json'];
    const [imported] = checked(await dstm('leases', 'import', file, ...restore), 'leases import');
    expect(imported).to.include({ action: 'import', imported: lines.length, replace: false });
    tested.add('leases:export').add('leases:import');
    const runs = await Promise.all([
      dstm('leases', 'export', '--state-dir', join(dir, 'none'), '--json'),
      dstm('leases', 'import', file, ...restore),
      dstm('leases', 'import', join(dir, 'none.jsonl'), ...restore),
      dstm('leases', 'import', dir, ...restore),
    ]);
    checkedError(runs[0], 3, 'leases export');
    checkedError(runs[1], 2, 'leases import');
    expect(JSON.parse(runs[1].stderr).error.message).to.match(/line 1: .* is bound in the store already/);
    checkedError(runs[2], 2, 'leases import');
    expect(JSON.parse(runs[2].stderr).error.message).to.equal(`${join(dir, 'none.jsonl')}: ENOENT`);
    // a directory opens, and fails at the first read: named all the same
    checkedError(runs[3], 2, 'leases import');
    expect(JSON.parse(runs[3].stderr).error.message).to.equal(`${dir}: EISDIR`);
    errored.add('leases:export').add('leases:import');
  });

  it('dstm request --hold: one binding per line with its event; dstm status: the held lease as a binding', async () => {
    const sock = join(dir, 'node.sock');
    let line: string;
    ({ proc: node, line } = await daemon(
      ['request', '--hold', '--json', '--control', sock, ...server],
      'stdout',
      /"event":"lease"/,
    ));
    const [held] = checked({ code: 0, stdout: line, stderr: '' }, 'request --hold');
    const [status] = checked(await dstm('status', '--json', '--control', sock), 'status');
    expect(status.lease).to.include({ ipv4: held.ipv4, ipv6: held.ipv6, starts: held.starts, ends: held.ends });
    tested.add('status');
  });

  it('dstm tep stats: counters in snake_case, bindings with starts and ends in seconds (not milliseconds)', async () => {
    const tep = new Tep({
      address: parseIPv6('2001:db8::1'),
      ipv4: parseIPv4('192.0.2.1'),
      pools: [parsePrefix4('198.51.100.0/29')],
      prefixes: [],
      statics: [{ ipv4: parseIPv4('198.51.100.6'), ipv6: parseIPv6('2001:db8::6') }],
      device: 'unused',
      pathMtu: 1500,
      log: createLogger({ level: 'error' }),
    });
    tep.bind(parseIPv4('198.51.100.2'), parseIPv6('2001:db8::2'), NOW + 600, NOW - 5);
    const sock = join(dir, 'tep.sock');
    control = await serveControl(sock, () => tep.stats());
    const [s] = checked(await dstm('tep', 'stats', '--json', '--control', sock), 'tep stats');
    expect(s.forwarded).to.have.keys('to_ipv4', 'to_ipv6', 'bytes_to_ipv4', 'bytes_to_ipv6');
    expect(s.bindings).to.deep.equal([
      {
        ipv4: '198.51.100.2',
        ipv6: '2001:db8::2',
        tep4: '192.0.2.1',
        tep6: '2001:db8::1',
        starts: NOW - 5,
        ends: NOW + 600,
        source: 'server',
        forwarded: { to_ipv4: 0, to_ipv6: 0, bytes_to_ipv4: 0, bytes_to_ipv6: 0 },
      },
      {
        ipv4: '198.51.100.6',
        ipv6: '2001:db8::6',
        tep4: '192.0.2.1',
        tep6: '2001:db8::1',
        starts: null,
        ends: null,
        source: 'static',
        forwarded: { to_ipv4: 0, to_ipv6: 0, bytes_to_ipv4: 0, bytes_to_ipv6: 0 },
      },
    ]);
    tested.add('tep:stats');
  });

  it('dstm version: {version, architecture, node_version}; an unknown flag as the one error object', async () => {
    const [v] = checked(await dstm('version', '--json'), 'version');
    expect(v).to.deep.equal({
      version: (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
      architecture: `${process.platform}-${process.arch}`,
      node_version: process.version,
    });
    tested.add('version');
    checkedError(await dstm('version', '--json', '--verbose'), 2, 'version');
    errored.add('version');
  });

  it('an error under --json is one JSON object on stderr with the exit code, nothing on stdout', async () => {
    const closed = ['--server', `[::1]:${await freePort()}`, '--timeout', '300'];
    writeFileSync(join(dir, 'broken.json'), '{"client": }');
    const runs = await Promise.all([
      dstm('request', '--json', ...closed),
      dstm('release', '--json', '--address', '198.51.100.256', ...server),
      dstm('leases', 'revoke', '--json', ...server),
      dstm('status', '--json', '--control', join(dir, 'none.sock')),
      dstm('tep', 'stats', '--json', '--control', join(dir, 'none.sock')),
      dstm('release', '--json', '--no-such-flag'),
      dstm('request', '--json', '--config', join(dir, 'broken.json'), ...server),
      dstm('leases', '--json', '--config', join(dir, 'none.json'), ...server),
      dstm('release', '--json', '--tls', '--tls-ca', join(dir, 'none.pem'), ...server),
      // port 0 names no server; a multicast address is one the kernel will not connect a UDP socket to
      dstm('request', '--json', '--server', '[::1]:0'),
      dstm('request', '--json', '--server', '[ff02::1]:3786'),
      // the other daemon's control socket (the node's and the TEP's of the tests above)
      dstm('tep', 'stats', '--json', '--control', join(dir, 'node.sock')),
      dstm('status', '--json', '--control', join(dir, 'tep.sock')),
    ]);
    checkedError(runs[0], 7, 'request');
    checkedError(runs[1], 2, 'release');
    checkedError(runs[2], 2, 'leases revoke');
    checkedError(runs[3], 7, 'status');
    checkedError(runs[4], 7, 'tep stats');
    checkedError(runs[5], 2, 'release');
    // a configuration file that is not JSON, or is not there: a configuration error, as for the daemons
    checkedError(runs[6], 2, 'request');
    expect(JSON.parse(runs[6].stderr).error.message).to.match(/broken\.json: not valid JSON at line 1, column 12/);
    checkedError(runs[7], 2, 'leases list');
    expect(JSON.parse(runs[7].stderr).error.message).to.match(/none\.json: cannot read the configuration file: ENOENT/);
    // a TLS file named on the command line that cannot be read: a configuration error too, not an internal one
    checkedError(runs[8], 2, 'release');
    expect(JSON.parse(runs[8].stderr).error.message).to.match(/cannot read the TLS CA file .*none\.pem: ENOENT/);
    checkedError(runs[9], 2, 'request');
    expect(JSON.parse(runs[9].stderr).error.message).to.match(/--server\[0\]: .* \(port 0 is no server's port\)/);
    checkedError(runs[10], 7, 'request');
    expect(JSON.parse(runs[10].stderr).error.message).to.match(/cannot reach \[ff02::1\]:3786\/udp: connect EINVAL/);
    checkedError(runs[11], 7, 'tep stats');
    expect(JSON.parse(runs[11].stderr).error.message).to.match(/node\.sock: the answer is not a TEP's statistics/);
    checkedError(runs[12], 7, 'status');
    expect(JSON.parse(runs[12].stderr).error.message).to.match(/tep\.sock: the answer is not a node's statistics/);
    ['request', 'release', 'leases', 'status', 'tep:stats'].forEach((c) => errored.add(c));
    expect(JSON.parse(runs[5].stderr).error.message).to.match(/--no-such-flag/);
  });

  it('covers every command that has --json', async () => {
    const withJson = (await loadCommands()).filter((c) => 'json' in c.flags).map((c) => c.id);
    expect([...tested].sort(), 'output checked').to.deep.equal(withJson.sort());
    expect([...errored].sort(), 'error checked').to.deep.equal(withJson.sort());
  });
});
