// Benchmark of the collector's serving side: the backlog at its bound (every tick merges) and one
// pull of a full backlog (msgpack encode + gzip), each against a floor measured in the same run.
//
//   npx tsx test/bench/serving.bench.ts [--tick-flows 20000] [--max-flows 1000000]
//
//   append   one tick appended to a backlog that is over its bound, so the tick is folded into the
//            merged batch. Floor: summing the same flows into a fresh Map keyed (src, dst, proto),
//            the least any merge must do.
//   pull     backlog.pull() + msgpack encode of the full backlog as the server does (msgpackr
//            records). Floor: the same encoder on the flows alone, already in one array (no backlog,
//            no batches). For reference, plain msgpack maps, which the server does not use.
//   gzip     level 1 of the encoded body; reported with the size ratio.
import { gzipSync } from 'node:zlib';
import { Packr } from 'msgpackr';
import { Backlog } from '../../collector/backlog.js';
import type { Flow, PullResponse } from '../../shared/flow.js';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const TICK = arg('tick-flows', 20_000);
const MAX = arg('max-flows', 1_000_000);
const LOCAL = 200;
const PEERS = 1250;

let counter = 0;
function tick(): Flow[] {
  const out: Flow[] = new Array(TICK);
  for (let i = 0; i < TICK; i++) {
    const n = counter++;
    const local = n % LOCAL;
    const peer = Math.floor(n / LOCAL) % PEERS;
    out[i] = {
      src: `10.1.${local >> 8}.${local & 255}`,
      dst: n % 4 === 0 ? `fd00:2::${peer.toString(16)}` : `10.${128 + (peer >> 8)}.${peer & 255}.7`,
      proto: n % 3 === 0 ? 17 : 6,
      txBytes: 1000 + (n % 5000),
      rxBytes: 3000 + (n % 7000),
      txPackets: 3,
      rxPackets: 4,
    };
  }
  return out;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => x.toFixed(2);

// --- append at the bound ---------------------------------------------------------------------
const backlog = new Backlog({ backlogMaxFlows: MAX });
let t = 0;
while (backlog.stats().merges === 0) backlog.append(t, ++t, tick());
const appendMs: number[] = [];
const floorMs: number[] = [];
for (let r = 0; r < 20; r++) {
  const flows = tick();
  const f0 = process.hrtime.bigint();
  const m = new Map<string, Flow>();
  for (const f of flows) {
    const k = `${f.src}|${f.dst}|${f.proto}`;
    const have = m.get(k);
    if (have) {
      have.txBytes += f.txBytes;
      have.rxBytes += f.rxBytes;
    } else m.set(k, { ...f });
  }
  floorMs.push(ms(f0));
  const a0 = process.hrtime.bigint();
  backlog.append(t, ++t, flows);
  appendMs.push(ms(a0));
}
const s = backlog.stats();
console.log(
  `append at the bound (${TICK} flows/tick, backlog ${s.flows} flows in ${s.batches} batches, ${s.merges} merges, ${s.droppedFlows} dropped):`,
);
console.log(
  `  podflow ${fmt(median(appendMs))} ms   floor ${fmt(median(floorMs))} ms   ratio ${fmt(median(appendMs) / median(floorMs))}`,
);

// --- pull of the full backlog ----------------------------------------------------------------
const plain = new Packr({ useRecords: false });
const records = new Packr({ useRecords: true });
const allFlows = backlog.pull().flatMap((b) => b.flows);
const response = (): PullResponse => ({
  version: 1,
  bootId: backlog.bootId,
  node: 'bench',
  source: 'netfilter',
  batches: backlog.pull(),
});
const pullMs: number[] = [];
const floorPullMs: number[] = [];
const plainMs: number[] = [];
let plainSize = 0;
const gzMs: number[] = [];
let size = 0;
let gzSize = 0;
for (let r = 0; r < 5; r++) {
  const p0 = process.hrtime.bigint();
  const body = records.pack(response());
  pullMs.push(ms(p0));
  const f0 = process.hrtime.bigint();
  records.pack(allFlows);
  floorPullMs.push(ms(f0));
  const m0 = process.hrtime.bigint();
  plainSize = plain.pack(response()).length;
  plainMs.push(ms(m0));
  const g0 = process.hrtime.bigint();
  gzSize = gzipSync(body, { level: 1 }).length;
  gzMs.push(ms(g0));
  size = body.length;
}
console.log(`pull of ${s.flows} flows (${(size / 1e6).toFixed(1)} MB msgpack):`);
console.log(
  `  podflow ${fmt(median(pullMs))} ms   floor ${fmt(median(floorPullMs))} ms   ratio ${fmt(median(pullMs) / median(floorPullMs))}`,
);
console.log(
  `  plain maps (not used) ${fmt(median(plainMs))} ms, ${(plainSize / 1e6).toFixed(1)} MB: ${fmt(median(plainMs) / median(pullMs))}x the time, ${fmt(plainSize / size)}x the size`,
);
console.log(
  `  gzip level 1 ${fmt(median(gzMs))} ms, ${(gzSize / 1e6).toFixed(1)} MB (${fmt(gzSize / size)} of the body)`,
);
console.log(`  RSS ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
