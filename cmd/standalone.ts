// Wiring of `podflow standalone`: the collecting half (source → reduce → loop → backlog) and the
// exporting half (pull → enrich → Prometheus + HTTP sinks → ack) in one process, joined by an
// in-process client over the backlog, with one /metrics carrying flow counters and both halves'
// self-metrics. Kubernetes access is resolved once; with it, one pod informer serves both the
// exporter's cluster view and the collector's pods of this node. Without it the local endpoints
// are this host's addresses and src labels describe the node itself.
import { createLocalIndex } from '../collector/select-index.js';
import { InProcessCollectorClient } from '../exporter/in-process.js';
import { createKubernetes } from '../exporter/kubernetes.js';
import type { Config } from '../shared/config.js';
import { createRegistry } from '../shared/http.js';
import { resolveKubeConfig } from '../shared/kube.js';
import type { Logger } from '../shared/log.js';
import { loadTokenFile } from '../shared/token.js';
import { createCollectorGraph } from './collector.js';
import { createExportSide } from './exporter.js';
import { startServer, untilStopped } from './lifecycle.js';

export async function run(config: Config, log: Logger, signal: AbortSignal): Promise<void> {
  // Standalone has no pull API: the token file only guards /metrics (with --metrics-auth).
  const tokens = loadTokenFile(config, log);
  const registry = createRegistry();
  const access = resolveKubeConfig({ kubeconfig: config.kubeconfig, env: process.env });
  const kube = access && createKubernetes(config, { access, log });
  // This host's addresses, and the pods of --node-name out of the exporter's pod informer.
  const local = createLocalIndex(config, {
    log: log.child({ half: 'collector' }),
    pods: kube?.podsOfNode(config.nodeName),
    withHost: true,
    podsFrom: access?.source,
  });
  const collector = createCollectorGraph(config, log.child({ half: 'collector' }), registry, { local });
  // The in-process client is made once the collector has started: `--source auto` chooses then.
  let client: InProcessCollectorClient | undefined;
  const { pipeline, server } = createExportSide(config, {
    discovery: { current: () => (client ? [client] : []) },
    cluster: kube?.cluster,
    registry,
    log: log.child({ half: 'exporter' }),
    tokens,
    notReady: () => collector.notReady() ?? kube?.notReady(),
  });
  // Bind first: a taken or wrong address stops start-up before the source touches the host.
  try {
    await startServer(server, config.listen);
    kube?.start();
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

  // Ordered shutdown: stop reading, then flush the sinks (acknowledging what they took), then stop
  // serving /metrics last so a final scrape can still see the counters.
  // The final round exports the last read, so the HTTP sink gets every byte counted.
  const deadline = await untilStopped(signal, config.shutdownTimeout);
  await collector.loop.close({ finalTick: true });
  await pipeline.close(deadline, { finalRound: true });
  await collector.close();
  await kube?.close();
  await server.close(deadline);
  log.info('standalone stopped');
}
