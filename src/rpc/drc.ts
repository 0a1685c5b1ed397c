// The server's duplicate request cache. A UDP client that hears no reply sends the same call again with the same
// XID; the cache makes the server answer it with the reply it already sent (or drop it while the first is still
// running) instead of running the procedure twice. Keyed on XID, peer address and port, and a checksum of the call
// so an XID reused for a different call is not mistaken for a retransmission. Bounded in entries and reply bytes;
// the oldest entries go first.

/** A cached call: `reply` is null while the first copy of the call is still being served. */
export interface DrcEntry {
  reply: Buffer | null;
}

/** FNV-1a over the call after its XID (at most 256 bytes of it), mixed with the length. */
function checksum(call: Uint8Array): number {
  let h = 0x811c9dc5 ^ call.length;
  const end = Math.min(call.length, 4 + 256);
  for (let i = 4; i < end; i++) h = Math.imul(h ^ call[i], 0x01000193);
  return h >>> 0;
}

export class DuplicateCache {
  private readonly map = new Map<string, DrcEntry>();
  private bytes = 0;

  constructor(
    readonly maxEntries: number,
    readonly maxBytes: number,
  ) {}

  get size(): number {
    return this.map.size;
  }

  static key(address: string, port: number, xid: number, call: Uint8Array): string {
    return `${xid}/${checksum(call)}/${port}/${address}`;
  }

  get(key: string): DrcEntry | undefined {
    return this.map.get(key);
  }

  /** Record that a call is being served; returns the entry to complete with the reply. */
  begin(key: string): DrcEntry {
    const e: DrcEntry = { reply: null };
    this.map.set(key, e);
    if (this.map.size > this.maxEntries) this.evictOldest();
    return e;
  }

  /** Store the reply sent for a call (only if its entry is still cached). */
  complete(key: string, e: DrcEntry, reply: Buffer): void {
    if (this.map.get(key) !== e) return;
    e.reply = reply;
    this.bytes += reply.length;
    while (this.bytes > this.maxBytes && this.map.size > 0) this.evictOldest();
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  private evictOldest(): void {
    const first = this.map.entries().next().value as [string, DrcEntry];
    this.map.delete(first[0]);
    if (first[1].reply) this.bytes -= first[1].reply.length;
  }
}
