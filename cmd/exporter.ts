// Wiring of `podflow exporter`: collectors (static --collectors, or discovered through Kubernetes)
// → pipeline (pull → enrich → Prometheus + HTTP sinks → ack) → /metrics, /healthz, /readyz.
import { once } from 'node:events';
import { startupDestinations } from '../exporter/destinations.js';
import { createKubernetes, type Kubernetes } from '../exporter/kubernetes.js';
import { type CollectorDiscovery, createExportGraph, staticDiscovery } from '../exporter/pipeline.js';
import { httpCollectorClients } from '../exporter/pull.js';
import { shardFilter } from '../exporter/shard.js';
import { viewRouter } from '../exporter/view.js';
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import { createRegistry, HttpServer } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import { loadTokenFile } from '../shared/token.js';
import { startServer } from './collector.js';

export async function run(config: Config, log: Logger, signal: AbortSignal): Promise<void> {
  const destinations = startupDestinations(config.destinationsFile);
  const tokens = loadTokenFile(config, log);
  const clientFor = httpCollectorClients(config, { token: tokens });
  const registry = createRegistry();
  const kube: Kubernetes | undefined = await createKubernetes(config, {
    log,
    registry,
    env: process.env,
    clientFor,
  });

  let discovery: CollectorDiscovery;
  if (config.collectors !== undefined && config.collectors.length > 0) {
    // Static mode shards by URL: the node behind a URL is not known before it answers.
    const mine = shardFilter(config);
    discovery = staticDiscovery(config.collectors.filter(mine).map(clientFor));
  } else if (kube?.discovery !== undefined) {
    discovery = kube.discovery;
  } else {
    throw new StartupError(
      '--collectors: no collector URLs given and no Kubernetes API server to discover them (give --collectors or --kubeconfig)',
      { exitCode: 2 },
    );
  }

  let graph: ReturnType<typeof createExportGraph>;
  try {
    graph = createExportGraph(config, {
      discovery,
      cluster: kube?.cluster,
      registry,
      log,
      env: process.env,
      destinations,
    });
  } catch (err) {
    // The sinks' own checks of their options (a header's ${ENV} not set): configuration.
    throw new StartupError((err as Error).message, { exitCode: 2 });
  }
  const { pipeline } = graph;

  const server = new HttpServer(
    { listen: config.listen },
    {
      registry,
      body: graph.prometheus,
      log: log.child({ stage: 'http' }),
      gzipMetrics: config.metricsGzip,
      auth: config.metricsAuth ? tokens : undefined,
      router: graph.view && viewRouter({ ring: graph.view, log: log.child({ stage: 'view' }) }),
      notReady: () => kube?.notReady() ?? (pipeline.ready ? undefined : 'first export round not done yet'),
    },
  );
  await startServer(server, config.listen);
  if (kube === undefined) {
    pipeline.start();
  } else {
    // Enriching before the informers listed would report known pods as bare addresses; the
    // batches wait on the collectors meanwhile.
    kube.whenSynced().then(
      () => pipeline.start(),
      (err: unknown) => log.error({ err }, 'Kubernetes cluster view failed to sync'),
    );
  }
  log.info(
    {
      collectors: config.collectors ?? 'kubernetes',
      name: config.podName,
      shard: config.totalShards > 1 ? `${config.shard} of ${config.totalShards}` : undefined,
      cluster: config.clusterName,
      interval: config.exportInterval,
      httpSink: config.httpSinkUrl !== undefined,
    },
    'exporter running',
  );

  if (!signal.aborted) await once(signal, 'abort');
  // Ordered shutdown: stop pulling, flush sinks (acknowledging what they took), close the socket.
  const deadline = Date.now() + config.shutdownTimeout;
  await pipeline.close(deadline);
  // Let go of every collector's lease, so that the next exporter (a rollout) pulls at once.
  const releasing = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
  await Promise.all(
    discovery
      .current()
      .map((c) =>
        c
          .release?.(releasing)
          .catch((err: unknown) => log.debug({ err, collector: c.id }, 'lease release failed')),
      ),
  );
  await kube?.close();
  await server.close(deadline);
  log.info('exporter stopped');
}
