// A throwaway PostgreSQL cluster for tests: initdb into a temporary directory owned by the postgres user
// (PostgreSQL refuses to run as root), pg_ctl start listening on [::1] and a free port with the socket directory in
// the temporary directory; stop() stops it and removes everything. Outside CI a machine without PostgreSQL skips
// the tests that need it, saying why; under CI=true a missing PostgreSQL fails them.
import { execFile, execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Context } from 'mocha';
import pg from 'pg';
import { skipIf } from './skip';

const run = promisify(execFile);
/** The newest PostgreSQL server binaries Debian installed (15 on bookworm), unless DSTM_PG_BIN names others. */
export const PG_BIN = process.env.DSTM_PG_BIN ?? newestPostgres('/usr/lib/postgresql');

function newestPostgres(root: string): string {
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)) : [];
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0] ?? '15';
  return join(root, newest, 'bin');
}

/** Why PostgreSQL cannot run here, or undefined when it can. */
export function postgresMissing(): string | undefined {
  if (!existsSync(join(PG_BIN, 'initdb')) || !existsSync(join(PG_BIN, 'pg_ctl')))
    return `no PostgreSQL server binaries in ${PG_BIN} (apt-get install postgresql)`;
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
    } catch {
      return 'no "postgres" user to run PostgreSQL as (apt-get install postgresql)';
    }
  }
  return undefined;
}

/** In a suite's before(): skip outside CI when PostgreSQL is missing; fail under CI=true. */
export function needPostgres(ctx: Context): void {
  const why = postgresMissing();
  if (why && process.env.CI === 'true') throw new Error(`PostgreSQL is needed under CI: ${why}`);
  skipIf(ctx, why);
}

async function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '::1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export class PostgresCluster {
  private dbs = 0;

  private constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  /** The superuser's URL for `database`. */
  url(database = 'postgres'): string {
    return `postgresql://postgres@[::1]:${this.port}/${database}`;
  }

  static async start(): Promise<PostgresCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'dstm-pg-'));
    chmodSync(dir, 0o755);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
      const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
      chownSync(dir, uid, gid);
    }
    const c = new PostgresCluster(dir, await freeTcpPort());
    await c.pg('initdb', ['-D', c.data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale', 'C']);
    await c.pgStart();
    return c;
  }

  get data(): string {
    return join(this.dir, 'data');
  }

  /** Run a PostgreSQL program as the postgres user (as ourselves when not root). */
  private async pg(program: string, args: string[]): Promise<string> {
    const bin = join(PG_BIN, program);
    const [cmd, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
    try {
      return (await run(cmd, argv, { cwd: this.dir, timeout: 60_000 })).stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`${program} failed: ${e.stderr || e.message}`);
    }
  }

  private pgStart(): Promise<string> {
    const opts = `-c listen_addresses=::1 -p ${this.port} -c unix_socket_directories=${this.dir} -c fsync=on -c max_connections=200`;
    return this.pg('pg_ctl', ['-D', this.data, '-l', join(this.dir, 'log'), '-o', opts, '-w', '-t', '60', 'start']);
  }

  /** Stop the cluster (`mode`: fast, or immediate to crash it) and start it again on the same port. */
  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.stopServer(mode);
    await this.pgStart();
  }

  async stopServer(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.pg('pg_ctl', ['-D', this.data, '-m', mode, '-w', 'stop']);
  }

  async startServer(): Promise<void> {
    await this.pgStart();
  }

  /**
   * Stop (SIGSTOP) or continue (SIGCONT) the postmaster and every backend: a database host that stops answering with
   * no reset, as one that vanished, while its connections stay open.
   */
  signal(sig: 'SIGSTOP' | 'SIGCONT'): void {
    const postmaster = Number(readFileSync(join(this.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    const children = execFileSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' }).split('\n');
    for (const pid of [postmaster, ...children.filter(Boolean).map(Number)]) process.kill(pid, sig);
  }

  /** A new empty database; its URL. */
  async createDatabase(): Promise<string> {
    const name = `dstm_test_${process.pid}_${++this.dbs}`;
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  /**
   * A login role that must give `password` (SCRAM) over TCP, owning a new database; that database's URL without the
   * password. The rest of the cluster stays trust-authenticated.
   */
  async passwordDatabase(role: string, password: string): Promise<string> {
    const hba = join(this.data, 'pg_hba.conf');
    writeFileSync(hba, `host all ${role} ::1/128 scram-sha-256\n${readFileSync(hba, 'utf8')}`);
    await this.pg('pg_ctl', ['-D', this.data, 'reload']);
    const url = await this.createDatabase();
    const db = new URL(url).pathname.slice(1);
    await this.sql(
      this.url(),
      `CREATE ROLE ${role} LOGIN PASSWORD '${password}'; ALTER DATABASE ${db} OWNER TO ${role}`,
    );
    return url.replace('postgresql://postgres@', `postgresql://${role}@`);
  }

  /** Run SQL as the superuser on `url`. */
  async sql(url: string, text: string): Promise<pg.QueryResult> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await c.query(text);
    } finally {
      await c.end();
    }
  }

  async stop(): Promise<void> {
    await this.stopServer('immediate').catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
