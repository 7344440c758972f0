// The chart's containers started for real: for each value set, the rendered collector and exporter
// are run as the pod would run them — the real `podflow` executable with the rendered arguments,
// environment (downward API and Secret values filled in, $(VAR) in args expanded), ConfigMap and
// Secret files (the pull token), hostPath mounts (bind mounts), read-only root filesystem, user and capabilities (setpriv) — inside a test network
// namespace standing in for the node. The collector must get
// ready and turn on conntrack accounting through the mounted /proc/sys/net/netfilter; the exporter
// must pass start-up validation and stop only where a cluster is needed (no API server here).
// Then one release end to end: with the test API server standing in for the cluster (refusing
// everything the component's ClusterRole does not grant), the collector lists only its node's pods
// and the exporter finds the collector by the chart's labels, pulls it on the chart's port (on the
// node address the collector binds, with the pull token both read from the chart's Secret) and posts
// the node's flows to the HTTP sink with the token from the chart's Secret.
import { type ChildProcess, execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CT_OUT,
  CT_VALUE_SIZE,
  createMap,
  ctKey,
  ctValue15,
  KEY4_SIZE,
  monoSeconds,
  mountBpffs,
  putEntries,
} from './helpers/bpf.js';
import { containerSandbox, helmRenderBinary, type K8sObject, REPO, renderChart } from './helpers/helm.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { cleanupAll, createNetns, httpStatus, kill, type Netns, requireRoot } from './helpers/netns.js';
import { relayIntoNetns } from './helpers/relay.js';
import { node, pod } from './kube-api-server/objects.js';
import { KubeApiServer, RESOURCES } from './kube-api-server/server.js';

const execFileP = promisify(execFile);
const BIN = join(REPO, 'bin/podflow.js');
const root = requireRoot();
/** What the downward API gives a pod on the node this test stands in for. */
const NODE_REFS = { 'status.hostIP': '127.0.0.1', 'status.podIP': '127.0.0.1' };

/** A subset of the value sets of helm-chart.test.ts that changes what the containers receive. */
const VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  'netfilter, accounting already on': { collector: { source: 'netfilter', conntrackAcct: false } },
  cilium: { collector: { source: 'cilium', cilium: { layout: 'v1.16' } } },
  'http sink with a token': {
    exporter: {
      httpSink: { url: 'https://logs.example.test/ingest', gzip: true, token: { value: 't0ken' } },
    },
  },
  // The exporter loads the mounted destinations file before anything else: a file it could not read
  // or parse would be the line it stops at, not --collectors.
  'cost: a preset, prices and destination ranges': {
    exporter: {
      cloud: 'azure',
      prices: { internet: 0.05, 'nat-gateway': 'preset' },
      destinations: [
        { cidr: '10.20.0.0/16', name: 'billing-vpc', class: 'private' },
        { cidr: '2001:db8:77::/48', name: 'on-prem' },
      ],
    },
  },
  'everything tuned': {
    logLevel: 'debug',
    excludeNamespaces: ['kube-system'],
    hostNetworkPods: true,
    groupPublicIps: true,
    collector: {
      interval: '2s',
      port: 19470,
      backlogMaxFlows: 200000,
      config: { 'shutdown-timeout': '20s' },
      extraArgs: ['--log-level=warn'],
      extraEnv: [{ name: 'PODFLOW_INTERVAL', value: '3s' }],
    },
    exporter: {
      port: 19471,
      metricsPrefix: 'egressd',
      metricsLabels: ['src_namespace', 'dst_type'],
      metricsTtl: 0,
      config: { 'metrics-pod-ips': true },
      extraArgs: ['--shutdown-timeout', '15s'],
    },
  },
};

interface Run {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

describe.skipIf(!root)('chart containers started for real', () => {
  let bin: string;
  let ns: Netns;
  const dirs: string[] = [];

  beforeAll(async () => {
    await execFileP('npm', ['run', 'build', '--silent'], { cwd: REPO });
    bin = await helmRenderBinary();
    ns = await createNetns('helm');
    // The netfilter sysctls exist in a namespace once conntrack is in use there.
    await ns.trackConnections({ acct: false });
  }, 300_000);

  afterAll(async () => {
    await cleanupAll();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /**
   * Starts the container's process in the namespace, in its own mount namespace with its binds, as
   * the container's user with only the capabilities its securityContext adds (bounding set: what
   * `drop: [ALL]` + `add` leaves) and no_new_privs (allowPrivilegeEscalation: false).
   */
  function start(
    objects: K8sObject[],
    workload: K8sObject,
    container: string,
    extraEnv: Record<string, string> = {},
  ): Run {
    const dir = mkdtempSync(join(tmpdir(), 'pf-helm-run-'));
    dirs.push(dir);
    chmodSync(dir, 0o755); // readable by a non-root container user
    // The node is this namespace: its address (the host-network collector's pod IP) is loopback.
    const sb = containerSandbox(objects, workload, container, join(dir, 'root'), NODE_REFS);
    const env = {
      ...sb.env,
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      KUBECONFIG: join(dir, 'none'),
      ...extraEnv,
    };
    const pod = workload.spec.template.spec;
    const c = pod.containers.find((x: { name: string }) => x.name === container);
    const sc = c.securityContext ?? {};
    expect(sc.capabilities?.drop).toEqual(['ALL']);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    // The image's USER is 65532 (Dockerfile); the pod may override it.
    const uid: number = sc.runAsUser ?? pod.securityContext?.runAsUser ?? 65532;
    const gid: number = sc.runAsGroup ?? pod.securityContext?.runAsGroup ?? uid;
    const caps = ((sc.capabilities?.add ?? []) as string[]).map((x) => `,+${x.toLowerCase()}`).join('');
    const privs = ['setpriv', '--reuid', String(uid), '--regid', String(gid), '--clear-groups'];
    privs.push('--bounding-set', `-all${caps}`, '--inh-caps', '-all', '--no-new-privs');
    // readOnlyRootFilesystem: everything read-only but the pod's volumes (emptyDirs as tmpfs).
    // Volumes in path order, as the kubelet mounts them (one may lie inside another).
    const volumes = [
      ...sb.emptyDirs.map((d) => ({ target: d, cmd: `mount -t tmpfs -o size=16m tmpfs '${d}'` })),
      ...sb.binds.map((b) => ({
        target: b.target,
        // A bind takes the read-only flag of the root remounted above: the node's directory is not.
        cmd: `mount --bind '${b.host}' '${b.target}'${b.writable ? ` && mount -o remount,bind,rw '${b.target}'` : ''}`,
      })),
    ].sort((a, b) => a.target.length - b.target.length);
    const mounts = [
      ...(sc.readOnlyRootFilesystem ? ['mount --rbind / /', 'mount -o remount,bind,ro /'] : []),
      ...volumes.map((v) => `mkdir -p '${v.target}' && ${v.cmd}`),
    ];
    const script = [...mounts, 'exec "$@"'].join(' && ');
    const envArgs = ['env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`)];
    // A private mount namespace: the binds vanish with the process.
    const proc = ns.spawn('unshare', [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      script,
      'sh',
      ...privs,
      ...envArgs,
      process.execPath,
      BIN,
      ...sb.args,
    ]);
    let out = '';
    proc.stdout?.on('data', (d) => {
      out += d;
    });
    proc.stderr?.on('data', (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    return { proc, output: () => out, exited };
  }

  const statusOf = (port: number, path: string): Promise<number> =>
    httpStatus(ns, `http://127.0.0.1:${port}${path}`);

  it.each(Object.keys(VARIANTS))(
    '%s: the collector starts with what the chart gives it',
    async (variant) => {
      const { objects } = await renderChart(bin, { values: VARIANTS[variant], namespace: 'monitoring' });
      const ds = objects.find((o) => o.kind === 'DaemonSet')!;
      const c = ds.spec.template.spec.containers[0];
      const port: number = c.ports[0].containerPort;
      const cilium = c.args.includes('--source=cilium');
      const acctMounted = c.volumeMounts.some((m: { name: string }) => m.name === 'netfilter-sysctl');
      await ns.sysctl('net.netfilter.nf_conntrack_acct', 0);
      const run = start(objects, ds, 'collector');
      try {
        if (cilium) {
          // No Cilium here: start-up must get past the options and stop at the missing maps.
          const code = await Promise.race([
            run.exited,
            new Promise<'running'>((r) => setTimeout(() => r('running'), 15_000)),
          ]);
          expect(code, run.output()).toBe(1);
          expect(run.output()).toMatch(/Cilium/);
          expect(run.output()).not.toMatch(/invalid|unknown|does not apply/);
          return;
        }
        const deadline = Date.now() + 20_000;
        while ((await statusOf(port, '/readyz')) !== 200) {
          if (run.proc.exitCode !== null)
            throw new Error(`collector exited ${run.proc.exitCode}: ${run.output()}`);
          if (Date.now() > deadline) throw new Error(`collector not ready: ${run.output()}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        expect(await statusOf(port, '/healthz')).toBe(200);
        // Accounting was turned on through the host directory the chart mounts (or left to the node).
        expect(await ns.readSysctl('net.netfilter.nf_conntrack_acct')).toBe(acctMounted ? '1' : '0');
      } finally {
        await kill(run.proc);
      }
    },
    60_000,
  );

  it.each(Object.keys(VARIANTS))(
    '%s: the exporter passes start-up validation',
    async (variant) => {
      const { objects } = await renderChart(bin, { values: VARIANTS[variant], namespace: 'monitoring' });
      const dep = objects.find((o) => o.kind === 'Deployment')!;
      const run = start(objects, dep, 'exporter');
      try {
        // In a cluster it discovers collectors through the API server; here there is none, and that
        // must be the first and only thing it stops at: one line about --collectors (exit 2, like
        // every start-up refusal), no option refused before it.
        const code = await Promise.race([
          run.exited,
          new Promise<'running'>((r) => setTimeout(() => r('running'), 15_000)),
        ]);
        expect(code, run.output()).toBe(2);
        expect(run.output().trim()).toMatch(/^podflow: --collectors: no collector URLs given/);
        expect(run.output()).not.toMatch(/invalid|unknown|does not apply/);
      } finally {
        await kill(run.proc);
      }
    },
    60_000,
  );

  it('one release: the exporter discovers the collector by the chart labels, each within its RBAC', async () => {
    const TOKEN = 's3cr3t-t0ken';
    const values = {
      collector: { interval: '1s' },
      exporter: {
        exportInterval: '2s',
        httpSink: { url: 'http://127.0.0.1:8080/ingest', token: { value: TOKEN } },
      },
    };
    const { objects } = await renderChart(bin, { name: 'pf', namespace: 'monitoring', values });
    const ds = objects.find((o) => o.kind === 'DaemonSet')!;
    const dep = objects.find((o) => o.kind === 'Deployment')!;
    const dir = mkdtempSync(join(tmpdir(), 'pf-helm-api-'));
    dirs.push(dir);
    // Readable by the exporter's non-root user, as its service account token is in a pod.
    chmodSync(dir, 0o755);

    /**
     * One API server per component, refusing every read its ClusterRole does not grant (the test
     * server has no per-user RBAC), holding the same cluster, reached from the node namespace on
     * 127.0.0.1:`port`. Returns the server and a kubeconfig for it.
     */
    const apiFor = async (component: string, port: number) => {
      const role = objects.find(
        (o) => o.kind === 'ClusterRole' && o.metadata.labels['app.kubernetes.io/component'] === component,
      )!;
      const granted = new Set<string>();
      for (const rule of role.rules) {
        for (const g of rule.apiGroups) {
          for (const r of rule.resources) for (const v of rule.verbs) granted.add(`${g}/${r}/${v}`);
        }
      }
      const api = new KubeApiServer();
      for (const info of Object.values(RESOURCES)) {
        const denied = ['get', 'list', 'watch'].filter(
          (v) => !granted.has(`${info.group}/${info.plural}/${v}`),
        );
        if (denied.length > 0) api.forbid(info.plural, denied);
      }
      // The collector pod as the DaemonSet creates it: its template labels, on node-a. In the host
      // network its IP is the node's; here the node is this namespace, reached on its loopback.
      api.create('nodes', node({ name: 'node-a', zone: 'eu-1a', internalIPs: ['127.0.0.1'] }));
      api.create(
        'pods',
        pod({
          name: 'pf-podflow-collector-7xk2p',
          namespace: 'monitoring',
          node: 'node-a',
          ips: ['127.0.0.1'],
          hostNetwork: true,
          labels: ds.spec.template.metadata.labels,
        }),
      );
      // A workload pod on node-a: connections to its address are this node's traffic.
      api.create(
        'pods',
        pod({
          name: 'web-0',
          namespace: 'shop',
          node: 'node-a',
          ips: ['127.0.0.5'],
          owner: { kind: 'StatefulSet', name: 'web' },
        }),
      );
      // A pod of the same release that is not a collector, and a collector of another release (on
      // loopback addresses: were they wrongly selected, pulls would fail here and nowhere else).
      api.create(
        'pods',
        pod({
          name: 'pf-podflow-exporter-5d9c-abcde',
          namespace: 'monitoring',
          node: 'node-a',
          ips: ['127.0.0.2'],
          labels: dep.spec.template.metadata.labels,
        }),
      );
      api.create(
        'pods',
        pod({
          name: 'other-podflow-collector-q1w2e',
          namespace: 'monitoring',
          node: 'node-b',
          ips: ['127.0.0.3'],
          labels: { ...ds.spec.template.metadata.labels, 'app.kubernetes.io/instance': 'other' },
        }),
      );
      await api.listen();
      const relay = await relayIntoNetns(ns, port, Number(new URL(api.url).port), dir);
      const kubeconfig = join(dir, `kubeconfig-${component}`);
      const text = api.kubeconfigYaml().replace(api.url, `http://127.0.0.1:${port}`);
      writeFileSync(kubeconfig, text, { mode: 0o644 });
      return { api, relay, kubeconfig };
    };
    const forCollector = await apiFor('collector', 6443);
    const forExporter = await apiFor('exporter', 6444);
    // The HTTP sink's receiver, reached from the node on the URL the values give.
    const receiver = await HttpReceiver.start();
    const sinkRelay = await relayIntoNetns(ns, 8080, Number(new URL(receiver.url).port), dir);

    const collectorPort: number = ds.spec.template.spec.containers[0].ports[0].containerPort;
    const exporterPort: number = dep.spec.template.spec.containers[0].ports[0].containerPort;
    // In the cluster both use their service account (in-cluster config); here a kubeconfig each.
    const collector = start(objects, ds, 'collector', { KUBECONFIG: forCollector.kubeconfig });
    const exporter = start(objects, dep, 'exporter', { KUBECONFIG: forExporter.kubeconfig });
    try {
      const metrics = async () =>
        (
          await ns
            .exec('curl', ['-s', `http://127.0.0.1:${exporterPort}/metrics`])
            .catch(() => ({ stdout: '' }))
        ).stdout;
      const metric = async (name: string): Promise<number | undefined> => {
        const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(await metrics());
        return m ? Number(m[1]) : undefined;
      };
      const deadline = Date.now() + 45_000;
      while (!((await metric('podflow_exporter_pulls_total')) ?? 0)) {
        for (const r of [collector, exporter]) {
          if (r.proc.exitCode !== null) throw new Error(`exited ${r.proc.exitCode}: ${r.output()}`);
        }
        if (Date.now() > deadline) throw new Error(`no pull: ${exporter.output()}\n${collector.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      expect(await metric('podflow_exporter_collectors')).toBe(1);
      expect(await metrics()).toContain(
        `podflow_exporter_pulls_total{collector="http://127.0.0.1:${collectorPort}"}`,
      );
      expect(await statusOf(exporterPort, '/readyz')).toBe(200);
      expect(await statusOf(collectorPort, '/readyz')).toBe(200);
      // Traffic of web-0 reaches the HTTP sink, with the token from the chart's Secret, through env
      // SINK_TOKEN and the ${SINK_TOKEN} reference in the ConfigMap.
      const until = Date.now() + 45_000;
      while (!receiver.requests.some((r) => r.body.toString().includes('"src_pod":"web-0"'))) {
        await ns
          .exec('curl', ['-s', '-o', '/dev/null', `http://127.0.0.5:${exporterPort}/healthz`])
          .catch(() => undefined);
        if (Date.now() > until)
          throw new Error(`no record of web-0: ${exporter.output()}\n${collector.output()}`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      for (const r of receiver.requests) expect(r.headers.authorization).toBe(`Bearer ${TOKEN}`);
      const exporterConfig = objects.find((o) => o.kind === 'ConfigMap' && 'exporter.yaml' in o.data);
      expect(exporterConfig!.data['exporter.yaml']).not.toContain(TOKEN);
      // Everything each asked its API server for, its ClusterRole allows.
      for (const { api } of [forCollector, forExporter]) {
        expect(api.requests.filter((r) => r.status === 403).map((r) => `${r.path}?${r.query}`)).toEqual([]);
        expect(api.requests.length).toBeGreaterThan(0);
      }
      // RBAC cannot scope the collector to its node; the program does: only its node's pods.
      for (const r of forCollector.api.requests) {
        expect(r.path).toMatch(/\/pods$/);
        expect(r.query.get('fieldSelector')).toBe('spec.nodeName=node-a');
      }
    } finally {
      await kill(exporter.proc);
      await kill(collector.proc);
      await sinkRelay.close();
      await receiver.close();
      for (const { api, relay } of [forCollector, forExporter]) {
        await relay.close();
        await api.stop();
      }
    }
  }, 120_000);

  it('cilium: the collector reads pinned maps with only the BPF capability (and NET_RAW for DNS names)', async () => {
    const bpf = await mountBpffs();
    try {
      const maps = join(bpf.dir, 'tc/globals');
      mkdirSync(maps, { recursive: true });
      const lifetime = monoSeconds() + 3600;
      const entries = [1, 2, 3].map((i) =>
        Buffer.concat([
          ctKey({ src: '10.9.0.1', sport: 40000 + i, dst: '10.9.0.2', dport: 80, proto: 6, flags: CT_OUT }),
          ctValue15({ rxPackets: 2, rxBytes: 300 * i, txPackets: 3, txBytes: 100 * i, lifetime }),
        ]),
      );
      for (const name of ['cilium_ct4_global', 'cilium_ct_any4_global']) {
        await createMap(join(maps, name), { keySize: KEY4_SIZE, valueSize: CT_VALUE_SIZE, maxEntries: 1024 });
      }
      await putEntries(join(maps, 'cilium_ct4_global'), KEY4_SIZE, CT_VALUE_SIZE, Buffer.concat(entries));
      const values = {
        collector: {
          source: 'cilium',
          interval: '1s',
          cilium: { bpfHostPath: bpf.dir, mapsPath: maps, layout: 'v1.15', clock: 'ktime' },
        },
      };
      const { objects } = await renderChart(bin, { values, namespace: 'monitoring' });
      const ds = objects.find((o) => o.kind === 'DaemonSet')!;
      // NET_RAW: the DNS answers that name peers (collector.dnsNames, on by default).
      expect(ds.spec.template.spec.containers[0].securityContext.capabilities.add).toEqual([
        'BPF',
        'NET_RAW',
      ]);
      const run = start(objects, ds, 'collector');
      try {
        const deadline = Date.now() + 30_000;
        for (;;) {
          if (run.proc.exitCode !== null)
            throw new Error(`collector exited ${run.proc.exitCode}: ${run.output()}`);
          const { stdout } = await ns
            .exec('curl', ['-s', 'http://127.0.0.1:9470/metrics'])
            .catch(() => ({ stdout: '' }));
          const m = /^podflow_collector_conntrack_entries (\S+)$/m.exec(stdout);
          if (m && Number(m[1]) === entries.length) break;
          if (Date.now() > deadline) throw new Error(`entries not read: ${m?.[1]}\n${run.output()}`);
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
        expect(await statusOf(9470, '/readyz')).toBe(200);
      } finally {
        await kill(run.proc);
      }
    } finally {
      await bpf.cleanup();
    }
  }, 60_000);
});
