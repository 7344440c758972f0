// Benchmark of one collector tick on the netfilter source against the floor measured in the same run.
//
//   npm run bench:conntrack            (root; creates and deletes its own network namespaces)
//   npm run bench:conntrack -- 10000   (only the given table sizes)
//   PF_BENCH_SHAPE=few-flows-per-pair, PF_BENCH_NODE_ARGS='--cpu-prof …': one shape; profile podflow
//   PF_BENCH_PROFILE_GREW=/tmp/grew.cpuprofile: CPU profile of the all-grew ticks only
//
// For each table size N and shape (few flows per peer pair / many flows per peer pair) it fills a
// fresh namespace's conntrack table with N entries through ctnetlink NEW (a batch of messages per
// datagram), then measures in separate processes inside that namespace:
// - floor: the same dump received through the `netlink` package's RawNetlinkSocket, framing only
//   (no attribute parsing), with the same socket settings podflow uses;
// - podflow: reducer.tick() on the netfilter source: the baseline tick, steady ticks with no
//   counter change, ticks where 10% and 100% of the entries grew (counters bumped on the way from
//   the real dump to the tracker, as the kernel cannot be told to set counters).
// Reported: wall time, CPU time (process.cpuUsage), peak RSS (VmHWM), and ratios to the floor.
// For N = 10k it also runs a 5 s interval loop for 30 s and reports the average share of a core, with
// and without the events subscriber child.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RawNetlinkSocket } from 'netlink';
import {
  AF_UNSPEC,
  buildDumpRequest,
  buildMessage,
  type EntrySpec,
  entryAttrs,
  IPCTNL_MSG_CT_NEW,
  NETLINK_NETFILTER,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
} from '../../collector/netfilter/ctnetlink.js';
import { createNetfilterSource } from '../../collector/netfilter/source.js';
import { createReducer } from '../../collector/reduce.js';
import type { ConnSample, ConntrackSource } from '../../collector/source.js';
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

/**
 * Memory of our child processes (the events subscriber): RSS, and its proportional share (Pss),
 * which counts the node binary's pages shared with this process only once.
 */
function childrenMemMb(): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const pid of readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim().split(/\s+/)) {
    if (!pid) continue;
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    rss += Number(/^Rss:\s+(\d+)/m.exec(t)?.[1] ?? 0) / 1024;
    pss += Number(/^Pss:\s+(\d+)/m.exec(t)?.[1] ?? 0) / 1024;
  }
  return { rss, pss };
}

/** CPU time (ms) used so far by our child processes (the events subscriber), from /proc (10 ms steps). */
function childrenCpuMs(): number {
  let ms = 0;
  for (const pid of readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim().split(/\s+/)) {
    if (!pid) continue;
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ms += (Number(f[11]) + Number(f[12])) * 10; // utime + stime in clock ticks (USER_HZ = 100)
  }
  return ms;
}

async function fill(n: number, shape: Shape): Promise<{ created: number; errors: number }> {
  const sock = new RawNetlinkSocket(NETLINK_NETFILTER, { recvBufferSize: 8 << 20, sendBufferSize: 4 << 20 });
  let errors = 0;
  sock.on('error', () => {
    errors++;
  });
  sock.on('message', (b: Buffer) => {
    try {
      for (let off = 0; off + 16 <= b.length; ) {
        const len = b.readUInt32LE(off);
        if (len < 16) break;
        if (b.readUInt16LE(off + 4) === NLMSG_ERROR && b.readInt32LE(off + 16) !== 0) errors++;
        off += (len + 3) & ~3;
      }
    } catch {}
  });
  const perDatagram = 64;
  let seq = 1;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < n; i += perDatagram) {
    const msgs: Buffer[] = [];
    for (let j = i; j < Math.min(n, i + perDatagram); j++) {
      msgs.push(
        buildMessage(
          IPCTNL_MSG_CT_NEW,
          NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
          seq++,
          AF_UNSPEC + (entry(j, shape).orig.src.includes(':') ? 10 : 2),
          entryAttrs(entry(j, shape)),
        ),
      );
    }
    const dgram = Buffer.concat(msgs);
    pending.push(new Promise<void>((resolve) => sock.send(dgram, { port: 0 }, () => resolve())));
    if (pending.length >= 256) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  await new Promise((r) => setTimeout(r, 200)); // let error replies arrive
  sock.close();
  return { created: n - errors, errors };
}

/** Three dumps in one process (as podflow's steady ticks are measured after warm-up): the median. */
async function floor(bufferSize: number): Promise<{ wallMs: number; cpuMs: number; entries: number }> {
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(await floorOnce(bufferSize));
  runs.sort((a, b) => a.wallMs - b.wallMs);
  return runs[1]!;
}

async function floorOnce(bufferSize: number): Promise<{ wallMs: number; cpuMs: number; entries: number }> {
  const sock = new RawNetlinkSocket(NETLINK_NETFILTER, {
    messagePeeking: bufferSize === 0,
    msgBufferSize: bufferSize || 4096,
    recvBufferSize: 4 << 20,
    sendBufferSize: 256 << 10,
  });
  let entries = 0;
  let done: () => void = () => {};
  sock.on('error', () => {});
  sock.on('message', (b: Buffer) => {
    try {
      // Framing only: find message boundaries and the DONE that ends the dump.
      for (let off = 0; off + 16 <= b.length; ) {
        const len = b.readUInt32LE(off);
        if (len < 16) break;
        if (b.readUInt16LE(off + 4) === NLMSG_DONE) done();
        else entries++;
        off += (len + 3) & ~3;
      }
    } catch {}
  });
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    done = resolve;
    sock.send(buildDumpRequest(1, AF_UNSPEC), { port: 0 }, () => {});
  });
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  sock.close();
  return { wallMs, cpuMs: (c.user + c.system) / 1000, entries };
}

/** The floor of the collector's steady state: one bare dump every 5 s. */
async function floorLoop(seconds: number): Promise<{ coreShare: number; seconds: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await floorOnce(32768);
    await new Promise((r) => setTimeout(r, 5000));
  }
  const c = process.cpuUsage(c0);
  const secs = (performance.now() - t0) / 1000;
  return { coreShare: (c.user + c.system) / 1e6 / secs, seconds: secs };
}

/** A source whose samples' counters grew by `bump` for `share` of the entries (1 = all). */
function bumping(inner: ConntrackSource, state: { bump: number; share: number }): ConntrackSource {
  return {
    name: inner.name,
    start: () => inner.start(),
    close: () => inner.close(),
    drainEnded: (v) => inner.drainEnded(v),
    read: (visit) => {
      let i = 0;
      const step = state.share > 0 ? Math.round(1 / state.share) : 0;
      return inner.read((s: ConnSample) => {
        if (step > 0 && i++ % step === 0) {
          s.origBytes += state.bump * 100;
          s.origPackets += state.bump;
          s.replyBytes += state.bump * 300;
          s.replyPackets += state.bump;
        }
        visit(s);
      });
    },
  };
}

async function podflow(loopSeconds: number) {
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
  let loop: { coreShare: number; childShare: number; seconds: number } | undefined;
  if (loopSeconds > 0) {
    // The collector's steady state: a tick every 5 s with 10% of the entries growing. The events
    // subscriber's CPU counts too.
    state.share = 0.1;
    const c0 = process.cpuUsage();
    const ch0 = childrenCpuMs();
    const t0 = performance.now();
    while (performance.now() - t0 < loopSeconds * 1000) {
      state.bump++;
      await reducer.tick(source);
      await new Promise((r) => setTimeout(r, 5000));
    }
    const c = process.cpuUsage(c0);
    const secs = (performance.now() - t0) / 1000;
    loop = {
      coreShare: (c.user + c.system) / 1e6 / secs,
      childShare: (childrenCpuMs() - ch0) / 1000 / secs,
      seconds: secs,
    };
  }
  const child = childrenMemMb();
  await source.close();
  return { baseline, steady, changed10, changed100, loop, peaks, child };
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
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Extra node flags for the measured podflow process, for profiling (e.g.
 * `PF_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'`). Figures taken so are not comparable.
 */
const nodeArgs = (what: string | undefined): string[] =>
  what === 'podflow' ? (process.env.PF_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '') : [];

function inner(ns: string, args: string[]): unknown {
  const node = [process.execPath, ...nodeArgs(args[0]), bundle, 'inner', ...args];
  const out = execFileSync('ip', ['netns', 'exec', ns, ...node], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

async function outer(sizes: number[]) {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network namespaces, conntrack)');
  // The events subscriber child is bundled beside it (the source finds it next to itself).
  const esbuild = join(root, 'node_modules/.bin/esbuild');
  const common = ['--bundle', '--platform=node', '--format=esm', '--external:netlink', '--log-level=warning'];
  execFileSync(esbuild, [self, ...common, '--external:pino', `--outfile=${bundle}`]);
  execFileSync(esbuild, [
    join(root, 'collector/netfilter/events-child.ts'),
    ...common,
    `--outfile=${join(dirname(bundle), 'events-child.mjs')}`,
  ]);
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
        execFileSync('ip', ['netns', 'exec', ns, 'nft', 'add table inet bench']);
        execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_acct=1']);
        try {
          execFileSync(
            'ip',
            ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.netfilter.nf_conntrack_max=${n + 10000}`],
            {
              stdio: 'ignore',
            },
          );
        } catch {
          // Capped by the root namespace's value; fine while it is above n.
        }
        const filled = inner(ns, ['fill', String(n), shape]) as { created: number; errors: number };
        const floors32 = [
          inner(ns, ['floor', '32768']) as {
            wallMs: number;
            cpuMs: number;
            entries: number;
            peakRssMb: number;
          },
        ];
        const floorsPeek = [
          inner(ns, ['floor', '0']) as { wallMs: number; cpuMs: number; peakRssMb: number },
        ];
        const loopSeconds = n <= 10_000 && shape === shapes[0] ? 30 : 0;
        const p = inner(ns, ['podflow', String(loopSeconds)]) as Awaited<ReturnType<typeof podflow>>;
        // The machine may be shared: measure the floor again after podflow and keep the better one.
        floors32.push(inner(ns, ['floor', '32768']) as (typeof floors32)[number]);
        const floorLoopResult =
          loopSeconds > 0
            ? (inner(ns, ['floorloop', String(loopSeconds)]) as { coreShare: number })
            : undefined;
        const fw = Math.min(...floors32.map((f) => f.wallMs));
        const fc = Math.min(...floors32.map((f) => f.cpuMs));
        const fr = Math.max(...floors32.map((f) => f.peakRssMb));
        const line = (name: string, wall: number, cpu: number, extra = '') =>
          `  ${name.padEnd(26)} wall ${fmt(wall)} ms (${ratio(wall, fw)})  cpu ${fmt(cpu)} ms (${ratio(cpu, fc)})${extra}`;
        rows.push(
          `N=${n} ${shape}: ${filled.created} entries created (${filled.errors} errors), dump saw ${floors32[0]!.entries}`,
          line('floor (32 KiB datagrams)', fw, fc, `  peak RSS ${fr.toFixed(0)} MB`),
          line(
            'floor (peeking, pkg default)',
            median(floorsPeek.map((f) => f.wallMs)),
            median(floorsPeek.map((f) => f.cpuMs)),
            `  peak RSS ${Math.max(...floorsPeek.map((f) => f.peakRssMb)).toFixed(0)} MB`,
          ),
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
          `  podflow peak RSS: baseline ${p.peaks.baseline!.toFixed(0)} MB, steady ${p.peaks.steady!.toFixed(0)} MB, 10% grew ${p.peaks.changed10!.toFixed(0)} MB, 100% grew ${p.peaks.changed100!.toFixed(0)} MB (floor process ${fr.toFixed(0)} MB)`,
          `  events subscriber child: RSS ${p.child.rss.toFixed(0)} MB, Pss ${p.child.pss.toFixed(0)} MB (most of its RSS is the node binary, shared)`,
        );
        if (p.loop && floorLoopResult) {
          rows.push(
            `  5 s interval loop at N=${n}, 10% growing: ${(p.loop.coreShare * 100).toFixed(2)}% of a core over ${p.loop.seconds.toFixed(0)} s; floor loop ${(floorLoopResult.coreShare * 100).toFixed(2)}% (${ratio(p.loop.coreShare, floorLoopResult.coreShare)})`,
            `    with the events subscriber: ${((p.loop.coreShare + p.loop.childShare) * 100).toFixed(2)}% (child ${(p.loop.childShare * 100).toFixed(2)}%, ${ratio(p.loop.coreShare + p.loop.childShare, floorLoopResult.coreShare)})`,
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
  const [what, a, b] = rest;
  let result: unknown;
  if (what === 'fill') result = await fill(Number(a), b as Shape);
  else if (what === 'floor') result = { ...(await floor(Number(a))), peakRssMb: peakRssMb() };
  else if (what === 'podflow') result = await podflow(Number(a));
  else if (what === 'floorloop') result = await floorLoop(Number(a));
  console.log(JSON.stringify(result));
  process.exit(0);
} else {
  const sizes = mode ? [mode, ...rest].map(Number) : [10_000, 100_000, 250_000];
  await outer(sizes);
}
