// Wiring of `podflow collector`: source → reduce (+ DNS names) → loop → backlog → HTTP (pull API, /metrics).
import type { Registry } from 'prom-client';
import { Backlog } from '../collector/backlog.js';
import { Checkpoint } from '../collector/checkpoint.js';
import { DnsLearner } from '../collector/dns/learner.js';
import { CollectorLoop } from '../collector/loop.js';
import { type CollectorMetrics, createCollectorMetrics } from '../collector/metrics.js';
import { createReducer } from '../collector/reduce.js';
import { type LocalIndex, nodeLocalIndex } from '../collector/select-index.js';
import { createSource, type SelectedSource } from '../collector/select-source.js';
import { createCollectorServer } from '../collector/server.js';
import { StateStore } from '../collector/state.js';
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import { createRegistry } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import { loadTokenFile } from '../shared/token.js';
import { startServer, untilStopped } from './lifecycle.js';

/** The collecting half, shared by `podflow collector` and `podflow standalone`. */
export interface CollectorGraph {
  source: SelectedSource;
  local: LocalIndex;
  backlog: Backlog;
  metrics: CollectorMetrics;
  loop: CollectorLoop;
  /** `--state-dir`: writes the state (after ticks, for pulls, at shutdown). */
  checkpoint: Checkpoint | undefined;
  /** Why the collecting half is not ready, or undefined. */
  notReady(): string | undefined;
  /** Whether the backlog is the one to serve (after a `--state-dir` restore): pulls wait until then. */
  pullable(): boolean;
  /** Opens the source (permission checks) and starts the index and the loop. */
  start(): Promise<void>;
  /** Stops the loop, then closes the source and the index. */
  close(): Promise<void>;
}

/** What the wiring takes from outside besides the configuration. */
export interface CollectorDeps {
  /** The conntrack source (the benchmark wraps the real one). @default the one `--source` selects */
  source?: SelectedSource;
}

/**
 * Builds the collecting half over the local endpoints the command chose (`local`: this node's pods,
 * this host, or both). No I/O until start().
 */
export function createCollectorGraph(
  config: Config,
  log: Logger,
  registry: Registry,
  deps: CollectorDeps & { local: LocalIndex },
): CollectorGraph {
  const { local } = deps;
  const source = deps.source ?? createSource(config, log);
  const store = config.stateDir === undefined ? undefined : new StateStore(config.stateDir);
  // With a state dir a tick's batch is handed out only once the state holding it is on disk.
  const backlog = new Backlog({ backlogMaxFlows: config.backlogMaxFlows, holdNew: store !== undefined });
  const metrics = createCollectorMetrics(registry, {
    backlog: () => backlog.stats(),
    source: () => ({ lostEvents: source.lostEvents }),
  });
  const dns = config.dnsNames
    ? new DnsLearner({ graceMs: config.dnsGrace }, { log: log.child({ stage: 'dns' }), registry })
    : undefined;
  const reducer = createReducer(
    { groupPublicIps: config.groupPublicIps },
    { podIndex: local.index, log: log.child({ stage: 'reduce' }), names: dns?.cache },
  );
  const checkpoint =
    store === undefined
      ? undefined
      : new Checkpoint({
          store,
          backlog,
          tracker: () => reducer.snapshot(),
          trackerVersion: () => reducer.trackerVersion,
          owner: () => ({ node: config.nodeName, source: source.name }),
          log: log.child({ stage: 'state' }),
          metrics,
        });
  let restored = false;
  const loop = new CollectorLoop(
    {
      interval: config.interval,
      holdFirstTick: () => (restored ? local.notReady() : undefined),
      emptyTableHint: () =>
        source.name === 'netfilter'
          ? 'the conntrack table is empty: no netfilter rule in this network namespace needs connection tracking, or podflow is not in the host network namespace (hostNetwork), or pod traffic goes through Cilium (--source cilium)'
          : 'the Cilium conntrack maps are empty: is the Cilium agent running on this node?',
    },
    {
      tick: () => reducer.tick(source),
      backlog,
      commit: checkpoint && (() => checkpoint.afterTick()),
      metrics,
      log: log.child({ stage: 'loop' }),
    },
  );
  /** Opens the state dir (or says why not, naming the option) and continues from its state if usable. */
  const restore = async (): Promise<void> => {
    if (store === undefined || checkpoint === undefined) return;
    const owner = { node: config.nodeName, source: source.name };
    const got = await store.load(owner);
    if (got.kind === 'refused') {
      log.warn(
        { file: store.file, reason: got.reason },
        '--state-dir: state file not used: starting with a baseline (traffic since the previous process is not reported)',
      );
    } else if (got.kind === 'ok') {
      const { tracker, backlog: b } = got.state;
      backlog.restore(b);
      reducer.restore(tracker);
      restored = true;
      log.info(
        {
          file: store.file,
          bootId: b.bootId,
          seq: b.lastSeq,
          batches: b.batches.length,
          connections: tracker.n,
          ageMs: Date.now() - got.state.savedAt,
        },
        '--state-dir: continuing where the previous process left off',
      );
    }
    checkpoint.mark();
  };
  let started = false;
  let serving = false;
  return {
    source,
    local,
    backlog,
    metrics,
    loop,
    checkpoint,
    notReady: () => loop.notReady() ?? local.notReady(),
    pullable: () => serving,
    async start() {
      if (store !== undefined) {
        try {
          await store.open();
        } catch (err) {
          throw new StartupError(
            `--state-dir ${store.dir}: cannot create or write the directory (${(err as Error).message})`,
            { cause: err },
          );
        }
      }
      await source.start();
      started = true;
      // Before the first read: names of lookups made from now on are there when their connections are counted.
      dns?.start();
      await restore();
      serving = true;
      await local.start();
      loop.start();
      log.info(
        {
          source: source.name,
          interval: config.interval,
          index: local.kind,
          bootId: backlog.bootId,
          stateDir: config.stateDir,
        },
        'collecting',
      );
    },
    async close() {
      await loop.close();
      // Last: what the final read counted and what exporters acknowledged until now.
      if (started) await checkpoint?.request();
      if (started) await source.close();
      dns?.close();
      await local.close();
    },
  };
}

export async function run(
  config: Config,
  log: Logger,
  signal: AbortSignal,
  deps: CollectorDeps = {},
): Promise<void> {
  const tokens = loadTokenFile(config, log);
  const registry = createRegistry();
  // Local endpoints: the pods of this node (own small watch), or this host without an API server.
  const local = await nodeLocalIndex(config, { log });
  const graph = createCollectorGraph(config, log, registry, { ...deps, local });
  const server = createCollectorServer(
    { listen: config.listen },
    {
      backlog: graph.backlog,
      node: config.nodeName,
      source: graph.source,
      metrics: graph.metrics,
      log: log.child({ stage: 'http' }),
      registry,
      notReady: graph.notReady,
      tokens,
      metricsAuth: config.metricsAuth,
      boundariesDurable: graph.checkpoint && (() => graph.checkpoint!.boundariesDurable()),
      pullable: graph.pullable,
    },
  );
  // Bind first: a taken or wrong address stops start-up before the source touches the host
  // (nf_conntrack_acct, event subscription).
  try {
    await startServer(server, config.listen);
    await graph.start();
  } catch (err) {
    await graph.close().catch(() => undefined);
    await server.close().catch(() => undefined);
    throw err;
  }
  if (tokens === undefined) {
    log.warn(
      { listen: config.listen },
      'the pull API is open: anyone who reaches this address can read and acknowledge (erase) the flows; set --pull-token-file',
    );
  }
  // Ordered shutdown. Read conntrack one last time, then keep serving pulls until an exporter has
  // acknowledged everything (or the deadline): without --state-dir the backlog lives in memory, and
  // what is not delivered before exit is lost; with it, the final read is on disk before the wait
  // and the state is written once more last (graph.close), so the wait only saves the next process
  // some work (and covers a collector that does not come back).
  const deadline = await untilStopped(signal, config.shutdownTimeout);
  await graph.loop.close({ finalTick: true });
  const pending = graph.backlog.stats();
  if (pending.batches > 0) {
    log.info(
      { flows: pending.flows, waitMs: config.shutdownTimeout },
      'waiting for an exporter to take the backlog (a second signal exits now)',
    );
    if (await graph.backlog.drained(deadline)) log.info('backlog delivered');
    else
      log.warn(
        { flows: graph.backlog.stats().flows },
        'shutdown deadline reached before the backlog was delivered',
      );
  }
  await server.close(deadline);
  await graph.close();
  log.info('collector stopped');
}
