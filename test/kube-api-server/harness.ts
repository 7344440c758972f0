// Helpers for tests that drive the real client against the test API server: a started server with a
// kubeconfig on disk, a logger whose lines the test can read, and polling without fixed sleeps.
import { rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { KubePods, type KubePodsConfig, watchNodePods } from '../../collector/kube-pods.js';
import { resolveKubeConfig } from '../../shared/kube.js';
import { type KubeTarget, resolveKubeTarget } from '../../shared/kube-access.js';
import { type Logger, silentLogger } from '../../shared/log.js';
import { KubeApiServer, type KubeApiServerOptions } from './server.js';

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export function captureLogger(): { log: Logger; lines: LogLine[]; text(): string } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as LogLine);
      cb();
    },
  });
  const log = pino({ level: 'debug', base: undefined }, stream);
  return { log, lines, text: () => lines.map((l) => l.msg).join('\n') };
}

export interface Harness {
  server: KubeApiServer;
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  /** The same kubeconfig as the collector reads it (its small client, no client-node). */
  target: KubeTarget;
  close(): Promise<void>;
}

/** A listening test API server and its kubeconfig resolved the way podflow does (--kubeconfig). */
export async function startHarness(options: KubeApiServerOptions = {}): Promise<Harness> {
  const server = new KubeApiServer(options);
  await server.listen();
  const kubeconfigPath = server.writeKubeconfig();
  const access = resolveKubeConfig({ kubeconfig: kubeconfigPath });
  const target = resolveKubeTarget({ kubeconfig: kubeconfigPath });
  if (!access || !target) throw new Error('kubeconfig did not resolve');
  return {
    server,
    kubeconfigPath,
    kubeConfig: access.kubeConfig,
    target,
    async close() {
      await server.stop();
      rmSync(kubeconfigPath, { force: true });
    },
  };
}

/** Poll `cond` every 20 ms until it holds; fail with `what` after `timeoutMs`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A clock the test moves by hand. */
import { ManualClock } from '../fixtures/clock.js';

export { ManualClock };

/**
 * The collector's PodIndex of node n1 (collector/kube-pods.ts) on its own watch against the
 * harness's API server, started and synced; `seen()` waits until it has applied every change made
 * so far on the server.
 */
export async function startKubePods(
  h: Harness,
  over: Partial<KubePodsConfig> = {},
  deps: { clock?: ManualClock; log?: Logger; beforeStart?: (pods: KubePods) => void } = {},
): Promise<{ pods: KubePods; clock: ManualClock; seen: () => Promise<void> }> {
  const clock = deps.clock ?? new ManualClock();
  const config = {
    nodeName: 'n1',
    excludeNamespaces: [],
    hostNetwork: false,
    podRetention: 120_000,
    ...over,
  };
  const watch = watchNodePods(config, { target: h.target, log: deps.log ?? silentLogger });
  const pods = new KubePods(config, watch, clock);
  deps.beforeStart?.(pods);
  pods.start();
  await pods.whenSynced();
  const seen = () =>
    until(() => watch.resourceVersion() >= Number(h.server.resourceVersion), 'change applied');
  return { pods, clock, seen };
}
