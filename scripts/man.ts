// npm run man: rewrite the generated regions of the man pages (every configuration key in dstm.conf(5), the head of
// every flag item that sets a key in dstm-*(8)) from the keys' declarations; test/docs/man.test.ts checks they match.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { regenerate } from '../src/config/man';
import { CONFIG_SECTIONS } from '../src/config/sections';

const MAN = join(__dirname, '..', 'man');
for (const name of readdirSync(MAN).filter((f) => /\.[1-8]$/.test(f))) {
  const file = join(MAN, name);
  const text = readFileSync(file, 'utf8');
  const next = regenerate(text, CONFIG_SECTIONS);
  if (next !== text) {
    writeFileSync(file, next);
    console.log(`man/${name}: rewritten`);
  }
}
