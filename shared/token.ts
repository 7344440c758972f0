// The pull API's bearer tokens (`--pull-token-file`): one token per line. Collectors accept any of
// them; exporters send the first. The file is re-read when it changes, so a token is rotated
// without a restart: put the new token beside the old one in the collectors' file, then make it the
// exporters' first line, then drop the old one. Kubernetes updates a mounted Secret by swapping a
// symlink, so a change is noticed by comparing what stat() of the path (following links) reports,
// at most once per `recheckMs`, rather than by file-system events that a swap does not raise.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { type Clock, systemClock } from './clock.js';
import { StartupError } from './errors.js';
import type { Logger } from './log.js';

/** A token file larger than this is not a token file. */
const MAX_TOKEN_FILE_BYTES = 64 * 1024;

export class TokenFileError extends Error {
  override name = 'TokenFileError';
}

/** The tokens of one file: non-empty lines, trimmed; lines starting with `#` are comments. */
export function parseTokens(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) continue;
    out.push(t);
  }
  return out;
}

/** SHA-256 of a token: compared in constant time whatever the lengths. */
const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

export interface TokenFileDeps {
  log: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** How often the file's stat is compared, ms. @default 1000 */
  recheckMs?: number;
}

export class TokenFile {
  private digests: Buffer[] = [];
  private firstToken = '';
  private stamp = '';
  private checkedAt = Number.NEGATIVE_INFINITY;
  private readonly clock: Clock;
  private readonly recheckMs: number;
  /** The cause of the last failed re-read, so that it is logged once until it changes. */
  private lastProblem = '';

  /** Reads the file now: throws TokenFileError naming the file when it cannot be used. */
  constructor(
    readonly path: string,
    private readonly deps: TokenFileDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.recheckMs = deps.recheckMs ?? 1000;
    this.reload(true);
  }

  /** The token an exporter sends: the file's first. */
  first(): string {
    this.refresh();
    return this.firstToken;
  }

  /** Whether an `Authorization` header value carries one of the file's tokens. */
  accepts(authorization: string | undefined): boolean {
    this.refresh();
    if (authorization === undefined) return false;
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (!m) return false;
    const got = digest(m[1]!);
    // Every token is compared, so the time taken does not tell which one (or whether any) matched.
    let ok = false;
    for (const d of this.digests) ok = timingSafeEqual(got, d) || ok;
    return ok;
  }

  private refresh(): void {
    const now = this.clock.now();
    if (now - this.checkedAt < this.recheckMs) return;
    this.checkedAt = now;
    try {
      this.reload(false);
      this.lastProblem = '';
    } catch (err) {
      // Keep the tokens that worked: a file being replaced, or a Secret briefly unmounted, must not
      // lock the exporter out (or let everyone in).
      const problem = (err as Error).message;
      if (problem !== this.lastProblem) {
        this.deps.log.warn(
          { file: this.path, problem },
          'token file unusable: keeping the tokens read before',
        );
        this.lastProblem = problem;
      }
    }
  }

  private reload(initial: boolean): void {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(this.path);
    } catch (err) {
      throw new TokenFileError(
        `${this.path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
    }
    if (!st.isFile()) throw new TokenFileError(`${this.path}: not a regular file`);
    if (st.size > MAX_TOKEN_FILE_BYTES) {
      throw new TokenFileError(
        `${this.path}: ${st.size} bytes, a token file holds at most ${MAX_TOKEN_FILE_BYTES}`,
      );
    }
    const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    if (!initial && stamp === this.stamp) return;
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      throw new TokenFileError(
        `${this.path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
    }
    const tokens = parseTokens(text);
    if (tokens.length === 0) throw new TokenFileError(`${this.path}: holds no token (one per line)`);
    for (const t of tokens) {
      if (!/^[\x21-\x7e]+$/.test(t)) {
        throw new TokenFileError(`${this.path}: a token must be printable ASCII without spaces`);
      }
    }
    this.digests = tokens.map(digest);
    this.firstToken = tokens[0]!;
    this.stamp = stamp;
    if (!initial) this.deps.log.info({ file: this.path, tokens: tokens.length }, 'token file re-read');
  }
}

/**
 * The process's token file from `--pull-token-file`, read once now (a file that cannot be used
 * stops start-up with one line naming the option), or undefined when none is given.
 * `--metrics-auth` needs one.
 */
export function loadTokenFile(
  config: { pullTokenFile?: string; metricsAuth: boolean },
  log: Logger,
): TokenFile | undefined {
  if (config.pullTokenFile === undefined) {
    if (config.metricsAuth) {
      throw new StartupError('--metrics-auth: needs --pull-token-file (the tokens /metrics accepts)');
    }
    return undefined;
  }
  try {
    return new TokenFile(config.pullTokenFile, { log });
  } catch (err) {
    if (err instanceof TokenFileError) throw new StartupError(`--pull-token-file ${err.message}`);
    throw err;
  }
}
