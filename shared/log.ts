// One logger for the process: pino on stderr, JSON lines with string levels (`"level":"warn"`) for
// log collectors, one readable line per record when stderr is a terminal. Stages take a child logger
// as a dependency.
import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** Readable lines instead of JSON. @default stderr is a terminal */
  pretty?: boolean;
  /** Where the lines go. @default stderr (fd 2) */
  destination?: DestinationStream;
}

export function createLogger(level: string = 'info', opts: LoggerOptions = {}): Logger {
  const pretty = opts.pretty ?? process.stderr.isTTY === true;
  const out = opts.destination ?? pino.destination(2);
  return pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      // Level names, not numbers: what people grep for and log pipelines map without a table.
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: serializeError },
    },
    pretty ? prettyStream(out, process.stderr.hasColors?.() === true && opts.destination === undefined) : out,
  );
}

/** A logger that drops everything: the default for stages constructed in tests. */
export const silentLogger: Logger = pino({ level: 'silent' });

// ---- errors ------------------------------------------------------------------------------------

/** Socket and resolver failures of a peer that is down, restarting or unreachable. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_SOCKET',
]);

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  stack?: unknown;
  code?: unknown;
  reason?: unknown;
  cause?: unknown;
}

/**
 * True for failures a running podflow expects and recovers from by itself: a peer refusing, resetting
 * or not answering, a timeout, a pull that failed for the network (a PullError of reason `network`
 * or `timeout`). Their stack says nothing an operator can act on.
 */
export function isExpectedError(err: unknown): boolean {
  for (let e = err, depth = 0; isObject(e) && depth < 8; e = (e as ErrorLike).cause, depth++) {
    const x = e as ErrorLike;
    if (typeof x.code === 'string' && NETWORK_CODES.has(x.code)) return true;
    if (x.name === 'TimeoutError') return true;
    // PullError (exporter/pull.ts) by shape: shared/ does not import the exporter.
    if (x.name === 'PullError' && (x.reason === 'network' || x.reason === 'timeout')) return true;
  }
  return false;
}

/** The first `code` along the cause chain (ECONNREFUSED and the like), if any. */
export function errorCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; isObject(e) && depth < 8; e = (e as ErrorLike).cause, depth++) {
    const code = (e as ErrorLike).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

export interface SerializedError {
  type: string;
  message: string;
  code?: string;
  reason?: string;
  status?: number;
  stack?: string;
}

/**
 * `err` as logged. The message is the error's own, followed by those of its causes that it does not
 * already contain (pino's standard serializer appends every cause's message, which doubles messages
 * that already quote their cause). Expected errors get no stack; the others get the stack of the
 * error and of each cause.
 */
export function serializeError(err: unknown): SerializedError | unknown {
  if (!isObject(err)) return err;
  const x = err as ErrorLike;
  let message = typeof x.message === 'string' ? x.message : String(err);
  const stacks: string[] = [];
  if (typeof x.stack === 'string') stacks.push(x.stack);
  for (let c = x.cause, depth = 0; isObject(c) && depth < 8; c = (c as ErrorLike).cause, depth++) {
    const m = (c as ErrorLike).message;
    if (typeof m === 'string' && m !== '' && !message.includes(m)) message = `${message}: ${m}`;
    const s = (c as ErrorLike).stack;
    if (typeof s === 'string') stacks.push(`caused by: ${s}`);
  }
  const out: SerializedError = { type: typeof x.name === 'string' ? x.name : 'Error', message };
  const code = errorCode(err);
  if (code !== undefined) out.code = code;
  if (typeof x.reason === 'string') out.reason = x.reason;
  const status = (err as { status?: unknown }).status;
  if (typeof status === 'number') out.status = status;
  if (!isExpectedError(err) && stacks.length > 0) out.stack = stacks.join('\n');
  return out;
}

const isObject = (v: unknown): v is object => typeof v === 'object' && v !== null;

// ---- repeated conditions -----------------------------------------------------------------------

/**
 * Logs a condition that repeats every round once per cause: `warn` when it starts or its cause
 * changes, `debug` while the same cause goes on, `info` once when it clears. A collector that stays
 * unreachable for an hour then writes two lines at the default level, not 720.
 */
export class OncePerCause {
  private readonly causes = new Map<string, string>();

  constructor(private readonly log: Logger) {}

  /** `key` (a collector, a sink) is failing because of `cause` (a reason, an error code). */
  failing(key: string, cause: string, fields: object, msg: string): void {
    if (this.causes.get(key) === cause) {
      this.log.debug(fields, msg);
      return;
    }
    this.causes.set(key, cause);
    this.log.warn(fields, msg);
  }

  /** `key` works again: one info line if it was failing, nothing otherwise. */
  recovered(key: string, fields: object, msg: string): void {
    if (!this.causes.delete(key)) return;
    this.log.info(fields, msg);
  }

  /** Whether `key` is failing now. */
  isFailing(key: string): boolean {
    return this.causes.has(key);
  }
}

/** The cause of `err` for OncePerCause: its reason or code, else its message. */
export function causeOf(err: unknown): string {
  const x = isObject(err) ? (err as ErrorLike) : {};
  const parts = [x.reason, errorCode(err)].filter((p): p is string => typeof p === 'string');
  if (parts.length > 0) return parts.join(' ');
  return typeof x.message === 'string' ? x.message : String(err);
}

// ---- the terminal format -----------------------------------------------------------------------

const COLORS: Record<string, string> = {
  trace: '\x1b[90m',
  debug: '\x1b[36m',
  info: '\x1b[32m',
  warn: '\x1b[33m',
  error: '\x1b[31m',
  fatal: '\x1b[35m',
};

/**
 * One record as a line: `02:11:32.194 WARN  pipeline: pull failed … collector=http://… reason=network
 * err="…"`. A stack (unexpected errors only) follows on indented lines.
 */
export function formatPretty(line: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line);
  } catch {
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const { time, level, msg, stage, err, ...rest } = rec;
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  const name = String(level ?? '')
    .toUpperCase()
    .padEnd(5);
  const lvl = color ? `${COLORS[String(level)] ?? ''}${name}\x1b[0m` : name;
  let out = `${clock} ${lvl} ${stage === undefined ? '' : `${stage}: `}${msg ?? ''}`;
  for (const [k, v] of Object.entries(rest)) out += ` ${k}=${value(v)}`;
  let stack = '';
  if (isObject(err)) {
    const e = err as SerializedError;
    out += ` err=${value(e.message)}`;
    if (e.stack !== undefined) stack = `\n    ${e.stack.replaceAll('\n', '\n    ')}`;
  } else if (err !== undefined) {
    out += ` err=${value(err)}`;
  }
  return `${out}${stack}\n`;
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** pino writes JSON lines; this turns each into formatPretty's line before it reaches `out`. */
function prettyStream(out: DestinationStream, color: boolean): DestinationStream {
  return {
    write(chunk: string): void {
      // pino writes whole records, one per call.
      out.write(formatPretty(chunk, color));
    },
  };
}
