// Benchmark of the netfilter collector against the floor measured in the same run.
//
//   npm run bench:conntrack            (root; creates and deletes its own network namespaces)
//   npm run bench:conntrack -- 10000   (only the given table sizes)
//   PF_BENCH_SHAPE=few-flows-per-pair, PF_BENCH_NODE_ARGS='--cpu-prof …': one shape; profile podflow
//   PF_BENCH_PROFILE_GREW=/tmp/grew.cpuprofile: CPU profile of the all-grew ticks only
//
// For each table size N and shape (few flows per peer pair / many flows per peer pair) it fills a
// fresh namespace's conntrack table with N entries through ctnetlink NEW (a batch of messages per
// datagram), then measures in separate processes inside that namespace:
// - floor: a minimal C loop (native/test/ct-floor.c) receiving the same dump into one 32 KiB buffer
//   and walking only the netlink headers; the physical floor of reading the table;
// - addon receive: podflow's netlink socket (native/) receiving the dump, framing only;
// - podflow ticks: reducer.tick() on the netfilter source: the baseline tick, steady ticks with no
//   counter change, ticks where 10% and 100% of the entries grew (counters bumped on the way from
//   the real dump to the tracker, as the kernel cannot be told to set counters);
// - the whole collector process (first shape, N ≤ 10k and N ≥ 250k): the real `podflow collector`
//   wiring (cmd/collector.ts run(): source, reducer, backlog, HTTP pull API and /metrics, the pods
//   of its node listed and watched from a test API server in the namespace) with an exporter
//   process pulling and acknowledging every second. At 10k: a minute of 5 s reads, 10% of the
//   entries growing each time. At 250k: baseline, steady ticks, then ticks where every entry grew.
//   Reported: its peak RSS (VmHWM; it has no child process) and its share of a core. It runs with
//   the node flags the chart gives it (a 2 MB young generation).
// Reported: wall time, CPU time, peak RSS (VmHWM), and ratios to the floor.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import {
  AF_UNSPEC,
  buildDumpRequest,
  buildMessage,
  type EntrySpec,
  entryAttrs,
  IPCTNL_MSG_CT_NEW,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
} from '../../collector/netfilter/ctnetlink.js';
import { openNetfilterSocket } from '../../collector/netfilter/socket.js';
import type { SelectedSource } from '../../collector/select-source.js';
import type { ConnSample, ConntrackSource } from '../../collector/source.js';
import { bundled } from './bundle.js';
import { profileIf } from './profile.js';

type Shape = 'few-flows-per-pair' | 'many-flows-per-pair';
const LOCAL_PODS = 200;

const localV4 = (i: number) => `10.1.${(i >> 8) & 255}.${i & 255}`;
const localV6 = (i: number) => `fd00:1::${(i + 1).toString(16)}`;
const peerV4 = (i: number) => `10.${128 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`;
const peerV6 = (i: number) => `fd00:2::${(i + 1).toString(16)}`;

/** Entry i of a table of n entries: 3/4 IPv4, 1/4 IPv6; half TCP, half UDP; 1/8 DNATed. */
function entry(i: number, shape: Shape): EntrySpec {
  let pair: number;
  let flow: number;
  if (shape === 'few-flows-per-pair') {
    pair = i >> 1; // 2 flows per (local, peer) pair: n/2 pairs
    flow = i & 1;
  } else {
    pair = i % 1000; // 1000 pairs, n/1000 flows each
    flow = Math.floor(i / 1000);
  }
  const local = pair % LOCAL_PODS;
  const peer = Math.floor(pair / LOCAL_PODS) + (shape === 'few-flows-per-pair' ? 0 : pair * 7);
  const v6 = i % 4 === 3;
  const src = v6 ? localV6(local) : localV4(local);
  const backend = v6 ? peerV6(peer) : peerV4(peer);
  const dnat = i % 8 === 5 && !v6;
  const dst = dnat ? `10.96.${(peer >> 8) & 255}.${peer & 255}` : backend;
  const proto = i & 2 ? 6 : 17;
  const sport = 1024 + (flow % 60000);
  const dport = 80 + Math.floor(flow / 60000) + (i & 1) * 1000;
  return {
    orig: { src, dst, proto, sport, dport },
    reply: { src: backend, dst: src, proto, sport: dport, dport: sport },
    timeout: 3600,
    // Sent as a real entry would carry them; the kernel accepts but ignores counters on NEW (they
    // start at 0), which is why the "grew" phases bump them on the way from the dump to the tracker.
    counters: { origPackets: 10, origBytes: 1000 + i, replyPackets: 8, replyBytes: 5000 },
  };
}

// ------------------------------------------------------------------------------------------------
// Inner processes (run inside the namespace).

function peakRssMb(pid: number | 'self' = 'self'): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Resets the peak RSS counter (VmHWM) so that each phase reports its own peak. */
function resetPeak(): void {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {}
}

/** CPU time (ms) this process has used, from /proc (user + system, 10 ms steps). */
function cpuMsOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

const childCount = () =>
  readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).length;

async function fill(n: number, shape: Shape): Promise<{ created: number; errors: number }> {
  let errors = 0;
  const sock = openNetfilterSocket(
    { msgBufferSize: 32768, recvBufferSize: 8 << 20 },
    {
      onMessage(b) {
        for (let off = 0; off + 16 <= b.length; ) {
          const len = b.readUInt32LE(off);
          if (len < 16) break;
          if (b.readUInt16LE(off + 4) === NLMSG_ERROR && b.readInt32LE(off + 16) !== 0) errors++;
          off += (len + 3) & ~3;
        }
      },
      onTruncated: () => undefined,
      onLost: () => {
        errors++;
      },
      onError: () => {
        errors++;
      },
    },
  );
  const perDatagram = 64;
  let seq = 1;
  for (let i = 0; i < n; i += perDatagram) {
    const msgs: Buffer[] = [];
    for (let j = i; j < Math.min(n, i + perDatagram); j++) {
      const e = entry(j, shape);
      msgs.push(
        buildMessage(
          IPCTNL_MSG_CT_NEW,
          NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
          seq++,
          AF_UNSPEC + (e.orig.src.includes(':') ? 10 : 2),
          entryAttrs(e),
        ),
      );
    }
    // The kernel handles a request inside the send call: nothing is left in flight.
    if (sock.send(Buffer.concat(msgs))) errors += msgs.length;
    if ((i / perDatagram) % 64 === 0) await new Promise((r) => setImmediate(r)); // read error replies
  }
  await new Promise((r) => setTimeout(r, 200)); // let error replies arrive
  sock.close();
  return { created: n - errors, errors };
}

/** podflow's own socket receiving the dump, framing only (three dumps: the median). */
async function addonReceive(): Promise<{ wallMs: number; cpuMs: number; entries: number }> {
  const runs = [];
  for (let i = 0; i < 3; i++) {
    let entries = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const sock = openNetfilterSocket(
        { msgBufferSize: 32768, recvBufferSize: 1 << 20 },
        {
          onMessage(b) {
            for (let off = 0; off + 16 <= b.length; ) {
              const len = b.readUInt32LE(off);
              if (len < 16) break;
              if (b.readUInt16LE(off + 4) === NLMSG_DONE) {
                sock.close();
                resolve();
                return;
              }
              entries++;
              off += (len + 3) & ~3;
            }
          },
          onTruncated: () => undefined,
          onError: reject,
        },
      );
      sock.ref();
      const err = sock.send(buildDumpRequest(1, AF_UNSPEC));
      if (err) reject(err);
    });
    const c = process.cpuUsage(c0);
    runs.push({ wallMs: performance.now() - t0, cpuMs: (c.user + c.system) / 1000, entries });
  }
  runs.sort((a, b) => a.wallMs - b.wallMs);
  return runs[1]!;
}

/**
 * Makes `share` of the entries (1 = all, 0 = none) look grown by `bump` on their way from the real
 * dump to the tracker. Changes `inner.read` in place (the source keeps its other members).
 */
function bumping<S extends ConntrackSource>(inner: S, state: { bump: number; share: number }): S {
  const read = inner.read.bind(inner);
  inner.read = (visit) => {
    let i = 0;
    const step = state.share > 0 ? Math.round(1 / state.share) : 0;
    return read((s: ConnSample) => {
      if (step > 0 && i++ % step === 0) {
        s.origBytes += state.bump * 100;
        s.origPackets += state.bump;
        s.replyBytes += state.bump * 300;
        s.replyPackets += state.bump;
      }
      visit(s);
    });
  };
  return inner;
}

async function podflow() {
  // Each measured process imports only what it runs (a static import would load every mode's modules).
  const { createNetfilterSource } = await import('../../collector/netfilter/source.js');
  const { createReducer } = await import('../../collector/reduce.js');
  const local = new Set<string>();
  for (let i = 0; i < LOCAL_PODS; i++) local.add(localV4(i)).add(localV6(i));
  const state = { bump: 0, share: 0 };
  const source = bumping(
    createNetfilterSource({ procPath: '/proc', conntrackAcct: false, events: true }),
    state,
  );
  const reducer = createReducer({ groupPublicIps: false }, { podIndex: { isLocal: (ip) => local.has(ip) } });
  await source.start();
  const tick = async () => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await reducer.tick(source);
    const wallMs = performance.now() - t0;
    const c = process.cpuUsage(c0);
    if (process.env.PF_BENCH_MEM) {
      const m = process.memoryUsage();
      const mb = (x: number) => (x / 1048576).toFixed(0);
      console.error(
        `tick: rss ${mb(m.rss)} heapUsed ${mb(m.heapUsed)} heapTotal ${mb(m.heapTotal)} external ${mb(m.external)} arrayBuffers ${mb(m.arrayBuffers)} peak ${peakRssMb().toFixed(0)}`,
      );
    }
    return { wallMs, cpuMs: (c.user + c.system) / 1000, entries: r.entries, flows: r.columns.length };
  };
  const peaks: Record<string, number> = {};
  resetPeak();
  const baseline = await tick();
  peaks.baseline = peakRssMb();
  resetPeak();
  const steady = [await tick(), await tick(), await tick()];
  peaks.steady = peakRssMb();
  resetPeak();
  const changed10: ReturnType<typeof tick> extends Promise<infer T> ? T[] : never = [];
  state.share = 0.1;
  for (let k = 0; k < 3; k++) {
    state.bump++;
    changed10.push(await tick());
  }
  peaks.changed10 = peakRssMb();
  resetPeak();
  const changed100: typeof changed10 = [];
  state.share = 1;
  const stopProfile = await profileIf(process.env.PF_BENCH_PROFILE_GREW);
  for (let k = 0; k < 3; k++) {
    state.bump++;
    changed100.push(await tick());
  }
  await stopProfile();
  peaks.changed100 = peakRssMb();
  if (process.env.PF_BENCH_MEM) {
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
    const m = process.memoryUsage();
    console.error(
      `after full GC: heapUsed ${(m.heapUsed / 1048576).toFixed(0)} MB, rss ${(m.rss / 1048576).toFixed(0)} MB`,
    );
  }
  await source.close();
  return { baseline, steady, changed10, changed100, peaks };
}

const BENCH_NODE = 'bench-node';

/**
 * The test API server (real list/watch protocol) with the LOCAL_PODS pods of the bench node at the
 * table's local addresses, and pods of other nodes around them. Prints {kubeconfig}; runs until
 * its stdin closes.
 */
async function kubeApi(): Promise<void> {
  const { KubeApiServer } = await import('../kube-api-server/server.js');
  const { pod } = await import('../kube-api-server/objects.js');
  const server = new KubeApiServer();
  for (let i = 0; i < LOCAL_PODS; i++) {
    server.create(
      'pods',
      pod({ name: `local-${i}`, namespace: 'bench', node: BENCH_NODE, ips: [localV4(i), localV6(i)] }),
    );
  }
  for (let i = 0; i < 2000; i++) {
    server.create(
      'pods',
      pod({ name: `other-${i}`, namespace: 'bench', node: `node-${i % 50}`, ips: [peerV4(i), peerV6(i)] }),
    );
  }
  await server.listen();
  console.log(JSON.stringify({ kubeconfig: server.writeKubeconfig() }));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

/** An exporter's pull loop reduced to its HTTP: pull (gzip), decode, acknowledge; every second. */
async function puller(port: number): Promise<void> {
  const { Packr } = await import('msgpackr');
  const { ACK_PATH, EXPORTER_HEADER, LEASE_HEADER, PULL_PATH } = await import('../../shared/flow.js');
  const packr = new Packr({ useRecords: true });
  const call = (method: string, path: string, headers: Record<string, string>, body?: Buffer) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body);
    });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  for (;;) {
    try {
      const r = await call('GET', PULL_PATH, { [EXPORTER_HEADER]: 'bench' });
      if (r.status === 200) {
        const p = packr.unpack(r.body) as { bootId: string; batches: { seq: number }[] };
        const last = p.batches.at(-1);
        if (last) {
          const ack = packr.pack({
            bootId: p.bootId,
            seq: last.seq,
            lease: String(r.headers[LEASE_HEADER.toLowerCase()]),
          });
          await call('POST', ACK_PATH, { 'content-type': 'application/x-msgpack' }, ack);
        }
      }
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * The whole collector process: cmd/collector.ts run() with the real netfilter source, its reads
 * bumped as the plan says. `loop`: `seconds` of 5 s reads, 10% of the entries growing each time;
 * `ticks`: baseline, 3 steady reads, 3 where every entry grew.
 */
async function collectorProcess(kubeconfig: string, port: number, plan: 'loop' | 'ticks', seconds: number) {
  const { loadConfig } = await import('../../shared/config.js');
  const { createLogger } = await import('../../shared/log.js');
  const { createSource } = await import('../../collector/select-source.js');
  const { run: runCollector } = await import('../../cmd/collector.js');
  const config = loadConfig({
    command: 'collector',
    flags: {
      source: 'netfilter',
      kubeconfig,
      'node-name': BENCH_NODE,
      listen: `127.0.0.1:${port}`,
      interval: '5s',
      'log-level': 'warn',
      'conntrack-acct': false,
    },
    env: {},
  });
  const log = createLogger(config.logLevel, { pretty: false });
  const state = { bump: 0, share: 0 };
  let reads = 0;
  let readDone: () => void = () => {};
  const source = bumping(createSource(config, log), state) as SelectedSource;
  const read = source.read.bind(source);
  source.read = async (visit) => {
    state.bump++;
    const r = await read(visit);
    reads++;
    readDone();
    return r;
  };
  const nextRead = () => new Promise<void>((r) => (readDone = r));
  const abort = new AbortController();
  void runCollector(config, log, abort.signal, { source });
  const c0 = cpuMsOf(process.pid);
  const t0 = performance.now();
  const peaks: Record<string, number> = {};
  if (plan === 'loop') {
    state.share = 0.1;
    while (performance.now() - t0 < seconds * 1000) await nextRead();
  } else {
    await nextRead(); // baseline
    peaks.baseline = peakRssMb();
    for (let k = 0; k < 3; k++) await nextRead();
    peaks.steady = peakRssMb();
    state.share = 1;
    for (let k = 0; k < 3; k++) await nextRead();
    // The pull of the last all-grew batch: an exporter takes it within a second.
    await new Promise((r) => setTimeout(r, 2500));
  }
  const secs = (performance.now() - t0) / 1000;
  const m = process.memoryUsage();
  return {
    reads,
    seconds: secs,
    coreShare: (cpuMsOf(process.pid) - c0) / 1000 / secs,
    peakRssMb: peakRssMb(),
    peaks,
    children: childCount(),
    heapUsedMb: m.heapUsed / 1048576,
    lostEvents: source.lostEvents,
  };
}

// ------------------------------------------------------------------------------------------------
// Outer process: namespaces, table fill, reporting.

const self = fileURLToPath(import.meta.url);
const root = join(dirname(self), '../..');
/**
 * The measured processes run plain JavaScript (this file bundled with esbuild into dist/bench/),
 * so that neither the TypeScript loader's time nor its memory is counted.
 */
const bundle = join(root, 'dist/bench/conntrack.bench.mjs');
const floorBin = join(root, 'dist/bench/ct-floor');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** deploy/helm/podflow/templates/collector-daemonset.yaml, NODE_OPTIONS. */
const COLLECTOR_NODE_ARGS = ['--max-semi-space-size=2'];

/**
 * Extra node flags for the measured podflow process, for profiling (e.g.
 * `PF_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'`). Figures taken so are not comparable.
 */
const nodeArgs = (what: string | undefined): string[] => [
  // The whole collector runs as the chart runs it (NODE_OPTIONS of the DaemonSet).
  ...(what === 'collector' ? COLLECTOR_NODE_ARGS : []),
  ...(what === 'podflow' || what === 'collector'
    ? (process.env.PF_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
    : []),
];

function inner(ns: string, args: string[]): unknown {
  const node = [process.execPath, ...nodeArgs(args[0]), bundle, 'inner', ...args];
  const out = execFileSync('ip', ['netns', 'exec', ns, ...node], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** A long-running inner process (API server, puller); ends when its stdin closes. */
function background(ns: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, bundle, 'inner', ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
}

interface FloorRun {
  wallMs: number;
  cpuMs: number;
  entries: number;
}

/** The C loop, three dumps: the median. */
function cFloor(ns: string): FloorRun {
  const out = execFileSync('ip', ['netns', 'exec', ns, floorBin, '3'], { encoding: 'utf8' });
  const runs = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as FloorRun)
    .sort((a, b) => a.wallMs - b.wallMs);
  return runs[1]!;
}

async function wholeCollector(ns: string, n: number) {
  const api = background(ns, ['kubeapi']);
  const first = await createInterface({ input: api.stdout! })[Symbol.asyncIterator]().next();
  const { kubeconfig } = JSON.parse(String(first.value)) as { kubeconfig: string };
  const port = 9470;
  const pull = background(ns, ['puller', String(port)]);
  try {
    const plan = n <= 10_000 ? 'loop' : 'ticks';
    return {
      plan,
      ...(inner(ns, ['collector', kubeconfig, String(port), plan, '60']) as Awaited<
        ReturnType<typeof collectorProcess>
      >),
    };
  } finally {
    pull.stdin?.end();
    api.stdin?.end();
  }
}

async function outer(sizes: number[]) {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, conntrack)');
  // The bundle is `bundle` (dist/bench/conntrack.bench.mjs): chunks per dynamic import, so each
  // measured process loads only the modules of its mode.
  bundled(import.meta.url, { splitting: true });
  execFileSync('cc', ['-O2', '-o', floorBin, join(root, 'native/test/ct-floor.c')]);
  const rows: string[] = [];
  // PF_BENCH_SHAPE=few-flows-per-pair (or many-…) measures one shape only.
  const shapes = (['few-flows-per-pair', 'many-flows-per-pair'] as Shape[]).filter(
    (s) => (process.env.PF_BENCH_SHAPE ?? s) === s,
  );
  const fmt = (x: number) => x.toFixed(0).padStart(6);
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  console.log(`node ${process.version}, ${new Date().toISOString()}`);
  for (const n of sizes) {
    for (const shape of shapes) {
      const ns = `pf-${process.pid}-${Math.random().toString(16).slice(2, 8)}-bench`;
      execFileSync('ip', ['netns', 'add', ns]);
      try {
        execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
        execFileSync('ip', ['netns', 'exec', ns, 'nft', 'add table inet bench']);
        execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_acct=1']);
        try {
          execFileSync(
            'ip',
            ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.netfilter.nf_conntrack_max=${n + 10000}`],
            { stdio: 'ignore' },
          );
        } catch {
          // Capped by the root namespace's value; fine while it is above n.
        }
        const filled = inner(ns, ['fill', String(n), shape]) as { created: number; errors: number };
        const floors = [cFloor(ns)];
        const addon = inner(ns, ['addon']) as FloorRun;
        const p = inner(ns, ['podflow']) as Awaited<ReturnType<typeof podflow>>;
        const whole =
          shape === shapes[0] && (n <= 10_000 || n >= 250_000) ? await wholeCollector(ns, n) : undefined;
        // The machine may be shared: measure the floor again after podflow and keep the better one.
        floors.push(cFloor(ns));
        const fw = Math.min(...floors.map((f) => f.wallMs));
        const fc = Math.min(...floors.map((f) => f.cpuMs));
        const line = (name: string, wall: number, cpu: number, extra = '') =>
          `  ${name.padEnd(26)} wall ${fmt(wall)} ms (${ratio(wall, fw)})  cpu ${fmt(cpu)} ms (${ratio(cpu, fc)})${extra}`;
        rows.push(
          `N=${n} ${shape}: ${filled.created} entries created (${filled.errors} errors), dump saw ${floors[0]!.entries}`,
          line('floor (C loop, headers)', fw, fc),
          line('addon receive (framing)', addon.wallMs, addon.cpuMs),
          line('podflow baseline tick', p.baseline.wallMs, p.baseline.cpuMs),
          line(
            'podflow steady tick',
            median(p.steady.map((t) => t.wallMs)),
            median(p.steady.map((t) => t.cpuMs)),
          ),
          line(
            'podflow tick, 10% grew',
            median(p.changed10.map((t) => t.wallMs)),
            median(p.changed10.map((t) => t.cpuMs)),
            `  flows ${p.changed10[1]!.flows}`,
          ),
          line(
            'podflow tick, 100% grew',
            median(p.changed100.map((t) => t.wallMs)),
            median(p.changed100.map((t) => t.cpuMs)),
            `  flows ${p.changed100[1]!.flows}`,
          ),
          `  source+reducer peak RSS: baseline ${p.peaks.baseline!.toFixed(0)} MB, steady ${p.peaks.steady!.toFixed(0)} MB, 10% grew ${p.peaks.changed10!.toFixed(0)} MB, 100% grew ${p.peaks.changed100!.toFixed(0)} MB`,
        );
        if (whole) {
          const what =
            whole.plan === 'loop'
              ? `${whole.reads} reads over ${whole.seconds.toFixed(0)} s, 10% growing`
              : `baseline ${whole.peaks.baseline!.toFixed(0)} MB, steady ${whole.peaks.steady!.toFixed(0)} MB, then 3 reads where every entry grew`;
          rows.push(
            `  whole collector process (${what}; node ${COLLECTOR_NODE_ARGS.join(' ')}): peak RSS ${whole.peakRssMb.toFixed(0)} MB, ${whole.children} child processes, ${(whole.coreShare * 100).toFixed(2)}% of a core (floor: ${((fc / 5000) * 100).toFixed(2)}% for one dump per 5 s), lost events ${whole.lostEvents}`,
          );
        }
        console.log(rows.splice(0).join('\n'));
      } finally {
        execFileSync('ip', ['netns', 'del', ns]);
      }
    }
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'inner') {
  const [what, a, b, c, d] = rest;
  let result: unknown;
  if (what === 'fill') result = await fill(Number(a), b as Shape);
  else if (what === 'addon') result = await addonReceive();
  else if (what === 'podflow') result = await podflow();
  else if (what === 'kubeapi') await kubeApi();
  else if (what === 'puller') await puller(Number(a));
  else if (what === 'collector')
    result = await collectorProcess(a!, Number(b), c as 'loop' | 'ticks', Number(d));
  if (result !== undefined) {
    console.log(JSON.stringify(result));
    process.exit(0);
  }
} else {
  const sizes = mode ? [mode, ...rest].map(Number) : [10_000, 100_000, 250_000];
  await outer(sizes);
}
