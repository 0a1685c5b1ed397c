// Certificates for the RPC-with-TLS tests, made with the openssl command in a temporary directory: a CA, and leaf
// certificates it (or another CA) signs with the names and validity each test needs. EC P-256 keys: quick to make.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  cert: string;
  key: string;
  /** Paths of the PEM files, for commands and peers that read files. */
  certFile: string;
  keyFile: string;
}

export interface LeafOptions {
  cn: string;
  /** subjectAltName entries as openssl spells them, e.g. ["IP:::1", "DNS:localhost"]. */
  san?: string[];
  /** Valid from 2020-01-01 to 2020-01-02. */
  expired?: boolean;
  /** Extra subject components, e.g. "/OU=tep". */
  subjectExtra?: string;
}

const CA_CONFIG = `[ca]
default_ca = c
[c]
database = index.txt
new_certs_dir = .
default_md = sha256
policy = p
serial = serial
unique_subject = no
copy_extensions = copy
[p]
commonName = supplied
organizationalUnitName = optional
`;

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A certification authority in its own directory, issuing leaf certificates. */
export class TestCa {
  readonly cert: string;
  readonly certFile: string;
  private n = 0;

  constructor(
    readonly dir: string,
    name: string,
  ) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'ca.cnf'), CA_CONFIG);
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'serial'), '1000\n');
    openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    ]);
    this.certFile = join(dir, 'ca.pem');
    this.cert = readFileSync(this.certFile, 'utf8');
  }

  issue(o: LeafOptions): Issued {
    const base = `leaf${++this.n}`;
    const req = [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${base}.key`,
      '-out',
      `${base}.csr`,
      '-subj',
      `/CN=${o.cn}${o.subjectExtra ?? ''}`,
    ];
    if (o.san?.length) req.push('-addext', `subjectAltName=${o.san.join(',')}`);
    openssl(this.dir, req);
    const dates = o.expired ? ['-startdate', '20200101000000Z', '-enddate', '20200102000000Z'] : ['-days', '2'];
    openssl(this.dir, [
      'ca',
      '-batch',
      '-notext',
      '-config',
      'ca.cnf',
      '-cert',
      'ca.pem',
      '-keyfile',
      'ca.key',
      '-in',
      `${base}.csr`,
      '-out',
      `${base}.pem`,
      ...dates,
    ]);
    const certFile = join(this.dir, `${base}.pem`);
    const keyFile = join(this.dir, `${base}.key`);
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
  }
}

/** A temporary directory for CAs; remove() deletes it. */
export function certDir(): { dir: string; ca(name: string): TestCa; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'dstm-certs-'));
  return {
    dir,
    ca: (name) => new TestCa(join(dir, name.replace(/\W+/g, '_')), name),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
