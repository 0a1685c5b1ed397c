// The DTI flags of `dstm request` (the node side of issue 4), kept here so request.ts only spreads them in.
import { Flags } from '@oclif/core';
import { Dti, parseRoutes } from '../client/dti-node';
import { createLogger } from '../log';

export const dtiFlags = {
  dti: Flags.string({ summary: 'With --hold: bring up the DTI, a TUN device of this name, for the lease (address, routes, tunnel to the TEP).', dependsOn: ['hold'] }),
  routes: Flags.string({ summary: 'IPv4 prefixes to route through the DTI, comma-separated or repeated (default: default).', multiple: true, dependsOn: ['dti'] }),
  'on-demand': Flags.boolean({ summary: 'Bring the DTI up without an address and request the lease when the first IPv4 packet arrives (draft 5.1).', dependsOn: ['dti'] }),
  'path-mtu': Flags.integer({ summary: 'Path MTU towards the TEP; the DTI\'s MTU is 40 less (default 1500).', min: 1280, dependsOn: ['dti'] }),
};

export interface DtiFlags {
  dti?: string;
  routes?: string[];
  'on-demand'?: boolean;
  'path-mtu'?: number;
}

/** The DTI the flags ask for (not started yet), or undefined without --dti. */
export function dtiFromFlags(flags: DtiFlags): Dti | undefined {
  if (flags.dti === undefined) return undefined;
  return new Dti({
    name: flags.dti,
    routes: parseRoutes(flags.routes ?? ['default']),
    pathMtu: flags['path-mtu'] ?? 1500,
    log: createLogger().child({ component: 'dti' }),
  });
}
