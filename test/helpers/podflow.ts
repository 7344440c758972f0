// A real `podflow` process (cmd/podflow.ts through tsx, so no build is needed) for end-to-end
// tests: started from the project root with a bare environment, its stderr kept, waited for on its
// --listen port, and stopped by a signal that is only sent to a process still running.
import { type ChildProcess, spawn } from 'node:child_process';
import { waitFor } from './wait.js';

const ROOT = new URL('../..', import.meta.url).pathname;

export interface PodflowOptions {
  /**
   * Added to the environment, which otherwise holds only PATH and HOME=/nonexistent: no HOME, so
   * that a ~/.kube/config of the machine does not turn on Kubernetes discovery.
   */
  env?: Record<string, string>;
  /** What becomes of stderr: kept in `log` ('pipe'), passed to the test's own stderr, or dropped. @default 'pipe' */
  stderr?: 'pipe' | 'inherit' | 'ignore';
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Podflow {
  readonly proc: ChildProcess;
  /** The port of its --listen flag (0 without one). */
  readonly port: number;
  /** http://127.0.0.1:port */
  readonly base: string;
  /** Its stderr so far (with stderr 'pipe'). */
  readonly log: string;
  /** Whether it has exited. */
  readonly exited: boolean;
  /** Settles when it has exited and its stderr is read to the end. */
  readonly exit: Promise<Exit>;
  /** Waits until `path` answers 2xx; fails at once, with its log, should the process exit first. */
  ready(path?: '/healthz' | '/readyz', timeoutMs?: number): Promise<void>;
  /** Sends `signal` unless it has exited already, and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<Exit>;
}

/** Starts `podflow ...args` (e.g. `['exporter', '--listen', '127.0.0.1:9000', ...]`). */
export function startPodflow(args: string[], opts: PodflowOptions = {}): Podflow {
  const listen = args[args.indexOf('--listen') + 1];
  const port = args.includes('--listen') ? Number(listen?.slice(listen.lastIndexOf(':') + 1)) : 0;
  const proc = spawn(process.execPath, ['--import', 'tsx', 'cmd/podflow.ts', ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: '/nonexistent', ...opts.env },
    stdio: ['ignore', 'ignore', opts.stderr ?? 'pipe'],
  });
  let log = '';
  proc.stderr?.on('data', (c: Buffer) => {
    log += c.toString();
  });
  let exited = false;
  proc.once('exit', () => {
    exited = true;
  });
  // 'close' comes after 'exit' once stderr is drained: the log is complete when `exit` settles.
  const exit = new Promise<Exit>((resolve) =>
    proc.once('close', (code, signal) => resolve({ code, signal })),
  );
  const base = `http://127.0.0.1:${port}`;
  return {
    proc,
    port,
    base,
    get log() {
      return log;
    },
    get exited() {
      return exited;
    },
    exit,
    async ready(path = '/healthz', timeoutMs = 20_000) {
      if (!port) throw new Error(`podflow ${args[0]} has no --listen port to wait on`);
      // An exit ends the wait at once (false), rather than when the time runs out.
      const up = await waitFor(
        `podflow ${args[0]} on ${base}${path}`,
        async () => {
          if (exited) return false;
          return (await fetch(`${base}${path}`).catch(() => undefined))?.ok ? true : undefined;
        },
        timeoutMs,
      );
      if (!up) throw new Error(`podflow ${args[0]} exited: ${log}`);
    },
    async stop(signal = 'SIGTERM') {
      if (!exited) proc.kill(signal);
      return exit;
    },
  };
}
