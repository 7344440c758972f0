// The simulated cluster of the exporter benchmarks: `collectors` nodes of 30 pods each, 400 apps
// that each call six others, and per node `flows` flows to pods of those apps, to nodes, to private
// addresses outside the cluster and to public ones; the same for every run (seeded).
import type { ClusterLookup, Endpoint } from '../../shared/cluster.js';
import type { Flow } from '../../shared/flow.js';
import { seeded } from '../helpers/random.js';

export function benchCluster(COLLECTORS: number, FLOWS: number) {
  const PODS_PER_NODE = 30;
  const ZONES = ['zone-a', 'zone-b', 'zone-c'];

  const podIp = (node: number, pod: number) => `10.${(node >> 8) + 100}.${node & 255}.${pod + 10}`;
  const nodeIp = (node: number) => `192.168.${node >> 8}.${node & 255}`;

  const APPS = 400;
  const appOf = (g: number) => g % APPS;
  /** Every app calls six others: traffic follows a dependency graph, as in real clusters. */
  const depsOf = (app: number) => Array.from({ length: 6 }, (_, k) => (app * 7 + k * 53 + 1) % APPS);

  /**
   * One collector's flows: pods of its node talking to pods of the apps they depend on, to nodes, to
   * private addresses outside the cluster and to a pool of public addresses.
   */
  function flowsOf(node: number): Flow[] {
    const rand = seeded(node * 1000 + 1);
    const seen = new Set<string>();
    const flows: Flow[] = [];
    const pods = PODS_PER_NODE * COLLECTORS;
    while (flows.length < FLOWS) {
      const p = Math.floor(rand() * PODS_PER_NODE);
      const src = podIp(node, p);
      const r = rand();
      let dst: string;
      if (r < 0.45) {
        const deps = depsOf(appOf(node * PODS_PER_NODE + p));
        const app = deps[Math.floor(rand() * deps.length)];
        const g = Math.min(pods - 1, app + APPS * Math.floor(rand() * (pods / APPS)));
        dst = podIp(Math.floor(g / PODS_PER_NODE), g % PODS_PER_NODE);
      } else if (r < 0.5) dst = nodeIp(Math.floor(rand() * COLLECTORS));
      else if (r < 0.55) dst = `172.20.0.${Math.floor(rand() * 50)}`;
      else dst = `203.0.${Math.floor(rand() * 12)}.${Math.floor(rand() * 250)}`;
      const proto = rand() < 0.8 ? 6 : 17;
      const key = `${src} ${dst} ${proto}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const tx = Math.floor(rand() * 100_000);
      flows.push({
        src,
        dst,
        proto,
        txBytes: tx,
        rxBytes: tx * 3,
        txPackets: 1 + (tx >> 10),
        rxPackets: 2 + (tx >> 9),
      });
    }
    return flows;
  }

  function clusterLookup(): ClusterLookup {
    const ips = new Map<string, Endpoint>();
    for (let n = 0; n < COLLECTORS; n++) {
      const node = `node-${n}`;
      const zone = ZONES[n % ZONES.length];
      ips.set(nodeIp(n), { kind: 'node', name: node, namespace: '', workload: '', node, zone });
      for (let p = 0; p < PODS_PER_NODE; p++) {
        const a = appOf(n * PODS_PER_NODE + p);
        const app = `app-${a}`;
        ips.set(podIp(n, p), {
          kind: 'pod',
          name: `${app}-${n}-${p}`,
          namespace: `ns-${a % 40}`,
          workload: `Deployment/${app}`,
          node,
          zone,
        });
      }
    }
    return {
      lookup: (ip) => ips.get(ip),
      nodeZone: (n) => ZONES[Number(n.slice(5)) % ZONES.length],
      nodeRegion: () => 'region-1',
      // The simulated cluster never changes: every answer holds for good.
      onChange: () => {},
      timeless: () => true,
    };
  }

  return { flowsOf, clusterLookup, nodeIp, podIp };
}
