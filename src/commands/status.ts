import { Flags } from '@oclif/core';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { formatNodeStatus, DEFAULT_NODE_CONTROL_PATH, type NodeStatus } from '../node/status';
import { CONTROL_TIMEOUT_MS, queryControl } from '../lib/control';

const EXITS = [EXIT.ok, EXIT.usage, EXIT.unreachable];

export default class StatusCommand extends DstmCommand {
  static override summary = "Show a node's DTI state: lease, address, TEP, time remaining, packet counters";
  static override description =
    'Asks a running `dstm request --hold` on its control socket and prints the lease it holds (IPv4 ' +
    "address, mask, TEP, seconds until it runs out and until the next renewal, counted on this node's " +
    'clock) and its DTI (device, MTU, address, tunnel source and TEP, packets and bytes each way, drops ' +
    'by reason).' +
    '\n\n' +
    '--json prints one object {server, state, lease, dti}; lease is the binding of dstm(1), JSON OUTPUT, ' +
    'with remaining and renew_in. See dstm-status(8) for every key.' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> status',
    '<%= config.bin %> status --json --control /run/dstm/node.sock',
  ];

  static override flags = {
    control: Flags.string({
      helpValue: 'PATH',
      summary: `The node's control socket (no answer within ${CONTROL_TIMEOUT_MS / 1000} s: exit 7).`,
      default: DEFAULT_NODE_CONTROL_PATH,
    }),
    json: Flags.boolean({ summary: 'Print the state as one JSON object.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(StatusCommand);
    let s: NodeStatus;
    try {
      s = (await queryControl(flags.control, CONTROL_TIMEOUT_MS, 'node', 'state')) as NodeStatus;
    } catch (err) {
      fail(this, (err as Error).message, EXIT.unreachable);
    }
    if (flags.json) this.log(JSON.stringify(s, null, 2));
    else for (const line of formatNodeStatus(s)) this.log(line);
  }
}
