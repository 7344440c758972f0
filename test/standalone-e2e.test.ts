// `podflow standalone` end to end: the real executable runs inside a test network namespace (the
// "host"), real TCP and UDP traffic over IPv4 and IPv6 of known sizes flows to and from a peer
// namespace, a real Prometheus in the host namespace scrapes podflow, and the flow counters must
// equal, byte for byte, what conntrack itself counted for those connections.
// Also the executable's start-up failures: missing permission and bad options, one line each.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { pack, unpack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PullResponse } from '../shared/flow.js';
import { conntrackEntries } from './helpers/conntrack-table.js';
import {
  cleanupAll,
  createNetns,
  createPair,
  httpStatus,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { type Prometheus, startPrometheus } from './helpers/prometheus.js';
import { waitFor as waitUntil } from './helpers/wait.js';

const execFileP = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const root = requireRoot();

const RECEIVER_PORT = 9500;
/**
 * An HTTP log receiver: takes NDJSON (gzip or not), answers 200, prints one JSON line per request
 * with its Idempotency-Key and the sums of tx_bytes / rx_bytes.
 */
const RECEIVER_JS = String.raw`
const http = require('node:http');
const zlib = require('node:zlib');
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
    let tx = 0, rx = 0, n = 0; const node = new Set();
    for (const line of body.toString().split('\n')) {
      if (!line) continue;
      const r = JSON.parse(line); tx += r.tx_bytes; rx += r.rx_bytes; n++; node.add(r.src_node);
    }
    process.stdout.write(JSON.stringify({ key: req.headers['idempotency-key'], tx, rx, n, node: [...node] }) + '\n');
    res.writeHead(200).end();
  });
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

/** Compiles dist/ once per run: the tests start the real executable, bin/podflow.js. */
let built: Promise<void> | undefined;
function build(): Promise<void> {
  // `npm test` builds right before running the tests: no need to do it twice.
  if (process.env.npm_lifecycle_event === 'test') built ??= Promise.resolve();
  built ??= execFileP('npm', ['run', 'build', '--silent'], { cwd: ROOT }).then(
    () => undefined,
    (err: Error & { stdout?: string }) => {
      throw new Error(`npm run build failed: ${err.stdout ?? ''}${err.message}`);
    },
  );
  return built;
}

/**
 * What podflow must report for the local addresses, from conntrack's own accounting: for each entry
 * the local side's sent bytes are tx, the peer's are rx. `counted` = (entry, local side) pairs.
 */
async function expectedFromConntrack(ns: Netns, localAddrs: string[]) {
  const local = new Set(localAddrs);
  const expected = { tx: 0, rx: 0, txp: 0, rxp: 0 };
  let counted = 0;
  for (const e of await conntrackEntries(ns)) {
    if (local.has(e.origSrc)) {
      expected.tx += e.origBytes;
      expected.rx += e.replyBytes;
      expected.txp += e.origPackets;
      expected.rxp += e.replyPackets;
      counted++;
    }
    if (local.has(e.replySrc)) {
      expected.tx += e.replyBytes;
      expected.rx += e.origBytes;
      expected.txp += e.replyPackets;
      expected.rxp += e.origPackets;
      counted++;
    }
  }
  return { expected, counted };
}

const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000) =>
  waitUntil(what, fn, timeoutMs);

describe.skipIf(!root)('podflow standalone end to end', () => {
  let host: Netns;
  let peer: Netns;
  let addr: { a4: string; b4: string; a6: string; b6: string };
  let podflow: ChildProcess | undefined;
  let podflowLog = '';
  let prom: Prometheus | undefined;
  let home: string;
  const servers: TrafficServer[] = [];

  beforeAll(async () => {
    await build();
    home = await mkdtemp(join(tmpdir(), 'podflow-e2e-home-'));
    const pair = await createPair(231);
    host = pair.a;
    peer = pair.b;
    addr = pair;
  }, 180_000);

  afterAll(async () => {
    if (podflow) await kill(podflow).catch(() => undefined);
    await prom?.stop();
    await Promise.all(servers.map((s) => s.stop().catch(() => undefined)));
    await cleanupAll();
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('counts exactly the bytes conntrack counted, as Prometheus scrapes them', async () => {
    // Servers: in the peer (the host connects out) and in the host (the peer connects in).
    const [tcp4, tcp6, udp4, udp6, tcpIn, udpIn6] = await Promise.all([
      startServer(peer, 'tcp', addr.b4),
      startServer(peer, 'tcp', addr.b6),
      startServer(peer, 'udp', addr.b4),
      startServer(peer, 'udp', addr.b6),
      startServer(host, 'tcp', addr.a4),
      startServer(host, 'udp', addr.a6),
    ]);
    servers.push(tcp4!, tcp6!, udp4!, udp6!, tcpIn!, udpIn6!);
    // The HTTP log sink's receiver, on the host namespace's loopback (not a flow: loopback is skipped).
    const receiver = host.spawn(process.execPath, ['-e', RECEIVER_JS, String(RECEIVER_PORT)]);
    const received = new Map<string, { tx: number; rx: number; n: number; node: string[] }>();
    createInterface({ input: receiver.stdout! }).on('line', (line) => {
      const r = JSON.parse(line) as { key: string; tx: number; rx: number; n: number; node: string[] };
      // A retried batch comes again with the same Idempotency-Key: count it once.
      received.set(r.key, r);
    });
    // Nothing counted before podflow starts may linger in the table.
    await host.exec('conntrack', ['-F']).catch(() => undefined);

    const port = 9471;
    podflow = host.spawn(
      process.execPath,
      [
        BIN,
        'standalone',
        '--listen',
        `127.0.0.1:${port}`,
        '--interval',
        '1s',
        '--export-interval',
        '1s',
        '--node-name',
        'e2e-node',
        '--http-sink-url',
        `http://127.0.0.1:${RECEIVER_PORT}/ingest`,
        '--http-sink-gzip',
        'true',
      ],
      // No kubeconfig to find: this is the "no Kubernetes" case.
      { HOME: home, KUBECONFIG: join(home, 'none') },
    );
    podflow.stderr?.on('data', (d) => {
      podflowLog += d;
    });
    const curl = async (path: string) => {
      const { stdout } = await host.exec('curl', [
        '-s',
        '-w',
        '\n%{http_code}',
        `http://127.0.0.1:${port}${path}`,
      ]);
      const nl = stdout.lastIndexOf('\n');
      return { status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) };
    };
    await waitFor('podflow ready', async () => {
      if (podflow!.exitCode !== null) throw new Error(`podflow exited: ${podflowLog}`);
      return (await curl('/readyz')).status === 200 ? true : undefined;
    });
    prom = await startPrometheus({ targets: [`127.0.0.1:${port}`], ns: host });

    // Traffic of known sizes, both families, both protocols, both directions.
    const results = await Promise.all([
      runClient(host, 'tcp', addr.b4, tcp4!.port, { send: 10_000, receive: 30_000, count: 5 }),
      runClient(host, 'tcp', addr.b6, tcp6!.port, { send: 2_000, receive: 70_000, count: 3 }),
      runClient(host, 'udp', addr.b4, udp4!.port, { send: 500, receive: 1_200, count: 4 }),
      runClient(host, 'udp', addr.b6, udp6!.port, { send: 900, receive: 100, count: 2 }),
      runClient(peer, 'tcp', addr.a4, tcpIn!.port, { send: 40_000, receive: 5_000, count: 2 }),
      runClient(peer, 'udp', addr.a6, udpIn6!.port, { send: 1_300, receive: 600, count: 3 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    const payloadOut = 5 * 10_000 + 3 * 2_000 + 4 * 500 + 2 * 900 + 2 * 5_000 + 3 * 600;
    const payloadIn = 5 * 30_000 + 3 * 70_000 + 4 * 1_200 + 2 * 100 + 2 * 40_000 + 3 * 1_300;

    // Let the last ACKs land, then take conntrack's own accounting of the host's connections.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const { expected, counted } = await expectedFromConntrack(host, [addr.a4, addr.a6]);
    // 5 + 3 + 4 + 2 out, 2 + 3 in; headers come on top of the payload.
    expect(counted).toBe(19);
    expect(expected.tx).toBeGreaterThan(payloadOut);
    expect(expected.rx).toBeGreaterThan(payloadIn);

    const sums = async () => ({
      tx: await prom!.scalar('sum(podflow_transmit_bytes_total)'),
      rx: await prom!.scalar('sum(podflow_received_bytes_total)'),
      txp: await prom!.scalar('sum(podflow_transmit_packets_total)'),
      rxp: await prom!.scalar('sum(podflow_received_packets_total)'),
    });
    let got: Awaited<ReturnType<typeof sums>> | undefined;
    try {
      await waitFor('Prometheus to see every byte', async () => {
        got = await sums();
        return got.tx === expected.tx && got.rx === expected.rx ? true : undefined;
      });
    } catch (err) {
      throw new Error(
        `${(err as Error).message}: got ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`,
      );
    }
    expect(got).toEqual(expected);

    // The HTTP log sink got the same bytes, as NDJSON records of this node.
    const fromSink = () => {
      const t = { tx: 0, rx: 0, nodes: new Set<string>() };
      for (const r of received.values()) {
        t.tx += r.tx;
        t.rx += r.rx;
        for (const n of r.node) t.nodes.add(n);
      }
      return t;
    };
    await waitFor('the HTTP sink to receive every byte', async () =>
      fromSink().tx === expected.tx ? true : undefined,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}: got ${fromSink().tx}/${fromSink().rx}, want ${expected.tx}/${expected.rx}; podflow: ${podflowLog.slice(-3000)}`,
      );
    });
    expect(fromSink()).toEqual({ tx: expected.tx, rx: expected.rx, nodes: new Set(['e2e-node']) });

    // Labels: the host is the node itself (no Kubernetes), peers are private addresses.
    const series = await prom.query('podflow_transmit_bytes_total');
    const byPeer = new Map(series.map((s) => [`${s.metric.dst_ip} ${s.metric.proto}`, s]));
    for (const key of [`${addr.b4} TCP`, `${addr.b6} TCP`, `${addr.b4} UDP`, `${addr.b6} UDP`]) {
      const s = byPeer.get(key);
      expect(s, key).toBeDefined();
      // Prometheus stores an empty label as no label at all.
      const label = (name: string) => s!.metric[name] ?? '';
      expect(
        ['src_node', 'src_pod', 'src_namespace', 'src_workload', 'dst_type', 'dst_pod', 'cross_zone'].map(
          label,
        ),
      ).toEqual(['e2e-node', '', '', '', 'private', '', 'false']);
    }
    expect(series.every((s) => s.metric.dst_ip !== '127.0.0.1' && s.metric.dst_ip !== '::1')).toBe(true);

    // Self-metrics of both halves on the same /metrics, as scraped.
    expect(await prom.scalar('podflow_collector_conntrack_entries')).toBeGreaterThanOrEqual(0);
    expect(await prom.scalar('podflow_collector_read_duration_seconds_count')).toBeGreaterThan(0);
    expect(await prom.scalar('sum(podflow_collector_ticks_total{result="ok"})')).toBeGreaterThan(0);
    expect(await prom.scalar('sum(podflow_exporter_pulls_total)')).toBeGreaterThan(0);
    // Everything was delivered and acknowledged: nothing left in the backlog.
    await waitFor('backlog drained', async () =>
      (await prom!.scalar('podflow_collector_backlog_flows')) === 0 ? true : undefined,
    );

    // Ordered shutdown on SIGTERM: exits 0 and says so.
    const exited = new Promise<number | null>((resolve) => podflow!.once('exit', (code) => resolve(code)));
    podflow.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(podflowLog).toContain('standalone stopped');
  }, 120_000);
});

const NO_KUBE = { HOME: '/nonexistent', KUBECONFIG: '', KUBERNETES_SERVICE_HOST: '' };

/** Runs the real executable and collects its exit code and stderr. */
function runPodflow(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; wrap?: string[] } = {},
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const wrap = opts.wrap ?? [];
    const cmd = wrap.length > 0 ? wrap[0]! : process.execPath;
    const argv = wrap.length > 0 ? [...wrap.slice(1), process.execPath, BIN, ...args] : [BIN, ...args];
    // No kubeconfig to find, whatever the machine has: these are start-up checks without Kubernetes.
    const env: NodeJS.ProcessEnv = { ...process.env, ...NO_KUBE, ...opts.env };
    for (const k of Object.keys(env)) if (k.startsWith('PODFLOW_') && !opts.env?.[k]) delete env[k];
    const child = spawn(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** The lines of stderr that are not JSON log records. */
const plainLines = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('{'))
    .map((l) => l.trimEnd());

/**
 * Starts `podflow collector` (on 127.0.0.1:9470, with `collectorArgs`) and `podflow exporter` pulling
 * it every second (127.0.0.1:9471) in `host`, with `home` as HOME and no kubeconfig, and waits until
 * both are ready.
 */
async function startPair(host: Netns, home: string, collectorArgs: string[]) {
  const env = { HOME: home, KUBECONFIG: join(home, 'none') };
  let log = '';
  const collect = (d: Buffer) => {
    log += d;
  };
  const collector = host.spawn(
    process.execPath,
    [BIN, 'collector', '--listen', '127.0.0.1:9470', ...collectorArgs],
    env,
  );
  collector.stderr?.on('data', collect);
  const exporter = host.spawn(
    process.execPath,
    [
      BIN,
      'exporter',
      '--listen',
      '127.0.0.1:9471',
      '--collectors',
      'http://127.0.0.1:9470',
      '--export-interval',
      '1s',
    ],
    env,
  );
  exporter.stderr?.on('data', collect);
  const ready = async (port: number) => {
    const status = await httpStatus(host, `http://127.0.0.1:${port}/readyz`);
    return status === 200 ? true : undefined;
  };
  await waitFor('collector and exporter ready', async () => {
    if (collector.exitCode !== null || exporter.exitCode !== null) throw new Error(`exited: ${log}`);
    return (await ready(9470)) && (await ready(9471));
  });
  return { collector, exporter, output: () => log };
}

describe.skipIf(!root)('podflow collector end to end', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'podflow-e2e-collector-'));
  });
  afterAll(async () => {
    await cleanupAll();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves exactly the bytes conntrack counted over the pull API, gzipped, until acknowledged', async () => {
    await build();
    const { a: host, b: peer, a4, a6, b4, b6 } = await createPair(232);
    const tcp = await startServer(peer, 'tcp', b4);
    const udp = await startServer(peer, 'udp', b6);
    await host.exec('conntrack', ['-F']).catch(() => undefined);
    const port = 9470;
    const tokenFile = join(dir, 'pull-token');
    await writeFile(tokenFile, 'e2e-pull-token\n');
    // What an exporter sends: the token, and its name for the lease.
    const auth = ['-H', 'Authorization: Bearer e2e-pull-token', '-H', 'Podflow-Exporter: e2e-exporter'];
    const proc = host.spawn(
      process.execPath,
      [
        BIN,
        'collector',
        '--listen',
        `127.0.0.1:${port}`,
        '--interval',
        '1s',
        '--node-name',
        'e2e-node',
        '--pull-token-file',
        tokenFile,
      ],
      { HOME: dir, KUBECONFIG: join(dir, 'none') },
    );
    let log = '';
    proc.stderr?.on('data', (d) => {
      log += d;
    });
    const base = `http://127.0.0.1:${port}`;
    const status = async (args: string[], out = '/dev/null') => {
      const { stdout } = await host.exec('curl', ['-s', '-o', out, '-w', '%{http_code}', ...args]);
      return Number(stdout);
    };
    await waitFor('collector ready', async () => {
      if (proc.exitCode !== null) throw new Error(`collector exited: ${log}`);
      return (await status([`${base}/readyz`])) === 200 ? true : undefined;
    });

    const results = await Promise.all([
      runClient(host, 'tcp', b4, tcp.port, { send: 3_000, receive: 9_000, count: 4 }),
      runClient(host, 'udp', b6, udp.port, { send: 700, receive: 1_400, count: 3 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const { expected, counted } = await expectedFromConntrack(host, [a4, a6]);
    expect(counted).toBe(7);

    // Pull the raw body with gzip, as an exporter does, and sum every pending batch.
    const body = join(dir, 'pull.bin');
    const headers = join(dir, 'pull.headers');
    const pull = async (): Promise<PullResponse> => {
      const code = await status(
        [...auth, '-H', 'Accept-Encoding: gzip', '-D', headers, `${base}/api/v1/flows`],
        body,
      );
      expect(code).toBe(200);
      expect((await readFile(headers, 'utf8')).toLowerCase()).toContain('content-encoding: gzip');
      return unpack(gunzipSync(await readFile(body))) as PullResponse;
    };
    let last: PullResponse | undefined;
    const sum = (r: PullResponse) => {
      const t = { tx: 0, rx: 0, txp: 0, rxp: 0 };
      for (const b of r.batches) {
        for (const f of b.flows) {
          t.tx += f.txBytes;
          t.rx += f.rxBytes;
          t.txp += f.txPackets;
          t.rxp += f.rxPackets;
        }
      }
      return t;
    };
    await waitFor('every byte in the backlog', async () => {
      last = await pull();
      return sum(last).tx === expected.tx && sum(last).rx === expected.rx ? true : undefined;
    }).catch((err: Error) => {
      throw new Error(
        `${err.message}: got ${JSON.stringify(last && sum(last))}, want ${JSON.stringify(expected)}`,
        { cause: err.cause },
      );
    });
    expect(sum(last!)).toEqual(expected);
    expect(last).toMatchObject({ version: 1, node: 'e2e-node', source: 'netfilter' });
    const peers = new Set(last!.batches.flatMap((b) => b.flows.map((f) => `${f.src} ${f.dst} ${f.proto}`)));
    expect([...peers].sort()).toEqual([`${a4} ${b4} 6`, `${a6} ${b6} 17`]);

    // A pull without ack changes nothing; an ack of the last seq empties the backlog.
    const again = await pull();
    expect(again.batches.slice(0, last!.batches.length)).toEqual(last!.batches);
    const seq = again.batches[again.batches.length - 1]!.seq;
    const lease = /^podflow-lease: (\S+)/im.exec(await readFile(headers, 'utf8'))?.[1];
    expect(lease).toMatch(/^[0-9a-f]{24}$/);
    const ack = join(dir, 'ack.bin');
    const ackArgs = ['-X', 'POST', '-H', 'Content-Type: application/x-msgpack', '--data-binary', `@${ack}`];
    // Without the token: refused, nothing dropped.
    await writeFile(ack, pack({ bootId: again.bootId, seq, lease }));
    expect(await status([...ackArgs, `${base}/api/v1/ack`])).toBe(401);
    expect((await pull()).batches.length).toBeGreaterThan(0);
    expect(await status([...auth, ...ackArgs, `${base}/api/v1/ack`])).toBe(204);
    expect((await pull()).batches).toEqual([]);
    // A stale boot id is refused.
    await writeFile(ack, pack({ bootId: 'not-this-one', seq, lease }));
    expect(await status([...auth, ...ackArgs, `${base}/api/v1/ack`])).toBe(409);

    await kill(proc);
    expect(proc.exitCode).toBe(0);
    expect(log).toContain('collector stopped');
  }, 120_000);

  it('podflow exporter pulls podflow collector: Prometheus sees exactly the bytes conntrack counted', async () => {
    await build();
    const { a: host, b: peer, a4, a6, b4, b6 } = await createPair(233);
    const tcp = await startServer(peer, 'tcp', b6);
    const udp = await startServer(peer, 'udp', b4);
    await host.exec('conntrack', ['-F']).catch(() => undefined);
    const { collector, exporter, output } = await startPair(host, dir, [
      '--interval',
      '1s',
      '--node-name',
      'e2e-node',
    ]);
    const prom = await startPrometheus({ targets: ['127.0.0.1:9471'], ns: host });
    try {
      const results = await Promise.all([
        runClient(host, 'tcp', b6, tcp.port, { send: 12_345, receive: 54_321, count: 3 }),
        runClient(host, 'udp', b4, udp.port, { send: 333, receive: 4_444, count: 5 }),
      ]);
      for (const r of results) expect(r.failed).toBe(0);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const { expected, counted } = await expectedFromConntrack(host, [a4, a6]);
      expect(counted).toBe(8);
      const sums = async () => ({
        tx: await prom.scalar('sum(podflow_transmit_bytes_total)'),
        rx: await prom.scalar('sum(podflow_received_bytes_total)'),
        txp: await prom.scalar('sum(podflow_transmit_packets_total)'),
        rxp: await prom.scalar('sum(podflow_received_packets_total)'),
      });
      let got: Awaited<ReturnType<typeof sums>> | undefined;
      await waitFor('Prometheus to see every byte through the exporter', async () => {
        got = await sums();
        return got.tx === expected.tx && got.rx === expected.rx ? true : undefined;
      }).catch((err: Error) => {
        throw new Error(
          `${err.message}: got ${JSON.stringify(got)}, want ${JSON.stringify(expected)}; ${output().slice(-2000)}`,
        );
      });
      expect(got).toEqual(expected);
      // The exporter acknowledged what its sinks took: the collector's backlog drains.
      await waitFor('collector backlog drained', async () => {
        const { stdout } = await host.exec('curl', ['-s', 'http://127.0.0.1:9470/metrics']);
        return /^podflow_collector_backlog_flows 0$/m.test(stdout) &&
          /^podflow_collector_acks_total\{result="ok"\} [1-9]/m.test(stdout)
          ? true
          : undefined;
      });
    } finally {
      await prom.stop();
      // The collector first: at SIGTERM it waits for the exporter to take its last read.
      await kill(collector);
      await kill(exporter);
    }
    expect(exporter.exitCode).toBe(0);
    expect(collector.exitCode).toBe(0);
  }, 120_000);

  it('a collector stopped with SIGTERM reads once more and waits until the exporter took everything', async () => {
    await build();
    const { a: host, b: peer, a4, a6, b4 } = await createPair(234);
    const tcp = await startServer(peer, 'tcp', b4);
    await host.exec('conntrack', ['-F']).catch(() => undefined);
    // A 10-minute interval: after the first (baseline) read, only the read made at SIGTERM can see
    // the traffic below.
    const { collector, exporter, output } = await startPair(host, dir, [
      '--interval',
      '10m',
      '--shutdown-timeout',
      '20s',
    ]);
    try {
      const r = await runClient(host, 'tcp', b4, tcp.port, { send: 40_000, receive: 7_000, count: 2 });
      expect(r.failed).toBe(0);
      const { expected } = await expectedFromConntrack(host, [a4, a6]);
      expect(expected.tx).toBeGreaterThan(40_000 * 2);
      const exited = once(collector, 'exit');
      collector.kill('SIGTERM');
      await exited;
      expect(collector.exitCode).toBe(0);
      expect(output()).toContain('backlog delivered');
      const { stdout } = await host.exec('curl', ['-s', 'http://127.0.0.1:9471/metrics']);
      const sum = (name: string) =>
        stdout
          .split('\n')
          .filter((l) => l.startsWith(`${name}{`))
          .reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
      expect({ tx: sum('podflow_transmit_bytes_total'), rx: sum('podflow_received_bytes_total') }).toEqual({
        tx: expected.tx,
        rx: expected.rx,
      });
    } finally {
      await kill(exporter);
      await kill(collector);
    }
  }, 120_000);
});

describe('podflow executable start-up errors', () => {
  let dir: string;
  beforeAll(async () => {
    await build();
    dir = await mkdtemp(join(tmpdir(), 'podflow-cli-'));
  }, 180_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('names the flag of a bad value', async () => {
    const r = await runPodflow(['collector', '--interval', 'abc']);
    expect(r.code).toBe(2);
    expect(plainLines(r.stderr)).toEqual([
      'podflow: invalid --interval: expected a duration like 5s, 500ms or 2m (at least 100ms, at most 1h), got "abc"',
    ]);
  });

  it('names an unknown key of the YAML file', async () => {
    const file = join(dir, 'podflow.yaml');
    await writeFile(file, 'interval: 2s\nintervall: 3s\n');
    const r = await runPodflow(['standalone', '--config', file]);
    expect(r.code).toBe(2);
    expect(plainLines(r.stderr)).toEqual([
      `podflow: unknown key "intervall" in ${file}: podflow has no such option`,
    ]);
  });

  it('names an unknown PODFLOW_ environment variable', async () => {
    const r = await runPodflow(['collector'], { env: { PODFLOW_INTERVALL: '5s' } });
    expect(r.code).toBe(2);
    expect(plainLines(r.stderr)).toEqual([
      'podflow: unknown environment variable PODFLOW_INTERVALL: podflow has no such option',
    ]);
  });

  it.skipIf(!root)(
    'says in one line that reading conntrack needs a permission, and exits non-zero',
    async () => {
      // The same executable as an unprivileged user (nobody): no CAP_NET_ADMIN.
      const r = await runPodflow(['collector', '--listen', '127.0.0.1:0'], {
        wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
      });
      expect(r.code).toBe(1);
      expect(plainLines(r.stderr)).toEqual(['podflow: reading conntrack needs root or CAP_NET_ADMIN']);
      const standalone = await runPodflow(['standalone', '--listen', '127.0.0.1:0'], {
        wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
      });
      expect(standalone.code).toBe(1);
      expect(plainLines(standalone.stderr)).toEqual([
        'podflow: reading conntrack needs root or CAP_NET_ADMIN',
      ]);
    },
  );

  it.skipIf(!root)('says in one line that the listen address is taken, and exits 2', async () => {
    const ns = await createNetns('cli');
    try {
      const args = [BIN, 'collector', '--listen', '127.0.0.1:9470', '--interval', '1s'];
      const first = ns.spawn(process.execPath, args, NO_KUBE);
      await waitFor('first collector ready', async () => {
        const status = await httpStatus(ns, 'http://127.0.0.1:9470/readyz');
        return status === 200 ? true : undefined;
      });
      const second = ns.spawn(process.execPath, args, NO_KUBE);
      let stderr = '';
      second.stderr?.on('data', (d) => {
        stderr += d;
      });
      const [code] = (await once(second, 'exit')) as [number | null];
      expect(code).toBe(2);
      expect(plainLines(stderr)).toEqual(['podflow: --listen 127.0.0.1:9470: address already in use']);
      // The exporter says it in the same words.
      const exporter = ns.spawn(
        process.execPath,
        [BIN, 'exporter', '--listen', '127.0.0.1:9470', '--collectors', 'http://127.0.0.1:9470'],
        NO_KUBE,
      );
      let exporterErr = '';
      exporter.stderr?.on('data', (d) => {
        exporterErr += d;
      });
      const [exporterCode] = (await once(exporter, 'exit')) as [number | null];
      expect(exporterCode).toBe(2);
      expect(plainLines(exporterErr)).toEqual(['podflow: --listen 127.0.0.1:9470: address already in use']);
      await kill(first);
    } finally {
      await cleanupAll();
    }
  });
});
