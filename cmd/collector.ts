// Wiring of `podflow collector`.
import type { Config } from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';

export async function run(_config: Config, _log: Logger, _signal: AbortSignal): Promise<void> {
  throw new StartupError('collector: not wired yet');
}
