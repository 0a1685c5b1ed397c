// The status/state names come from xdr/dstm.x and nowhere else: read the .x text here, independently of the
// generated code, and check the mapping against it both ways.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dstm_state, dstm_status } from '../../src/protocol/generated/dstm';
import { STATE, STATE_NAMES, STATUS, STATUS_NAMES, stateName, statusName } from '../../src/protocol/status';

/** enum NAME { A = 0, B = 1 } of xdr/dstm.x as [lower-case name without DSTM_, value] pairs. */
function enumOfX(name: string): [string, number][] {
  const x = readFileSync(join(__dirname, '../../xdr/dstm.x'), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  const body = new RegExp(`enum\\s+${name}\\s*\\{([^}]*)\\}`).exec(x)![1];
  return body.split(',').map((m) => {
    const [k, v] = m.split('=').map((s) => s.trim());
    return [k.replace(/^DSTM_/, '').toLowerCase(), Number(v)];
  });
}

describe('protocol status and state names', () => {
  for (const [label, e, byName, names, nameOf] of [
    ['dstm_status', dstm_status, STATUS, STATUS_NAMES, statusName],
    ['dstm_state', dstm_state, STATE, STATE_NAMES, stateName],
  ] as const) {
    it(`${label}: every member of the .x enum has its name, in order, and back`, () => {
      const x = enumOfX(label);
      expect(x.length).to.equal(Object.keys(e).length);
      expect(names).to.deep.equal(x.map(([n]) => n));
      for (const [n, v] of x) {
        expect((byName as Record<string, number>)[n], n).to.equal(v);
        expect(nameOf(v)).to.equal(n);
      }
    });
  }

  it('an unknown status reads as bad_request; an unknown state is an error', () => {
    expect(statusName(99)).to.equal('bad_request');
    expect(() => stateName(7)).to.throw(RangeError, /unknown binding state 7/);
  });
});
