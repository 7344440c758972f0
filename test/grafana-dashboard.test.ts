// The Grafana dashboard (deploy/grafana/podflow.json): its structure (importable, datasource
// variable, template variables), and every query of every panel and variable run against a real
// Prometheus that scrapes real podflow processes:
// - `podflow standalone` in a test network namespace (node-a, zone eu-1a), with the test Kubernetes
//   API server (pods, nodes, owners) and real TCP traffic to a pod on node-b (zone eu-1b: cross-zone)
//   and to a public address held by the peer namespace, its HTTP sink posting to a receiver that
//   answers 400 (records dropped);
// - `podflow exporter` with one unreachable static collector (pull errors).
// Template variables become `.*` (All), $__rate_interval 1m, $__range 5m.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpReceiver } from './helpers/http-receiver.js';
import {
  cleanupAll,
  createPair,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { type Prometheus, startPrometheus } from './helpers/prometheus.js';
import { type Relay, relayIntoNetns } from './helpers/relay.js';
import { node, pod, replicaSet } from './kube-api-server/objects.js';
import { KubeApiServer } from './kube-api-server/server.js';

const execFileP = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const DASHBOARD = join(ROOT, 'deploy/grafana/podflow.json');
const CHART_COPY = join(ROOT, 'deploy/helm/podflow/dashboards/podflow.json');
/** Grafana's reference to the dashboard's datasource variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana syntax, not a template string
const DS_REF = '${datasource}';

interface Target {
  expr: string;
  refId: string;
  datasource: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string | { query: string };
  datasource?: { type: string; uid: string };
  allValue?: string;
  includeAll?: boolean;
}
interface Dashboard {
  schemaVersion: number;
  title: string;
  uid: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const load = async (): Promise<Dashboard> => JSON.parse(await readFile(DASHBOARD, 'utf8'));

/** What Grafana sends for "All" and the time range: variables substituted before querying. */
function substitute(expr: string): string {
  return expr
    .replace(/\$\{?(namespace|workload|node)\}?/g, '.*')
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__range', '5m');
}

/** `label_values(selector, label)` as PromQL returning one series per value. */
function variableQuery(v: Variable): string {
  const q = typeof v.query === 'string' ? v.query : v.query.query;
  const m = /^label_values\((.+),\s*([a-z_]+)\)$/.exec(q.trim());
  if (!m) throw new Error(`variable ${v.name}: not a label_values() query: ${q}`);
  return `count by (${m[2]}) (${substitute(m[1])})`;
}

describe('Grafana dashboard: structure', () => {
  it('is an importable dashboard with a Prometheus datasource variable', async () => {
    const d = await load();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(d.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    const ds = d.templating.list.find((v) => v.type === 'datasource');
    expect(ds).toMatchObject({ name: 'datasource', query: 'prometheus' });
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of d.panels) {
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: DS_REF });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.datasource.uid).toBe(DS_REF);
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
    // No two panels overlap on the grid.
    const cells = new Set<string>();
    for (const p of d.panels) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('has namespace, workload and node variables with All meaning any value', async () => {
    const d = await load();
    for (const name of ['namespace', 'workload', 'node']) {
      const v = d.templating.list.find((x) => x.name === name);
      expect(v, name).toMatchObject({ type: 'query', includeAll: true, allValue: '.*' });
      expect(variableQuery(v!)).toContain('podflow_transmit_bytes_total');
    }
    // Every flow panel honours the three variables.
    for (const p of d.panels) {
      for (const t of p.targets ?? []) {
        if (!t.expr.includes('podflow_transmit_bytes_total')) continue;
        for (const name of ['namespace', 'workload', 'node']) expect(t.expr, p.title).toContain(`$${name}`);
      }
    }
  });

  it('is shipped unchanged in the Helm chart', async () => {
    expect(await readFile(CHART_COPY, 'utf8')).toBe(await readFile(DASHBOARD, 'utf8'));
  });

  it('uses only metric names podflow defines', async () => {
    const d = await load();
    const sources = await Promise.all(
      ['collector/metrics.ts', 'exporter/metrics.ts', 'exporter/prometheus-sink.ts'].map((f) =>
        readFile(join(ROOT, f), 'utf8'),
      ),
    );
    const defined = sources.join('\n');
    const used = new Set<string>();
    for (const p of d.panels) {
      for (const t of p.targets ?? []) for (const [m] of t.expr.matchAll(/podflow_[a-z_]+/g)) used.add(m);
    }
    expect(used.size).toBeGreaterThan(5);
    for (const name of used) {
      const base = name.replace(/_(bucket|count|sum)$/, '');
      // Flow counters are built from the prefix (`${prefix}_transmit_bytes_total`).
      const flow = /^podflow_(transmit|received)_(bytes|packets)_total$/.test(base);
      expect(flow || defined.includes(`'${base}'`), `${name} is not defined by podflow`).toBe(true);
    }
  });
});

const root = requireRoot();

describe.skipIf(!root)('Grafana dashboard: every query returns data from real podflow processes', () => {
  const children: ChildProcess[] = [];
  const servers: TrafficServer[] = [];
  const relays: Relay[] = [];
  let api: KubeApiServer;
  let receiver: HttpReceiver;
  let prom: Prometheus | undefined;
  let home: string;
  let host: Netns;
  let peer: Netns;
  let addr: { a4: string; b4: string };
  let logs = '';
  const PUBLIC = '198.51.100.7';

  async function waitReady(port: number, proc: ChildProcess): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`podflow exited ${proc.exitCode}: ${logs}`);
      const { stdout } = await host
        .exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/readyz`])
        .catch(() => ({ stdout: '0' }));
      if (stdout.trim() === '200') return;
      if (Date.now() > deadline) throw new Error(`podflow on ${port} not ready: ${logs}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  beforeAll(async () => {
    await execFileP('npm', ['run', 'build', '--silent'], { cwd: ROOT });
    home = await mkdtemp(join(tmpdir(), 'pf-dash-'));
    const pair = await createPair(233);
    host = pair.a;
    peer = pair.b;
    addr = pair;
    // A public address held by the peer namespace, routed to it from the host namespace only.
    await peer.addAddress('pfb', `${PUBLIC}/32`);
    await host.exec('ip', ['route', 'add', `${PUBLIC}/32`, 'via', addr.b4]);

    // The cluster: node-a (this host, zone eu-1a) runs web; node-b (eu-1b) runs db-0 at the peer's IP.
    api = new KubeApiServer();
    api.create('nodes', node({ name: 'node-a', zone: 'eu-1a', internalIPs: ['10.233.9.1'] }));
    api.create('nodes', node({ name: 'node-b', zone: 'eu-1b', internalIPs: ['10.233.9.2'] }));
    api.create('replicasets', replicaSet('web-7d4f', 'shop', { kind: 'Deployment', name: 'web' }));
    api.create(
      'pods',
      pod({
        name: 'web-7d4f-x2x9q',
        namespace: 'shop',
        node: 'node-a',
        ips: [addr.a4],
        owner: { kind: 'ReplicaSet', name: 'web-7d4f' },
      }),
    );
    api.create(
      'pods',
      pod({
        name: 'db-0',
        namespace: 'shop',
        node: 'node-b',
        ips: [addr.b4],
        owner: { kind: 'StatefulSet', name: 'db' },
      }),
    );
    await api.listen();
    receiver = await HttpReceiver.start();
    receiver.otherwise({ status: 400, body: 'rejected by test' });
    relays.push(await relayIntoNetns(host, 6443, Number(new URL(api.url).port), home));
    relays.push(await relayIntoNetns(host, 8080, Number(new URL(receiver.url).port), home));
    const kubeconfig = join(home, 'kubeconfig');
    await writeFile(kubeconfig, api.kubeconfigYaml().replace(api.url, 'http://127.0.0.1:6443'), {
      mode: 0o600,
    });

    const env = { HOME: home, KUBECONFIG: join(home, 'none') };
    const common = ['--export-interval', '1s', '--log-level', 'warn'];
    const standalone = host.spawn(
      process.execPath,
      [
        BIN,
        'standalone',
        '--listen',
        '127.0.0.1:9471',
        '--interval',
        '1s',
        '--node-name',
        'node-a',
        '--kubeconfig',
        kubeconfig,
        '--http-sink-url',
        'http://127.0.0.1:8080/ingest',
        ...common,
      ],
      env,
    );
    const exporter = host.spawn(
      process.execPath,
      [BIN, 'exporter', '--listen', '127.0.0.1:9472', '--collectors', 'http://127.0.0.1:19999', ...common],
      env,
    );
    for (const p of [standalone, exporter]) {
      children.push(p);
      p.stderr?.on('data', (d) => {
        logs += d;
      });
    }
    await waitReady(9471, standalone);
    await waitReady(9472, exporter);
    prom = await startPrometheus({ targets: ['127.0.0.1:9471', '127.0.0.1:9472'], ns: host });

    const [db, internet] = await Promise.all([
      startServer(peer, 'tcp', addr.b4),
      startServer(peer, 'tcp', PUBLIC),
    ]);
    servers.push(db!, internet!);
    // Traffic in a few rounds, so that rates over the last minute see it.
    for (let round = 0; round < 4; round++) {
      const r = await Promise.all([
        runClient(host, 'tcp', addr.b4, db!.port, { send: 20_000, receive: 50_000, count: 3 }),
        runClient(host, 'tcp', PUBLIC, internet!.port, { send: 8_000, receive: 2_000, count: 2 }),
      ]);
      for (const x of r) expect(x.failed).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }, 240_000);

  afterAll(async () => {
    await prom?.stop();
    for (const c of children) await kill(c).catch(() => undefined);
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    for (const r of relays) await r.close();
    await receiver?.close();
    await api?.stop();
    await cleanupAll();
    if (home) await rm(home, { recursive: true, force: true });
  });

  // One shared allowance for data to show up (the exporter publishes on its next round); once spent,
  // each query is asked once.
  let deadline = 0;
  async function samples(expr: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    if (deadline === 0) deadline = Date.now() + 45_000;
    for (;;) {
      const s = await prom!.query(expr);
      if (s.length > 0 || Date.now() > deadline) return s;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  it('answers every variable query', async () => {
    const d = await load();
    for (const v of d.templating.list.filter((x) => x.type === 'query')) {
      const s = await samples(variableQuery(v));
      expect(s.length, `variable ${v.name}: ${variableQuery(v)}`).toBeGreaterThan(0);
    }
  });

  it('answers every panel query with data', async () => {
    const d = await load();
    const empty: string[] = [];
    let checked = 0;
    for (const p of d.panels) {
      for (const t of p.targets ?? []) {
        const expr = substitute(t.expr);
        const s = await samples(expr);
        checked++;
        if (s.length === 0) empty.push(`${p.title} [${t.refId}]: ${expr}`);
      }
    }
    expect(checked).toBeGreaterThanOrEqual(20);
    expect(empty, `${empty.join('\n')}\n${logs.slice(-3000)}`).toEqual([]);
  });

  it('shows the traffic that was sent: cross-zone to the pod, egress to the public address', async () => {
    const d = await load();
    const expr = (title: string) => substitute(d.panels.find((p) => p.title === title)!.targets![0].expr);
    // All four rounds delivered: 4 × 2 connections × 8000 payload bytes to the public address and
    // 4 × 3 × 20000 to db-0, headers on top.
    const total = async (sel: string) =>
      (await prom!.scalar(`sum(podflow_transmit_bytes_total{${sel}})`)) ?? 0;
    const until = Date.now() + 20_000;
    while ((await total(`dst_ip="${PUBLIC}"`)) < 4 * 2 * 8_000 && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const publicBytes = await total(`dst_ip="${PUBLIC}"`);
    const dbBytes = await total('dst_pod="db-0"');
    expect(publicBytes).toBeGreaterThan(4 * 2 * 8_000);
    expect(dbBytes).toBeGreaterThan(4 * 3 * 20_000);

    const crossByPair = await samples(expr('Cross-zone traffic by zone pair'));
    const pair = crossByPair.find((s) => s.metric.src_zone === 'eu-1a' && s.metric.dst_zone === 'eu-1b');
    expect(pair?.value).toBeGreaterThan(0);
    // Panels over the range count from each series' first scrape: more than nothing, at most all.
    const egress = (await samples(expr('Internet egress by destination'))).find(
      (s) => s.metric.dst_ip === PUBLIC,
    );
    expect(egress?.value).toBeGreaterThan(0);
    expect(egress!.value).toBeLessThanOrEqual(publicBytes * 1.05);
    const matrix = (await samples(expr('Pod-to-pod matrix (workloads)'))).find(
      (s) => s.metric.dst_workload === 'StatefulSet/db',
    );
    expect(matrix?.value).toBeGreaterThan(0);
    expect(matrix!.value).toBeLessThanOrEqual(dbBytes * 1.05);
    const pullErrors = await samples(expr('Pull errors'));
    expect(pullErrors.find((s) => s.metric.collector?.includes('127.0.0.1:19999'))?.value).toBeGreaterThan(0);
  });
});
