// npm run bench [NAME ...]: runs every bench/*.bench.ts (or those whose name contains NAME) in one process, one
// after another, so each figure and its baseline are measured in the same run on the same machine. A bench that
// fails says why under its heading and the others still run; the exit status is then 1.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

async function main(): Promise<void> {
  const filters = process.argv.slice(2);
  const files = readdirSync(__dirname)
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => filters.length === 0 || filters.some((n) => f.includes(n)))
    .sort();
  const failed: string[] = [];
  for (const f of files) {
    const name = f.replace(/\.bench\.ts$/, '');
    console.log(`\n## ${name}`);
    try {
      const mod = (await import(join(__dirname, f))) as { run(): Promise<void> };
      await mod.run();
    } catch (err) {
      console.error(`${name} failed:`, err);
      failed.push(name);
    }
  }
  if (failed.length > 0) {
    console.error(`\nfailed: ${failed.join(', ')}`);
    // Not waiting for what a failed bench may have left running.
    process.exit(1);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
