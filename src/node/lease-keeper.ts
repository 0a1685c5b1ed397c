// Keeps a node's lease alive (draft section 6 "the client MUST renew", C.3): obtains a lease, renews it after the
// server's `extend` interval, retries a failed renewal until the lease's valid lifetime (`keep`) runs out, and then
// drops the address and sends a RELEASE (C.3 rule 2) before starting over. stop() drops the address and releases.
// Timers count from the local time each request was first sent, so clock skew between node and server does not
// matter, and a reply delayed by retransmissions does not make the lease look longer than the server's. Never
// touches DNS.
//
// Elapsed time is the larger of the monotonic clock's and the wall clock's: on Linux the monotonic clock (and
// setTimeout) stops while the system is suspended, the wall clock does not, and the server's lease ran on meanwhile.
// So the keeper waits in slices of at most sliceMs and looks at both clocks after each: a node resumed after the
// renewal time renews at once, one resumed after the lease's end drops it at once.
//
// The data plane plugs in through hooks: up() runs before a lease is announced (configure the DTI) and again when a
// renewal names another TEP for the same address, down() runs when it ends (remove the address and routes). A hook
// that throws is reported as 'error' and, for up() of a new lease, the lease is released and requested again later;
// for up() of a renewal (a new TEP: the DTI may have lost the address on the way), the lease is kept and up() is
// tried again, with backoff, until it works.
import { EventEmitter } from 'node:events';
import { parseIPv4 } from '../lib/addr';
import { DstmRefusal, type Lease } from '../protocol/client';
import type { LeaseCaller } from '../protocol/failover';

export type DownReason = 'expired' | 'released' | 'replaced';

export interface LeaseHooks {
  up?(lease: Lease): Promise<void> | void;
  down?(lease: Lease, reason: DownReason): Promise<void> | void;
}

export interface LeaseKeeperOptions {
  /** Lease length to ask for, seconds (0: the server's default). */
  seconds?: number;
  hooks?: LeaseHooks;
  /** First retry delay after a failure, ms (1000), doubling up to retryMaxMs (30000). */
  retryMs?: number;
  retryMaxMs?: number;
  /** Longest single wait, ms (30000): how late after a resume from suspend the keeper notices the time passed. */
  sliceMs?: number;
  /** Tests inject clocks; default performance.now and Date.now. */
  clock?: KeeperClock;
}

/** Milliseconds on a clock that stops during suspend (monotonic) and on one that does not (wall). */
export interface KeeperClock {
  monotonic(): number;
  wall(): number;
}

type Stamp = { mono: number; wall: number };

/**
 * Seconds after the lease's request at which to renew it: the server's `extend`, but never less than a second (a zero
 * `extend` must not renew in a loop) and, when it is not before `keep` (a server that says renew after the end), half
 * of `keep`, so the node renews while the lease still holds instead of using the address past its end.
 */
export function renewAfter(lease: Pick<Lease, 'extend' | 'keep'>): number {
  return Math.max(1, lease.extend < lease.keep ? lease.extend : lease.keep / 2);
}

const SYSTEM_CLOCK: KeeperClock = { monotonic: () => performance.now(), wall: () => Date.now() };

/**
 * Events: 'lease' (lease) when a lease is obtained (after hooks.up); 'renewed' (lease); 'expired' (lease) when it
 * ran out unrenewed; 'released' (lease) after stop(); 'error' (err) for every failed attempt (the keeper retries);
 * 'unreleased' (lease, err) before 'released' when stop()'s RELEASE failed, which is not retried: the server keeps
 * the binding until it ends.
 */
export class LeaseKeeper extends EventEmitter {
  private lease: Lease | undefined;
  /** When the reply that gave (or last renewed) the lease arrived: extend and keep count from here. */
  private got: Stamp = { mono: 0, wall: 0 };
  /** False while the lease's last up() failed: the data plane may lack it, so up() is retried. */
  private applied = true;
  private stopped = false;
  private wake: (() => void) | null = null;
  private loop: Promise<void> | null = null;
  private readonly retryMs: number;
  private readonly retryMaxMs: number;
  private readonly sliceMs: number;
  private readonly clock: KeeperClock;

  constructor(
    private readonly client: LeaseCaller,
    private readonly options: LeaseKeeperOptions = {},
  ) {
    super();
    this.retryMs = options.retryMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? 30_000;
    this.sliceMs = options.sliceMs ?? 30_000;
    this.clock = options.clock ?? SYSTEM_CLOCK;
  }

  get current(): Lease | undefined {
    return this.lease;
  }

  /** Ms since the current lease was requested, time suspended included (0 without a lease): what its times count from. */
  get leaseAge(): number {
    return this.lease ? this.elapsed(this.got) : 0;
  }

  /** Start keeping a lease; resolves with the first one (it keeps trying until it gets one or stop() is called). */
  start(): Promise<Lease> {
    if (this.loop) throw new Error('LeaseKeeper already started');
    const first = new Promise<Lease>((resolve, reject) => {
      this.once('lease', resolve);
      this.once('stopped', () => reject(new Error('stopped before a lease was obtained')));
    });
    first.catch(() => undefined);
    this.loop = this.run();
    return first;
  }

  /**
   * Stop: run hooks.down, then release the lease, once (a failure is 'unreleased' first), and emit 'released': the
   * node has given the address up. The address goes first, as when a lease runs out: once the server has it back the
   * lease is over, and the RELEASE's reply can take retransmissions (or never come).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    const lease = this.lease;
    this.lease = undefined;
    if (lease) {
      await this.down(lease, 'released');
      try {
        await this.client.release(parseIPv4(lease.address));
      } catch (err) {
        // "No binding": the server ended it already (its lease ran out there, or it was revoked).
        if (!(err instanceof DstmRefusal && err.status === 'no_binding')) this.emit('unreleased', lease, err);
      }
      this.emit('released', lease);
    }
    this.emit('stopped');
  }

  private async run(): Promise<void> {
    let delay = this.retryMs;
    while (!this.stopped) {
      const lease = this.lease;
      if (!lease) {
        if (await this.acquire()) delay = this.retryMs;
        else delay = await this.backoff(delay, this.now(), Infinity);
        continue;
      }
      const got = this.got;
      const keepMs = lease.keep * 1000;
      const renewMs = renewAfter(lease) * 1000;
      // A renewal whose up() failed is set up again meanwhile (renew() tries again too).
      let setup = this.retryMs;
      while (!this.stopped && this.lease === lease && !this.applied && this.elapsed(got) < renewMs) {
        if (await this.apply(lease)) break;
        setup = await this.backoff(setup, got, renewMs);
      }
      // Never past the lease's end (keep below a second): it is dropped then, renewed or not.
      await this.waitUntil(got, Math.min(renewMs, keepMs));
      // Renew until it works or the lease runs out: at its end the address goes down, even with a renewal under way
      // (failing over through unreachable servers takes up to servers x timeout), whose answer then comes too late.
      delay = this.retryMs;
      while (!this.stopped && this.lease === lease) {
        const renewal = this.elapsed(got) < keepMs ? this.renew(lease) : undefined;
        const outcome = renewal ? await this.beforeEnd(renewal, keepMs - this.elapsed(got)) : 'late';
        if (outcome === true) break;
        if (this.stopped) {
          await renewal; // stop() releases the lease, after the renewal's answer
          break;
        }
        if (outcome === 'late') {
          await this.expire(lease, renewal);
          // A second at least from one REQUEST to the next, as between renewals: a lease of keep 0 must not loop.
          await this.waitUntil(got, 1000);
          break;
        }
        delay = await this.backoff(delay, got, keepMs);
      }
    }
  }

  private async acquire(): Promise<boolean> {
    let lease: Lease;
    // Timed from the request's first send, not its reply (which retransmissions may delay by a whole timeout): the
    // node never counts a lease as longer than the server does.
    const got = this.now();
    try {
      lease = await this.client.request(0, this.options.seconds ?? 0);
    } catch (err) {
      this.report(err);
      return false;
    }
    if (this.stopped) {
      this.lease = lease; // stop() releases it
      return true;
    }
    try {
      await this.options.hooks?.up?.(lease);
    } catch (err) {
      this.report(err);
      await this.client.release(parseIPv4(lease.address)).catch((e: unknown) => this.report(e));
      return false;
    }
    this.lease = lease;
    this.got = got;
    this.applied = true;
    this.emit('lease', lease);
    return true;
  }

  /**
   * What `renewal` resolves to, or 'late' once `ms` have passed (or stop() was called) without an answer; the renewal
   * goes on.
   */
  private async beforeEnd(renewal: Promise<boolean>, ms: number): Promise<boolean | 'late'> {
    const end = this.sleep(ms).then(() => 'late' as const);
    try {
      return await Promise.race([renewal, end]);
    } finally {
      this.wake?.(); // ends the sleep (and its timer) when the renewal came first
    }
  }

  private async renew(old: Lease): Promise<boolean> {
    let lease: Lease;
    const got = this.now(); // as in acquire()
    try {
      lease = await this.client.request(parseIPv4(old.address), this.options.seconds ?? 0);
    } catch (err) {
      this.report(err);
      return false;
    }
    // The lease ran out while the renewal was under way: its address is down and expire() releases it.
    if (this.lease !== old) return false;
    if (lease.address === old.address) {
      // The same binding; a server sharing the store may name another TEP: the DTI moves its tunnel, keeping the
      // address.
      if (!this.applied || lease.tep6 !== old.tep6 || lease.tep4 !== old.tep4) await this.apply(lease);
      this.lease = lease;
      this.got = got;
      this.emit('renewed', lease);
      return true;
    }
    // The server gave something else (it lost or revoked the old binding): take the old one down first.
    this.lease = undefined;
    await this.down(old, 'replaced');
    this.emit('expired', old);
    try {
      await this.options.hooks?.up?.(lease);
    } catch (err) {
      this.report(err);
      await this.client.release(parseIPv4(lease.address)).catch((e: unknown) => this.report(e));
      return true;
    }
    this.lease = lease;
    this.got = got;
    this.applied = true;
    this.emit('lease', lease);
    return true;
  }

  /** hooks.up() for a lease kept whether it works or not; records whether it did. */
  private async apply(lease: Lease): Promise<boolean> {
    try {
      await this.options.hooks?.up?.(lease);
      this.applied = true;
    } catch (err) {
      this.report(err);
      this.applied = false;
    }
    return this.applied;
  }

  /**
   * C.3 rule 2: the valid lifetime ended without renewal: drop the address, then tell the server, once a renewal
   * still under way has had its answer (one call at a time).
   */
  private async expire(lease: Lease, renewal?: Promise<boolean>): Promise<void> {
    this.lease = undefined;
    await this.down(lease, 'expired');
    this.emit('expired', lease);
    await renewal;
    await this.client.release(parseIPv4(lease.address)).catch((e: unknown) => this.report(e));
  }

  /** 'error' is informational here (the keeper retries), so an unheard one must not throw. */
  private report(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private async down(lease: Lease, reason: DownReason): Promise<void> {
    try {
      await this.options.hooks?.down?.(lease, reason);
    } catch (err) {
      this.report(err);
    }
  }

  private now(): Stamp {
    return { mono: this.clock.monotonic(), wall: this.clock.wall() };
  }

  /** Ms since `from`: the larger of the two clocks' (the monotonic one stops during suspend; see the top). */
  private elapsed(from: Stamp): number {
    return Math.max(this.clock.monotonic() - from.mono, this.clock.wall() - from.wall);
  }

  /** Sleep `delay` ms (but not past `limitMs` after `from`), and return the next delay. */
  private async backoff(delay: number, from: Stamp, limitMs: number): Promise<number> {
    await this.waitUntil(from, Math.min(this.elapsed(from) + delay, limitMs));
    return Math.min(delay * 2, this.retryMaxMs);
  }

  /** Until `ms` have elapsed since `from` (or stop()), in slices so that time spent suspended is noticed. */
  private async waitUntil(from: Stamp, ms: number): Promise<void> {
    for (;;) {
      const left = ms - this.elapsed(from);
      if (this.stopped || left <= 0) return;
      await this.sleep(Math.min(left, this.sliceMs));
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.min(ms, 0x7fffffff));
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
