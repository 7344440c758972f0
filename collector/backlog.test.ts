import { describe, expect, it } from 'vitest';
import type { Flow, FlowBatch } from '../shared/flow.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { flow as base } from '../test/fixtures/flows.js';
import { Backlog, MAX_CURSORS } from './backlog.js';
import { FlowColumns } from './flow-columns.js';

const flow = (src: string, dst: string, tx: number, rx = 0, proto = 6): Flow =>
  base({ src, dst, proto, txBytes: tx, rxBytes: rx, txPackets: tx > 0 ? 1 : 0, rxPackets: rx > 0 ? 1 : 0 });

const bytes = (batches: FlowBatch[]) =>
  batches.reduce((n, b) => n + b.flows.reduce((m, f) => m + f.txBytes + f.rxBytes, 0), 0);

describe('Backlog', () => {
  it('numbers batches from 1, keeps them until acknowledged, and skips empty ticks', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'boot-a' });
    expect(b.append(0, 5, [flow('10.0.0.1', '10.0.0.2', 100)])).toBe(1);
    expect(b.append(5, 10, [])).toBe(0);
    expect(b.append(10, 15, [flow('10.0.0.1', '10.0.0.3', 7)])).toBe(2);
    expect(b.pull().map((x) => x.seq)).toEqual([1, 2]);
    // Not acknowledged: a second pull (after a failed one) delivers the same batches again.
    expect(b.pull().map((x) => x.seq)).toEqual([1, 2]);
    expect(b.ack('boot-a', 1)).toEqual({ ok: true, dropped: 1 });
    expect(b.pull().map((x) => x.seq)).toEqual([2]);
    expect(b.ack('boot-a', 2)).toEqual({ ok: true, dropped: 1 });
    expect(b.pull()).toEqual([]);
    expect(b.stats()).toEqual({ batches: 0, flows: 0, merges: 0, droppedFlows: 0, droppedBytes: 0 });
  });

  it('reports its pending pull boundaries (the last pull included) and the acknowledged seq', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'boot-a' });
    expect(b.pendingBoundaries()).toEqual([]);
    expect(b.acked).toBe(0);
    b.append(0, 5, [flow('10.0.0.1', '10.0.0.2', 1)]);
    b.append(5, 10, [flow('10.0.0.1', '10.0.0.2', 2)]);
    b.pull();
    expect(b.pendingBoundaries()).toEqual([2]);
    b.append(10, 15, [flow('10.0.0.1', '10.0.0.2', 4)]);
    b.pull(1); // a smaller pull: its boundary goes below the first one
    expect(b.pendingBoundaries()).toEqual([1, 2]);
    b.pull();
    expect(b.pendingBoundaries()).toEqual([1, 2, 3]);
    const copy = b.pendingBoundaries();
    copy.push(99);
    expect(b.pendingBoundaries()).toEqual([1, 2, 3]);
    b.ack('boot-a', 2);
    expect(b.pendingBoundaries()).toEqual([3]);
    expect(b.acked).toBe(2);
    b.ack('boot-a', 1); // a late, lower ack does not move it back
    expect(b.acked).toBe(2);
  });

  it('refuses an ack with a foreign boot id or a seq never issued, and keeps the batches', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'boot-a' });
    b.append(0, 5, [flow('10.0.0.1', '10.0.0.2', 100)]);
    const foreign = b.ack('boot-b', 1);
    expect(foreign.ok).toBe(false);
    expect(!foreign.ok && foreign.reason).toMatch(/boot id boot-b is not this collector's/);
    const ahead = b.ack('boot-a', 9);
    expect(!ahead.ok && ahead.reason).toMatch(/seq 9 was never issued/);
    expect(b.pull().map((x) => x.seq)).toEqual([1]);
  });

  it('draws a random boot id per instance', () => {
    const a = new Backlog({ backlogMaxFlows: 1000 });
    const c = new Backlog({ backlogMaxFlows: 1000 });
    expect(a.bootId).toMatch(/^[0-9a-f]{16}$/);
    expect(a.bootId).not.toBe(c.bootId);
  });

  it('limits a pull to max flows in whole batches, at least one', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 });
    b.append(0, 1, [flow('a', 'x', 1), flow('a', 'y', 1), flow('a', 'z', 1)]);
    b.append(1, 2, [flow('a', 'x', 1)]);
    b.append(2, 3, [flow('a', 'x', 1)]);
    expect(b.pull(1).map((x) => x.seq)).toEqual([1]);
    expect(b.pull(4).map((x) => x.seq)).toEqual([1, 2]);
    expect(b.pull(100).map((x) => x.seq)).toEqual([1, 2, 3]);
  });

  it('merges the oldest batches when over the bound, keeping every byte', () => {
    const b = new Backlog({ backlogMaxFlows: 5 });
    b.append(0, 5, [flow('a', 'x', 10, 1), flow('a', 'y', 20)]);
    b.append(5, 10, [flow('a', 'x', 30, 2), flow('a', 'z', 40)]);
    expect(b.stats().merges).toBe(0);
    // 6 flows > 5: the two oldest batches fold into one with seq 2 and 3 distinct flows.
    b.append(10, 15, [flow('a', 'x', 50), flow('a', 'x', 60, 0, 17)]);
    const pending = b.pull();
    expect(pending.map((x) => [x.seq, x.from, x.to, x.flows.length])).toEqual([
      [2, 0, 10, 3],
      [3, 10, 15, 2],
    ]);
    const merged = pending[0]!.flows.find((f) => f.dst === 'x')!;
    expect(merged).toEqual({
      src: 'a',
      dst: 'x',
      proto: 6,
      txBytes: 40,
      rxBytes: 3,
      txPackets: 2,
      rxPackets: 2,
    });
    expect(bytes(pending)).toBe(10 + 1 + 20 + 30 + 2 + 40 + 50 + 60);
    expect(b.stats()).toMatchObject({ batches: 2, flows: 5, merges: 1, droppedFlows: 0 });
    // The ack of the merged batch's seq covers everything in it.
    expect(b.ack(b.bootId, 2)).toEqual({ ok: true, dropped: 1 });
    expect(b.stats().flows).toBe(2);
  });

  it('keeps folding into one merged batch across many ticks without losing bytes', () => {
    const b = new Backlog({ backlogMaxFlows: 10 });
    let sent = 0;
    for (let t = 0; t < 50; t++) {
      const flows = [flow('a', `p${t % 6}`, t + 1), flow('a', `q${t % 3}`, 2 * t)];
      sent += 3 * t + 1;
      b.append(t, t + 1, flows);
    }
    const pending = b.pull();
    expect(bytes(pending)).toBe(sent);
    expect(b.stats().flows).toBeLessThanOrEqual(10);
    expect(b.stats().droppedFlows).toBe(0);
    expect(pending[0]!.from).toBe(0);
    expect(pending[pending.length - 1]!.to).toBe(50);
  });

  it('drops the oldest, smallest flows only when one merged batch exceeds the bound, and counts them', () => {
    const b = new Backlog({ backlogMaxFlows: 3 });
    b.append(0, 1, [flow('a', 'w', 1), flow('a', 'x', 2)]);
    b.append(1, 2, [flow('a', 'y', 300), flow('a', 'z', 400)]);
    // 4 distinct flows cannot merge below 4: the smallest one (1 byte) is dropped.
    const pending = b.pull();
    expect(pending).toHaveLength(1);
    expect(pending[0]!.flows.map((f) => f.dst).sort()).toEqual(['x', 'y', 'z']);
    expect(b.stats()).toMatchObject({ flows: 3, droppedFlows: 1, droppedBytes: 1 });
  });

  it('never merges batches delivered by the latest pull with newer ones', () => {
    const b = new Backlog({ backlogMaxFlows: 4 });
    b.append(0, 1, [flow('a', 'x', 1), flow('a', 'y', 1)]);
    const delivered = b.pull();
    const snapshot = structuredClone(delivered);
    b.append(1, 2, [flow('a', 'x', 10)]);
    b.append(2, 3, [flow('a', 'x', 100)]);
    b.append(3, 4, [flow('a', 'x', 1000)]);
    // 5 flows > 4: batches 2 and 3 merge (both undelivered), batch 1 stays as delivered.
    expect(b.pull(Number.POSITIVE_INFINITY).map((x) => [x.seq, x.flows.length])).toEqual([
      [1, 2],
      [3, 1],
      [4, 1],
    ]);
    // What was handed out is never changed afterwards.
    expect(delivered).toEqual(snapshot);
    // The exporter acknowledges what it got from the first pull: exactly batch 1.
    expect(b.ack(b.bootId, 1)).toEqual({ ok: true, dropped: 1 });
    expect(bytes(b.pull())).toBe(1110);
  });

  it('never merges across the end of any pull not yet acknowledged (sinks may stand at any of them)', () => {
    const b = new Backlog({ backlogMaxFlows: 3 });
    const pulled = () => b.pull().map((x) => [x.seq, x.flows[0]!.txBytes]);
    b.append(0, 1, [flow('a', 'x', 1)]);
    b.pull(); // a sink may now have everything ≤ 1
    b.append(1, 2, [flow('a', 'x', 2)]);
    b.pull(); // … or ≤ 2
    b.append(2, 3, [flow('a', 'x', 4)]);
    b.append(3, 4, [flow('a', 'x', 8)]);
    // 4 flows > 3: 3 and 4 were never handed out apart, so they merge; 1 | 2 | 4 stay apart.
    expect(pulled()).toEqual([
      [1, 1],
      [2, 2],
      [4, 12],
    ]);
    b.append(4, 5, [flow('a', 'x', 16)]);
    // Over again, and every neighbour pair is split by a pull end (1, 2, 4): the oldest flow goes.
    expect(b.stats()).toMatchObject({ batches: 3, merges: 1, droppedFlows: 1, droppedBytes: 1 });
    expect(b.ack(b.bootId, 2)).toEqual({ ok: true, dropped: 1 });
    b.append(5, 6, [flow('a', 'x', 32)]);
    expect(pulled()).toEqual([
      [4, 12],
      [5, 16],
      [6, 32],
    ]);
    // Pull ends left: 4 and 6. Over the bound, 5 and 6 may merge; 4 stays apart.
    b.append(6, 7, [flow('a', 'x', 64)]);
    expect(pulled()).toEqual([
      [4, 12],
      [6, 48],
      [7, 64],
    ]);
    expect(b.stats()).toMatchObject({ merges: 2, droppedFlows: 1 });
  });

  it('does not mutate batches handed out when a merge folds into them later', () => {
    const b = new Backlog({ backlogMaxFlows: 2 });
    b.append(0, 1, [flow('a', 'x', 1)]);
    b.append(1, 2, [flow('a', 'x', 2)]);
    b.append(2, 3, [flow('a', 'x', 4)]); // merges 1+2
    const first = b.pull();
    expect(first.map((x) => x.seq)).toEqual([2, 3]);
    const snapshot = structuredClone(first);
    // Both are in flight; the next tick merges them into a new object, not into the delivered one.
    b.append(3, 4, [flow('a', 'x', 8)]);
    expect(first).toEqual(snapshot);
    const second = b.pull();
    expect(second.map((x) => [x.seq, x.flows.length])).toEqual([
      [3, 1],
      [4, 1],
    ]);
    expect(bytes(second)).toBe(1 + 2 + 4 + 8);
    expect(b.stats()).toMatchObject({ merges: 2, droppedFlows: 0 });
  });

  it('keeps columns as they are and hands out fresh Flow objects at every pull', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'boot-a' });
    const first = [flow('a', 'x', 10, 1), flow('a', 'y', 20, 0, 17)];
    expect(b.append(0, 5, FlowColumns.from(first))).toBe(1);
    expect(b.append(5, 10, new FlowColumns(0))).toBe(0);
    expect(b.stats()).toMatchObject({ batches: 1, flows: 2 });
    const p1 = b.pull();
    expect(p1).toEqual([{ seq: 1, from: 0, to: 5, flows: first }]);
    // A consumer's change to what it was handed never reaches the next pull.
    p1[0]!.flows[0]!.txBytes = 0;
    expect(b.pull()[0]!.flows).toEqual(first);
    expect(b.ack('boot-a', 1)).toEqual({ ok: true, dropped: 1 });
    expect(b.stats()).toMatchObject({ batches: 0, flows: 0 });
  });

  it('merges and drops column batches like object batches, keeping every byte it does not count as dropped', () => {
    const b = new Backlog({ backlogMaxFlows: 3 });
    b.append(0, 1, FlowColumns.from([flow('a', 'x', 10, 1), flow('a', 'y', 20)]));
    b.append(1, 2, FlowColumns.from([flow('a', 'x', 30, 2)]));
    b.append(2, 3, [flow('a', 'z', 40)]);
    // 4 flows > 3: the two column batches fold into one (x summed), objects from then on.
    let pending = b.pull();
    expect(pending.map((x) => [x.seq, x.from, x.to, x.flows.length])).toEqual([
      [2, 0, 2, 2],
      [3, 2, 3, 1],
    ]);
    expect(pending[0]!.flows.find((f) => f.dst === 'x')).toMatchObject({ txBytes: 40, rxBytes: 3 });
    expect(bytes(pending)).toBe(10 + 1 + 20 + 30 + 2 + 40);
    expect(b.ack(b.bootId, 3).ok).toBe(true);
    // One column batch alone over the bound: its smallest flows are dropped and counted.
    b.append(
      3,
      4,
      FlowColumns.from([flow('a', 'p', 5), flow('a', 'q', 1), flow('a', 'r', 7), flow('a', 's', 9)]),
    );
    pending = b.pull();
    expect(pending[0]!.flows.map((f) => f.dst).sort()).toEqual(['p', 'r', 's']);
    expect(b.stats()).toMatchObject({ flows: 3, droppedFlows: 1, droppedBytes: 1 });
  });

  it('drained() resolves when everything is acknowledged, or false at the deadline', async () => {
    const clock = new ManualClock();
    const b = new Backlog({ backlogMaxFlows: 1000 }, {}, clock);
    expect(await b.drained(clock.now() + 1000)).toBe(true);
    b.append(0, 1, [
      { src: '10.0.0.1', dst: '10.0.0.2', proto: 6, txBytes: 1, rxBytes: 0, txPackets: 1, rxPackets: 0 },
    ]);
    const t0 = clock.now();
    expect(await clock.run(b.drained(t0 + 150, 10))).toBe(false);
    expect(clock.now() - t0).toBeGreaterThanOrEqual(140);
    const [batch] = b.pull();
    clock.setTimeout(() => b.ack(b.bootId, batch!.seq), 30);
    expect(await clock.run(b.drained(clock.now() + 5000, 10))).toBe(true);
  });
});

describe('Backlog holding new batches (--state-dir)', () => {
  it('hands a batch out only once published, and never merges a held batch', () => {
    const b = new Backlog({ backlogMaxFlows: 1000, holdNew: true }, { bootId: 'boot-h' });
    const many = (n: number, tx: number) =>
      Array.from({ length: n }, (_, i) => flow(`10.0.0.${i + 1}`, '10.9.0.1', tx));
    expect(b.append(0, 5, many(400, 1))).toBe(1);
    expect(b.pull()).toEqual([]);
    expect(b.ack('boot-h', 1)).toEqual({ ok: false, reason: 'seq 1 was never issued (last is 0)' });
    b.publish(1);
    expect(b.pull().map((x) => x.seq)).toEqual([1]);
    b.ack('boot-h', 1);
    b.append(5, 10, many(400, 2));
    b.publish(2);
    // Over the bound with the new batch held: the published ones stay apart until it is published.
    b.append(10, 15, many(400, 3));
    b.append(15, 20, many(400, 4));
    expect(b.stats()).toMatchObject({ batches: 3, merges: 0 });
    expect(b.snapshot(2).batches.map((x) => x.seq)).toEqual([2]);
    b.publish(4);
    expect(b.stats()).toMatchObject({ flows: 800, merges: 1 });
    expect(bytes(b.pull())).toBe(400 * (2 + 3 + 4));
  });

  it('keeps per-sink cursors beyond the ack, drops them once the ack passes, refuses seqs never issued', () => {
    const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'b' });
    for (let i = 0; i < 4; i++) b.append(i, i + 1, [flow('10.2.0.1', '8.8.8.8', 1)]);
    expect(b.ack('b', 1, { prometheus: 3, http: 1 })).toMatchObject({ ok: true, dropped: 1 });
    expect(b.sinkCursors()).toEqual({ prometheus: 3 });
    // A cursor only moves forward.
    expect(b.ack('b', 1, { prometheus: 2 })).toMatchObject({ ok: true });
    expect(b.sinkCursors()).toEqual({ prometheus: 3 });
    expect(b.ack('b', 1, { http: 9 })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/never issued/),
    });
    expect(b.sinkCursors()).toEqual({ prometheus: 3 });
    const many = Object.fromEntries(Array.from({ length: MAX_CURSORS + 1 }, (_, i) => [`s${i}`, 2]));
    expect(b.ack('b', 1, many)).toMatchObject({ ok: false });
    expect(b.ack('b', 3, { http: 3 })).toMatchObject({ ok: true, dropped: 2 });
    expect(b.sinkCursors()).toEqual({});
  });
});
