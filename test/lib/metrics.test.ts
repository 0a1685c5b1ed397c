// Histograms, HEAD /metrics and the process families, on a real HTTP server on loopback.
import { expect } from 'chai';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { closeMetrics, Histogram, Registry, serveMetrics } from '../../src/lib/metrics';
import { registerProcessMetrics } from '../../src/lib/process-metrics';

function call(
  port: number,
  method: string,
  path = '/metrics',
  agent?: Agent,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '::1', port, method, path, agent }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('metrics: histograms, HEAD, process families', () => {
  it('a histogram counts each observation in the first bucket it fits and renders cumulative le buckets', () => {
    const h = new Histogram([0.001, 0.01, 0.1]);
    for (const v of [0.0005, 0.001, 0.002, 0.05, 3]) h.observe(v);
    expect(h.cumulative()).to.deep.equal([2, 3, 4, 5]);
    const reg = new Registry();
    reg.histogram('x_seconds', 'Test.', () => [{ labels: { procedure: 'P' }, histogram: h }]);
    expect(reg.render()).to.equal(
      '# HELP x_seconds Test.\n# TYPE x_seconds histogram\n' +
        'x_seconds_bucket{procedure="P",le="0.001"} 2\nx_seconds_bucket{procedure="P",le="0.01"} 3\n' +
        'x_seconds_bucket{procedure="P",le="0.1"} 4\nx_seconds_bucket{procedure="P",le="+Inf"} 5\n' +
        `x_seconds_sum{procedure="P"} ${0.0005 + 0.001 + 0.002 + 0.05 + 3}\nx_seconds_count{procedure="P"} 5\n`,
    );
  });

  it('HEAD /metrics answers 200 with the headers and no body, and collects nothing; other methods get 405', async () => {
    const reg = new Registry();
    let scrapes = 0;
    reg.collector('y', 'Y.', 'gauge', () => (scrapes++, [{ value: 1 }]));
    const { server, port } = await serveMetrics(reg, '::1', 0);
    try {
      const head = await call(port, 'HEAD');
      expect(head.status).to.equal(200);
      expect(head.body).to.equal('');
      expect(scrapes).to.equal(0);
      expect((await call(port, 'GET')).body).to.include('y 1');
      expect(scrapes).to.equal(1);
      const post = await call(port, 'POST');
      expect(post.status).to.equal(405);
      expect(post.headers.allow).to.equal('GET, HEAD');
      expect((await call(port, 'GET', '/other')).status).to.equal(404);
    } finally {
      server.close();
    }
  });

  it('dstm_build_info and the process families read this process', () => {
    const reg = new Registry();
    registerProcessMetrics(reg, 'test');
    const text = reg.render();
    const version = (require('../../package.json') as { version: string }).version;
    expect(text).to.include(`dstm_build_info{version="${version}",node="${process.version}",component="test"} 1\n`);
    const value = (name: string): number =>
      Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)![1].replace('+Inf', 'Infinity'));
    expect(value('process_resident_memory_bytes')).to.be.closeTo(process.memoryUsage.rss(), 64 * 1024 * 1024);
    expect(value('process_cpu_seconds_total')).to.be.greaterThan(0);
    expect(value('process_open_fds')).to.be.greaterThan(2).and.at.most(value('process_max_fds'));
    expect(value('process_start_time_seconds')).to.be.closeTo(Date.now() / 1000 - process.uptime(), 2);
  });

  it('a burst of concurrent scrapes runs one prepare at a time and shares it; a scrape after it reads afresh', async () => {
    const reg = new Registry();
    let prepares = 0;
    let running = 0;
    let most = 0;
    reg.collector('z', 'Z.', 'gauge', () => [{ value: prepares }]);
    const prepare = async (): Promise<void> => {
      prepares++;
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 50)); // a store query
      running--;
    };
    const { server, port } = await serveMetrics(reg, '::1', 0, prepare);
    const agent = new Agent({ keepAlive: true, maxSockets: 50 });
    try {
      const all = await Promise.all(Array.from({ length: 200 }, () => call(port, 'GET', '/metrics', agent)));
      expect(all.every((r) => r.status === 200)).to.equal(true);
      expect(most).to.equal(1);
      // each read serves every scrape that came while it ran: a few for 200 scrapes over 50 connections
      expect(prepares).to.be.at.most(10);
      const before = prepares;
      await call(port, 'GET', '/metrics', agent);
      expect(prepares).to.equal(before + 1);
    } finally {
      agent.destroy();
      await closeMetrics(server);
    }
  });

  it('a request with a body is refused with 413 and its connection closed; closing does not wait for a slow client', async () => {
    const { server, port } = await serveMetrics(new Registry(), '::1', 0);
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const s = connect(port, '::1', () => resolve(s)).on('error', reject);
      });
    const closedWithin = (s: Socket, ms: number): Promise<boolean> =>
      new Promise((resolve) => {
        const t = setTimeout(() => resolve(false), ms);
        s.once('close', () => (clearTimeout(t), resolve(true)));
      });
    const sockets: Socket[] = [];
    try {
      // 100 MB announced, one byte sent: answered at once and dropped, not read byte by byte
      const post = await open();
      sockets.push(post);
      let answer = '';
      post.on('data', (d: Buffer) => (answer += d.toString()));
      post.write('POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nx');
      expect(await closedWithin(post, 2000), 'the connection of a request with a body is closed').to.equal(true);
      expect(answer).to.match(/^HTTP\/1\.1 413 /);
      // a client still sending its headers holds a connection; closing drops it rather than waiting
      const slow = await open();
      sockets.push(slow);
      slow.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
      await new Promise((r) => setTimeout(r, 100));
      const t0 = Date.now();
      const closed = closeMetrics(server);
      expect(
        await Promise.race([closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]),
      ).to.equal(true);
      expect(Date.now() - t0).to.be.below(1000);
    } finally {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});
