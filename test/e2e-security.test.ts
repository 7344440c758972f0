// An attacker on the node network against a cluster whose pull API wants a token (test/helpers/
// cluster.ts, real collectors and exporter, real traffic between pods): forged pulls, acks and
// releases from the control namespace all the while, without the token and with a wrong one. On an
// open API the same acks erased 69% of the traffic before any sink saw it; here every request gets
// 401 and Prometheus and the HTTP sink count exactly what conntrack counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, txOf } from './helpers/cluster.js';
import { requireRoot, runClient, startServer, type TrafficServer } from './helpers/netns.js';

const root = requireRoot();
const WEB = '10.244.1.5';
const CACHE = '10.244.1.6';
const NODE_A = '10.250.0.2';

/** Runs in the control namespace: forges requests against a collector for `ms`, tallies the answers. */
const ATTACKER_JS = `
const http = require('node:http');
const [host, ms] = [process.argv[1], Number(process.argv[2])];
const msgpack = (bootId, seq, lease) => {
  // A msgpack map {bootId, seq, lease} written by hand: the attacker has no library.
  const str = (s) => Buffer.concat([Buffer.from([0xa0 | s.length]), Buffer.from(s)]);
  return Buffer.concat([Buffer.from([0x83]), str('bootId'), str(bootId), str('seq'),
    Buffer.from([0xce, (seq >>> 24) & 255, (seq >>> 16) & 255, (seq >>> 8) & 255, seq & 255]),
    str('lease'), str(lease)]);
};
const tally = {};
const ask = (method, path, headers, body) => new Promise((resolve) => {
  const req = http.request({ host, port: 9470, method, path, headers }, (res) => {
    let text = '';
    res.on('data', (c) => (text += c));
    res.on('end', () => {
      const k = String(res.statusCode) + ' ' + (res.statusCode === 200 ? '(flows)' : text.trim());
      tally[k] = (tally[k] || 0) + 1;
      resolve(text);
    });
  });
  req.on('error', () => { tally.error = (tally.error || 0) + 1; resolve(''); });
  req.end(body);
});
(async () => {
  const until = Date.now() + ms;
  const mp = { 'content-type': 'application/x-msgpack' };
  // What an open pull API gave away: the boot id and the last seq in its 409 answers, after which
  // one ack erases everything not yet delivered.
  let bootId = 'deadbeefdeadbeef';
  let seq = 1000000;
  for (let i = 0; Date.now() < until; i++) {
    const auth = i % 2 ? { authorization: 'Bearer guessed-' + i } : {};
    await ask('GET', '/api/v1/flows', { ...auth, 'podflow-exporter': 'attacker' });
    const said = await ask('POST', '/api/v1/ack', { ...mp, ...auth }, msgpack(bootId, seq, 'x'));
    const boot = /(([0-9a-f]{16}))/.exec(said);
    if (boot) bootId = boot[1];
    const last = /last is (d+)/.exec(said);
    if (last) seq = Number(last[1]);
    await ask('POST', '/api/v1/release', { ...mp, ...auth }, msgpack('x', 0, 'x'));
  }
  process.stdout.write(JSON.stringify(tally));
})();
`;

describe.skipIf(!root)('a cluster with a pull token against an attacker on the node network', () => {
  const c = new Cluster({
    nodes: [
      {
        name: 'node-a',
        zone: 'zone-a',
        ip: NODE_A,
        podCidrs: ['10.244.1.0/24'],
        pods: [
          { name: 'web-5f7c9-x1', namespace: 'shop', workload: 'Deployment/web', ips: [WEB] },
          { name: 'cache-0', namespace: 'shop', workload: 'StatefulSet/cache', ips: [CACHE] },
        ],
      },
    ],
    pullToken: 'k8s-secret-token-0123456789',
  });
  let tcp: TrafficServer | undefined;

  beforeAll(async () => {
    await c.start();
    tcp = await startServer(c.ns('cache-0'), 'tcp', CACHE);
  }, 60_000);
  afterAll(() => c.close());

  it('every forged request gets 401 and changes nothing; sinks count exactly what conntrack counted', async () => {
    const attacker = c.ctl.exec(process.execPath, ['-e', ATTACKER_JS, NODE_A, '6000']);
    // Traffic while the attack goes on: several rounds of pulls and acks by the real exporter.
    for (let i = 0; i < 4; i++) {
      const r = await runClient(c.ns('web-5f7c9-x1'), 'tcp', CACHE, tcp!.port, {
        send: 20_000 + i,
        receive: 3_000,
        count: 3,
      });
      expect(r).toMatchObject({ failed: 0, connections: 3 });
      await new Promise((res) => setTimeout(res, 1000));
    }
    const tally = JSON.parse((await attacker).stdout) as Record<string, number>;
    const answers = Object.keys(tally);
    expect(answers).toEqual(['401 unauthorized']);
    expect(tally['401 unauthorized']).toBeGreaterThan(30);

    const want = {
      webCache: await c.sentBy('node-a', WEB, CACHE),
      cacheWeb: await c.sentBy('node-a', CACHE, WEB),
    };
    expect(want.webCache).toBeGreaterThan(12 * 20_000);
    const http = () => {
      const recs = c.deliveredRecords();
      return {
        webCache: txOf(recs, 'web-5f7c9-x1', 'cache-0'),
        cacheWeb: txOf(recs, 'cache-0', 'web-5f7c9-x1'),
      };
    };
    await c.waitFor(
      'HTTP sink to match conntrack',
      async () => (JSON.stringify(http()) === JSON.stringify(want) ? true : undefined),
      20_000,
      () => `${JSON.stringify(http())}, want ${JSON.stringify(want)}`,
    );
    const prom = async () => [
      await c.q('sum(podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="cache-0"})'),
      await c.q('sum(podflow_transmit_bytes_total{src_pod="cache-0",dst_pod="web-5f7c9-x1"})'),
    ];
    await c.waitFor(
      'Prometheus to match conntrack',
      async () => ((await prom()).join() === [want.webCache, want.cacheWeb].join() ? true : undefined),
      20_000,
      async () => `${(await prom()).join()}, want ${want.webCache},${want.cacheWeb}`,
    );
  });
});
