// Record marking for RPC over stream transports (RFC 5531 section 11): a record is one or more fragments, each
// behind a 4-byte header whose top bit marks the last fragment and whose low 31 bits give the fragment's length.
import type { XdrWriter } from './xdr/runtime';

export const LAST_FRAGMENT = 0x80000000;
/** The largest fragment a header can announce. */
export const MAX_FRAGMENT = 0x7fffffff;

/**
 * A fragmentSize option (default: one fragment per record), checked when a client or server is made rather than at
 * its first record, which would throw out of a socket's handler.
 */
export function fragmentSizeOf(option: number | undefined): number {
  const size = option ?? MAX_FRAGMENT;
  if (!(Number.isInteger(size) && size >= 1 && size <= MAX_FRAGMENT))
    throw new RangeError(`fragmentSize must be 1–${MAX_FRAGMENT}`);
  return size;
}

/** Fragments one record may have, by default. */
export const DEFAULT_MAX_FRAGMENTS = 4096;

/** Why a stream was cut off: a record over the maximum size, or of too many fragments. */
export type RecordCut = 'oversized' | 'fragments';

/**
 * Reassembles records from stream chunks. The maximum record size is enforced from each fragment header, before
 * any of the fragment is buffered, so a peer announcing a 2 GiB fragment costs nothing but the 4 header bytes.
 * A record that arrives in one piece is handed over as a view of its chunk (no copy); one that spans fragments or
 * chunks is copied into one buffer grown by doubling (never past the maximum record size), so a record costs its
 * bytes whatever its fragments: a flood of one-byte fragments cannot cost more than the bytes it carries. The
 * fragments of one record are capped too (`maxFragments`).
 */
export class RecordReader {
  /** The record being assembled, when it is not handed over as a view of its chunk. */
  private buf: Buffer | null = null;
  private size = 0;
  private fragments = 0;
  /** Bytes of the current fragment still to come; -1 while a header is being read. */
  private fragLeft = -1;
  private last = false;
  private readonly head = Buffer.alloc(4);
  private headHave = 0;
  private stopped = false;
  /** What followed the record during which stop() was called (e.g. a TLS ClientHello after an RPC-with-TLS probe). */
  private rest: Buffer | null = null;
  /** Records delivered so far. */
  records = 0;
  /** Why push() last cut the stream off. */
  cut: RecordCut | null = null;

  constructor(
    private readonly maxRecordSize: number,
    private readonly onRecord: (record: Buffer) => void,
    private readonly maxFragments = DEFAULT_MAX_FRAGMENTS,
  ) {}

  /** Stop delivering records (e.g. the connection is being closed from inside onRecord). */
  stop(): void {
    this.stopped = true;
    this.buf = null;
  }

  /**
   * Go on after a stop() made inside onRecord: the rest of that record's chunk is read now, as push() reads it (and
   * with its result).
   */
  resume(): string | null {
    this.stopped = false;
    const rest = this.takeRest();
    return rest ? this.push(rest) : null;
  }

  /** The bytes of the chunk being pushed that came after the record during which stop() was called (once). */
  takeRest(): Buffer | null {
    const r = this.rest;
    this.rest = null;
    return r;
  }

  /** Bytes buffered for the record being assembled. */
  get buffered(): number {
    return this.size;
  }

  /** Whether a record has begun (a byte of it, or of a fragment header, received) and is not complete. */
  get inRecord(): boolean {
    return this.fragments > 0 || this.headHave > 0;
  }

  /** Feed received bytes. Returns null, or why the stream must be cut off (see `cut` for the kind). */
  push(chunk: Buffer): string | null {
    if (this.stopped) return null;
    let off = 0;
    const n = chunk.length;
    while (off < n && !this.stopped) {
      if (this.fragLeft < 0) {
        let h: number;
        if (this.headHave === 0 && n - off >= 4) {
          h = chunk.readUInt32BE(off);
          off += 4;
        } else {
          const take = Math.min(4 - this.headHave, n - off);
          chunk.copy(this.head, this.headHave, off, off + take);
          this.headHave += take;
          off += take;
          if (this.headHave < 4) return null;
          this.headHave = 0;
          h = this.head.readUInt32BE(0);
        }
        this.last = h >= LAST_FRAGMENT;
        const len = h & MAX_FRAGMENT;
        if (this.size + len > this.maxRecordSize) {
          return this.cutOff(
            'oversized',
            `a fragment of ${len} bytes would make a record of ${this.size + len} bytes, over the maximum of ${this.maxRecordSize}`,
          );
        }
        if (++this.fragments > this.maxFragments) {
          return this.cutOff('fragments', `a record of more than ${this.maxFragments} fragments`);
        }
        this.fragLeft = len;
        if (this.last && this.size === 0 && n - off >= len) {
          // The whole record is in this chunk: hand it over as a view.
          off += len;
          this.deliver(chunk.subarray(off - len, off));
          continue;
        }
      }
      const take = Math.min(this.fragLeft, n - off);
      if (take > 0) {
        this.append(chunk, off, take);
        off += take;
        this.fragLeft -= take;
      }
      if (this.fragLeft === 0 && this.last) {
        const rec = this.buf ? this.buf.subarray(0, this.size) : Buffer.alloc(0);
        this.buf = null;
        this.deliver(rec);
      } else if (this.fragLeft === 0) this.fragLeft = -1;
    }
    if (this.stopped && off < n) this.rest = chunk.subarray(off); // stopped by a record's onRecord
    return null;
  }

  private append(chunk: Buffer, off: number, take: number): void {
    const need = this.size + take;
    if (!this.buf || this.buf.length < need) {
      const grown = Buffer.allocUnsafe(Math.min(this.maxRecordSize, Math.max(need, 2 * (this.buf?.length ?? 0), 256)));
      if (this.buf) this.buf.copy(grown, 0, 0, this.size);
      this.buf = grown;
    }
    chunk.copy(this.buf, this.size, off, off + take);
    this.size = need;
  }

  private deliver(rec: Buffer): void {
    this.fragLeft = -1;
    this.size = 0;
    this.fragments = 0;
    this.records++;
    this.onRecord(rec);
  }

  private cutOff(kind: RecordCut, why: string): string {
    this.cut = kind;
    this.stop();
    return why;
  }
}

/** Start a record in a reused writer: a placeholder for the fragment header, patched by endRecord. */
export function beginRecord(w: XdrWriter): void {
  w.reset();
  w.uint(0);
}

/**
 * Finish a record begun with beginRecord and return its bytes ready to send (a copy, so the writer can be reused).
 * A message longer than `fragmentSize` is split into several fragments.
 */
export function endRecord(w: XdrWriter, fragmentSize: number): Buffer {
  const len = w.pos - 4;
  if (len <= fragmentSize) {
    w.patchUint(0, (LAST_FRAGMENT | len) >>> 0);
    const out = Buffer.allocUnsafe(w.pos);
    out.set(w.buf.subarray(0, w.pos));
    return out;
  }
  return frameRecord(w.buf.subarray(4, w.pos), fragmentSize);
}

/** Frame a whole message as one record of fragments of at most `fragmentSize` bytes each. */
export function frameRecord(msg: Uint8Array, fragmentSize: number): Buffer {
  if (!(fragmentSize >= 1 && fragmentSize <= MAX_FRAGMENT))
    throw new RangeError(`fragment size ${fragmentSize} is not in 1..${MAX_FRAGMENT}`);
  const frags = Math.max(1, Math.ceil(msg.length / fragmentSize));
  const out = Buffer.allocUnsafe(msg.length + 4 * frags);
  let o = 0;
  for (let i = 0, at = 0; i < frags; i++) {
    const len = Math.min(fragmentSize, msg.length - at);
    out.writeUInt32BE(((i === frags - 1 ? LAST_FRAGMENT : 0) | len) >>> 0, o);
    out.set(msg.subarray(at, at + len), o + 4);
    o += 4 + len;
    at += len;
  }
  return out;
}
