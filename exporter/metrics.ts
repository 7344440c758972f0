// The exporter's own metrics (`podflow_exporter_*`), listed in one place as data. Registered on the
// explicit Registry the process serves on /metrics; nothing is registered at import time.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export class ExporterMetrics {
  readonly pulls: Counter<'collector'>;
  readonly pullErrors: Counter<'collector' | 'reason'>;
  readonly pullDuration: Histogram<string>;
  readonly duplicateBatches: Counter<'collector'>;
  readonly flows: Counter<string>;
  readonly cycleDuration: Histogram<string>;
  readonly collectors: Gauge<string>;
  readonly sinkPushes: Counter<'sink'>;
  readonly sinkFailures: Counter<'sink'>;
  readonly acks: Counter<'result'>;
  readonly droppedRecords: Counter<'sink' | 'reason'>;
  readonly queueRecords: Gauge<'sink'>;
  readonly httpRequests: Counter<'code' | 'sink'>;
  readonly series: Gauge<string>;
  readonly seriesOverflow: Counter<string>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.pulls = new Counter({
      name: 'podflow_exporter_pulls_total',
      help: 'Pulls that returned a valid response, by collector',
      labelNames: ['collector'],
      registers,
    });
    this.pullErrors = new Counter({
      name: 'podflow_exporter_pull_errors_total',
      help: 'Failed pulls and acks by collector and reason (timeout, network, http, oversized, decode, invalid, version, boot, unauthorized, leased, busy)',
      labelNames: ['collector', 'reason'],
      registers,
    });
    this.pullDuration = new Histogram({
      name: 'podflow_exporter_pull_duration_seconds',
      help: 'Time of one pull: request, transfer, decode and validation',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.duplicateBatches = new Counter({
      name: 'podflow_exporter_duplicate_batches_total',
      help: 'Batches offered again after a lost ack and skipped because they were already delivered',
      labelNames: ['collector'],
      registers,
    });
    this.flows = new Counter({
      name: 'podflow_exporter_flows_total',
      help: 'Flows pulled and enriched',
      registers,
    });
    this.cycleDuration = new Histogram({
      name: 'podflow_exporter_cycle_duration_seconds',
      help: 'Time of one export round: pull all, enrich, push to every sink, ack',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.collectors = new Gauge({
      name: 'podflow_exporter_collectors',
      help: 'Collectors known in the last round',
      registers,
    });
    this.sinkPushes = new Counter({
      name: 'podflow_exporter_sink_pushes_total',
      help: 'Pushes a sink accepted',
      labelNames: ['sink'],
      registers,
    });
    this.sinkFailures = new Counter({
      name: 'podflow_exporter_sink_failures_total',
      help: 'Pushes a sink refused (the batches are offered again next round)',
      labelNames: ['sink'],
      registers,
    });
    this.acks = new Counter({
      name: 'podflow_exporter_acks_total',
      help: 'Acknowledgements sent to collectors, by result (ok, error)',
      labelNames: ['result'],
      registers,
    });
    this.droppedRecords = new Counter({
      name: 'podflow_exporter_dropped_records_total',
      help: 'Records a sink did not take: queue_full (refused for now, offered again), rejected (receiver answered 400 or 422: dropped), too_large (a lone record answered 413: dropped)',
      labelNames: ['sink', 'reason'],
      registers,
    });
    this.queueRecords = new Gauge({
      name: 'podflow_exporter_queue_records',
      help: 'Records waiting in a sink queue',
      labelNames: ['sink'],
      registers,
    });
    this.httpRequests = new Counter({
      name: 'podflow_exporter_http_sink_requests_total',
      help: 'Requests of the HTTP-based sinks by sink and response status (or "error" for network errors and timeouts)',
      labelNames: ['code', 'sink'],
      registers,
    });
    this.series = new Gauge({
      name: 'podflow_exporter_flow_series',
      help: 'Series per flow counter currently exported',
      registers,
    });
    this.seriesOverflow = new Counter({
      name: 'podflow_exporter_flow_series_overflow_total',
      help: 'Flows summed into the _overflow_ series because the flow series limit was reached',
      registers,
    });
  }
}
