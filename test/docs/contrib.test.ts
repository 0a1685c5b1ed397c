// contrib/: the example configuration is valid for every section's schema and sets every key, so it shows the
// whole format; the systemd units parse (systemd-analyze verify knows every directive).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientFields } from '../../src/config/client-schema';
import { parseConfigText } from '../../src/config/load';
import { describe as keyTable, parseWithOverrides, type Fields } from '../../src/config/schema';
import { serverFields } from '../../src/config/server-schema';
import { staticFields } from '../../src/config/static-schema';
import { tepFields } from '../../src/config/tep-schema';
import { ROOT } from './commands';
import { skipIf } from '../support/skip';

const SCHEMAS: Record<string, Fields> = {
  server: serverFields,
  client: clientFields,
  tep: tepFields,
  static: staticFields,
};

describe('contrib', () => {
  it('dstm.conf.example.json is valid and sets every key of every section', () => {
    const file = join(ROOT, 'contrib', 'dstm.conf.example.json');
    const raw = parseConfigText(readFileSync(file, 'utf8'), file) as Record<string, Record<string, unknown>>;
    for (const [section, fields] of Object.entries(SCHEMAS)) {
      parseWithOverrides(fields, raw[section], `${file}: ${section}`);
      const unset = keyTable(fields).filter((k) => !k.key.includes('.') && !(k.key in (raw[section] ?? {})));
      expect(
        unset.map((k) => `${section}.${k.key}`),
        'keys the example does not show',
      ).to.deep.equal([]);
    }
  });

  it("the server's unit restarts a failed start (a PostgreSQL store not up yet) slowly enough for the start limit", () => {
    const unit = readFileSync(join(ROOT, 'contrib', 'systemd', 'dstm-server.service'), 'utf8');
    expect(unit).to.match(/^Restart=on-failure$/m);
    // systemd's defaults: StartLimitBurst=5 within StartLimitIntervalSec=10s, RestartSec=100ms
    const restartSec = Number(/^RestartSec=(\d+)$/m.exec(unit)?.[1] ?? 0.1);
    expect(restartSec * 5).to.be.above(10);
  });

  it('the systemd units pass systemd-analyze verify', function () {
    skipIf(
      this,
      spawnSync('systemd-analyze', ['--version']).error
        ? 'systemd-analyze (Debian: systemd) is not installed'
        : undefined,
    );
    const dir = mkdtempSync(join(tmpdir(), 'dstm-units-'));
    try {
      const units = readdirSync(join(ROOT, 'contrib', 'systemd')).filter((f) => f.endsWith('.service'));
      expect(units).to.have.members([
        'dstm-server.service',
        'dstm-tep.service',
        'dstm-node.service',
        'dstm-static.service',
      ]);
      for (const u of units) {
        // the units name the installed binary; verify checks that ExecStart exists, so point it at this checkout
        const text = readFileSync(join(ROOT, 'contrib', 'systemd', u), 'utf8').replaceAll(
          '/usr/local/bin/dstm',
          join(ROOT, 'bin', 'run.js'),
        );
        writeFileSync(join(dir, u), text);
      }
      const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...units.map((u) => join(dir, u))], {
        encoding: 'utf8',
      });
      expect(r.stderr.trim()).to.equal('');
      expect(r.status).to.equal(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
