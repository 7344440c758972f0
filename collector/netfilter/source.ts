// The netfilter ConntrackSource: the kernel's conntrack table read over ctnetlink (a streaming dump
// per read) plus DESTROY events for connections that end between reads.
import { StartupError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { ConnSample, ConntrackSource, ReadStats } from '../source.js';
import { ensureConntrackAcct } from './acct.js';
import { ConntrackDumper, EPERM, NetlinkError } from './dump.js';
import { ConntrackEvents } from './events.js';

export interface NetfilterSourceConfig {
  /** Where the host /proc is mounted (option `proc-path`). */
  procPath: string;
  /** Turn on nf_conntrack_acct at start (option `conntrack-acct`). */
  conntrackAcct: boolean;
  /** Subscribe to DESTROY events. @default true */
  events?: boolean;
  /** SO_RCVBUF of the events socket. @default 8 MiB (SO_RCVBUFFORCE: not capped by net.core.rmem_max) */
  eventsRecvBuffer?: number;
  /** Receive size per dump datagram. @default 32768 */
  dumpBufferSize?: number;
}

export interface NetfilterSourceDeps {
  log?: Logger;
}

const PERMISSION = 'reading conntrack needs root or CAP_NET_ADMIN';

export function createNetfilterSource(config: NetfilterSourceConfig, deps: NetfilterSourceDeps = {}) {
  return new NetfilterSource(config, deps);
}

export class NetfilterSource implements ConntrackSource {
  readonly name = 'netfilter' as const;
  private readonly dumper: ConntrackDumper;
  private readonly events: ConntrackEvents | undefined;
  private readonly log: Logger | undefined;
  private warnedNoCounters = false;
  private reportedLost = 0;

  constructor(
    private readonly config: NetfilterSourceConfig,
    deps: NetfilterSourceDeps,
  ) {
    this.log = deps.log;
    this.dumper = new ConntrackDumper({ msgBufferSize: config.dumpBufferSize ?? 32768 });
    this.events =
      (config.events ?? true)
        ? new ConntrackEvents({ recvBufferSize: config.eventsRecvBuffer }, deps.log)
        : undefined;
  }

  /** Times DESTROY events were lost (ENOBUFS): a self-metric for the collector. */
  get lostEvents(): number {
    return this.events?.lostEvents ?? 0;
  }

  /** DESTROY events handed to the tracker so far. */
  get endedEvents(): number {
    return this.events?.ended ?? 0;
  }

  async start(): Promise<void> {
    await ensureConntrackAcct(this.config.procPath, this.config.conntrackAcct, this.log);
    try {
      await this.dumper.probe();
    } catch (err) {
      this.dumper.close();
      if (err instanceof NetlinkError && err.errno === EPERM) throw new StartupError(PERMISSION);
      throw new StartupError(`cannot read conntrack over ctnetlink: ${(err as Error).message}`, {
        cause: err,
      });
    }
    try {
      await this.events?.open();
    } catch (err) {
      this.dumper.close();
      if ((err as { errno?: number }).errno === EPERM) throw new StartupError(PERMISSION);
      throw new StartupError(`cannot subscribe to conntrack events: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (this.events) {
      this.log?.debug({ rcvbuf: this.events.recvBufferBytes }, 'subscribed to conntrack DESTROY events');
    }
  }

  async read(visit: (s: ConnSample) => void): Promise<ReadStats> {
    const r = await this.dumper.dump(visit);
    if (r.noCounters > 0 && !this.warnedNoCounters) {
      this.warnedNoCounters = true;
      this.log?.warn(
        { entries: r.entries, withoutCounters: r.noCounters },
        'conntrack entries carry no byte counters: nf_conntrack_acct was off when they were created; ' +
          'turn it on (--conntrack-acct, or sysctl -w net.netfilter.nf_conntrack_acct=1): only new connections get counters',
      );
    }
    const lost = this.lostEvents;
    if (lost > this.reportedLost) {
      this.log?.warn(
        { lostEvents: lost - this.reportedLost },
        'conntrack DESTROY events were dropped (socket buffer full): bytes of connections that ended since the last read may be missing; without CAP_NET_ADMIN the buffer is capped by net.core.rmem_max',
      );
      this.reportedLost = lost;
    }
    const eventErrors = this.events?.parseErrors ?? 0;
    if (this.events) this.events.parseErrors = 0;
    return { entries: r.entries, parseErrors: r.parseErrors + eventErrors, interrupted: r.interrupted };
  }

  drainEnded(visit: (s: ConnSample) => void): void {
    this.events?.drain(visit);
  }

  async close(): Promise<void> {
    this.dumper.close();
    this.events?.close();
  }
}
