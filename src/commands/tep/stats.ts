import { Command, Flags } from '@oclif/core';
import { EXIT, exitHelp, fail } from '../../cli/exit-codes';
import { DEFAULT_CONTROL_PATH, queryControl } from '../../lib/control';
import type { TepStats } from '../../tep/tep';

const EXITS = [EXIT.ok, EXIT.usage, EXIT.unreachable];

export default class TepStatsCommand extends Command {
  static override summary = 'Show a running TEP\'s counters: packets by direction, drops by reason, bindings';
  static override description = `Reads the statistics of the TEP answering on the control socket. --json prints {forwarded: {toIpv4, toIpv6,
bytesToIpv4, bytesToIpv6}, drops: {REASON: n}, events: {NAME: n}, bindingCount, bindings: [{ipv4, ipv6, source, ends,
forwarded}] (the first 10000), topTalkers: [the same, 10], pathMtuLowered, ipv6Reassembly}.
${exitHelp(EXITS)}`;

  static exitCodes = EXITS;

  static override examples = ['<%= config.bin %> tep stats', '<%= config.bin %> tep stats --json --control /run/dstm/tep.sock'];

  static override flags = {
    control: Flags.string({ summary: 'The TEP\'s control socket.', default: DEFAULT_CONTROL_PATH }),
    json: Flags.boolean({ summary: 'Print the counters as JSON.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(TepStatsCommand);
    let s: TepStats;
    try {
      s = (await queryControl(flags.control)) as TepStats;
    } catch (err) {
      fail(this, (err as Error).message, EXIT.unreachable);
    }
    if (flags.json) {
      this.log(JSON.stringify(s, null, 2));
      return;
    }
    const f = s.forwarded;
    this.log(`offload             ${s.events.offload_active ? 'on (TUN super-packets segmented and coalesced)' : 'off (plain TUN device)'}`);
    this.log(`forwarded to IPv4   ${f.toIpv4} packets, ${f.bytesToIpv4} bytes`);
    this.log(`forwarded to IPv6   ${f.toIpv6} packets, ${f.bytesToIpv6} bytes`);
    const drops = Object.entries(s.drops).filter(([, n]) => n > 0);
    this.log(drops.length ? 'dropped:' : 'dropped: none');
    for (const [reason, n] of drops) this.log(`  ${reason.padEnd(22)} ${n}`);
    this.log(`hairpinned          ${s.events.hairpinned ?? 0} packets`);
    this.log(`top talkers: ${s.topTalkers.length ? '' : 'none'}`);
    for (const b of s.topTalkers) {
      const f = b.forwarded;
      this.log(`  ${b.ipv4.padEnd(15)} ${b.ipv6.padEnd(39)} from node ${f.toIpv4}/${f.bytesToIpv4} B, to node ${f.toIpv6}/${f.bytesToIpv6} B`);
    }
    this.log(`bindings: ${s.bindingCount}${s.bindingCount > s.bindings.length ? ` (first ${s.bindings.length} shown)` : ''}`);
    for (const b of s.bindings) {
      const ends = b.ends === null ? 'never' : new Date(b.ends).toISOString();
      const f = b.forwarded;
      this.log(`  ${b.ipv4.padEnd(15)} ${b.ipv6.padEnd(39)} ${b.source.padEnd(6)} ends ${ends}  packets ${f.toIpv4} from, ${f.toIpv6} to the node`);
    }
  }
}
