// The embedded store's clock for lease times. Leases are granted as lengths (keep, extend) that nodes count on their
// own monotonic clocks, while the server reclaims an address once its clock passes `ends + hold`. Read straight from
// the wall clock, a step forward past `hold` (NTP, an operator) reclaimed and re-leased addresses whose nodes still
// used them: two nodes on one IPv4 address. (A PostgreSQL store takes its times from the database's clock instead.)
//
// This clock follows the wall clock backward at once (leases only last longer) but forward only gradually: it runs
// at most `1 + slew` times as fast as the monotonic clock, which NTP slews but never steps. A node's lease of L
// seconds then looks at most L * (1 + slew) long to the server, so with slew <= hold / max_lease no address is
// reclaimed before its node's lease (L <= max_lease) has ended by the node's own count. The slew is never below
// MIN_SLEW, so that a step is caught up with in a bounded time even with a hold of 0 (which gives up that guarantee:
// an address may then be reclaimed up to L * MIN_SLEW early while the clock catches up).
//
// The store keeps this clock's times, but the wire carries wall-clock times (xdr/dstm.x: absolute UTC seconds),
// which TEPs compare with their own clocks: a time t goes out as t + behind(), behind() read when the reply is
// encoded (DstmRpc). The time left a receiver sees (ends - wall) is then the time left by this clock, and:
// - a binding's published ends only shrinks as the clock catches up (behind() falls), by at most slew * L <= hold
//   over a lease of L, and when the server expires the lease (this clock reaches ends) the wall clock reads
//   ends + behind(), the value published then;
// - a receiver that got ends with R seconds left stops using the binding R seconds later by its clock, while the
//   server reclaims the address no sooner than (R + hold) / (1 + slew) seconds later, which is not earlier as long
//   as R * slew <= hold: the same bound as for nodes, so no TEP still forwards to the old node once the address is
//   another's.
// Without the translation a TEP got every grant already expired while the clock was behind by more than the lease.

export interface ClockSources {
  /** Wall-clock milliseconds since 1970 (Date.now). */
  wall(): number;
  /** Monotonic milliseconds (performance.now). */
  monotonic(): number;
}

const SYSTEM: ClockSources = { wall: () => Date.now(), monotonic: () => performance.now() };

/** Least catch-up rate: a forward step of S seconds is caught up with within S / MIN_SLEW seconds (1000 S). */
export const MIN_SLEW = 0.001;

export class LeaseClock {
  /** Wall minus monotonic time as this clock has it, milliseconds. */
  private offset: number;
  private lastMono: number;
  private lastWall: number;
  private rate: number;

  constructor(
    /** Largest extra rate at which the clock catches up with a wall clock that stepped forward (hold / max_lease). */
    slew: number,
    private readonly src: ClockSources = SYSTEM,
  ) {
    this.rate = Math.max(slew, MIN_SLEW);
    this.lastMono = src.monotonic();
    this.lastWall = src.wall();
    this.offset = this.lastWall - this.lastMono;
  }

  /** The catch-up rate in use: the slew asked for, at least MIN_SLEW. */
  get slew(): number {
    return this.rate;
  }

  set slew(s: number) {
    this.rate = Math.max(s, MIN_SLEW);
  }

  /** Follow the wall clock as far as allowed since the last reading. */
  private advance(): void {
    const mono = this.src.monotonic();
    const wall = this.src.wall();
    const target = wall - mono;
    if (target < this.offset) this.offset = target;
    else if (target > this.offset)
      this.offset = Math.min(target, this.offset + Math.max(0, mono - this.lastMono) * this.rate);
    this.lastMono = mono;
    this.lastWall = wall;
  }

  /** Seconds since 1970, for `starts` and `ends` in the store. */
  readonly now = (): number => {
    this.advance();
    return Math.floor((this.offset + this.lastMono) / 1000);
  };

  /** Seconds this clock is behind the wall clock (a forward step not caught up with yet), as now() counts them. */
  behind(): number {
    this.advance();
    return Math.floor(this.lastWall / 1000) - Math.floor((this.offset + this.lastMono) / 1000);
  }
}
