// The one place where `--source` picks where connections are read. Everything downstream sees only
// a ConntrackSource. `auto` means netfilter until the Cilium source is added here.
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import type { SourceCounters } from './metrics.js';
import { createNetfilterSource } from './netfilter/source.js';
import type { ConntrackSource } from './source.js';

export type SelectedSource = ConntrackSource & SourceCounters;

/** Builds the configured source. No I/O: the caller `start()`s it (which checks permissions). */
export function createSource(
  config: Pick<Config, 'source' | 'procPath' | 'conntrackAcct'>,
  log: Logger,
): SelectedSource {
  switch (config.source) {
    case 'auto':
    case 'netfilter':
      return createNetfilterSource(
        { procPath: config.procPath, conntrackAcct: config.conntrackAcct },
        { log: log.child({ source: 'netfilter' }) },
      );
    case 'cilium':
      throw new StartupError('--source cilium: the Cilium source is not available in this build');
  }
}
