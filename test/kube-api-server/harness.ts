// Helpers for tests that drive the real client against the test API server: a started server with a
// kubeconfig on disk, a logger whose lines the test can read, and polling without fixed sleeps.
import { rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import type { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { resolveKubeConfig } from '../../shared/kube.js';
import { type KubeTarget, resolveKubeTarget } from '../../shared/kube-access.js';
import type { Logger } from '../../shared/log.js';
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
export { ManualClock } from '../fixtures/clock.js';
