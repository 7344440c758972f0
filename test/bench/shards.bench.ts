// Sharded exporters at scale: 2,000 simulated collectors × 5,000 flows, split among 8 shards by the
// exporter's own shard function (exporter/shard.ts, static mode: hash of the URL). The shards run
// one after another, each in a process of its own (its RSS is its own), as one shard of a
// StatefulSet would: HttpCollectorClient → Pipeline → Enricher (a 60,000-pod cluster lookup) →
// PrometheusSink, all labels. Per shard: its collectors and flows, the floor (gunzip + decode of
// its own bodies, in the same process), the steady round and its ratio to the floor, and peak RSS.
//
// The collectors are one HTTP server in a child process, each collector a base URL with a path of
// its own (http://127.0.0.1:port/c/17): the pull API below it, pre-encoded bodies (the collector's
// encoder, gzip) made for a shard's collectors before that shard runs, a lease granted to every
// pull, and each ack moving a collector on to its next batch.
// Each shard runs as built (this file bundled into plain JavaScript: test/bench/bundle.ts), with the
// exporter's own V8 setting (exporter/heap.ts).
// Usage: npm run bench:shards [-- --collectors N --flows N --shards N --only N --concurrency N]
//        PF_BENCH_NODE_ARGS='--cpu-prof …': node flags for the shard processes (figures then differ)
import { fork } from 'node:child_process';
import { createServer, request } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { Unpackr } from 'msgpackr';
import { Registry } from 'prom-client';
import { Enricher } from '../../exporter/enrich.js';
import { tuneExporterHeap } from '../../exporter/heap.js';
import { ExporterMetrics } from '../../exporter/metrics.js';
import { Pipeline, staticDiscovery } from '../../exporter/pipeline.js';
import { PrometheusSink } from '../../exporter/prometheus-sink.js';
import { HttpCollectorClient } from '../../exporter/pull.js';
import { shardFilter } from '../../exporter/shard.js';
import { FLOW_LABELS } from '../../shared/config.js';
import type { PullResponse } from '../../shared/flow.js';
import { silentLogger } from '../../shared/log.js';
import { encodePullBody, gzipPullBody } from '../../shared/pull-contract.js';
import { bundled } from './bundle.js';
import { benchCluster } from './cluster-data.js';
import { profileIf } from './profile.js';
import { fetchBodies } from './pull-bodies.js';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const COLLECTORS = Number(arg('collectors', '2000'));
const FLOWS = Number(arg('flows', '5000'));
const SHARDS = Number(arg('shards', '8'));
const ROUNDS = 3;
/** `--only N`: run shard N alone (profiling one shard). */
const ONLY = arg('only', '');

const post = (url: string, body: unknown) =>
  new Promise<string>((resolve, reject) => {
    const req = request(url, { method: 'POST' }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString();
      });
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });

/** Child process: every collector, behind one server; bodies made on request for one shard. */
async function serve(): Promise<void> {
  const { flowsOf } = benchCluster(COLLECTORS, FLOWS);
  let bodies = new Map<number, { rounds: Buffer[]; current: number }>();
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      if (req.url === '/prepare') {
        const wanted = JSON.parse(Buffer.concat(chunks).toString()) as number[];
        bodies = new Map();
        for (const n of wanted) {
          const flows = flowsOf(n);
          const rounds: Buffer[] = [];
          for (let round = 1; round <= ROUNDS + 1; round++) {
            const r: PullResponse = {
              version: 1,
              bootId: `boot-${n}`,
              node: `node-${n}`,
              source: 'netfilter',
              batches: [{ seq: round, from: round * 15_000, to: (round + 1) * 15_000, flows }],
            };
            rounds.push(await gzipPullBody(encodePullBody(r)));
          }
          bodies.set(n, { rounds, current: 0 });
        }
        res.end('ready');
        return;
      }
      const m = /^\/c\/(\d+)\/api\/v1\/(flows|ack)/.exec(req.url ?? '');
      const b = m ? bodies.get(Number(m[1])) : undefined;
      if (m === null || b === undefined) {
        res.writeHead(404).end();
        return;
      }
      if (m[2] === 'ack') {
        b.current = Math.min(b.current + 1, b.rounds.length - 1);
        res.writeHead(204).end();
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/x-msgpack',
        'content-encoding': 'gzip',
        'podflow-lease': `lease-${m[1]}`,
        'podflow-lease-seconds': '600',
      });
      res.end(b.rounds[b.current]);
    });
  });
  // Sockets idle between rounds stay open: a round of a loaded shard can outlast the default 5 s,
  // and a pull on a socket the server is closing fails with a reset.
  srv.keepAliveTimeout = 120_000;
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  process.send!({ port: (srv.address() as { port: number }).port });
}

interface ShardResult {
  shard: number;
  collectors: number;
  flows: number;
  floorMs: number;
  firstMs: number;
  steadyMs: number;
  series: number;
  peakRss: number;
  heapTotal: number;
  external: number;
}

/** Child process: one shard exporter, measured. */
async function shard(index: number, port: number): Promise<void> {
  // As `podflow exporter` does before its first pull.
  tuneExporterHeap();
  const base = `http://127.0.0.1:${port}`;
  const mine = shardFilter({ totalShards: SHARDS, shard: index });
  const nodes: number[] = [];
  for (let n = 0; n < COLLECTORS; n++) if (mine(`${base}/c/${n}`)) nodes.push(n);
  await post(`${base}/prepare`, nodes);
  const urls = nodes.map((n) => `${base}/c/${n}`);

  const registry = new Registry();
  const metrics = new ExporterMetrics(registry);
  const prometheus = new PrometheusSink(
    { metricsPrefix: 'podflow', metricsLabels: [...FLOW_LABELS], metricsTtl: 600_000, metricsPodIps: false },
    { registry, metrics },
  );
  const clients = urls.map(
    (u) =>
      new HttpCollectorClient(u, {
        timeoutMs: 30_000,
        maxBytes: 256 << 20,
        identity: `bench-exporter-${index}`,
        leaseMs: 600_000,
      }),
  );
  const pipeline = new Pipeline(
    // A round waits for its acks up to the next round: long enough under any load.
    { exportInterval: 600_000, pullConcurrency: Number(arg('concurrency', '16')), pullTimeout: 30_000 },
    {
      discovery: staticDiscovery(clients),
      enricher: new Enricher(
        { groupPublicIps: false },
        { cluster: benchCluster(COLLECTORS, FLOWS).clusterLookup(), log: silentLogger },
      ),
      sinks: [prometheus],
      log: silentLogger,
      metrics,
    },
  );
  const cycles: number[] = [];
  let flows = 0;
  let t = 0;
  let stopProfile = async () => {};
  for (let round = 0; round < ROUNDS; round++) {
    // The steady rounds alone (PF_BENCH_PROFILE_ROUNDS=/tmp/shard.cpuprofile).
    if (round === 1) stopProfile = await profileIf(process.env.PF_BENCH_PROFILE_ROUNDS);
    t = performance.now();
    const r = await pipeline.runOnce();
    cycles.push(performance.now() - t);
    if (r.acked !== urls.length || r.flows !== urls.length * FLOWS) {
      throw new Error(`shard ${index} round ${round}: ${JSON.stringify(r)}`);
    }
    flows = r.flows;
  }
  await stopProfile();
  // Peak RSS of the exporter's own work, before the floor's copies of the bodies add to it.
  const peakRss = process.resourceUsage().maxRSS * 1024;
  const mem = process.memoryUsage();
  // Floor: this shard's bodies fetched once, then gunzipped and decoded one by one.
  const bodies = await fetchBodies(urls);
  const unpackr = new Unpackr({ mapsAsObjects: true, int64AsType: 'number' });
  t = performance.now();
  for (const b of bodies) unpackr.unpack(gunzipSync(b));
  const floorMs = performance.now() - t;
  bodies.length = 0;

  const result: ShardResult = {
    shard: index,
    collectors: urls.length,
    flows,
    floorMs,
    firstMs: cycles[0],
    steadyMs: Math.min(...cycles.slice(1)),
    series: prometheus.seriesCount,
    peakRss,
    heapTotal: mem.heapTotal,
    external: mem.external + mem.arrayBuffers,
  };
  process.send!(result);
}

async function main(): Promise<void> {
  const self = new URL(import.meta.url).pathname;
  // The shards run as built: plain JavaScript, not through the TypeScript loader.
  const shardBundle = bundled(import.meta.url);
  const server = fork(self, ['serve', ...process.argv.slice(2)], { execArgv: ['--import', 'tsx'] });
  try {
    const { port } = await new Promise<{ port: number }>((resolve) =>
      server.once('message', resolve as never),
    );
    console.log(
      `${COLLECTORS} collectors × ${FLOWS} flows on ${SHARDS} shards, all labels, one shard at a time`,
    );
    const results: ShardResult[] = [];
    for (let s = 0; s < SHARDS; s++) {
      if (ONLY !== '' && s !== Number(ONLY)) continue;
      const child = fork(shardBundle, ['shard', String(s), String(port), ...process.argv.slice(2)], {
        execArgv: (process.env.PF_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
      });
      const r = await new Promise<ShardResult>((resolve, reject) => {
        child.once('message', resolve as never);
        child.once('exit', (code) => reject(new Error(`shard ${s} exited with ${code}`)));
      });
      child.kill();
      results.push(r);
      const us = (r.steadyMs * 1000) / r.flows;
      console.log(
        `shard ${r.shard}: ${r.collectors} collectors, ${r.flows} flows, ${r.series} series; floor ${r.floorMs.toFixed(0)} ms; round: first ${r.firstMs.toFixed(0)} ms, steady ${r.steadyMs.toFixed(0)} ms = ${(r.steadyMs / r.floorMs).toFixed(2)}× floor, ${us.toFixed(2)} µs per flow (target ≤ 3000 ms); peak RSS ${(r.peakRss / 2 ** 20).toFixed(0)} MB (target ≤ 300 MB; heap ${(r.heapTotal / 2 ** 20).toFixed(0)} MB, buffers ${(r.external / 2 ** 20).toFixed(0)} MB after the rounds)`,
      );
    }
    const worst = (f: (r: ShardResult) => number) => Math.max(...results.map(f));
    console.log(
      `worst shard: steady round ${worst((r) => r.steadyMs).toFixed(0)} ms, peak RSS ${(worst((r) => r.peakRss) / 2 ** 20).toFixed(0)} MB; collectors per shard ${Math.min(...results.map((r) => r.collectors))}–${worst((r) => r.collectors)}`,
    );
  } finally {
    server.kill();
  }
}

if (process.argv[2] === 'serve') await serve();
else if (process.argv[2] === 'shard') await shard(Number(process.argv[3]), Number(process.argv[4]));
else await main();
