// The test API server as its own process (for benchmarks: the measured process's RSS is then its
// own). Fills a synthetic cluster, writes a kubeconfig and reports `{ url, kubeconfig, counts }`
// over the IPC channel (or stdout as one JSON line); exits when the parent disconnects.
//
//   node --import tsx test/kube-api-server/main.ts --pods 50000 --nodes 2000 --replicasets 10000
import { rmSync } from 'node:fs';
import { job, namespace, node, pod, replicaSet, service } from './objects.js';
import { KubeApiServer } from './server.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const PODS = arg('pods', 50_000);
const NODES = arg('nodes', 2_000);
const RS = arg('replicasets', 10_000);
const JOBS = arg('jobs', 500);
const SERVICES = arg('services', 2_000);
const NAMESPACES = 50;
const ZONES = ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'];

const server = new KubeApiServer({ historySize: 10_000 });
const ns = (i: number) => `team-${i % NAMESPACES}`;
for (let i = 0; i < NAMESPACES; i++) server.create('namespaces', namespace(ns(i)));
for (let i = 0; i < NODES; i++) {
  server.create(
    'nodes',
    node({
      name: `node-${i}`,
      zone: ZONES[i % ZONES.length],
      region: 'eu-west-1',
      internalIPs: [`10.0.${i >> 8}.${i & 255}`],
    }),
  );
}
for (let i = 0; i < RS; i++) {
  server.create(
    'replicasets',
    replicaSet(`app-${i}-7d9f8b6c5d`, ns(i), { kind: 'Deployment', name: `app-${i}` }),
  );
}
for (let i = 0; i < JOBS; i++)
  server.create('jobs', job(`cron-${i}-29000000`, ns(i), { kind: 'CronJob', name: `cron-${i}` }));
for (let i = 0; i < SERVICES; i++) {
  server.create(
    'services',
    service(`svc-${i}`, ns(i), [`10.96.${i >> 8}.${i & 255}`, `fd00:96::${i.toString(16)}`]),
  );
}
for (let i = 0; i < PODS; i++) {
  const r = i % RS;
  const ip4 = `10.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
  server.create(
    'pods',
    pod({
      name: `app-${r}-7d9f8b6c5d-${i.toString(36).padStart(5, '0')}`,
      namespace: ns(r),
      node: `node-${i % NODES}`,
      ips: [ip4, `fd00:244::${i.toString(16)}`],
      owner: { kind: 'ReplicaSet', name: `app-${r}-7d9f8b6c5d` },
    }),
  );
}
// The bulk load is not history anyone will watch from.
server.compact();
server.warm();

const url = await server.listen(0);
const kubeconfig = server.writeKubeconfig();
const info = {
  url,
  kubeconfig,
  counts: { pods: PODS, nodes: NODES, replicasets: RS, jobs: JOBS, services: SERVICES },
};
if (process.send) process.send(info);
else process.stdout.write(`${JSON.stringify(info)}\n`);

const bye = () => {
  rmSync(kubeconfig, { force: true });
  process.exit(0);
};
process.on('disconnect', bye);
process.on('SIGTERM', bye);
process.on('SIGINT', bye);
