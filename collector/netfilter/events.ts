// DESTROY events: the final counters of connections that end, including those that begin and end
// between two reads (a dump would never see them). Datagrams are only queued as they arrive and
// parsed when the tick drains them, right after its dump.
//
// Events are lossy: when the kernel cannot queue an event on the socket it drops it and flags the
// socket with ENOBUFS. The `netlink` package (0.3.0) cannot survive that flag: libuv reports it as a
// poll error, and the binding then builds an error object with a NULL syscall name, which throws
// inside native code and aborts the whole process (no JS handler can catch it). So the subscription
// runs in a small child process (events-child.ts) that forwards datagrams over a pipe. When the
// child reports ENOBUFS or dies of it, we count a lost-events occurrence (`lostEvents`) and start a
// new child; the collector itself is never at risk. A large SO_RCVBUF (capped by
// net.core.rmem_max) makes losses rare.
import { type ChildProcess, spawn } from 'node:child_process';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../shared/log.js';
import type { ConnSample } from '../source.js';
import { IPCTNL_MSG_CT_DELETE } from './ctnetlink.js';
import { CtSample, walkDatagram } from './parser.js';

export interface EventsOptions {
  /** SO_RCVBUF to ask for. @default 8 MiB (the kernel caps it at net.core.rmem_max) */
  recvBufferSize?: number;
  /** Bytes of datagrams kept between two drains before new ones are dropped (and counted lost). */
  maxQueuedBytes?: number;
}

/** Raised by open() when the subscription is refused. */
export class EventsError extends Error {
  override name = 'EventsError';
  constructor(
    message: string,
    readonly errno: number | undefined,
  ) {
    super(message);
  }
}

const KIND_EVENT = 0;
const KIND_READY = 1;
const KIND_LOST = 2;
const KIND_ERROR = 3;

const u32le = (b: Buffer, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

const CHILD = fileURLToPath(
  new URL(`./events-child${extname(fileURLToPath(import.meta.url))}`, import.meta.url),
);

export class ConntrackEvents {
  /** Times events were lost: ENOBUFS reported, the subscriber restarted, or our queue was full. */
  lostEvents = 0;
  /** Event messages that could not be parsed. */
  parseErrors = 0;
  /** DESTROY events handed on. */
  ended = 0;
  /** SO_RCVBUF the kernel granted to the subscriber (it doubles the asked value). */
  recvBufferBytes = 0;
  private child: ChildProcess | undefined;
  private closed = false;
  private partial: Buffer | undefined;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly sample = new CtSample();
  private readonly maxQueuedBytes: number;
  private readonly recvBufferSize: number;

  constructor(
    opts: EventsOptions = {},
    private readonly log?: Logger,
  ) {
    this.recvBufferSize = opts.recvBufferSize ?? 8 * 1024 * 1024;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
  }

  /** Starts the subscriber and waits until it listens. Rejects with EventsError (errno EPERM, ...). */
  open(): Promise<void> {
    this.closed = false;
    return this.spawnChild();
  }

  private spawnChild(): Promise<void> {
    // The child runs the same way we do: compiled JS, or TypeScript through a loader (tsx when the
    // parent's own loader is not on its command line, e.g. under a test runner). Debugger and
    // profiler and tracing flags stay with the parent (a trace printed on the child's stdout would
    // corrupt the frames). A small young generation makes the child collect its datagram buffers
    // often, so a burst of events does not leave it holding tens of MB.
    const inherited = process.execArgv.filter(
      (a) => !/^--(inspect|debug|cpu-prof|heap-prof|prof|trace|print)/.test(a),
    );
    const loader =
      CHILD.endsWith('.ts') && !inherited.some((a) => a.includes('tsx')) ? ['--import', 'tsx'] : [];
    const child = spawn(
      process.execPath,
      [...inherited, ...loader, '--max-semi-space-size=1', CHILD, String(this.recvBufferSize)],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    this.child = child;
    this.partial = undefined;
    // Once it listens, the collector's lifetime is not tied to the subscriber: close() ends it, and
    // it exits on its own when our end of its stdin goes away.
    const unref = () => {
      child.unref();
      for (const s of [child.stdout, child.stderr, child.stdin])
        (s as unknown as { unref?: () => void })?.unref?.();
    };
    let stderr = '';
    let ready = false;
    return new Promise<void>((resolve, reject) => {
      const settle = (err?: Error) => {
        if (ready) return;
        ready = true;
        unref();
        if (err) reject(err);
        else resolve();
      };
      child.stdin?.on('error', () => undefined);
      child.stderr?.on('data', (d: Buffer) => {
        if (stderr.length < 4096) stderr += d;
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        try {
          this.onChunk(chunk, (kind, payload) => {
            if (kind === KIND_READY) {
              this.recvBufferBytes = Number(payload.toString()) || 0;
              settle();
            } else if (kind === KIND_ERROR) {
              const info = JSON.parse(payload.toString()) as { message?: string; errno?: number };
              settle(new EventsError(info.message ?? 'conntrack events subscription failed', info.errno));
            }
          });
        } catch (err) {
          this.log?.warn({ err }, 'conntrack events: bad frame from the subscriber');
        }
      });
      child.on('error', (err) =>
        settle(new EventsError(`cannot start the events subscriber: ${err.message}`, undefined)),
      );
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!ready) {
          settle(
            new EventsError(`events subscriber exited (${signal ?? code}): ${stderr.trim()}`, undefined),
          );
          return;
        }
        if (this.closed) return;
        // Died while running (ENOBUFS aborts it, see above): events were lost meanwhile.
        this.lostEvents++;
        this.log?.warn(
          { code, signal, stderr: stderr.trim().slice(-300) },
          'conntrack events subscriber stopped (events lost); starting a new one',
        );
        this.scheduleRestart();
      });
    });
  }

  private scheduleRestart(): void {
    // Quick at first; slower when it keeps dying, so a persistent failure does not spin.
    const delay = Math.min(5000, 50 * 2 ** Math.min(this.restarts, 7));
    this.restarts++;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.closed) return;
      this.spawnChild().then(
        () => {
          this.restarts = 0;
        },
        (err) => {
          this.log?.warn({ err }, 'conntrack events subscriber failed to start');
          if (!this.closed) this.scheduleRestart();
        },
      );
    }, delay);
    this.restartTimer.unref();
  }

  /** Splits the pipe's byte stream into frames. */
  private onChunk(chunk: Buffer, control: (kind: number, payload: Buffer) => void): void {
    let b = chunk;
    if (this.partial) {
      b = Buffer.concat([this.partial, chunk]);
      this.partial = undefined;
    }
    let off = 0;
    while (off + 5 <= b.length) {
      const len = u32le(b, off);
      if (off + 5 + len > b.length) break;
      const kind = b[off + 4]!;
      const payload = b.subarray(off + 5, off + 5 + len);
      off += 5 + len;
      if (kind === KIND_EVENT) {
        if (this.queuedBytes + len > this.maxQueuedBytes) {
          this.lostEvents++;
          continue;
        }
        this.queue.push(payload);
        this.queuedBytes += len;
      } else if (kind === KIND_LOST) {
        this.lostEvents++;
      } else {
        control(kind, payload);
      }
    }
    if (off < b.length) this.partial = Buffer.from(b.subarray(off));
  }

  /** Hands every queued DESTROY event to `visit`, oldest first, and empties the queue. */
  drain(visit: (s: ConnSample) => void): void {
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    const counted = (s: CtSample) => {
      this.ended++;
      visit(s);
    };
    for (const b of queue) this.parseErrors += walkDatagram(b, IPCTNL_MSG_CT_DELETE, this.sample, counted);
  }

  close(): void {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const c = this.child;
    this.child = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    if (c) {
      c.stdin?.end();
      c.kill('SIGTERM');
    }
  }
}
