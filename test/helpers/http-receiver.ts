// A real HTTP receiver on loopback for sink tests: records every request (headers, raw and gunzipped
// body, arrival time) and answers from a script of behaviours: a status (5xx, 429 with Retry-After,
// 4xx), a cut socket, or a slow answer. Without a script it answers 200, or what a function of the
// request decides (a size limit, a record it refuses).
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gunzipSync } from 'node:zlib';

export type Behaviour =
  | { status: number; headers?: Record<string, string>; body?: string; delayMs?: number }
  /** Destroys the socket once the request body has arrived: the client sees a network error. */
  | { close: true; delayMs?: number };

/** Decides the answer from the request (its NDJSON lines, headers). */
export type Decide = (req: { headers: IncomingHttpHeaders; lines: string[] }) => Behaviour;

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The body as sent. */
  raw: Buffer;
  /** The body gunzipped when Content-Encoding is gzip. */
  body: Buffer;
  /** Arrival of the complete body, ms since the epoch. */
  at: number;
  /** What the receiver answered (status, or 'closed'). */
  answer: number | 'closed';
}

export class HttpReceiver {
  readonly requests: ReceivedRequest[] = [];
  private readonly script: Behaviour[] = [];
  private fallback: Behaviour | Decide = { status: 200 };
  private readonly sockets = new Set<Socket>();
  /** Answers held back by `delayMs`, so that cut() can drop them. */
  private readonly delayed = new Map<NodeJS.Timeout, ReceivedRequest>();
  private waiters: (() => void)[] = [];

  private constructor(private readonly server: Server) {}

  /** Listens on `port` (a receiver coming back where a dead one was), else on any free port. */
  static async start(port = 0): Promise<HttpReceiver> {
    const server = createServer();
    const rx = new HttpReceiver(server);
    server.on('connection', (s) => {
      rx.sockets.add(s);
      s.on('close', () => rx.sockets.delete(s));
    });
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks);
        let body = raw;
        if (req.headers['content-encoding'] === 'gzip') {
          try {
            body = gunzipSync(raw);
          } catch {
            body = Buffer.from('<<bad gzip>>');
          }
        }
        const lines = body
          .toString('utf8')
          .split('\n')
          .filter((l) => l.length > 0);
        const next = rx.script.shift() ?? rx.fallback;
        const b = typeof next === 'function' ? next({ headers: req.headers, lines }) : next;
        const record: ReceivedRequest = {
          method: req.method ?? '',
          path: req.url ?? '',
          headers: req.headers,
          raw,
          body,
          at: Date.now(),
          answer: 'close' in b ? 'closed' : b.status,
        };
        rx.requests.push(record);
        const act = () => {
          if ('close' in b) {
            req.socket.destroy();
          } else {
            res.writeHead(b.status, b.headers ?? {});
            res.end(b.body ?? '');
          }
          const w = rx.waiters;
          rx.waiters = [];
          for (const f of w) f();
        };
        if (b.delayMs) {
          const t = setTimeout(() => {
            rx.delayed.delete(t);
            act();
          }, b.delayMs);
          rx.delayed.set(t, record);
        } else act();
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    return rx;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${a.port}/ingest`;
  }

  /** Answers the next requests with these behaviours, in order, then with the fallback. */
  respond(...behaviours: Behaviour[]): this {
    this.script.push(...behaviours);
    return this;
  }

  /** The answer once the script is used up (200 unless changed). */
  otherwise(b: Behaviour | Decide): this {
    this.fallback = b;
    return this;
  }

  /** NDJSON records of every request answered 2xx, parsed. */
  acceptedRecords(): Record<string, unknown>[] {
    return this.requests
      .filter((r) => typeof r.answer === 'number' && r.answer >= 200 && r.answer < 300)
      .flatMap((r) =>
        r.body
          .toString('utf8')
          .split('\n')
          .filter((l) => l.length > 0)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      );
  }

  /**
   * What a receiver that honours Idempotency-Key keeps: the records of the first 2xx request of each
   * key, in arrival order.
   */
  dedupedRecords(): Record<string, unknown>[] {
    const seen = new Set<string>();
    const out: Record<string, unknown>[] = [];
    for (const r of this.requests) {
      if (typeof r.answer !== 'number' || r.answer < 200 || r.answer >= 300) continue;
      const key = String(r.headers['idempotency-key']);
      if (seen.has(key)) continue;
      seen.add(key);
      for (const l of r.body.toString('utf8').split('\n')) {
        if (l.length > 0) out.push(JSON.parse(l) as Record<string, unknown>);
      }
    }
    return out;
  }

  /** Cuts every open connection, and the answers still held back with them (a hung receiver ends). */
  cut(): void {
    for (const [t, r] of this.delayed) {
      clearTimeout(t);
      r.answer = 'closed';
    }
    this.delayed.clear();
    for (const s of this.sockets) s.destroy();
  }

  /** Resolves once `n` requests were answered; rejects after `timeoutMs`. */
  async waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.requests.length < n) {
      const left = until - Date.now();
      if (left <= 0)
        throw new Error(`receiver: ${this.requests.length} of ${n} requests after ${timeoutMs}ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
