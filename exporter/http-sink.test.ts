// The HTTP record sink against a real receiver on 127.0.0.1, with a clock the test moves: every retry
// wait (backoff, Retry-After, its cap) and the shutdown deadline are checked to the millisecond, and
// none of them is slept.
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/log.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { enriched } from '../test/fixtures/flows.js';
import { HttpReceiver } from '../test/helpers/http-receiver.js';
import { HttpSink, type HttpSinkConfig } from './http-sink.js';
import { ExporterMetrics } from './metrics.js';

let rx: HttpReceiver;
let clock: ManualClock;
let registry: Registry;
const open: HttpSink[] = [];

beforeEach(async () => {
  rx = await HttpReceiver.start();
  // On a whole second: Retry-After dates have no finer resolution.
  clock = new ManualClock(Date.parse('2026-06-01T12:00:00Z'));
  registry = new Registry();
});
afterEach(async () => {
  for (const s of open.splice(0)) await clock.run(s.close(clock.now()));
  await rx.close();
});

function sink(over: Partial<HttpSinkConfig> = {}): HttpSink {
  const s = new HttpSink(
    {
      httpSinkUrl: rx.url,
      httpSinkGzip: false,
      httpSinkHeaders: {},
      httpSinkTimeout: 5000,
      httpSinkMaxRetries: 5,
      httpSinkQueueMax: 1000,
      httpSinkBatchMax: 1000,
      retryBaseMs: 1000,
      retryMaxMs: 60_000,
      ...over,
    },
    { log: silentLogger, metrics: new ExporterMetrics(registry) },
    clock,
  );
  open.push(s);
  return s;
}

/**
 * What `p` (a push, a close) gave, as text, without failing the test on a rejection: `state()` now,
 * `settled` once it is known (real I/O may still be under way when the clock has done its part).
 */
function outcome(p: Promise<void>): { state: () => string; settled: Promise<string> } {
  let state = 'pending';
  const settled = p.then(
    () => {
      state = 'resolved';
      return state;
    },
    (err: Error) => {
      state = `rejected: ${err.message}`;
      return state;
    },
  );
  return { state: () => state, settled };
}

/** Waits for the answer to request `n` and the retry timer it sets; returns that timer's delay. */
async function retryAfterRequest(n: number): Promise<number> {
  await rx.waitFor(n);
  await clock.waitForTimers(1);
  const [delay] = clock.delays();
  return delay;
}

const requests = async (code: string) => {
  const m = await registry.getSingleMetric('podflow_exporter_http_sink_requests_total')!.get();
  return m.values.find((v) => v.labels.code === code)?.value ?? 0;
};

describe('HttpSink retries on the clock', () => {
  it('waits exactly what Retry-After (seconds) says, then sends the same request again', async () => {
    rx.respond({ status: 503, headers: { 'retry-after': '45' } });
    const s = sink();
    const push = outcome(s.push([enriched({ txBytes: 7 })], { id: 'push-1' }));
    expect(await retryAfterRequest(1)).toBe(45_000);
    await clock.elapse(44_999);
    expect(rx.requests).toHaveLength(1);
    expect(push.state()).toBe('pending');
    await clock.elapse(1);
    expect(await push.settled).toBe('resolved');
    expect(rx.requests.map((r) => r.headers['idempotency-key'])).toEqual(['push-1', 'push-1']);
    expect(rx.requests[1].body.equals(rx.requests[0].body)).toBe(true);
    expect(rx.acceptedRecords()).toMatchObject([{ tx_bytes: 7 }]);
    expect(await requests('503')).toBe(1);
    expect(await requests('200')).toBe(1);
  });

  it('Retry-After as an HTTP date counts from the clock; a wait beyond retry-max-ms is cut to it', async () => {
    const at = new Date(clock.now() + 30_000).toUTCString();
    rx.respond(
      { status: 429, headers: { 'retry-after': at } },
      { status: 503, headers: { 'retry-after': '3600' } },
    );
    const s = sink({ retryMaxMs: 45_000 });
    const push = outcome(s.push([enriched()]));
    expect(await retryAfterRequest(1)).toBe(30_000);
    await clock.elapse(30_000);
    expect(await retryAfterRequest(2)).toBe(45_000);
    await clock.elapse(45_000);
    expect(await push.settled).toBe('resolved');
    expect(rx.requests.map((r) => r.answer)).toEqual([429, 503, 200]);
  });

  it('backs off exponentially with jitter: each wait in [ceiling/2, ceiling], the ceiling doubling up to the cap', async () => {
    rx.otherwise({ status: 500 });
    const s = sink({ retryBaseMs: 1000, retryMaxMs: 8000, httpSinkMaxRetries: 6 });
    const push = outcome(s.push([enriched()]));
    const waits: number[] = [];
    for (let n = 1; n <= 6; n++) {
      const d = await retryAfterRequest(n);
      waits.push(d);
      await clock.elapse(d);
    }
    const result = await push.settled;
    const ceilings = [1000, 2000, 4000, 8000, 8000, 8000];
    waits.forEach((w, i) => {
      expect(w).toBeGreaterThanOrEqual(ceilings[i] / 2);
      expect(w).toBeLessThanOrEqual(ceilings[i]);
    });
    // Out of retries: the push fails with what the receiver answered, the records stay unacknowledged.
    expect(result).toMatch(/^rejected: http sink: .* answered 500/);
    expect(rx.requests).toHaveLength(7);
  });

  it('a cut connection is retried like a 5xx, under the same key', async () => {
    rx.respond({ close: true });
    const s = sink();
    const push = outcome(s.push([enriched()], { id: 'k' }));
    const d = await retryAfterRequest(1);
    expect(d).toBeGreaterThanOrEqual(500);
    expect(d).toBeLessThanOrEqual(1000);
    await clock.elapse(d);
    expect(await push.settled).toBe('resolved');
    expect(rx.requests.map((r) => [r.answer, r.headers['idempotency-key']])).toEqual([
      ['closed', 'k'],
      [200, 'k'],
    ]);
    expect(await requests('error')).toBe(1);
  });

  it('close() waits out a backoff only until its deadline, then gives the push up without sending again', async () => {
    rx.respond({ status: 503, headers: { 'retry-after': '60' } });
    const s = sink();
    const push = outcome(s.push([enriched()]));
    await retryAfterRequest(1);
    const closed = outcome(s.close(clock.now() + 10_000));
    await clock.elapse(9_999);
    expect(closed.state()).toBe('pending');
    await clock.elapse(1);
    expect(closed.state()).toBe('resolved');
    expect(push.state()).toBe('rejected: http sink: shutdown deadline reached');
    expect(s.queueSize).toBe(0);
    // The retry the backoff was waiting for never goes out.
    await clock.elapse(120_000);
    expect(rx.requests).toHaveLength(1);
    expect(clock.pending).toBe(0);
  });

  it('close() with nothing queued returns at once, without a timer left behind', async () => {
    const s = sink();
    await s.push([enriched()]);
    await s.close(clock.now() + 60_000);
    expect(clock.pending).toBe(0);
    await expect(s.push([enriched()])).rejects.toThrow('http sink: shutting down');
  });
});
