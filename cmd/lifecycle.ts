// What every command does alike around its wiring: bind its HTTP server (the usual failures said
// in one start-up line), then wait for the stop signal and give shutdown its deadline.
import { once } from 'node:events';
import type { ListenAddress } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import type { HttpServer } from '../shared/http.js';

/**
 * Starts the HTTP server, turning the usual bind failures into one clear start-up line. A bind
 * failure is a configuration problem (exit 2, like a bad option): the commands bind before anything
 * else starts, so nothing has been changed on the host when it happens.
 */
export async function startServer(server: HttpServer, listen: ListenAddress): Promise<void> {
  try {
    await server.start();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `--listen ${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
    const fail = (why: string) => new StartupError(`${where}: ${why}`, { cause: err, exitCode: 2 });
    if (code === 'EADDRINUSE') throw fail('address already in use');
    if (code === 'EACCES') throw fail('permission denied (ports below 1024 need root)');
    if (code === 'EADDRNOTAVAIL') throw fail('no such local address');
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NODATA' || code === 'EAI_FAIL') {
      throw fail(`cannot resolve host "${listen.host}"`);
    }
    throw fail((err as Error).message);
  }
}

/**
 * Waits for the stop signal (SIGTERM, SIGINT: cmd/podflow.ts), then returns the shutdown deadline,
 * `--shutdown-timeout` from now (ms since the epoch).
 */
export async function untilStopped(signal: AbortSignal, shutdownTimeout: number): Promise<number> {
  if (!signal.aborted) await once(signal, 'abort');
  return Date.now() + shutdownTimeout;
}
