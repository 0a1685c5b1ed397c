// The layering rule, checked over the import graph of src/ (README "Where things are"):
// lib <- rpc <- protocol <- {server, tep, node} <- cli <- commands; dti serves only tep and node; config knows no
// daemon; rpcgen stands apart (it may read rpc's types). An import that points any other way fails here. Imports are
// read from the syntax tree, so every form counts: import/export ... from, import x = require(), import types,
// import() and require()/require.resolve(); one whose module is not a plain string cannot be checked and fails too.
import { expect } from 'chai';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';

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
  cli: ['lib', 'rpc', 'protocol', 'config', 'server', 'tep', 'node'],
  commands: ['lib', 'rpc', 'protocol', 'config', 'server', 'tep', 'node', 'cli'],
};

/** The one module loaded by a computed path: the addon, whose location is found at run time. */
const COMPUTED_ALLOWED = new Set([join('lib', 'addon.ts')]);

/** What an import names: a module specifier, or null when it is computed (not a string literal). */
type Spec = string | null;

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

/** The modules a TypeScript file imports, in every form; null for one named by a computed expression. */
export function importsOf(text: string): Spec[] {
  const found: Spec[] = [];
  const literal = (node: ts.Node | undefined): Spec =>
    node && (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) ? node.text : null;
  const isRequire = (e: ts.Expression): boolean =>
    (ts.isIdentifier(e) && e.text === 'require') ||
    (ts.isPropertyAccessExpression(e) &&
      ts.isIdentifier(e.expression) &&
      e.expression.text === 'require' &&
      e.name.text === 'resolve');
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier)
      found.push(literal(node.moduleSpecifier));
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      found.push(literal(node.moduleReference.expression));
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument))
      found.push(literal(node.argument.literal));
    else if (
      ts.isCallExpression(node) &&
      (node.expression.kind === ts.SyntaxKind.ImportKeyword || isRequire(node.expression))
    )
      found.push(literal(node.arguments[0]));
    ts.forEachChild(node, visit);
  };
  visit(ts.createSourceFile('probe.ts', text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS));
  return found;
}

/** Whether a specifier names this package itself ('dstm', 'dstm/rpc'): a way round the relative paths. */
const isSelf = (spec: string): boolean => spec === 'dstm' || spec.startsWith('dstm/');

/** Every import of src/ that breaks the rule, as "from -> to" lines. */
export function violations(files: ReadonlyArray<{ file: string; text: string }>): string[] {
  const bad: string[] = [];
  for (const { file, text } of files) {
    const from = layer(file);
    if (from === '') continue; // the library entry re-exports every part
    const allowed = ALLOWED[from];
    for (const spec of importsOf(text)) {
      if (spec === null) {
        if (!COMPUTED_ALLOWED.has(relative(SRC, file))) bad.push(`${relative(SRC, file)} -> (computed) (unchecked)`);
        continue;
      }
      if (isSelf(spec)) {
        bad.push(`${relative(SRC, file)} -> ${spec} (${from} -> the package by name)`);
        continue;
      }
      if (!spec.startsWith('.')) continue; // Node's modules and dependencies
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

  it('every folder of src/ is in the rule, and the library entry is its only file outside them', () => {
    const folders = new Set(files.map(layer).filter((l) => l !== ''));
    expect([...folders].filter((f) => !(f in ALLOWED))).to.deep.equal([]);
    expect(files.filter((f) => layer(f) === '').map((f) => relative(SRC, f))).to.deep.equal(['index.ts']);
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
    // Every form of import is seen, and a computed one is reported as such.
    const forms = [
      "import '../a';",
      "export * from '../b';",
      "export { c } from '../c';",
      "import type { D } from '../d';",
      "import e = require('../e');",
      "type F = typeof import('../f');",
      'const g = import(`../g`);',
      "const h = require.resolve('../h');",
      'const i = require(name);',
    ].join('\n');
    expect(importsOf(forms)).to.deep.equal(['../a', '../b', '../c', '../d', '../e', '../f', '../g', '../h', null]);
    const probe = (folder: string, text: string): string[] =>
      violations([{ file: join(SRC, folder, '__probe__.ts'), text }]);
    expect(probe('lib', "import { S } from '../server/daemon';")).to.have.length(1);
    expect(probe('config', "import { T } from '../tep/tep';")).to.have.length(1);
    expect(probe('dti', "import { N } from '../node/dti-node';")).to.have.length(1);
    // The library entry (src/index.ts re-exports the daemons) and the package's own name are no way round it.
    expect(probe('lib', "import { S } from '..';")).to.have.length(1);
    expect(probe('lib', "import { R } from 'dstm/rpc';")).to.have.length(1);
    expect(probe('lib', 'const m = require(process.env.X);')).to.have.length(1);
    expect(probe('commands', "import { D } from '../dti/packet';")).to.have.length(1);
    expect(probe('tep', "import { P } from '../protocol/client';\nimport { D } from '../dti/packet';")).to.deep.equal(
      [],
    );
  });
});
