// DSTM_LOG_LEVEL set but empty is as if unset, for every command: server and tep read it through their settings
// (an empty variable stands in for nothing), and createLogger and request --hold's --log-level must agree.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { envLevel } from '../../src/cli/daemon-cli';
import { createLogger } from '../../src/lib/log';

describe('DSTM_LOG_LEVEL=""', () => {
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.DSTM_LOG_LEVEL;
    process.env.DSTM_LOG_LEVEL = '';
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.DSTM_LOG_LEVEL;
    else process.env.DSTM_LOG_LEVEL = saved;
  });

  it('is unset: the logger writes info and above', () => {
    let text = '';
    const stream = new Writable({ write: (c: Buffer, _e, cb) => ((text += c.toString()), cb()) });
    const log = createLogger({ stream, json: true });
    log.debug('hidden');
    log.info('shown');
    expect(text).to.contain('"shown"').and.not.contain('hidden');
  });

  it('is no --log-level for request --hold; a bad value is refused naming the variable', () => {
    expect(envLevel()).to.equal(undefined);
    expect(envLevel({ DSTM_LOG_LEVEL: 'warn' })).to.equal('warn');
    expect(() => envLevel({ DSTM_LOG_LEVEL: 'loud' })).to.throw(/^DSTM_LOG_LEVEL: "loud" is not valid/);
  });
});
