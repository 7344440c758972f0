// Benchmark of one collector tick on the Cilium source against the floor measured in the same run.
//
//   npm run bench:cilium            (root; mounts a private bpffs, creates and removes its own maps)
//   npm run bench:cilium -- 50000   (another total entry count; default 250000)
//   PF_BENCH_PROFILE_GREW=/tmp/grew.cpuprofile: CPU profile of the all-grown ticks only
//
// Fills Cilium's four conntrack maps (≤1.15 layout, OUT and IN entries, 200 local pods) with N
// entries in all, then measures in separate processes:
// - floor: the bulk read alone — every map read through the addon in the same chunks podflow uses
//   (BPF_MAP_LOOKUP_BATCH), no parsing;
// - podflow: reducer.tick() on the Cilium source: the baseline tick, steady ticks (no counter
//   change), and ticks after every entry's counters grew (the maps rewritten between ticks; the
//   median of three). The floor is measured before and after (on the grown maps); the better one.
// Reported: wall time, CPU time, peak RSS (VmHWM), and ratios to the floor. Nothing is asserted.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CiliumSource } from '../../collector/cilium/source.js';
import { createReducer } from '../../collector/reduce.js';
import { CURSOR_SIZE, isDone, loadBpf } from '../../native/index.js';
import {
  CT_IN,
  CT_OUT,
  createMap,
  KEY4_SIZE,
  KEY6_SIZE,
  monoSeconds,
  mountBpffs,
  putEntries,
} from '../helpers/bpf.js';
import { bundled } from './bundle.js';
import { profileIf } from './profile.js';

const MAPS = [
  { name: 'cilium_ct4_global', share: 0.6, v6: false, proto: 6, max: 524288 },
  { name: 'cilium_ct_any4_global', share: 0.16, v6: false, proto: 17, max: 262144 },
  { name: 'cilium_ct6_global', share: 0.2, v6: true, proto: 6, max: 524288 },
  { name: 'cilium_ct_any6_global', share: 0.04, v6: true, proto: 17, max: 262144 },
] as const;
const PODS = 200;
const PEERS = 1500;
const CHUNK = 8192;

const podIp = (i: number, v6: boolean) => (v6 ? `fd00::${i.toString(16)}` : `10.0.1.${i}`);

/** All entries of one map as key/value records, written into one Buffer (no per-entry garbage). */
function records(m: (typeof MAPS)[number], count: number, grow: number): Buffer {
  const ks = m.v6 ? KEY6_SIZE : KEY4_SIZE;
  const a = m.v6 ? 16 : 4;
  const out = Buffer.alloc(count * (ks + 56));
  const lifetime = (monoSeconds() + 6 * 3600) >>> 0;
  for (let i = 0; i < count; i++) {
    const o = i * (ks + 56);
    const inbound = i % 4 === 0;
    const pod = i % PODS;
    const peer = (i * 7) % PEERS;
    // Cilium's key: the opener's address first (daddr), then the destination's (saddr).
    const podAt = o + (inbound ? a : 0);
    const peerAt = o + (inbound ? 0 : a);
    if (m.v6) {
      out.writeUInt32BE(0xfd000000, podAt);
      out.writeUInt32BE(pod, podAt + 12);
      out.writeUInt32BE(0xfd000009, peerAt);
      out.writeUInt32BE(peer, peerAt + 12);
    } else {
      out.writeUInt32BE((10 << 24) | (1 << 8) | pod, podAt);
      out.writeUInt32BE(((10 << 24) | (9 << 16) | peer) >>> 0, peerAt);
    }
    out.writeUInt16BE(inbound ? 8080 : 443, o + 2 * a); // dport
    out.writeUInt16BE(1024 + ((i >> 3) % 60000), o + 2 * a + 2); // sport
    out[o + 2 * a + 4] = m.proto;
    out[o + 2 * a + 5] = inbound ? CT_IN : CT_OUT;
    // Unique tuples: spread the rest of i over the destination port of outbound entries.
    if (!inbound) out.writeUInt16BE(443 + Math.floor(i / (8 * 60000)), o + 2 * a);
    const v = o + ks;
    out.writeUInt32LE(10 + grow, v); // rx_packets
    out.writeUInt32LE(1000 + (i % 5000) + grow * 7, v + 8); // rx_bytes
    out.writeUInt32LE(5 + grow, v + 16); // tx_packets
    out.writeUInt32LE(500 + (i % 3000) + grow * 3, v + 24); // tx_bytes
    out.writeUInt32LE(lifetime, v + 32);
  }
  return out;
}

async function fill(dir: string, total: number, grow: number): Promise<void> {
  for (const m of MAPS) {
    const ks = m.v6 ? KEY6_SIZE : KEY4_SIZE;
    await putEntries(join(dir, m.name), ks, 56, records(m, Math.round(total * m.share), grow));
  }
}

/** Resets the peak RSS counter (VmHWM) so that a phase reports its own peak. */
function resetPeak(): void {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {}
}

const peakRss = () =>
  Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(fn: () => unknown | Promise<unknown>): Promise<{ ms: number; cpu: number }> {
  const c0 = cpuMs();
  const t0 = performance.now();
  await fn();
  return { ms: performance.now() - t0, cpu: cpuMs() - c0 };
}

/** Child: the bulk read alone. */
async function floor(dir: string): Promise<object> {
  const bpf = loadBpf();
  const keys = Buffer.alloc(CHUNK * KEY6_SIZE);
  const values = Buffer.alloc(CHUNK * 56);
  const cursor = Buffer.alloc(CURSOR_SIZE);
  const fds = MAPS.map((m) => ({ fd: bpf.openPinned(join(dir, m.name)), ks: m.v6 ? KEY6_SIZE : KEY4_SIZE }));
  let entries = 0;
  const once = () => {
    entries = 0;
    for (const { fd, ks } of fds) {
      cursor.fill(0);
      const k = keys.subarray(0, CHUNK * ks);
      while (!isDone(cursor)) entries += bpf.readChunk(fd, ks, 56, k, values, cursor, 'batch');
    }
  };
  const runs: { ms: number; cpu: number }[] = [];
  for (let i = 0; i < 7; i++) runs.push(await timed(once));
  return {
    entries,
    ms: median(runs.map((r) => r.ms)),
    cpu: median(runs.map((r) => r.cpu)),
    peakRssMb: peakRss(),
  };
}

/** Child: podflow's read + reduce tick. */
async function podflow(dir: string, total: number): Promise<object> {
  const local = new Set<string>();
  for (let i = 0; i < PODS; i++) {
    local.add(podIp(i, false));
    local.add(podIp(i, true));
  }
  const source = new CiliumSource({
    ciliumBpfPath: dir,
    ciliumLayout: 'auto',
    ciliumClock: 'auto',
    procPath: '/proc',
  });
  await source.start();
  const reducer = createReducer({ groupPublicIps: false }, { podIndex: { isLocal: (ip) => local.has(ip) } });
  let flows = 0;
  let entries = 0;
  const tick = async () => {
    const r = await reducer.tick(source);
    flows = r.columns.length;
    entries = r.entries;
  };
  // The source alone (read + parse into samples, no tracker): the part this source adds to the floor.
  const parse: { ms: number; cpu: number }[] = [];
  for (let i = 0; i < 5; i++) parse.push(await timed(() => source.read(() => {})));
  const baseline = await timed(tick);
  const steady: { ms: number; cpu: number }[] = [];
  for (let i = 0; i < 5; i++) steady.push(await timed(tick));
  const steadyPeakRssMb = peakRss();
  // Every counter grows (the maps rewritten, not timed), three times: the median tick. The fill's
  // buffers are this benchmark's, not podflow's: collected, and the peak counter reset, before each.
  const grownRuns: { ms: number; cpu: number }[] = [];
  let grownPeakRssMb = 0;
  for (let g = 1; g <= 3; g++) {
    await fill(dir, total, g);
    (globalThis as { gc?: () => void }).gc?.();
    resetPeak();
    const stopProfile = await profileIf(process.env.PF_BENCH_PROFILE_GREW);
    grownRuns.push(await timed(tick));
    await stopProfile();
    grownPeakRssMb = Math.max(grownPeakRssMb, peakRss());
  }
  const grown = { ms: median(grownRuns.map((r) => r.ms))!, cpu: median(grownRuns.map((r) => r.cpu))! };
  const grownFlows = flows;
  // The source alone again, on the grown maps (rewritten: the kernel's elements moved).
  const parseGrown: { ms: number; cpu: number }[] = [];
  for (let i = 0; i < 5; i++) parseGrown.push(await timed(() => source.read(() => {})));
  await source.close();
  return {
    entries,
    parseMs: median(parse.map((r) => r.ms)),
    parseCpu: median(parse.map((r) => r.cpu)),
    parseGrownCpu: median(parseGrown.map((r) => r.cpu)),
    baselineMs: baseline.ms,
    steadyMs: median(steady.map((r) => r.ms)),
    steadyCpu: median(steady.map((r) => r.cpu)),
    grownMs: grown.ms,
    grownCpu: grown.cpu,
    grownFlows,
    peakRssMb: Math.max(steadyPeakRssMb, grownPeakRssMb),
    steadyPeakRssMb,
    grownPeakRssMb,
  };
}

/**
 * Extra node flags for the measured podflow child, for profiling (e.g.
 * `PF_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'`). Figures taken so are not comparable.
 */
const nodeArgs = (mode: string): string[] =>
  mode === 'podflow' ? (process.env.PF_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '') : [];

async function main(): Promise<void> {
  const [mode, dir, totalArg] = process.argv.slice(2);
  if (mode === 'floor' || mode === 'podflow') {
    const out = mode === 'floor' ? await floor(dir) : await podflow(dir, Number(totalArg));
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  const total = Number(mode ?? 250_000);
  if (process.getuid?.() !== 0) throw new Error('bench:cilium needs root (bpffs mount, BPF maps)');
  const mnt = await mountBpffs();
  try {
    for (const m of MAPS) {
      await createMap(join(mnt.dir, m.name), {
        keySize: m.v6 ? KEY6_SIZE : KEY4_SIZE,
        valueSize: 56,
        maxEntries: m.max,
      });
    }
    const t0 = performance.now();
    await fill(mnt.dir, total, 0);
    console.log(`filled ${total} entries in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // The measured processes run plain JavaScript (test/bench/bundle.ts), so that the TypeScript
    // loader's time and memory are not counted.
    const bundle = bundled(import.meta.url);
    const child = (m: string) =>
      JSON.parse(
        execFileSync(process.execPath, ['--expose-gc', ...nodeArgs(m), bundle, m, mnt.dir, String(total)], {
          encoding: 'utf8',
          maxBuffer: 1 << 24,
        }),
      );
    const f0 = child('floor');
    const p = child('podflow');
    // The machine may be shared, and the maps were rewritten by the growth phase: measure the floor
    // again on the grown maps and keep the better one.
    const f1 = child('floor');
    const f = f1.cpu < f0.cpu ? { ...f1, peakRssMb: Math.max(f0.peakRssMb, f1.peakRssMb) } : f0;
    const r = (x: number) => (x / f.ms).toFixed(2);
    // CPU time too: on a busy machine wall time mostly measures waiting for a core.
    const rc = (x: number) => (x / f.cpu).toFixed(2);
    console.log(`entries read: ${f.entries}`);
    console.log(
      `floor   bulk read (batch, chunks of ${CHUNK}): ${f.ms.toFixed(1)} ms wall, ${f.cpu.toFixed(1)} ms CPU, peak RSS ${f.peakRssMb.toFixed(0)} MB (CPU before ${f0.cpu.toFixed(1)}, on the grown maps ${f1.cpu.toFixed(1)}: the better one)`,
    );
    console.log(
      `source read + parse:    ${p.parseMs.toFixed(1)} ms wall (${r(p.parseMs)}× floor), ${p.parseCpu.toFixed(1)} ms CPU (${rc(p.parseCpu)}×); on the grown maps ${p.parseGrownCpu.toFixed(1)} ms CPU (${rc(p.parseGrownCpu)}×)`,
    );
    console.log(`podflow baseline tick:  ${p.baselineMs.toFixed(1)} ms (${r(p.baselineMs)}× floor)`);
    console.log(
      `podflow steady tick:    ${p.steadyMs.toFixed(1)} ms wall (${r(p.steadyMs)}× floor), ${p.steadyCpu.toFixed(1)} ms CPU (${rc(p.steadyCpu)}×)`,
    );
    console.log(
      `podflow all-grown tick: ${p.grownMs.toFixed(1)} ms wall (${r(p.grownMs)}× floor), ${p.grownCpu.toFixed(1)} ms CPU (${rc(p.grownCpu)}×), ${p.grownFlows} flows`,
    );
    console.log(
      `podflow peak RSS: ${p.peakRssMb.toFixed(0)} MB (baseline + steady ${p.steadyPeakRssMb.toFixed(0)}, all grown ${p.grownPeakRssMb.toFixed(0)}; floor process ${f.peakRssMb.toFixed(0)} MB, ratio ${(p.peakRssMb / f.peakRssMb).toFixed(2)})`,
    );
  } finally {
    await mnt.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
