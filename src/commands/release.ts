import { Flags } from '@oclif/core';
import { classify } from '../cli/client';
import { leaseJson } from '../protocol/binding-json';
import { connectFromFlags, exchangeFlags } from '../cli/client-flags';
import type { FailoverClient } from '../protocol/failover';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { parseIPv4 } from '../lib/addr';

const EXITS = [
  EXIT.ok,
  EXIT.internal,
  EXIT.usage,
  EXIT.notAllowed,
  EXIT.noBinding,
  EXIT.unreachable,
  EXIT.serverError,
  EXIT.tls,
];

export default class ReleaseCommand extends DstmCommand {
  static override summary = "Release this node's IPv4 lease on the DSTM server";
  static override description =
    "Sends RELEASE from this node's IPv6 address; only the caller's own binding can be released. Without " +
    '--address it releases whatever this node holds.' +
    '\n\n' +
    '--json prints one object: released (true) and the binding {ipv4, ipv6, tep4, tep6, starts, ends, ' +
    'mask, extend, keep}; times in seconds since 1970 UTC (dstm(1), JSON OUTPUT). See dstm-release(8).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    "<%= config.bin %> release --server '[2001:db8::10]:3786'",
    '<%= config.bin %> release --address 192.0.2.7 --json',
  ];

  static override flags = {
    ...exchangeFlags,
    address: Flags.string({
      helpValue: 'IPV4',
      summary: 'The leased IPv4 address to release (default: the one this node holds).',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(ReleaseCommand);
    let address = 0;
    let client: FailoverClient;
    try {
      if (flags.address !== undefined) address = parseIPv4(flags.address);
    } catch (err) {
      fail(this, `--address: ${(err as Error).message}`, EXIT.usage);
    }
    try {
      ({ client } = await connectFromFlags(flags));
    } catch (err) {
      const { code, message } = classify(err);
      fail(this, message, code);
    }
    try {
      const l = await client.release(address);
      this.log(
        flags.json
          ? JSON.stringify({ released: true, ...leaseJson(l) })
          : `released ${l.address} (bound to ${l.local})`,
      );
    } catch (err) {
      await client.close();
      const { code, message } = classify(err);
      fail(this, message, code);
    }
    await client.close();
  }
}
