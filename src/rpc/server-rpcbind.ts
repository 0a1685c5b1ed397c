// Registering a server's program versions with rpcbind, and undoing it with the same rpcbind.
import { registerService, unregisterService, type RpcbindRegistration, type RpcbindTarget } from './rpcbind';
import { noop } from './server-peer';
import type { Registry } from './server-registry';
import type { Transport } from './types';

export class RpcbindRegistrations {
  private made: { reg: RpcbindRegistration; target: RpcbindTarget }[] = [];

  /**
   * Every program version for every bound address (RFC 1833 v4, then v3, then portmap v2). All or none: a failure
   * undoes those made before it (they would otherwise outlive the server in rpcbind) and is thrown.
   */
  async register(
    registry: Registry,
    bound: readonly { transport: Transport; address: string; port: number }[],
    target: RpcbindTarget,
  ): Promise<RpcbindRegistration[]> {
    const made: RpcbindRegistration[] = [];
    try {
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
                ...target,
              }),
            );
          }
        }
      }
    } catch (e) {
      for (const reg of made) await unregisterService(reg, target).catch(noop);
      throw e;
    }
    this.made.push(...made.map((reg) => ({ reg, target })));
    return made;
  }

  async unregister(): Promise<void> {
    const regs = this.made;
    this.made = [];
    for (const { reg, target } of regs) await unregisterService(reg, target).catch(noop);
  }
}
