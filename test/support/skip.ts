// Tests that need a part this machine may lack (root, namespaces, the built CLI, rpcgen, a tool) skip, saying why;
// under CI=true they fail instead, since .ci/run must provide everything the tests need.
import type { Context } from 'mocha';

/** Skips what `ctx` runs (a suite's hook or a test) when `why` is set, after printing it. */
export function skipIf(ctx: Context, why: string | undefined): void {
  if (!why) return;
  if (process.env.CI === 'true')
    throw new Error(`${why}: under CI=true nothing may be skipped (.ci/run must provide it)`);
  console.log(`      skipped: ${why}`);
  ctx.skip();
}
