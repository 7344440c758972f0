// A two-node cluster end to end, the cases test/e2e-cluster.test.ts leaves out: two pods on one node
// (both ends local to one collector), a pod talking to a public host, IPv6 pods, and faults: the
// exporter killed with SIGKILL and restarted, and the HTTP sink refusing (503) for a few rounds.
// Nodes are network namespaces running `podflow collector` (bin/podflow.js, the built dist/); the
// control namespace runs `podflow exporter` (discovery and enrichment through the test API server),
// a real Prometheus and the forwarders to the test API server and a real HTTP receiver. Every
// expectation is what the nodes' conntrack counted, byte for byte.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLOW_LABELS } from '../shared/config.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import {
  addRoute,
  cleanupAll,
  connect,
  createNetns,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { type Prometheus, startPrometheus } from './helpers/prometheus.js';
import { type Relay, relayIntoNetns } from './helpers/relay.js';
import { waitFor as waitUntil } from './helpers/wait.js';
import { type Harness, startHarness } from './kube-api-server/harness.js';
import { node, pod, replicaSet } from './kube-api-server/objects.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const root = requireRoot();

const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000) =>
  waitUntil(what, fn, timeoutMs);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ct {
  origSrc: string;
  replySrc: string;
  origBytes: number;
  replyBytes: number;
}

async function conntrack(ns: Netns): Promise<Ct[]> {
  const { stdout } = await ns.exec('conntrack', ['-L', '-o', 'extended']);
  const re = /src=(\S+) dst=\S+ .*?packets=\d+ bytes=(\d+) src=(\S+) dst=\S+ .*?packets=\d+ bytes=(\d+)/;
  return stdout
    .split('\n')
    .map((l) => re.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ origSrc: m[1]!, origBytes: Number(m[2]), replySrc: m[3]!, replyBytes: Number(m[4]) }));
}

/** Bytes `local` sent to `peer`, as that namespace's conntrack counted them. */
async function sentBy(ns: Netns, local: string, peer: string): Promise<number> {
  let n = 0;
  for (const e of await conntrack(ns)) {
    if (e.origSrc === local && e.replySrc === peer) n += e.origBytes;
    if (e.replySrc === local && e.origSrc === peer) n += e.replyBytes;
  }
  return n;
}

// node-a (zone-a): web (Deployment) and cache (StatefulSet) side by side, and an IPv6 pod.
const WEB = '10.244.1.5';
const CACHE = '10.244.1.6';
const V6_A = 'fd00:244:1::5';
// node-b (zone-b): an IPv6 pod.
const V6_B = 'fd00:244:2::7';
// A host on the internet, as far as podflow can tell (documentation range, reached from node-a).
const PUBLIC = '203.0.113.10';
const COLLECTOR = { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'collector' };

type Rec = Record<string, unknown>;

/** Prometheus stores an empty label as no label: put the contract's empty strings back. */
const labelsOf = (metric: Record<string, string>): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const l of FLOW_LABELS) out[l] = metric[l] ?? '';
  return out;
};

describe.skipIf(!root)('two-node cluster end to end: one-node pods, public peers, IPv6, faults', () => {
  let ctl: Netns;
  let na: Netns;
  let nb: Netns;
  let pub: Netns;
  let h: Harness;
  let rx: HttpReceiver;
  let dir: string;
  let prom: Prometheus | undefined;
  let exporter: ChildProcess | undefined;
  let logs = '';
  const relays: Relay[] = [];
  const procs: ChildProcess[] = [];
  const servers: TrafficServer[] = [];
  const srv: Record<string, TrafficServer> = {};

  const podflow = (ns: Netns, role: string, args: string[]): ChildProcess => {
    const p = ns.spawn(process.execPath, [BIN, ...args], { HOME: dir, KUBECONFIG: join(dir, 'none') });
    p.stderr?.on('data', (d) => {
      logs += `[${role}] ${d}`;
    });
    p.on('exit', (code, sig) => {
      logs += `[${role}] exited with ${code ?? sig}\n`;
    });
    procs.push(p);
    return p;
  };

  const curl = async (ns: Netns, url: string): Promise<number> => {
    const { stdout } = await ns.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', url]);
    return Number(stdout.trim());
  };

  const startExporter = async (): Promise<void> => {
    exporter = podflow(ctl, 'exporter', [
      'exporter',
      '--kubeconfig',
      join(dir, 'kubeconfig'),
      '--namespace',
      'podflow',
      '--listen',
      '127.0.0.1:9471',
      '--export-interval',
      '1s',
      '--http-sink-url',
      'http://127.0.0.1:9600/ingest',
      // A refused push gives up within a round or two; the pipeline offers it again next round.
      '--http-sink-max-retries',
      '1',
    ]);
    await waitFor('exporter ready', async () =>
      (await curl(ctl, 'http://127.0.0.1:9471/readyz')) === 200 ? true : undefined,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${logs.slice(-3000)}`);
    });
  };

  const q = async (promql: string) => (await prom!.scalar(promql)) ?? 0;

  /** Requests the receiver answered 2xx, once per Idempotency-Key (a retried batch keeps its key). */
  const deliveredRecords = (): Rec[] => {
    const byKey = new Map<string, Buffer>();
    for (const r of rx.requests) {
      if (typeof r.answer !== 'number' || r.answer < 200 || r.answer >= 300) continue;
      const key = String(r.headers['idempotency-key'] ?? '');
      expect(key).not.toBe('');
      const seen = byKey.get(key);
      // The same key accepted twice must be the same batch: it then counts once.
      if (seen) expect(seen.equals(r.body)).toBe(true);
      else byKey.set(key, r.body);
    }
    return [...byKey.values()].flatMap((b) =>
      b
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Rec),
    );
  };
  const txOf = (recs: Rec[], src: string, dst: string) =>
    recs.filter((r) => r.src_pod === src && r.dst_pod === dst).reduce((a, r) => a + Number(r.tx_bytes), 0);

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'dist/cmd/podflow.js'))) throw new Error('run `npm run build` first (dist/)');
    dir = await mkdtemp(join(tmpdir(), 'pf-e2e-faults-'));
    ctl = await createNetns('ctl');
    na = await createNetns('node-a');
    nb = await createNetns('node-b');
    pub = await createNetns('pub');
    await connect(
      { ns: ctl, dev: 'pfca', addrs: ['10.250.1.1/24'] },
      { ns: na, dev: 'pfac', addrs: ['10.250.1.2/24'] },
    );
    await connect(
      { ns: ctl, dev: 'pfcb', addrs: ['10.250.2.1/24'] },
      { ns: nb, dev: 'pfbc', addrs: ['10.250.2.2/24'] },
    );
    await connect(
      {
        ns: na,
        dev: 'pfab',
        addrs: ['10.250.3.1/24', 'fd00:250:3::1/64', `${WEB}/32`, `${CACHE}/32`, `${V6_A}/128`],
      },
      { ns: nb, dev: 'pfba', addrs: ['10.250.3.2/24', 'fd00:250:3::2/64', `${V6_B}/128`] },
    );
    await connect(
      { ns: na, dev: 'pfap', addrs: ['203.0.113.1/24'] },
      { ns: pub, dev: 'pfpa', addrs: [`${PUBLIC}/24`] },
    );
    await addRoute(na, 'fd00:244:2::/64', 'fd00:250:3::2');
    await addRoute(nb, 'fd00:244:1::/64', 'fd00:250:3::1');
    await addRoute(pub, '10.244.1.0/24', '203.0.113.1');
    for (const n of [na, nb]) {
      await n.trackConnections();
      // Entries stay for the whole test, so that conntrack's totals are cumulative to the end.
      for (const k of ['udp_timeout', 'udp_timeout_stream', 'tcp_timeout_time_wait', 'tcp_timeout_close']) {
        await n.sysctl(`net.netfilter.nf_conntrack_${k}`, 600);
      }
    }

    h = await startHarness();
    const s = h.server;
    s.create('nodes', node({ name: 'node-a', zone: 'zone-a', internalIPs: ['10.250.1.2'] }));
    s.create('nodes', node({ name: 'node-b', zone: 'zone-b', internalIPs: ['10.250.2.2'] }));
    s.create('replicasets', replicaSet('web-5f7c9', 'shop', { kind: 'Deployment', name: 'web' }));
    s.create('replicasets', replicaSet('api-6d8b4', 'edge', { kind: 'Deployment', name: 'api' }));
    const pods: [string, string, string, string, { kind: string; name: string }][] = [
      ['web-5f7c9-x1', 'shop', 'node-a', WEB, { kind: 'ReplicaSet', name: 'web-5f7c9' }],
      ['cache-0', 'shop', 'node-a', CACHE, { kind: 'StatefulSet', name: 'cache' }],
      ['api-6d8b4-a', 'edge', 'node-a', V6_A, { kind: 'ReplicaSet', name: 'api-6d8b4' }],
      ['store-0', 'edge', 'node-b', V6_B, { kind: 'StatefulSet', name: 'store' }],
    ];
    for (const [name, namespace, nodeName, ip, owner] of pods) {
      s.create('pods', pod({ name, namespace, node: nodeName, ips: [ip], owner }));
    }
    for (const [n, ip] of [
      ['node-a', '10.250.1.2'],
      ['node-b', '10.250.2.2'],
    ]) {
      s.create(
        'pods',
        pod({
          name: `podflow-collector-${n}`,
          namespace: 'podflow',
          node: n,
          ips: [ip],
          labels: COLLECTOR,
          hostNetwork: true,
        }),
      );
    }
    // The control namespace reaches the API server and the receiver through Unix sockets.
    relays.push(await relayIntoNetns(ctl, 6443, Number(new URL(s.url).port), dir));
    rx = await HttpReceiver.start();
    relays.push(await relayIntoNetns(ctl, 9600, Number(new URL(rx.url).port), dir));
    await writeFile(
      join(dir, 'kubeconfig'),
      s.kubeconfigYaml().replace(s.url, s.url.replace(/:\d+$/, ':6443')),
    );

    for (const [ns, name] of [
      [na, 'node-a'],
      [nb, 'node-b'],
    ] as const) {
      podflow(ns, name, [
        'collector',
        '--node-name',
        name,
        '--listen',
        '0.0.0.0:9470',
        '--interval',
        '500ms',
      ]);
    }
    const started = await Promise.all([
      startServer(na, 'tcp', CACHE),
      startServer(na, 'udp', CACHE),
      startServer(pub, 'tcp', PUBLIC),
      startServer(nb, 'tcp', V6_B),
    ]);
    servers.push(...started);
    [srv.cacheTcp, srv.cacheUdp, srv.pubTcp, srv.v6Tcp] = started;
    await startExporter();
    // A collector counts from its first read on: traffic before that is history, not reported.
    for (const ip of ['10.250.1.2', '10.250.2.2']) {
      await waitFor(`collector ${ip} ready`, async () =>
        (await curl(ctl, `http://${ip}:9470/readyz`)) === 200 ? true : undefined,
      );
    }
    prom = await startPrometheus({ targets: ['127.0.0.1:9471'], ns: ctl });
  }, 60_000);

  afterAll(async () => {
    await prom?.stop().catch(() => undefined);
    for (const p of procs) await kill(p, 'SIGKILL').catch(() => undefined);
    await Promise.all(servers.map((t) => t.stop().catch(() => undefined)));
    await cleanupAll();
    for (const r of relays) await r.close().catch(() => undefined);
    await rx?.close();
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const fail = (err: Error, got: string) => {
    throw new Error(
      `${err.message}: ${got}; ${logs
        .split('\n')
        .filter((l) => !l.includes('pull failed'))
        .join('\n')
        .slice(-3000)}`,
    );
  };

  // What each phase's traffic totals to, per pair, as conntrack counted it (cumulative).
  const want = { webCache: 0, cacheWeb: 0, v6ab: 0, v6ba: 0 };
  const readWant = async () => {
    want.webCache = await sentBy(na, WEB, CACHE);
    want.cacheWeb = await sentBy(na, CACHE, WEB);
    want.v6ab = await sentBy(na, V6_A, V6_B);
    want.v6ba = await sentBy(nb, V6_B, V6_A);
  };
  const M = {
    webCache: 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="cache-0"}',
    cacheWeb: 'podflow_transmit_bytes_total{src_pod="cache-0",dst_pod="web-5f7c9-x1"}',
    v6ab: 'podflow_transmit_bytes_total{src_pod="api-6d8b4-a",dst_pod="store-0"}',
    v6ba: 'podflow_transmit_bytes_total{src_pod="store-0",dst_pod="api-6d8b4-a"}',
  };
  const httpTotals = () => {
    const recs = deliveredRecords();
    return {
      webCache: txOf(recs, 'web-5f7c9-x1', 'cache-0'),
      cacheWeb: txOf(recs, 'cache-0', 'web-5f7c9-x1'),
      v6ab: txOf(recs, 'api-6d8b4-a', 'store-0'),
      v6ba: txOf(recs, 'store-0', 'api-6d8b4-a'),
    };
  };
  const waitHttpExact = (what: string, timeoutMs = 20_000) =>
    waitFor(
      what,
      async () => {
        const got = httpTotals();
        return got.webCache === want.webCache &&
          got.cacheWeb === want.cacheWeb &&
          got.v6ab === want.v6ab &&
          got.v6ba === want.v6ba
          ? got
          : undefined;
      },
      timeoutMs,
    ).catch((err: Error) => fail(err, `http ${JSON.stringify(httpTotals())}, want ${JSON.stringify(want)}`));

  /** Pod traffic of the fault phases: two pods on node-a (TCP) and the IPv6 pair across nodes. */
  const podTraffic = async (send: number, receive: number) => {
    const results = await Promise.all([
      runClient(na, 'tcp', CACHE, srv.cacheTcp!.port, { send, receive, count: 2, localAddress: WEB }),
      runClient(na, 'tcp', V6_B, srv.v6Tcp!.port, {
        send: send + 111,
        receive,
        count: 2,
        localAddress: V6_A,
      }),
    ]);
    for (const r of results) expect(r).toMatchObject({ failed: 0, connections: 2 });
  };

  it('two pods on one node, a public host and IPv6 pods: labelled, and exactly what conntrack counted', async () => {
    const results = await Promise.all([
      runClient(na, 'tcp', CACHE, srv.cacheTcp!.port, {
        send: 12_000,
        receive: 2_500,
        count: 3,
        localAddress: WEB,
      }),
      runClient(na, 'udp', CACHE, srv.cacheUdp!.port, {
        send: 900,
        receive: 300,
        count: 2,
        localAddress: WEB,
      }),
      runClient(na, 'tcp', PUBLIC, srv.pubTcp!.port, {
        send: 5_000,
        receive: 40_000,
        count: 2,
        localAddress: WEB,
      }),
      runClient(na, 'tcp', V6_B, srv.v6Tcp!.port, {
        send: 7_777,
        receive: 1_234,
        count: 3,
        localAddress: V6_A,
      }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await sleep(600);
    await readWant();
    const webPub = await sentBy(na, WEB, PUBLIC);
    const pubWeb = await sentBy(na, PUBLIC, WEB);
    // Conntrack counted at least the payloads (plus headers): the traffic really passed the nodes.
    expect(want.webCache).toBeGreaterThan(3 * 12_000 + 2 * 900);
    expect(want.cacheWeb).toBeGreaterThan(3 * 2_500 + 2 * 300);
    expect(webPub).toBeGreaterThan(2 * 5_000);
    expect(pubWeb).toBeGreaterThan(2 * 40_000);
    expect(want.v6ab).toBeGreaterThan(3 * 7_777);
    expect(want.v6ba).toBeGreaterThan(3 * 1_234);

    const toPub = `podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_ip="${PUBLIC}"}`;
    const now = async () =>
      [
        await q(`sum(${M.webCache})`),
        await q(`sum(${M.cacheWeb})`),
        await q(`sum(${toPub})`),
        await q(`sum(${M.v6ab})`),
        await q(`sum(${M.v6ba})`),
      ].join(',');
    const expected = [want.webCache, want.cacheWeb, webPub, want.v6ab, want.v6ba].join(',');
    await waitFor('Prometheus to match conntrack', async () =>
      (await now()) === expected ? true : undefined,
    ).catch(async (err: Error) => fail(err, `got ${await now()}, want ${expected}`));

    // One node, both ends local: each pod reports what it sent, and the bytes on the wire count once.
    const pair = '{src_pod=~"web-5f7c9-x1|cache-0",dst_pod=~"web-5f7c9-x1|cache-0"}';
    expect(await q(`sum(podflow_transmit_bytes_total${pair})`)).toBe(want.webCache + want.cacheWeb);
    expect(await q(`sum(podflow_received_bytes_total${pair})`)).toBe(want.webCache + want.cacheWeb);
    expect(await q('sum(podflow_received_bytes_total{src_pod="cache-0",dst_pod="web-5f7c9-x1"})')).toBe(
      want.webCache,
    );
    const local = await prom!.query(`podflow_transmit_bytes_total${pair}`);
    expect(local.map((s) => `${s.metric.src_pod}>${s.metric.dst_pod} ${s.metric.proto}`).sort()).toEqual([
      'cache-0>web-5f7c9-x1 TCP',
      'cache-0>web-5f7c9-x1 UDP',
      'web-5f7c9-x1>cache-0 TCP',
      'web-5f7c9-x1>cache-0 UDP',
    ]);
    for (const s of local) {
      expect(labelsOf(s.metric)).toMatchObject({
        src_namespace: 'shop',
        src_node: 'node-a',
        src_zone: 'zone-a',
        dst_namespace: 'shop',
        dst_node: 'node-a',
        dst_zone: 'zone-a',
        dst_type: 'pod',
        dst_ip: '',
        cross_zone: 'false',
      });
      expect(s.metric.src_workload).toBe(
        s.metric.src_pod === 'cache-0' ? 'StatefulSet/cache' : 'Deployment/web',
      );
    }

    // The public host: its address, no pod, no node, no zone.
    const pubSeries = await prom!.query(
      `podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_type="public"}`,
    );
    expect(pubSeries).toHaveLength(1);
    expect(labelsOf(pubSeries[0]!.metric)).toMatchObject({
      src_workload: 'Deployment/web',
      src_node: 'node-a',
      dst_ip: PUBLIC,
      dst_type: 'public',
      dst_pod: '',
      dst_node: '',
      dst_zone: '',
      cross_zone: 'false',
      proto: 'TCP',
    });
    expect(await q(`sum(podflow_received_bytes_total{src_pod="web-5f7c9-x1",dst_ip="${PUBLIC}"})`)).toBe(
      pubWeb,
    );

    // IPv6 pods across nodes and zones: pods, not "private" ULA addresses.
    const v6 = await prom!.query(`podflow_transmit_bytes_total{src_namespace="edge"}`);
    expect(v6.map((s) => `${s.metric.src_pod}>${s.metric.dst_pod}`).sort()).toEqual([
      'api-6d8b4-a>store-0',
      'store-0>api-6d8b4-a',
    ]);
    for (const s of v6) {
      expect(labelsOf(s.metric)).toMatchObject({
        dst_type: 'pod',
        dst_ip: '',
        cross_zone: 'true',
        proto: 'TCP',
      });
    }
    expect(v6.find((s) => s.metric.src_pod === 'store-0')!.metric).toMatchObject({
      src_workload: 'StatefulSet/store',
      src_node: 'node-b',
      src_zone: 'zone-b',
      dst_workload: 'Deployment/api',
      dst_node: 'node-a',
      dst_zone: 'zone-a',
    });
    expect(await q('count(podflow_transmit_bytes_total{dst_type="private",dst_ip=~"fd00:244:.*"})')).toBe(0);

    // The HTTP records: the same bytes, with the public address and JSON booleans.
    await waitHttpExact('HTTP records to match conntrack');
    const recs = deliveredRecords();
    const pubRecs = recs.filter((r) => r.src_pod === 'web-5f7c9-x1' && r.dst_ip === PUBLIC);
    expect(pubRecs.reduce((a, r) => a + Number(r.tx_bytes), 0)).toBe(webPub);
    expect(pubRecs.reduce((a, r) => a + Number(r.rx_bytes), 0)).toBe(pubWeb);
    for (const r of pubRecs) expect(r).toMatchObject({ dst_type: 'public', dst_pod: '', cross_zone: false });
    const v6Rec = recs.find((r) => r.src_pod === 'api-6d8b4-a')!;
    expect(v6Rec).toMatchObject({ src_ip: V6_A, dst_ip: V6_B, dst_type: 'pod', cross_zone: true });
  }, 60_000);

  // What the first exporter process had counted when it was killed (its Prometheus counters).
  const before = { webCache: 0, v6ab: 0 };

  it('exporter killed (SIGKILL) and restarted: the collectors kept the backlog, totals stay exact', async () => {
    // Everything so far was delivered (previous test). One more round makes sure it was also
    // acknowledged: a batch delivered but not acknowledged when the exporter dies is offered again by
    // the next process as part of a longer range, under another Idempotency-Key.
    await sleep(1_500);
    before.webCache = await q(`sum(${M.webCache})`);
    before.v6ab = await q(`sum(${M.v6ab})`);
    expect(before).toEqual({ webCache: want.webCache, v6ab: want.v6ab });
    await kill(exporter!, 'SIGKILL');
    expect(exporter!.signalCode).toBe('SIGKILL');
    const requestsAtKill = rx.requests.length;

    await podTraffic(9_000, 3_100);
    await sleep(1_500);
    await readWant();
    expect(want.webCache - before.webCache).toBeGreaterThan(2 * 9_000);
    // Nobody was exporting: nothing reached the receiver meanwhile.
    expect(rx.requests.length).toBe(requestsAtKill);

    await startExporter();
    await waitHttpExact('HTTP records after the restart to match conntrack');
    // The new process counts from 0: its counters hold exactly the traffic sent while none ran.
    const newProcess = async () => [await q(`sum(${M.webCache})`), await q(`sum(${M.v6ab})`)].join(',');
    const expected = [want.webCache - before.webCache, want.v6ab - before.v6ab].join(',');
    await waitFor('Prometheus to scrape the new exporter', async () =>
      (await newProcess()) === expected ? true : undefined,
    ).catch(async (err: Error) => fail(err, `got ${await newProcess()}, want ${expected}`));
  }, 40_000);

  it('HTTP sink answering 503 for a few rounds: retried under the same key, nothing lost or doubled', async () => {
    const from = rx.requests.length;
    rx.otherwise({ status: 503 });
    await podTraffic(4_321, 5_555);
    await sleep(600);
    await readWant();
    const hasNewPodBytes = (body: Buffer) => body.includes('"src_pod":"web-5f7c9-x1","src_namespace"');
    // Refused at least three times. (Whether the new pod traffic is among the refused records depends
    // on timing: a refused push is offered again alone, before anything newer, so when a push was
    // already pending as the outage began, the new traffic waits behind it until the receiver is back.)
    await waitFor(
      'refused pushes',
      async () => {
        const refused = rx.requests.slice(from).filter((r) => r.answer === 503);
        return refused.length >= 3 ? refused : undefined;
      },
      15_000,
    ).catch((err: Error) => fail(err, `${rx.requests.length - from} requests since`));
    // Prometheus is a sink of its own: it took the batches while the HTTP sink refused them.
    const promNow = async () => [await q(`sum(${M.webCache})`), await q(`sum(${M.v6ab})`)].join(',');
    const promWant = [want.webCache - before.webCache, want.v6ab - before.v6ab].join(',');
    await waitFor('Prometheus during the outage', async () =>
      (await promNow()) === promWant ? true : undefined,
    ).catch(async (err: Error) => fail(err, `got ${await promNow()}, want ${promWant}`));
    // Nothing of the new traffic was accepted by the receiver yet.
    expect(rx.requests.slice(from).filter((r) => r.answer === 200 && hasNewPodBytes(r.body))).toEqual([]);
    const refusedKeys = new Set(
      rx.requests
        .slice(from)
        .filter((r) => r.answer === 503)
        .map((r) => String(r.headers['idempotency-key'])),
    );

    rx.otherwise({ status: 200 });
    await waitHttpExact('HTTP records after the receiver recovered');
    // A refused batch came again under the same key and was then taken.
    const accepted = rx.requests.slice(from).filter((r) => r.answer === 200);
    expect(accepted.some((r) => refusedKeys.has(String(r.headers['idempotency-key'])))).toBe(true);
    // Counted once everywhere: a few more rounds change nothing.
    await sleep(2_500);
    expect(httpTotals()).toEqual(want);
    expect(await q(`sum(${M.webCache})`)).toBe(want.webCache - before.webCache);
    expect(await q(`sum(${M.v6ab})`)).toBe(want.v6ab - before.v6ab);
  }, 40_000);
});
