// Wiring of `podflow exporter`: collectors (static --collectors, or discovered through Kubernetes)
// → pipeline (pull → enrich → Prometheus + HTTP sinks → ack) → /metrics, /healthz, /readyz.
import type { Registry } from 'prom-client';
import { startupDestinations } from '../exporter/destinations.js';
import { tuneExporterHeap } from '../exporter/heap.js';
import { createKubernetes } from '../exporter/kubernetes.js';
import { type CollectorDiscovery, createExportGraph, staticDiscovery } from '../exporter/pipeline.js';
import { httpCollectorClients } from '../exporter/pull.js';
import { shardFilter } from '../exporter/shard.js';
import { viewRouter } from '../exporter/view.js';
import type { ClusterLookup } from '../shared/cluster.js';
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import { createRegistry, HttpServer } from '../shared/http.js';
import { resolveKubeConfig } from '../shared/kube.js';
import type { Logger } from '../shared/log.js';
import { loadTokenFile, type TokenFile } from '../shared/token.js';
import { startServer, untilStopped } from './lifecycle.js';

/** What the exporting half is built on, besides the configuration. */
export interface ExportSideDeps {
  discovery: CollectorDiscovery;
  cluster: ClusterLookup | undefined;
  registry: Registry;
  log: Logger;
  /** `--metrics-auth`: the tokens /metrics wants. */
  tokens: TokenFile | undefined;
  /** Why the rest of the process is not ready (before the pipeline's own reason), or undefined. */
  notReady: () => string | undefined;
}

/**
 * The exporting half, shared by `podflow exporter` and `podflow standalone`: the export graph (pull →
 * enrich → sinks → ack) and the HTTP server in front of it (/metrics, /readyz, the view). No I/O.
 */
export function createExportSide(
  config: Config,
  deps: ExportSideDeps,
): { pipeline: ReturnType<typeof createExportGraph>['pipeline']; server: HttpServer } {
  const { registry, log } = deps;
  tuneExporterHeap();
  let graph: ReturnType<typeof createExportGraph>;
  try {
    graph = createExportGraph(config, {
      discovery: deps.discovery,
      cluster: deps.cluster,
      registry,
      log,
      env: process.env,
      destinations: startupDestinations(config.destinationsFile),
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
      auth: config.metricsAuth ? deps.tokens : undefined,
      router: graph.view && viewRouter({ ring: graph.view, log: log.child({ stage: 'view' }) }),
      notReady: () => deps.notReady() ?? (pipeline.ready ? undefined : 'first export round not done yet'),
    },
  );
  return { pipeline, server };
}

export async function run(config: Config, log: Logger, signal: AbortSignal): Promise<void> {
  const tokens = loadTokenFile(config, log);
  const clientFor = httpCollectorClients(config, { token: tokens });
  const registry = createRegistry();
  const staticCollectors = config.collectors !== undefined && config.collectors.length > 0;
  const access = resolveKubeConfig({ kubeconfig: config.kubeconfig, env: process.env });
  // Collectors: the --collectors list, else those Kubernetes discovers.
  const kube =
    access &&
    createKubernetes(config, {
      access,
      log,
      discover: staticCollectors
        ? undefined
        : {
            namespace: config.namespace,
            collectorSelector: config.collectorSelector,
            collectorPort: config.collectorPort,
            clientFor,
            mine: shardFilter(config),
          },
    });

  let discovery: CollectorDiscovery;
  if (staticCollectors) {
    // Static mode shards by URL: the node behind a URL is not known before it answers.
    const mine = shardFilter(config);
    discovery = staticDiscovery(config.collectors!.filter(mine).map(clientFor));
  } else if (kube?.discovery !== undefined) {
    discovery = kube.discovery;
  } else {
    throw new StartupError(
      '--collectors: no collector URLs given and no Kubernetes API server to discover them (give --collectors or --kubeconfig)',
      { exitCode: 2 },
    );
  }

  const { pipeline, server } = createExportSide(config, {
    discovery,
    cluster: kube?.cluster,
    registry,
    log,
    tokens,
    notReady: () => kube?.notReady(),
  });
  kube?.start();
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

  // Ordered shutdown: stop pulling, flush sinks (acknowledging what they took), close the socket.
  const deadline = await untilStopped(signal, config.shutdownTimeout);
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
