// A real collector HTTP server (collector/server.ts: the pull API, acks, /metrics) on loopback, over
// a backlog the test fills by hand instead of a conntrack source: for exporter tests that need
// collectors with known flows.
import { Registry } from 'prom-client';
import { Backlog } from '../../collector/backlog.js';
import type { Lease } from '../../collector/lease.js';
import { createCollectorMetrics } from '../../collector/metrics.js';
import { createCollectorServer } from '../../collector/server.js';
import { silentLogger } from '../../shared/log.js';
import type { TokenFile } from '../../shared/token.js';

export interface TestCollector {
  backlog: Backlog;
  url: string;
  close(): Promise<void>;
}

export async function startTestCollector(
  node: string,
  opts: {
    bootId?: string;
    backlogMaxFlows?: number;
    /** `--pull-token-file` of the collector. */
    tokens?: TokenFile;
    /** `--metrics-auth`. */
    metricsAuth?: boolean;
    lease?: Lease;
  } = {},
): Promise<TestCollector> {
  const backlog = new Backlog(
    { backlogMaxFlows: opts.backlogMaxFlows ?? 1_000_000 },
    { bootId: opts.bootId },
  );
  const registry = new Registry();
  const server = createCollectorServer(
    { listen: { host: '127.0.0.1', port: 0 } },
    {
      backlog,
      node,
      source: 'netfilter' as const,
      metrics: createCollectorMetrics(registry, { backlog: () => backlog.stats() }),
      log: silentLogger,
      registry,
      notReady: () => undefined,
      tokens: opts.tokens,
      metricsAuth: opts.metricsAuth,
      lease: opts.lease,
    },
  );
  const { port } = await server.start();
  return { backlog, url: `http://127.0.0.1:${port}`, close: () => server.close() };
}
