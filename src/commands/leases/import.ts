import { Args, Flags } from '@oclif/core';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { DstmCommand, fail } from '../../cli/command';
import { EXIT, exitHelp } from '../../cli/exit-codes';
import { storeFlags, storeFromFlags } from '../../cli/store-flags';
import { ImportRules, LeaseLineError, readLeaseLines, restoreLeases } from '../../server/lease-io';
import { StoreInUse } from '../../server/store';

const EXITS = [EXIT.ok, EXIT.internal, EXIT.usage, EXIT.cannotStart];

export default class LeasesImportCommand extends DstmCommand {
  static override summary = 'Restore bindings from JSON lines (dstm leases export) into a store no server is using';
  static override description =
    'Reads FILE (- for standard input), one binding per line as dstm leases export writes them, checks every ' +
    'line (JSON, addresses, an ipv4 the server would lease, the state, duplicate addresses, at most one active or ' +
    'held binding per node), then writes them all in one transaction, or nothing: an error names the line. ' +
    'Held and revoked bindings keep their state and time, so their hold ends when it would have. The store is ' +
    'opened directly and exclusively: the import is refused while a server has it open (stop every server on it ' +
    'first). Without --replace a line whose address, or whose node, has a binding in the store refuses the whole ' +
    'import; with it the store is emptied first. Either way the store gets a new epoch: every TEP starts over ' +
    'from the whole state.' +
    '\n\n' +
    '--json prints {action, imported, replace, epoch} (the epoch as a decimal string). See dstm-leases(8).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> leases import dstm-leases.jsonl --state-dir /var/lib/dstm.new',
    "<%= config.bin %> leases export --state-dir /var/lib/dstm | <%= config.bin %> leases import - --store 'postgresql://dstm@db.example/dstm'",
    '<%= config.bin %> leases import backup.jsonl --replace',
  ];

  static override args = {
    file: Args.string({ description: 'JSON lines to import; - for standard input', required: true }),
  };

  static override flags = {
    ...storeFlags,
    replace: Flags.boolean({
      default: false,
      summary: "Empty the store first: it then holds exactly the file's bindings.",
    }),
    json: Flags.boolean({ summary: 'Print the result as JSON (dstm(1), JSON OUTPUT).' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeasesImportCommand);
    const name = args.file === '-' ? 'standard input' : args.file;
    const { policy, open } = storeFromFlags(this, flags);
    // Every line is checked before the store is opened: a bad file touches nothing.
    let parsed: Awaited<ReturnType<typeof readLeaseLines>>;
    try {
      const input = args.file === '-' ? process.stdin : await openInput(args.file);
      parsed = await readLeaseLines(input, new ImportRules(policy));
    } catch (err) {
      // a read that fails after the open (EISDIR: FILE is a directory) names the file as the open's failure does
      const code = (err as NodeJS.ErrnoException).code;
      const why = err instanceof LeaseLineError ? `, ${err.message}` : `: ${code ?? (err as Error).message}`;
      fail(this, `${name}${why}`, EXIT.usage);
    }
    const store = await open('restore');
    let result: { imported: number; epoch: bigint };
    try {
      result = await restoreLeases(store, parsed, flags.replace);
    } catch (err) {
      await store.close();
      if (err instanceof LeaseLineError) fail(this, `${name}, ${err.message}`, EXIT.usage);
      fail(this, (err as Error).message, err instanceof StoreInUse ? EXIT.cannotStart : EXIT.internal);
    }
    await store.close();
    const { imported, epoch } = result;
    this.log(
      flags.json
        ? JSON.stringify({ action: 'import', imported, replace: flags.replace, epoch: epoch.toString() })
        : `imported ${imported} binding${imported === 1 ? '' : 's'} into ${store.where} (new epoch ${epoch})`,
    );
  }
}

/** The file, opened before the store, so a wrong name costs nothing. */
function openInput(file: string): Promise<Readable> {
  return new Promise((resolve, reject) => {
    const s = createReadStream(file);
    s.once('error', reject);
    s.once('open', () => resolve(s));
  });
}
