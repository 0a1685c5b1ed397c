import { Flags } from '@oclif/core';
import { sourceTowards } from '../node/dti-node';
import { staticFields, type StaticConfig } from '../config/static-schema';
import { daemonFailed } from '../cli/daemon-cli';
import { settingFlags, configFlag } from '../cli/setting-flags';
import { runDaemon } from '../lib/daemon';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { createLogger } from '../lib/log';
import { loadStaticConfig, startStatic, staticPrintLines } from '../node/static';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class StaticCommand extends DstmCommand {
  static override summary = 'Bring up a static DTI (Annex A): a fixed IPv4 address tunnelled to a fixed TEP, no server';
  static override description =
    "Creates the DTI (a TUN device), gives it --address (/32, with --peer, the TEP's IPv4 address, as the " +
    'point-to-point peer), routes --routes through it and tunnels its IPv4 packets in IPv6 to --tep until SIGINT or ' +
    'SIGTERM, then removes the address and routes. Every flag can come from the "static" section of the ' +
    'configuration file instead (flags win). The TEP needs the matching static mapping ' +
    '(dstm tep --static ADDRESS=LOCAL). --print shows the equivalent iproute2 commands (for a kernel with ' +
    'ip6_tunnel) and the KAME gifconfig/ifconfig lines of Annex A, and changes nothing. SIGHUP is logged and ' +
    'ignored; under systemd it reports READY once the DTI is up. See dstm-static(8).\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> static --tep 2001:db8:1::1 --address 198.51.100.200 --peer 192.0.2.1',
    '<%= config.bin %> static --tep 2001:db8:1::1 --address 198.51.100.200 --peer 192.0.2.1 --routes 203.0.113.0/24 --print',
    '<%= config.bin %> static --config /etc/dstm/dstm.json',
  ];

  static override flags = {
    config: configFlag('static'),
    ...settingFlags(staticFields),
    print: Flags.boolean({
      summary: 'Print the equivalent iproute2 and KAME (Annex A) configuration; change nothing.',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(StaticCommand);
    let config: StaticConfig;
    try {
      config = loadStaticConfig(flags);
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.print) {
      const local = config.local ?? (await sourceTowards(config.tep).catch(() => undefined));
      for (const line of staticPrintLines(config, local)) this.log(line);
      return;
    }
    const log = createLogger({ level: config.log_level }).child({ component: 'static' });
    try {
      await runDaemon(log, () => startStatic(config, log));
    } catch (err) {
      daemonFailed(this, err, 'cannot bring up the DTI');
    }
  }
}
