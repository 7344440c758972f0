// The one place where `--source` picks where connections are read. Everything downstream sees only
// a ConntrackSource.
//
// `auto` decides in start(): Cilium when its conntrack maps are pinned under --cilium-bpf-path and
// readable (a Cilium node, where the BPF datapath bypasses netfilter conntrack for pod traffic), else
// netfilter. The choice and its reason are logged once.
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { createCiliumSource } from './cilium/source.js';
import type { SourceCounters } from './metrics.js';
import { createNetfilterSource } from './netfilter/source.js';
import type { ConnSample, ConntrackSource, ReadStats } from './source.js';

export type SelectedSource = ConntrackSource & SourceCounters;

type SourceConfig = Pick<
  Config,
  'source' | 'procPath' | 'conntrackAcct' | 'ciliumBpfPath' | 'ciliumLayout' | 'ciliumClock'
>;

/** Builds the configured source. No I/O: the caller `start()`s it (which checks permissions). */
export function createSource(config: SourceConfig, log: Logger): SelectedSource {
  const netfilter = () =>
    createNetfilterSource(
      { procPath: config.procPath, conntrackAcct: config.conntrackAcct },
      { log: log.child({ source: 'netfilter' }) },
    );
  const cilium = () =>
    createCiliumSource(
      {
        ciliumBpfPath: config.ciliumBpfPath,
        ciliumLayout: config.ciliumLayout,
        ciliumClock: config.ciliumClock,
        procPath: config.procPath,
      },
      { log: log.child({ source: 'cilium' }) },
    );
  switch (config.source) {
    case 'netfilter':
      return netfilter();
    case 'cilium':
      return cilium();
    case 'auto':
      return new AutoSource(cilium, netfilter, config.ciliumBpfPath, log);
  }
}

/** `--source auto`: tries Cilium's maps at start, else netfilter; then delegates everything. */
export class AutoSource implements SelectedSource {
  private chosen: (ConntrackSource & Partial<SourceCounters>) | undefined;

  constructor(
    private readonly cilium: () => ConntrackSource,
    private readonly netfilter: () => ConntrackSource & Partial<SourceCounters>,
    private readonly bpfPath: string,
    private readonly log: Logger,
  ) {}

  /** The chosen source's name ('netfilter' until start() has chosen). */
  get name(): 'netfilter' | 'cilium' {
    return this.chosen?.name ?? 'netfilter';
  }

  get lostEvents(): number {
    return this.chosen?.lostEvents ?? 0;
  }

  async start(): Promise<void> {
    const cilium = this.cilium();
    try {
      await cilium.start();
      this.chosen = cilium;
      this.log.info(
        { source: 'cilium', path: this.bpfPath },
        '--source auto: Cilium conntrack maps found and readable: reading them',
      );
      return;
    } catch (err) {
      await cilium.close().catch(() => {});
      if (!(err instanceof StartupError)) throw err;
      this.log.info(
        { source: 'netfilter', reason: err.message.replace(/^--source cilium: /, '') },
        '--source auto: not using Cilium maps: reading netfilter conntrack',
      );
    }
    const netfilter = this.netfilter();
    await netfilter.start();
    this.chosen = netfilter;
  }

  read(visit: (s: ConnSample) => void): Promise<ReadStats> {
    if (!this.chosen) return Promise.reject(new Error('source: read() before start()'));
    return this.chosen.read(visit);
  }

  drainEnded(visit: (s: ConnSample) => void): void {
    this.chosen?.drainEnded(visit);
  }

  async close(): Promise<void> {
    await this.chosen?.close();
  }
}
