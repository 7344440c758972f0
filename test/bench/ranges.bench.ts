// Benchmark of destination range lookups (exporter/range-table.ts): the exporter looks up every flow
// to a peer outside the cluster, against tens of thousands of ranges (a destinations file plus the
// providers' range files: AWS's ip-ranges.json alone holds about 10,000 prefixes, Azure's Service
// Tags about 50,000 with repeats).
//
//   npm run bench:ranges            (50,000 ranges)
//   npm run bench:ranges -- 200000  (other sizes)
//
// Ranges: 80% IPv4 (/12 to /28, nested often), 20% IPv6 (/32 to /64). Addresses: half inside a
// range, half anywhere. Printed per size: the table's build time and heap, lookups per second for
// IPv4 and IPv6 addresses, and, measured in the same run on the same address strings, the floor
// (a Map keyed by the address string, exact match only: what a lookup cannot beat) and node's
// net.BlockList (answers only yes/no, and checks its rules one by one: 2,000 calls). Last, the
// whole enrich stage on flows to public peers, with and without the ranges (the cost to a round). Figures, not assertions.
import { BlockList } from 'node:net';
import type { Destination } from '../../exporter/destinations.js';
import { Enricher, emptyClusterLookup } from '../../exporter/enrich.js';
import { RangeTable } from '../../exporter/range-table.js';
import type { EnrichedFlow, Flow } from '../../shared/flow.js';
import { silentLogger } from '../../shared/log.js';
import { seededInt } from '../helpers/random.js';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const SIZES = sizes.length > 0 ? sizes : [50_000];
const LOOKUPS = 2_000_000;
const rnd = seededInt(42);

const ip4 = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
const hex = (n: number) => n.toString(16);
/** An IPv6 address from 8 random groups under a few /16s, as text the way the collector writes it. */
const ip6 = (g: number[]) => g.map(hex).join(':');

interface Case {
  cidrs: { cidr: string; v6: boolean; base: number[] }[];
  v4: string[];
  v6: string[];
}

function makeCase(n: number): Case {
  const cidrs: Case['cidrs'] = [];
  for (let i = 0; i < n; i++) {
    if (i % 5 !== 4) {
      const len = 12 + rnd(17);
      const mask = (~0 << (32 - len)) >>> 0;
      // A handful of /8s, so that ranges nest and overlap as provider ranges do.
      const a = ((([3, 13, 20, 34, 35, 52, 54, 104][rnd(8)] << 24) | (rnd(1 << 24) & 0xffffff)) & mask) >>> 0;
      cidrs.push({ cidr: `${ip4(a)}/${len}`, v6: false, base: [a] });
    } else {
      const len = 32 + rnd(33);
      const g = [
        [0x2600, 0x2a05, 0x2603, 0x2406][rnd(4)],
        rnd(0x10000),
        rnd(0x10000),
        rnd(0x10000),
        0,
        0,
        0,
        0,
      ];
      // Clear the host bits of the 64-bit network part.
      for (let k = 0; k < 4; k++) {
        const keep = Math.max(0, Math.min(16, len - 16 * k));
        g[k] = keep === 0 ? 0 : g[k] & ((0xffff << (16 - keep)) & 0xffff);
      }
      cidrs.push({ cidr: `${ip6(g.slice(0, 4))}::/${len}`, v6: true, base: g });
    }
  }
  const v4: string[] = [];
  const v6: string[] = [];
  const c4 = cidrs.filter((c) => !c.v6);
  const c6 = cidrs.filter((c) => c.v6);
  for (let i = 0; i < 100_000; i++) {
    v4.push(
      i % 2 === 0
        ? ip4((c4[rnd(c4.length)].base[0] + rnd(16)) >>> 0)
        : ip4(((rnd(1 << 16) << 16) | rnd(1 << 16)) >>> 0),
    );
    const g =
      i % 2 === 0 ? [...c6[rnd(c6.length)].base] : [0x2001, rnd(0x10000), rnd(0x10000), 0, 0, 0, 0, 0];
    for (let k = 4; k < 8; k++) g[k] = rnd(0x10000);
    v6.push(ip6(g));
  }
  return { cidrs, v4, v6 };
}

/** Lookups per second of `fn` over `addrs` (LOOKUPS calls, after a warm-up); `hits` keeps the result live. */
function rate(
  addrs: string[],
  fn: (ip: string) => unknown,
  calls = LOOKUPS,
): { perSec: number; hits: number } {
  let hits = 0;
  for (let i = 0; i < Math.min(200_000, calls / 10); i++)
    if (fn(addrs[i % addrs.length]) !== undefined) hits++;
  hits = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) {
    const r = fn(addrs[i % addrs.length]);
    if (r !== undefined && r !== false) hits++;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { perSec: calls / s, hits: hits / calls };
}

const fmt = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M/s` : `${(n / 1e3).toFixed(1)} k/s`);

for (const n of SIZES) {
  const c = makeCase(n);
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const table = RangeTable.build(c.cidrs.map((x, i) => ({ cidr: x.cidr, value: i })));
  const buildMs = performance.now() - t0;
  globalThis.gc?.();
  const heapMb = (process.memoryUsage().heapUsed - heap0) / 1e6;

  // The floor: one hash probe of the same strings in a Map of n entries.
  const map = new Map<string, number>();
  for (let i = 0; i < n; i++) map.set(i % 2 === 0 ? c.v4[i % c.v4.length] : c.v6[i % c.v6.length], i);
  const block = new BlockList();
  for (const x of c.cidrs) {
    const [addr, len] = x.cidr.split('/');
    block.addSubnet(addr, Number(len), x.v6 ? 'ipv6' : 'ipv4');
  }

  const t4 = rate(c.v4, (ip) => table.lookup(ip));
  const t6 = rate(c.v6, (ip) => table.lookup(ip));
  const m4 = rate(c.v4, (ip) => map.get(ip));
  const m6 = rate(c.v6, (ip) => map.get(ip));
  const b4 = rate(c.v4, (ip) => block.check(ip, 'ipv4') || undefined, 2_000);
  const b6 = rate(c.v6, (ip) => block.check(ip, 'ipv6') || undefined, 2_000);

  console.log(
    `${n} ranges (${table.size} prefixes): build ${buildMs.toFixed(0)} ms, heap ${heapMb.toFixed(1)} MB`,
  );
  console.log(
    `  IPv4: RangeTable ${fmt(t4.perSec)} (${(t4.hits * 100).toFixed(0)}% matched)  Map floor ${fmt(m4.perSec)}  ratio ${(t4.perSec / m4.perSec).toFixed(2)}  BlockList ${fmt(b4.perSec)}`,
  );
  console.log(
    `  IPv6: RangeTable ${fmt(t6.perSec)} (${(t6.hits * 100).toFixed(0)}% matched)  Map floor ${fmt(m6.perSec)}  ratio ${(t6.perSec / m6.perSec).toFixed(2)}  BlockList ${fmt(b6.perSec)}`,
  );

  // The enrich stage over flows to those addresses (the hot path the ranges sit on).
  const flows: Flow[] = c.v4.slice(0, 50_000).map((dst, i) => ({
    src: '10.0.0.1',
    dst: i % 5 === 0 ? c.v6[i] : dst,
    proto: 6,
    txBytes: 1000 + i,
    rxBytes: 500,
    txPackets: 2,
    rxPackets: 1,
  }));
  const dests = RangeTable.build<Destination>(
    c.cidrs.map((x, i) => ({ cidr: x.cidr, value: { name: `r${i}` } })),
  );
  const enrichRate = (withRanges: boolean) => {
    const e = new Enricher(
      { groupPublicIps: false, cloud: 'aws' },
      { cluster: emptyClusterLookup, log: silentLogger, destinations: withRanges ? dests : undefined },
    );
    const batch = { seq: 1, from: 0, to: 5000, flows };
    const out: EnrichedFlow[] = [];
    for (let i = 0; i < 4; i++) {
      out.length = 0;
      e.enrichBatch(batch, 'node-a', out);
    }
    const t0 = performance.now();
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      out.length = 0;
      e.enrichBatch(batch, 'node-a', out);
    }
    return (rounds * flows.length) / ((performance.now() - t0) / 1000);
  };
  const without = enrichRate(false);
  const withRanges = enrichRate(true);
  console.log(
    `  enrich (public peers, 20% IPv6): ${fmt(withRanges)} flows with the ranges, ${fmt(without)} without (${((without / withRanges - 1) * 100).toFixed(0)}% more time)`,
  );
}
