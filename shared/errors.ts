/**
 * A problem found while starting (missing permission, unreadable conntrack, bad map size): podflow
 * prints the message as one line and exits non-zero. Anything that fails later is logged, and the
 * process goes on.
 */
export class StartupError extends Error {
  override name = 'StartupError';
}
