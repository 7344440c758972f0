// Wiring of `podflow standalone`: the collecting half (source → reduce → loop → backlog) and the
// exporting half (pull → enrich → Prometheus + HTTP sinks → ack) in one process, joined by an
// in-process client over the backlog, with one /metrics carrying flow counters and both halves'
// self-metrics. Without Kubernetes the local endpoints are this host's addresses and src labels
// describe the node itself.
import { once } from 'node:events';
import { startupDestinations } from '../exporter/destinations.js';
import { InProcessCollectorClient } from '../exporter/in-process.js';
import { createKubernetes, type Kubernetes } from '../exporter/kubernetes.js';
import { createExportGraph } from '../exporter/pipeline.js';
import { viewRouter } from '../exporter/view.js';
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import { createRegistry, HttpServer } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import { loadTokenFile } from '../shared/token.js';
import { createCollectorGraph, startServer } from './collector.js';

export async function run(config: Config, log: Logger, signal: AbortSignal): Promise<void> {
  const destinations = startupDestinations(config.destinationsFile);
  // Standalone has no pull API: the token file only guards /metrics (with --metrics-auth).
  const tokens = loadTokenFile(config, log);
  const registry = createRegistry();
  const collector = await createCollectorGraph(config, log.child({ half: 'collector' }), registry);
  const kube: Kubernetes | undefined = await createKubernetes(config, { log, registry });
  // The in-process client is made once the collector has started: `--source auto` chooses then.
  let client: InProcessCollectorClient | undefined;
  let graph: ReturnType<typeof createExportGraph>;
  try {
    graph = createExportGraph(config, {
      discovery: { current: () => (client ? [client] : []) },
      cluster: kube?.cluster,
      registry,
      log: log.child({ half: 'exporter' }),
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
      notReady: () =>
        collector.notReady() ??
        kube?.notReady() ??
        (pipeline.ready ? undefined : 'first export round not done yet'),
    },
  );
  // Bind first: a taken or wrong address stops start-up before the source touches the host.
  try {
    await startServer(server, config.listen);
    await collector.start();
    const { checkpoint } = collector;
    client = new InProcessCollectorClient(
      collector.backlog,
      { node: config.nodeName, source: collector.source.name },
      // With --state-dir: pull boundaries and acks on disk before the pipeline goes on.
      checkpoint && (() => checkpoint.request()),
    );
  } catch (err) {
    await collector.close().catch(() => undefined);
    await kube?.close().catch(() => undefined);
    await server.close().catch(() => undefined);
    throw err;
  }
  pipeline.start();
  log.info(
    {
      listen: config.listen,
      exportInterval: config.exportInterval,
      httpSink: config.httpSinkUrl !== undefined,
    },
    'standalone running',
  );

  if (!signal.aborted) await once(signal, 'abort');
  // Ordered shutdown: stop reading, then flush the sinks (acknowledging what they took), then stop
  // serving /metrics last so a final scrape can still see the counters.
  // The final round exports the last read, so the HTTP sink gets every byte counted.
  const deadline = Date.now() + config.shutdownTimeout;
  await collector.loop.close({ finalTick: true });
  await pipeline.close(deadline, { finalRound: true });
  await collector.close();
  await kube?.close();
  await server.close(deadline);
  log.info('standalone stopped');
}
