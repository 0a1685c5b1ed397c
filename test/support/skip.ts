// Tests that need a part this machine may lack (root, namespaces, the built CLI, rpcgen) skip, saying why.
import type { Context } from 'mocha';

/** Skips what `ctx` runs (a suite's hook or a test) when `why` is set, after printing it. */
export function skipIf(ctx: Context, why: string | undefined): void {
  if (!why) return;
  console.log(`      skipped: ${why}`);
  ctx.skip();
}
