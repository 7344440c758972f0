// The built-in view's benchmark: its ring fed 10,000 flows a round for 15 minutes of 15 s rounds, a
// sample cluster's traffic (≈1,000 pods in 10 namespaces, three zones and a second region, named
// and unnamed internet peers, private peers outside the cluster). Measured here:
//   push    one round into the ring; floor: one pass over the same flows into a Map by pair
//   memory  the ring's heap and array buffers after 60 rounds (live, after gc): the same pods every
//           round, and every round new pods (each pair, endpoint and string new: the upper bound)
//   query   the API's answer per grouping and window (and a text filter); floor: one pass summing
//           the bytes of as many pairs from typed arrays
//   page    in a real headless Chromium: the bundle's size, the first render after load and the
//           renders of later updates (performance measures the page records), with 10,000 flows a
//           round behind it
// `--screenshot FILE` also writes a PNG of the page (the README's picture).
// Usage: npm run bench:view [-- --flows N] [-- --screenshot docs/view.png]

import { writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { Registry } from 'prom-client';
import { TrafficRing } from '../../exporter/traffic-ring.js';
import { loadViewPage, viewRouter } from '../../exporter/view.js';
import type { EnrichedFlow } from '../../shared/flow.js';
import { HttpServer } from '../../shared/http.js';
import { silentLogger } from '../../shared/log.js';
import type { ViewGroup } from '../../shared/traffic.js';
import { ManualClock } from '../fixtures/clock.js';
import { toInternet } from '../fixtures/flows.js';
import { launchChromium } from '../helpers/chromium.js';
import { seeded } from '../helpers/random.js';

const arg = (name: string, def: string | undefined) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const FLOWS = Number(arg('flows', '10000'));
const SCREENSHOT = arg('screenshot', undefined);
const INTERVAL = 15_000;
const ROUNDS = 60;

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:view does)');
const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;
const heap = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
function time<T>(fn: () => T, reps = 5): { ms: number; value: T } {
  let best = Infinity;
  let value: T | undefined;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    value = fn();
    best = Math.min(best, performance.now() - t);
  }
  return { ms: best, value: value as T };
}

// ---- the sample cluster -------------------------------------------------------------------------
const NAMESPACES: Record<string, string[]> = {
  shop: ['Deployment/storefront', 'Deployment/cart', 'Deployment/catalog', 'StatefulSet/redis'],
  checkout: ['Deployment/checkout', 'Deployment/pricing', 'Deployment/tax'],
  payments: ['Deployment/payments-api', 'Deployment/fraud', 'CronJob/settlement'],
  search: ['Deployment/search-api', 'StatefulSet/opensearch', 'Deployment/indexer'],
  identity: ['Deployment/auth', 'Deployment/sessions', 'StatefulSet/postgres'],
  data: ['StatefulSet/kafka', 'StatefulSet/zookeeper', 'StatefulSet/postgres-main', 'Deployment/etl'],
  ingest: ['Deployment/collector', 'Deployment/enricher'],
  web: ['Deployment/frontend', 'Deployment/bff', 'Deployment/images'],
  monitoring: ['StatefulSet/prometheus', 'DaemonSet/node-exporter', 'Deployment/grafana'],
  batch: ['CronJob/reports', 'Job/backfill'],
};
const EXTERNAL: [name: string, ips: string[]][] = [
  ['api.stripe.com', ['198.51.100.10', '198.51.100.11']],
  ['s3.us-east-1.amazonaws.com', ['203.0.113.20', '203.0.113.21', '203.0.113.22']],
  ['sqs.us-east-1.amazonaws.com', ['203.0.113.30']],
  ['api.github.com', ['198.51.100.40']],
  ['pypi.org', ['198.51.100.50']],
  ['hooks.slack.com', ['198.51.100.60']],
  ['api.sendgrid.com', ['198.51.100.70']],
  ['ldap.corp.example', ['10.200.0.5']],
];
const ZONES = ['us-east-1a', 'us-east-1b', 'us-east-1c'];
/** Who calls whom: each workload calls a few others, as real services do. */
const CALLS: Record<string, string[]> = {
  'web/Deployment/frontend': ['web/Deployment/bff', 'web/Deployment/images'],
  'web/Deployment/bff': [
    'shop/Deployment/storefront',
    'identity/Deployment/auth',
    'search/Deployment/search-api',
  ],
  'shop/Deployment/storefront': [
    'shop/Deployment/cart',
    'shop/Deployment/catalog',
    'checkout/Deployment/checkout',
  ],
  'shop/Deployment/cart': ['shop/StatefulSet/redis', 'checkout/Deployment/pricing'],
  'shop/Deployment/catalog': ['search/Deployment/search-api', 'data/StatefulSet/postgres-main'],
  'checkout/Deployment/checkout': [
    'payments/Deployment/payments-api',
    'checkout/Deployment/tax',
    'data/StatefulSet/kafka',
  ],
  'payments/Deployment/payments-api': ['payments/Deployment/fraud', 'data/StatefulSet/postgres-main'],
  'search/Deployment/search-api': ['search/StatefulSet/opensearch'],
  'search/Deployment/indexer': ['search/StatefulSet/opensearch', 'data/StatefulSet/kafka'],
  'identity/Deployment/auth': ['identity/StatefulSet/postgres', 'identity/Deployment/sessions'],
  'data/Deployment/etl': ['data/StatefulSet/kafka', 'data/StatefulSet/postgres-main'],
  'data/StatefulSet/kafka': ['data/StatefulSet/zookeeper'],
  'ingest/Deployment/collector': ['ingest/Deployment/enricher', 'data/StatefulSet/kafka'],
  'monitoring/StatefulSet/prometheus': ['monitoring/DaemonSet/node-exporter', 'shop/Deployment/cart'],
  'batch/CronJob/reports': ['data/StatefulSet/postgres-main'],
};
const CALLS_OUT: Record<string, string[]> = {
  'payments/Deployment/payments-api': ['api.stripe.com'],
  'data/Deployment/etl': ['s3.us-east-1.amazonaws.com'],
  'batch/Job/backfill': ['s3.us-east-1.amazonaws.com'],
  'ingest/Deployment/enricher': ['sqs.us-east-1.amazonaws.com'],
  'identity/Deployment/auth': ['ldap.corp.example'],
  'checkout/Deployment/checkout': ['hooks.slack.com', 'api.sendgrid.com'],
  'batch/CronJob/reports': ['api.github.com', 'pypi.org'],
};
/** Price per GiB sent, USD, as a cloud bills the class (the cost field other stages fill). */
const PRICE: Record<string, number> = {
  'same-zone': 0,
  'cross-zone': 0.02,
  'cross-region': 0.02,
  internet: 0.09,
  private: 0.01,
  unknown: 0,
};

interface Pod {
  ns: string;
  workload: string;
  name: string;
  ip: string;
  node: string;
  zone: string;
  region: string;
}

function cluster(generation: number): Pod[] {
  const rand = seeded(7 + generation);
  const pods: Pod[] = [];
  let n = 0;
  for (const [ns, workloads] of Object.entries(NAMESPACES)) {
    for (const workload of workloads) {
      const replicas = 6 + Math.floor(rand() * 30);
      const base = workload.split('/')[1];
      for (let r = 0; r < replicas; r++) {
        const z = Math.floor(rand() * ZONES.length);
        // A few replicas of the data tier run in a second region.
        const far = ns === 'data' && r % 9 === 8;
        pods.push({
          ns,
          workload,
          name: `${base}-${generation.toString(36)}${(n * 7919).toString(36).slice(-5)}`,
          ip: `10.${(n >> 8) & 255}.${n & 255}.${generation & 255}`,
          node: `node-${far ? 'eu-' : ''}${z}-${Math.floor(rand() * 12)}`,
          zone: far ? 'eu-west-1a' : ZONES[z],
          region: far ? 'eu-west-1' : 'us-east-1',
        });
        n++;
      }
    }
  }
  return pods;
}

function roundOf(pods: Pod[], seed: number, ts: number, n: number): EnrichedFlow[] {
  const rand = seeded(seed);
  const byWorkload = new Map<string, Pod[]>();
  for (const p of pods) {
    const k = `${p.ns}/${p.workload}`;
    byWorkload.set(k, [...(byWorkload.get(k) ?? []), p]);
  }
  const pick = <T>(a: T[]) => a[Math.floor(rand() * a.length)];
  const flows: EnrichedFlow[] = [];
  const seen = new Set<string>();
  let guard = 0;
  while (flows.length < n && guard++ < n * 20) {
    const src = pick(pods);
    const calls = CALLS[`${src.ns}/${src.workload}`] ?? [];
    const out = CALLS_OUT[`${src.ns}/${src.workload}`] ?? [];
    const r = rand();
    const size = Math.floor(rand() ** 3 * 4_000_000) + 200;
    const base = {
      ts,
      intervalSeconds: INTERVAL / 1000,
      srcIp: src.ip,
      srcPod: src.name,
      srcNamespace: src.ns,
      srcWorkload: src.workload,
      srcNode: src.node,
      srcZone: src.zone,
      srcRegion: src.region,
      proto: 'TCP',
      txPackets: 1,
      rxPackets: 1,
      // Priced below, once the class is known.
      cost: 0,
    };
    let f: EnrichedFlow & Record<string, unknown>;
    if (r < 0.75 && calls.length > 0) {
      const dst = pick(byWorkload.get(pick(calls)) ?? pods);
      const cls =
        src.region !== dst.region
          ? 'cross-region'
          : src.node === dst.node || src.zone === dst.zone
            ? 'same-zone'
            : 'cross-zone';
      f = {
        ...base,
        dstIp: dst.ip,
        dstPod: dst.name,
        dstNamespace: dst.ns,
        dstWorkload: dst.workload,
        dstNode: dst.node,
        dstZone: dst.zone,
        dstRegion: dst.region,
        dstDnsName: '',
        dstType: 'pod',
        crossZone: src.zone !== dst.zone,
        trafficClass: cls,
        txBytes: size >> 2,
        rxBytes: size,
      };
    } else {
      const named = out.length > 0 && rand() < 0.8;
      const ext = named ? EXTERNAL.find(([name]) => name === pick(out)) : undefined;
      const ip = ext ? pick(ext[1]) : `192.0.2.${Math.floor(rand() * 250)}`;
      const priv = ip.startsWith('10.');
      f = {
        ...base,
        ...toInternet,
        dstIp: ip,
        dstDnsName: ext ? ext[0] : '',
        dstType: priv ? 'private' : 'public',
        trafficClass: priv ? 'private' : 'internet',
        txBytes: ext ? size : size >> 4,
        rxBytes: size >> 3,
      };
    }
    const key = `${f.srcIp} ${f.dstIp}`;
    if (seen.has(key)) continue;
    seen.add(key);
    f.cost = (f.txBytes / 2 ** 30) * PRICE[f.trafficClass as string];
    flows.push(f);
    if (f.dstType === 'pod') {
      // The peer pod's node reports the same connection from its side.
      const back: EnrichedFlow & Record<string, unknown> = {
        ...f,
        srcIp: f.dstIp,
        srcPod: f.dstPod,
        srcNamespace: f.dstNamespace,
        srcWorkload: f.dstWorkload,
        srcNode: f.dstNode,
        srcZone: f.dstZone,
        srcRegion: f.dstRegion,
        dstIp: f.srcIp,
        dstPod: f.srcPod,
        dstNamespace: f.srcNamespace,
        dstWorkload: f.srcWorkload,
        dstNode: f.srcNode,
        dstZone: f.srcZone,
        dstRegion: f.srcRegion,
        txBytes: f.rxBytes,
        rxBytes: f.txBytes,
      };
      back.cost = (back.txBytes / 2 ** 30) * PRICE[f.trafficClass as string];
      seen.add(`${back.srcIp} ${back.dstIp}`);
      flows.push(back);
    }
  }
  return flows;
}

// ---- ring: push, memory, query ------------------------------------------------------------------
const T0 = Math.floor(Date.now() / INTERVAL) * INTERVAL - ROUNDS * INTERVAL;
const pods = cluster(0);
const rounds = Array.from({ length: ROUNDS }, (_, i) =>
  roundOf(pods, 100 + i, T0 + (i + 1) * INTERVAL, FLOWS),
);
console.log(
  `view bench: ${FLOWS} flows a round, ${ROUNDS} rounds of ${INTERVAL / 1000} s, ${pods.length} pods`,
);

const floorPush = time(() => {
  const m = new Map<string, number>();
  for (const f of rounds[0])
    m.set(`${f.srcPod} ${f.dstIp}`, (m.get(`${f.srcPod} ${f.dstIp}`) ?? 0) + f.txBytes);
  return m.size;
});

function fill(churn: boolean): { ring: TrafficRing; bytes: number; pushMs: number[] } {
  const clock = new ManualClock(T0);
  const before = heap();
  const ring = new TrafficRing({ exportInterval: INTERVAL }, clock);
  const pushMs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    clock.t = T0 + (i + 1) * INTERVAL + 500;
    const flows = churn ? roundOf(cluster(i + 1), 100 + i, T0 + (i + 1) * INTERVAL, FLOWS) : rounds[i];
    const t = performance.now();
    void ring.push(flows);
    pushMs.push(performance.now() - t);
  }
  const bytes = heap() - before;
  return { ring, bytes, pushMs };
}

// Rounds are held by the bench itself: what the ring adds is measured with them already live.
const stable = fill(false);
const pushSorted = [...stable.pushMs].sort((a, b) => a - b);
const size = stable.ring.size();
console.log(
  `push     ${FLOWS} flows: median ${pushSorted[ROUNDS >> 1].toFixed(1)} ms, max ${pushSorted[ROUNDS - 1].toFixed(1)} ms` +
    ` (floor: one Map pass ${floorPush.ms.toFixed(1)} ms, ratio ${(pushSorted[ROUNDS >> 1] / floorPush.ms).toFixed(1)})`,
);
console.log(
  `memory   same pods: ${mb(stable.bytes)} for ${size.pairs} pairs in ${size.buckets} buckets, ${size.endpoints} endpoints` +
    ` (${(stable.bytes / size.pairs).toFixed(0)} bytes a pair)`,
);
{
  const churn = fill(true);
  const s = churn.ring.size();
  console.log(
    `memory   new pods every round: ${mb(churn.bytes)} for ${s.pairs} pairs, ${s.endpoints} endpoints` +
      ` (${(churn.bytes / s.pairs).toFixed(0)} bytes a pair)`,
  );
}

const floorQuery = (() => {
  const n = size.pairs;
  const a = new Float64Array(n).fill(1);
  const b = new Float64Array(n).fill(2);
  return time(() => {
    let s = 0;
    for (let i = 0; i < n; i++) s += a[i] + b[i];
    return s;
  }).ms;
})();
console.log(`query    floor: summing ${size.pairs} pairs from typed arrays ${floorQuery.toFixed(2)} ms`);
for (const [window, label] of [
  [5 * 60_000, '5m'],
  [15 * 60_000, '15m'],
] as const) {
  for (const group of ['namespace', 'workload', 'pod'] as ViewGroup[]) {
    const q = time(() => stable.ring.query({ window, group, limit: 200 }), 3);
    const json = JSON.stringify(q.value);
    console.log(
      `query    ${label.padEnd(3)} ${group.padEnd(9)} ${q.ms.toFixed(0).padStart(4)} ms` +
        ` (ratio ${(q.ms / floorQuery).toFixed(0)}), ${q.value.matched} rows, JSON of 200: ${(json.length / 1024).toFixed(0)} KiB`,
    );
  }
}
{
  const q = time(
    () => stable.ring.query({ window: 15 * 60_000, group: 'pod', text: 'kafka', limit: 200 }),
    3,
  );
  console.log(`query    15m pod q=kafka ${q.ms.toFixed(0)} ms, ${q.value.matched} rows`);
}

// ---- page in Chromium ---------------------------------------------------------------------------
const page = loadViewPage();
if (page === undefined) throw new Error('dist/view/index.html missing: run npm run build first');
console.log(
  `bundle   ${(page.html.length / 1024).toFixed(1)} KiB, ${(gzipSync(page.html).length / 1024).toFixed(1)} KiB gzip`,
);
// Served with the wall clock: the same rounds, ending now.
const shift = Date.now() - (T0 + ROUNDS * INTERVAL);
const live = new TrafficRing({ exportInterval: INTERVAL });
for (const r of rounds) void live.push(r.map((f) => ({ ...f, ts: f.ts + shift })));
const server = new HttpServer(
  { listen: { host: '127.0.0.1', port: 0 } },
  {
    registry: new Registry(),
    notReady: () => undefined,
    log: silentLogger,
    router: viewRouter({ ring: live, log: silentLogger, page }),
  },
);
const { port } = await server.start();
const chromium = await launchChromium();
try {
  const tab = await chromium.newPage({ width: 1400, height: 1000 });
  const base = `http://127.0.0.1:${port}/`;
  const renders = async (url: string, n: number) => {
    await tab.navigate(url);
    await tab.waitFor('a render', `Number(document.getElementById('view').dataset.rounds ?? 0) >= ${n}`);
    return tab.evaluate<{ first: number; render: number[] }>(
      `({ first: performance.getEntriesByName('podflow:render')[0].startTime + performance.getEntriesByName('podflow:render')[0].duration,
          render: performance.getEntriesByName('podflow:render').map((e) => e.duration) })`,
    );
  };
  for (const group of ['namespace', 'workload', 'pod']) {
    const r = await renders(`${base}?group=${group}&window=15m`, 1);
    console.log(
      `page     ${group.padEnd(9)} 15m: first render done ${r.first.toFixed(0)} ms after navigation start, render ${r.render[0].toFixed(1)} ms`,
    );
  }
  // Later updates: the filter changes re-fetch and re-render with the map laid out from before.
  const later: [number, number][] = [];
  await renders(`${base}?window=15m`, 1);
  for (const cls of ['cross-zone', 'internet', '', 'same-zone', '']) {
    const before = await tab.evaluate<number>(`Number(document.getElementById('view').dataset.rounds)`);
    await tab.evaluate(
      `(() => { const s = document.querySelector('[name=class]'); s.value = ${JSON.stringify(cls)}; s.dispatchEvent(new Event('change', { bubbles: true })); })()`,
    );
    await tab.waitFor('an update', `Number(document.getElementById('view').dataset.rounds) > ${before}`);
    later.push(
      await tab.evaluate<[number, number]>(
        `['podflow:render', 'podflow:map'].map((m) => performance.getEntriesByName(m).at(-1).duration)`,
      ),
    );
  }
  console.log(
    `page     updates (workload, filters): render ${later.map(([r, m]) => `${r.toFixed(1)} (map ${m.toFixed(1)})`).join(', ')} ms`,
  );
  if (tab.errors.length > 0) console.log(`page     errors: ${tab.errors.join('; ')}`);
  if (SCREENSHOT !== undefined) {
    await renders(`${base}?window=15m`, 1);
    writeFileSync(SCREENSHOT, await tab.screenshot());
    console.log(`page     screenshot: ${SCREENSHOT}`);
  }
} finally {
  await chromium.close();
  await server.close();
}
