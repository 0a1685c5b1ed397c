// When a durable round (SQLite's sync, a PostgreSQL batch) should start. The nodes one round answered tend to call
// again together: a round started on the first of them leaves the others to the next one, so each node waits for
// two rounds instead of one, and the store pays for twice as many. A round therefore waits, for at most a fraction
// of a round's usual duration, until as many calls as the last round answered (plus those already waiting when it
// ended) have gathered. Under a steady load the wait is mostly cut short by the last of them arriving.

/** Longest wait for the expected calls, as a fraction of a round's duration (moving average). */
export const GATHER_FRACTION = 0.4;

export class Gathering {
  /** Calls the last round answered plus those already waiting when it ended: about as many will join the next. */
  private expected = 0;
  /** Moving average of a round's duration, milliseconds. */
  private roundMs: number;
  /** When the round being gathered began to wait (performance.now()), or 0. */
  private since = 0;

  constructor(initialRoundMs: number) {
    this.roundMs = initialRoundMs;
  }

  /** Milliseconds still worth waiting before a round for `have` calls starts; 0: start it now. */
  left(have: number, now = performance.now()): number {
    if (have >= this.expected) return 0;
    if (this.since === 0) this.since = now;
    return Math.max(0, this.since + this.roundMs * GATHER_FRACTION - now);
  }

  /** A round starts: the next one gathers afresh. */
  started(): void {
    this.since = 0;
  }

  /** A round that took `ms` answered `answered` calls; `waiting` more were already waiting for the next one. */
  ended(ms: number, answered: number, waiting: number): void {
    this.roundMs += (ms - this.roundMs) / 8;
    this.expected = answered + waiting;
  }
}
