// Logs under systemd: when stderr is the journal stream (JOURNAL_STREAM names its device and inode), every line
// starts with its syslog priority so that journald records PRIORITY and `journalctl -p err` finds the errors.
// A real child process writes to a real file standing in for the journal's stream; nothing is mocked but journald.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger, isJournalStream, PRIORITY } from '../../src/lib/log';
import { tsArgv } from '../support/dstm-procs';

describe('logger: journald priorities', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(join(tmpdir(), 'dstm-journal-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  let children = 0; // names the files in this run's own directory

  /** Runs a logger in a child whose stderr is `file`, with JOURNAL_STREAM as given; returns what it wrote. */
  function childLogs(journalStream: (file: string) => string | undefined, json: boolean): string[] {
    const file = join(dir, `stderr-${++children}`);
    writeFileSync(file, '');
    const script = join(dir, 'log.ts');
    writeFileSync(
      script,
      `import { createLogger } from ${JSON.stringify(resolve(__dirname, '../../src/lib/log'))};\n` +
        `const log = createLogger({ level: 'debug', json: ${json} });\n` +
        `log.debug('d'); log.info('i'); log.warn('w'); log.error('e', { why: 'x' });\n`,
    );
    const fd = openSync(file, 'a');
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.JOURNAL_STREAM;
    const announced = journalStream(file);
    if (announced !== undefined) env.JOURNAL_STREAM = announced;
    const [cmd, ...argv] = tsArgv(script);
    const r = spawnSync(cmd, argv, { env, stdio: ['ignore', 'ignore', fd] });
    closeSync(fd);
    expect(r.status).to.equal(0);
    return readFileSync(file, 'utf8').trim().split('\n');
  }
  const devIno = (file: string): string => {
    const st = statSync(file, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };

  it('prefixes <7> debug, <6> info, <4> warn, <3> error when stderr is the announced journal stream', () => {
    const lines = childLogs(devIno, true);
    expect(lines.map((l) => l.slice(0, 3))).to.deep.equal(['<7>', '<6>', '<4>', '<3>']);
    expect(JSON.parse(lines[3].slice(3))).to.include({ level: 'error', msg: 'e', why: 'x' });
    expect(childLogs(devIno, false)[3]).to.equal('<3>ERROR e why=x');
  });

  it('writes no prefix when JOURNAL_STREAM is absent, malformed or names another file (stderr redirected)', () => {
    const other = join(dir, 'other');
    writeFileSync(other, '');
    for (const announced of [() => undefined, () => 'garbage', () => devIno(other)]) {
      const lines = childLogs(announced, true);
      expect(lines).to.have.length(4);
      for (const l of lines) expect(l.startsWith('{'), l).to.equal(true);
    }
  });

  it('isJournalStream compares device and inode; an explicit journal option wins', () => {
    const f = join(dir, 'fd');
    writeFileSync(f, '');
    const fd = openSync(f, 'r');
    try {
      expect(isJournalStream(devIno(f), fd)).to.equal(true);
      expect(
        isJournalStream(
          devIno(f).replace(/:(\d+)$/, (_, i: string) => `:${BigInt(i) + 1n}`),
          fd,
        ),
      ).to.equal(false);
      expect(isJournalStream(undefined, fd)).to.equal(false);
    } finally {
      closeSync(fd);
    }
    let text = '';
    const stream = new Writable({ write: (c: Buffer, _e, cb) => ((text += c.toString()), cb()) });
    createLogger({ stream, json: false, journal: true, level: 'debug' }).warn('careful');
    expect(text).to.equal(`<${PRIORITY.warn}>WARN  careful\n`);
  });
});
