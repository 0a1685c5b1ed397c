// Issue 13, finding 1 on the TEP's side: a binding from the server's feed for one of the TEP host's own IPv4
// addresses is refused (a node holding it could send as the TEP: the TUN device accepts local sources), in a
// resync as in a single binding, and so is an address no host may lease.
import { expect } from 'chai';
import { networkInterfaces } from 'node:os';
import { Writable } from 'node:stream';
import { parseIPv4, parseIPv6, parsePrefix4 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { Tep } from '../../src/tep/tep';
import { batchOf, ipv4, ipv6 } from '../dti/build';

const makeTep = (log = createLogger({ level: 'error' })): Tep =>
  new Tep({
    address: parseIPv6('fd00::1'),
    ipv4: parseIPv4('198.18.255.254'),
    pools: [parsePrefix4('198.18.0.0/16')],
    prefixes: [],
    statics: [],
    device: 'unused',
    pathMtu: 1500,
    log,
  });

describe('TEP bindings for its own addresses', () => {
  it('finding 1: the TEP refuses a binding for any of its own addresses', () => {
    const lines: string[] = [];
    const stream = new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) });
    const tep = makeTep(createLogger({ level: 'warn', stream, json: true }));
    const ends = Math.floor(Date.now() / 1000) + 600;
    tep.bind(parseIPv4('198.18.0.1'), parseIPv6('fd00::10'), ends);
    tep.bind(parseIPv4('198.18.255.254'), parseIPv6('fd00::11'), ends);
    // an address of this host's interfaces: one outside loopback if there is one (127/8 is refused as such)
    const v4 = Object.values(networkInterfaces())
      .flatMap((l) => l ?? [])
      .filter((a) => a.family === 'IPv4');
    const local = v4.find((a) => !a.internal) ?? v4[0];
    tep.bind(parseIPv4(local.address), parseIPv6('fd00::12'), ends);
    expect(tep.bindings.list().map((b) => b.ipv4)).to.deep.equal(['198.18.0.1']);
    const own = lines.filter((l) => l.includes("the address is the TEP's own"));
    expect(own).to.have.length(local.internal ? 1 : 2);
  });

  it('refuses the same bindings in a resync (the first state, a new epoch) as one by one, and forwards nothing for them', async () => {
    const ends = Math.floor(Date.now() / 1000) + 600;
    const offered = [
      ['198.18.0.1', 'fd00::10'], // the only one forwarded for
      ['198.18.255.254', 'fd00::11'], // the TEP's IPv4 address
      ['127.1.2.3', 'fd00::12'], // loopback
      ['0.0.0.7', 'fd00::13'], // "this network"
      ['169.254.1.1', 'fd00::14'], // link-local
      ['224.0.0.5', 'fd00::15'], // multicast
      ['255.255.255.255', 'fd00::16'], // broadcast
    ].map(([a, n]) => ({ ipv4: parseIPv4(a), ipv6: parseIPv6(n), starts: ends - 60, ends }));
    for (const path of ['bind', 'resync'] as const) {
      const tep = makeTep();
      if (path === 'bind') for (const b of offered) tep.bind(b.ipv4, b.ipv6, b.ends, b.starts);
      else await tep.resync(offered);
      expect(
        tep.bindings.list().map((b) => b.ipv4),
        path,
      ).to.deep.equal(['198.18.0.1']);
      // the node offered the TEP's address sends as the TEP: it holds no binding
      const fromTep4 = ipv6('fd00::11', 'fd00::1', 4, ipv4({ src: '198.18.255.254', dst: '192.0.2.2' }));
      tep.decapBatch(1, batchOf([fromTep4], 0));
      expect(tep.tunnel.toTun.count, path).to.equal(0);
      expect(tep.stats().drops.unbound_source, path).to.equal(1);
    }
  });
});
