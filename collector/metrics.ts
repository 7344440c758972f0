// The collector's self-metrics, all `podflow_collector_*`, on an explicit registry. Values the
// collector already keeps (backlog size, totals of the source) are read at scrape time instead of
// being copied on every tick.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BacklogStats } from './backlog.js';

/** Totals a source keeps for itself (netfilter: events lost to ENOBUFS). */
export interface SourceCounters {
  lostEvents?: number;
}

export interface CollectorMetricsDeps {
  backlog: () => BacklogStats;
  source?: () => SourceCounters;
}

export interface CollectorMetrics {
  conntrackEntries: Gauge;
  entriesWithoutCounters: Gauge;
  trackedConnections: Gauge;
  readDuration: Histogram;
  parseErrors: Counter;
  ticks: Counter<'result'>;
  flowsReported: Counter;
  pulls: Counter;
  acks: Counter<'result'>;
  /** Pull bodies encoded: one per backlog state, shared by every pull of that state. */
  pullBodies: Counter;
  /** Pull-API requests turned away before any work: no token, another exporter's lease, too many at once. */
  refused: Counter<'reason'>;
  /** `--state-dir` writes, by result (ok, error). */
  stateWrites: Counter<'result'>;
  stateWriteDuration: Histogram;
  /** Size of the last state file written. */
  stateBytes: Gauge;
}

/** A counter whose value is a total kept elsewhere, read when Prometheus scrapes. */
function totalCounter(registry: Registry, name: string, help: string, read: () => number): Counter {
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

export function createCollectorMetrics(registry: Registry, deps: CollectorMetricsDeps): CollectorMetrics {
  const registers = [registry];
  new Gauge({
    name: 'podflow_collector_backlog_batches',
    help: 'Batches waiting for an exporter to acknowledge them',
    registers,
    collect() {
      this.set(deps.backlog().batches);
    },
  });
  new Gauge({
    name: 'podflow_collector_backlog_flows',
    help: 'Flows waiting for an exporter to acknowledge them',
    registers,
    collect() {
      this.set(deps.backlog().flows);
    },
  });
  totalCounter(
    registry,
    'podflow_collector_backlog_merges_total',
    'Batches folded into an older one because the backlog reached backlog-max-flows',
    () => deps.backlog().merges,
  );
  totalCounter(
    registry,
    'podflow_collector_dropped_flows_total',
    'Flows dropped because one merged batch alone exceeded backlog-max-flows',
    () => deps.backlog().droppedFlows,
  );
  totalCounter(
    registry,
    'podflow_collector_dropped_bytes_total',
    'Bytes (tx + rx) of the dropped flows',
    () => deps.backlog().droppedBytes,
  );
  totalCounter(
    registry,
    'podflow_collector_lost_events_total',
    'Conntrack destroy events the kernel dropped (socket buffer full): bytes of connections that ended between two reads may be missing',
    () => deps.source?.().lostEvents ?? 0,
  );
  const metrics: CollectorMetrics = {
    conntrackEntries: new Gauge({
      name: 'podflow_collector_conntrack_entries',
      help: 'Conntrack entries seen by the last read',
      registers,
    }),
    entriesWithoutCounters: new Gauge({
      name: 'podflow_collector_entries_without_counters',
      help: 'Entries of the last read without byte counters (nf_conntrack_acct was off when they were created): their traffic is not counted',
      registers,
    }),
    trackedConnections: new Gauge({
      name: 'podflow_collector_tracked_connections',
      help: 'Connections remembered between reads to compute deltas',
      registers,
    }),
    readDuration: new Histogram({
      name: 'podflow_collector_read_duration_seconds',
      help: 'Duration of one read + reduce tick',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    parseErrors: new Counter({
      name: 'podflow_collector_parse_errors_total',
      help: 'Conntrack messages or entries that could not be parsed (skipped)',
      registers,
    }),
    ticks: new Counter({
      name: 'podflow_collector_ticks_total',
      help: 'Read + reduce ticks, by result (ok, error)',
      labelNames: ['result'],
      registers,
    }),
    flowsReported: new Counter({
      name: 'podflow_collector_flows_total',
      help: 'Flows added to the backlog',
      registers,
    }),
    pulls: new Counter({
      name: 'podflow_collector_pulls_total',
      help: 'Pull requests served',
      registers,
    }),
    acks: new Counter({
      name: 'podflow_collector_acks_total',
      help: 'Acknowledgements received, by result (ok, conflict, invalid)',
      labelNames: ['result'],
      registers,
    }),
    pullBodies: new Counter({
      name: 'podflow_collector_pull_bodies_total',
      help: 'Pull bodies encoded: one per backlog state, shared by every pull of that state',
      registers,
    }),
    refused: new Counter({
      name: 'podflow_collector_pull_refused_total',
      help: 'Pull API requests refused, by reason (unauthorized, leased, busy)',
      labelNames: ['reason'],
      registers,
    }),
    stateWrites: new Counter({
      name: 'podflow_collector_state_writes_total',
      help: 'State files written to --state-dir, by result (ok, error)',
      labelNames: ['result'],
      registers,
    }),
    stateWriteDuration: new Histogram({
      name: 'podflow_collector_state_write_duration_seconds',
      help: 'Duration of one state write to --state-dir (encode, write, fsync, rename)',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    stateBytes: new Gauge({
      name: 'podflow_collector_state_bytes',
      help: 'Size of the last state file written to --state-dir',
      registers,
    }),
  };
  // Series that exist from the start read 0 instead of being absent until the first event.
  for (const result of ['ok', 'error']) metrics.ticks.inc({ result }, 0);
  for (const result of ['ok', 'conflict', 'invalid']) metrics.acks.inc({ result }, 0);
  for (const reason of ['unauthorized', 'leased', 'busy']) metrics.refused.inc({ reason }, 0);
  return metrics;
}
