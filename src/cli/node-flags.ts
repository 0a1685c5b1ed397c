// The DTI flags of `dstm request` (the node side of issue 4), kept here so request.ts only spreads them in.
import { Flags } from '@oclif/core';
import type { Server } from 'node:net';
import { Dti, parseRoutes } from '../node/dti-node';
import type { Logger } from '../lib/log';
import { DEFAULT_NODE_CONTROL_PATH, nodeStatus, type NodeParts } from '../node/status';
import { serveControl } from '../lib/control';

export const dtiFlags = {
  device: Flags.string({
    summary: 'With --hold: bring up the DTI, a TUN device of this name, for the lease (address, routes, tunnel to the TEP; --dti until 0.2).',
    dependsOn: ['hold'],
    aliases: ['dti'],
    deprecateAliases: true,
  }),
  routes: Flags.string({ summary: 'IPv4 prefixes to route through the DTI, comma-separated or repeated (default: default).', multiple: true, dependsOn: ['device'] }),
  'on-demand': Flags.boolean({ summary: 'Bring the DTI up without an address and request the lease when the first IPv4 packet arrives (draft 5.1).', dependsOn: ['device'] }),
  control: Flags.string({ summary: 'With --hold: unix socket where `dstm status` reads the lease and the DTI.', default: DEFAULT_NODE_CONTROL_PATH }),
  'path-mtu': Flags.integer({ summary: 'Path MTU towards the TEP; the DTI\'s MTU is 40 less (default 1500).', min: 1280, dependsOn: ['device'] }),
};

export interface DtiFlags {
  device?: string;
  routes?: string[];
  'on-demand'?: boolean;
  'path-mtu'?: number;
  control: string;
}

/** The DTI the flags ask for (not started yet), or undefined without --device. */
export function dtiFromFlags(flags: DtiFlags, log: Logger): Dti | undefined {
  if (flags.device === undefined) return undefined;
  return new Dti({
    name: flags.device,
    routes: parseRoutes(flags.routes ?? ['default']),
    pathMtu: flags['path-mtu'] ?? 1500,
    log: log.child({ component: 'dti' }),
  });
}

/** Serves `dstm status` for a holding node; a socket that cannot be made is reported, not fatal to the lease. */
export async function serveNodeStatus(path: string, parts: NodeParts, log: Logger): Promise<Server | undefined> {
  try {
    return await serveControl(path, () => nodeStatus(parts));
  } catch (err) {
    log.warn('no status socket for dstm status', { path, error: (err as Error).message });
    return undefined;
  }
}
