// Issue 13, finding 2, as the review reproduced it: REQUESTs with forged IPv6 sources sent from outside the server's
// process. The test makes a network namespace, a TUN device moved into it (the test keeps its descriptor), and a
// real `dstm server --per-prefix 64:16` listening there; every forged packet is a whole IPv6/UDP datagram written
// into the TUN, so the namespace's kernel receives it as from the wire. The sources: the unspecified address,
// multicast, link-local, and many distinct global addresses in one /64. Asserted through the server's own
// outputs: `dstm leases --json` and its metrics.
import { expect } from 'chai';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { native } from '../../src/dti/native';
import { internetChecksum, onesSum } from '../../src/dti/packet';
import { formatIPv6, ipv4ToBytes, parseIPv6, parsePrefix6, prefixContains6 } from '../../src/lib/addr';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { REQUEST_REQ, xdr_packet } from '../../src/protocol/generated/dstm';
import { XdrWriter } from '../../src/rpc/xdr/runtime';
import { writeCallHeader, NULL_AUTH } from '../../src/rpc/message';
import { cliUnavailable, dstmArgv } from '../support/dstm-procs';
import { Namespaces, netnsUnavailable, output, prepareNamespaces, waitForOutput } from '../support/netns';
import { until } from '../support/wait';
import { seeded } from '../support/random';
import { skipIf } from '../support/skip';

const SERVER6 = '2001:db8:f::10';
const PORT = 3786;
const METRICS = '[::1]:9786';
const LAN = '2001:db8:66:1::/64';
const FORGED_GLOBALS = 40;
const CAP = 16;

/** One namespace, `f`, for the server and the TUN the forged packets come in through. */
class ForgeNs extends Namespaces {
  static async create(): Promise<ForgeNs> {
    await prepareNamespaces();
    const n = new ForgeNs(Namespaces.newId());
    return Namespaces.make(n, async () => {
      await n.add('f');
    });
  }
}

/** An ONC RPC CALL of REQUEST (version 2) for node `local`, inside UDP inside IPv6 from `src` to the server. */
function forgedRequest(src: Uint8Array, local: Uint8Array, xid: number): Uint8Array {
  const w = new XdrWriter();
  writeCallHeader(w, {
    xid,
    program: DEFAULT_PROGRAM,
    version: 2,
    procedure: 1,
    credential: NULL_AUTH,
    verifier: NULL_AUTH,
  });
  const z4 = ipv4ToBytes(0);
  xdr_packet.encode(w, {
    type: REQUEST_REQ,
    local,
    mask: z4,
    i4addr: z4,
    tep4: z4,
    tep6: new Uint8Array(16),
    starts: 0,
    ends: 0,
    extend: 0,
    keep: 0,
  });
  const rpc = w.toBytes();
  const udpLen = 8 + rpc.length;
  const p = new Uint8Array(40 + udpLen);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x60000000);
  v.setUint16(4, udpLen);
  p[6] = 17; // UDP
  p[7] = 64;
  p.set(src, 8);
  p.set(parseIPv6(SERVER6), 24);
  v.setUint16(40, 40000 + (xid % 20000));
  v.setUint16(42, PORT);
  v.setUint16(44, udpLen);
  p.set(rpc, 48);
  // The pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header; the checksum is mandatory.
  const pseudo = onesSum(p, 8, 32, udpLen + 17);
  v.setUint16(46, internetChecksum(p, 40, udpLen, pseudo) || 0xffff);
  return p;
}

describe('finding 2: forged IPv6 sources sent from outside the server (TUN in a namespace, dstm server --per-prefix 64:16)', function () {
  this.timeout(120_000);
  let ns: ForgeNs;
  let f: string;
  let tunFd = -1;
  let server: ChildProcess;

  before(async function () {
    skipIf(this, netnsUnavailable() ?? cliUnavailable());
    ns = await ForgeNs.create();
    f = ns.name('f');
    // Made here, moved into the namespace: the test writes into it as the wire would deliver.
    const [fd, dev] = native().openTun('', false, false);
    tunFd = fd;
    execFileSync('ip', ['link', 'set', 'dev', dev, 'netns', f]);
    await ns.ip(f, 'link', 'set', 'dev', dev, 'up');
    await ns.addr(f, 'lo', `${SERVER6}/128`);
    // Replies to the forged sources leave through the TUN (unread: the review's attacker needs no reply).
    await ns.ip(f, '-6', 'route', 'add', 'default', 'dev', dev);
    server = ns.spawn(
      f,
      dstmArgv(
        'server',
        '--listen',
        `[${SERVER6}]:${PORT}`,
        '--listen',
        `[::1]:${PORT}`,
        '--pool',
        '198.51.100.0/24',
        '--per-prefix',
        `64:${CAP}`,
        '--metrics',
        METRICS,
        '--state-dir',
        `${ns.dir}/state`,
        '--log-level',
        'info',
      ),
    );
    await waitForOutput(server, /"msg":"listening"/);
  });

  after(async () => {
    if (tunFd >= 0) closeSync(tunFd);
    await ns?.destroy();
  });

  const leases = async (): Promise<{ ipv6: string; ipv4: string; state: string }[]> =>
    JSON.parse((await ns.exec(f, dstmArgv('leases', '--json', '--server', `[::1]:${PORT}`))).stdout) as never;

  const refusals = async (): Promise<Map<string, number>> => {
    const fetch = `fetch('http://${METRICS}/metrics').then(r => r.text()).then(t => process.stdout.write(t))`;
    const text = (await ns.exec(f, [process.execPath, '-e', fetch])).stdout;
    const out = new Map<string, number>();
    for (const m of text.matchAll(/^dstm_server_refusals_total\{([^}]*)\} (\d+)/gm)) {
      const reason = /reason="([^"]+)"/.exec(m[1])?.[1] ?? '';
      if (/op="request"/.test(m[1])) out.set(reason, (out.get(reason) ?? 0) + Number(m[2]));
    }
    return out;
  };

  /** The namespace's count of IPv6 packets dropped on input for a bad header (a multicast source among them). */
  const inHdrErrors = async (): Promise<number> => {
    const snmp = (await ns.exec(f, ['cat', '/proc/net/snmp6'])).stdout;
    return Number(/^Ip6InHdrErrors\s+(\d+)/m.exec(snmp)?.[1] ?? NaN);
  };

  it('refuses ::, link-local and multicast sources, counts them, and binds at most 16 nodes of one /64', async () => {
    const rnd = seeded(2);
    const lan = parsePrefix6(LAN);
    const globals = new Set<string>();
    while (globals.size < FORGED_GLOBALS) {
      const a = Uint8Array.from(lan.bytes);
      for (let i = 8; i < 16; i++) a[i] = Math.floor(rnd() * 256);
      globals.add(formatIPv6(a));
    }
    const bogus = ['::', 'fe80::1', 'fe80::2:3', 'ff02::1', 'ff0e::42'];
    // The metrics endpoint starts after the RPC listeners.
    await until('the server serves its metrics', () =>
      refusals().then(
        () => true,
        () => false,
      ),
    );
    const hdrErrorsBefore = await inHdrErrors();
    let xid = 1;
    for (const src of [...bogus, ...globals]) {
      const a = parseIPv6(src);
      writeSync(tunFd, forgedRequest(a, a, xid++));
    }

    const refusedPeers = 3; // ::, fe80::1, fe80::2:3
    const reaching = refusedPeers + FORGED_GLOBALS;
    await until('the server has answered every forged REQUEST that reaches it', async () => {
      const judged = [...(await refusals()).values()].reduce((a, b) => a + b, 0);
      return judged + (await leases()).length >= reaching;
    });
    const r = await refusals();
    expect(r.get('bad_peer'), `refusals ${JSON.stringify([...r])}`).to.equal(refusedPeers);
    expect(r.get('prefix_cap')).to.equal(FORGED_GLOBALS - CAP);
    // Multicast sources never reach a socket: the kernel drops them on input (RFC 4291 2.7) and counts them.
    expect((await inHdrErrors()) - hdrErrorsBefore).to.equal(2);

    const bound = await leases();
    const inLan = bound.filter((b) => prefixContains6(lan, parseIPv6(b.ipv6)));
    expect(inLan).to.have.length(CAP);
    expect(bound).to.have.length(CAP);
    for (const b of inLan) expect(globals.has(b.ipv6), b.ipv6).to.equal(true);
    for (const src of bogus)
      expect(
        bound.some((b) => b.ipv6 === src),
        src,
      ).to.equal(false);
    // Logged once per prefix and reason, not once per packet.
    expect(output(server).match(/"reason":"prefix_cap"/g) ?? []).to.have.length(1);
  });
});
