/**
 * A problem found while starting (missing permission, unreadable conntrack, bad map size): podflow
 * prints the message as one line and exits non-zero. Anything that fails later is logged, and the
 * process goes on.
 */
export class StartupError extends Error {
  override name = 'StartupError';
  /**
   * The exit status: 2 when the configuration is at fault (a value, an address that cannot be
   * bound), as for a bad option; 1 when the environment is (a permission, a kernel feature).
   */
  readonly exitCode: 1 | 2;

  constructor(message: string, options?: ErrorOptions & { exitCode?: 1 | 2 }) {
    super(message, options);
    this.exitCode = options?.exitCode ?? 1;
  }
}
