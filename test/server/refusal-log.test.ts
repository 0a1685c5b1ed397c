// The bounds on refusal log lines (src/server/refusal-log.ts): once per reason and key, at most REFUSAL_LOG_BURST per
// reason over any number of keys, and the rest summed in one line an interval after the first of them. The server
// test (test/server/server.test.ts) floods a real server from real sources; here the interval is shortened.
import { expect } from 'chai';
import { REFUSAL_LOG_BURST, RefusalLog } from '../../src/server/refusal-log';
import { sleep } from './helpers';
import { captureLog } from '../support/log-capture';

describe('refusal log lines', () => {
  it('admits a key once per interval and a reason REFUSAL_LOG_BURST times over all keys; sums the rest once', async () => {
    const { records, log } = captureLog();
    const r = new RefusalLog(log, 0.3);
    const admitted = (reason: string, keys: string[]): number => keys.filter((k) => r.admit(reason, k)).length;
    const many = Array.from({ length: 500 }, (_, i) => `2001:db8::${i.toString(16)}`);
    expect(admitted('not_allowed', many), 'a flood from 500 sources').to.equal(REFUSAL_LOG_BURST);
    expect(admitted('no_binding', ['2001:db8::1', '2001:db8::1', '2001:db8::1']), 'one source again').to.equal(1);
    expect(admitted('no_binding', ['2001:db8::2']), 'another reason has its own share').to.equal(1);
    expect(records, 'the summary waits for the interval').to.deep.equal([]);
    await sleep(400);
    expect(records.map((x) => [x.msg, x.by_reason])).to.deep.equal([
      ['refusals not logged', { not_allowed: 500 - REFUSAL_LOG_BURST, no_binding: 2 }],
    ]);
    // After the interval the key and the reason have their tokens back, and the count starts again.
    expect(admitted('no_binding', ['2001:db8::1'])).to.equal(1);
    await sleep(400);
    expect(records).to.have.length(1);
  });

  it('writes and counts nothing when info is not logged', async () => {
    const { records, log } = captureLog('warn');
    const r = new RefusalLog(log, 0.1);
    expect(r.admit('not_allowed', '2001:db8::1')).to.equal(false);
    expect(r.admit('not_allowed', '2001:db8::1')).to.equal(false);
    await sleep(200);
    expect(records).to.deep.equal([]);
  });
});
