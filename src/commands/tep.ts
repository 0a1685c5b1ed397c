import { Flags } from '@oclif/core';
import { tepFields, type TepConfig } from '../config/tep-schema';
import { daemonFailed } from '../cli/daemon-cli';
import { settingFlags, configFlag } from '../cli/setting-flags';
import { StartError, runDaemon, type Daemon } from '../lib/daemon';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { createLogger } from '../lib/log';
import { checkFeedTls, checkTlsFiles, describeTep, loadTepConfig, startTep } from '../tep/daemon';
import { RpcError } from '../rpc';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart, EXIT.tls];

export default class TepCommand extends DstmCommand {
  static override summary = 'Run a DSTM tunnel end point (border router) between the DSTM domain and IPv4';
  static override description =
    'Decapsulates IPv4-in-IPv6 from DSTM nodes and forwards it into IPv4 through a TUN device routed for the pool; ' +
    'IPv4 for pool addresses is encapsulated back to the node the address is bound to. Bindings come from the DSTM ' +
    "server's binding feed (--server) and from static Annex A mappings (--static); a tunnelled packet is forwarded " +
    'only if its inner IPv4 source is the address bound to its outer IPv6 source; IPv4 for a pool address no node ' +
    'holds is answered with ICMPv4 host unreachable (--no-unreachable: dropped silently). Runs until SIGINT or ' +
    'SIGTERM; SIGHUP re-reads the configuration: static mappings, pools, prefixes and unreachable change at once, ' +
    'other changed keys are logged as needing a restart. With --tls the feed runs over RPC-with-TLS (RFC 9289); ' +
    'a server that does not offer it, or a certificate that does not verify, stops the start (exit 9). Under ' +
    'systemd it reports READY once the device is routed and the control socket listens. --check prints the ' +
    'configuration as JSON: every key of the "tep" section, defaults filled in, in the file\'s syntax. ' +
    'See dstm-tep(8).\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    "<%= config.bin %> tep --ipv6 2001:db8:1::1 --ipv4 192.0.2.1 --pool 198.51.100.0/24 --server '[2001:db8:2::10]:3786' --prefix 2001:db8::/32",
    '<%= config.bin %> tep --ipv6 2001:db8:1::1 --ipv4 192.0.2.1 --static 198.51.100.200=2001:db8:1::10',
    '<%= config.bin %> tep stats',
  ];

  static override flags = {
    config: configFlag('tep'),
    ...settingFlags(tepFields),
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
      // the TLS files are read and loaded as the start reads them: a reload that --check passes must not fail on them
      try {
        checkTlsFiles(config);
      } catch (err) {
        fail(this, (err as Error).message, EXIT.usage);
      }
      this.log(JSON.stringify(describeTep(config), null, 2));
      return;
    }
    const log = createLogger({ level: config.log_level }).child({ component: 'tep' });
    const start = async (): Promise<Daemon> => {
      await checkFeedTls(config, log);
      const running = await startTep(config, log);
      return { reload: async () => void (await running.reload(loadTepConfig(flags))), stop: () => running.stop() };
    };
    try {
      await runDaemon(log, start);
    } catch (err) {
      const cause = err instanceof StartError ? err.cause : undefined;
      if (cause instanceof RpcError && cause.kind === 'TLS') fail(this, `RPC-with-TLS: ${cause.message}`, EXIT.tls);
      daemonFailed(this, err, 'cannot start');
    }
  }
}
