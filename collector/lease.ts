// One exporter at a time per collector. A pull takes (or renews) the lease in the name of the
// exporter that sent it; an ack is valid only with the id of the lease it was pulled under. Another
// exporter is refused until the lease lapses, and once it has taken over, an ack of the old holder
// (whose batches the new holder may not have pushed yet) changes nothing. Two exporters that both
// believe they own this collector — a rollout, a reshard, a second replica — so never both deliver
// the same batches.

import { randomBytes } from 'node:crypto';
import { type Clock, systemClock } from '../shared/clock.js';

export interface LeaseConfig {
  /** Shortest and longest lease an exporter may ask for, ms. */
  minMs: number;
  maxMs: number;
}

export const DEFAULT_LEASE_CONFIG: LeaseConfig = { minMs: 5_000, maxMs: 600_000 };

export interface LeaseGrant {
  ok: true;
  id: string;
  holder: string;
  /** How long the lease lasts from now, ms. */
  ttlMs: number;
}

export interface LeaseRefusal {
  ok: false;
  holder: string;
  /** Until the holder's lease lapses, ms (0: it has, but an ack must name the current lease). */
  lapsesInMs: number;
}

interface Held {
  id: string;
  holder: string;
  expires: number;
}

export class Lease {
  private held: Held | undefined;

  constructor(
    private readonly config: LeaseConfig = DEFAULT_LEASE_CONFIG,
    private readonly clock: Clock = systemClock,
  ) {}

  /** A pull by `holder` asking for `ttlMs`: granted (taken or renewed) or refused. */
  take(holder: string, ttlMs: number): LeaseGrant | LeaseRefusal {
    const now = this.clock.now();
    const ttl = Math.min(this.config.maxMs, Math.max(this.config.minMs, ttlMs));
    const h = this.held;
    if (h !== undefined && h.holder !== holder && now < h.expires) {
      return { ok: false, holder: h.holder, lapsesInMs: h.expires - now };
    }
    if (h === undefined || h.holder !== holder) {
      // A new holder, or the old one came back after another took over and let go: a new id, so
      // that no ack made under an earlier lease is taken for this one.
      this.held = { id: randomBytes(12).toString('hex'), holder, expires: now + ttl };
    } else {
      h.expires = Math.max(h.expires, now + ttl);
    }
    const held = this.held as Held;
    return { ok: true, id: held.id, holder, ttlMs: held.expires - now };
  }

  /**
   * An ack under lease `id`: valid while that lease is the current one (even just lapsed: nobody
   * else took the collector meanwhile, so nothing was pulled under another lease), and it renews it.
   */
  renew(id: string, ttlMs?: number): LeaseGrant | LeaseRefusal {
    const now = this.clock.now();
    const h = this.held;
    if (h === undefined || h.id !== id) {
      return h === undefined
        ? { ok: false, holder: '', lapsesInMs: 0 }
        : { ok: false, holder: h.holder, lapsesInMs: Math.max(0, h.expires - now) };
    }
    if (ttlMs !== undefined) {
      h.expires = Math.max(h.expires, now + Math.min(this.config.maxMs, Math.max(this.config.minMs, ttlMs)));
    }
    return { ok: true, id: h.id, holder: h.holder, ttlMs: h.expires - now };
  }

  /** The holder lets go (exporter shutdown): the next exporter need not wait for the lapse. */
  release(id: string): boolean {
    if (this.held?.id !== id) return false;
    this.held = undefined;
    return true;
  }

  /** The current holder and its remaining time, for /metrics and logs. */
  current(): { holder: string; remainingMs: number } | undefined {
    const h = this.held;
    if (h === undefined) return undefined;
    return { holder: h.holder, remainingMs: Math.max(0, h.expires - this.clock.now()) };
  }
}
