// A two-node cluster end to end. Nodes are network namespaces, each running a real `podflow
// collector`; pods are addresses on the nodes' inter-node link (so their traffic passes the node's
// conntrack). A third namespace, the control plane, runs `podflow exporter` (collector discovery and
// enrichment through the test API server, reached over a forwarder), a real Prometheus scraping the
// exporter, and the HTTP sink's forwarder to a real receiver. Pod-to-pod traffic of known sizes
// across zones must show up with pod, workload, node and zone labels, byte for byte what the nodes'
// conntrack counted, in Prometheus and in the HTTP records.
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
const root = requireRoot();

const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 45_000) =>
  waitUntil(what, fn, timeoutMs);

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

const POD_A = '10.244.1.5';
const POD_B = '10.244.2.7';
const COLLECTOR = { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'collector' };

describe.skipIf(!root)('two-node cluster end to end', () => {
  let ctl: Netns;
  let na: Netns;
  let nb: Netns;
  let h: Harness;
  let rx: HttpReceiver;
  let dir: string;
  const relays: Relay[] = [];
  const procs: ChildProcess[] = [];
  const servers: TrafficServer[] = [];
  let prom: Prometheus | undefined;
  let logs = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pf-e2e-cluster-'));
    ctl = await createNetns('ctl');
    na = await createNetns('node-a');
    nb = await createNetns('node-b');
    await connect(
      { ns: ctl, dev: 'pfca', addrs: ['10.250.1.1/24'] },
      { ns: na, dev: 'pfac', addrs: ['10.250.1.2/24'] },
    );
    await connect(
      { ns: ctl, dev: 'pfcb', addrs: ['10.250.2.1/24'] },
      { ns: nb, dev: 'pfbc', addrs: ['10.250.2.2/24'] },
    );
    await connect(
      { ns: na, dev: 'pfab', addrs: ['10.250.3.1/24', `${POD_A}/32`] },
      { ns: nb, dev: 'pfba', addrs: ['10.250.3.2/24', `${POD_B}/32`] },
    );
    await addRoute(na, '10.244.2.0/24', '10.250.3.2');
    await addRoute(nb, '10.244.1.0/24', '10.250.3.1');
    await na.trackConnections();
    await nb.trackConnections();

    h = await startHarness();
    const s = h.server;
    s.create('nodes', node({ name: 'node-a', zone: 'zone-a', internalIPs: ['10.250.1.2'] }));
    s.create('nodes', node({ name: 'node-b', zone: 'zone-b', internalIPs: ['10.250.2.2'] }));
    s.create('replicasets', replicaSet('web-5f7c9', 'shop', { kind: 'Deployment', name: 'web' }));
    s.create(
      'pods',
      pod({
        name: 'web-5f7c9-x1',
        namespace: 'shop',
        node: 'node-a',
        ips: [POD_A],
        owner: { kind: 'ReplicaSet', name: 'web-5f7c9' },
      }),
    );
    s.create(
      'pods',
      pod({
        name: 'db-0',
        namespace: 'shop',
        node: 'node-b',
        ips: [POD_B],
        owner: { kind: 'StatefulSet', name: 'db' },
      }),
    );
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
  }, 120_000);

  afterAll(async () => {
    await prom?.stop().catch(() => undefined);
    for (const p of procs) await kill(p).catch(() => undefined);
    await Promise.all(servers.map((t) => t.stop().catch(() => undefined)));
    await cleanupAll();
    for (const r of relays) await r.close().catch(() => undefined);
    await rx?.close();
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pod-to-pod traffic across zones, labelled and counted exactly once per direction', async () => {
    const env = { HOME: dir, KUBECONFIG: join(dir, 'none') };
    const podflow = (ns: Netns, args: string[], extra: NodeJS.ProcessEnv = {}) => {
      const p = ns.spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'cmd/podflow.ts'), ...args], {
        ...env,
        ...extra,
      });
      p.stderr?.on('data', (d) => {
        logs += `[${ns.name.split('-').pop()}] ${d}`;
      });
      p.on('exit', (code, sig) => {
        logs += `[${ns.name.split('-').pop()}] exited with ${code ?? sig}\n`;
      });
      procs.push(p);
      return p;
    };
    for (const [ns, name] of [
      [na, 'node-a'],
      [nb, 'node-b'],
    ] as const) {
      podflow(ns, ['collector', '--node-name', name, '--listen', '0.0.0.0:9470', '--interval', '500ms']);
    }
    podflow(ctl, [
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
    ]);
    const curl = async (path: string) => {
      const { stdout } = await ctl.exec('curl', [
        '-s',
        '-w',
        '\n%{http_code}',
        `http://127.0.0.1:9471${path}`,
      ]);
      return Number(stdout.slice(stdout.lastIndexOf('\n') + 1));
    };
    await waitFor('exporter ready', async () => ((await curl('/readyz')) === 200 ? true : undefined)).catch(
      (err: Error) => {
        throw new Error(`${err.message}: ${logs.slice(-3000)}`);
      },
    );
    // A collector counts from its first read on: traffic before that is history, not reported.
    for (const ip of ['10.250.1.2', '10.250.2.2']) {
      await waitFor(`collector ${ip} ready`, async () => {
        const { stdout } = await ctl.exec('curl', [
          '-s',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          `http://${ip}:9470/readyz`,
        ]);
        return stdout.trim() === '200' ? true : undefined;
      });
    }
    prom = await startPrometheus({ targets: ['127.0.0.1:9471'], ns: ctl });

    const [tcp, udp] = await Promise.all([startServer(nb, 'tcp', POD_B), startServer(nb, 'udp', POD_B)]);
    servers.push(tcp!, udp!);
    const results = await Promise.all([
      runClient(na, 'tcp', POD_B, tcp!.port, { send: 20_000, receive: 3_000, count: 4, localAddress: POD_A }),
      runClient(na, 'udp', POD_B, udp!.port, { send: 700, receive: 1_500, count: 3, localAddress: POD_A }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    const aSent = await sentBy(na, POD_A, POD_B);
    const bSent = await sentBy(nb, POD_B, POD_A);
    expect(aSent).toBeGreaterThan(4 * 20_000 + 3 * 700);
    expect(bSent).toBeGreaterThan(4 * 3_000 + 3 * 1_500);

    const q = async (promql: string) => (await prom!.scalar(promql)) ?? 0;
    const fromA = 'podflow_transmit_bytes_total{src_pod="web-5f7c9-x1",dst_pod="db-0"}';
    const fromB = 'podflow_transmit_bytes_total{src_pod="db-0",dst_pod="web-5f7c9-x1"}';
    await waitFor('Prometheus to see both directions', async () =>
      (await q(`sum(${fromA})`)) === aSent && (await q(`sum(${fromB})`)) === bSent ? true : undefined,
    ).catch(async (err: Error) => {
      await writeFile(join(tmpdir(), 'pf-e2e-cluster.log'), logs).catch(() => undefined);
      throw new Error(
        `${err.message}: got ${await q(`sum(${fromA})`)}/${await q(`sum(${fromB})`)}, want ${aSent}/${bSent}; ${logs
          .split('\n')
          .filter((l) => !l.includes('pull failed'))
          .join('\n')
          .slice(-4000)}`,
      );
    });
    // What A sent, B received: the two nodes agree, and each byte appears once per direction.
    expect(await q('sum(podflow_received_bytes_total{src_pod="db-0",dst_pod="web-5f7c9-x1"})')).toBe(aSent);
    expect(await q('sum(podflow_received_bytes_total{src_pod="web-5f7c9-x1",dst_pod="db-0"})')).toBe(bSent);

    const series = await prom.query(`${fromA}`);
    const labels = series.map((s) => s.metric);
    expect(labels.map((l) => l.proto).sort()).toEqual(['TCP', 'UDP']);
    for (const l of labels) {
      expect(l).toMatchObject({
        src_namespace: 'shop',
        src_workload: 'Deployment/web',
        src_node: 'node-a',
        src_zone: 'zone-a',
        dst_namespace: 'shop',
        dst_workload: 'StatefulSet/db',
        dst_node: 'node-b',
        dst_zone: 'zone-b',
        dst_type: 'pod',
        cross_zone: 'true',
      });
    }
    expect(await q('sum(podflow_exporter_pulls_total)')).toBeGreaterThan(0);
    expect(await q('count(podflow_exporter_pulls_total)')).toBe(2);

    // The HTTP log sink: the same bytes, as records with the same labels.
    await waitFor('HTTP records', async () => {
      const recs = rx.acceptedRecords().filter((r) => r.src_pod === 'web-5f7c9-x1' && r.dst_pod === 'db-0');
      return recs.reduce((a, r) => a + Number(r.tx_bytes), 0) === aSent ? recs : undefined;
    });
    const rec = rx.acceptedRecords().find((r) => r.src_pod === 'db-0')!;
    expect(rec).toMatchObject({
      src_workload: 'StatefulSet/db',
      dst_workload: 'Deployment/web',
      cross_zone: true,
    });
  }, 180_000);
});
