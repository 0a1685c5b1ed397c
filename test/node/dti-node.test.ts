import { expect } from 'chai';
import { Dti, dtiHooks, setSource, type DtiLease } from '../../src/node/dti-node';
import type { Lease } from '../../src/protocol/client';
import { internetChecksum } from '../../src/dti/packet';
import { sysctlPath } from '../../src/dti/netconfig';
import { formatIPv6, parseIPv4, parseIPv6 } from '../../src/lib/addr';
import { createLogger } from '../../src/lib/log';
import { cksum, icmpv6, ipv4, ipv6, v4 } from '../dti/build';
import { fakeDti, type FakeDti } from '../support/fake-devices';

/** UDP checksum of the packet at 0 as a receiver verifies it: 0 (or 0xffff) when correct. */
function udpCheck(p: Uint8Array): number {
  const len = p.length - 20;
  const pseudo = [...p.subarray(12, 20), 0, 17, len >> 8, len & 0xff];
  const buf = new Uint8Array([...pseudo, ...p.subarray(20)]);
  return internetChecksum(buf, 0, buf.length);
}

describe('on-demand DTI: queued packets sent from 0.0.0.0 get the leased source', () => {
  it('rewrites the source with valid IPv4 header and UDP checksums', () => {
    const udp = [40000 >> 8, 40000 & 0xff, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
    const raw = ipv4({ src: '0.0.0.0', dst: '192.0.2.2', proto: 17, payload: udp });
    const pseudo = [...v4('0.0.0.0'), ...v4('192.0.2.2'), 0, 17, 0, 12];
    const c = internetChecksum(new Uint8Array([...pseudo, ...udp]), 0, pseudo.length + udp.length);
    raw[26] = c >> 8;
    raw[27] = c & 0xff;
    const p = new Uint8Array(raw);
    expect(udpCheck(p)).to.equal(0);
    setSource(p, 0, p.length, parseIPv4('198.51.100.1'));
    expect([...p.subarray(12, 16)]).to.deep.equal([198, 51, 100, 1]);
    expect(internetChecksum(p, 0, 20)).to.equal(0);
    expect(udpCheck(p)).to.equal(0);
  });
});

const TEP_A = '2001:db8:1::1';
const TEP_B = '2001:db8:1::2';
const SELF6 = '2001:db8:9::10';
const LEASED = '198.51.100.7';
const quiet = createLogger({ level: 'error' });

function makeDti(f: FakeDti, queue?: number): Dti {
  return new Dti({
    name: 'dti9',
    routes: ['default'],
    pathMtu: 1500,
    queue,
    log: quiet,
    devices: f.devices,
    system: f.system,
  });
}

const lease = (tep: string, peer = '192.0.2.1'): DtiLease => ({
  address: parseIPv4(LEASED),
  peer: parseIPv4(peer),
  tep: parseIPv6(tep),
  local: parseIPv6(SELF6),
});

/** The outer IPv6 and inner IPv4 addresses of an encapsulated packet. */
function outer(p: number[]): { src6: string; dst6: string; src4: string; dst4: string } {
  const ihl = p[6] === 4 ? 40 : 48; // next header IPIP, or a destination option (encapsulation limit) first
  return {
    src6: formatIPv6(Uint8Array.from(p.slice(8, 24))),
    dst6: formatIPv6(Uint8Array.from(p.slice(24, 40))),
    src4: p.slice(ihl + 12, ihl + 16).join('.'),
    dst4: p.slice(ihl + 16, ihl + 20).join('.'),
  };
}

describe('node DTI forwarding decisions (devices injected, no root)', () => {
  let f: FakeDti;
  let dti: Dti;
  beforeEach(() => {
    f = fakeDti();
  });
  afterEach(() => dti?.close());

  it('drops IPv4 from applications before the lease, and tunnels it to the TEP from the node once leased', async () => {
    dti = makeDti(f);
    await dti.start();
    f.tun.receive(ipv4({ src: LEASED, dst: '192.0.2.2' }));
    expect(f.raw.take()).to.deep.equal([]);
    expect(dti.counters.snapshot().drops.no_address).to.equal(1);
    await dti.up(lease(TEP_A));
    expect(f.commands).to.include.members([
      `-4 addr add ${LEASED}/32 peer 192.0.2.1/32 dev dti9`,
      `-4 route replace default dev dti9 src ${LEASED}`,
    ]);
    f.tun.receive(ipv4({ src: LEASED, dst: '192.0.2.2' }));
    const [p] = f.raw.take();
    expect(outer(p)).to.deep.equal({ src6: SELF6, dst6: TEP_A, src4: LEASED, dst4: '192.0.2.2' });
  });

  it('tunnels only packets from the leased address: any other inner source is dropped as spoofed_source', async () => {
    dti = makeDti(f);
    await dti.start();
    await dti.up(lease(TEP_A));
    f.tun.receive(
      ipv4({ src: '192.168.1.20', dst: '192.0.2.2' }), // forwarded for a host behind the node
      ipv4({ src: LEASED, dst: '192.0.2.2' }),
      ipv4({ src: '0.0.0.0', dst: '192.0.2.2' }),
    );
    expect(f.raw.take().map(outer)).to.deep.equal([{ src6: SELF6, dst6: TEP_A, src4: LEASED, dst4: '192.0.2.2' }]);
    expect(dti.counters.snapshot().drops.spoofed_source).to.equal(2);
  });

  it('a DTI whose name holds a dot (dti.9) sets its sysctls in its own /proc/sys directory', async () => {
    dti = new Dti({
      name: 'dti.9',
      routes: ['default'],
      pathMtu: 1500,
      log: quiet,
      devices: f.devices,
      system: f.system,
    });
    await dti.start();
    const keys = f.commands.filter((c) => c.startsWith('sysctl ')).map((c) => c.slice(7).split('=')[0]);
    expect(keys.map(sysctlPath)).to.deep.equal([
      '/proc/sys/net/ipv6/conf/dti.9/disable_ipv6',
      '/proc/sys/net/ipv4/conf/dti.9/accept_local',
    ]);
    expect(sysctlPath('net.ipv4.ip_forward')).to.equal('/proc/sys/net/ipv4/ip_forward');
  });

  it('accepts tunnelled packets only from its TEP, only for its address, never from its address', async () => {
    dti = makeDti(f);
    await dti.start();
    await dti.up(lease(TEP_A));
    f.raw.receive(
      ipv6(TEP_A, SELF6, 4, ipv4({ src: '192.0.2.2', dst: LEASED })),
      ipv6('2001:db8:1::66', SELF6, 4, ipv4({ src: '192.0.2.2', dst: LEASED })),
      ipv6(TEP_A, SELF6, 4, ipv4({ src: '192.0.2.2', dst: '198.51.100.8' })),
      ipv6(TEP_A, SELF6, 4, ipv4({ src: LEASED, dst: LEASED })), // forged: from the node's own address
    );
    const got = f.tun.take();
    expect(got.map((p) => p.slice(16, 20).join('.'))).to.deep.equal([LEASED]);
    expect(dti.counters.snapshot().drops).to.include({ not_from_tep: 1, not_for_us: 1, spoofed_source: 1 });
  });

  it('on demand: the first packet requests once, packets wait, and leave with the leased source; a TCP SYN from 0.0.0.0 cannot be saved', async () => {
    dti = makeDti(f, 3);
    let requests = 0;
    await dti.start(() => requests++);
    expect(f.commands).to.include('-4 route replace default dev dti9');
    const udp = [0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4];
    f.tun.receive(
      ipv4({ src: '0.0.0.0', dst: '192.0.2.2' }),
      ipv4({ src: '0.0.0.0', dst: '192.0.2.3', proto: 17, payload: udp }),
    );
    f.tun.receive(
      ipv4({ src: '0.0.0.0', dst: '192.0.2.4', proto: 6, payload: Array(20).fill(0) }),
      ipv4({ src: '0.0.0.0', dst: '192.0.2.5' }),
    );
    expect(requests).to.equal(1);
    expect(f.raw.take()).to.deep.equal([]);
    expect(dti.counters.snapshot().drops.queue_full).to.equal(1); // a queue of 3
    await dti.up(lease(TEP_A));
    const sent = f.raw.take().map(outer);
    expect(sent).to.deep.equal([
      { src6: SELF6, dst6: TEP_A, src4: LEASED, dst4: '192.0.2.2' },
      { src6: SELF6, dst6: TEP_A, src4: LEASED, dst4: '192.0.2.3' },
    ]);
    expect(dti.counters.snapshot().drops.no_address).to.equal(1);
  });

  it('on demand: when the lease ends the routes stay, without the leased source, and the next packet waits again', async () => {
    dti = makeDti(f);
    await dti.start(() => undefined);
    await dti.up(lease(TEP_A));
    const from = f.commands.length;
    await dti.down();
    // The kernel deletes every route through a device that loses its last IPv4 address: they are put back after.
    expect(f.commands.slice(from)).to.deep.equal([
      `-4 addr del ${LEASED}/32 peer 192.0.2.1/32 dev dti9`,
      '-4 route replace default dev dti9',
    ]);
    f.tun.receive(ipv4({ src: '0.0.0.0', dst: '192.0.2.2' }));
    await dti.up(lease(TEP_A));
    expect(f.raw.take().map(outer)).to.deep.equal([{ src6: SELF6, dst6: TEP_A, src4: LEASED, dst4: '192.0.2.2' }]);
  });

  it('on demand: a queued non-first UDP fragment keeps its payload; the first fragment gets the adjusted checksum', async () => {
    // One UDP datagram from 0.0.0.0 (8-byte header + 16 bytes) as two fragments, and a whole one after them.
    const data = Array.from({ length: 16 }, (_, i) => 0xa0 + i);
    const udp = [0x9c, 0x40, 0, 53, 0, 24, 0, 0, ...data];
    const c = cksum([...v4('0.0.0.0'), ...v4('192.0.2.3'), 0, 17, 0, 24, ...udp]);
    udp[6] = c >> 8;
    udp[7] = c & 0xff;
    const fragment = (payload: number[], word: number): number[] => {
      const p = ipv4({ src: '0.0.0.0', dst: '192.0.2.3', proto: 17, id: 0x77, payload });
      p[6] = word >> 8;
      p[7] = word & 0xff;
      p[10] = p[11] = 0;
      const h = cksum(p, 0, 20);
      p[10] = h >> 8;
      p[11] = h & 0xff;
      return p;
    };
    const first = fragment(udp.slice(0, 16), 0x2000); // MF, offset 0
    const rest = fragment(udp.slice(16), 2); // offset 2 (16 bytes): bytes 6-7 of its payload are data, not a checksum
    const whole = ipv4({ src: '0.0.0.0', dst: '192.0.2.3', proto: 17, payload: udp });
    dti = makeDti(f);
    await dti.start(() => undefined);
    f.tun.receive(first, rest, whole);
    await dti.up(lease(TEP_A));
    const sent = f.raw.take().map((p) => p.slice(40));
    expect(sent).to.have.length(3);
    for (const p of sent) {
      expect(p.slice(12, 16)).to.deep.equal(v4(LEASED));
      expect(cksum(p, 0, 20)).to.equal(0);
    }
    expect(sent[1].slice(20)).to.deep.equal(rest.slice(20));
    expect(udpCheck(Uint8Array.from([...sent[0], ...sent[1].slice(20)]))).to.equal(0); // reassembled
    expect(udpCheck(Uint8Array.from(sent[2]))).to.equal(0);
  });

  it('a renewal naming another TEP moves the tunnel and keeps the address; another peer re-adds it', async () => {
    dti = makeDti(f);
    await dti.start();
    await dti.up(lease(TEP_A));
    f.commands.length = 0;
    await dti.up(lease(TEP_B));
    expect(f.commands).to.deep.equal([]); // the address and routes stay as they are
    f.tun.receive(ipv4({ src: LEASED, dst: '192.0.2.2' }));
    expect(outer(f.raw.take()[0]).dst6).to.equal(TEP_B);
    f.raw.receive(
      ipv6(TEP_A, SELF6, 4, ipv4({ src: '192.0.2.2', dst: LEASED })),
      ipv6(TEP_B, SELF6, 4, ipv4({ src: '192.0.2.2', dst: LEASED })),
    );
    expect(f.tun.take()).to.have.length(1);
    expect(dti.counters.snapshot().drops.not_from_tep).to.equal(1);
    await dti.up(lease(TEP_A, '192.0.2.9'));
    expect(f.commands).to.deep.equal([
      '-4 route del default dev dti9',
      `-4 addr del ${LEASED}/32 peer 192.0.2.1/32 dev dti9`,
      `-4 addr add ${LEASED}/32 peer 192.0.2.9/32 dev dti9`,
      `-4 route replace default dev dti9 src ${LEASED}`,
    ]);
  });

  it('refuses a lease from a server with no TEP for the node (zeros): no address, no tunnel to ::; no peer 0.0.0.0', async () => {
    dti = makeDti(f);
    await dti.start();
    const noTep: Lease = {
      address: LEASED,
      mask: '255.255.255.255',
      local: SELF6,
      tep6: '::',
      tep4: '0.0.0.0',
      starts: 0,
      ends: 3600,
      extend: 1800,
      keep: 3600,
    };
    let err: Error | undefined;
    await (async () => dtiHooks(dti).up!(noTep))().catch((e: Error) => (err = e));
    expect(err?.message).to.match(/names no TEP to tunnel to: tep6 :: is the unspecified address/);
    expect(dti.current).to.equal(undefined);
    expect(f.commands.filter((c) => c.includes('addr add'))).to.deep.equal([]);
    // an IPv6 TEP without an IPv4 address: no peer 0.0.0.0, the routes point at the device
    await dtiHooks(dti).up!({ ...noTep, tep6: TEP_A });
    expect(f.commands.filter((c) => c.includes('addr add'))).to.deep.equal([`-4 addr add ${LEASED}/32 dev dti9`]);
  });

  it('down() removes the address, and nothing is tunnelled after it', async () => {
    dti = makeDti(f);
    await dti.start();
    await dti.up(lease(TEP_A));
    await dti.down();
    f.tun.receive(ipv4({ src: LEASED, dst: '192.0.2.2' }));
    expect(f.raw.take()).to.deep.equal([]);
    expect(dti.counters.snapshot().drops.no_address).to.equal(1);
  });
});

describe('node DTI: ICMPv6 errors and the path MTU (devices injected, no root)', () => {
  const ROUTER = '2001:db8:5::1';
  /** 1320 bytes with DF: over the 1240-byte tunnel MTU of a 1280-byte path, under the 1460 of a 1500-byte one. */
  const big = (src = LEASED): number[] =>
    ipv4({ src, dst: '192.0.2.2', df: true, proto: 17, payload: Array<number>(1300).fill(0) });
  /** An ICMPv6 error to this node quoting (as much as fits 1280 bytes of) a tunnel packet to `to` from `src`. */
  const error = (type: number, word: number, to: string, src = LEASED): number[] =>
    icmpv6(ROUTER, SELF6, type, 0, word, ipv6(SELF6, to, 4, big(src)).slice(0, 1232));
  const ptb = (to: string, src = LEASED): number[] => error(2, 1280, to, src);
  let f: FakeDti;
  let dti: Dti;
  let now: number;
  beforeEach(async () => {
    f = fakeDti();
    now = 1000;
    dti = new Dti({
      name: 'dti9',
      routes: ['default'],
      pathMtu: 1500,
      log: quiet,
      devices: f.devices,
      system: f.system,
      now: () => now,
    });
    await dti.start();
    await dti.up(lease(TEP_A));
  });
  afterEach(() => dti.close());

  it('an error quoting a packet to another destination or from another IPv4 source changes nothing and is counted', () => {
    f.icmp6.receive(ptb('2001:db8:7::1'), ptb(TEP_A, '198.51.100.8'), error(1, 0, '2001:db8:7::1'));
    expect(dti.tunnel.tunnelMtu).to.equal(1460);
    expect(f.tun.take()).to.deep.equal([]); // nothing relayed to local applications
    expect(dti.counters.snapshot().drops.icmp_unrelated).to.equal(3);
    expect(dti.counters.event('pmtu_updated')).to.equal(0);
    f.tun.receive(big());
    expect(f.raw.take()).to.have.length(1);
  });

  it('a genuine packet-too-big lowers the path MTU for 10 minutes after the last one, then the configured one is back', () => {
    f.icmp6.receive(ptb(TEP_A));
    expect(dti.tunnel.tunnelMtu).to.equal(1240);
    const [m] = f.tun.take(); // relayed as frag-needed with the new tunnel MTU
    expect([m[20], m[21], (m[26] << 8) | m[27]]).to.deep.equal([3, 4, 1240]);
    now += 300_000;
    f.icmp6.receive(ptb(TEP_A)); // still too big: the 10 minutes start again
    f.tun.take();
    now += 599_999;
    f.tun.receive(big());
    expect(f.raw.take()).to.deep.equal([]);
    expect(dti.counters.snapshot().drops.too_big_df).to.equal(1);
    now += 1;
    f.tun.receive(big());
    expect(f.raw.take()).to.have.length(1);
    expect(dti.tunnel.tunnelMtu).to.equal(1460);
  });
});
