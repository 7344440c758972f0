// Builders of realistic Kubernetes objects for the test API server: the fields real clusters carry
// (managedFields, containers, conditions), so that sizes, parsing cost and memory are honest.
import type { KubeObject } from './server.js';

export interface OwnerRef {
  kind: string;
  name: string;
  apiVersion?: string;
}

const API_VERSION: Record<string, string> = {
  ReplicaSet: 'apps/v1',
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  DaemonSet: 'apps/v1',
  Job: 'batch/v1',
  CronJob: 'batch/v1',
  Node: 'v1',
};

function ownerRefs(owner: OwnerRef | undefined) {
  if (!owner) return undefined;
  return [
    {
      apiVersion: owner.apiVersion ?? API_VERSION[owner.kind] ?? 'example.com/v1',
      kind: owner.kind,
      name: owner.name,
      uid: `11111111-2222-4333-8444-${owner.name.length.toString(16).padStart(12, '0')}`,
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
}

export interface PodSpec {
  name: string;
  namespace?: string;
  node?: string;
  /** IPs in status.podIPs order; the first is status.podIP. */
  ips?: string[];
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  ready?: boolean;
  owner?: OwnerRef;
  hostNetwork?: boolean;
  labels?: Record<string, string>;
  startTime?: string;
  creationTimestamp?: string;
}

export function pod(s: PodSpec): KubeObject {
  const ns = s.namespace ?? 'default';
  const phase = s.phase ?? 'Running';
  const ready = s.ready ?? phase === 'Running';
  const ips = s.ips ?? [];
  const started = s.startTime ?? '2026-01-01T00:00:00Z';
  const cond = (type: string, st: boolean) => ({
    type,
    status: st ? 'True' : 'False',
    lastProbeTime: null,
    lastTransitionTime: started,
  });
  return {
    metadata: {
      name: s.name,
      namespace: ns,
      ...(s.creationTimestamp ? { creationTimestamp: s.creationTimestamp } : {}),
      labels: s.labels ?? { app: s.owner?.name ?? s.name, 'pod-template-hash': '7d9f8b6c5d' },
      annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-01-01T00:00:00Z' },
      ownerReferences: ownerRefs(s.owner),
      managedFields: [
        {
          manager: 'kube-controller-manager',
          operation: 'Update',
          apiVersion: 'v1',
          time: started,
          fieldsType: 'FieldsV1',
          fieldsV1: {
            'f:metadata': {
              'f:generateName': {},
              'f:labels': { '.': {}, 'f:app': {} },
              'f:ownerReferences': {},
            },
            'f:spec': { 'f:containers': { 'k:{"name":"app"}': { '.': {}, 'f:image': {}, 'f:name': {} } } },
          },
        },
        {
          manager: 'kubelet',
          operation: 'Update',
          apiVersion: 'v1',
          time: started,
          fieldsType: 'FieldsV1',
          fieldsV1: {
            'f:status': { 'f:conditions': {}, 'f:containerStatuses': {}, 'f:podIP': {}, 'f:podIPs': {} },
          },
          subresource: 'status',
        },
      ],
    },
    spec: {
      ...(s.node ? { nodeName: s.node } : {}),
      ...(s.hostNetwork ? { hostNetwork: true } : {}),
      containers: [
        {
          name: 'app',
          image: 'registry.example.com/team/app:1.2.3',
          ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }],
          env: [
            { name: 'LOG_LEVEL', value: 'info' },
            { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
          ],
          resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
          readinessProbe: { httpGet: { path: '/ready', port: 8080, scheme: 'HTTP' }, periodSeconds: 10 },
          volumeMounts: [
            {
              name: 'kube-api-access',
              mountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
              readOnly: true,
            },
          ],
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
        },
      ],
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: 'default',
      schedulerName: 'default-scheduler',
      tolerations: [
        {
          key: 'node.kubernetes.io/not-ready',
          operator: 'Exists',
          effect: 'NoExecute',
          tolerationSeconds: 300,
        },
      ],
      volumes: [
        {
          name: 'kube-api-access',
          projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] },
        },
      ],
    },
    status: {
      phase,
      conditions: [
        cond('PodReadyToStartContainers', true),
        cond('Initialized', true),
        cond('Ready', ready),
        cond('ContainersReady', ready),
        cond('PodScheduled', true),
      ],
      ...(ips.length > 0 ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
      hostIP: '10.0.0.1',
      startTime: started,
      containerStatuses: [
        {
          name: 'app',
          ready,
          restartCount: 0,
          image: 'registry.example.com/team/app:1.2.3',
          imageID:
            'registry.example.com/team/app@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0',
          containerID: 'containerd://9b8a7c6d5e4f30211203f4e5d6c7b8a99b8a7c6d5e4f30211203f4e5d6c7b8a9',
          started: phase === 'Running',
          state: phase === 'Running' ? { running: { startedAt: started } } : { terminated: { exitCode: 0 } },
        },
      ],
      qosClass: 'Burstable',
    },
  };
}

export interface NodeSpec {
  name: string;
  zone?: string;
  region?: string;
  internalIPs?: string[];
  externalIPs?: string[];
  /** spec.providerID; '' for none (kind, bare metal). @default aws:///<zone>/i-0123456789abcdef0 */
  providerID?: string;
}

export function node(s: NodeSpec): KubeObject {
  const labels: Record<string, string> = {
    'kubernetes.io/hostname': s.name,
    'kubernetes.io/os': 'linux',
    'node.kubernetes.io/instance-type': 'm6i.xlarge',
  };
  if (s.zone) labels['topology.kubernetes.io/zone'] = s.zone;
  if (s.region) labels['topology.kubernetes.io/region'] = s.region;
  return {
    metadata: { name: s.name, labels, annotations: { 'node.alpha.kubernetes.io/ttl': '0' } },
    spec: {
      podCIDR: '10.244.0.0/24',
      ...(s.providerID === ''
        ? {}
        : { providerID: s.providerID ?? `aws:///${s.zone ?? 'zone'}/i-0123456789abcdef0` }),
    },
    status: {
      addresses: [
        ...(s.internalIPs ?? []).map((address) => ({ type: 'InternalIP', address })),
        ...(s.externalIPs ?? []).map((address) => ({ type: 'ExternalIP', address })),
        { type: 'Hostname', address: s.name },
      ],
      capacity: { cpu: '4', memory: '16Gi', pods: '110' },
      allocatable: { cpu: '3920m', memory: '15Gi', pods: '110' },
      conditions: [
        { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.31.2',
        containerRuntimeVersion: 'containerd://1.7.22',
        osImage: 'Linux',
      },
    },
  };
}

export function replicaSet(name: string, namespace: string, owner?: OwnerRef): KubeObject {
  return {
    metadata: { name, namespace, labels: { app: name }, ownerReferences: ownerRefs(owner) },
    spec: {
      replicas: 3,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'app', image: 'app:1' }] },
      },
    },
    status: { replicas: 3, readyReplicas: 3, availableReplicas: 3, observedGeneration: 1 },
  };
}

export function job(name: string, namespace: string, owner?: OwnerRef): KubeObject {
  return {
    metadata: { name, namespace, labels: { 'job-name': name }, ownerReferences: ownerRefs(owner) },
    spec: {
      completions: 1,
      parallelism: 1,
      backoffLimit: 6,
      template: { spec: { containers: [], restartPolicy: 'Never' } },
    },
    status: { active: 1 },
  };
}

export function service(name: string, namespace: string, clusterIPs: string[]): KubeObject {
  return {
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIPs[0] ?? 'None',
      clusterIPs: clusterIPs.length > 0 ? clusterIPs : ['None'],
      ipFamilies: clusterIPs.map((ip) => (ip.includes(':') ? 'IPv6' : 'IPv4')),
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      selector: { app: name },
    },
    status: { loadBalancer: {} },
  };
}

export function namespace(name: string): KubeObject {
  return {
    metadata: { name, labels: { 'kubernetes.io/metadata.name': name } },
    spec: {},
    status: { phase: 'Active' },
  };
}
