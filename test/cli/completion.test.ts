// `dstm completion`: the bash script, sourced in a real bash, completes commands, subcommands, flags and flag
// choices from the command metadata; the zsh script is valid zsh.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCommands } from '../docs/commands';
import { runDstmSync } from '../support/dstm-procs';
import { skipIf } from '../support/skip';

describe('dstm completion', function () {
  this.timeout(60_000);
  let dir: string;
  let bashScript: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'dstm-completion-'));
    const r = runDstmSync(['completion', 'bash']);
    expect(r.code, r.stderr).to.equal(0);
    bashScript = join(dir, 'dstm.bash');
    writeFileSync(bashScript, r.stdout);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** What bash offers for the command line `line` (the cursor at its end; a trailing space starts a new word). */
  function complete(line: string): string[] {
    const words = line.split(' ');
    const script = `source "$1"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _dstm; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', script, 'bash', bashScript], { encoding: 'utf8', cwd: dir });
    expect(r.stderr).to.equal('');
    expect(r.status).to.equal(0);
    return r.stdout
      .split('\n')
      .filter((l) => l !== '')
      .sort();
  }

  it('completes every top-level command from the metadata', async () => {
    const top = [...new Set((await loadCommands()).map((c) => c.id.split(':')[0]))].sort();
    expect(top).to.include.members(['help', 'version']);
    expect(complete('dstm ')).to.deep.equal(top);
    expect(top).to.include.members(['completion', 'release', 'request', 'server', 'tep']);
    expect(complete('dstm re')).to.deep.equal(['release', 'request']);
  });

  it('completes subcommands and argument choices', () => {
    expect(complete('dstm tep st')).to.deep.equal(['stats']);
    expect(complete('dstm completion ')).to.deep.equal(['bash', 'zsh']);
    expect(complete('dstm leases r')).to.deep.equal(['revoke']);
    expect(complete('dstm help re')).to.deep.equal(['release', 'request']);
  });

  it('completes the new flag names, not the old aliases', () => {
    expect(complete('dstm tep --ip')).to.deep.equal(['--ipv4', '--ipv6']);
    expect(complete('dstm tep --addr')).to.deep.equal([]);
    expect(complete('dstm request --dev')).to.deep.equal(['--device']);
    expect(complete('dstm request --dt')).to.deep.equal([]);
  });

  it("completes a command's flags, not another command's", () => {
    expect(complete('dstm tep stats --')).to.deep.equal(['--control', '--json']);
    const server = complete('dstm server --');
    expect(server).to.include.members(['--listen', '--pool', '--state-dir', '--check']);
    expect(server).to.not.include('--hold');
    expect(complete('dstm request --ho')).to.deep.equal(['--hold']);
  });

  it('completes --no-NAME for the booleans that have it, and only for them', () => {
    expect(complete('dstm tep --no-')).to.deep.equal(['--no-offload', '--no-unreachable']);
    expect(complete('dstm tep --of')).to.deep.equal(['--offload']);
    expect(complete('dstm request --no-')).to.deep.equal(['--no-offload']);
    expect(complete('dstm server --no-')).to.deep.equal([]);
  });

  it("completes a flag's choices and skips flag values when finding the command", () => {
    expect(complete('dstm request --transport ')).to.deep.equal(['tcp', 'udp']);
    expect(complete('dstm request --server [::1]:3786 --tr')).to.deep.equal(['--transport']);
  });

  it('completes file names for a flag value without choices', () => {
    writeFileSync(join(dir, 'dstm.json'), '{}');
    expect(complete('dstm server --config dstm.j')).to.deep.equal(['dstm.json']);
  });

  it('zsh: the script is valid zsh and defines the completion function', function () {
    const r = runDstmSync(['completion', 'zsh']);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.split('\n')[0]).to.equal('#compdef dstm');
    skipIf(this, spawnSync('zsh', ['--version']).error ? 'zsh is not installed' : undefined);
    const file = join(dir, '_dstm');
    writeFileSync(file, r.stdout);
    const syntax = spawnSync('zsh', ['-n', file], { encoding: 'utf8' });
    expect(syntax.stderr).to.equal('');
    expect(syntax.status).to.equal(0);
    // loaded by compinit from $fpath, as an installed completion is
    const load = spawnSync(
      'zsh',
      ['-f', '-c', `fpath=(${dir} $fpath); autoload -Uz compinit; compinit -u -D; print -r -- $_comps[dstm]`],
      { encoding: 'utf8' },
    );
    expect(load.stdout.trim()).to.equal('_dstm');
  });

  it('refuses an unknown shell with exit code 2', () => {
    const r = runDstmSync(['completion', 'fish']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/fish/);
  });
});
