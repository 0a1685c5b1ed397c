import { DstmCommand, fail } from '../../cli/command';
import { EXIT, exitHelp } from '../../cli/exit-codes';
import { Flags } from '@oclif/core';
import { storeFlags, storeFromFlags } from '../../cli/store-flags';
import { exportLeases } from '../../server/lease-io';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class LeasesExportCommand extends DstmCommand {
  static override summary = "Write every binding of the server's store as JSON lines (backup, migration)";
  static override description =
    'Reads the store directly (no server needed: the SQLite store read-only, which is safe while the server runs; ' +
    'a PostgreSQL store in one snapshot) and prints one binding per line, in address order, in the JSON form of ' +
    'dstm leases --json: {ipv4, ipv6, tep4, tep6, starts, ends, state}, times in seconds since 1970 UTC, held and ' +
    'revoked bindings with the time their hold counts from. The TEP columns come from the configuration. ' +
    'dstm leases import reads this back, into the same store or another (SQLite to PostgreSQL). See dstm-leases(8).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> leases export > dstm-leases.jsonl',
    '<%= config.bin %> leases export --state-dir /var/lib/dstm',
    "<%= config.bin %> leases export --store 'postgresql://dstm@db.example/dstm'",
  ];

  static override flags = {
    ...storeFlags,
    json: Flags.boolean({ summary: 'Errors as JSON on stderr (the output is JSON lines in any case).' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(LeasesExportCommand);
    const { policy, open } = storeFromFlags(this, flags);
    const store = await open('export');
    try {
      for await (const line of exportLeases(store, policy)) {
        // Waits for a slow reader (a pipe) instead of buffering the whole store.
        if (!process.stdout.write(`${line}\n`)) await new Promise((r) => process.stdout.once('drain', r));
      }
    } catch (err) {
      await store.close();
      fail(this, (err as Error).message, EXIT.internal);
    }
    await store.close();
  }
}
