// server.per_prefix: at most MAX nodes with an active binding in each IPv6 /LEN. Who holds what comes from the
// binding feed (the same durable changes the TEPs follow: grants, renewals, releases, expiries, revocations), read
// incrementally; admissions still in flight count too, so a burst of calls within one commit cannot overshoot.
import { prefixKey } from '../lib/rate-limit';
import type { PrefixCap } from '../config/server-schema';
import type { Change } from './store';

/** What the cap reads: the lease service's feed (durable changes after `since`; `reset`: start over from 0). */
export interface Feed {
  changes(since: number, max: number): Promise<{ changes: Change[]; more: boolean; next: number; reset?: boolean }>;
}

const PAGE = 10000;

export class PrefixCaps {
  /** Node (16 bytes as a latin1 string) -> the address it holds, and back. */
  private readonly nodeAddr = new Map<string, number>();
  private readonly addrNode = new Map<number, string>();
  /** Nodes holding a binding, and admissions in flight, per prefix key. */
  private readonly count = new Map<string, number>();
  private readonly pending = new Map<string, number>();
  private seq = 0;
  /** The feed read in progress, and the one queued after it (see catchUp). */
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(
    readonly cap: PrefixCap,
    private readonly feed: Feed,
  ) {}

  /**
   * May `node` take a new binding? A node that holds one (a renewal) always may. When it may, the admission counts
   * until `done()` is called (after the lease service answered) and the feed has been read past its change.
   */
  async admit(node: Uint8Array): Promise<{ ok: boolean; key: string; done(): void }> {
    await this.catchUp();
    const key = prefixKey(node, this.cap.len);
    if (this.nodeAddr.has(nodeKey(node))) return { ok: true, key, done: () => void this.catchUp() };
    const inFlight = this.pending.get(key) ?? 0;
    if ((this.count.get(key) ?? 0) + inFlight >= this.cap.max) return { ok: false, key, done: () => undefined };
    this.pending.set(key, inFlight + 1);
    const release = (): void => {
      const n = (this.pending.get(key) ?? 1) - 1;
      if (n > 0) this.pending.set(key, n);
      else this.pending.delete(key);
    };
    return { ok: true, key, done: () => void this.catchUp().then(release, release) };
  }

  /** Nodes holding a binding in `node`'s prefix. */
  async holders(node: Uint8Array): Promise<number> {
    await this.catchUp();
    return this.count.get(prefixKey(node, this.cap.len)) ?? 0;
  }

  /**
   * Reads the feed up to its end. One read at a time; a caller arriving during one waits for the next, which starts
   * after the caller's own change was committed and so sees it.
   */
  private catchUp(): Promise<void> {
    if (!this.running) {
      this.running = this.readAll().finally(() => (this.running = null));
      return this.running;
    }
    this.queued ??= this.running.then(
      () => this.next(),
      () => this.next(),
    );
    return this.queued;
  }

  private next(): Promise<void> {
    this.queued = null;
    return this.catchUp();
  }

  private async readAll(): Promise<void> {
    for (;;) {
      const r = await this.feed.changes(this.seq, PAGE);
      if (r.reset) this.clear();
      for (const c of r.changes) this.apply(c);
      this.seq = r.next;
      if (!r.more) return;
    }
  }

  private clear(): void {
    this.nodeAddr.clear();
    this.addrNode.clear();
    this.count.clear();
  }

  private apply(c: Change): void {
    // The feed keeps only each address's latest change: whoever held this address before has lost it.
    const prev = this.addrNode.get(c.ip4);
    if (prev !== undefined && this.nodeAddr.get(prev) === c.ip4) this.drop(prev);
    this.addrNode.delete(c.ip4);
    if (!c.active) return;
    const node = nodeKey(c.ip6);
    const held = this.nodeAddr.get(node);
    if (held !== undefined) this.drop(node); // the node moved to another address
    this.nodeAddr.set(node, c.ip4);
    this.addrNode.set(c.ip4, node);
    const key = prefixKey(c.ip6, this.cap.len);
    this.count.set(key, (this.count.get(key) ?? 0) + 1);
  }

  private drop(node: string): void {
    const addr = this.nodeAddr.get(node);
    this.nodeAddr.delete(node);
    if (addr !== undefined && this.addrNode.get(addr) === node) this.addrNode.delete(addr);
    const key = prefixKey(Buffer.from(node, 'latin1'), this.cap.len);
    const n = (this.count.get(key) ?? 1) - 1;
    if (n > 0) this.count.set(key, n);
    else this.count.delete(key);
  }
}

function nodeKey(ip6: Uint8Array): string {
  return Buffer.from(ip6.buffer, ip6.byteOffset, 16).toString('latin1');
}
