// The Helm chart, rendered as `helm template --strict` would with the defaults and with every
// optional feature switched on: values checked against values.schema.json, every object against the
// Kubernetes API schemas, every container's arguments, environment and config file through
// podflow's own loadConfig, and the wiring between the pieces (labels, ports, mounts, RBAC).
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { loadDestinations } from '../exporter/destinations.js';
import { FLOW_LABELS, OPTIONS, type OptionName } from '../shared/config.js';
import {
  CHART,
  checkValues,
  containerInputs,
  helmRenderBinary,
  type K8sObject,
  loadContainerConfig,
  mountedFile,
  REPO,
  type Rendered,
  renderChart,
  renderChartWith,
  renderNotes,
  selectorMatches,
  validateObject,
} from './helpers/helm.js';

const execFileP = promisify(execFile);
const NS = 'monitoring';

/** `${NAME}` as podflow expands it from the environment (not a template literal's placeholder). */
const ref = (name: string) => `\${${name}}`;

/** Value sets: the defaults, then each optional feature on (several per set where they combine). */
const VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  cilium: { collector: { source: 'cilium', cilium: { layout: 'v1.16', clock: 'jiffies' } } },
  'cilium on an old kernel': { collector: { source: 'cilium', cilium: { capabilities: ['SYS_ADMIN'] } } },
  'netfilter, accounting already on': { collector: { source: 'netfilter', conntrackAcct: false } },
  'no state dir': { collector: { stateDir: { enabled: false } } },
  'no DNS names': { collector: { dnsNames: false } },
  'state dir elsewhere': { collector: { stateDir: { hostPath: '/mnt/data/podflow/' } } },
  'prometheus operator': {
    metrics: {
      annotations: false,
      serviceMonitor: { enabled: true, labels: { release: 'kps' } },
      podMonitor: { enabled: true, labels: { release: 'kps' } },
      prometheusRule: { enabled: true, alertLabels: { team: 'net' }, readDurationSeconds: 1.5 },
    },
  },
  'network policy, disruption budget': {
    networkPolicy: {
      enabled: true,
      metricsFrom: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'prometheus' } } }],
    },
    exporter: { podDisruptionBudget: { enabled: true } },
  },
  'metrics auth, monitors behind a network policy': {
    metricsAuth: true,
    metrics: {
      annotations: false,
      serviceMonitor: {
        enabled: true,
        honorLabels: true,
        metricRelabelings: [{ action: 'labeldrop', regex: 'dst_ip' }],
      },
      podMonitor: {
        enabled: true,
        relabelings: [{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }],
      },
    },
    networkPolicy: {
      enabled: true,
      metricsFrom: [{ podSelector: { matchLabels: { app: 'vmagent' } } }],
      prometheus: {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'observability' } },
        podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus', prometheus: 'k8s' } },
      },
    },
  },
  'own pull-token Secret, as a subchart': {
    global: { imageRegistry: 'mirror.example.test', storageClass: 'fast', parent: { anything: [1, 2] } },
    auth: { existingSecret: 'podflow-pull', existingSecretKey: 'pull-token' },
    metricsAuth: true,
    metrics: { serviceMonitor: { enabled: true }, podMonitor: { enabled: true } },
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
  'sinks map, secrets from the environment': {
    exporter: {
      sinks: {
        victoria: {
          prom_remote_write: {
            url: 'http://vmauth.monitoring.svc:8427/api/v1/write',
            headers: { Authorization: `Bearer ${ref('VM_TOKEN')}` },
            labels: { env: 'prod' },
          },
        },
        loki: {
          loki: { url: 'http://loki-gateway.logging.svc/loki/api/v1/push', labels: { job: 'podflow' } },
        },
        castai: {
          http: {
            url: `https://api.cast.ai/v1/kubernetes/clusters/${ref('CLUSTER_ID')}/egressd-metrics`,
            encoding: 'protobuf',
            compression: 'gzip',
            headers: { 'X-API-Key': ref('CASTAI_KEY') },
          },
        },
      },
      sinkEnv: {
        VM_TOKEN: { secretName: 'victoria-credentials', key: 'token' },
        CASTAI_KEY: { secretName: 'castai', key: 'api-key' },
        CLUSTER_ID: { secretName: 'castai', key: 'cluster-id' },
      },
    },
  },
  'cost: a preset, prices and destination ranges': {
    exporter: {
      cloud: 'gcp',
      prices: { 'cross-zone': 0.02, internet: 0.1, 'nat-gateway': 'preset' },
      destinations: [
        { cidr: '10.20.0.0/16', name: 'billing-vpc', class: 'private' },
        { cidr: '2001:db8:77::/48', name: 'on-prem' },
        { 'aws-ip-ranges': '/etc/podflow/ranges/ip-ranges.json', services: ['S3'], regions: ['eu-west-1'] },
      ],
    },
  },
  'grafana dashboard': {
    grafanaDashboard: { enabled: true, namespace: 'grafana', annotations: { grafana_folder: 'Network' } },
  },
  'grafana dashboard, egressd names': {
    grafanaDashboard: { enabled: true },
    exporter: { metricsPrefix: 'egressd' },
  },
  'everything tuned': {
    nameOverride: 'flows',
    commonLabels: { 'example.test/cost-center': 'net-42' },
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
      podSecurityContext: { supplementalGroups: [4242] },
      securityContext: { seLinuxOptions: { type: 'spc_t' } },
      extraVolumes: [{ name: 'corp-ca', configMap: { name: 'corp-ca' } }],
      extraVolumeMounts: [{ name: 'corp-ca', mountPath: '/etc/ssl/corp', readOnly: true }],
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
      podSecurityContext: { runAsUser: 10001, runAsGroup: 10001 },
      securityContext: { seccompProfile: { type: 'Localhost', localhostProfile: 'podflow.json' } },
      extraVolumes: [{ name: 'corp-ca', configMap: { name: 'corp-ca' } }],
      extraVolumeMounts: [{ name: 'corp-ca', mountPath: '/etc/ssl/corp', readOnly: true }],
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
    // NET_RAW: the packet socket of --dns-names, exactly when it is on.
    const all: string[] = sc.capabilities.add;
    expect(all.includes('NET_RAW')).toBe(cfg.dnsNames);
    const caps = all.filter((x) => x !== 'NET_RAW');
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
    // --state-dir: a writable node directory of this release, on by default.
    const stateValues = (
      values.collector as { stateDir?: { enabled?: boolean; hostPath?: string } } | undefined
    )?.stateDir;
    const state = mounts.find((m) => m.name === 'state');
    if (stateValues?.enabled === false) {
      expect(cfg.stateDir).toBeUndefined();
      expect(state).toBeUndefined();
    } else {
      expect(cfg.stateDir).toBe('/var/lib/podflow');
      expect(state?.mountPath).toBe(cfg.stateDir);
      expect(state?.readOnly).not.toBe(true);
      const fullname = ds.metadata.name.replace(/-collector$/, '');
      const base = (stateValues?.hostPath ?? '/var/lib/podflow').replace(/\/$/, '');
      expect(pod.volumes.find((v: { name: string }) => v.name === 'state').hostPath).toEqual({
        path: `${base}/${fullname}`,
        type: 'DirectoryOrCreate',
      });
    }
    expect(hostPaths.map((v: { name: string }) => v.name).sort()).toEqual(
      [
        ...(cfg.conntrackAcct ? ['netfilter-sysctl'] : []),
        ...(cilium ? ['bpf'] : []),
        ...(stateValues?.enabled === false ? [] : ['state']),
      ].sort(),
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

  it('guards the pull API with a token from one Secret, mounted as a directory on both roles', () => {
    const auth = (values.auth ?? {}) as { existingSecret?: string; existingSecretKey?: string };
    const fullname = one(objs(), 'Deployment', 'exporter').metadata.name.replace(/-exporter$/, '');
    const secretName = auth.existingSecret ?? `${fullname}-pull-token`;
    const key = auth.existingSecret ? (auth.existingSecretKey ?? 'token') : 'token';
    const files = new Set<string>();
    for (const [kind, component] of [
      ['DaemonSet', 'collector'],
      ['Deployment', 'exporter'],
    ]) {
      const w = one(objs(), kind, component);
      const pod = w.spec.template.spec;
      const c = pod.containers[0];
      const cfg = loadContainerConfig(containerInputs(objs(), w, component));
      const file = cfg.pullTokenFile;
      expect(file, component).toBeDefined();
      files.add(file!);
      // A directory mount: the kubelet refreshes its files when the Secret changes (a subPath mount
      // would keep the old token until the pod restarts), and podflow re-reads the file.
      const mount = c.volumeMounts.find((m: { mountPath: string }) => file!.startsWith(`${m.mountPath}/`));
      expect(mount, `${component}: no mount holds ${file}`).toBeDefined();
      expect(mount.subPath).toBeUndefined();
      expect(mount.readOnly).toBe(true);
      const vol = pod.volumes.find((v: { name: string }) => v.name === mount.name);
      expect(vol.secret.secretName).toBe(secretName);
      expect(vol.secret.items).toEqual([{ key, path: file!.slice(mount.mountPath.length + 1) }]);
      // Not inside another volume: a mount point cannot be made in a read-only ConfigMap volume.
      for (const other of c.volumeMounts) {
        if (other !== mount) expect(mount.mountPath.startsWith(`${other.mountPath}/`)).toBe(false);
      }
    }
    expect(files.size).toBe(1);
    const secrets = byKind(objs(), 'Secret').filter((o) => o.metadata.name === secretName);
    if (auth.existingSecret) {
      expect(secrets).toEqual([]);
      return;
    }
    expect(secrets).toHaveLength(1);
    // Created once and kept: Helm leaves it on uninstall; upgrades reuse it (below).
    expect(secrets[0].metadata.annotations['helm.sh/resource-policy']).toBe('keep');
    expect(Buffer.from(secrets[0].data.token, 'base64').toString()).toMatch(/^[A-Za-z0-9]{48}$/);
  });

  it('binds the collector to its node address, the exporter to every address', () => {
    const ds = one(objs(), 'DaemonSet', 'collector');
    const dep = one(objs(), 'Deployment', 'exporter');
    const c = ds.spec.template.spec.containers[0];
    const hostIp = c.env.find((e: { name: string }) => e.name === 'HOST_IP');
    expect(hostIp.valueFrom.fieldRef.fieldPath).toBe('status.hostIP');
    const port = c.ports[0].containerPort;
    // The brackets hold either family: the same argument works on IPv4, IPv6 and dual-stack nodes.
    for (const ip of ['10.0.0.1', 'fd00:10::7']) {
      const cfg = loadContainerConfig(containerInputs(objs(), ds, 'collector', { 'status.hostIP': ip }));
      expect(cfg.listen).toEqual({ host: ip, port });
    }
    const exp = containerInputs(objs(), dep, 'exporter');
    expect(exp.flags.listen).toBe(`:${dep.spec.template.spec.containers[0].ports[0].containerPort}`);
  });

  it('asks for the token on /metrics only with metricsAuth, and monitors then send it', () => {
    const on = values.metricsAuth === true;
    const auth = (values.auth ?? {}) as { existingSecret?: string; existingSecretKey?: string };
    for (const [kind, component] of [
      ['DaemonSet', 'collector'],
      ['Deployment', 'exporter'],
    ]) {
      const cfg = loadContainerConfig(containerInputs(objs(), one(objs(), kind, component), component));
      expect(cfg.metricsAuth, component).toBe(on);
    }
    const endpoints = [
      ...byKind(objs(), 'ServiceMonitor').flatMap((m) => m.spec.endpoints),
      ...byKind(objs(), 'PodMonitor').flatMap((m) => m.spec.podMetricsEndpoints),
    ];
    for (const ep of endpoints) {
      if (!on) {
        expect(ep.authorization).toBeUndefined();
        continue;
      }
      // The very Secret and key the pods read their token from.
      const dep = one(objs(), 'Deployment', 'exporter');
      const vol = dep.spec.template.spec.volumes.find((v: { secret?: unknown }) => v.secret);
      expect(ep.authorization).toEqual({
        type: 'Bearer',
        credentials: { name: vol.secret.secretName, key: vol.secret.items[0].key },
      });
      expect(vol.secret.secretName).toBe(
        auth.existingSecret ?? `${dep.metadata.name.replace(/-exporter$/, '')}-pull-token`,
      );
    }
  });

  it('pulls the image from the registry a parent chart sets, tag kept beside a digest', () => {
    const image = (values.image ?? {}) as { registry?: string; repository?: string; digest?: string };
    const global = (values.global ?? {}) as { imageRegistry?: string };
    const registry = global.imageRegistry ?? image.registry;
    const repo = `${registry ? `${registry}/` : ''}${image.repository ?? 'podflow'}`;
    const digest = image.digest ? `@${image.digest}` : '';
    for (const [kind, component] of [
      ['DaemonSet', 'collector'],
      ['Deployment', 'exporter'],
    ]) {
      expect(one(objs(), kind, component).spec.template.spec.containers[0].image).toBe(
        `${repo}:0.1.0${digest}`,
      );
    }
  });

  it("adds the user's security settings, volumes and labels to the chart's own", () => {
    const common = (values.commonLabels ?? {}) as Record<string, string>;
    for (const o of objs()) expect(o.metadata.labels, `${o.kind}/${o.metadata.name}`).toMatchObject(common);
    for (const [kind, role] of [
      ['DaemonSet', 'collector'],
      ['Deployment', 'exporter'],
    ]) {
      const v = ((values as Record<string, Record<string, unknown>>)[role] ?? {}) as Record<string, unknown>;
      const pod = one(objs(), kind, role).spec.template;
      const c = pod.spec.containers[0];
      expect(pod.metadata.labels).toMatchObject(common);
      expect(c.securityContext).toMatchObject(v.securityContext ?? {});
      expect(pod.spec.securityContext ?? {}).toMatchObject(v.podSecurityContext ?? {});
      // What the user did not override stays as the chart has it.
      expect(c.securityContext.capabilities.drop).toEqual(['ALL']);
      expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
      if (role === 'exporter') expect(pod.spec.securityContext.runAsNonRoot).toBe(true);
      const extraVolumes = (v.extraVolumes ?? []) as unknown[];
      const extraMounts = (v.extraVolumeMounts ?? []) as unknown[];
      expect(pod.spec.volumes.slice(pod.spec.volumes.length - extraVolumes.length)).toEqual(extraVolumes);
      expect(c.volumeMounts.slice(c.volumeMounts.length - extraMounts.length)).toEqual(extraMounts);
      expect(pod.spec.volumes.map((x: { name: string }) => x.name)).toContain('pull-token');
    }
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
      // The node label the dashboard's collector panels use, then the user's relabelings.
      const own = (metrics.podMonitor as { relabelings?: unknown[] }).relabelings ?? [];
      expect(m.spec.podMetricsEndpoints[0].relabelings).toEqual([
        { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' },
        ...own,
      ]);
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
    const np = (values.networkPolicy ?? {}) as { metricsFrom?: unknown[]; prometheus?: unknown };
    const metrics = (values.metrics ?? {}) as Record<string, { enabled?: boolean }> & {
      annotations?: boolean;
    };
    const annotations = metrics.annotations !== false;
    // The default selector: the pods the Prometheus Operator and the prometheus-community chart run.
    const prometheus = np.prometheus ?? {
      namespaceSelector: {},
      podSelector: { matchLabels: { 'app.kubernetes.io/name': 'prometheus' } },
    };
    for (const policy of policies) {
      const component = policy.metadata.labels['app.kubernetes.io/component'];
      const target = component === 'collector' ? ds : dep;
      expect(matches(policy.spec.podSelector.matchLabels, target.spec.template.metadata.labels)).toBe(true);
      const port = target.spec.template.spec.containers[0].ports[0].containerPort;
      expect(policy.spec.ingress).toHaveLength(1);
      expect(policy.spec.ingress[0].ports).toEqual([{ port, protocol: 'TCP' }]);
      const from: unknown[] | undefined = policy.spec.ingress[0].from;
      if (component === 'collector') {
        const exporter = from![0] as { podSelector: { matchLabels: Record<string, string> } };
        expect(matches(exporter.podSelector.matchLabels, dep.spec.template.metadata.labels)).toBe(true);
        expect(matches(exporter.podSelector.matchLabels, ds.spec.template.metadata.labels)).toBe(false);
        // Prometheus scrapes the collectors while a PodMonitor or the annotations ask it to.
        const scraped = metrics.podMonitor?.enabled === true || annotations;
        expect(from!.slice(1)).toEqual(scraped ? [prometheus] : []);
      } else if (np.metricsFrom?.length) {
        const scraped = metrics.serviceMonitor?.enabled === true || annotations;
        expect(from).toEqual([...np.metricsFrom, ...(scraped ? [prometheus] : [])]);
      } else expect(from).toBeUndefined(); // every source
    }
    for (const pdb of pdbs) {
      expect(matches(pdb.spec.selector.matchLabels, dep.spec.template.metadata.labels)).toBe(true);
      // A budget never blocks a drain: with every exporter pod up, evicting one is allowed.
      expect(pdb.spec.minAvailable).toBeUndefined();
      expect(pdb.spec.maxUnavailable).toBeGreaterThanOrEqual(1);
      expect(dep.spec.replicas).toBeLessThanOrEqual(1);
    }
  });

  it('prints NOTES.txt telling how to reach the metrics', async () => {
    const notes = await renderNotes(bin, { values, name: 'pf', namespace: NS });
    const svc = one(objs(), 'Service', 'exporter');
    const port = svc.spec.ports[0].port;
    expect(notes).toContain(`kubectl -n ${NS} port-forward svc/${svc.metadata.name} ${port}`);
    expect(notes).toContain(`http://localhost:${port}/metrics`);
    expect(notes).toContain(`http://${svc.metadata.name}.${NS}.svc:${port}/metrics`);
    expect(notes).not.toMatch(/<no value>|\{\{/);
    // The flow metric names the exporter serves with this metrics-prefix.
    const exp = loadContainerConfig(
      containerInputs(objs(), one(objs(), 'Deployment', 'exporter'), 'exporter'),
    );
    expect(notes).toContain(`| grep ^${exp.metricsPrefix}_transmit_bytes_total`);
    expect(notes).not.toContain(exp.metricsPrefix === 'podflow' ? 'egressd_' : 'podflow_transmit');
    // With metricsAuth the command sends the token of the Secret the pods read.
    const vol = one(objs(), 'Deployment', 'exporter').spec.template.spec.volumes.find(
      (v: { name: string }) => v.name === 'pull-token',
    );
    const withToken = `secret ${vol.secret.secretName} -o jsonpath='{.data.${vol.secret.items[0].key}}'`;
    if (values.metricsAuth) {
      expect(notes).toContain(withToken);
      expect(notes).toContain('curl -s -H "Authorization: Bearer $TOKEN" http://localhost:');
    } else expect(notes).not.toContain('Authorization');
  });

  it('ships the Grafana dashboard for the sidecar when asked', () => {
    const dash = byKind(objs(), 'ConfigMap').filter((c) => c.metadata.name.endsWith('-dashboard'));
    const g = values.grafanaDashboard as { enabled?: boolean; namespace?: string } | undefined;
    expect(dash).toHaveLength(g?.enabled ? 1 : 0);
    for (const cm of dash) {
      expect(cm.metadata.labels.grafana_dashboard).toBe('1');
      expect(cm.metadata.namespace).toBe(g?.namespace ?? NS);
      // The dashboard whose queries use the exporter's metric names.
      const prefix = (values.exporter as { metricsPrefix?: string } | undefined)?.metricsPrefix;
      const file = prefix === 'egressd' ? 'podflow-egressd.json' : 'podflow.json';
      expect(cm.data['podflow.json']).toBe(
        readFileSync(join(REPO, 'deploy/grafana', file), 'utf8').trimEnd(),
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
      collector: [
        'listen',
        'source',
        'node-name',
        'proc-path',
        'conntrack-acct',
        'pull-token-file',
        'metrics-auth',
        'state-dir',
      ],
      exporter: [
        'listen',
        'node-name',
        'namespace',
        'collector-selector',
        'collector-port',
        'pull-token-file',
        'metrics-auth',
      ],
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
    [
      { collector: { stateDir: { hostPath: 'var/lib' } } },
      '- collector.stateDir.hostPath: must match pattern',
    ],
    [{ collector: { stateDir: true } }, '- collector.stateDir: must be object'],
    [{ exporter: { port: 'metrics' } }, '- exporter.port: must be integer'],
    [
      { collector: { config: { listen: ':1' } } },
      '- collector.config: "listen" is not an option the chart lets you set here',
    ],
    [{ exporter: { config: { 'http-sink-urls': 'x' } } }, '"http-sink-urls" is not an option'],
    [{ exporter: { metricsLabels: ['src_ip'] } }, '- exporter.metricsLabels.0: must be one of'],
    [{ exporter: { httpSink: { url: 'ftp://x' } } }, '- exporter.httpSink.url: must match pattern'],
    [{ exporter: { sinks: { logs: { kafka: { url: 'x' } } } } }, '- exporter.sinks.logs: "kafka" is not'],
    [
      { exporter: { sinks: { prometheus: { loki: { url: 'x' } } } } },
      '- exporter.sinks: "prometheus" is not',
    ],
    [
      { exporter: { sinkEnv: { PODFLOW_X: { secretName: 's', key: 'k' } } } },
      '- exporter.sinkEnv: "PODFLOW_X" is not',
    ],
    [
      { exporter: { cloud: 'oracle' } },
      '- exporter.cloud: must be one of "auto", "aws", "gcp", "azure", "none"',
    ],
    [{ exporter: { prices: { egress: 0.1 } } }, '- exporter.prices: must be one of "same-zone"'],
    [{ exporter: { prices: { internet: -1 } } }, '- exporter.prices.internet'],
    [
      { exporter: { destinations: [{ cidr: '10.0.0.0/8', class: 'cheap' }] } },
      '- exporter.destinations.0.class: must be one of',
    ],
    [
      { exporter: { destinations: [{ cidr: '10.0.0.0/8', nmae: 'x' }] } },
      'additional property "nmae" not allowed',
    ],
    [{ colector: {} }, '- (root): additional property "colector" not allowed'],
    [{ exporter: { replica: 2 } }, '- exporter: additional property "replica" not allowed'],
    [
      { collector: { cilium: { capabilities: ['NET_RAW'] } } },
      '- collector.cilium.capabilities.0: must be one of',
    ],
    // Two exporters would each pull every collector and acknowledge what they took.
    [{ exporter: { replicas: 2 } }, '- exporter.replicas: must be <= 1'],
    [
      { exporter: { podDisruptionBudget: { maxUnavailable: 0 } } },
      '- exporter.podDisruptionBudget.maxUnavailable',
    ],
    [
      { exporter: { podDisruptionBudget: { minAvailable: 1 } } },
      '- exporter.podDisruptionBudget: additional property "minAvailable" not allowed',
    ],
    [{ auth: { existingSecretKey: '' } }, '- auth.existingSecretKey: must NOT have fewer than 1 characters'],
    [{ metricsAuth: 'yes' }, '- metricsAuth: must be boolean'],
    [{ global: ['x'] }, '- global: must be object'],
    [{ networkPolicy: { prometheus: { podSelecter: {} } } }, 'additional property "podSelecter" not allowed'],
  ])('refuses %j', (values, message) => {
    const errors = checkValues(values as Record<string, unknown>);
    expect(errors.join('\n')).toContain(message);
  });

  it('packages every file the chart reads, and no editor or VCS files', () => {
    const patterns = readFileSync(join(CHART, '.helmignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    // .helmignore's globs: * within one path element; a trailing / names a directory.
    const regexps = patterns.map((p) => {
      const body = p
        .replace(/\/$/, '')
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '[^/]*');
      return new RegExp(`(^|/)${body}(/|$)`);
    });
    const ignored = (f: string) => regexps.some((r) => r.test(f));
    const files = (readdirSync(CHART, { recursive: true }) as string[]).filter((f) =>
      statSync(join(CHART, f)).isFile(),
    );
    expect(files).toContain('templates/pull-token-secret.yaml');
    expect(files.filter(ignored)).toEqual([]);
    for (const f of ['templates/x.yaml.swp', '.git/config', 'templates/a.yaml~', 'values.yaml.orig'])
      expect(ignored(f), f).toBe(true);
    const chart = parseYaml(readFileSync(join(CHART, 'Chart.yaml'), 'utf8'));
    expect(chart.maintainers.length).toBeGreaterThan(0);
    expect(chart.annotations['artifacthub.io/license']).toBe(
      JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).license,
    );
  });

  it("lets a securityContext key replace the chart's, false and whole maps included", async () => {
    const values = {
      collector: { securityContext: { capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'SYS_PTRACE'] } } },
      exporter: {
        podSecurityContext: { runAsNonRoot: false, runAsUser: 0 },
        securityContext: { readOnlyRootFilesystem: false },
      },
    };
    expect(checkValues(values)).toEqual([]);
    const { objects } = await renderChart(bin, { values });
    const col = one(objects, 'DaemonSet', 'collector').spec.template.spec;
    const exp = one(objects, 'Deployment', 'exporter').spec.template.spec;
    expect(col.containers[0].securityContext).toMatchObject({
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'SYS_PTRACE'] },
      runAsUser: 0,
      readOnlyRootFilesystem: true,
    });
    expect(exp.securityContext).toEqual({
      runAsNonRoot: false,
      runAsUser: 0,
      runAsGroup: 65532,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(exp.containers[0].securityContext).toMatchObject({
      readOnlyRootFilesystem: false,
      allowPrivilegeEscalation: false,
    });
  });

  it('tells why the exporter does not scale with replicas', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
    expect(schema.properties.exporter.properties.replicas.description).toMatch(/shards/);
    expect(checkValues({ exporter: { replicas: 0 } })).toEqual([]);
  });

  it('sets memory limits above the measured peaks, as the sizing docs say', async () => {
    // Peaks measured with the benchmarks (README, Sizing): the collector ≈160 MB at 250k entries when
    // every entry grew and is pulled, ≈77 MB at 10k plus ≈100 MB for one pull of a 480k-flow backlog
    // (test/pull-security.test.ts); the exporter 553 MB after catching up on every collector's
    // backlog. A limit needs a quarter on top (GC timing, allocator fragmentation).
    const mib = (q: string) => {
      const m = /^(\d+)(Mi|Gi)$/.exec(q);
      if (!m) throw new Error(`unexpected quantity ${q}`);
      return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
    };
    const { objects } = await renderChart(bin);
    const limit = (kind: string) =>
      objects.find((o) => o.kind === kind)!.spec.template.spec.containers[0].resources.limits
        .memory as string;
    expect(mib(limit('DaemonSet')) * 2 ** 20).toBeGreaterThan(Math.max(160e6, 77e6 + 100e6) * 1.25);
    expect(mib(limit('Deployment')) * 2 ** 20).toBeGreaterThan(553e6 * 1.25);
    // The README's sizing paragraph and docs/install.md state the limits the chart sets.
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    const install = readFileSync(join(REPO, 'docs/install.md'), 'utf8');
    for (const kind of ['DaemonSet', 'Deployment']) {
      expect(readme).toContain(`${limit(kind)} limit`);
      expect(install).toContain(`${limit(kind)} limit`);
    }
  });

  it('leaves the collector priority class to the cluster unless one is set', async () => {
    // system-node-critical is admitted outside kube-system only where no quota limits it (not GKE).
    const { objects } = await renderChart(bin);
    expect(objects.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.priorityClassName).toBeUndefined();
    const set = await renderChart(bin, {
      values: { collector: { priorityClassName: 'system-node-critical' } },
    });
    expect(set.objects.find((o) => o.kind === 'DaemonSet')!.spec.template.spec.priorityClassName).toBe(
      'system-node-critical',
    );
  });

  it('has an API check that catches a wrong monitor authorization', async () => {
    const { objects } = await renderChart(bin, {
      values: { metricsAuth: true, metrics: { serviceMonitor: { enabled: true } } },
    });
    const sm = structuredClone(objects.find((o) => o.kind === 'ServiceMonitor')!);
    expect(await validateObject(sm)).toEqual([]);
    sm.spec.endpoints[0].authorization.credentials = 'pf-podflow-pull-token';
    expect((await validateObject(sm)).join('\n')).toContain('authorization/credentials must be object');
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

  it('renders exporter.sinks into the config file as given, its secrets from Secrets through the environment', () => {
    const objects = rendered.get('sinks map, secrets from the environment')!.objects;
    const dep = one(objects, 'Deployment', 'exporter');
    const exp = containerInputs(objects, dep, 'exporter');
    // The ConfigMap holds the references, never the secrets.
    expect(exp.configText).toContain(ref('VM_TOKEN'));
    expect(exp.configText).not.toContain('secret-from-cluster');
    const env = dep.spec.template.spec.containers[0].env;
    expect(env.find((e: { name: string }) => e.name === 'CLUSTER_ID').valueFrom).toEqual({
      secretKeyRef: { name: 'castai', key: 'cluster-id' },
    });
    const sinks = loadContainerConfig(exp).sinks;
    expect(sinks.map((s) => `${s.name}:${s.kind}`).sort()).toEqual([
      'castai:http',
      'loki:loki',
      'victoria:prom_remote_write',
    ]);
    const byName = Object.fromEntries(sinks.map((s) => [s.name, s]));
    expect(byName.victoria.headers).toEqual({ Authorization: 'Bearer secret-from-cluster' });
    expect(byName.castai).toMatchObject({
      url: 'https://api.cast.ai/v1/kubernetes/clusters/secret-from-cluster/egressd-metrics',
      encoding: 'protobuf',
      gzip: true,
      headers: { 'X-API-Key': 'secret-from-cluster' },
    });
  });

  it('refuses a sinks entry named http next to exporter.httpSink.url', async () => {
    const values = {
      exporter: {
        httpSink: { url: 'http://a.test/x' },
        sinks: { http: { http: { url: 'http://b.test/y' } } },
      },
    };
    expect(checkValues(values)).toEqual([]);
    await expect(renderChart(bin, { values })).rejects.toThrow(
      /exporter\.sinks\.http: the name http is the sink of/,
    );
  });

  it('ships exporter.destinations as the --destinations-file podflow loads, and rolls the exporter when it changes', async () => {
    const destinations = [
      { cidr: '10.20.0.0/16', name: 'billing-vpc', class: 'private' },
      { cidr: '2001:db8:77::/48', name: 'on-prem' },
    ];
    const values = { exporter: { cloud: 'aws', prices: { internet: 0.05 }, destinations } };
    const { objects } = await renderChart(bin, { values });
    const dep = one(objects, 'Deployment', 'exporter');
    const inputs = containerInputs(objects, dep, 'exporter');
    const cfg = loadContainerConfig(inputs);
    expect([cfg.cloud, cfg.prices, cfg.destinationsFile]).toEqual([
      'aws',
      { internet: 0.05 },
      '/etc/podflow/destinations/destinations.yaml',
    ]);
    const c = dep.spec.template.spec.containers.find((x: { name: string }) => x.name === 'exporter');
    const text = mountedFile(objects, dep.spec.template.spec, c, cfg.destinationsFile!);
    const dir = mkdtempSync(join(tmpdir(), 'pf-helm-dest-'));
    try {
      const file = join(dir, 'destinations.yaml');
      writeFileSync(file, text);
      const table = loadDestinations(file);
      expect(table.lookup('10.20.1.1')).toEqual({ name: 'billing-vpc', class: 'private' });
      expect(table.lookup('2001:db8:77::1')).toEqual({ name: 'on-prem' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Another list: another checksum, so the exporter restarts and reads it.
    const other = await renderChart(bin, {
      values: { exporter: { ...values.exporter, destinations: destinations.slice(1) } },
    });
    const sum = (o: K8sObject[]) =>
      one(o, 'Deployment', 'exporter').spec.template.metadata.annotations['checksum/destinations'];
    expect(sum(objects)).toMatch(/^[0-9a-f]{64}$/);
    expect(sum(other.objects)).not.toBe(sum(objects));
    // Without destinations: no ConfigMap, no mount, no option; the preset from the nodes.
    const plain = await renderChart(bin, {});
    expect(
      plain.objects.some((o) => o.kind === 'ConfigMap' && o.metadata.name.endsWith('-destinations')),
    ).toBe(false);
    const plainCfg = loadContainerConfig(
      containerInputs(plain.objects, one(plain.objects, 'Deployment', 'exporter'), 'exporter'),
    );
    expect([plainCfg.cloud, plainCfg.prices, plainCfg.destinationsFile]).toEqual(['auto', {}, undefined]);
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

describe('chart: upgrades', () => {
  const SECRET = 'pf-podflow-pull-token';
  /** A copy of the chart whose lookup finds `live` (what `helm upgrade` sees in the cluster). */
  const withLive = (live: unknown) => ({
    'templates/_zz_lookup.tpl': `{{- define "podflow.lookupSecret" -}}${JSON.stringify(live)}{{- end -}}\n`,
  });
  const tokenSecret = (r: Rendered) =>
    r.objects.find((o) => o.kind === 'Secret' && o.metadata.name === SECRET);

  it('keeps the pull token the cluster has, with every line added for a rotation', async () => {
    const data = { token: Buffer.from('old-token\nnew-token\n').toString('base64') };
    const live = { apiVersion: 'v1', kind: 'Secret', metadata: { name: SECRET, namespace: NS }, data };
    const upgraded = await renderChartWith(bin, withLive(live), { name: 'pf', namespace: NS });
    expect(tokenSecret(upgraded)?.data).toEqual(data);
    // First install (nothing in the cluster): a fresh random token, different at every install.
    const a = tokenSecret(await renderChartWith(bin, withLive({}), { name: 'pf', namespace: NS }));
    const b = tokenSecret(await renderChart(bin, { name: 'pf', namespace: NS }));
    expect(a?.data.token).not.toBe(b?.data.token);
    // A Secret without the key (made by hand for something else) is not taken as the token.
    const other = await renderChartWith(bin, withLive({ ...live, data: { password: 'eA==' } }), {
      name: 'pf',
      namespace: NS,
    });
    expect(Object.keys(tokenSecret(other)?.data)).toEqual(['token']);
  });

  it('restarts only the workload whose own config changed', async () => {
    // Every pair of renders: a workload's checksum changes exactly when its ConfigMap's data does,
    // and the pull token (rotated in place, re-read by podflow) restarts nothing.
    const sets: Record<string, Record<string, unknown>> = {
      defaults: {},
      'exporter setting': { exporter: { exportInterval: '30s' } },
      'exporter option': { exporter: { config: { 'http-sink-timeout': '30s' } } },
      'collector setting': { collector: { interval: '2s' } },
      'shared setting': { logLevel: 'debug' },
      'metrics auth': { metricsAuth: true },
      'own token Secret': { auth: { existingSecret: 'mine' } },
    };
    const seen: { set: string; role: string; data: string; checksum: string }[] = [];
    for (const [set, values] of Object.entries(sets)) {
      const { objects } = await renderChart(bin, { values, name: 'pf', namespace: NS });
      for (const [kind, role] of [
        ['DaemonSet', 'collector'],
        ['Deployment', 'exporter'],
      ]) {
        const w = one(objects, kind, role);
        const cmName = w.spec.template.spec.volumes.find((v: { name: string }) => v.name === 'config')
          .configMap.name;
        const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === cmName)!;
        expect(cm.metadata.labels['app.kubernetes.io/component']).toBe(role);
        expect(Object.keys(cm.data)).toEqual([`${role}.yaml`]);
        seen.push({
          set,
          role,
          data: JSON.stringify(cm.data),
          checksum: w.spec.template.metadata.annotations['checksum/config'],
        });
      }
    }
    const restarts = (set: string) =>
      seen
        .filter(
          (x) =>
            x.set === set &&
            x.checksum !== seen.find((d) => d.set === 'defaults' && d.role === x.role)!.checksum,
        )
        .map((x) => x.role);
    expect(restarts('exporter setting')).toEqual(['exporter']);
    expect(restarts('exporter option')).toEqual(['exporter']);
    expect(restarts('collector setting')).toEqual(['collector']);
    expect(restarts('shared setting')).toEqual(['collector', 'exporter']);
    expect(restarts('metrics auth')).toEqual(['collector', 'exporter']);
    expect(restarts('own token Secret')).toEqual([]);
    for (const x of seen) {
      for (const y of seen.filter((o) => o.role === x.role)) {
        expect(x.checksum === y.checksum, `${x.role}: ${x.set} / ${y.set}`).toBe(x.data === y.data);
      }
    }
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
      // Another exporter holding a collector's lease (a standby, a rollout, a reshard): no alert.
      [
        `podflow_exporter_pull_errors_total{${ns}, pod="e", collector="http://10.0.0.3:9470", reason="leased"}`,
        '0+2x40',
      ],
      [
        `podflow_exporter_dropped_records_total{${ns}, pod="e", sink="http", reason="rejected"}`,
        '0x20 5+5x20',
      ],
      // A full queue loses nothing (the push is offered again): no alert for it.
      [`podflow_exporter_dropped_records_total{${ns}, pod="e", sink="http", reason="queue_full"}`, '0+50x40'],
      [`podflow_collector_dropped_flows_total{${ns}, pod="node-a"}`, '0x40'],
      [`podflow_collector_lost_events_total{${ns}, pod="node-b"}`, '0+1x40'],
      // kube-state-metrics: one collector pod of three cannot be scheduled; the exporter Deployment
      // has no available replica and its pod never became a scrape target (only the old one above).
      [`kube_daemonset_status_number_unavailable{${ns}, daemonset="pf-podflow-collector"}`, '1x40'],
      [
        `kube_daemonset_status_number_unavailable{namespace="other", daemonset="pf-podflow-collector"}`,
        '2x40',
      ],
      [`kube_deployment_status_replicas_available{${ns}, deployment="pf-podflow-exporter"}`, '0x40'],
      // node-a's table stays empty; node-b's entries were created with accounting off (most of
      // them without counters); node-c has a few old connections left from before it was turned on.
      [`podflow_collector_conntrack_entries{${ns}, pod="node-a"}`, '0x40'],
      [`podflow_collector_conntrack_entries{${ns}, pod="node-b"}`, '900x40'],
      [`podflow_collector_entries_without_counters{${ns}, pod="node-b"}`, '850x40'],
      [`podflow_collector_conntrack_entries{${ns}, pod="node-c"}`, '5000x40'],
      [`podflow_collector_entries_without_counters{${ns}, pod="node-c"}`, '40x40'],
      [`podflow_collector_entries_without_counters{${ns}, pod="node-a"}`, '0x40'],
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
            { eval_time: at, alertname: 'PodflowExporterAbsent', exp_alerts: [] },
            expect1('PodflowConntrackReadSlow', { pod: 'node-b' }),
            expect1('PodflowPullErrors', { collector: 'http://10.0.0.2:9470', reason: 'timeout' }),
            expect1('PodflowRecordsDropped', { sink: 'http', reason: 'rejected' }),
            { eval_time: at, alertname: 'PodflowCollectorFlowsDropped', exp_alerts: [] },
            expect1('PodflowConntrackEventsLost', { pod: 'node-b', severity: 'info' }),
            expect1('PodflowCollectorsUnavailable', {
              namespace: NS,
              daemonset: 'pf-podflow-collector',
            }),
            expect1('PodflowExporterUnavailable', { namespace: NS, deployment: 'pf-podflow-exporter' }),
            expect1('PodflowConntrackEmpty', { pod: 'node-a' }),
            expect1('PodflowConntrackAccountingOff', { pod: 'node-b' }),
            // Empty for 10 minutes only: not yet.
            { eval_time: '10m', alertname: 'PodflowConntrackEmpty', exp_alerts: [] },
            // Not yet: `for` has not elapsed 5 minutes after the collector went down.
            { eval_time: '5m', alertname: 'PodflowCollectorDown', exp_alerts: [] },
          ],
        },
        {
          // No exporter pod at all (up == 0 has no series to fire on): only absent() notices.
          interval: '1m',
          input_series: [{ series: `up{${ns}, pod="${collectorPod}"}`, values: '1x40' }],
          alert_rule_test: [
            expect1('PodflowExporterAbsent', { namespace: NS }),
            { eval_time: at, alertname: 'PodflowExporterDown', exp_alerts: [] },
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

describe('exporter shards', () => {
  const matches = (sel: { matchLabels: Record<string, string> }, labels: Record<string, string> = {}) =>
    Object.entries(sel.matchLabels).every(([k, v]) => labels[k] === v);
  const SHARDED = {
    exporter: { shards: 3, clusterName: 'prod-eu' },
    metrics: { annotations: false, serviceMonitor: { enabled: true }, prometheusRule: { enabled: true } },
  };
  let objs: K8sObject[] = [];
  beforeAll(async () => {
    objs = (await renderChart(bin, { values: SHARDED, name: 'pf', namespace: NS })).objects;
  }, 120_000);

  it('shards > 1: a StatefulSet of that many exporters and no Deployment, valid objects', async () => {
    expect(checkValues(SHARDED)).toEqual([]);
    expect(byKind(objs, 'Deployment').filter((o) => o.metadata.name.endsWith('-exporter'))).toEqual([]);
    const sts = one(objs, 'StatefulSet', 'exporter');
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.podManagementPolicy).toBe('Parallel');
    const errors: string[] = [];
    for (const o of objs) errors.push(...(await validateObject(o)));
    expect(errors).toEqual([]);
  });

  it('every pod gets its shard from its ordinal, the total and the cluster name from its arguments', () => {
    const sts = one(objs, 'StatefulSet', 'exporter');
    for (let i = 0; i < 3; i++) {
      const cfg = loadContainerConfig(
        containerInputs(objs, sts, 'exporter', { 'metadata.name': `${sts.metadata.name}-${i}` }),
      );
      expect([cfg.shard, cfg.totalShards, cfg.clusterName, cfg.podName]).toEqual([
        i,
        3,
        'prod-eu',
        `${sts.metadata.name}-${i}`,
      ]);
    }
  });

  it('a headless governing Service, a disruption budget over the shards, one scrape per shard, the notes', async () => {
    const sts = one(objs, 'StatefulSet', 'exporter');
    const podLabels = sts.spec.template.metadata.labels;
    const headless = one(objs, 'Service', 'exporter-shards');
    expect(headless.metadata.name).toBe(sts.spec.serviceName);
    expect(headless.spec.clusterIP).toBe('None');
    expect(matches({ matchLabels: headless.spec.selector }, podLabels)).toBe(true);
    const pdb = one(objs, 'PodDisruptionBudget');
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(matches(pdb.spec.selector, podLabels)).toBe(true);
    // The ServiceMonitor scrapes every pod behind the exporter Service, and not again through the
    // headless one.
    const sm = one(objs, 'ServiceMonitor');
    const services = byKind(objs, 'Service').filter((s) => matches(sm.spec.selector, s.metadata.labels));
    expect(services.map((s) => s.metadata.name)).toEqual([one(objs, 'Service', 'exporter').metadata.name]);
    const notes = await renderNotes(bin, { values: SHARDED, name: 'pf', namespace: NS });
    expect(notes).toContain(`3 exporter shards (StatefulSet ${sts.metadata.name})`);
    expect(notes).not.toMatch(/<no value>|\{\{|Deployment/);
    const rule = JSON.stringify(one(objs, 'PrometheusRule').spec);
    expect(rule).toContain('kube_statefulset_status_replicas_ready');
    expect(rule).not.toContain('kube_deployment_status_replicas_available');
  });

  it('shards 1 stays a Deployment without a shard argument; the schema bounds shards and the cluster name', async () => {
    const plain = (await renderChart(bin, { values: {}, name: 'pf', namespace: NS })).objects;
    expect(byKind(plain, 'StatefulSet')).toEqual([]);
    const cfg = loadContainerConfig(containerInputs(plain, one(plain, 'Deployment', 'exporter'), 'exporter'));
    expect([cfg.shard, cfg.totalShards, cfg.clusterName]).toEqual([0, 1, undefined]);
    for (const bad of [{ shards: 0 }, { shards: 101 }, { shards: '2' }, { clusterName: 'two words' }]) {
      expect(checkValues({ exporter: bad }), JSON.stringify(bad)).not.toEqual([]);
    }
  });
});
