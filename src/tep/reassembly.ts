// The TEP's policy for IPv6 fragments of tunnel packets: the kernel reassembles them before its raw IPIP socket sees
// them (a raw socket for next header 4 gets whole packets only), with memory bounded by net.ipv6.ip6frag_high_thresh
// (4 MiB per network namespace by default) and time by net.ipv6.ip6frag_time (60 s); what never completes is
// dropped and counted by the kernel. These are its counters and limits, for `dstm tep stats`. A fragment that
// reached the TEP's pipeline anyway would be dropped and counted as ipv6_fragment.
import { readFileSync } from 'node:fs';
import { readSysctl } from '../dti/netconfig';

export interface ReassemblyStats {
  /** Fragments that needed reassembly; packets reassembled; reassemblies that failed (timeouts included); timeouts. */
  fragments: number;
  reassembled: number;
  failed: number;
  timeouts: number;
  memory_limit_bytes: number;
  timeout_seconds: number;
}

/**
 * The kernel's IPv6 reassembly counters and limits in this network namespace (every IPv6 fragment, not only tunnel
 * packets), or undefined.
 */
export function readReassembly(): ReassemblyStats | undefined {
  try {
    const snmp = new Map(
      readFileSync('/proc/net/snmp6', 'utf8')
        .split('\n')
        .map((l) => l.split(/\s+/) as [string, string]),
    );
    const n = (key: string): number => Number(snmp.get(key) ?? NaN);
    return {
      fragments: n('Ip6ReasmReqds'),
      reassembled: n('Ip6ReasmOKs'),
      failed: n('Ip6ReasmFails'),
      timeouts: n('Ip6ReasmTimeout'),
      memory_limit_bytes: Number(readSysctl('net.ipv6.ip6frag_high_thresh')),
      timeout_seconds: Number(readSysctl('net.ipv6.ip6frag_time')),
    };
  } catch {
    return undefined;
  }
}
