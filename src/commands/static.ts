import { Command, Flags } from '@oclif/core';
import { Dti, annexALines, dtiUpCommands, parseRoutes, sourceTowards, type DtiLease } from '../client/dti-node';
import { ip, formatIp } from '../dti/netconfig';
import { formatIPv6, parseIPv4, parseIPv6 } from '../addr';
import { asLevel, logLevelFlag, notify, stopSignal } from '../daemon-cli';
import { EXIT, exitHelp, fail } from '../exit-codes';
import { createLogger } from '../log';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class StaticCommand extends Command {
  static override summary = 'Bring up a static DTI (Annex A): a fixed IPv4 address tunnelled to a fixed TEP, no server';
  static override description =
    'Creates the DTI (a TUN device), gives it --address (/32, with --peer, the TEP\'s IPv4 address, as the ' +
    'point-to-point peer), routes --routes through it and tunnels its IPv4 packets in IPv6 to --tep until SIGINT or ' +
    'SIGTERM, then removes the address and routes. The TEP needs the matching static mapping ' +
    '(dstm tep --static ADDRESS=LOCAL). --print shows the equivalent iproute2 commands (for a kernel with ' +
    'ip6_tunnel) and the KAME gifconfig/ifconfig lines of Annex A, and changes nothing. SIGHUP is logged and ' +
    'ignored; under systemd it reports READY once the DTI is up. See dstm-static(8).\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> static --tep 2001:db8:1::1 --address 198.51.100.200 --peer 192.0.2.1',
    '<%= config.bin %> static --tep 2001:db8:1::1 --address 198.51.100.200 --peer 192.0.2.1 --routes 203.0.113.0/24 --print',
  ];

  static override flags = {
    tep: Flags.string({ summary: 'IPv6 address of the TEP to tunnel to.', required: true }),
    address: Flags.string({ summary: 'The fixed IPv4 address of this node.', required: true }),
    peer: Flags.string({ summary: 'IPv4 address of the TEP, the point-to-point peer of the DTI.' }),
    local: Flags.string({ summary: 'IPv6 source of the tunnel (default: the address the kernel uses towards --tep).' }),
    routes: Flags.string({ summary: 'IPv4 prefixes to route through the DTI, comma-separated or repeated (default: default).', multiple: true }),
    device: Flags.string({ summary: 'Name of the DTI (TUN device).', default: 'dti0' }),
    'path-mtu': Flags.integer({ summary: 'Path MTU towards the TEP; the DTI\'s MTU is 40 less.', default: 1500 }),
    print: Flags.boolean({ summary: 'Print the equivalent iproute2 and KAME (Annex A) configuration; change nothing.' }),
    'log-level': logLevelFlag,
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(StaticCommand);
    let lease: DtiLease;
    let routes: string[];
    try {
      const address = parseIPv4(flags.address);
      const tep = parseIPv6(flags.tep);
      lease = { address, peer: flags.peer ? parseIPv4(flags.peer) : undefined, tep, local: flags.local ? parseIPv6(flags.local) : undefined };
      routes = parseRoutes(flags.routes ?? ['default']);
      if (flags['path-mtu'] < 1280) throw new Error('--path-mtu: must be at least 1280 (the IPv6 minimum MTU)');
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.print) {
      const local = lease.local ?? (await sourceTowards(lease.tep).catch(() => undefined));
      const p = { device: flags.device, lease, local: local ? formatIPv6(local) : 'LOCAL6', routes, mtu: flags['path-mtu'] - 40 };
      this.log('# Linux iproute2, with the kernel\'s ip6_tunnel module doing what the dstm DTI does in userspace:');
      this.log(formatIp({ args: ['-6', 'tunnel', 'add', p.device, 'mode', 'ipip6', 'local', p.local, 'remote', flags.tep, 'encaplimit', 'none'] }));
      for (const c of [ip.linkMtu(p.device, p.mtu), ip.linkUp(p.device), ...dtiUpCommands(p.device, lease, routes)]) this.log(formatIp(c));
      this.log('# KAME (draft Annex A):');
      for (const l of annexALines(p.local, flags.tep, lease, routes)) this.log(l);
      return;
    }
    const log = createLogger({ level: asLevel(flags['log-level']) }).child({ component: 'static' });
    const stopping = stopSignal();
    const hup = (): void => log.info('SIGHUP: nothing to reload, the DTI stays up');
    process.on('SIGHUP', hup);
    const dti = new Dti({ name: flags.device, routes, pathMtu: flags['path-mtu'], log });
    try {
      try {
        await dti.start();
        await dti.up(lease);
      } catch (err) {
        fail(this, `cannot bring up the DTI: ${(err as Error).message}`, EXIT.cannotStart);
      }
      notify(log, 'READY=1');
      await stopping;
      notify(log, 'STOPPING=1');
      await dti.down();
    } finally {
      dti.close();
      process.off('SIGHUP', hup);
    }
  }

}
