// Kubernetes context benchmark: the exporter's KubeCluster (five informers of the real client)
// syncing a big cluster served by the test API server in a child process.
//   cluster   50k pods (dual-stack, ~5 kB of JSON each), 2k nodes, 10k ReplicaSets, 500 Jobs, 2k Services
//   sync      start() → whenSynced(), all five informers listed (pages of 500) and watching
//   RSS       after sync and a GC (target ≤ 250 MB), and its growth over the process's start
//   lookups   lookup(ip, now) over a mix of pod v4/v6, node, service and unknown IPs (target ≥ 1M/s)
// The measured side runs the compiled code (dist/, `npm run build` first) under plain node in its own
// process (test/bench/kube-worker.mjs): RSS is then the exporter's own, without the API server's and
// without a TypeScript loader's. Floors measured in the same process and run: the same lists fetched
// page by page over HTTP and JSON.parse'd without the client (what any client must at least do), and
// a bare Map.get loop over the same IPs.
// Usage: npm run bench:kube [-- --pods N --nodes N --replicasets N]
import { execFileSync, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const PODS = Number(arg('pods', '50000'));
const NODES = Number(arg('nodes', '2000'));
const RS = Number(arg('replicasets', '10000'));
const mb = (n: number) => (n / 1024 / 1024).toFixed(0);

interface Info {
  url: string;
  kubeconfig: string;
  counts: Record<string, number>;
}

const serverMain = fileURLToPath(new URL('../kube-api-server/main.ts', import.meta.url));
const worker = fileURLToPath(new URL('./kube-worker.mjs', import.meta.url));
const child = fork(
  serverMain,
  ['--pods', String(PODS), '--nodes', String(NODES), '--replicasets', String(RS)],
  {
    execArgv: ['--import', 'tsx', '--max-old-space-size=4096'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  },
);
const t0 = Date.now();
const info = await new Promise<Info>((resolve, reject) => {
  child.once('message', (m) => resolve(m as Info));
  child.once('exit', (code) => reject(new Error(`API server process exited (${code})`)));
});
console.log(
  `test API server ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(info.counts)}`,
);

try {
  const out = execFileSync(
    process.execPath,
    [
      '--expose-gc',
      worker,
      '--url',
      info.url,
      '--kubeconfig',
      info.kubeconfig,
      '--pods',
      String(PODS),
      '--nodes',
      String(NODES),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 },
  );
  const r = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as {
    stats: Record<string, number>;
    syncMs: number;
    floorMs: number;
    pages: number;
    bytes: number;
    rssStart: number;
    rssSynced: number;
    heapSynced: number;
    heapStart: number;
    lookupsPerS: number;
    hitRatio: number;
    floorLookupsPerS: number;
  };
  console.log(`cluster: ${PODS} pods, ${NODES} nodes, ${RS} replicasets; indexed ${JSON.stringify(r.stats)}`);
  console.log(
    `sync      ${(r.syncMs / 1000).toFixed(2)} s   floor (raw paged HTTP + JSON.parse, ${r.pages} pages, ${mb(r.bytes)} MB) ${(r.floorMs / 1000).toFixed(2)} s   ratio ${(r.syncMs / r.floorMs).toFixed(2)}x   (target ≤ 20 s)`,
  );
  console.log(
    `RSS       ${mb(r.rssSynced)} MB after sync   (process start ${mb(r.rssStart)} MB, growth ${mb(r.rssSynced - r.rssStart)} MB; heap ${mb(r.heapStart)} → ${mb(r.heapSynced)} MB)   (target ≤ 250 MB)`,
  );
  console.log(
    `lookups   ${(r.lookupsPerS / 1e6).toFixed(2)} M/s (${(r.hitRatio * 100).toFixed(0)}% hits)   floor (bare Map.get) ${(r.floorLookupsPerS / 1e6).toFixed(2)} M/s   ratio ${(r.floorLookupsPerS / r.lookupsPerS).toFixed(2)}x   (target ≥ 1 M/s)`,
  );
} finally {
  child.kill('SIGTERM');
}
