// Follows the DSTM server's binding feed (program version 2, BINDINGS) for a TEP: a long poll that returns at once
// when something changed after the last position seen and otherwise waits. Keeps the current binding table and
// reports it as events, so the TEP never has to interpret raw changes:
//   'bind'   (b: FeedBinding)  ip6 is now bound to ip4 (new, renewed or moved)
//   'unbind' (b: FeedBinding)  that binding ended (released, expired, revoked, or replaced by another node's)
//   'resync' (info: {epoch, size})  a complete state has been loaded (first start, or the server's store was rebuilt);
//                                   bindings that disappeared were unbound and new ones bound before this event
//   'error'  (err, server)      a call to `server` failed; the feed moves on to the next server (with one server,
//                               the same one) and backs off once every server failed in a row
//   'server' (server)           the feed now follows this server ([IPV6]:PORT), after the one before failed
// With several servers (sharing one store) the feed follows one; when a call to it fails it moves to the next and
// carries on from the same epoch and sequence, so the table is kept; a server of another epoch sends a complete
// state, which replaces the table as one diff (bindings present in both are not unbound).
import { EventEmitter } from 'node:events';
import { RPC_TWO_Client, type dstm_bindings_reply, type dstm_change } from './generated/dstm';
import { RpcClient, type TlsClientOptions } from '../rpc';
import { formatIPv4, formatIPv6, ipv4FromBytes } from '../lib/addr';
import { formatEndpoint } from '../lib/endpoint';
import { DstmRefusal } from './client';
import { statusName } from './status';

export interface FeedBinding {
  ip6: string;
  ip4: string;
  /** Absolute seconds (server clock). */
  starts: number;
  /** Absolute seconds: the binding is void after this, even if no 'unbind' arrives (server unreachable). */
  ends: number;
}

export interface BindingFeedOptions {
  /** Servers to follow, in order; one at a time. */
  servers: readonly { host: string; port: number }[];
  program: number;
  /** How long each call may be held by the server, ms (25000). */
  waitMs?: number;
  /** Changes per call (the server caps it). */
  max?: number;
  retryMs?: number;
  retryMaxMs?: number;
  /** Local address to call from (must be in the server's tep_allow or be a configured TEP). */
  local?: string;
  /** RPC-with-TLS towards the server (its mutual policy wants a TEP certificate). */
  tls?: TlsClientOptions;
  /**
   * Takes each complete state whole (and is awaited before the feed goes on), instead of 'bind'/'unbind' events for
   * its difference: a TEP applies it by generation, in chunks, without stopping forwarding.
   */
  onSnapshot?: (bindings: Iterable<FeedBinding>) => Promise<void>;
}

/** Bindings by both addresses; a new binding displaces whatever held its IPv4 or its IPv6 address. */
class Table {
  readonly by4 = new Map<string, FeedBinding>();
  readonly by6 = new Map<string, FeedBinding>();

  /** Apply one change; calls back for what it ends and what it starts. */
  apply(c: FeedBinding, active: boolean, onUnbind: (b: FeedBinding) => void, onBind: (b: FeedBinding) => void): void {
    if (!active) {
      const cur = this.by4.get(c.ip4);
      if (cur && cur.ip6 === c.ip6) this.remove(cur, onUnbind);
      return;
    }
    const old4 = this.by4.get(c.ip4);
    if (old4 && old4.ip6 !== c.ip6) this.remove(old4, onUnbind);
    const old6 = this.by6.get(c.ip6);
    if (old6 && old6.ip4 !== c.ip4) this.remove(old6, onUnbind);
    this.by4.set(c.ip4, c);
    this.by6.set(c.ip6, c);
    onBind(c);
  }

  remove(b: FeedBinding, onUnbind: (b: FeedBinding) => void): void {
    this.by4.delete(b.ip4);
    if (this.by6.get(b.ip6) === b) this.by6.delete(b.ip6);
    onUnbind(b);
  }
}

const ignore = (): void => undefined;

export class BindingFeed extends EventEmitter {
  private table = new Table();
  private epoch = 0n;
  private since = 0n;
  private stopped = false;
  private rpc: RpcClient | null = null;
  /** Index in o.servers of the server followed. */
  private at = 0;
  private loop: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private readonly onBind = (b: FeedBinding): boolean => this.emit('bind', b);
  private readonly onUnbind = (b: FeedBinding): boolean => this.emit('unbind', b);

  constructor(private readonly o: BindingFeedOptions) {
    super();
    if (o.servers.length === 0) throw new Error('BindingFeed needs at least one server');
  }

  /** The server followed now, [IPV6]:PORT. */
  get server(): string {
    return formatEndpoint(this.o.servers[this.at]);
  }

  /** Current bindings by IPv4 address (dotted quad). */
  get byIPv4(): ReadonlyMap<string, FeedBinding> {
    return this.table.by4;
  }

  /** Current bindings by IPv6 address (RFC 5952 text). */
  get byIPv6(): ReadonlyMap<string, FeedBinding> {
    return this.table.by6;
  }

  get position(): { epoch: bigint; since: bigint } {
    return { epoch: this.epoch, since: this.since };
  }

  /** Start following; resolves after the first complete state has been loaded ('resync'). */
  start(): Promise<void> {
    if (this.loop) throw new Error('BindingFeed already started');
    const synced = new Promise<void>((resolve) => this.once('resync', () => resolve()));
    this.loop = this.run();
    return synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.rpc?.close();
    await this.loop;
  }

  private async run(): Promise<void> {
    const retryMs = this.o.retryMs ?? 500;
    let delay = retryMs;
    const waitMs = this.o.waitMs ?? 25_000;
    // A complete state being collected (first start or new epoch), applied as one diff when it is complete.
    let snapshot: Table | null = null;
    // calls failed in a row: once every server has failed, back off before the next round
    let failed = 0;
    while (!this.stopped) {
      let r: dstm_bindings_reply;
      try {
        // A lost connection fails the call at once (no reconnect), so the feed can move on to the next server.
        const { host, port } = this.o.servers[this.at];
        // The connect (and TLS setup) gives up after the client's default timeout, 10 s, so a server that drops
        // packets holds the feed (and stop()) no longer than that before it moves on.
        if (!this.rpc) {
          const rpc = await RpcClient.connect({
            host,
            port,
            transport: 'tcp',
            program: this.o.program,
            version: 2,
            family: 6,
            localAddress: this.o.local,
            reconnect: false,
            tls: this.o.tls,
          });
          // stop() ran meanwhile and closed nothing: this socket would keep the process alive
          if (this.stopped) return await rpc.close();
          this.rpc = rpc;
        }
        const c = new RPC_TWO_Client(this.rpc, this.o.program);
        r = await c.BINDINGS(
          { since: this.since, max: this.o.max ?? 0, wait_ms: snapshot ? 0 : waitMs, epoch: this.epoch },
          { timeoutMs: waitMs + 10_000, signal: this.abort.signal },
        );
        const s = statusName(r.status);
        if (s !== 'ok') throw new DstmRefusal(s, this.rpc.where);
      } catch (err) {
        if (this.stopped) return await this.rpc?.close();
        if (this.listenerCount('error') > 0) this.emit('error', err, this.server);
        const rpc = this.rpc;
        this.rpc = null;
        await rpc?.close();
        if (++failed % this.o.servers.length === 0) {
          await sleep(delay, this.abort.signal);
          delay = Math.min(delay * 2, this.o.retryMaxMs ?? 10_000);
        }
        if (this.o.servers.length > 1 && !this.stopped) {
          this.at = (this.at + 1) % this.o.servers.length;
          this.emit('server', this.server);
        }
        continue;
      }
      failed = 0;
      delay = retryMs;
      if (r.epoch !== this.epoch) {
        // First call, or the server's store was rebuilt: this reply starts a complete state from 0.
        this.epoch = r.epoch;
        snapshot = new Table();
      }
      const into = snapshot ?? this.table;
      for (const c of r.changes)
        into.apply(toBinding(c), c.active, snapshot ? ignore : this.onUnbind, snapshot ? ignore : this.onBind);
      this.since = r.next;
      if (snapshot && !r.more) {
        await this.replace(snapshot);
        snapshot = null;
      }
    }
  }

  /** Make the table equal to a complete state: unbind what is gone, bind what is new or changed. */
  private async replace(next: Table): Promise<void> {
    if (this.o.onSnapshot) {
      this.table = next;
      await this.o.onSnapshot(next.by4.values());
      this.emit('resync', { epoch: this.epoch, size: next.by4.size });
      return;
    }
    for (const b of [...this.table.by4.values()]) {
      const n = next.by4.get(b.ip4);
      if (!n || n.ip6 !== b.ip6) this.table.remove(b, this.onUnbind);
    }
    for (const b of next.by4.values()) {
      const cur = this.table.by4.get(b.ip4);
      if (!cur || cur.ends !== b.ends || cur.starts !== b.starts) this.table.apply(b, true, this.onUnbind, this.onBind);
    }
    this.emit('resync', { epoch: this.epoch, size: this.table.by4.size });
  }
}

function toBinding(c: dstm_change): FeedBinding {
  return { ip6: formatIPv6(c.ip6), ip4: formatIPv4(ipv4FromBytes(c.ip4)), starts: c.starts, ends: c.ends };
}

/** Sleeps `ms` or until `signal` aborts; the abort listener goes with the sleep (the feed retries for ever). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
