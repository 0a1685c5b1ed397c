// Annex A end to end, no DSTM server: `dstm static` on X and `dstm tep --static` on Y, real processes in real
// namespaces; an unmodified IPv4 client and ping on X reach Z through the IPv6-only X–Y link.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { OFFLOAD_MODES, cliUnavailable, startStaticNode, startTep, tepStats } from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable, stopChild, waitForOutput } from '../support/netns';
import { capture, inject, ping, pingErrors, startEchoServer, tcpHello } from '../support/traffic';
import { skipIf } from '../support/skip';
import { uringAllowed } from '../support/kernel';

const METRICS = `[${ADDR.y6}]:9787`;

/** The TEP's /metrics, fetched from inside Y. */
async function scrape(t: Topology): Promise<string> {
  const get = `fetch('http://${METRICS}/metrics').then((r) => r.text()).then((b) => process.stdout.write(b))`;
  return (await t.exec(t.ns.y, [process.execPath, '-e', get])).stdout;
}

const sample = (text: string, series: string): number =>
  Number(
    text
      .split('\n')
      .find((l) => l.startsWith(`${series} `))
      ?.split(' ')[1] ?? NaN,
  );

// Everything holds with TUN offloads (the default) and with --no-offload on both ends.
for (const [label, flags] of OFFLOAD_MODES)
  describe(`e2e: Annex A static tunnel (dstm static + dstm tep --static), ${label}`, function () {
    this.timeout(60_000);
    let t: Topology;
    let node: ChildProcess;
    let tep: ChildProcess;
    /** The TEP's configuration file: its static mappings (and device), so that SIGHUP can change them. */
    const config = (statics: [string, string][], device = 'dstm-tep0', unreachable = true): string => {
      const file = `${t.dir}/dstm.json`;
      writeFileSync(
        file,
        JSON.stringify({ tep: { device, unreachable, static: statics.map(([ipv4, ipv6]) => ({ ipv4, ipv6 })) } }),
      );
      return file;
    };

    before(async function () {
      skipIf(this, netnsUnavailable() ?? cliUnavailable());
      t = await Topology.create();
      tep = await startTep(t, ['--config', config([[ADDR.static4, ADDR.x6]]), '--metrics', METRICS, ...flags]);
      node = await startStaticNode(t, flags);
      await startEchoServer(t, t.ns.z);
    });

    after(async () => {
      await t?.destroy();
    });

    it('X has the DTI: the address /32 with the TEP as peer, MTU 1500 - 40, IPv4 routed into it, no IPv6 on it, its own ICMPv4 errors accepted', async () => {
      const { stdout: addr } = await t.ip(t.ns.x, 'addr', 'show', 'dev', 'dti0');
      expect(addr).to.include(`inet ${ADDR.static4} peer ${ADDR.y4}/32`);
      expect(addr).to.include('mtu 1460');
      expect(addr).to.not.include('inet6');
      expect((await t.ip(t.ns.x, 'route', 'show', 'default')).stdout).to.include(
        `default dev dti0 scope link src ${ADDR.static4}`,
      );
      // The DTI's ICMPv4 errors for local applications come from the node's own address (see Y's unreachable below).
      expect((await t.exec(t.ns.x, ['sysctl', '-n', 'net.ipv4.conf.dti0.accept_local'])).stdout.trim()).to.equal('1');
    });

    it(`the TEP runs the TUN path asked for (${label}) and says so`, async () => {
      const e = (await tepStats(t)).events;
      expect(e.offload_active).to.equal(flags.length ? 0 : 1);
      // io_uring for the TUN batches unless the kernel refuses it to everyone (root included)
      expect(e.tun_uring).to.equal(uringAllowed() ? 1 : 0);
    });

    it('an IPv4 TCP client on X reaches Z, which sees the static address as the source', async () => {
      expect(await tcpHello(t, t.ns.x)).to.equal(`hello from Z, you are ${ADDR.static4}`);
    });

    it('ping from X to Z gets its replies', async () => {
      expect(await ping(t, t.ns.x, ADDR.z4, 3)).to.equal(3);
    });

    it('Y serves Prometheus metrics whose packet, byte and drop counters move with the traffic', async () => {
      const before = await scrape(t);
      for (const family of [
        'dstm_tep_packets_total',
        'dstm_tep_bytes_total',
        'dstm_tep_dropped_total',
        'dstm_tep_icmp_sent_total',
        'dstm_tep_bindings',
      ]) {
        expect(before).to.match(new RegExp(`^# TYPE ${family} (counter|gauge)$`, 'm'));
      }
      expect(sample(before, 'dstm_tep_bindings')).to.equal(1);
      expect(await ping(t, t.ns.x, ADDR.z4, 2)).to.equal(2);
      await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.7', dst4: ADDR.z4 }); // spoofed: counted as a drop
      const after = await scrape(t);
      for (const dir of ['to_ipv4', 'to_ipv6']) {
        expect(
          sample(after, `dstm_tep_packets_total{direction="${dir}"}`) -
            sample(before, `dstm_tep_packets_total{direction="${dir}"}`),
        ).to.be.at.least(2);
        expect(sample(after, `dstm_tep_bytes_total{direction="${dir}"}`)).to.be.above(
          sample(before, `dstm_tep_bytes_total{direction="${dir}"}`),
        );
      }
      expect(sample(after, 'dstm_tep_dropped_total{reason="spoofed_source"}')).to.be.above(
        sample(before, 'dstm_tep_dropped_total{reason="spoofed_source"}'),
      );
      // the binding's own counters: in the top talkers metric and in dstm tep stats --json
      const talker = `ipv4="${ADDR.static4}",ipv6="${ADDR.x6}"`;
      for (const dir of ['to_ipv4', 'to_ipv6']) {
        expect(sample(after, `dstm_tep_binding_bytes_total{${talker},direction="${dir}"}`)).to.be.above(0);
      }
      const st = await tepStats(t);
      expect(st.top_talkers[0].ipv4).to.equal(ADDR.static4);
      expect(st.top_talkers[0].forwarded.to_ipv4).to.be.at.least(2);
      expect(st.top_talkers[0].forwarded.to_ipv6).to.be.at.least(2);
    });

    it('only IPv6 crosses the X–Y link', async () => {
      const cap = await capture(t, t.ns.x, 'eth-y');
      await ping(t, t.ns.x, ADDR.z4, 2);
      await tcpHello(t, t.ns.x);
      const lines = await cap.stop();
      expect(
        lines.filter((l) => !l.startsWith('IP6 ')),
        lines.join('\n'),
      ).to.deep.equal([]);
      expect(lines.filter((l) => l.includes(`IP ${ADDR.static4} > ${ADDR.z4}`))).to.have.length.greaterThan(0);
      expect(lines.filter((l) => l.includes(`IP ${ADDR.z4} > ${ADDR.static4}`))).to.have.length.greaterThan(0);
    });

    it('Y drops and counts spoofed, unbound and foreign tunnelled packets, and IPv4 for unbound pool addresses', async () => {
      const before = (await tepStats(t)).drops;
      await inject(t, t.ns.x, { src6: ADDR.x6, dst6: ADDR.y6, src4: '198.51.100.7', dst4: ADDR.z4 }); // X claims another address
      await inject(t, t.ns.s, { src6: ADDR.s6, dst6: ADDR.y6, src4: ADDR.static4, dst4: ADDR.z4 }); // S holds no binding
      await inject(t, t.ns.x, { src6: '2001:db8:99::10', dst6: ADDR.y6, src4: ADDR.static4, dst4: ADDR.z4 }); // outside the domain
      // A pool address bound to nobody: Y answers as a router does, from its IPv4 address.
      expect(await pingErrors(t, t.ns.z, '198.51.100.5', 2)).to.deep.equal(
        Array(2).fill(`${ADDR.y4} Destination Host Unreachable`),
      );
      const after = (await tepStats(t)).drops;
      expect(after.spoofed_source - before.spoofed_source).to.equal(5);
      expect(after.unbound_source - before.unbound_source).to.equal(5);
      expect(after.outside_prefix - before.outside_prefix).to.equal(5);
      expect(after.no_binding - before.no_binding).to.equal(2);
    });

    it('once the node stops, X sends no more IPv4 and the device is gone', async () => {
      const before = (await tepStats(t)).forwarded.to_ipv4;
      expect(await stopChild(node)).to.equal(0);
      expect(await ping(t, t.ns.x, ADDR.z4, 2)).to.equal(0);
      expect((await tepStats(t)).forwarded.to_ipv4).to.equal(before);
      const { stdout } = await t.ip(t.ns.x, 'link', 'show');
      expect(stdout).to.not.include('dti0');
    });

    it('SIGHUP applies changed static mappings and unreachable at once (binding and route) and names the keys that need a restart', async () => {
      const reload = async (): Promise<Record<string, unknown>> => {
        const line = waitForOutput(tep, /configuration reloaded/);
        tep.kill('SIGHUP');
        return JSON.parse(await line) as Record<string, unknown>;
      };
      const route = async (): Promise<string> => (await t.ip(t.ns.y, 'route', 'show', '203.0.113.77')).stdout;
      config(
        [
          [ADDR.static4, ADDR.x6],
          ['203.0.113.77', ADDR.s6],
        ],
        'dstm-tep9',
      );
      expect((await reload()).needs_restart).to.deep.equal(['device']);
      expect((await tepStats(t)).bindings.map((b) => [b.ipv4, b.ipv6, b.source])).to.deep.include([
        '203.0.113.77',
        ADDR.s6,
        'static',
      ]);
      expect(await route()).to.include('dev dstm-tep0');
      config([[ADDR.static4, ADDR.x6]], 'dstm-tep0', false);
      const reloaded = await reload();
      expect(reloaded).to.not.have.property('needs_restart');
      expect(reloaded.unreachable).to.equal(false);
      expect((await tepStats(t)).bindings.map((b) => b.ipv4)).to.deep.equal([ADDR.static4]);
      expect(await route()).to.equal('');
      const before = (await tepStats(t)).drops.no_binding;
      expect(await pingErrors(t, t.ns.z, '198.51.100.5', 2), 'no ICMPv4 error once unreachable is off').to.deep.equal(
        [],
      );
      expect((await tepStats(t)).drops.no_binding - before).to.equal(2);
    });
  });
