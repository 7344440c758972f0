// The PodIndex of standalone mode without Kubernetes: the local endpoints are this host's own
// addresses (of the network namespace podflow runs in), re-read periodically so that addresses added
// later (DHCP, a new interface) are picked up.
//
// Loopback (127.0.0.0/8, ::1) is excluded: a connection over loopback has the host at both ends, so
// it is neither traffic to a peer nor traffic on the network, and reporting it would mostly show
// local chatter (databases, agents) as the host talking to itself. Link-local addresses are
// included: they are real interface addresses and their traffic crosses a link.

import { networkInterfaces } from 'node:os';
import { type Cancel, type Clock, every, systemClock } from '../shared/clock.js';
import type { Logger } from '../shared/log.js';
import type { PodIndex } from './pod-index.js';

export interface HostIndexConfig {
  /** How often the addresses are re-read. @default 30000 */
  refreshMs?: number;
}

export interface HostIndexDeps {
  /** Source of the interface list (os.networkInterfaces by default; tests inject one). */
  interfaces?: () => NodeJS.Dict<{ address: string; internal: boolean }[]>;
  log?: Logger;
  /** When to re-read. @default systemClock */
  clock?: Clock;
}

export class HostIndex implements PodIndex {
  private addrs = new Set<string>();
  private cancel: Cancel | undefined;
  private readonly refreshMs: number;
  private readonly interfaces: NonNullable<HostIndexDeps['interfaces']>;

  constructor(
    config: HostIndexConfig,
    private readonly deps: HostIndexDeps = {},
  ) {
    this.refreshMs = config.refreshMs ?? 30_000;
    this.interfaces = deps.interfaces ?? networkInterfaces;
  }

  /** Reads the addresses now and then every `refreshMs`. */
  start(): void {
    this.refresh();
    this.cancel ??= every(this.deps.clock ?? systemClock, this.refreshMs, () => this.refresh());
  }

  close(): void {
    this.cancel?.();
    this.cancel = undefined;
  }

  isLocal(ip: string): boolean {
    return this.addrs.has(ip);
  }

  /** The current set (for logs and the documentation's troubleshooting). */
  addresses(): string[] {
    return [...this.addrs];
  }

  refresh(): void {
    try {
      const next = new Set<string>();
      for (const list of Object.values(this.interfaces())) {
        for (const a of list ?? []) {
          if (a.internal || isLoopback(a.address)) continue;
          // Link-local IPv6 may carry a zone (%eth0) in some sources: conntrack shows none.
          next.add(a.address.split('%')[0]!.toLowerCase());
        }
      }
      this.addrs = next;
    } catch (err) {
      // Keep the previous set: a failed refresh must not make every flow disappear.
      this.deps.log?.warn({ err }, 'reading host addresses failed; keeping the previous set');
    }
  }
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}
