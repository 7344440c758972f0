// An exporter process killed (SIGKILL) at every step of a round, then started again: nothing is lost
// and nothing is counted twice, for the scraped Prometheus counters (read as Prometheus reads a
// counter: a drop is a reset, the new value all new) and for the HTTP sink (records deduplicated by
// Idempotency-Key, as the contract asks of receivers). A proxy between exporter and collector holds
// pulls or acks to stop the round where a step ends; the receiver hangs to stop it after Prometheus.
// Without per-sink cursors on the collector, a kill after Prometheus counted a batch that a scrape
// served, but before the ack, counted it again (+5.3% measured).
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { unpack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { HttpReceiver } from './helpers/http-receiver.js';
import { type Podflow, startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { startTestCollector, type TestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';

/** A pass-through to the collector that can hold pulls, or acks that acknowledge new batches. */
class HoldingProxy {
  holdPulls = false;
  holdAcks = false;
  readonly held: ServerResponse[] = [];
  private readonly server = createServer((req, res) => void this.handle(req, res));
  constructor(private readonly target: TestCollector) {}
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const isPull = req.url?.startsWith('/api/v1/flows') ?? false;
    let hold = isPull && this.holdPulls;
    if (!isPull && req.url === '/api/v1/ack' && this.holdAcks) {
      const ack = unpack(body) as { seq: number };
      hold = ack.seq > this.target.backlog.acked;
    }
    if (hold) {
      this.held.push(res);
      return;
    }
    const out = request(
      new URL(req.url ?? '/', this.target.url),
      { method: req.method, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    out.end(body);
  }
  /** Drops what it held (the exporter that asked is dead) and holds nothing more. */
  release(): void {
    this.holdPulls = false;
    this.holdAcks = false;
    for (const res of this.held.splice(0)) res.destroy();
  }
  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const flow = (tx: number): Flow => ({
  src: '10.0.0.1',
  dst: '8.8.8.8',
  proto: 6,
  txBytes: tx,
  rxBytes: 1,
  txPackets: 1,
  rxPackets: 1,
});

describe('exporter killed at every step of a round', () => {
  let c: TestCollector;
  let proxy: HoldingProxy;
  let proxyUrl = '';
  let rx: HttpReceiver;
  let port = 0;
  let exporter: Podflow | undefined;
  let total = 0;
  let seq = 0;
  // What a scraper has seen, read as Prometheus reads a counter.
  let counted = 0;
  let lastValue = 0;

  beforeAll(async () => {
    c = await startTestCollector('node-1', { bootId: 'b00t' });
    proxy = new HoldingProxy(c);
    proxyUrl = await proxy.start();
    rx = await HttpReceiver.start();
    port = await freePort();
  });
  afterAll(async () => {
    await exporter?.stop('SIGKILL');
    await proxy.close();
    await rx.close();
    await c.close();
  });

  const base = () => `http://127.0.0.1:${port}`;
  const start = async () => {
    exporter = startPodflow(
      [
        'exporter',
        '--collectors',
        proxyUrl,
        '--pod-name',
        'exporter-0',
        '--listen',
        `127.0.0.1:${port}`,
        '--export-interval',
        '200ms',
        '--http-sink-url',
        rx.url,
        '--http-sink-timeout',
        '60s',
      ],
      { stderr: 'ignore' },
    );
    lastValue = 0;
    await exporter.ready();
  };
  const kill = () => exporter!.stop('SIGKILL');
  /** One scrape, counted the way Prometheus counts across resets. */
  const scrape = async () => {
    const text = await (await fetch(`${base()}/metrics`)).text();
    let v = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith('podflow_transmit_bytes_total{'))
        v += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    counted += v >= lastValue ? v - lastValue : v;
    lastValue = v;
    return v;
  };
  const append = () => {
    seq++;
    const tx = 1000 * seq + seq;
    total += tx;
    c.backlog.append(seq * 100, seq * 100 + 100, [flow(tx)]);
  };
  const httpTotal = () => rx.dedupedRecords().reduce((s, r) => s + Number(r.tx_bytes), 0);
  /** Lets the exporter catch up, scraping as Prometheus does: everything once, acknowledged. */
  const settle = async (what: string) => {
    await waitFor(
      what,
      async () => {
        await scrape();
        return c.backlog.stats().batches === 0 && counted === total && httpTotal() === total
          ? true
          : undefined;
      },
      20_000,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}: counted ${counted}, http ${httpTotal()}, want ${total}, backlog ${c.backlog.stats().batches}`,
      );
    });
    // The same key never carried two different bodies.
    const byKey = new Map<string, string>();
    for (const r of rx.requests.filter((q) => typeof q.answer === 'number' && q.answer < 300)) {
      const key = String(r.headers['idempotency-key']);
      const body = r.body.toString();
      expect(byKey.get(key) ?? body, key).toBe(body);
      byKey.set(key, body);
    }
  };

  it('a first round, scraped: the baseline', async () => {
    await start();
    append();
    await settle('first round');
  });

  it('killed after the pull, before any sink took it', async () => {
    proxy.holdPulls = true;
    append();
    await waitFor('pull held', async () => (proxy.held.length > 0 ? true : undefined));
    await kill();
    proxy.release();
    await start();
    await settle('after a kill while pulling');
  });

  it('killed after Prometheus counted it but before a scrape, the HTTP receiver hanging', async () => {
    await scrape();
    rx.otherwise({ status: 200, delayMs: 60_000 });
    append();
    await rx.waitFor(rx.requests.length + 1);
    await kill();
    rx.otherwise({ status: 200 });
    rx.cut();
    await start();
    await settle('after a kill before the scrape');
  });

  it('killed after Prometheus counted it and a scrape served it, the HTTP receiver hanging', async () => {
    await scrape();
    rx.otherwise({ status: 200, delayMs: 60_000 });
    const before = total;
    append();
    await rx.waitFor(rx.requests.length + 1);
    await waitFor('scraped', async () => ((await scrape()) > 0 && counted === total ? true : undefined));
    expect(counted - before).toBe(total - before);
    // The scrape made it safe: the collector now knows Prometheus has it (a cursor).
    await waitFor('cursor reported', async () =>
      (c.backlog.sinkCursors().prometheus ?? 0) === seq ? true : undefined,
    );
    await kill();
    rx.otherwise({ status: 200 });
    rx.cut();
    await start();
    await settle('after a kill after the scrape');
  });

  it('killed after every sink took it (a scrape served it, the receiver answered), before the ack', async () => {
    await scrape();
    // The receiver answers after 2 s: Prometheus counts it and a scrape serves it first.
    rx.otherwise({ status: 200, delayMs: 2000 });
    append();
    await waitFor('scraped', async () => {
      await scrape();
      return counted === total && (c.backlog.sinkCursors().prometheus ?? 0) === seq ? true : undefined;
    });
    // Now the collector is out of reach for acks: the one that would acknowledge the batch is lost.
    proxy.holdAcks = true;
    await waitFor('ack held', async () =>
      proxy.held.length > 0 && httpTotal() === total ? true : undefined,
    );
    await kill();
    proxy.release();
    rx.otherwise({ status: 200 });
    await start();
    await settle('after a kill before the ack');
  });

  it('killed after the ack', async () => {
    await scrape();
    append();
    await settle('acknowledged');
    await kill();
    append();
    await start();
    await settle('after a kill after the ack');
    expect(seq).toBe(7);
  });
});
