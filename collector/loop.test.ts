import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { ManualClock, settle } from '../test/fixtures/clock.js';
import { flow as base } from '../test/fixtures/flows.js';
import { Backlog } from './backlog.js';
import { FlowColumns } from './flow-columns.js';
import { CollectorLoop, type TickResult } from './loop.js';
import { createCollectorMetrics } from './metrics.js';

const flow = (tx: number): Flow => base({ proto: 17, txBytes: tx });

function setup(tick: () => Promise<TickResult>) {
  const clock = new ManualClock(1_000_000);
  const backlog = new Backlog({ backlogMaxFlows: 1000 });
  const registry = new Registry();
  const metrics = createCollectorMetrics(registry, { backlog: () => backlog.stats() });
  const loop = new CollectorLoop({ interval: 5000 }, { tick, backlog, metrics, log: silentLogger }, clock);
  const value = async (name: string, labels?: Record<string, string>) => {
    const m = await registry.getSingleMetric(name)!.get();
    const v = m.values.find((x) => !labels || Object.entries(labels).every(([k, l]) => x.labels[k] === l));
    return v?.value;
  };
  return { clock, backlog, loop, value };
}

describe('CollectorLoop', () => {
  it("appends the tick's columns when it has them, without asking for flow objects", async () => {
    const { clock, backlog, loop, value } = setup(async () => ({
      columns: FlowColumns.from([flow(5), flow(6)]),
      get flows(): Flow[] {
        throw new Error('flows must not be read when columns are given');
      },
      entries: 2,
      parseErrors: 0,
    }));
    loop.start();
    await clock.elapse(0);
    expect(backlog.pull().map((b) => b.flows.map((f) => f.txBytes))).toEqual([[5, 6]]);
    expect(await value('podflow_collector_flows_total')).toBe(2);
    expect(await value('podflow_collector_ticks_total', { result: 'ok' })).toBe(1);
    await loop.close();
  });

  it('ticks at once, then every interval, appending a batch that covers the time since the last', async () => {
    let n = 0;
    const { clock, backlog, loop, value } = setup(async () => {
      n++;
      return {
        flows: [flow(n)],
        entries: 10 * n,
        parseErrors: n === 2 ? 3 : 0,
        noCounters: n,
        tracked: 7 * n,
      };
    });
    expect(loop.notReady()).toBe('first conntrack read not done yet');
    loop.start();
    await clock.elapse(0);
    expect(n).toBe(1);
    expect(loop.notReady()).toBeUndefined();
    await clock.elapse(4999);
    expect(n).toBe(1);
    await clock.elapse(1);
    expect(n).toBe(2);
    await clock.elapse(5000);
    expect(n).toBe(3);
    expect(
      backlog.pull().map((b) => [b.seq, b.from - 1_000_000, b.to - 1_000_000, b.flows[0]!.txBytes]),
    ).toEqual([
      [1, 0, 0, 1],
      [2, 0, 5000, 2],
      [3, 5000, 10_000, 3],
    ]);
    expect(await value('podflow_collector_conntrack_entries')).toBe(30);
    expect(await value('podflow_collector_parse_errors_total')).toBe(3);
    expect(await value('podflow_collector_entries_without_counters')).toBe(3);
    expect(await value('podflow_collector_tracked_connections')).toBe(21);
    expect(await value('podflow_collector_ticks_total', { result: 'ok' })).toBe(3);
    expect(await value('podflow_collector_flows_total')).toBe(3);
    await loop.close();
  });

  it('close({ finalTick }) reads once more so the last interval reaches the backlog', async () => {
    let n = 0;
    const { clock, backlog, loop } = setup(async () => {
      n++;
      return { flows: [flow(n)], entries: 1, parseErrors: 0 };
    });
    loop.start();
    await clock.elapse(7000);
    expect(n).toBe(2);
    await loop.close({ finalTick: true });
    expect(n).toBe(3);
    expect(backlog.pull().map((b) => [b.from - 1_000_000, b.to - 1_000_000, b.flows[0]!.txBytes])).toEqual([
      [0, 0, 1],
      [0, 5000, 2],
      [5000, 7000, 3],
    ]);
    // A second close does not read again, and nothing is scheduled any more.
    await loop.close({ finalTick: true });
    await clock.elapse(20_000);
    expect(n).toBe(3);
  });

  it('close({ finalTick }) does not read when no tick ever succeeded', async () => {
    let n = 0;
    const { clock, loop } = setup(async () => {
      n++;
      throw new Error('EPERM');
    });
    loop.start();
    await clock.elapse(0);
    await loop.close({ finalTick: true });
    expect(n).toBe(1);
  });

  it('warns once with the hint when the first good read finds an empty table', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
    const clock = new ManualClock(1_000_000);
    const backlog = new Backlog({ backlogMaxFlows: 1000 });
    const metrics = createCollectorMetrics(new Registry(), { backlog: () => backlog.stats() });
    let n = 0;
    const tick = async () => {
      n++;
      if (n === 1) throw new Error('EINTR');
      return { flows: [], entries: 0, parseErrors: 0 };
    };
    const loop = new CollectorLoop(
      { interval: 1000, emptyTableHint: () => 'table is empty: check hostNetwork' },
      { tick, backlog, metrics, log },
      clock,
    );
    loop.start();
    await clock.elapse(3000);
    await loop.close();
    expect(n).toBe(4);
    expect(lines.filter((l) => l.includes('table is empty: check hostNetwork'))).toHaveLength(1);
  });

  it('logs a failed tick, goes on, and lets the next good batch cover the gap', async () => {
    let n = 0;
    const { clock, backlog, loop, value } = setup(async () => {
      n++;
      if (n === 2 || n === 3) throw new Error('netlink: ENOBUFS');
      return { flows: [flow(n)], entries: 1, parseErrors: 0 };
    });
    loop.start();
    await clock.elapse(15_000);
    expect(n).toBe(4);
    expect(await value('podflow_collector_ticks_total', { result: 'error' })).toBe(2);
    expect(await value('podflow_collector_ticks_total', { result: 'ok' })).toBe(2);
    expect(backlog.pull().map((b) => [b.from - 1_000_000, b.to - 1_000_000])).toEqual([
      [0, 0],
      [0, 15_000],
    ]);
    await loop.close();
  });

  it('is not ready while every tick fails, and says why', async () => {
    const { clock, loop } = setup(async () => {
      throw new Error('permission denied');
    });
    loop.start();
    await clock.elapse(0);
    expect(loop.notReady()).toBe('no conntrack read succeeded yet (last: permission denied)');
    await loop.close();
  });

  it('never overlaps ticks: a slow tick delays the next one', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let n = 0;
    const { clock, loop } = setup(async () => {
      n++;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      // Takes 12 s of clock time: longer than two intervals.
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 12_000));
      inFlight--;
      return { flows: [], entries: 0, parseErrors: 0 };
    });
    loop.start();
    await clock.elapse(30_000);
    expect(maxInFlight).toBe(1);
    // Starts at 0, 12 000 and 24 000: back to back, never two at once.
    expect(n).toBe(3);
    // Closing during the third tick waits for it, then starts nothing more.
    const closing = loop.close();
    await clock.elapse(12_000);
    await closing;
    expect(n).toBe(3);
  });

  it('close() stops scheduling and waits for the tick in progress', async () => {
    let n = 0;
    let release: () => void = () => {};
    const { clock, loop } = setup(async () => {
      n++;
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return { flows: [flow(1)], entries: 1, parseErrors: 0 };
    });
    loop.start();
    await clock.elapse(0);
    expect(n).toBe(1);
    let closed = false;
    const closing = loop.close().then(() => {
      closed = true;
    });
    await settle();
    expect(closed).toBe(false);
    release();
    await closing;
    expect(closed).toBe(true);
    expect(clock.pending).toBe(0);
    await clock.elapse(60_000);
    expect(n).toBe(1);
  });
});

describe('CollectorLoop first tick after a restore', () => {
  const result = (tx: number): TickResult => ({ flows: [flow(tx)], entries: 1, parseErrors: 0 });

  it('waits while holdFirstTick says why, then reads; at most firstTickWaitMs', async () => {
    for (const [listedAfter, firstAt] of [
      [1_200, 1_200],
      [60_000, 2_000],
    ] as const) {
      const clock = new ManualClock(1_000_000);
      const start = clock.t;
      const backlog = new Backlog({ backlogMaxFlows: 1000 });
      const metrics = createCollectorMetrics(new Registry(), { backlog: () => backlog.stats() });
      const ticks: number[] = [];
      const loop = new CollectorLoop(
        {
          interval: 5000,
          holdFirstTick: () => (clock.t - start < listedAfter ? 'pods not listed yet' : undefined),
          firstTickWaitMs: 2_000,
        },
        {
          tick: async () => {
            ticks.push(clock.t - start);
            return result(1);
          },
          backlog,
          metrics,
          log: silentLogger,
        },
        clock,
      );
      loop.start();
      await clock.elapse(10_000);
      expect(ticks[0]).toBe(firstAt);
      // Later ticks do not wait again.
      expect(ticks[1]).toBe(firstAt + 5_000);
      await loop.close();
    }
  });

  it('awaits commit after each good tick before the next may start', async () => {
    const clock = new ManualClock(1_000_000);
    const backlog = new Backlog({ backlogMaxFlows: 1000, holdNew: true });
    const metrics = createCollectorMetrics(new Registry(), { backlog: () => backlog.stats() });
    let release: (() => void) | undefined;
    let ticks = 0;
    const loop = new CollectorLoop(
      { interval: 1000 },
      {
        tick: async () => {
          ticks++;
          return result(5);
        },
        backlog,
        commit: () =>
          new Promise<void>((r) => {
            release = () => {
              backlog.publish(backlog.last);
              r();
            };
          }),
        metrics,
        log: silentLogger,
      },
      clock,
    );
    loop.start();
    await clock.elapse(5_000);
    expect(ticks).toBe(1);
    expect(backlog.pull()).toEqual([]);
    release!();
    await clock.elapse(0);
    expect(backlog.pull().map((b) => b.seq)).toEqual([1]);
    await clock.elapse(1_000);
    expect(ticks).toBe(2);
    release!();
    await loop.close();
  });
});
