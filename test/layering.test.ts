// The layering rule, checked over the import graph of src/ (README "Where things are"):
// lib <- rpc <- protocol <- {server, tep, node} <- cli <- commands; dti serves only tep and node; config knows no
// daemon; rpcgen stands apart (it may read rpc's types). An import that points any other way fails here.
import { expect } from 'chai';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';

const SRC = resolve(__dirname, '../src');

/** For each folder of src/, the folders it may import from (besides itself). */
export const ALLOWED: Record<string, readonly string[]> = {
  lib: [],
  rpc: ['lib'],
  rpcgen: ['rpc'],
  protocol: ['lib', 'rpc'],
  config: ['lib'],
  dti: ['lib'],
  server: ['lib', 'rpc', 'protocol', 'config'],
  tep: ['lib', 'rpc', 'protocol', 'config', 'dti'],
  node: ['lib', 'rpc', 'protocol', 'config', 'dti'],
  cli: ['lib', 'rpc', 'protocol', 'config', 'server', 'tep', 'node', 'dti'],
  commands: ['lib', 'rpc', 'protocol', 'config', 'server', 'tep', 'node', 'dti', 'cli'],
};

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

/** The top folder of src/ that `file` lives in ('' for a file directly in src/, such as the library entry). */
function layer(file: string): string {
  const parts = relative(SRC, file).split(sep);
  return parts.length > 1 ? parts[0] : '';
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Relative import specifiers of a TypeScript file (static imports, re-exports, require and dynamic import). */
export function importsOf(text: string): string[] {
  const found: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)(['"])(\.{1,2}\/[^'"]*)\1/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) found.push(m[2]);
  return found;
}

/** Every import of src/ that breaks the rule, as "from -> to" lines. */
export function violations(files: ReadonlyArray<{ file: string; text: string }>): string[] {
  const bad: string[] = [];
  for (const { file, text } of files) {
    const from = layer(file);
    if (from === '') continue; // the library entry re-exports every part
    const allowed = ALLOWED[from];
    for (const spec of importsOf(text)) {
      const target = resolve(dirname(file), spec);
      const to = target.startsWith(SRC + sep)
        ? layer(isDirectory(target) ? join(target, 'index.ts') : `${target}.ts`)
        : '(outside src)';
      if (to === from) continue;
      if (allowed === undefined || !allowed.includes(to))
        bad.push(`${relative(SRC, file)} -> ${spec} (${from} -> ${to || 'src/'})`);
    }
  }
  return bad;
}

describe('layering', () => {
  const files = sources(SRC).filter((f) => !f.includes(`${sep}generated${sep}`));

  it('every folder of src/ is in the rule', () => {
    const folders = new Set(files.map(layer).filter((l) => l !== ''));
    expect([...folders].filter((f) => !(f in ALLOWED))).to.deep.equal([]);
  });

  it('no import points up or sideways', () => {
    expect(violations(files.map((file) => ({ file, text: readFileSync(file, 'utf8') })))).to.deep.equal([]);
  });

  it('the checker catches a wrong-way import', () => {
    // A file in lib/ importing the server, and one in config/ importing the TEP: both must be reported.
    expect(importsOf("import { x } from '../server/daemon';\nconst y = require('./z');")).to.deep.equal([
      '../server/daemon',
      './z',
    ]);
    const probe = (folder: string, text: string): string[] =>
      violations([{ file: join(SRC, folder, '__probe__.ts'), text }]);
    expect(probe('lib', "import { S } from '../server/daemon';")).to.have.length(1);
    expect(probe('config', "import { T } from '../tep/tep';")).to.have.length(1);
    expect(probe('dti', "import { N } from '../node/dti-node';")).to.have.length(1);
    expect(probe('tep', "import { P } from '../protocol/client';\nimport { D } from '../dti/packet';")).to.deep.equal(
      [],
    );
  });
});
