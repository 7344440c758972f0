// The Grafana dashboards (deploy/grafana/podflow.json and podflow-egressd.json, built by
// deploy/grafana/dashboard.ts): their structure (importable, datasource variable, template
// variables, ranking over the range, table sorts on fields that exist), and every query of every
// panel and variable run against real Prometheus servers that scrape real podflow processes:
// - `podflow standalone` in a test network namespace (node-a, zone eu-1a), with the test Kubernetes
//   API server (pods, nodes, owners) and real TCP traffic to a pod on node-b (zone eu-1b: cross-zone)
//   and to a public address held by the peer namespace, its HTTP sink posting to a receiver that
//   answers 400 (records dropped); scraped with the node and pod labels Kubernetes discovery adds;
// - `podflow exporter` with one unreachable static collector (pull errors);
// - `podflow standalone --metrics-prefix egressd` (the egressd dashboard);
// - `podflow standalone --metrics-labels <the labels the dashboard says it needs>`, scraped by a
//   Prometheus of its own (its series carry podflow's names too).
// Template variables become `.*` (All), $__rate_interval 1m, $__range 5m.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DASHBOARD_FILES, dashboardText, type Flavour, NEEDED_LABELS } from '../deploy/grafana/dashboard.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import {
  cleanupAll,
  createPair,
  httpStatus,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { type Prometheus, type PromSample, startPrometheus } from './helpers/prometheus.js';
import { type Relay, relayIntoNetns } from './helpers/relay.js';
import { waitFor } from './helpers/wait.js';
import { node, pod, replicaSet } from './kube-api-server/objects.js';
import { KubeApiServer } from './kube-api-server/server.js';

const execFileP = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const FLAVOURS: Flavour[] = ['podflow', 'egressd'];
/** Grafana's reference to the dashboard's datasource variable. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana syntax, not a template string
const DS_REF = '${datasource}';
const VARIABLES = ['namespace', 'workload', 'node', 'zone', 'dst_namespace', 'dst_workload'];
const FLOW = {
  podflow: /\bpodflow_((transmit|received)_bytes|traffic_cost)_total\b/,
  egressd: /\begressd_(transmit|received)_bytes_total\b/,
};

interface Target {
  expr: string;
  refId: string;
  legendFormat?: string;
  format?: string;
  datasource: { type: string; uid: string };
}
interface Transformation {
  id: string;
  options: {
    renameByName?: Record<string, string>;
    excludeByName?: Record<string, boolean>;
    rowField?: string;
    columnField?: string;
  };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  transformations?: Transformation[];
  options?: { sortBy?: { displayName: string }[] };
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
  description: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const load = async (flavour: Flavour = 'podflow'): Promise<Dashboard> =>
  JSON.parse(await readFile(join(ROOT, DASHBOARD_FILES[flavour][0]), 'utf8'));
const panel = (d: Dashboard, title: string) => {
  const p = d.panels.find((x) => x.title === title);
  if (!p) throw new Error(`no panel ${title}`);
  return p;
};

/** What Grafana sends for "All" and the time range: variables substituted before querying. */
function substitute(expr: string): string {
  return expr
    .replace(/\$\{?(dst_namespace|dst_workload|namespace|workload|node|zone)\}?/g, '.*')
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

/** The `{{label}}` names a legend shows. */
const legendLabels = (t: Target) =>
  [...(t.legendFormat ?? '').matchAll(/\{\{\s*([a-z_]+)\s*\}\}/g)].map((m) => m[1]);

describe.each(FLAVOURS)('Grafana dashboard (%s names): structure', (flavour) => {
  it('is an importable dashboard with a Prometheus datasource variable', async () => {
    const d = await load(flavour);
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

  it('filters every flow panel by source and destination variables, All meaning any value', async () => {
    const d = await load(flavour);
    for (const name of VARIABLES) {
      const v = d.templating.list.find((x) => x.name === name);
      expect(v, name).toMatchObject({ type: 'query', includeAll: true, allValue: '.*' });
      expect(variableQuery(v!)).toMatch(FLOW[flavour]);
    }
    let flows = 0;
    for (const p of d.panels) {
      for (const t of p.targets ?? []) {
        if (!FLOW[flavour].test(t.expr)) continue;
        flows++;
        for (const name of VARIABLES)
          expect(t.expr, `${p.title}: $${name}`).toMatch(new RegExp(`\\$${name}\\b`));
      }
    }
    expect(flows).toBeGreaterThan(15);
    // The collectors' health panels follow the node variable.
    for (const p of d.panels) {
      for (const t of p.targets ?? []) {
        if (/podflow_collector_/.test(t.expr)) expect(t.expr, p.title).toContain('node=~"$node"');
      }
    }
  });

  it('ranks time series over the whole range, not at every step', async () => {
    const d = await load(flavour);
    let ranked = 0;
    for (const p of d.panels.filter((x) => x.type === 'timeseries')) {
      for (const t of p.targets ?? []) {
        const topks = [...t.expr.matchAll(/topk\(/g)];
        if (topks.length === 0) continue;
        ranked++;
        // The ranking is a filter (`and on (…) topk(…)`) evaluated at the end of the range.
        expect(t.expr, p.title).toMatch(/ and on \([a-z_, ]+\) topk\(\d+, /);
        expect(t.expr.slice(topks[0].index), p.title).toMatch(/^topk\(\d+, .*\[\$__range\] @ end\(\)\)/);
      }
    }
    expect(ranked).toBeGreaterThanOrEqual(4);
  });

  it('sorts tables by columns the panel has', async () => {
    const d = await load(flavour);
    for (const p of d.panels.filter((x) => x.type === 'table')) {
      const fields = new Set<string>(['Value']);
      for (const t of p.targets ?? []) {
        for (const m of t.expr.matchAll(/sum by \(([a-z_, ]+)\)/g))
          for (const l of m[1].split(/,\s*/)) fields.add(l);
      }
      for (const tr of p.transformations ?? []) {
        if (tr.id === 'organize') {
          for (const [from, to] of Object.entries(tr.options.renameByName ?? {})) {
            if (fields.delete(from)) fields.add(to);
          }
        }
        if (tr.id === 'groupingToMatrix') {
          fields.clear();
          fields.add(`${tr.options.rowField}\\${tr.options.columnField}`);
        }
      }
      for (const s of p.options?.sortBy ?? []) expect([...fields], p.title).toContain(s.displayName);
    }
  });

  it('has a service map: a node graph with nodes and edges frames', async () => {
    const d = await load(flavour);
    const map = d.panels.find((p) => p.type === 'nodeGraph')!;
    expect(map.targets!.map((t) => [t.refId, t.format])).toEqual([
      ['edges', 'table'],
      ['nodes', 'table'],
    ]);
    expect(map.transformations?.[0].options.renameByName).toMatchObject({ Value: 'mainstat' });
  });

  it('is the output of deploy/grafana/dashboard.ts, shipped unchanged in the Helm chart', async () => {
    for (const file of DASHBOARD_FILES[flavour]) {
      expect(await readFile(join(ROOT, file), 'utf8'), `${file}: run npm run dashboards`).toBe(
        dashboardText(flavour),
      );
    }
  });

  it('names the flow labels it needs', async () => {
    const d = await load(flavour);
    for (const label of NEEDED_LABELS[flavour]) expect(d.description).toContain(label);
  });
});

describe('Grafana dashboard: metric names', () => {
  it('uses only metric names podflow defines', async () => {
    const sources = await Promise.all(
      ['collector/metrics.ts', 'exporter/metrics.ts', 'exporter/prometheus-sink.ts'].map((f) =>
        readFile(join(ROOT, f), 'utf8'),
      ),
    );
    const defined = sources.join('\n');
    for (const flavour of FLAVOURS) {
      const d = await load(flavour);
      const used = new Set<string>();
      for (const p of d.panels) {
        for (const t of p.targets ?? []) {
          for (const [m] of t.expr.matchAll(/\b(podflow|egressd)_[a-z_]+/g)) used.add(m);
        }
      }
      expect(used.size).toBeGreaterThan(5);
      for (const name of used) {
        const base = name.replace(/_(bucket|count|sum)$/, '');
        // Flow counters are built from the prefix (`${prefix}_transmit_bytes_total`); egressd has no
        // packet counters.
        const flow = new RegExp(`^${flavour}_((transmit|received)_bytes|traffic_cost)_total$`).test(base);
        const self = base.startsWith('podflow_') && defined.includes(`'${base}'`);
        expect(flow || self, `${flavour}: ${name} is not defined by podflow`).toBe(true);
      }
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
  /** Scrapes only the standalone that keeps the labels the dashboard needs. */
  let promFew: Prometheus | undefined;
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
      if ((await httpStatus(host, `http://127.0.0.1:${port}/readyz`)) === 200) return;
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
    api.create('nodes', node({ name: 'node-a', zone: 'eu-1a', region: 'eu-1', internalIPs: ['10.233.9.1'] }));
    api.create('nodes', node({ name: 'node-b', zone: 'eu-1b', region: 'eu-1', internalIPs: ['10.233.9.2'] }));
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
    const standaloneArgs = (port: number, ...more: string[]) => [
      BIN,
      'standalone',
      '--listen',
      `127.0.0.1:${port}`,
      '--interval',
      '1s',
      '--node-name',
      'node-a',
      '--kubeconfig',
      kubeconfig,
      ...more,
      ...common,
    ];
    const spawned: [number, ChildProcess][] = [
      [
        9471,
        host.spawn(
          process.execPath,
          standaloneArgs(9471, '--http-sink-url', 'http://127.0.0.1:8080/ingest'),
          env,
        ),
      ],
      [
        9472,
        host.spawn(
          process.execPath,
          [
            BIN,
            'exporter',
            '--listen',
            '127.0.0.1:9472',
            '--collectors',
            'http://127.0.0.1:19999',
            ...common,
          ],
          env,
        ),
      ],
      [9473, host.spawn(process.execPath, standaloneArgs(9473, '--metrics-prefix', 'egressd'), env)],
      [
        9474,
        host.spawn(
          process.execPath,
          standaloneArgs(9474, '--metrics-labels', NEEDED_LABELS.podflow.join(',')),
          env,
        ),
      ],
    ];
    for (const [, p] of spawned) {
      children.push(p);
      p.stderr?.on('data', (d) => {
        logs += d;
      });
    }
    for (const [port, p] of spawned) await waitReady(port, p);
    prom = await startPrometheus({
      targets: ['127.0.0.1:9471', '127.0.0.1:9472', '127.0.0.1:9473'],
      ns: host,
      // What Kubernetes service discovery and the chart's PodMonitor relabeling add.
      targetLabels: { '127.0.0.1:9471': { node: 'node-a', pod: 'podflow-collector-x7k2p' } },
    });
    promFew = await startPrometheus({ targets: ['127.0.0.1:9474'], ns: host, port: 9091 });

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
      if (round === 0) {
        // Every flow series scraped once before the other rounds: a series whose first sample held
        // all the traffic (a process that started exporting late, a scrape that failed under load)
        // would show no increase() over the range.
        // Two series each: to the db pod and to the internet (whatever labels the process keeps).
        const q = 'count by (instance) ({__name__=~"(podflow|egressd)_transmit_bytes_total"}) >= 2';
        await waitFor(
          'both flow series of every podflow process scraped',
          async () => {
            const seen = new Set(
              [...(await prom!.query(q)), ...(await promFew!.query(q))].map((x) => x.metric.instance),
            );
            return (
              ['127.0.0.1:9471', '127.0.0.1:9473', '127.0.0.1:9474'].every((i) => seen.has(i)) || undefined
            );
          },
          60_000,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }, 240_000);

  afterAll(async () => {
    await prom?.stop();
    await promFew?.stop();
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
  async function samples(expr: string, p: Prometheus = prom!): Promise<PromSample[]> {
    if (deadline === 0) deadline = Date.now() + 45_000;
    for (;;) {
      const s = await p.query(expr);
      if (s.length > 0 || Date.now() > deadline) return s;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  it('answers every variable query', async () => {
    for (const flavour of FLAVOURS) {
      const d = await load(flavour);
      for (const v of d.templating.list.filter((x) => x.type === 'query')) {
        const s = await samples(variableQuery(v));
        expect(s.length, `${flavour} variable ${v.name}: ${variableQuery(v)}`).toBeGreaterThan(0);
      }
    }
  });

  /** Every query of `flavour` against `p` (only flow queries with `flowsOnly`): what came back empty. */
  async function emptyQueries(flavour: Flavour, p: Prometheus, flowsOnly = false) {
    const d = await load(flavour);
    const empty: string[] = [];
    const blankLegends: string[] = [];
    let checked = 0;
    for (const panel of d.panels) {
      for (const t of panel.targets ?? []) {
        if (flowsOnly && !FLOW[flavour].test(t.expr)) continue;
        const expr = substitute(t.expr);
        const s = await samples(expr, p);
        checked++;
        if (s.length === 0) empty.push(`${panel.title} [${t.refId}]: ${expr}`);
        // Every label a legend shows has a value: no blank legend entries.
        for (const sample of s) {
          for (const l of legendLabels(t)) {
            if (!sample.metric[l])
              blankLegends.push(`${panel.title}: ${l} empty in ${JSON.stringify(sample.metric)}`);
          }
        }
      }
    }
    return { empty, blankLegends, checked };
  }

  it('answers every panel query with data, every legend named', async () => {
    for (const flavour of FLAVOURS) {
      const r = await emptyQueries(flavour, prom!);
      expect(r.checked).toBeGreaterThanOrEqual(25);
      expect(r.empty, `${flavour}:\n${r.empty.join('\n')}\n${logs.slice(-3000)}`).toEqual([]);
      expect(r.blankLegends, flavour).toEqual([]);
    }
  });

  it('has data in every flow panel when --metrics-labels keeps only the labels it names', async () => {
    const r = await emptyQueries('podflow', promFew!, true);
    expect(r.checked).toBeGreaterThan(15);
    expect(r.empty, `${r.empty.join('\n')}\n${logs.slice(-3000)}`).toEqual([]);
    expect(r.blankLegends).toEqual([]);
  });

  it('shows the traffic that was sent: cross-zone to the pod, egress to and ingress from the public address', async () => {
    const d = await load();
    const expr = (title: string, i = 0) => substitute(panel(d, title).targets![i].expr);
    // All four rounds delivered: 4 × 2 connections × 8000 payload bytes to the public address and
    // 4 × 3 × 20000 to db-0, headers on top.
    const total = async (sel: string, metric = 'podflow_transmit_bytes_total') =>
      (await prom!.scalar(`sum(${metric}{${sel}})`)) ?? 0;
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
    // 4 × 2 × 2000 bytes came back from the public address.
    const ingress = (await samples(expr('Internet ingress by workload'))).find(
      (s) => s.metric.src_workload === 'Deployment/web',
    );
    expect(ingress?.value).toBeGreaterThan(0);
    const ingressFrom = (await samples(expr('Internet ingress by source address'))).find(
      (s) => s.metric.dst_ip === PUBLIC,
    );
    expect(ingressFrom?.value).toBeGreaterThan(0);
    expect(ingressFrom!.value).toBeLessThan(
      (await total(`dst_ip="${PUBLIC}"`, 'podflow_received_bytes_total')) * 1.05,
    );
    expect(
      (await samples(expr('Traffic by protocol'))).find((s) => s.metric.proto === 'TCP')?.value,
    ).toBeGreaterThan(0);
    expect((await samples(expr('Traffic by node'))).map((s) => s.metric.src_node)).toContain('node-a');

    // Cost (the nodes carry AWS providerIDs: the AWS preset): the cross-zone bytes to db-0 and the
    // bytes to the public address, each class by itself, and per workload and class.
    const classes = await samples(expr('Cost by traffic class'));
    expect(classes.find((s) => s.metric.traffic_class === 'cross-zone')?.value).toBeGreaterThan(0);
    expect(classes.find((s) => s.metric.traffic_class === 'internet')?.value).toBeGreaterThan(0);
    const byClass = await samples(expr('Cost by workload and class'));
    const webCross = byClass.find(
      (s) => s.metric.src_workload === 'Deployment/web' && s.metric.traffic_class === 'cross-zone',
    );
    // Over the range: at most every byte sent to db-0 at 0.02 per GiB.
    expect(webCross?.value).toBeGreaterThan(0);
    expect(webCross!.value).toBeLessThanOrEqual(((dbBytes * 1.05) / 2 ** 30) * 0.02);
    const dest = (await samples(expr('External destinations by cost'))).find(
      (s) => s.metric.dst_ip === PUBLIC,
    );
    expect(dest?.metric.traffic_class).toBe('internet');
    expect(dest!.value).toBeLessThanOrEqual(((publicBytes * 1.05) / 2 ** 30) * 0.09);

    // The matrix keeps the namespace with the workload, rows and columns alike.
    const matrix = (await samples(expr('Pod-to-pod matrix (workloads)'))).find(
      (s) => s.metric.source === 'shop/Deployment/web' && s.metric.target === 'shop/StatefulSet/db',
    );
    expect(matrix?.value).toBeGreaterThan(0);
    expect(matrix!.value).toBeLessThanOrEqual(dbBytes * 1.05);

    const pullErrors = await samples(expr('Pull errors'));
    // Not scraped with a node label: named by its address.
    expect(pullErrors.find((s) => s.metric.node === '127.0.0.1:19999')?.value).toBeGreaterThan(0);
    // Health legends name the collector's node where the scrape has it.
    const entries = await samples(expr('Conntrack entries'));
    expect(entries.map((s) => s.metric.who)).toContain('node-a');
    expect(entries.map((s) => s.metric.who)).toContain('127.0.0.1:9473');
  });

  it('draws a service map whose edges join its nodes', async () => {
    for (const [flavour, web, db] of [
      ['podflow', 'shop/Deployment/web', 'shop/StatefulSet/db'],
      ['egressd', 'shop/web-7d4f-x2x9q', 'shop/db-0'],
    ] as const) {
      const map = (await load(flavour)).panels.find((p) => p.type === 'nodeGraph')!;
      const [edges, nodes] = await Promise.all(map.targets!.map((t) => samples(substitute(t.expr))));
      const ids = new Set(nodes.map((n) => n.metric.id));
      expect(nodes.every((n) => n.metric.title === n.metric.id)).toBe(true);
      expect(new Set(edges.map((e) => e.metric.id)).size).toBe(edges.length);
      for (const e of edges) {
        expect(ids, `${flavour} edge ${e.metric.id}`).toContain(e.metric.source);
        expect(ids, `${flavour} edge ${e.metric.id}`).toContain(e.metric.target);
        expect(e.metric.id).toBe(`${e.metric.source} → ${e.metric.target}`);
      }
      const edge = (to: string) => edges.find((e) => e.metric.source === web && e.metric.target === to);
      expect(edge(db)?.value, `${flavour}: ${JSON.stringify(edges.map((e) => e.metric.id))}`).toBeGreaterThan(
        0,
      );
      expect(edge('internet')?.value, flavour).toBeGreaterThan(0);
      // Senders carry their bytes sent; a receiver that sends nothing shows 0.
      expect(nodes.find((n) => n.metric.id === web)?.value).toBeGreaterThan(0);
      expect(nodes.find((n) => n.metric.id === 'internet')?.value).toBe(0);
    }
  });

  it('puts equal names of two namespaces apart in the matrix, egressd names too', async () => {
    const d = await load('egressd');
    const matrix = await samples(substitute(panel(d, 'Pod-to-pod matrix (pods)').targets![0].expr));
    expect(matrix.find((s) => s.metric.source === 'shop/web-7d4f-x2x9q')?.metric.target).toBe('shop/db-0');
  });
});
