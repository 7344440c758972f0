// Benchmark of `--state-dir`: what writing the state costs per tick, next to the tick itself.
//
//   npm run bench:state              (10k and 250k connections)
//   npm run bench:state -- 50000     (only the given sizes)
//   PF_BENCH_DIR=/var/lib/podflow    (where to write; default: a directory under the OS tmpdir)
//
// For each size N it runs the real reducer (tracker + series) on an in-memory source of N
// connections (2 flows per peer pair, half of the peers pods of the node) and, after every tick,
// the real Checkpoint writing to a real StateStore (temp file, fsync, rename, fsync of the
// directory). Ticks: the baseline, steady (no counter changed), 10% of connections grew, all grew;
// the backlog keeps every batch (as when no exporter pulls), so the state carries them too. A pull
// recording a boundary is measured as well (the tracker section is reused, batches are cached).
// Printed: the in-memory tick's time, the state write's time (encode + write + fsyncs), its ratio
// to the in-memory tick and to the netfilter tick measured by bench:conntrack (docs/collector.md),
// and the file size. Figures, not assertions.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Backlog } from '../../collector/backlog.js';
import { Checkpoint } from '../../collector/checkpoint.js';
import { createReducer } from '../../collector/reduce.js';
import type { ConnSample, ConntrackSource } from '../../collector/source.js';
import { decodeState, StateStore } from '../../collector/state.js';
import { silentLogger } from '../../shared/log.js';

/** A netfilter tick of bench:conntrack on a real table (docs/collector.md, steady / all grew), ms. */
const NETFILTER_TICK_MS: Record<number, [number, number]> = { 10000: [40, 43], 250000: [709, 965] };

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const SIZES = sizes.length > 0 ? sizes : [10_000, 250_000];

class MemorySource implements ConntrackSource {
  readonly name = 'netfilter' as const;
  readonly orig: Float64Array;
  private readonly s: ConnSample;
  constructor(readonly n: number) {
    this.orig = new Float64Array(n).fill(1000);
    this.s = {
      family: 4,
      proto: 6,
      zone: 0,
      id: 0,
      origSrc: '',
      origDst: '',
      origSport: 0,
      origDport: 443,
      replySrc: '',
      origBytes: 0,
      origPackets: 0,
      replyBytes: 0,
      replyPackets: 0,
      hasCounters: true,
    };
  }
  async start(): Promise<void> {}
  async close(): Promise<void> {}
  drainEnded(): void {}
  grow(share: number): void {
    const step = Math.max(1, Math.round(1 / share));
    for (let i = 0; i < this.n; i += step) this.orig[i]! += 1500;
  }
  async read(visit: (s: ConnSample) => void) {
    const s = this.s;
    for (let i = 0; i < this.n; i++) {
      // 2 connections per peer pair; locals 10.1.x.y (pods), peers 10.2.x.y.
      const pair = i >> 1;
      s.id = i + 1;
      s.key = (Math.imul(i + 1, 2654435761) >>> 0) ^ 0x5bd1e995;
      s.key2 = i + 1;
      s.origSrc = `10.1.${(pair >> 8) & 255}.${pair & 255}`;
      s.origDst = `10.2.${(pair >> 16) & 255}.${(pair >> 8) & 255}`;
      s.replySrc = s.origDst;
      s.origSport = 10000 + (i & 1);
      s.origBytes = this.orig[i]!;
      s.origPackets = Math.ceil(this.orig[i]! / 1500);
      s.replyBytes = this.orig[i]! * 2;
      s.replyPackets = s.origPackets;
      visit(s);
    }
    return { entries: this.n, parseErrors: 0 };
  }
}

const ms = (t0: number) => performance.now() - t0;
const fmt = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));

async function run(n: number, dir: string): Promise<void> {
  const source = new MemorySource(n);
  const reducer = createReducer(
    { groupPublicIps: false },
    { podIndex: { isLocal: (ip) => ip.startsWith('10.1.') } },
  );
  const backlog = new Backlog({ backlogMaxFlows: 10_000_000, holdNew: true }, { bootId: 'bench' });
  const store = new StateStore(join(dir, `n${n}`));
  await store.open();
  const sizes: number[] = [];
  const cp = new Checkpoint({
    store: {
      write: (b) => {
        sizes.push(b.length);
        return store.write(b);
      },
      discard: () => store.discard(),
    },
    backlog,
    tracker: () => reducer.snapshot(),
    trackerVersion: () => reducer.trackerVersion,
    owner: () => ({ node: 'bench', source: 'netfilter' }),
    log: silentLogger,
  });
  cp.mark();
  const [nfSteady, nfAll] = NETFILTER_TICK_MS[n] ?? [Number.NaN, Number.NaN];
  const row = async (label: string, grow: number, nf: number) => {
    if (grow > 0) source.grow(grow);
    let t0 = performance.now();
    const r = await reducer.tick(source);
    const tick = ms(t0);
    backlog.append(0, 1, r.columns);
    t0 = performance.now();
    await cp.afterTick();
    const write = ms(t0);
    const bytes = sizes[sizes.length - 1]!;
    console.log(
      `${String(n).padStart(7)}  ${label.padEnd(9)} flows ${String(r.columns.length).padStart(6)}  tick ${fmt(tick).padStart(5)} ms  state ${fmt(write).padStart(5)} ms (${(write / tick).toFixed(2)}× the in-memory tick, ${Number.isNaN(nf) ? '—' : `${((100 * write) / nf).toFixed(0)}% of a netfilter tick`})  ${(bytes / 1e6).toFixed(2)} MB  batches ${backlog.stats().batches}`,
    );
  };
  await row('baseline', 0, nfSteady);
  await row('steady', 0, nfSteady);
  await row('10% grew', 0.1, nfSteady);
  await row('all grew', 1, nfAll);
  await row('steady', 0, nfSteady);
  // A pull recording a boundary: written before the pull is answered. Tracker section reused,
  // batch sections cached.
  backlog.pull();
  let t0 = performance.now();
  await cp.boundariesDurable();
  console.log(
    `${String(n).padStart(7)}  pull      boundary write ${fmt(ms(t0))} ms  ${(sizes[sizes.length - 1]! / 1e6).toFixed(2)} MB`,
  );
  // Reading it back, as a restarted collector does.
  const { readFile } = await import('node:fs/promises');
  t0 = performance.now();
  const d = decodeState(await readFile(store.file));
  const read = ms(t0);
  if (!d.ok) throw new Error(d.reason);
  t0 = performance.now();
  const r2 = createReducer({ groupPublicIps: false }, { podIndex: { isLocal: () => true } });
  r2.restore(d.state.tracker);
  const b2 = new Backlog({ backlogMaxFlows: 10_000_000 });
  b2.restore(d.state.backlog);
  console.log(
    `${String(n).padStart(7)}  restore   read + decode ${fmt(read)} ms, restore ${fmt(ms(t0))} ms (${d.state.tracker.n} connections, ${d.state.backlog.batches.length} batches)`,
  );
}

const dir = process.env.PF_BENCH_DIR ?? (await mkdtemp(join(tmpdir(), 'pf-bench-state-')));
try {
  console.log(`state written to ${dir}`);
  for (const n of SIZES) await run(n, dir);
} finally {
  if (process.env.PF_BENCH_DIR === undefined) await rm(dir, { recursive: true, force: true });
}
