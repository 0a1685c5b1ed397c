// Issue 13, finding 1 on the TEP's side: a binding from the server's feed for one of the TEP host's own IPv4
// addresses is refused (a node holding it could send as the TEP: the TUN device accepts local sources).
import { expect } from 'chai';
import { networkInterfaces } from 'node:os';
import { Writable } from 'node:stream';
import { parseIPv4, parseIPv6, parsePrefix4 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { Tep } from '../../src/tep/tep';

describe('TEP bindings for its own addresses', () => {
  it('finding 1: the TEP refuses a binding for any of its own addresses', () => {
    const lines: string[] = [];
    const stream = new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) });
    const tep = new Tep({
      address: parseIPv6('fd00::1'),
      ipv4: parseIPv4('198.18.255.254'),
      pools: [parsePrefix4('198.18.0.0/16')],
      prefixes: [],
      statics: [],
      device: 'unused',
      pathMtu: 1500,
      log: createLogger({ level: 'warn', stream, json: true }),
    });
    const ends = Math.floor(Date.now() / 1000) + 600;
    tep.bind(parseIPv4('198.18.0.1'), parseIPv6('fd00::10'), ends);
    tep.bind(parseIPv4('198.18.255.254'), parseIPv6('fd00::11'), ends);
    // an address of this host's interfaces (lo's 127.0.0.1 at least)
    const local = Object.values(networkInterfaces())
      .flatMap((l) => l ?? [])
      .find((a) => a.family === 'IPv4')!.address;
    tep.bind(parseIPv4(local), parseIPv6('fd00::12'), ends);
    expect(tep.bindings.list().map((b) => b.ipv4)).to.deep.equal(['198.18.0.1']);
    expect(lines.filter((l) => l.includes("the address is the TEP's own"))).to.have.length(2);
  });
});
