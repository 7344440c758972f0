import { describe, expect, it } from 'vitest';
import type { EnrichedFlow } from '../shared/flow.js';
import { partsOf, toRecord } from './http-sink.js';

/** A small deterministic generator, so that a failing case can be replayed from its seed. */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

const base: Omit<EnrichedFlow, 'ts' | 'intervalSeconds' | 'dstIp' | 'proto'> = {
  srcIp: '10.0.1.5',
  srcPod: 'web-1',
  srcNamespace: 'shop',
  srcWorkload: 'Deployment/web',
  srcNode: 'node-a',
  srcZone: 'zone-a',
  dstPod: '',
  dstNamespace: '',
  dstWorkload: '',
  dstNode: '',
  dstZone: '',
  dstDnsName: '',
  dstType: 'public',
  crossZone: false,
  txBytes: 0,
  rxBytes: 0,
  txPackets: 0,
  rxPackets: 0,
};

interface Batch {
  from: number;
  to: number;
  flows: Map<string, EnrichedFlow>;
}

/** What the collector's backlog does at its bound: `b` folded into `a`, summed per flow. */
function merge(a: Batch, b: Batch): Batch {
  const flows = new Map<string, EnrichedFlow>();
  const to = Math.max(a.to, b.to);
  const from = Math.min(a.from, b.from);
  for (const f of [...a.flows.values(), ...b.flows.values()]) {
    const k = `${f.dstIp} ${f.proto}`;
    const seen = flows.get(k);
    if (seen === undefined) flows.set(k, { ...f, ts: to, intervalSeconds: (to - from) / 1000 });
    else {
      seen.txBytes += f.txBytes;
      seen.rxBytes += f.rxBytes;
      seen.txPackets += f.txPackets;
      seen.rxPackets += f.rxPackets;
    }
  }
  return { from, to, flows };
}

const flat = (batches: Batch[]) => batches.flatMap((b) => [...b.flows.values()]);
const body = (parts: (readonly EnrichedFlow[])[]) => parts.map((p) => p.map(toRecord).join('\n'));

describe('partsOf', () => {
  it('a push that fits is one part, as it came', () => {
    const flows = [{ ...base, ts: 5000, intervalSeconds: 5, dstIp: '8.8.8.8', proto: 'TCP', txBytes: 1 }];
    const parts = partsOf(flows, 10);
    expect(parts).toHaveLength(1);
    expect(parts[0]).toBe(flows);
  });

  it('random stretches merged at random: every part has the same records after any merges', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const max = 1 + r(12);
      // The collector appends no batch for a tick without flows.
      const batches: Batch[] = [];
      for (let t = 0, n = 1 + r(6); t < n; t++) {
        const flows = new Map<string, EnrichedFlow>();
        for (let i = 0, m = 1 + r(25); i < m; i++) {
          const dstIp = `192.0.2.${r(40)}`;
          const proto = r(2) === 0 ? 'TCP' : 'UDP';
          const k = `${dstIp} ${proto}`;
          const f = flows.get(k) ?? { ...base, ts: (t + 1) * 5000, intervalSeconds: 5, dstIp, proto };
          f.txBytes += 1 + r(1000);
          f.rxBytes += r(1000);
          f.txPackets += 1;
          f.rxPackets += r(3);
          flows.set(k, f);
        }
        batches.push({ from: t * 5000, to: (t + 1) * 5000, flows });
      }
      const before = flat(batches);
      const keys = new Set(before.map((f) => `${f.dstIp} ${f.proto}`)).size;
      const first = partsOf(before, max);
      // Merge adjacent batches at random, as a backlog at its bound would, until one is left.
      while (batches.length > 1) {
        const i = r(batches.length - 1);
        batches.splice(i, 2, merge(batches[i]!, batches[i + 1]!));
        const again = partsOf(flat(batches), max);
        expect(again.length, `seed ${seed}`).toBe(first.length);
        if (first.length > 1) expect(body(again), `seed ${seed}`).toEqual(body(first));
        else {
          // One part, one key: the totals are what a receiver dedups on.
          const sum = (p: readonly EnrichedFlow[]) => p.reduce((a, f) => a + f.txBytes * 1e6 + f.rxBytes, 0);
          expect(sum(again[0]!), `seed ${seed}`).toBe(sum(first[0]!));
        }
      }
      // Parts never hold more than `max` records, and as few parts as the distinct flows allow.
      for (const p of first) expect(p.length).toBeLessThanOrEqual(max);
      expect(first.length).toBe(before.length <= max ? 1 : Math.ceil(keys / max));
    }
  });
});
