// The Helm chart, rendered as `helm template --strict` would with the defaults and with every
// optional feature switched on: values checked against values.schema.json, every object against the
// Kubernetes API schemas, every container's arguments, environment and config file through
// podflow's own loadConfig, and the wiring between the pieces (labels, ports, mounts, RBAC).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { FLOW_LABELS, OPTIONS, type OptionName } from '../shared/config.js';
import {
  CHART,
  checkValues,
  containerInputs,
  helmRenderBinary,
  type K8sObject,
  loadContainerConfig,
  REPO,
  type Rendered,
  renderChart,
  renderNotes,
  selectorMatches,
  validateObject,
} from './helpers/helm.js';

const execFileP = promisify(execFile);
const NS = 'monitoring';

/** Value sets: the defaults, then each optional feature on (several per set where they combine). */
const VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  cilium: { collector: { source: 'cilium', cilium: { layout: 'v1.16', clock: 'jiffies' } } },
  'cilium on an old kernel': { collector: { source: 'cilium', cilium: { capabilities: ['SYS_ADMIN'] } } },
  'netfilter, accounting already on': { collector: { source: 'netfilter', conntrackAcct: false } },
  'prometheus operator': {
    metrics: {
      annotations: false,
      serviceMonitor: { enabled: true, labels: { release: 'kps' } },
      podMonitor: { enabled: true, labels: { release: 'kps' } },
      prometheusRule: { enabled: true, alertLabels: { team: 'net' }, readDurationSeconds: 1.5 },
    },
  },
  'network policy, disruption budget, two replicas': {
    networkPolicy: {
      enabled: true,
      metricsFrom: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'prometheus' } } }],
    },
    exporter: { replicas: 2, podDisruptionBudget: { enabled: true, minAvailable: 1 } },
  },
  'http sink with a chart-made token Secret': {
    exporter: {
      httpSink: {
        url: 'https://logs.example.test/ingest',
        gzip: true,
        headers: { 'X-Tenant': 'blue' },
        token: { value: 's3cr3t' },
      },
    },
  },
  'http sink with an existing Secret': {
    exporter: {
      httpSink: {
        url: 'http://receiver.logging.svc:8080/flows',
        token: { existingSecret: 'sink-credentials', key: 'api-key', header: 'X-Api-Key', scheme: '' },
      },
      config: { 'http-sink-timeout': '30s', 'http-sink-max-retries': 8 },
    },
  },
  'grafana dashboard': {
    grafanaDashboard: { enabled: true, namespace: 'grafana', annotations: { grafana_folder: 'Network' } },
  },
  'everything tuned': {
    nameOverride: 'flows',
    image: {
      registry: 'registry.example.test',
      repository: 'net/podflow',
      digest: `sha256:${'ab'.repeat(32)}`,
      pullSecrets: ['regcred'],
    },
    logLevel: 'debug',
    excludeNamespaces: ['kube-system', 'podflow'],
    hostNetworkPods: true,
    groupPublicIps: true,
    podRetention: '5m',
    collector: {
      interval: '2s',
      port: 19470,
      backlogMaxFlows: 200000,
      config: { 'shutdown-timeout': '20s', 'pod-retention': '3m' },
      extraArgs: ['--log-level=warn'],
      extraEnv: [
        { name: 'PODFLOW_INTERVAL', value: '3s' },
        { name: 'GOMAXPROCS', value: '1' },
      ],
      nodeSelector: { 'node-role.kubernetes.io/worker': '' },
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [{ key: 'kubernetes.io/arch', operator: 'In', values: ['amd64', 'arm64'] }],
              },
            ],
          },
        },
      },
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'net', effect: 'NoSchedule' }],
      priorityClassName: 'high',
      maxUnavailable: 2,
      podLabels: { team: 'net' },
      podAnnotations: { 'example.test/owner': 'net' },
      serviceAccount: { annotations: { 'example.test/role': 'collector' } },
    },
    exporter: {
      port: 19471,
      exportInterval: '30s',
      metricsPrefix: 'egressd',
      metricsLabels: ['src_namespace', 'src_workload', 'dst_type', 'cross_zone'],
      metricsTtl: 0,
      pullConcurrency: 64,
      pullTimeout: '20s',
      config: { 'metrics-pod-ips': true, 'pull-max-bytes': 1048576 },
      extraArgs: ['--shutdown-timeout', '15s'],
      priorityClassName: 'high',
      service: { type: 'NodePort', annotations: { 'example.test/lb': 'no' } },
    },
  },
  'external RBAC and service accounts': {
    rbac: { create: false },
    collector: { serviceAccount: { name: 'pf-col' } },
    exporter: { serviceAccount: { name: 'pf-exp' } },
  },
};

let bin: string;
const rendered = new Map<string, Rendered>();

beforeAll(async () => {
  bin = await helmRenderBinary();
  for (const [name, values] of Object.entries(VARIANTS)) {
    rendered.set(name, await renderChart(bin, { values, name: 'pf', namespace: NS }));
  }
}, 300_000);

const byKind = (objs: K8sObject[], kind: string) => objs.filter((o) => o.kind === kind);
const one = (objs: K8sObject[], kind: string, component?: string) => {
  const found = byKind(objs, kind).filter(
    (o) => component === undefined || o.metadata.labels?.['app.kubernetes.io/component'] === component,
  );
  expect(found, `${kind} ${component ?? ''}`).toHaveLength(1);
  return found[0];
};

describe.each(Object.keys(VARIANTS))('chart rendered with %s', (variant) => {
  const values = VARIANTS[variant];
  const objs = () => rendered.get(variant)!.objects;

  it('passes values.schema.json', () => {
    expect(checkValues(values)).toEqual([]);
  });

  it('renders only objects the Kubernetes API accepts', async () => {
    const rbac = (values.rbac as { create?: boolean } | undefined)?.create !== false;
    expect(objs().length).toBeGreaterThanOrEqual(rbac ? 10 : 6);
    const errors: string[] = [];
    for (const o of objs()) errors.push(...(await validateObject(o)));
    expect(errors).toEqual([]);
    const names = objs().map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
    expect(new Set(names).size).toBe(names.length);
  });

  it('gives each podflow container options podflow accepts', () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const dep = one(objs(), 'Deployment', 'exporter');
    const col = containerInputs(objs(), ds, 'collector');
    const exp = containerInputs(objs(), dep, 'exporter');
    expect(col.command).toBe('collector');
    expect(exp.command).toBe('exporter');
    const colCfg = loadContainerConfig(col);
    const expCfg = loadContainerConfig(exp);
    expect(colCfg.nodeName).toBe('node-a');
    expect(expCfg.namespace).toBe(NS);
    // The collector's shutdown drain fits in the pod's grace period and, unless a value set overrides
    // it, outlasts an export round (the exporter's last pull must come before the collector exits).
    const grace = ds.spec.template.spec.terminationGracePeriodSeconds * 1000;
    expect(colCfg.shutdownTimeout).toBeLessThanOrEqual(grace - 5000);
    if (variant === 'defaults') {
      expect(colCfg.shutdownTimeout).toBe(grace - 5000);
      expect(colCfg.shutdownTimeout).toBeGreaterThanOrEqual(expCfg.exportInterval + expCfg.pullTimeout);
    }
    // ${NAME} in header values is expanded from the container's environment: it must be there.
    for (const v of Object.values(expCfg.httpSinkHeaders)) {
      for (const [, name] of v.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g))
        expect(exp.env).toHaveProperty(name);
    }
  });

  it('wires the collector as a least-privilege host-network DaemonSet', () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const pod = ds.spec.template.spec;
    const c = pod.containers[0];
    const cfg = loadContainerConfig(containerInputs(objs(), ds, 'collector'));
    const cilium = cfg.source === 'cilium';
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(c.env.find((e: { name: string }) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe(
      'spec.nodeName',
    );
    expect(ds.spec.updateStrategy.type).toBe('RollingUpdate');
    expect(ds.spec.updateStrategy.rollingUpdate.maxUnavailable).toBeDefined();
    // Probes hit the port podflow listens on.
    const port = c.ports.find((p: { name: string }) => p.name === 'http');
    expect(port.containerPort).toBe(cfg.listen.port);
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
    // Capabilities: NET_ADMIN for ctnetlink, BPF-type ones only to read Cilium's maps.
    const sc = c.securityContext;
    expect(sc.privileged).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.capabilities.drop).toEqual(['ALL']);
    const caps: string[] = sc.capabilities.add;
    if (cilium) {
      expect(caps).not.toContain('NET_ADMIN');
      expect(caps.every((x) => ['BPF', 'PERFMON', 'SYS_ADMIN', 'SYS_RESOURCE'].includes(x))).toBe(true);
      expect(caps.length).toBeGreaterThan(0);
    } else expect(caps).toEqual(['NET_ADMIN']);
    const mounts: { name: string; mountPath: string; readOnly?: boolean }[] = c.volumeMounts;
    const hostPaths = pod.volumes.filter((v: { hostPath?: unknown }) => v.hostPath);
    const bpf = mounts.find((m) => m.name === 'bpf');
    if (cilium) {
      expect(bpf?.readOnly).toBe(true);
      expect(cfg.ciliumBpfPath.startsWith(`${bpf!.mountPath}/`)).toBe(true);
    } else expect(bpf).toBeUndefined();
    // nf_conntrack_acct is written at <proc-path>/sys/net/netfilter/: that directory is the host's.
    const nf = mounts.find((m) => m.name === 'netfilter-sysctl');
    if (cfg.conntrackAcct) {
      expect(nf?.mountPath).toBe(`${cfg.procPath}/sys/net/netfilter`);
      expect(nf?.readOnly).not.toBe(true);
      expect(pod.volumes.find((v: { name: string }) => v.name === 'netfilter-sysctl').hostPath.path).toBe(
        '/proc/sys/net/netfilter',
      );
    } else expect(nf).toBeUndefined();
    expect(hostPaths.map((v: { name: string }) => v.name).sort()).toEqual(
      [...(cfg.conntrackAcct ? ['netfilter-sysctl'] : []), ...(cilium ? ['bpf'] : [])].sort(),
    );
    // Every node, tainted or not, unless the user narrowed it.
    if (!(values.collector as { tolerations?: unknown } | undefined)?.tolerations) {
      expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    }
  });

  it('lets the exporter find exactly the collector pods and reach their port', () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const dep = one(objs(), 'Deployment', 'exporter');
    const col = loadContainerConfig(containerInputs(objs(), ds, 'collector'));
    const exp = loadContainerConfig(containerInputs(objs(), dep, 'exporter'));
    const podLabels = ds.spec.template.metadata.labels;
    expect(selectorMatches(exp.collectorSelector, podLabels)).toBe(true);
    expect(selectorMatches(exp.collectorSelector, dep.spec.template.metadata.labels)).toBe(false);
    expect(exp.collectorSelector).toContain('app.kubernetes.io/component=collector');
    expect(exp.collectorPort).toBe(col.listen.port);
    expect(exp.namespace).toBe(ds.metadata.namespace);
    // The DaemonSet's own selector picks its pods.
    for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) expect(podLabels[k]).toBe(v);
  });

  it('exposes the exporter through a Service port named metrics', () => {
    const dep = one(objs(), 'Deployment', 'exporter');
    const svc = one(objs(), 'Service', 'exporter');
    const exp = loadContainerConfig(containerInputs(objs(), dep, 'exporter'));
    const c = dep.spec.template.spec.containers[0];
    expect(svc.spec.ports).toEqual([
      { name: 'metrics', port: exp.listen.port, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: exp.listen.port, protocol: 'TCP' }]);
    expect(c.env.find((e: { name: string }) => e.name === 'POD_NAMESPACE').valueFrom.fieldRef.fieldPath).toBe(
      'metadata.namespace',
    );
    for (const [k, v] of Object.entries(svc.spec.selector))
      expect(dep.spec.template.metadata.labels[k]).toBe(v);
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(dep.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
    expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
    expect(c.securityContext.capabilities.add).toBeUndefined();
  });

  it('grants read-only RBAC, nothing more', () => {
    const roles = byKind(objs(), 'ClusterRole');
    const bindings = byKind(objs(), 'ClusterRoleBinding');
    expect(byKind(objs(), 'Role')).toEqual([]);
    if ((values.rbac as { create?: boolean } | undefined)?.create === false) {
      expect(roles).toEqual([]);
      expect(bindings).toEqual([]);
      return;
    }
    const rules = (component: string) => one(objs(), 'ClusterRole', component).rules;
    expect(rules('collector')).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
    ]);
    expect(rules('exporter')).toEqual([
      { apiGroups: [''], resources: ['pods', 'nodes', 'services'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['apps'], resources: ['replicasets'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['batch'], resources: ['jobs'], verbs: ['get', 'list', 'watch'] },
    ]);
    for (const component of ['collector', 'exporter']) {
      const b = one(objs(), 'ClusterRoleBinding', component);
      const workload = one(objs(), component === 'collector' ? 'DaemonSet' : 'Deployment', component);
      expect(b.roleRef.name).toBe(one(objs(), 'ClusterRole', component).metadata.name);
      expect(b.subjects).toEqual([
        { kind: 'ServiceAccount', name: workload.spec.template.spec.serviceAccountName, namespace: NS },
      ]);
      const sa = byKind(objs(), 'ServiceAccount').find((s) => s.metadata.name === b.subjects[0].name);
      expect(sa).toBeDefined();
    }
  });

  it('points monitoring objects at ports and pods that exist', async () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const dep = one(objs(), 'Deployment', 'exporter');
    const svc = one(objs(), 'Service', 'exporter');
    const metrics = (values.metrics ?? {}) as Record<string, { enabled?: boolean }>;
    const sm = byKind(objs(), 'ServiceMonitor');
    const pm = byKind(objs(), 'PodMonitor');
    const pr = byKind(objs(), 'PrometheusRule');
    expect(sm).toHaveLength(metrics.serviceMonitor?.enabled ? 1 : 0);
    expect(pm).toHaveLength(metrics.podMonitor?.enabled ? 1 : 0);
    expect(pr).toHaveLength(metrics.prometheusRule?.enabled ? 1 : 0);
    for (const m of sm) {
      expect(svc.spec.ports.map((p: { name: string }) => p.name)).toContain(m.spec.endpoints[0].port);
      for (const [k, v] of Object.entries(m.spec.selector.matchLabels))
        expect(svc.metadata.labels[k]).toBe(v);
    }
    for (const m of pm) {
      expect(ds.spec.template.spec.containers[0].ports.map((p: { name: string }) => p.name)).toContain(
        m.spec.podMetricsEndpoints[0].port,
      );
      for (const [k, v] of Object.entries(m.spec.selector.matchLabels))
        expect(ds.spec.template.metadata.labels[k]).toBe(v);
    }
    for (const r of pr) await promtoolCheckRules(r.spec);
    // Classic annotations: on the pods (not the Service, which would scrape the exporter twice).
    const annotated = (metrics as { annotations?: boolean }).annotations !== false;
    for (const [w, port] of [
      [ds, ds.spec.template.spec.containers[0].ports[0].containerPort],
      [dep, dep.spec.template.spec.containers[0].ports[0].containerPort],
    ] as const) {
      const a = w.spec.template.metadata.annotations;
      if (annotated)
        expect([a['prometheus.io/scrape'], a['prometheus.io/port']]).toEqual(['true', String(port)]);
      else expect(a['prometheus.io/scrape']).toBeUndefined();
    }
    expect(svc.metadata.annotations?.['prometheus.io/scrape']).toBeUndefined();
  });

  it('scopes network policies and the disruption budget to the right pods', () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const dep = one(objs(), 'Deployment', 'exporter');
    const policies = byKind(objs(), 'NetworkPolicy');
    const pdbs = byKind(objs(), 'PodDisruptionBudget');
    expect(policies).toHaveLength(
      (values.networkPolicy as { enabled?: boolean } | undefined)?.enabled ? 2 : 0,
    );
    expect(pdbs).toHaveLength(
      (values.exporter as { podDisruptionBudget?: { enabled?: boolean } } | undefined)?.podDisruptionBudget
        ?.enabled
        ? 1
        : 0,
    );
    const matches = (sel: Record<string, string>, labels: Record<string, string>) =>
      Object.entries(sel).every(([k, v]) => labels[k] === v);
    for (const np of policies) {
      const component = np.metadata.labels['app.kubernetes.io/component'];
      const target = component === 'collector' ? ds : dep;
      expect(matches(np.spec.podSelector.matchLabels, target.spec.template.metadata.labels)).toBe(true);
      const port = target.spec.template.spec.containers[0].ports[0].containerPort;
      expect(np.spec.ingress[0].ports).toEqual([{ port, protocol: 'TCP' }]);
      if (component === 'collector') {
        const from = np.spec.ingress[0].from[0].podSelector.matchLabels;
        expect(matches(from, dep.spec.template.metadata.labels)).toBe(true);
        expect(matches(from, ds.spec.template.metadata.labels)).toBe(false);
      }
    }
    for (const pdb of pdbs)
      expect(matches(pdb.spec.selector.matchLabels, dep.spec.template.metadata.labels)).toBe(true);
  });

  it('prints NOTES.txt telling how to reach the metrics', async () => {
    const notes = await renderNotes(bin, { values, name: 'pf', namespace: NS });
    const svc = one(objs(), 'Service', 'exporter');
    const port = svc.spec.ports[0].port;
    expect(notes).toContain(`kubectl -n ${NS} port-forward svc/${svc.metadata.name} ${port}`);
    expect(notes).toContain(`http://localhost:${port}/metrics`);
    expect(notes).toContain(`http://${svc.metadata.name}.${NS}.svc:${port}/metrics`);
    expect(notes).not.toMatch(/<no value>|\{\{/);
  });

  it('ships the Grafana dashboard for the sidecar when asked', () => {
    const dash = byKind(objs(), 'ConfigMap').filter((c) => c.metadata.name.endsWith('-dashboard'));
    const g = values.grafanaDashboard as { enabled?: boolean; namespace?: string } | undefined;
    expect(dash).toHaveLength(g?.enabled ? 1 : 0);
    for (const cm of dash) {
      expect(cm.metadata.labels.grafana_dashboard).toBe('1');
      expect(cm.metadata.namespace).toBe(g?.namespace ?? NS);
      expect(JSON.parse(cm.data['podflow.json'])).toEqual(
        JSON.parse(readFileSync(join(REPO, 'deploy/grafana/podflow.json'), 'utf8')),
      );
    }
  });
});

describe('chart: values', () => {
  it('documents every value in values.yaml with a comment', () => {
    const lines = readFileSync(join(CHART, 'values.yaml'), 'utf8').split('\n');
    const undocumented: string[] = [];
    // Keys of a commented free-form map (resources, labels) are covered by the map's comment.
    const parents: { indent: number; documented: boolean; freeForm: boolean }[] = [];
    lines.forEach((line, i) => {
      const m = /^(\s*)([A-Za-z0-9_]+):(.*)$/.exec(line);
      if (!m) return;
      const indent = m[1].length;
      while (parents.length > 0 && parents[parents.length - 1].indent >= indent) parents.pop();
      const documented = lines[i - 1]?.trim().startsWith('#') ?? false;
      const next = lines.slice(i + 1).find((l) => l.trim() !== '' && !l.trim().startsWith('#')) ?? '';
      const isParent =
        m[3].trim() === '' && /^\s*/.exec(next)![0].length > indent && !next.trim().startsWith('-');
      const parent = parents[parents.length - 1];
      if (isParent) {
        // A commented parent is a value of its own (e.g. resources); an uncommented one groups values.
        parents.push({ indent, documented, freeForm: documented || (parent?.freeForm ?? false) });
        return;
      }
      if (!documented && !parent?.freeForm) undocumented.push(`line ${i + 1}: ${m[2]}`);
    });
    expect(undocumented).toEqual([]);
  });

  it('lets *.config hold only podflow options of that role which the chart does not set itself', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
    const managed: Record<string, string[]> = {
      collector: ['listen', 'source', 'node-name', 'proc-path', 'conntrack-acct'],
      exporter: ['listen', 'node-name', 'namespace', 'collector-selector', 'collector-port'],
    };
    for (const role of ['collector', 'exporter'] as const) {
      const allowed: string[] = schema.properties[role].properties.config.propertyNames.enum;
      expect(allowed.length).toBeGreaterThan(5);
      for (const key of allowed) {
        expect(key in OPTIONS, key).toBe(true);
        expect((OPTIONS[key as OptionName].commands as readonly string[]).includes(role), key).toBe(true);
        expect(managed[role]).not.toContain(key);
      }
    }
    const flags = (schema.properties.exporter.properties.metricsLabels.items.enum as string[]).sort();
    expect(flags).toEqual([...FLOW_LABELS].sort());
  });

  // Helm checks values.schema.json before rendering; these are the messages a user would see.
  it.each([
    [{ collector: { source: 'ebpf' } }, '- collector.source: must be one of "auto", "netfilter", "cilium"'],
    [{ collector: { interval: '5 seconds' } }, '- collector.interval: must match pattern'],
    [{ collector: { port: 70000 } }, '- collector.port: must be <= 65535'],
    [{ exporter: { port: 'metrics' } }, '- exporter.port: must be integer'],
    [
      { collector: { config: { listen: ':1' } } },
      '- collector.config: "listen" is not an option the chart lets you set here',
    ],
    [{ exporter: { config: { 'http-sink-urls': 'x' } } }, '"http-sink-urls" is not an option'],
    [{ exporter: { metricsLabels: ['src_ip'] } }, '- exporter.metricsLabels.0: must be one of'],
    [{ exporter: { httpSink: { url: 'ftp://x' } } }, '- exporter.httpSink.url: must match pattern'],
    [{ colector: {} }, '- (root): additional property "colector" not allowed'],
    [{ exporter: { replica: 2 } }, '- exporter: additional property "replica" not allowed'],
    [
      { collector: { cilium: { capabilities: ['NET_RAW'] } } },
      '- collector.cilium.capabilities.0: must be one of',
    ],
  ])('refuses %j', (values, message) => {
    const errors = checkValues(values as Record<string, unknown>);
    expect(errors.join('\n')).toContain(message);
  });

  it('has an API check that catches wrong types and unknown fields', async () => {
    const { objects } = await renderChart(bin);
    const ds = structuredClone(objects.find((o) => o.kind === 'DaemonSet')!);
    ds.spec.template.spec.containers[0].ports[0].containerPort = '9470';
    ds.spec.template.spec.containers[0].securityContext.capabilites = { add: ['NET_ADMIN'] };
    const errors = (await validateObject(ds)).join('\n');
    expect(errors).toContain('containerPort must be integer');
    expect(errors).toContain('securityContext.capabilites: unknown field');
  });

  it('refuses a sink token without a sink URL, naming the values', async () => {
    const values = { exporter: { httpSink: { token: { value: 'x' } } } };
    expect(checkValues(values)).toEqual([]);
    await expect(renderChart(bin, { values })).rejects.toThrow(
      /exporter\.httpSink\.token is set but exporter\.httpSink\.url is empty/,
    );
  });

  it('fails at podflow start-up when extraEnv names an option that does not exist', async () => {
    const values = { collector: { extraEnv: [{ name: 'PODFLOW_INTERVALL', value: '3s' }] } };
    const { objects } = await renderChart(bin, { values });
    const ds = objects.find((o) => o.kind === 'DaemonSet')!;
    expect(() => loadContainerConfig(containerInputs(objects, ds, 'collector'))).toThrow(
      /unknown environment variable PODFLOW_INTERVALL/,
    );
  });
});

/** `promtool check rules` on the rule groups: PromQL parses, durations and templates are valid. */
async function promtoolCheckRules(spec: unknown): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pf-rules-'));
  try {
    const file = join(dir, 'rules.yaml');
    writeFileSync(file, stringify(spec));
    const { stdout } = await execFileP('promtool', ['check', 'rules', file]).catch((err) => {
      throw new Error(`promtool check rules: ${err.stdout}${err.stderr}`);
    });
    const groups = (parseYaml(readFileSync(file, 'utf8')) as { groups: { rules: unknown[] }[] }).groups;
    expect(stdout).toContain(`SUCCESS: ${groups[0].rules.length} rules found`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('chart: alerts', () => {
  // `promtool test rules` on the rendered PrometheusRule: each alert fires on the series podflow
  // exports (with the namespace/pod target labels the Prometheus Operator adds) and only then.
  // Annotations are left out of the comparison (their templates are checked by promtool check).
  it('fire on the conditions they describe', async () => {
    const { objects } = await renderChart(bin, {
      values: {
        metrics: { prometheusRule: { enabled: true, alertLabels: { team: 'net' }, readDurationSeconds: 2 } },
      },
      name: 'pf',
      namespace: NS,
    });
    const rule = objects.find((o) => o.kind === 'PrometheusRule')!;
    const groups = structuredClone(rule.spec.groups) as {
      rules: { alert: string; annotations?: unknown }[];
    }[];
    for (const g of groups) for (const r of g.rules) delete r.annotations;
    const ns = `namespace="${NS}"`;
    const collectorPod = 'pf-podflow-collector-x7k2p';
    const series = [
      // A collector down for 30 minutes, the exporter up.
      [`up{${ns}, pod="${collectorPod}"}`, '0x40'],
      [`up{${ns}, pod="pf-podflow-exporter-5d9c-abcde"}`, '1x40'],
      [`up{${ns}, pod="pf-podflow-collector-q1w2e"}`, '1x40'],
      // Reads of node-b taking 1 to 5 s (p99 ≈ 4.96 s); node-a fast.
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-b", le="1"}`, '0+0x40'],
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-b", le="5"}`, '0+10x40'],
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-b", le="+Inf"}`, '0+10x40'],
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-a", le="1"}`, '0+10x40'],
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-a", le="5"}`, '0+10x40'],
      [`podflow_collector_read_duration_seconds_bucket{${ns}, pod="node-a", le="+Inf"}`, '0+10x40'],
      [
        `podflow_exporter_pull_errors_total{${ns}, pod="e", collector="http://10.0.0.2:9470", reason="timeout"}`,
        '0+2x40',
      ],
      [
        `podflow_exporter_dropped_records_total{${ns}, pod="e", sink="http", reason="rejected"}`,
        '0x20 5+5x20',
      ],
      [`podflow_collector_dropped_flows_total{${ns}, pod="node-a"}`, '0x40'],
      [`podflow_collector_lost_events_total{${ns}, pod="node-b"}`, '0+1x40'],
    ];
    const at = '30m';
    const base = { severity: 'warning', team: 'net' };
    const expect1 = (alertname: string, labels: Record<string, string>) => ({
      eval_time: at,
      alertname,
      exp_alerts: [{ exp_labels: { ...base, ...labels } }],
    });
    const tests = {
      rule_files: ['rules.yaml'],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: series.map(([s, values]) => ({ series: s, values })),
          alert_rule_test: [
            expect1('PodflowCollectorDown', { namespace: NS, pod: collectorPod }),
            { eval_time: at, alertname: 'PodflowExporterDown', exp_alerts: [] },
            expect1('PodflowConntrackReadSlow', { pod: 'node-b' }),
            expect1('PodflowPullErrors', { collector: 'http://10.0.0.2:9470', reason: 'timeout' }),
            expect1('PodflowRecordsDropped', { sink: 'http', reason: 'rejected' }),
            { eval_time: at, alertname: 'PodflowCollectorFlowsDropped', exp_alerts: [] },
            expect1('PodflowConntrackEventsLost', { pod: 'node-b', severity: 'info' }),
            // Not yet: `for` has not elapsed 5 minutes after the collector went down.
            { eval_time: '5m', alertname: 'PodflowCollectorDown', exp_alerts: [] },
          ],
        },
      ],
    };
    const dir = mkdtempSync(join(tmpdir(), 'pf-rules-test-'));
    try {
      writeFileSync(join(dir, 'rules.yaml'), stringify({ groups }));
      writeFileSync(join(dir, 'tests.yaml'), stringify(tests));
      const alerts = new Set(groups.flatMap((g) => g.rules.map((r) => r.alert)));
      const tested = new Set(tests.tests[0].alert_rule_test.map((t) => t.alertname));
      expect([...alerts].sort()).toEqual([...tested].sort());
      const { stdout } = await execFileP('promtool', ['test', 'rules', join(dir, 'tests.yaml')]).catch(
        (err) => {
          throw new Error(`promtool test rules:\n${err.stdout}${err.stderr}`);
        },
      );
      expect(stdout).toContain('SUCCESS');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
