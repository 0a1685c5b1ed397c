// The server daemon in-process, where a fault can be injected into its real store.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { DstmClient } from '../../src/protocol/client';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { createLogger } from '../../src/lib/log';
import { DstmServer, loadServerConfig } from '../../src/server/daemon';
import type { SqliteStore } from '../../src/server/sqlite-store';
import { sleep, tcpConnect } from '../rpc/util';
import { freePort, removeDir, tempDir } from './helpers';
import { captureLog } from '../support/log-capture';

describe('server daemon', function () {
  this.timeout(20000);

  it('finding 13: after an fsync failure: one error-level log line, STATUS= to systemd, health in metrics, and the server stops', async () => {
    const dir = tempDir('daemon');
    const { log, records } = captureLog();
    const { config } = loadServerConfig({
      'state-dir': dir,
      listen: [`[::1]:${await freePort()}`],
      pool: ['10.88.0.0/29'],
      metrics: '[::1]:0',
    });
    const status: string[] = [];
    const server = await DstmServer.start({ ...config, rpcbind: 'off' }, log, { status: (t) => status.push(t) });
    const metricsPort = Number(/:(\d+)$/.exec(String(records.find((r) => r.msg === 'metrics')?.address))?.[1]);
    let client: DstmClient | undefined;
    try {
      const port = server.addresses()[0].port;
      client = await DstmClient.connect({
        host: '::1',
        port,
        program: DEFAULT_PROGRAM,
        local: '::1',
        transport: 'tcp',
        timeoutMs: 3000,
      });
      await client.request();
      const up = await (await fetch(`http://[::1]:${metricsPort}/metrics`)).text();
      expect(up).to.match(/^dstm_server_store_up\{engine="sqlite"\} 1$/m);
      // The disk fails the next fdatasync.
      (server.store as SqliteStore).syncWal = (done) =>
        queueMicrotask(() => done(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })));
      await client.release().catch(() => undefined);
      const refused = await client.request().then(
        () => 'ok',
        (e: Error) => e.message,
      );
      expect(refused).to.match(/refused: the server/);
      await client.request().catch(() => undefined);
      const fatal = await Promise.race([
        server.fatal,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000)),
      ]);
      expect(fatal?.message).to.match(/EIO/);
      const errors = records.filter((r) => r.level === 'error');
      expect(errors.map((r) => r.msg)).to.deep.equal(['store unavailable: calls are answered UNAVAILABLE']);
      expect(status).to.have.length(1);
      expect(status[0]).to.match(/^store unavailable: .*EIO/);
      const down = await (await fetch(`http://[::1]:${metricsPort}/metrics`)).text();
      expect(down).to.match(/^dstm_server_store_up\{engine="sqlite"\} 0$/m);
    } finally {
      await client?.close();
      await server.stop();
      removeDir(dir);
    }
  });

  it('takes TCP records up to 8 KiB (the largest DSTM call is 904 bytes), and closes a connection announcing more', async () => {
    const dir = tempDir('daemon');
    const { config } = loadServerConfig({
      'state-dir': dir,
      listen: [`[::1]:${await freePort()}`],
      pool: ['10.88.0.0/29'],
    });
    const quiet = new Writable({ write: (_chunk, _enc, done) => done() });
    const server = await DstmServer.start(
      { ...config, rpcbind: 'off' },
      createLogger({ level: 'error', stream: quiet }),
    );
    try {
      const port = server.addresses()[0].port;
      const fits = await tcpConnect(port);
      const header = (len: number) => Buffer.from([0x80, 0, len >> 8, len & 255]);
      fits.sock.write(Buffer.concat([header(8192), Buffer.alloc(8192, 0xff)])); // not a call: taken, dropped as garbage
      const over = await tcpConnect(port);
      over.sock.write(header(8193));
      const closed = await Promise.race([over.closed.then(() => true), new Promise((r) => setTimeout(r, 3000, false))]);
      expect(closed, 'the connection announcing 8193 bytes is closed').to.equal(true);
      for (let i = 0; i < 100 && server.rpc.stats().garbageRecords.tcp === 0; i++) await sleep(20);
      const s = server.rpc.stats();
      expect(s.tcpCutoffs.oversizedRecords).to.equal(1);
      expect(s.garbageRecords.tcp, 'the 8 KiB record was read').to.equal(1);
      expect(fits.sock.destroyed).to.equal(false);
      fits.sock.destroy();
    } finally {
      await server.stop();
      removeDir(dir);
    }
  });
});
