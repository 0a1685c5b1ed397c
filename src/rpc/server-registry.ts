// The programs, versions and procedures a server serves, with each procedure's transport policy and counters.
import { Histogram } from '../lib/metrics';
import { resultCounts, type ByTransport, type ResultCounts } from './server-stats';
import type { Handler, Procedure, ProgramVersion, Service } from './types';

/** How a procedure may be called; given per procedure name to RpcServer.register. */
export interface ProcedurePolicy {
  /**
   * Serve the procedure over TCP only; over UDP it is refused with AUTH_ERROR, AUTH_TOOWEAK before its arguments
   * are decoded. For calls that change state: a TCP handshake shows that the caller receives at its address, a UDP
   * source address can be forged.
   */
  tcpOnly?: boolean;
  /** Over UDP, the longest reply as a multiple of the call's length (default: the server's udpReplyRatio). */
  udpReplyRatio?: number;
}

export interface RegisterOptions {
  /** Policies by procedure name (as in the .x file); an unknown name is an error. */
  procedures?: Record<string, ProcedurePolicy>;
}

export interface ProcEntry {
  readonly name: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- heterogeneous procedures, typed where generated
  readonly proc: Procedure<any, any> | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each typed where it is registered
  readonly handler: Handler<any, any> | null;
  readonly tcpOnly: boolean;
  readonly udpReplyRatio: number;
  readonly counts: ByTransport<ResultCounts>;
  /** Seconds from decoded arguments to the reply, of the calls that reached the handler. */
  readonly latency: Histogram;
}

export interface VersionEntry {
  readonly definition: ProgramVersion;
  readonly program: number;
  readonly procs: Map<number, ProcEntry>;
  readonly nullProc: ProcEntry;
  /** Counts calls of procedure numbers not in the program (as PROC_UNAVAIL). */
  readonly unknownProc: ProcEntry;
}

export interface ProgramEntry {
  low: number;
  high: number;
  readonly versions: Map<number, VersionEntry>;
}

export class Registry {
  readonly programs = new Map<number, ProgramEntry>();

  constructor(private readonly udpReplyRatio: number) {}

  /** Add a program version; several versions of one program may be added. */
  add(service: Service, program: number, options: RegisterOptions = {}): void {
    const def = service.definition;
    let p = this.programs.get(program);
    if (!p) {
      p = { low: def.version, high: def.version, versions: new Map() };
      this.programs.set(program, p);
    }
    if (p.versions.has(def.version)) throw new Error(`program ${program} version ${def.version} is already registered`);
    const policies = new Map(Object.entries(options.procedures ?? {}));
    const procs = new Map<number, ProcEntry>();
    for (const [num, proc] of def.procedures) {
      if (num === 0) continue;
      const handler = service.handlers.get(num);
      if (!handler)
        throw new Error(`no handler for procedure ${proc.name} (${num}) of ${def.programName}.${def.versionName}`);
      procs.set(num, this.entry(proc.name, proc, handler, policies.get(proc.name)));
      policies.delete(proc.name);
    }
    if (policies.size > 0)
      throw new Error(`no procedure ${[...policies.keys()].join(', ')} in ${def.programName}.${def.versionName}`);
    const nullProc = this.entry('NULL', null, null);
    p.versions.set(def.version, {
      definition: def,
      program,
      procs,
      nullProc,
      unknownProc: this.entry('(unknown procedure)', null, null),
    });
    p.low = Math.min(p.low, def.version);
    p.high = Math.max(p.high, def.version);
  }

  *versions(): Iterable<VersionEntry> {
    for (const p of this.programs.values()) yield* p.versions.values();
  }

  private entry(
    name: string,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see ProcEntry
    proc: Procedure<any, any> | null,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see ProcEntry
    handler: Handler<any, any> | null,
    policy: ProcedurePolicy = {},
  ): ProcEntry {
    const ratio = policy.udpReplyRatio ?? this.udpReplyRatio;
    if (!(ratio > 0)) throw new RangeError(`udpReplyRatio of ${name} must be positive`);
    return {
      name,
      proc,
      handler,
      tcpOnly: policy.tcpOnly ?? false,
      udpReplyRatio: ratio,
      counts: [resultCounts(), resultCounts()],
      latency: new Histogram(),
    };
  }
}
