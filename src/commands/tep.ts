import { Flags } from '@oclif/core';
import { type TepConfig } from '../config/tep-schema';
import { logLevelFlag, notify, stopSignal } from '../cli/daemon-cli';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { programFlag } from '../cli/flags';
import { createLogger } from '../lib/log';
import { describeTep, loadTepConfig, startTep, type RunningTep } from '../tep/daemon';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class TepCommand extends DstmCommand {
  static override summary = 'Run a DSTM tunnel end point (border router) between the DSTM domain and IPv4';
  static override description =
    'Decapsulates IPv4-in-IPv6 from DSTM nodes and forwards it into IPv4 through a TUN device routed for the pool; ' +
    'IPv4 for pool addresses is encapsulated back to the node the address is bound to. Bindings come from the DSTM ' +
    "server's binding feed (--server) and from static Annex A mappings (--static); a tunnelled packet is forwarded " +
    'only if its inner IPv4 source is the address bound to its outer IPv6 source; IPv4 for a pool address no node ' +
    'holds is answered with ICMPv4 host unreachable (--no-unreachable: dropped silently). Runs until SIGINT or ' +
    'SIGTERM; SIGHUP re-reads the configuration: static mappings, pools, prefixes and unreachable change at once, ' +
    'other changed keys are logged as needing a restart. Under ' +
    'systemd it reports READY once the device is routed and the control socket listens. --check prints the ' +
    'configuration as JSON {address, ipv4, server, pools, prefixes, static, device, path_mtu, unreachable, control}. ' +
    'See dstm-tep(8).\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    "<%= config.bin %> tep --ipv6 2001:db8:1::1 --ipv4 192.0.2.1 --pool 198.51.100.0/24 --server '[2001:db8:2::10]:3786' --prefix 2001:db8::/32",
    '<%= config.bin %> tep --ipv6 2001:db8:1::1 --ipv4 192.0.2.1 --static 198.51.100.200=2001:db8:1::10',
    '<%= config.bin %> tep stats',
  ];

  static override flags = {
    config: Flags.string({ summary: 'Configuration file (its "tep" section); default DSTM_CONFIG or /etc/dstm/dstm.json if present.' }),
    server: Flags.string({ summary: 'DSTM server to follow the binding feed of, [IPV6]:PORT.' }),
    program: programFlag('ONC RPC program number of the DSTM server, decimal or 0x hexadecimal (default 760435789 = 0x2D53544D).'),
    ipv6: Flags.string({ summary: 'IPv6 address of this TEP: nodes tunnel to it (--address until 0.2).', aliases: ['address'], deprecateAliases: true }),
    ipv4: Flags.string({ summary: 'IPv4 address of this TEP, the peer of the nodes\' DTIs.' }),
    pool: Flags.string({ summary: 'IPv4 pool prefix routed to this TEP (repeatable).', multiple: true }),
    prefix: Flags.string({ summary: 'IPv6 prefix of the DSTM domain to accept tunnelled packets from (repeatable).', multiple: true }),
    static: Flags.string({ summary: 'Static mapping IPV4=IPV6 (Annex A; repeatable).', multiple: true }),
    device: Flags.string({ summary: 'Name of the TUN device (default dstm-tep0).' }),
    'path-mtu': Flags.integer({ summary: 'Path MTU towards the nodes (default 1500).' }),
    unreachable: Flags.boolean({
      allowNo: true,
      summary: 'Answer IPv4 for pool addresses no node holds with ICMPv4 host unreachable (default on; --no-unreachable drops it silently).',
    }),
    control: Flags.string({ summary: 'Unix socket for `dstm tep stats` (default /run/dstm/tep.sock).' }),
    metrics: Flags.string({ summary: 'Serve Prometheus metrics on [IPV6]:PORT (GET /metrics; default off).' }),
    'log-level': logLevelFlag,
    check: Flags.boolean({ summary: 'Validate the configuration, print it as JSON and exit.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(TepCommand);
    let config: TepConfig;
    try {
      config = loadTepConfig(flags);
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage);
    }
    if (flags.check) {
      this.log(JSON.stringify(describeTep(config), null, 2));
      return;
    }
    const log = createLogger({ level: config.log_level }).child({ component: 'tep' });
    const stopping = stopSignal();
    let running: RunningTep | undefined;
    let started!: () => void;
    let reloading = new Promise<void>((resolve) => (started = resolve));
    const reload = async (): Promise<void> => {
      notify(log, 'RELOADING=1');
      try {
        await running!.reload(loadTepConfig(flags));
      } catch (err) {
        log.error('configuration not reloaded; the running one stays', { why: (err as Error).message });
      }
      notify(log, 'READY=1');
    };
    // one reload at a time, none before the TEP runs (a signal during start-up is applied after it)
    const hup = (): void => void (reloading = reloading.then(reload));
    process.on('SIGHUP', hup);
    try {
      running = await startTep(config, log);
    } catch (err) {
      fail(this, `cannot start: ${(err as Error).message}`, EXIT.cannotStart);
    }
    notify(log, 'READY=1');
    started();
    await stopping;
    notify(log, 'STOPPING=1');
    await reloading;
    await running.stop();
    process.off('SIGHUP', hup);
  }
}
