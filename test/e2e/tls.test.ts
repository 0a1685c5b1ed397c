// RPC-with-TLS end to end (RFC 9289): `dstm server --tls mutual` on S, `dstm tep --tls` on Y following the binding
// feed over TLS with a certificate naming its TEP address, `dstm request --tls --hold --device` on X with one naming
// the node's address; IPv4 from X reaches Z through the TEP. A TEP whose certificate another CA signed exits with the
// TLS exit code before it starts; one whose certificate is from the right CA but is not a TEP's starts, and the server
// refuses it the feed: both logs say why, and it holds no binding. Certificates are made here with openssl.
import { expect } from 'chai';
import type { ChildProcess } from 'node:child_process';
import { EXIT } from '../../src/cli/exit-codes';
import { certDir, type Issued, type TestCa } from '../support/certs';
import {
  SERVER,
  cliUnavailable,
  dstmArgv,
  spawnTep,
  startNode,
  startServer,
  startTep,
  tepStats,
} from '../support/dstm-procs';
import { ADDR, Topology, netnsUnavailable, output, stopChild, waitForOutput } from '../support/netns';
import { until } from '../support/wait';
import { skipIf } from '../support/skip';
import { ping, startEchoServer, tcpHello } from '../support/traffic';

function exited(child: ChildProcess, timeoutMs = 20_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`still running after ${timeoutMs} ms:\n${output(child)}`)),
      timeoutMs,
    );
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('e2e: RPC-with-TLS (dstm server --tls mutual, dstm tep --tls, dstm request --tls)', function () {
  this.timeout(120_000);
  let certs: ReturnType<typeof certDir> | undefined;
  let ca: TestCa;
  const id: Record<'server' | 'tep' | 'node' | 'stranger', Issued> = {} as never;
  let t: Topology;
  let server: ChildProcess;
  let node: ChildProcess;
  let lease: { ipv4: string; ipv6: string; tep6: string };

  const tlsFlags = (who: Issued): string[] => [
    '--tls',
    '--tls-ca',
    ca.certFile,
    '--tls-cert',
    who.certFile,
    '--tls-key',
    who.keyFile,
  ];

  before(async function () {
    skipIf(this, netnsUnavailable() ?? cliUnavailable());
    certs = certDir();
    ca = certs.ca('dstm e2e CA');
    id.server = ca.issue({ cn: 'dstm-server', san: [`IP:${ADDR.s6}`] });
    id.tep = ca.issue({ cn: 'tep-y', san: [`IP:${ADDR.y6}`] });
    id.node = ca.issue({ cn: 'node-x', san: [`IP:${ADDR.x6}`] });
    // the TEP's own name and address, signed by a CA the server does not know
    id.stranger = certs.ca('other CA').issue({ cn: 'tep-y', san: [`IP:${ADDR.y6}`] });
    t = await Topology.create();
    server = await startServer(t, [
      '--lease',
      '60',
      '--tls',
      'mutual',
      '--tls-cert',
      id.server.certFile,
      '--tls-key',
      id.server.keyFile,
      '--tls-ca',
      ca.certFile,
    ]);
    await startEchoServer(t, t.ns.z);
  });

  after(async () => {
    await t?.destroy();
    certs?.remove();
  });

  it('the TEP follows the feed over TLS, the node leases over TLS, and its IPv4 reaches Z through the TEP', async () => {
    const tep = await startTep(t, ['--server', SERVER, ...tlsFlags(id.tep)]);
    try {
      await until('the TEP synchronised its bindings', async () => /bindings synchronised/.test(output(tep)));
      node = startNode(t, tlsFlags(id.node));
      lease = JSON.parse(await waitForOutput(node, /"event":"lease"/, 20_000));
      expect(lease).to.include({ ipv6: ADDR.x6, tep6: ADDR.y6 });
      await until('the TEP has the binding', async () =>
        (await tepStats(t)).bindings.some((b) => b.ipv4 === lease.ipv4 && b.ipv6 === ADDR.x6),
      );
      expect(await tcpHello(t, t.ns.x)).to.equal(`hello from Z, you are ${lease.ipv4}`);
      expect(await ping(t, t.ns.x, ADDR.z4, 3)).to.equal(3);
    } finally {
      expect(await stopChild(tep)).to.equal(0);
    }
  });

  it('the server takes no plain call: dstm request without --tls fails with the TLS exit code and says so', async () => {
    const err = await t.exec(t.ns.x, dstmArgv('request', '--server', SERVER, '--lease', '10')).then(
      () => null,
      (e: Error) => e,
    );
    expect(err, 'a plain request was served').to.not.equal(null);
    expect((err!.cause as { code?: number }).code).to.equal(EXIT.tls);
    expect(err!.message).to.match(/requires RPC-with-TLS \(--tls\)/);
  });

  it('a TEP whose certificate another CA signed exits with the TLS exit code before it starts, saying why', async () => {
    const tep = spawnTep(t, ['--server', SERVER, ...tlsFlags(id.stranger)]);
    expect(await exited(tep), output(tep)).to.equal(EXIT.tls);
    expect(output(tep)).to.match(/RPC-with-TLS: .*did not accept this client's certificate/);
    expect(output(tep)).to.not.match(/tep ready/);
  });

  it("a TEP with a node's certificate (right CA, not a TEP's) is refused the feed: both logs say why, it holds no binding", async () => {
    expect(node.exitCode, 'the node still holds its lease').to.equal(null);
    const tep = await startTep(t, ['--server', SERVER, ...tlsFlags(id.node)]);
    try {
      await until('the TEP logged the refusal', async () =>
        /binding feed call failed, retrying.*not allowed/.test(output(tep)),
      );
      await until('the server logged the refusal', async () => /BINDINGS refused.*not a TEP's/.test(output(server)));
      expect(output(tep)).to.not.match(/bindings synchronised/);
      expect((await tepStats(t)).bindings).to.deep.equal([]);
      expect(await ping(t, t.ns.x, ADDR.z4, 1)).to.equal(0); // the lease is held, but this TEP does not know it
    } finally {
      await stopChild(tep);
      await stopChild(node);
    }
  });
});
