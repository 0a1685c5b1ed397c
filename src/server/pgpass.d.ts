// The pgpass package (libpq's password file, as node-postgres reads it) ships no types.
declare module 'pgpass' {
  namespace pgpass {
    interface ConnInfo {
      host?: string;
      port?: number | string;
      database?: string;
      user?: string;
    }
  }
  /** Calls `cb` with the password of the first matching entry of PGPASSFILE (or ~/.pgpass), or undefined. */
  function pgpass(connInfo: pgpass.ConnInfo, cb: (password: string | undefined) => void): void;
  export = pgpass;
}
