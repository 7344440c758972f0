// One logger for the process: JSON lines on stderr (pino). Stages take a child logger as a dependency.
import { type Logger, pino } from 'pino';

export type { Logger };

export function createLogger(level: string = 'info'): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
}

/** A logger that drops everything: the default for stages constructed in tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
