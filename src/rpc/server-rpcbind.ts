// Registering a server's program versions with the local rpcbind, and undoing it.
import { registerService, unregisterService, type RpcbindRegistration } from './rpcbind';
import { noop } from './server-peer';
import type { Registry } from './server-registry';
import type { Transport } from './types';

export class RpcbindRegistrations {
  private made: RpcbindRegistration[] = [];

  /** Every program version for every bound address (RFC 1833 v4, then v3, then portmap v2). */
  async register(
    registry: Registry,
    bound: readonly { transport: Transport; address: string; port: number }[],
    options: { rpcbindHost?: string; timeoutMs?: number },
  ): Promise<RpcbindRegistration[]> {
    const made: RpcbindRegistration[] = [];
    for (const [program, p] of registry.programs) {
      for (const version of p.versions.keys()) {
        for (const b of bound) {
          made.push(
            await registerService({
              program,
              version,
              transport: b.transport,
              address: b.address,
              port: b.port,
              ...options,
            }),
          );
        }
      }
    }
    this.made.push(...made);
    return made;
  }

  async unregister(): Promise<void> {
    const regs = this.made;
    this.made = [];
    for (const r of regs) await unregisterService(r).catch(noop);
  }
}
