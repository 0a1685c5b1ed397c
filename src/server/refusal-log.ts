// Which refusals get a log line. Every refusal is counted in the metrics; the log is for reading, and one forged UDP
// datagram costs its sender a few bytes: a line per refusal would let anyone flood the log. A refusal gets a line at
// most once per reason and key (the caller, or the prefix of a limit) per interval, and whatever the keys (forged
// sources are countless) at most REFUSAL_LOG_BURST lines per reason per interval. The refusals left out are
// summed in one line per interval, written an interval after the first of them.
import type { Logger } from '../lib/log';
import { RateLimiter } from '../lib/rate-limit';

/** Seconds over which a key gets one refusal line, and a reason REFUSAL_LOG_BURST. */
export const REFUSAL_LOG_INTERVAL = 60;
/** Refusal lines per reason per REFUSAL_LOG_INTERVAL, over all keys. */
export const REFUSAL_LOG_BURST = 10;
/** Keys remembered (the least recently seen is forgotten first): about 100 bytes each. */
const KEYS = 4096;

export class RefusalLog {
  private readonly perKey: RateLimiter;
  private readonly perReason: RateLimiter;
  /** Refusals not logged since the last summary, by reason. */
  private readonly unlogged = new Map<string, number>();
  private summary: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly intervalS = REFUSAL_LOG_INTERVAL,
  ) {
    this.perKey = new RateLimiter({ rate: 1 / intervalS, burst: 1, maxKeys: KEYS });
    this.perReason = new RateLimiter({ rate: REFUSAL_LOG_BURST / intervalS, burst: REFUSAL_LOG_BURST, maxKeys: 64 });
  }

  /** Whether a refusal for `reason`, keyed by `key`, gets its line (at info); if not, it goes to the next summary. */
  admit(reason: string, key: string): boolean {
    if (!this.log.enabled('info')) return false;
    // The key's token first: a key refused again and again spends its own bucket, not its reason's.
    if (this.perKey.take(`${reason}|${key}`) && this.perReason.take(reason)) return true;
    this.unlogged.set(reason, (this.unlogged.get(reason) ?? 0) + 1);
    this.summary ??= setTimeout(() => this.summarize(), this.intervalS * 1000).unref();
    return false;
  }

  private summarize(): void {
    this.log.info('refusals not logged', { by_reason: Object.fromEntries(this.unlogged), within_s: this.intervalS });
    this.unlogged.clear();
    this.summary = undefined;
  }
}
