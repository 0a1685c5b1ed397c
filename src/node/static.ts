// `dstm static` (draft Annex A) as a library: its configuration (the "static" section with the command's flags on
// top), the fixed lease it puts on the DTI, and the equivalent iproute2 and KAME configuration --print shows.
import { formatIPv6 } from '../lib/addr';
import { annexALines, Dti, dtiUpCommands, type DtiLease, type DtiOptions } from './dti-node';
import type { Daemon } from '../lib/daemon';
import type { Logger } from '../lib/log';
import { loadSection } from '../config/load';
import { flagOverrides, type FlagsOf } from '../config/settings';
import { staticFields, type StaticConfig } from '../config/static-schema';
import { formatIp, ip } from '../dti/netconfig';

/** The command's flags: one per key that declares one (static-schema.ts), and --config. */
export type StaticFlags = FlagsOf<typeof staticFields> & { config?: string };

/** The "static" section with the flags on top, checked as a whole (a missing --tep or --address names its key). */
export function loadStaticConfig(flags: StaticFlags): StaticConfig {
  return loadSection(staticFields, 'static', flags.config, flagOverrides(staticFields, flags)).config;
}

/** The DTI's lease: the fixed address, the TEP (both families) and, if configured, the tunnel's IPv6 source. */
export function staticLease(c: StaticConfig): DtiLease {
  return { address: c.address, peer: c.peer, tep: c.tep, local: c.local };
}

/** The static DTI up with its fixed lease until stopped; SIGHUP changes nothing. `devices`/`system`: tests. */
export async function startStatic(
  c: StaticConfig,
  log: Logger,
  inject: Pick<DtiOptions, 'devices' | 'system'> = {},
): Promise<Daemon> {
  const dti = new Dti({ name: c.device, routes: c.routes, pathMtu: c.path_mtu, offload: c.offload, log, ...inject });
  try {
    await dti.start();
    await dti.up(staticLease(c));
  } catch (err) {
    dti.close();
    throw err;
  }
  return {
    reload: () => log.info('SIGHUP: nothing to reload, the DTI stays up'),
    async stop() {
      try {
        await dti.down();
      } finally {
        dti.close();
      }
    },
  };
}

/**
 * What --print shows: the same DTI as Linux iproute2 commands for a kernel with ip6_tunnel (an ipip6 device
 * standing in for the user-space DTI), then as Annex A's KAME lines. `local` is the tunnel's IPv6 source, if known.
 */
export function staticPrintLines(c: StaticConfig, local: Uint8Array | undefined): string[] {
  const lease = staticLease(c);
  const src = local ? formatIPv6(local) : 'LOCAL6';
  const tep = formatIPv6(c.tep);
  return [
    "# Linux iproute2, with the kernel's ip6_tunnel module doing what the dstm DTI does in userspace:",
    formatIp({
      args: ['-6', 'tunnel', 'add', c.device, 'mode', 'ipip6', 'local', src, 'remote', tep, 'encaplimit', 'none'],
    }),
    ...[ip.linkMtu(c.device, c.path_mtu - 40), ip.linkUp(c.device), ...dtiUpCommands(c.device, lease, c.routes)].map(
      (cmd) => formatIp(cmd),
    ),
    '# KAME (draft Annex A):',
    ...annexALines(src, tep, lease, c.routes),
  ];
}
