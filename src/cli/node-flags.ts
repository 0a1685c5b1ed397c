// The DTI flags of `dstm request` (the node side of issue 4), kept here so request.ts only spreads them in.
import { Flags, type Interfaces } from '@oclif/core';
import { ifname, MAX_PATH_MTU } from '../config/types';
import { parseRoutes, type DtiOptions } from '../node/dti-node';
import type { Logger } from '../lib/log';
import { DEFAULT_NODE_CONTROL_PATH } from '../node/status';

export const dtiFlags = {
  device: Flags.string({
    helpValue: 'NAME',
    summary:
      'With --hold: bring up the DTI, a TUN device of this name, for the lease (address, routes, tunnel to the TEP; --dti until 0.2).',
    dependsOn: ['hold'],
    aliases: ['dti'],
    deprecateAliases: true,
  }),
  routes: Flags.string({
    helpValue: 'PREFIX',
    summary: 'IPv4 prefixes to route through the DTI, comma-separated or repeated (default: default).',
    multiple: true,
    dependsOn: ['device'],
  }),
  'on-demand': Flags.boolean({
    summary:
      'Bring the DTI up without an address and request the lease when the first IPv4 packet arrives (draft 5.1).',
    dependsOn: ['device'],
  }),
  // no oclif default: dependsOn would count it as given and refuse every call without --hold
  control: Flags.string({
    helpValue: 'PATH',
    summary: `With --hold: unix socket where \`dstm status\` reads the lease and the DTI (default ${DEFAULT_NODE_CONTROL_PATH}).`,
    dependsOn: ['hold'],
  }),
  'path-mtu': Flags.integer({
    helpValue: 'BYTES',
    summary: `Path MTU towards the TEP, 1280 to ${MAX_PATH_MTU}; the DTI's MTU is 40 less (default 1500).`,
    min: 1280,
    max: MAX_PATH_MTU,
    dependsOn: ['device'],
  }),
  offload: Flags.boolean({
    allowNo: true,
    summary:
      'TUN offloads on the DTI: segment and coalesce TCP super-packets (default on where the kernel has them; --no-offload: the plain device).',
    dependsOn: ['device'],
  }),
};

export type DtiFlags = Interfaces.InferredFlags<typeof dtiFlags>;

/**
 * The DTI the flags ask for (opened when the node starts), or undefined without --device; a bad --device (checked as
 * dstm tep's and dstm static's are, not left to the kernel) or bad --routes throw.
 */
export function dtiOptionsFromFlags(flags: DtiFlags, log: Logger): DtiOptions | undefined {
  if (flags.device === undefined) return undefined;
  return {
    name: ifname.parse(flags.device, '--device'),
    routes: parseRoutes(flags.routes ?? ['default']),
    pathMtu: flags['path-mtu'] ?? 1500,
    offload: flags.offload ?? true,
    log: log.child({ component: 'dti' }),
  };
}
