// Record marking for RPC over stream transports (RFC 5531 section 11): a record is one or more fragments, each
// behind a 4-byte header whose top bit marks the last fragment and whose low 31 bits give the fragment's length.
import type { XdrWriter } from './xdr/runtime';

export const LAST_FRAGMENT = 0x80000000;
/** The largest fragment a header can announce. */
export const MAX_FRAGMENT = 0x7fffffff;

/**
 * Reassembles records from stream chunks. The maximum record size is enforced from each fragment header, before
 * any of the fragment is buffered, so a peer announcing a 2 GiB fragment costs nothing but the 4 header bytes.
 * Records are handed over as views of the received chunks when they arrive in one piece (no copy).
 */
export class RecordReader {
  private readonly parts: Buffer[] = [];
  private size = 0;
  /** Bytes of the current fragment still to come; -1 while a header is being read. */
  private fragLeft = -1;
  private last = false;
  private readonly head = Buffer.alloc(4);
  private headHave = 0;
  private stopped = false;
  /** What followed the record during which stop() was called (e.g. a TLS ClientHello after an RPC-with-TLS probe). */
  private rest: Buffer | null = null;

  constructor(
    private readonly maxRecordSize: number,
    private readonly onRecord: (record: Buffer) => void,
  ) {}

  /** Stop delivering records (e.g. the connection is being closed from inside onRecord). */
  stop(): void {
    this.stopped = true;
    this.parts.length = 0;
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

  /** Feed received bytes. Returns null, or why the stream must be cut off (a record over the maximum size). */
  push(chunk: Buffer): string | null {
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
          this.stop();
          return `a fragment of ${len} bytes would make a record of ${this.size + len} bytes, over the maximum of ${this.maxRecordSize}`;
        }
        this.fragLeft = len;
      }
      const take = Math.min(this.fragLeft, n - off);
      if (take > 0) {
        this.parts.push(take === n && off === 0 ? chunk : chunk.subarray(off, off + take));
        this.size += take;
        off += take;
        this.fragLeft -= take;
      }
      if (this.fragLeft === 0) {
        this.fragLeft = -1;
        if (this.last) {
          const rec = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.size);
          this.parts.length = 0;
          this.size = 0;
          this.onRecord(rec);
          if (this.stopped && off < n) this.rest = chunk.subarray(off);
        }
      }
    }
    return null;
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
  if (!(fragmentSize >= 1 && fragmentSize <= MAX_FRAGMENT)) throw new RangeError(`fragment size ${fragmentSize} is not in 1..${MAX_FRAGMENT}`);
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
