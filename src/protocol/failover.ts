// Several DSTM servers sharing one store, called as one: each call goes to the server that answered last and, when
// that one cannot answer (connection refused, host or network unreachable, no reply within the timeout, or
// "unavailable": it cannot commit to the store), on to the next at once. A server that answers with a refusal has
// answered: the store is shared, so another server would refuse alike.
//
// The server knows a node by the source address of its call. Without --local, the first connection to each server
// calls from the source the kernel prefers; once a REQUEST has succeeded, every later connection (another server, or
// the same one after a failure) calls from the address that lease was made for, so a renewal is not taken for a new
// node when the kernel has come to prefer another address meanwhile (a temporary address deprecated, say).
import dgram from 'node:dgram';
import { RpcError } from '../rpc';
import { formatEndpoint } from '../lib/endpoint';
import { DstmClient, DstmRefusal, sourceAddressFor, type ClientOptions, type Lease, type LeaseRow } from './client';

/** What a lease keeper calls: one server (DstmClient) or several (FailoverClient). */
export interface LeaseCaller {
  /** The server that answered last (or will be called first), for messages and `dstm status`. */
  readonly server: string;
  request(current?: number, seconds?: number): Promise<Lease>;
  release(address?: number): Promise<Lease>;
}

const UNREACHABLE_KINDS = new Set(['TIMEOUT', 'UNREACHABLE', 'CLOSED', 'NOT_REGISTERED']);
const UNREACHABLE_CODES = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'ECONNREFUSED']);

/** The call never reached a server that could answer it (as opposed to a server's answer or a bug). */
export function isUnreachable(err: unknown): boolean {
  if (err instanceof RpcError) return UNREACHABLE_KINDS.has(err.kind);
  return UNREACHABLE_CODES.has((err as NodeJS.ErrnoException)?.code ?? '');
}

/** Worth trying the next server: unreachable, or a refusal that says only this server cannot serve now. */
function tryNext(err: unknown): boolean {
  return isUnreachable(err) || (err instanceof DstmRefusal && err.status === 'unavailable');
}

/** Every server was tried and none answered; `failures` in the order tried. */
export class NoServerAnswered extends Error {
  constructor(readonly failures: readonly { server: string; error: unknown }[]) {
    super(
      `no server answered: ${failures.map((f) => `${f.server}: ${(f.error as Error)?.message ?? String(f.error)}`).join('; ')}`,
    );
    this.name = 'NoServerAnswered';
  }
}

export interface FailoverOptions extends Omit<ClientOptions, 'host' | 'port'> {
  servers: readonly { host: string; port: number }[];
  /** The source the kernel prefers towards a server, when there is no --local or lease (tests inject one). */
  sourceFor?: (host: string, port: number) => Promise<string>;
}

/** Whether this host can still send from `address` (it may have been removed since the lease was made). */
async function canBindTo(address: string): Promise<boolean> {
  const s = dgram.createSocket({ type: 'udp6' });
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind({ address, port: 0 }, () => resolve());
    });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') return false;
    throw err;
  } finally {
    s.close();
  }
}

export class FailoverClient implements LeaseCaller {
  private readonly clients: (DstmClient | undefined)[];
  /** The server tried first: the one that answered last. */
  private current = 0;
  /** The IPv6 address of the last lease obtained: the source of every later connection while it can be bound. */
  private leased: string | undefined;

  constructor(private readonly o: FailoverOptions) {
    if (o.servers.length === 0) throw new Error('FailoverClient needs at least one server');
    this.clients = o.servers.map(() => undefined);
  }

  get server(): string {
    return this.clients[this.current]?.server ?? formatEndpoint(this.o.servers[this.current]);
  }

  async request(current = 0, seconds = 0): Promise<Lease> {
    const lease = await this.call((c) => c.request(current, seconds));
    this.leased = lease.local;
    return lease;
  }

  release(address = 0): Promise<Lease> {
    return this.call((c) => c.release(address));
  }

  /** Admin LIST from the first server that answers (pages are not split across servers). */
  async *list(page?: number): AsyncGenerator<LeaseRow> {
    yield* await this.call(async (c) => {
      const rows: LeaseRow[] = [];
      for await (const r of c.list(page)) rows.push(r);
      return rows;
    });
  }

  revoke(ipv6: string, ipv4 = 0): Promise<Lease> {
    return this.call((c) => c.revoke(ipv6, ipv4));
  }

  allocate(ipv6: string, ipv4 = 0, seconds = 0): Promise<Lease> {
    return this.call((c) => c.allocate(ipv6, ipv4, seconds));
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c?.close()));
    this.clients.fill(undefined);
  }

  /** `op` on each server in turn from the current one; with a single server its own error is thrown as is. */
  private async call<T>(op: (c: DstmClient) => Promise<T>): Promise<T> {
    const n = this.o.servers.length;
    const failures: { server: string; error: unknown }[] = [];
    for (let k = 0; k < n; k++) {
      const i = (this.current + k) % n;
      try {
        const result = await op(await this.client(i));
        this.current = i;
        return result;
      } catch (err) {
        if (!tryNext(err)) throw err;
        failures.push({ server: this.clients[i]?.server ?? formatEndpoint(this.o.servers[i]), error: err });
        await this.drop(i);
      }
    }
    throw n === 1 ? failures[0].error : new NoServerAnswered(failures);
  }

  private async client(i: number): Promise<DstmClient> {
    const at = this.o.servers[i];
    return (this.clients[i] ??= await DstmClient.connect({ ...this.o, ...at, local: await this.source(at) }));
  }

  /** --local, else the address of the lease held (while it exists on this host), else the kernel's choice. */
  private async source(at: { host: string; port: number }): Promise<string> {
    if (this.o.local !== undefined) return this.o.local;
    if (this.leased !== undefined && (await canBindTo(this.leased))) return this.leased;
    return (this.o.sourceFor ?? sourceAddressFor)(at.host, at.port);
  }

  /** Forget a server's connection; the next call to it starts afresh (a TCP client would otherwise keep retrying). */
  private async drop(i: number): Promise<void> {
    const c = this.clients[i];
    this.clients[i] = undefined;
    await c?.close().catch(() => undefined);
  }
}
