// The server's clock for lease times. Leases are granted as lengths (keep, extend) that nodes count on their own
// monotonic clocks, while the server reclaims an address once its clock passes `ends + hold`. Read straight from
// the wall clock, a step forward past `hold` (NTP, an operator) reclaimed and re-leased addresses whose nodes still
// used them: two nodes on one IPv4 address.
//
// This clock follows the wall clock backward at once (leases only last longer) but forward only gradually: it runs
// at most `1 + slew` times as fast as the monotonic clock, which NTP slews but never steps. A node's lease of L
// seconds then looks at most L * (1 + slew) long to the server, so with slew <= hold / max_lease no address is
// reclaimed before its node's lease (L <= max_lease) has ended by the node's own count.

export interface ClockSources {
  /** Wall-clock milliseconds since 1970 (Date.now). */
  wall(): number;
  /** Monotonic milliseconds (performance.now). */
  monotonic(): number;
}

const SYSTEM: ClockSources = { wall: () => Date.now(), monotonic: () => performance.now() };

export class LeaseClock {
  /** Wall minus monotonic time as this clock has it, milliseconds. */
  private offset: number;
  private lastMono: number;

  constructor(
    /** Largest extra rate at which the clock catches up with a wall clock that stepped forward (hold / max_lease). */
    public slew: number,
    private readonly src: ClockSources = SYSTEM,
  ) {
    this.lastMono = src.monotonic();
    this.offset = src.wall() - this.lastMono;
  }

  /** Seconds since 1970, for `starts` and `ends`. */
  readonly now = (): number => {
    const mono = this.src.monotonic();
    const target = this.src.wall() - mono;
    if (target < this.offset) this.offset = target;
    else if (target > this.offset)
      this.offset = Math.min(target, this.offset + Math.max(0, mono - this.lastMono) * this.slew);
    this.lastMono = mono;
    return Math.floor((this.offset + mono) / 1000);
  };

  /** Seconds this clock is behind the wall clock (a forward step not caught up with yet). */
  behind(): number {
    return Math.max(0, Math.round((this.src.wall() - this.src.monotonic() - this.offset) / 1000));
  }
}
