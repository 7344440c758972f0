import { describe, expect, it } from 'vitest';
import { ManualClock } from '../test/fixtures/clock.js';
import { Lease } from './lease.js';

describe('Lease', () => {
  const make = () => {
    const clock = new ManualClock(1_000_000);
    const lease = new Lease({ minMs: 5000, maxMs: 600_000 }, clock);
    return { lease, advance: (ms: number) => clock.advance(ms) };
  };

  it('one holder at a time; another is refused, told who and for how long', () => {
    const { lease, advance } = make();
    const a = lease.take('exporter-a', 60_000);
    expect(a).toMatchObject({ ok: true, holder: 'exporter-a', ttlMs: 60_000 });
    advance(20_000);
    expect(lease.take('exporter-b', 60_000)).toEqual({ ok: false, holder: 'exporter-a', lapsesInMs: 40_000 });
    // The holder renews and keeps its id.
    const again = lease.take('exporter-a', 60_000);
    expect(again).toMatchObject({ ok: true, ttlMs: 60_000 });
    expect(again.ok && a.ok && again.id === a.id).toBe(true);
  });

  it('a lapsed lease is taken over under a new id; the old holder cannot ack any more', () => {
    const { lease, advance } = make();
    const a = lease.take('exporter-a', 10_000);
    if (!a.ok) throw new Error('not granted');
    advance(10_001);
    const b = lease.take('exporter-b', 10_000);
    if (!b.ok) throw new Error('not granted');
    expect(b.id).not.toBe(a.id);
    expect(lease.renew(a.id)).toMatchObject({ ok: false, holder: 'exporter-b' });
    expect(lease.renew(b.id)).toMatchObject({ ok: true });
    // A comes back while B holds: refused.
    expect(lease.take('exporter-a', 10_000)).toMatchObject({ ok: false, holder: 'exporter-b' });
  });

  it('an ack just after the lapse is still valid while nobody took over, and renews', () => {
    const { lease, advance } = make();
    const a = lease.take('exporter-a', 10_000);
    if (!a.ok) throw new Error('not granted');
    advance(15_000);
    expect(lease.renew(a.id, 10_000)).toMatchObject({ ok: true, ttlMs: 10_000 });
    expect(lease.take('exporter-b', 10_000)).toMatchObject({ ok: false, holder: 'exporter-a' });
  });

  it('release lets the next exporter in at once; a stale id releases nothing', () => {
    const { lease } = make();
    const a = lease.take('exporter-a', 60_000);
    if (!a.ok) throw new Error('not granted');
    expect(lease.release('nope')).toBe(false);
    expect(lease.release(a.id)).toBe(true);
    expect(lease.take('exporter-b', 60_000)).toMatchObject({ ok: true, holder: 'exporter-b' });
    expect(lease.renew(a.id)).toMatchObject({ ok: false });
  });

  it('clamps what an exporter asks for', () => {
    const { lease } = make();
    expect(lease.take('a', 1)).toMatchObject({ ttlMs: 5000 });
    lease.release((lease.take('a', 1) as { id: string }).id);
    expect(lease.take('b', 1e12)).toMatchObject({ ttlMs: 600_000 });
  });
});
