// Device tests with real TUN devices and raw sockets in network namespaces the tests make (root only).
import { expect } from 'chai';
import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { CountersSnapshot } from '../../src/dti/counters';
import { TunDevice } from '../../src/dti/device';
import { formatIp, ip, runIp, type IpCommand } from '../../src/dti/netconfig';
import { setIpv4Checksum, internetChecksum } from '../../src/dti/packet';
import { tsArgv } from '../support/dstm-procs';
import { skipIf } from '../support/skip';
import { uringAllowed } from '../support/kernel';

const execFileP = promisify(execFile);
const ROOT = join(__dirname, '..', '..');
const ID = `${process.pid}`;

function unavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, TUN)';
  try {
    execFileSync('ip', ['netns', 'list']);
  } catch {
    return 'iproute2 with netns support is missing';
  }
  return undefined;
}

/** Namespaces made by one test, deleted (with everything in them) by cleanup(). */
class Namespaces {
  readonly names: string[] = [];
  readonly procs: ChildProcess[] = [];

  add(tag: string): string {
    const name = `dstm-t-${ID}-${tag}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.names.push(name);
    execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  cleanup(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGKILL');
    for (const n of this.names.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
}

/** Deletes namespaces left by earlier runs whose process is gone (a killed run never reaches its cleanup). */
function removeStale(): void {
  for (const line of execFileSync('ip', ['netns', 'list']).toString().split('\n')) {
    const m = /^(dstm-t-(\d+)-\S+)/.exec(line);
    if (!m || Number(m[2]) === process.pid) continue;
    try {
      process.kill(Number(m[2]), 0);
    } catch {
      execFileSync('ip', ['netns', 'del', m[1]], { stdio: 'ignore' });
    }
  }
}

/** Spawns a command in a namespace and resolves when `ready` appears on its stdout or stderr. */
function spawnIn(
  nss: Namespaces,
  ns: string,
  argv: string[],
  ready?: RegExp,
): Promise<{ proc: ChildProcess; out: () => string }> {
  const proc = spawn('ip', ['netns', 'exec', ns, ...argv], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  nss.procs.push(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    if (!ready) return resolve({ proc, out: () => out });
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')}: not ready: ${out}${err}`)), 15000);
    const check = (): void => {
      if (ready.test(out) || ready.test(err)) {
        clearTimeout(timer);
        resolve({ proc, out: () => out });
      }
    };
    proc.stdout!.on('data', check);
    proc.stderr!.on('data', check);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${argv.join(' ')} exited ${code}: ${out}${err}`));
    });
  });
}

/** Starts test/dti/peer.ts (a DTI wired by the Tunnel pipeline) in a namespace. */
const peer = (nss: Namespaces, ns: string, cfg: object) =>
  spawnIn(nss, ns, tsArgv('test/dti/peer.ts', JSON.stringify(cfg)), /ready/);

const counters = (out: string) => JSON.parse(out.split('\n').filter((l) => l.startsWith('{'))[0]) as CountersSnapshot;

/** Namespaces `ta` and `tb` joined by a veth pair, addressed NET1/64 and NET2/64 (NET ends in "::"). */
async function vethPair(nss: Namespaces, ta: string, tb: string, net: string) {
  const a = nss.add(ta);
  const b = nss.add(tb);
  const va = `dv${ta}${ID}`.slice(0, 15);
  const vb = `dv${tb}${ID}`.slice(0, 15);
  execFileSync('ip', ['link', 'add', va, 'netns', a, 'type', 'veth', 'peer', 'name', vb, 'netns', b]);
  for (const [ns, dev, addr] of [
    [a, va, `${net}1/64`],
    [b, vb, `${net}2/64`],
  ]) {
    await runIp([{ args: ['-6', 'addr', 'add', addr, 'dev', dev, 'nodad'] }, ip.linkUp(dev)], { netns: ns });
  }
  return { a, b, va, vb };
}

function stop(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  return new Promise((resolve) => {
    if (proc.exitCode !== null) return resolve();
    proc.on('exit', () => resolve());
    proc.kill(signal);
  });
}

describe('dti/netconfig', () => {
  it('builds and prints iproute2 commands', async () => {
    const lines: string[] = [];
    await runIp(
      [
        ip.addrAdd('dti0', '198.51.100.7/32', '192.0.2.1'),
        ip.linkMtu('dti0', 1460),
        ip.linkUp('dti0'),
        ip.routeReplace('0.0.0.0/0', 'dti0', { src: '198.51.100.7' }),
        ip.routeDel('2001:db8::/32', 'eth0', { via: 'fe80::1', metric: 5 }),
      ],
      { print: (l) => lines.push(l), netns: 'x' },
    );
    expect(lines).to.deep.equal([
      'ip -n x -4 addr add 198.51.100.7/32 peer 192.0.2.1 dev dti0',
      'ip -n x link set dev dti0 mtu 1460',
      'ip -n x link set dev dti0 up',
      'ip -n x -4 route replace 0.0.0.0/0 dev dti0 src 198.51.100.7',
      'ip -n x -6 route del 2001:db8::/32 via fe80::1 dev eth0 metric 5',
    ]);
    expect(formatIp({ args: ['link', 'set', 'dev', "a b'c"] })).to.equal(`ip link set dev 'a b'\\''c'`);
  });
});

describe('dti/device (namespaces, root)', function () {
  const why = unavailable();
  const nss = new Namespaces();
  before(function () {
    skipIf(this, why);
    removeStale();
  });
  afterEach(() => nss.cleanup());

  for (const uring of [true, false]) {
    it(`reads a ping from a TUN device in batches and answers it with one batched write (${uring ? 'io_uring' : 'read/write loop'})`, async () => {
      const ns = nss.add('tun');
      const tun = TunDevice.open({ name: `dstmt${ID}`.slice(0, 15), mtu: 1400, batch: 16, uring });
      expect(tun.uring).to.equal(uring && uringAllowed());
      try {
        // The TUN interface moves into the namespace; our fd keeps working from here.
        execFileSync('ip', ['link', 'set', 'dev', tun.name, 'netns', ns]);
        await runIp([ip.addrAdd(tun.name, '10.201.0.1/24'), ip.linkUp(tun.name)], { netns: ns });
        const batches: number[] = [];
        let requests = 0;
        const offsets = new Uint32Array(16);
        const lengths = new Uint32Array(16);
        tun.onBatch((n, rx) => {
          batches.push(n);
          let m = 0;
          for (let i = 0; i < n; i++) {
            const o = rx.offsets[i];
            const b = rx.buf;
            if (b[o] >> 4 !== 4 || b[o + 9] !== 1 || b[o + 20] !== 8) continue; // IPv4 ICMP echo request only
            requests++;
            // Echo reply in place: swap addresses (header checksum unchanged by a swap), type 0, new ICMP checksum.
            for (let k = 0; k < 4; k++) [b[o + 12 + k], b[o + 16 + k]] = [b[o + 16 + k], b[o + 12 + k]];
            setIpv4Checksum(b, o);
            b[o + 20] = 0;
            b[o + 22] = b[o + 23] = 0;
            const c = internetChecksum(b, o + 20, rx.lengths[i] - 20);
            b[o + 22] = c >> 8;
            b[o + 23] = c & 0xff;
            offsets[m] = o;
            lengths[m++] = rx.lengths[i];
          }
          expect(tun.sendBatch(rx.buf, offsets, lengths, m)).to.equal(m);
        });
        const { stdout } = await execFileP('ip', [
          'netns',
          'exec',
          ns,
          'ping',
          '-c',
          '3',
          '-i',
          '0.2',
          '-W',
          '2',
          '10.201.0.2',
        ]);
        expect(stdout).to.match(/3 received/);
        expect(requests).to.equal(3);
        expect(batches.length).to.be.at.least(1);
      } finally {
        tun.close();
      }
    });

    it(`reads a burst from a TUN device whole and in order, in batches (${uring ? 'io_uring' : 'read/write loop'})`, async () => {
      const ns = nss.add('burst');
      const tun = TunDevice.open({ name: `dstmb${ID}`.slice(0, 15), batch: 16, uring });
      try {
        execFileSync('ip', ['link', 'set', 'dev', tun.name, 'netns', ns]);
        await runIp([ip.addrAdd(tun.name, '10.203.0.1/24'), ip.linkUp(tun.name)], { netns: ns });
        const BURST = 500;
        const seen: number[] = [];
        const batches: number[] = [];
        tun.onBatch((n, rx) => {
          batches.push(n);
          for (let i = 0; i < n; i++) {
            const o = rx.offsets[i];
            // UDP to port 9 carrying a 4-byte sequence number
            if (rx.buf[o + 9] === 17 && rx.lengths[i] === 32)
              seen.push(new DataView(rx.buf.buffer, rx.buf.byteOffset).getUint32(o + 28));
          }
        });
        // one process sends the whole burst into the device faster than one readable event drains it
        const send = `import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(${BURST}): s.sendto(struct.pack('>I',i),('10.203.0.2',9))`;
        await execFileP('ip', ['-n', ns, 'link', 'set', tun.name, 'txqueuelen', String(2 * BURST)]); // none dropped
        await execFileP('ip', ['netns', 'exec', ns, 'python3', '-c', send]);
        const deadline = Date.now() + 5000;
        while (seen.length < BURST && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        expect(seen).to.deep.equal(Array.from({ length: BURST }, (_, i) => i));
        expect(Math.max(...batches)).to.equal(16); // full batches: the device was drained 16 at a time
      } finally {
        tun.close();
      }
    });
  }

  // The RFC 2473 behaviours hold with TUN offloads (IFF_VNET_HDR, as the node and the TEP open it by default) and
  // without: the same traffic, the same behavioural assertions.
  for (const offload of [true, false]) {
    const mode = offload ? 'offloads' : 'no offloads';
    it(`tunnels IPv4 in IPv6 between two namespaces over veth (raw IPIP sockets, TUN, the pipeline), ${mode}`, async function () {
      this.timeout(60000);
      const { a, b, vb } = await vethPair(nss, 'a', 'b', '2001:db8:77::');
      // A's TUN MTU (1500) is above its tunnel MTU (1500 − 48 with the encap-limit option): big DF=1 packets get
      // our frag-needed, big DF=0 packets are sent as IPv6 fragments.
      const pa = await peer(nss, a, {
        tun: 'dti0',
        offload,
        addr4: '10.202.0.1',
        peer4: '10.202.0.2',
        local6: '2001:db8:77::1',
        remote6: '2001:db8:77::2',
        tunMtu: 1500,
        pathMtu: 1500,
        encapLimit: 4,
      });
      const pb = await peer(nss, b, {
        tun: 'dti0',
        offload,
        addr4: '10.202.0.2',
        peer4: '10.202.0.1',
        local6: '2001:db8:77::2',
        remote6: '2001:db8:77::1',
        tunMtu: 1400,
        pathMtu: 1500,
      });
      const dump = await spawnIn(nss, b, ['tcpdump', '-i', vb, '-nn', '-l', '-p', '--immediate-mode'], /listening on/);

      const ping = (...args: string[]) =>
        execFileP('ip', ['netns', 'exec', a, 'ping', '-i', '0.2', '-W', '2', ...args]);
      expect((await ping('-c', '3', '10.202.0.2')).stdout).to.match(/3 received/);
      // DF=0, 2000 bytes of data: IPv4-fragmented by A's kernel at 1500, each piece > 1452 is outer-fragmented.
      expect((await ping('-c', '1', '-M', 'dont', '-s', '2000', '10.202.0.2')).stdout).to.match(/1 received/);
      // DF=1 and too big for the tunnel: our ICMPv4 frag-needed reaches ping.
      const big = await ping('-c', '1', '-M', 'do', '-s', '1460', '10.202.0.2').catch((e: { stdout: string }) => e);
      expect(big.stdout).to.match(/mtu = 1452|Frag needed/i);

      await stop(dump.proc, 'SIGINT');
      await stop(pa.proc);
      await stop(pb.proc);
      const ca = counters(pa.out());
      const cb = counters(pb.out());
      // each peer ran the TUN path asked for (the kernel here takes the offload flags: test/dti/offload.test.ts)
      expect([ca.events.offload_active, cb.events.offload_active]).to.deep.equal(offload ? [1, 1] : [0, 0]);
      expect(ca.events.encapsulated).to.be.at.least(5);
      expect(ca.events.fragmented).to.be.at.least(1);
      expect(ca.drops.too_big_df).to.equal(1);
      expect(ca.dropped).to.equal(1); // nothing else was discarded (no IPv6 on the DTI: addrgenmode none)
      expect(cb.dropped).to.equal(0);
      expect(ca.events.icmp4_sent).to.equal(1);
      expect(cb.events.decapsulated).to.be.at.least(5);
      expect(ca.events.decapsulated).to.be.at.least(5);
      // Only IPv6 crossed the link: every captured packet is IPv6 carrying IPv4 (or an IPv6 fragment of one).
      const lines = dump
        .out()
        .split('\n')
        .filter((l) => / > /.test(l) && !/ICMP6/.test(l)); // not ND/MLD
      expect(lines.length).to.be.at.least(10);
      for (const l of lines) expect(l, l).to.match(/IP6 2001:db8:77::[12] > 2001:db8:77::[12]: (DSTOPT )?(IP |frag)/);
      expect(lines.some((l) => /frag/.test(l))).to.equal(true);
    });

    it(`learns a smaller path MTU from a router's ICMPv6 packet-too-big and tells the IPv4 sender (RFC 2473 §7, §8), ${mode}`, async function () {
      this.timeout(60000);
      // A ── R ── B, with a 1280-byte link between R and B: R answers A's big tunnel packets with packet-too-big.
      const a = nss.add('pa');
      const r = nss.add('pr');
      const b = nss.add('pb');
      const dev = (tag: string) => `d${tag}${ID}`.slice(0, 15);
      execFileSync('ip', ['link', 'add', dev('a'), 'netns', a, 'type', 'veth', 'peer', 'name', dev('ra'), 'netns', r]);
      execFileSync('ip', [
        'link',
        'add',
        dev('b'),
        'netns',
        b,
        'mtu',
        '1280',
        'type',
        'veth',
        'peer',
        'name',
        dev('rb'),
        'netns',
        r,
        'mtu',
        '1280',
      ]);
      const addr = (d: string, cidr: string): IpCommand => ({ args: ['-6', 'addr', 'add', cidr, 'dev', d, 'nodad'] });
      await runIp(
        [
          addr(dev('a'), '2001:db8:71::1/64'),
          ip.linkUp(dev('a')),
          ip.routeAdd('2001:db8:72::/64', dev('a'), { via: '2001:db8:71::2' }),
        ],
        { netns: a },
      );
      await runIp(
        [
          addr(dev('b'), '2001:db8:72::1/64'),
          ip.linkUp(dev('b')),
          ip.routeAdd('2001:db8:71::/64', dev('b'), { via: '2001:db8:72::2' }),
        ],
        { netns: b },
      );
      await runIp(
        [
          addr(dev('ra'), '2001:db8:71::2/64'),
          addr(dev('rb'), '2001:db8:72::2/64'),
          ip.linkUp(dev('ra')),
          ip.linkUp(dev('rb')),
        ],
        { netns: r },
      );
      execFileSync('ip', ['netns', 'exec', r, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1']);
      const pa = await peer(nss, a, {
        tun: 'dti0',
        offload,
        addr4: '10.203.0.1',
        peer4: '10.203.0.2',
        local6: '2001:db8:71::1',
        remote6: '2001:db8:72::1',
        tunMtu: 1500,
        pathMtu: 1500,
      });
      const pb = await peer(nss, b, {
        tun: 'dti0',
        offload,
        addr4: '10.203.0.2',
        peer4: '10.203.0.1',
        local6: '2001:db8:72::1',
        remote6: '2001:db8:71::1',
        tunMtu: 1240,
        pathMtu: 1280,
      });
      const ping = (...args: string[]) =>
        execFileP('ip', ['netns', 'exec', a, 'ping', '-i', '0.3', '-W', '2', ...args, '10.203.0.2']).catch(
          (e: { stdout: string }) => e,
        );
      // 1428-byte IPv4 packets with DF: they fit A's first tunnel MTU (1460) but not the path behind R.
      const first = await ping('-c', '3', '-M', 'do', '-s', '1400');
      expect(first.stdout).to.match(/mtu ?= ?1240/i);
      // Forget the IPv4 path MTU A's kernel learned from our frag-needed, so it sends 1428 bytes again: with DF=0
      // the packet now leaves A as IPv6 fragments that fit the path, and gets its reply.
      execFileSync('ip', ['-n', a, '-4', 'route', 'flush', 'cache']);
      expect((await ping('-c', '1', '-M', 'dont', '-s', '1400')).stdout).to.match(/1 received/);
      await stop(pa.proc);
      await stop(pb.proc);
      const ca = counters(pa.out());
      const cb = counters(pb.out());
      expect([ca.events.offload_active, cb.events.offload_active]).to.deep.equal(offload ? [1, 1] : [0, 0]);
      expect(ca.events.pmtu_updated).to.equal(1);
      expect(ca.events.icmp_relayed).to.be.at.least(1);
      expect(ca.events.fragmented).to.be.at.least(1);
      expect(cb.events.decapsulated).to.be.at.least(1);
    });

    it(`a TCP transfer whose segments exceed the tunnel MTU arrives whole: outer fragments with DF=0, frag-needed and the sender's PMTUD with DF=1, ${mode}`, async function () {
      this.timeout(60000);
      // Bulk TCP, where the kernel hands the offloading DTI super-packets (ping never makes one). B's TUN MTU 1500
      // lets A's segments reach 1500 bytes, above A's tunnel MTU (1500 − 48 with the encap-limit option).
      const { a, b } = await vethPair(nss, 'ta', 'tb', '2001:db8:76::');
      const ends = (local: string, remote: string, addr4: string, peer4: string, encapLimit = -1) => ({
        tun: 'dti0',
        offload,
        addr4,
        peer4,
        local6: `2001:db8:76::${local}`,
        remote6: `2001:db8:76::${remote}`,
        tunMtu: 1500,
        pathMtu: 1500,
        encapLimit,
      });
      const pa = await peer(nss, a, ends('1', '2', '10.204.0.1', '10.204.0.2', 4));
      const pb = await peer(nss, b, ends('2', '1', '10.204.0.2', '10.204.0.1'));
      const SIZE = 1 << 20;
      const data = `bytes((i * 7 + (i >> 11)) & 255 for i in range(${SIZE}))`;
      // B takes two connections and prints the length and SHA-256 of what each carried.
      const server = await spawnIn(
        nss,
        b,
        [
          'python3',
          '-c',
          [
            'import socket, hashlib',
            's = socket.socket(); s.bind(("10.204.0.2", 5999)); s.listen(2); print("ready", flush=True)',
            'for _ in range(2):',
            '    c, _ = s.accept(); h = hashlib.sha256(); n = 0',
            '    while True:',
            '        d = c.recv(1 << 20)',
            '        if not d: break',
            '        h.update(d); n += len(d)',
            '    print(n, h.hexdigest(), flush=True)',
          ].join('\n'),
        ],
        /ready/,
      );
      // IP_MTU_DISCOVER (10) = IP_PMTUDISC_DONT (0): DF=0, so no frag-needed lowers the MSS; 2 (DO): DF=1.
      const send = (pmtudisc: number) =>
        execFileP(
          'ip',
          [
            'netns',
            'exec',
            a,
            'python3',
            '-c',
            [
              'import socket, hashlib',
              `data = ${data}`,
              `c = socket.socket(); c.setsockopt(socket.IPPROTO_IP, 10, ${pmtudisc})`,
              'c.connect(("10.204.0.2", 5999)); c.sendall(data); c.close()',
              'print(len(data), hashlib.sha256(data).hexdigest())',
            ].join('\n'),
          ],
          { timeout: 30000 },
        );
      // DF=0 first: before A's kernel has learnt the tunnel MTU from a frag-needed, its segments are 1500 bytes.
      const sent = [(await send(0)).stdout.trim(), (await send(2)).stdout.trim()];
      await new Promise<void>((resolve) =>
        server.proc.exitCode !== null ? resolve() : server.proc.on('exit', () => resolve()),
      );
      expect(server.out().trim().split('\n').slice(1)).to.deep.equal(sent);
      await stop(pa.proc);
      await stop(pb.proc);
      const ca = counters(pa.out());
      const cb = counters(pb.out());
      expect([ca.events.offload_active, cb.events.offload_active]).to.deep.equal(offload ? [1, 1] : [0, 0]);
      // With offloads A's kernel handed super-packets, segmented before the MTU rules; without, none can come.
      if (offload) expect(ca.events.gso_split).to.be.above(0);
      else expect(ca.events.gso_split).to.equal(0);
      expect(ca.events.fragmented).to.be.above(0);
      expect(ca.drops.too_big_df).to.be.above(0);
      expect(ca.events.icmp4_sent).to.be.above(0);
      // nothing else was discarded: no malformed virtio-net header or super-packet, no full queue
      expect(ca.dropped).to.equal(ca.drops.too_big_df + ca.drops.icmp_rate_limited);
      expect(cb.dropped).to.equal(0);
    });
  }
});
