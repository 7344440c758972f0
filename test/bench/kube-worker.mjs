// The measured side of test/bench/kube.bench.ts: the compiled exporter code (dist/) under plain
// node, so that RSS is what `podflow exporter` would use, not a TypeScript loader's.
// argv: --url U --kubeconfig F --pods N --nodes N ; prints one JSON line of results.
import { KubeCluster } from '../../dist/exporter/kube-cluster.js';
import { resolveKubeConfig } from '../../dist/shared/kube.js';
import { silentLogger } from '../../dist/shared/log.js';

const arg = (name) => process.argv[process.argv.indexOf(`--${name}`) + 1];
const PODS = Number(arg('pods'));
const NODES = Number(arg('nodes'));
const LOOKUPS = 5_000_000;

const rss = () => {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().rss;
};

const rssStart = rss();
const heapStart = process.memoryUsage().heapUsed;
const access = resolveKubeConfig({ kubeconfig: arg('kubeconfig') });
const cluster = new KubeCluster(
  { podRetention: 120_000 },
  { kubeConfig: access.kubeConfig, log: silentLogger },
);
const s0 = performance.now();
cluster.start();
await cluster.whenSynced();
const syncMs = performance.now() - s0;
const rssSynced = rss();
const heapSynced = process.memoryUsage().heapUsed;

// Floor: the same lists, paged the same way, fetched and parsed without the client.
const url = arg('url');
const token = access.kubeConfig.getCurrentUser()?.token ?? '';
const f0 = performance.now();
let bytes = 0;
let pages = 0;
for (const path of [
  '/api/v1/pods',
  '/api/v1/nodes',
  '/apis/apps/v1/replicasets',
  '/apis/batch/v1/jobs',
  '/api/v1/services',
]) {
  let cont;
  do {
    const q = `?limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`;
    const res = await fetch(url + path + q, { headers: { Authorization: `Bearer ${token}` } });
    const text = await res.text();
    bytes += text.length;
    pages++;
    cont = JSON.parse(text).metadata.continue;
  } while (cont);
}
const floorMs = performance.now() - f0;

// Lookups over a realistic mix: pod IPv4 (60%), pod IPv6, node, service, unknown public. Built
// fresh (new string objects, as IPs decoded from collector batches are), not the index's own keys.
const makeIps = () => {
  const out = [];
  for (let i = 0; i < 100_000; i++) {
    const p = (i * 7919) % PODS;
    const n = i % NODES;
    const s = i % 2000;
    switch (i % 10) {
      case 0:
        out.push(`fd00:244::${p.toString(16)}`);
        break;
      case 1:
        out.push(`10.0.${n >> 8}.${n & 255}`);
        break;
      case 2:
        out.push(`10.96.${s >> 8}.${s & 255}`);
        break;
      case 3:
        out.push(`203.0.113.${i & 255}`);
        break;
      default:
        out.push(`10.${64 + (p >> 16)}.${(p >> 8) & 255}.${p & 255}`);
    }
  }
  return out;
};
const ips = makeIps();
const now = Date.now();
// Warm-up (JIT, answer caches) with yet other string objects: the timed loop must not find its
// own strings as keys (IPs from collector batches never are).
const warm = makeIps();
const run = (fn) => {
  let hits = 0;
  for (let i = 0; i < 300_000; i++) if (fn(warm[i % warm.length]) !== undefined) hits++;
  hits = 0;
  const t = performance.now();
  for (let i = 0; i < LOOKUPS; i++) if (fn(ips[i % ips.length]) !== undefined) hits++;
  return { s: (performance.now() - t) / 1000, hits };
};
const look = run((ip) => cluster.lookup(ip, now));
// The floor: one Map.get per lookup on a bare Map of the same answers (IPs that have one), keyed
// by other string objects of the same IPs, as the index's keys are.
const bare = new Map();
for (const ip of makeIps()) {
  const e = cluster.lookup(ip, now);
  if (e !== undefined) bare.set(ip, e);
}
const floor = run((ip) => bare.get(ip));
if (floor.hits !== look.hits) throw new Error(`floor disagrees: ${floor.hits} vs ${look.hits} hits`);

await cluster.close();
process.stdout.write(
  `${JSON.stringify({
    stats: cluster.stats(),
    syncMs,
    floorMs,
    pages,
    bytes,
    rssStart,
    rssSynced,
    heapSynced,
    heapStart,
    lookupsPerS: LOOKUPS / look.s,
    hitRatio: look.hits / LOOKUPS,
    floorLookupsPerS: LOOKUPS / floor.s,
  })}\n`,
);
process.exit(0);
