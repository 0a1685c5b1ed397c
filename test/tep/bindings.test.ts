import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatIPv4, parseIPv6, parsePrefix6 } from '../../src/lib/addr';
import { BindingTable, SCAN_SLOTS, SWEEP_SLOTS } from '../../src/tep/bindings';
import { HASH_KEY_BYTES, HashKey } from '../../src/lib/keyed-hash';
import { Ipv6PrefixList } from '../../src/tep/prefixes';
import { seeded } from '../support/random';

const NONE = { toIpv4: 0, toIpv6: 0, bytesToIpv4: 0, bytesToIpv6: 0 };
const v6 = (n: number): Uint8Array => parseIPv6(`2001:db8:1::${n.toString(16)}`);

describe('tep binding table', () => {
  it('looks up both directions, in place in a packet buffer', () => {
    const t = new BindingTable();
    t.set('198.51.100.5', '2001:db8:1::10', 10_000, 'server');
    const pkt = new Uint8Array(40);
    pkt.set(parseIPv6('2001:db8:1::10'), 8);
    const slot = t.findByIpv6(pkt, 8, 0);
    expect(slot).to.be.at.least(0);
    expect(formatIPv4(t.ipv4At(slot))).to.equal('198.51.100.5');
    const s4 = t.findByIpv4(0xc6336405, 0);
    expect(s4).to.equal(slot);
    expect(Buffer.from(t.ipv6At(s4))).to.deep.equal(Buffer.from(pkt.subarray(8, 24)));
    expect(t.findByIpv4(0xc6336406, 0)).to.equal(-1);
  });

  it('treats an ended binding as absent and sweeps it', () => {
    const t = new BindingTable();
    t.set('198.51.100.5', '2001:db8:1::10', 1000, 'server');
    t.set('198.51.100.200', '2001:db8:1::20', Infinity, 'static');
    expect(t.findByIpv4(0xc6336405, 999)).to.be.at.least(0);
    expect(t.findByIpv4(0xc6336405, 1000)).to.equal(-1);
    expect(t.nextEnd()).to.equal(1000);
    expect(t.sweep(1000).map((b) => b.ipv4)).to.deep.equal(['198.51.100.5']);
    expect(t.size).to.equal(1);
    expect(t.list()).to.deep.equal([
      { ipv4: '198.51.100.200', ipv6: '2001:db8:1::20', ends: Infinity, starts: 0, source: 'static', forwarded: NONE },
    ]);
  });

  it('keeps one binding per address on each side', () => {
    const t = new BindingTable();
    t.set('198.51.100.5', '2001:db8:1::10', 1e15, 'server');
    t.set('198.51.100.6', '2001:db8:1::10', 1e15, 'server'); // the node got a new address
    expect(t.list().map((b) => b.ipv4)).to.deep.equal(['198.51.100.6']);
    t.set('198.51.100.6', '2001:db8:1::11', 1e15, 'server'); // the address moved to another node
    expect(t.list().map((b) => b.ipv6)).to.deep.equal(['2001:db8:1::11']);
  });

  it('agrees with a Map model through random inserts, replacements, deletes and growth', () => {
    const t = new BindingTable(16);
    const model = new Map<number, number>(); // ipv4 -> node number
    const byNode = new Map<number, number>(); // node number -> ipv4: one binding per node, as in the table
    const rand = seeded(7);
    const rnd = (n: number): number => Math.floor(rand() * n);
    for (let i = 0; i < 20000; i++) {
      const a = 0xc6330000 + rnd(3000);
      if (rnd(3) === 0) {
        expect(t.delete(a)).to.equal(model.has(a));
        if (model.has(a)) byNode.delete(model.get(a) as number);
        model.delete(a);
      } else {
        const node = rnd(3000);
        if (byNode.has(node)) model.delete(byNode.get(node) as number);
        if (model.has(a)) byNode.delete(model.get(a) as number);
        model.set(a, node);
        byNode.set(node, a);
        t.set(a, v6(node), 1e15, 'server');
      }
    }
    expect(t.size).to.equal(model.size);
    for (let a = 0xc6330000; a < 0xc6330000 + 3000; a++) {
      const s = t.findByIpv4(a, 0);
      if (!model.has(a)) {
        expect(s).to.equal(-1);
        continue;
      }
      const bytes = v6(model.get(a) as number);
      expect(s, `ipv4 ${a}`).to.be.at.least(0);
      expect(t.findByIpv6(bytes, 0, 0)).to.equal(s);
      expect(Buffer.from(t.ipv6At(s))).to.deep.equal(Buffer.from(bytes));
    }
  });
});

describe('tep binding table memory', () => {
  it('is what dstm-tep(8) and dstm.conf(5) say: bytes per slot, per binding, and for 10^6 bindings', () => {
    const man = (page: string): string =>
      readFileSync(join(__dirname, '..', '..', 'man', page), 'utf8').replace(/\n/g, ' ');
    const tep = man('dstm-tep.8');
    const slots = 1 << 12;
    const perSlot = new BindingTable(slots).memoryBytes / slots;
    expect(Number(/Each slot takes (\d+) bytes/.exec(tep)?.[1]), 'bytes per slot').to.equal(perSlot);
    // the table doubles when full: a binding costs one slot to two
    const range = (text: string): number[] =>
      [...text.matchAll(/(\d+)(?: to |\\\(en)(\d+) ?\s?bytes per binding/g)]
        .map((m) => [Number(m[1]), Number(m[2])])
        .flat();
    expect(/binding costs (\d+) to (\d+) bytes/.exec(tep)?.slice(1).map(Number)).to.deep.equal([perSlot, 2 * perSlot]);
    for (const r of [range(tep), range(man('dstm.conf.5'))]) {
      expect(r.length, 'ranges found').to.be.above(0);
      for (let i = 0; i < r.length; i += 2) expect(r.slice(i, i + 2)).to.deep.equal([perSlot, 2 * perSlot]);
    }
    const million = /10\^6 bindings take 2\^(\d+) slots, (\d+) MB/.exec(tep);
    expect(2 ** Number(million?.[1])).to.equal(2 ** Math.ceil(Math.log2(1e6)));
    expect(Number(million?.[2])).to.equal(Math.round((2 ** Number(million?.[1]) * perSlot) / 1e6));
  });
});

describe('tep binding table generations', () => {
  it('stages a complete state beside the visible one and shows it at once on commit, keeping the slots that stay', () => {
    const t = new BindingTable();
    t.set('198.51.100.1', v6(1), 1e15, 'server'); // stays
    t.set('198.51.100.2', v6(2), 1e15, 'server'); // goes
    t.set('198.51.100.3', v6(3), 1e15, 'server'); // moves to node 4
    t.set('198.51.100.200', v6(0x20), Infinity, 'static');
    const stay = t.findByIpv4(0xc6336401, 0);
    t.countToIpv6(stay, 100);
    t.begin();
    t.stage('198.51.100.200', v6(0x20), Infinity, 'static'); // the static mapping stays
    t.stage('198.51.100.1', v6(1), 2e15, 'server');
    t.stage('198.51.100.3', v6(4), 1e15, 'server');
    t.stage('198.51.100.5', v6(5), 1e15, 'server'); // new
    // nothing changed yet but the end of the binding that stays
    const seen = (): string[] => t.list().map((b) => `${b.ipv4}=${b.ipv6}`);
    expect(seen()).to.deep.equal([
      '198.51.100.1=2001:db8:1::1',
      '198.51.100.2=2001:db8:1::2',
      '198.51.100.3=2001:db8:1::3',
      '198.51.100.200=2001:db8:1::20',
    ]);
    expect(t.findByIpv6(v6(4), 0, 0)).to.equal(-1);
    expect(t.size).to.equal(4);
    t.commit();
    expect(seen()).to.deep.equal([
      '198.51.100.1=2001:db8:1::1',
      '198.51.100.3=2001:db8:1::4',
      '198.51.100.5=2001:db8:1::5',
      '198.51.100.200=2001:db8:1::20',
    ]);
    expect(t.size).to.equal(4);
    expect(t.findByIpv4(0xc6336401, 0)).to.equal(stay);
    expect(t.get('198.51.100.1')?.forwarded).to.deep.equal({ ...NONE, toIpv6: 1, bytesToIpv6: 100 });
    expect(t.findByIpv6(v6(3), 0, 0)).to.equal(-1);
    t.sweep(0);
    expect(seen()).to.have.length(4);
  });

  it('agrees with a Map model through random resyncs interleaved with incremental changes and aborts', () => {
    const t = new BindingTable(16);
    let model = new Map<number, number>();
    const rand = seeded(11);
    const rnd = (n: number): number => Math.floor(rand() * n);
    const put = (m: Map<number, number>, a: number, node: number): void => {
      for (const [k, v] of m) if (v === node) m.delete(k);
      m.set(a, node);
    };
    const check = (m: Map<number, number>): void => {
      expect(t.size).to.equal(m.size);
      for (let a = 0xc6330000; a < 0xc6330000 + 400; a++) {
        const s = t.findByIpv4(a, 0);
        if (!m.has(a)) expect(s, `ipv4 ${a}`).to.equal(-1);
        else
          expect(t.findByIpv6(v6(m.get(a) as number), 0, 0))
            .to.equal(s)
            .and.to.be.at.least(0);
      }
    };
    for (let round = 0; round < 60; round++) {
      t.begin();
      const next = new Map<number, number>();
      const n = rnd(300);
      for (let i = 0; i < n; i++) {
        const a = 0xc6330000 + rnd(400);
        const node = rnd(400);
        if (rnd(10) === 0) {
          // an incremental change while staging: applies now and to the staged state
          put(model, a, node);
          put(next, a, node);
          t.set(a, v6(node), 1e15, 'server');
        } else {
          put(next, a, node);
          t.stage(a, v6(node), 1e15, 'server');
        }
        if (i % 50 === 0) check(model);
      }
      if (rnd(8) === 0) {
        t.abort();
      } else {
        t.commit();
        model = next;
      }
      check(model);
      if (rnd(3) === 0) t.sweep(0);
    }
  });
});

describe('tep binding table: bounded work per call (finding 4)', () => {
  // 2^18 slots: four sweep calls or scan steps per pass
  const CAP = 1 << 18;
  const addr = (i: number): number => 0x0a000000 + i * 3; // spread, so the table order is not the address order
  const node = (i: number): Uint8Array => {
    const b = parseIPv6('2001:db8:1::');
    b.set([i >>> 24, (i >>> 16) & 255, (i >>> 8) & 255, i & 255], 12);
    return b;
  };
  function filled(n: number, ends: (i: number) => number): BindingTable {
    const t = new BindingTable(CAP);
    for (let i = 0; i < n; i++) t.set(addr(i), node(i), ends(i), 'server');
    expect(t.capacity).to.equal(CAP); // sized at start: no growth
    return t;
  }

  it('sweeps SWEEP_SLOTS slots per call, removing every ended binding once over a pass, and scans nothing when none ended', () => {
    const N = 120_000;
    const t = filled(N, (i) => (i % 3 === 0 ? 5_000_000 : 1_000_000)); // a third ends later
    expect(t.sweep(999_999)).to.deep.equal([]);
    expect(t.scanned).to.equal(0);
    const ended = new Set<string>();
    let calls = 0;
    while (calls === 0 || t.nextEnd() <= 1_000_000) {
      const before = t.scanned;
      for (const b of t.sweep(1_000_000)) {
        expect(ended.has(b.ipv4), b.ipv4).to.equal(false);
        ended.add(b.ipv4);
      }
      expect(t.scanned - before).to.be.at.most(SWEEP_SLOTS);
      calls++;
    }
    expect(calls).to.equal(CAP / SWEEP_SLOTS);
    const want = Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 !== 0);
    expect(ended.size).to.equal(want.length);
    expect(want.every((i) => ended.has(formatIPv4(addr(i))))).to.equal(true);
    expect(t.size).to.equal(N - want.length);
    expect(t.nextEnd()).to.equal(5_000_000);
    const idle = t.scanned;
    t.sweep(1_000_000);
    expect(t.scanned).to.equal(idle);
  });

  it('a commit during a sweep pass gets what it left behind removed, by that pass or the next', () => {
    const t = filled(100_000, (i) => (i === 0 ? 1000 : 1e15));
    t.sweep(2000); // a pass starts (binding 0 ended) and stops a quarter of the way
    t.begin();
    for (let i = 0; i < 100_000; i += 2) t.stage(addr(i), node(i), 1e15, 'server'); // the odd ones go
    t.commit();
    expect(t.size).to.equal(50_000);
    for (let calls = 0; calls < 2 * (CAP / SWEEP_SLOTS); calls++) t.sweep(2000);
    expect(t.used).to.equal(t.size);
  });

  it('lists and finds the top talkers in steps of SCAN_SLOTS slots, with what one pass at once finds', () => {
    const N = 100_000;
    const t = filled(N, () => 1e15);
    const bytes = (i: number): number => ((i * 7919) % 1000) * 10 + (i % 10); // distinct enough, some ties
    for (let i = 0; i < N; i++) t.countToIpv4(t.findByIpv4(addr(i), 0), bytes(i));
    const steps = <T>(g: Generator<void, T>): { value: T; steps: number } => {
      let n = 0;
      for (;;) {
        const before = t.scanned;
        const r = g.next();
        expect(t.scanned - before).to.be.at.most(SCAN_SLOTS);
        n++;
        if (r.done) return { value: r.value, steps: n };
      }
    };
    const listed = steps(t.listSteps(10_000));
    expect(listed.steps).to.equal(CAP / SCAN_SLOTS);
    // the 10 000 lowest addresses: addr() grows with i
    expect(listed.value.map((b) => b.ipv4)).to.deep.equal(
      Array.from({ length: 10_000 }, (_, i) => formatIPv4(addr(i))),
    );
    const top = steps(t.topSteps(10));
    const model = Array.from({ length: N }, (_, i) => i).sort((a, b) => bytes(b) - bytes(a) || a - b);
    expect(top.value.map((b) => b.forwarded.bytesToIpv4)).to.deep.equal(model.slice(0, 10).map(bytes));
  });

  it('starts at the capacity asked for, rounded up to a power of two, and only then doubles', () => {
    const t = new BindingTable(3000);
    expect(t.capacity).to.equal(4096);
    for (let i = 0; i < 4096; i++) t.set(addr(i), node(i), 1e15, 'server');
    expect(t.capacity).to.equal(4096);
    t.set(addr(4096), node(4096), 1e15, 'server');
    expect(t.capacity).to.equal(8192);
    for (let i = 0; i <= 4096; i++)
      expect(t.findByIpv6(node(i), 0, 0))
        .to.equal(t.findByIpv4(addr(i), 0))
        .and.at.least(0);
  });
});

describe('tep binding table hashing', () => {
  it('finding 9: places addresses by a keyed hash: the same under one key, elsewhere under another, so no one can pick a probe chain', () => {
    const key = (fill: number): HashKey => new HashKey(new Uint8Array(HASH_KEY_BYTES).fill(fill));
    const homes = (t: BindingTable): string[] =>
      Array.from({ length: 256 }, (_, i) => t.homes(0xc6330000 + i, v6(0x1000 + i)).join(','));
    const [a, again, b] = [key(1), key(1), key(2)].map((k) => homes(new BindingTable(1 << 12, k)));
    expect(again).to.deep.equal(a);
    const moved = a.filter((h, i) => h !== b[i]).length;
    expect(moved, 'addresses whose home differs under another key').to.be.above(250); // 1 in 4096 stays by chance
    // two tables made without a key get a random one each
    const [r1, r2] = [homes(new BindingTable(1 << 12)), homes(new BindingTable(1 << 12))];
    expect(r1.filter((h, i) => h !== r2[i]).length).to.be.above(250);
  });
});

describe('tep prefixes', () => {
  it('matches IPv6 prefixes in place', () => {
    const l = new Ipv6PrefixList(['2001:db8:1::/64', '2001:db8:ff00::/41'].map(parsePrefix6));
    const buf = new Uint8Array(24);
    buf.set(parseIPv6('2001:db8:1::10'), 8);
    expect(l.contains(buf, 8)).to.equal(true);
    expect(l.contains(parseIPv6('2001:db8:ff7f::1'), 0)).to.equal(true);
    expect(l.contains(parseIPv6('2001:db8:ff80::1'), 0)).to.equal(false);
    expect(new Ipv6PrefixList([]).contains(parseIPv6('::1'), 0)).to.equal(true);
  });
});
