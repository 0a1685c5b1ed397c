// The one exit-code table of every dstm command. Each number means one thing whichever command returns it; a
// command declares the codes it can return (static exitCodes), its --help line and its man page's EXIT STATUS
// come from here, and test/docs/man.test.ts checks the pages against this table.

export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  cannotStart: 3,
  notAllowed: 4,
  noAddress: 5,
  noBinding: 6,
  unreachable: 7,
  serverError: 8,
  tls: 9,
} as const;

export type ExitName = keyof typeof EXIT;
export type ExitCode = (typeof EXIT)[ExitName];

/** One line each, as dstm(1) and every page's EXIT STATUS state them. */
export const EXIT_MEANING: Record<ExitCode, string> = {
  0: 'success',
  1: 'internal error',
  2: 'usage or configuration error',
  3: 'cannot start',
  4: 'not allowed',
  5: 'no address free',
  6: 'no such binding',
  7: 'no reply (server unreachable, or no daemon on the control socket)',
  8: 'server error',
  9: 'RPC-with-TLS failed',
};

/** The "Exit codes: ..." line of a command's --help. */
export function exitHelp(codes: readonly ExitCode[]): string {
  return `Exit codes: ${codes.map((c) => `${c} ${EXIT_MEANING[c]}`).join(', ')}. See dstm(1).`;
}
