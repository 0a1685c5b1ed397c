import { Flags } from '@oclif/core';
import { DstmCommand, fail } from '../../cli/command';
import { EXIT, exitHelp } from '../../cli/exit-codes';
import { CONTROL_TIMEOUT_MS, DEFAULT_CONTROL_PATH, queryControl } from '../../lib/control';
import type { TepStats } from '../../tep/tep';

const EXITS = [EXIT.ok, EXIT.usage, EXIT.unreachable];

export default class TepStatsCommand extends DstmCommand {
  static override summary = "Show a running TEP's counters: packets by direction, drops by reason, bindings";
  static override description =
    'Reads the statistics of the TEP answering on the control socket.' +
    '\n\n' +
    '--json prints {forwarded: {to_ipv4, to_ipv6, bytes_to_ipv4, bytes_to_ipv6}, drops: {REASON: n} (with ' +
    'kernel_rx_overflow and tun_tx_dropped, what the kernel dropped in front of the TEP), ' +
    'events: {NAME: n}, binding_count, bindings: [{ipv4, ipv6, tep4, tep6, starts, ends, source, forwarded}] ' +
    '(the first 10000), top_talkers: [the same, 10], path_mtu_lowered, ipv6_reassembly, queues: [{to_ipv4, ' +
    'to_ipv6, bytes_to_ipv4, bytes_to_ipv6, dropped, path_mtu_lowered, binding_count}, one per forwarding ' +
    'queue]}; times in seconds ' +
    'since 1970 UTC, null for static mappings (dstm(1), JSON OUTPUT).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> tep stats',
    '<%= config.bin %> tep stats --json --control /run/dstm/tep.sock',
  ];

  static override flags = {
    control: Flags.string({
      helpValue: 'PATH',
      summary: `The TEP's control socket (no answer within ${CONTROL_TIMEOUT_MS / 1000} s: exit 7).`,
      default: DEFAULT_CONTROL_PATH,
    }),
    json: Flags.boolean({ summary: 'Print the counters as JSON.' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(TepStatsCommand);
    let s: TepStats;
    try {
      s = (await queryControl(flags.control, CONTROL_TIMEOUT_MS, 'TEP', 'forwarded')) as TepStats;
    } catch (err) {
      fail(this, (err as Error).message, EXIT.unreachable);
    }
    if (flags.json) {
      this.log(JSON.stringify(s, null, 2));
      return;
    }
    const f = s.forwarded;
    this.log(
      `offload             ${s.events.offload_active ? 'on (TUN super-packets segmented and coalesced)' : 'off (plain TUN device)'}`,
    );
    this.log(
      `TUN batches         ${s.events.tun_uring ? 'io_uring (one system call a batch)' : 'read()/write() (one system call a packet)'}`,
    );
    this.log(`forwarded to IPv4   ${f.to_ipv4} packets, ${f.bytes_to_ipv4} bytes`);
    this.log(`forwarded to IPv6   ${f.to_ipv6} packets, ${f.bytes_to_ipv6} bytes`);
    // a TEP from before --queues answers without the field
    if ((s.queues?.length ?? 1) > 1) {
      this.log(`queues              ${s.queues.length}, packets to IPv4 / to IPv6 on each:`);
      s.queues.forEach((q, i) =>
        this.log(`  ${String(i).padEnd(18)} ${q.to_ipv4} / ${q.to_ipv6}, ${q.dropped} dropped`),
      );
    }
    const drops = Object.entries(s.drops).filter(([, n]) => n > 0);
    this.log(drops.length ? 'dropped:' : 'dropped: none');
    for (const [reason, n] of drops) this.log(`  ${reason.padEnd(22)} ${n}`);
    this.log(`hairpinned          ${s.events.hairpinned ?? 0} packets`);
    this.log(`top talkers: ${s.top_talkers.length ? '' : 'none'}`);
    for (const b of s.top_talkers) {
      const f = b.forwarded;
      this.log(
        `  ${b.ipv4.padEnd(15)} ${b.ipv6.padEnd(39)} from node ${f.to_ipv4}/${f.bytes_to_ipv4} B, to node ${f.to_ipv6}/${f.bytes_to_ipv6} B`,
      );
    }
    this.log(
      `bindings: ${s.binding_count}${s.binding_count > s.bindings.length ? ` (first ${s.bindings.length} shown)` : ''}`,
    );
    for (const b of s.bindings) {
      const ends = b.ends === null ? 'never' : new Date(b.ends * 1000).toISOString();
      const f = b.forwarded;
      this.log(
        `  ${b.ipv4.padEnd(15)} ${b.ipv6.padEnd(39)} ${b.source.padEnd(6)} ends ${ends}  packets ${f.to_ipv4} from, ${f.to_ipv6} to the node`,
      );
    }
  }
}
