// A real headless Chromium driven over the DevTools protocol (CDP), for the built-in view's tests
// and bench. CDP goes over --remote-debugging-pipe (fd 3 to the browser, fd 4 back, one JSON
// message per NUL-terminated chunk) rather than a WebSocket port: the browser may run inside a
// test network namespace, whose loopback the test process cannot reach, and no client library is
// needed. Every request the page makes, every console error and uncaught exception is recorded.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { Netns } from './netns.js';

type Params = Record<string, unknown>;
type Listener = (params: Params, sessionId: string | undefined) => void;

export interface Page {
  /** A CDP command in this page's session. */
  send<T = Params>(method: string, params?: Params): Promise<T>;
  /** Loads `url` and waits for its load event. */
  navigate(url: string): Promise<void>;
  /** Evaluates an expression in the page (promises awaited) and returns its JSON value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy and returns its value. */
  waitFor<T>(what: string, expression: string, timeoutMs?: number): Promise<T>;
  /** A PNG of the viewport, or of the whole page. */
  screenshot(opts?: { fullPage?: boolean }): Promise<Buffer>;
  /** URLs of every request the page made, in order (documents, fetches, anything). */
  readonly requests: string[];
  /** Console errors, uncaught exceptions and browser log errors (CSP violations among them). */
  readonly errors: string[];
}

export interface Chromium {
  newPage(viewport?: { width: number; height: number }): Promise<Page>;
  close(): Promise<void>;
}

/** Starts `chromium` headless (inside `ns` when given). */
export async function launchChromium(opts: { ns?: Netns } = {}): Promise<Chromium> {
  const dir = await mkdtemp(join(tmpdir(), 'podflow-chromium-'));
  const args = [
    '--headless=new',
    '--no-sandbox',
    '--remote-debugging-pipe',
    `--user-data-dir=${dir}`,
    '--disable-gpu',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--metrics-recording-only',
    '--password-store=basic',
    'about:blank',
  ];
  const [cmd, argv] = opts.ns
    ? ['ip', ['netns', 'exec', opts.ns.name, 'chromium', ...args]]
    : ['chromium', args];
  const child: ChildProcess = spawn(cmd, argv as string[], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const toBrowser = child.stdio[3] as Writable;
  const fromBrowser = child.stdio[4] as Readable;

  let nextId = 1;
  const pending = new Map<
    number,
    { resolve: (v: Params) => void; reject: (e: Error) => void; method: string }
  >();
  const listeners = new Map<string, Listener[]>();
  let buffered = '';
  fromBrowser.setEncoding('utf8');
  fromBrowser.on('data', (chunk: string) => {
    buffered += chunk;
    for (let end = buffered.indexOf('\0'); end >= 0; end = buffered.indexOf('\0')) {
      const msg = JSON.parse(buffered.slice(0, end)) as {
        id?: number;
        method?: string;
        params?: Params;
        result?: Params;
        error?: { message: string };
        sessionId?: string;
      };
      buffered = buffered.slice(end + 1);
      if (msg.id !== undefined) {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p?.resolve(msg.result ?? {});
      } else if (msg.method) {
        for (const fn of listeners.get(msg.method) ?? []) fn(msg.params ?? {}, msg.sessionId);
      }
    }
  });
  const exited = once(child, 'exit');
  void exited.then(() => {
    for (const p of pending.values()) p.reject(new Error(`chromium exited: ${stderr}`));
    pending.clear();
  });
  const send = <T = Params>(method: string, params: Params = {}, sessionId?: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: Params) => void, reject, method });
      toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  const on = (method: string, fn: Listener) => listeners.set(method, [...(listeners.get(method) ?? []), fn]);

  // The browser answers once it is up.
  await Promise.race([
    send('Browser.getVersion'),
    exited.then(() => {
      throw new Error(`chromium did not start: ${stderr}`);
    }),
  ]);

  return {
    async newPage(viewport = { width: 1280, height: 1000 }) {
      const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', {
        targetId,
        flatten: true,
      });
      const requests: string[] = [];
      const errors: string[] = [];
      const loaded: (() => void)[] = [];
      const mine =
        (fn: (p: Params) => void): Listener =>
        (p, s) => {
          if (s === sessionId) fn(p);
        };
      on(
        'Network.requestWillBeSent',
        mine((p) => requests.push((p.request as { url: string }).url)),
      );
      on(
        'Runtime.exceptionThrown',
        mine((p) =>
          errors.push(`exception: ${JSON.stringify((p.exceptionDetails as Params).exception ?? p)}`),
        ),
      );
      on(
        'Runtime.consoleAPICalled',
        mine((p) => {
          if (p.type === 'error') errors.push(`console: ${JSON.stringify(p.args)}`);
        }),
      );
      on(
        'Log.entryAdded',
        mine((p) => {
          const e = p.entry as { level: string; text: string; url?: string };
          if (e.level === 'error') errors.push(`log: ${e.text} ${e.url ?? ''}`);
        }),
      );
      on(
        'Page.loadEventFired',
        mine(() => {
          for (const fn of loaded.splice(0)) fn();
        }),
      );
      const page: Page = {
        requests,
        errors,
        send: (method, params) => send(method, params, sessionId),
        async navigate(url) {
          const done = new Promise<void>((resolve) => loaded.push(resolve));
          const r = await page.send<{ errorText?: string }>('Page.navigate', { url });
          if (r.errorText) throw new Error(`navigating to ${url}: ${r.errorText}`);
          await done;
        },
        async evaluate<T>(expression: string): Promise<T> {
          const r = await page.send<{ result: { value?: unknown }; exceptionDetails?: { text: string } }>(
            'Runtime.evaluate',
            { expression, returnByValue: true, awaitPromise: true },
          );
          if (r.exceptionDetails) throw new Error(`${expression}: ${JSON.stringify(r.exceptionDetails)}`);
          return r.result.value as T;
        },
        async waitFor<T>(what: string, expression: string, timeoutMs = 15_000): Promise<T> {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const v = await page.evaluate<T>(expression);
            if (v) return v;
            if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        },
        async screenshot(opts = {}) {
          const { data } = await page.send<{ data: string }>('Page.captureScreenshot', {
            format: 'png',
            captureBeyondViewport: opts.fullPage === true,
          });
          return Buffer.from(data, 'base64');
        },
      };
      await Promise.all([
        page.send('Page.enable'),
        page.send('Network.enable'),
        page.send('Runtime.enable'),
        page.send('Log.enable'),
        page.send('Emulation.setDeviceMetricsOverride', { ...viewport, deviceScaleFactor: 1, mobile: false }),
      ]);
      return page;
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        await send('Browser.close').catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
