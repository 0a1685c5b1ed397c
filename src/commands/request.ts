import { Flags } from '@oclif/core';
import { classify, leaseText } from '../cli/client';
import { leaseJson } from '../protocol/binding-json';
import { connectFromFlags, exchangeFlags } from '../cli/client-flags';
import { settingFlags } from '../cli/setting-flags';
import { clientFields } from '../config/client-schema';
import type { Lease } from '../protocol/client';
import type { FailoverClient } from '../protocol/failover';
import { startNode } from '../node/daemon';
import type { DtiOptions } from '../node/dti-node';
import { daemonFailed, envLevel, logLevelFlag } from '../cli/daemon-cli';
import { runDaemon } from '../lib/daemon';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { createLogger, type Level, type Logger } from '../lib/log';
import { dtiFlags, dtiOptionsFromFlags } from '../cli/node-flags';
import { DEFAULT_NODE_CONTROL_PATH } from '../node/status';

const EXITS = [
  EXIT.ok,
  EXIT.internal,
  EXIT.usage,
  EXIT.cannotStart,
  EXIT.notAllowed,
  EXIT.noAddress,
  EXIT.unreachable,
  EXIT.serverError,
  EXIT.tls,
];

export default class RequestCommand extends DstmCommand {
  static override summary = 'Obtain a temporary IPv4 address (a lease) from the DSTM server';
  static override description =
    "Sends REQUEST from this node's IPv6 address and prints the lease: the IPv4 address, its mask, the " +
    'TEP to tunnel to and the lease times. Asking again returns the same binding (renewing it).' +
    '\n\n' +
    'With --hold it keeps running: it renews before the lease ends, rides out server restarts, drops the ' +
    'address if the lease runs out (and sends a RELEASE, draft C.3), and releases on SIGINT or SIGTERM; ' +
    'SIGHUP is logged and ignored (the lease is kept). Under systemd it reports READY once it holds a ' +
    'lease (with --on-demand, once the DTI is up). It never touches DNS.' +
    '\n\n' +
    '--json prints the lease as one binding {ipv4, ipv6, tep4, tep6, starts, ends, mask, extend, keep}, ' +
    'times in seconds since 1970 UTC (dstm(1), JSON OUTPUT); with --hold one such object per line with ' +
    '"event" (lease, renewed, expired, released) added. See dstm-request(8).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    "<%= config.bin %> request --server '[2001:db8::10]:3786' --json",
    '<%= config.bin %> request --hold',
  ];

  static override flags = {
    ...exchangeFlags,
    lease: settingFlags(clientFields).lease,
    hold: Flags.boolean({ summary: 'Keep the lease: renew it until SIGINT or SIGTERM, then release it.' }),
    json: Flags.boolean({
      summary: 'Print the lease as JSON (dstm(1), JSON OUTPUT); with --hold one object per line.',
    }),
    ...dtiFlags,
    'log-level': logLevelFlag,
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(RequestCommand);
    let client: FailoverClient;
    let seconds: number;
    try {
      ({ client, lease: seconds } = await connectFromFlags(flags));
    } catch (err) {
      const { code, message } = classify(err);
      fail(this, message, code);
    }
    const show = (event: string, l: Lease): void => {
      if (flags.json) this.log(JSON.stringify(flags.hold ? { event, ...leaseJson(l) } : leaseJson(l)));
      else this.log(flags.hold ? `${event}: ${leaseText(l)}` : leaseText(l));
    };
    if (!flags.hold) {
      try {
        show('lease', await client.request(0, seconds));
      } catch (err) {
        await client.close();
        const { code, message } = classify(err);
        fail(this, message, code);
      }
      await client.close();
      return;
    }
    let log: Logger;
    let dti: DtiOptions | undefined;
    try {
      log = createLogger({ level: (flags['log-level'] as Level | undefined) ?? envLevel() }).child({
        component: 'node',
      });
      dti = dtiOptionsFromFlags(flags, log);
    } catch (err) {
      await client.close();
      fail(this, (err as Error).message, EXIT.usage);
    }
    try {
      await runDaemon(log, () =>
        startNode({
          client,
          seconds,
          dti,
          onDemand: flags['on-demand'],
          control: flags.control ?? DEFAULT_NODE_CONTROL_PATH,
          log,
          show,
        }),
      );
    } catch (err) {
      daemonFailed(this, err);
    }
  }
}
