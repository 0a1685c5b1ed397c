import { Command, Flags } from '@oclif/core';
import { classify, leaseJson, leaseText } from '../client/cli';
import { connectFromFlags, exchangeFlags } from '../client/flags';
import type { DstmClient, Lease } from '../client/dstm-client';
import { LeaseKeeper } from '../client/lease-keeper';
import { dtiHooks } from '../client/dti-node';
import { dtiFlags, dtiFromFlags, serveNodeStatus } from '../node/flags';

export default class RequestCommand extends Command {
  static override summary = 'Obtain a temporary IPv4 address (a lease) from the DSTM server';
  static override description = `Sends REQUEST from this node's IPv6 address and prints the lease: the IPv4 address, its mask, the TEP to
tunnel to and the lease times. Asking again returns the same binding (renewing it). With --hold it keeps running:
it renews before the lease ends, rides out server restarts, drops the address if the lease runs out (and sends a
RELEASE, draft C.3), and releases on SIGINT or SIGTERM. It never touches DNS. See dstm-request(8).
Exit codes: 0 leased, 2 usage or configuration error, 3 not allowed, 4 no address free, 6 server unreachable or no
reply, 7 server error, 1 anything else.`;

  static override examples = ['<%= config.bin %> request --server [2001:db8::10]:3786 --json', '<%= config.bin %> request --hold'];

  static override flags = {
    ...exchangeFlags,
    lease: Flags.integer({ summary: 'Lease length to ask for, in seconds (default 0: the server decides).' }),
    hold: Flags.boolean({ summary: 'Keep the lease: renew it until SIGINT or SIGTERM, then release it.' }),
    ...dtiFlags,
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(RequestCommand);
    let client: DstmClient;
    let seconds: number;
    try {
      ({ client, lease: seconds } = await connectFromFlags(flags));
    } catch (err) {
      const { code, message } = classify(err);
      this.fail(message, code);
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
        this.fail(message, code);
      }
      await client.close();
      return;
    }
    let dti;
    try {
      dti = dtiFromFlags(flags);
    } catch (err) {
      await client.close();
      this.fail(classify(err).message, classify(err).code);
    }
    const keeper = new LeaseKeeper(client, { seconds, hooks: dti && dtiHooks(dti) });
    keeper.on('lease', (l: Lease) => show('lease', l));
    keeper.on('renewed', (l: Lease) => show('renewed', l));
    keeper.on('expired', (l: Lease) => show('expired', l));
    keeper.on('released', (l: Lease) => show('released', l));
    keeper.on('error', (err: unknown) => process.stderr.write(`dstm request: ${classify(err).message} (retrying)\n`));
    const status = await serveNodeStatus(flags.control, { server: client.server, keeper, dti });
    // on demand, the first IPv4 packet on the DTI starts the request (draft 5.1)
    await dti?.start(flags['on-demand'] ? () => void keeper.start() : undefined);
    if (!flags['on-demand']) void keeper.start();
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await keeper.stop();
    status?.close();
    dti?.close();
    await client.close();
  }

  private fail(message: string, code: number): never {
    process.stderr.write(`dstm request: ${message}\n`);
    return this.exit(code);
  }
}
