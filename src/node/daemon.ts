// `dstm request --hold` as a library: the dual-stack node keeping its lease (through one server or several), the
// DTI carrying it when there is one, and the control socket `dstm status` reads. Started and stopped by runDaemon.
import type { Server } from 'node:net';
import type { Daemon } from '../lib/daemon';
import type { Logger } from '../lib/log';
import { serveControl } from '../lib/control';
import type { Lease } from '../protocol/client';
import type { LeaseCaller } from '../protocol/failover';
import { Dti, dtiHooks, type DtiOptions } from './dti-node';
import { LeaseKeeper } from './lease-keeper';
import { nodeStatus } from './status';

export type NodeEvent = 'lease' | 'renewed' | 'expired' | 'released';

export interface NodeOptions {
  /** The server(s); closed when the node stops (or fails to start). */
  client: LeaseCaller & { close(): Promise<void> };
  /** Lease length to ask for (0: the server's). */
  seconds: number;
  /** The DTI to bring up (opened at start), or none: the lease is only held. */
  dti?: DtiOptions;
  /** Bring the DTI up without an address and request on its first IPv4 packet (draft 5.1). */
  onDemand?: boolean;
  /** Unix socket for `dstm status`. */
  control: string;
  log: Logger;
  /** Each lease event, for the command's output. */
  show(event: NodeEvent, lease: Lease): void;
}

/** Starts the node; READY (the daemon's `ready`) once it holds a lease, or, on demand, once the DTI is up. */
export async function startNode(o: NodeOptions): Promise<Daemon> {
  let dti: Dti | undefined;
  try {
    dti = o.dti && new Dti(o.dti);
  } catch (err) {
    await o.client.close();
    throw new Error(`cannot bring up the DTI: ${(err as Error).message}`);
  }
  const keeper = new LeaseKeeper(o.client, { seconds: o.seconds, hooks: dti && dtiHooks(dti) });
  for (const event of ['lease', 'renewed', 'expired', 'released'] as const)
    keeper.on(event, (l: Lease) => o.show(event, l));
  keeper.on('error', (err: unknown) =>
    o.log.warn('lease call failed, retrying', {
      server: o.client.server,
      error: (err as Error)?.message ?? String(err),
    }),
  );
  keeper.on('unreleased', (l: Lease, err: unknown) =>
    o.log.warn('RELEASE failed: the server keeps the binding until it ends', {
      server: o.client.server,
      address: l.address,
      ends: l.ends,
      error: (err as Error)?.message ?? String(err),
    }),
  );
  const status = await serveStatus(o, keeper, dti);
  // on demand, the first IPv4 packet on the DTI starts the request (draft 5.1); the keeper then keeps requesting,
  // so a packet after a lease ended must not start it again
  let started = false;
  const trigger = (): void => {
    if (started) return;
    started = true;
    void keeper.start();
  };
  try {
    await dti?.start(o.onDemand ? trigger : undefined);
  } catch (err) {
    status?.close();
    dti?.close();
    await o.client.close();
    throw new Error(`cannot bring up the DTI: ${(err as Error).message}`);
  }
  let ready: Promise<unknown> = Promise.resolve();
  if (!o.onDemand) {
    started = true;
    ready = keeper.start();
    ready.catch(() => undefined); // a stop before the first lease rejects it
  }
  return {
    ready,
    reload: () => o.log.info('SIGHUP: nothing to reload, the lease is kept'),
    async stop() {
      await keeper.stop();
      status?.close();
      dti?.close();
      await o.client.close();
    },
  };
}

/** Serves `dstm status`; a socket that cannot be made is reported, not fatal to the lease. */
async function serveStatus(o: NodeOptions, keeper: LeaseKeeper, dti: Dti | undefined): Promise<Server | undefined> {
  try {
    return await serveControl(o.control, () => nodeStatus({ server: o.client.server, keeper, dti }));
  } catch (err) {
    o.log.warn('no status socket for dstm status', { path: o.control, error: (err as Error).message });
    return undefined;
  }
}
