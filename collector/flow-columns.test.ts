import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { encodePullBody } from '../shared/pull-contract.js';
import { FlowColumns } from './flow-columns.js';

const flows: Flow[] = [
  { src: '10.0.0.1', dst: '8.8.8.8', proto: 17, txBytes: 100, rxBytes: 300, txPackets: 1, rxPackets: 2 },
  { src: 'fd00::1', dst: '::', proto: 6, txBytes: 2 ** 40 + 1, rxBytes: 0, txPackets: 7, rxPackets: 0 },
];

describe('FlowColumns', () => {
  it('gives back exactly the flows put in, as fresh objects, in order', () => {
    const c = FlowColumns.from(flows);
    expect(c.length).toBe(2);
    const out = c.toFlows();
    expect(out).toEqual(flows);
    expect(out[0]).not.toBe(flows[0]);
    // Each call makes new objects: mutating one list leaves the columns untouched.
    out[0]!.txBytes = 0;
    expect(c.toFlows()[0]!.txBytes).toBe(100);
  });

  it('serializes to JSON as its flows; empty columns are an empty list', () => {
    expect(JSON.parse(JSON.stringify({ f: FlowColumns.from(flows) })).f).toEqual(flows);
    expect(new FlowColumns(0).toFlows()).toEqual([]);
  });

  it('encodes with msgpack records exactly as the flows themselves, large bodies included', () => {
    const many: Flow[] = Array.from({ length: 40_000 }, (_, k) => ({
      src: `10.0.${k >> 8}.${k & 255}`,
      dst: k % 3 === 0 ? '::' : `fd00::${k.toString(16)}`,
      proto: k % 2 === 0 ? 6 : 17,
      txBytes: k * 1000,
      rxBytes: 2 ** 33 + k,
      txPackets: k,
      rxPackets: 64 + (k % 64),
    }));
    const response = (f: unknown) => ({
      version: 1 as const,
      bootId: 'b',
      node: 'n',
      source: 'netfilter' as const,
      batches: [{ seq: 1, from: 0, to: 1, flows: f as Flow[] }],
    });
    const unpack = new Packr({ useRecords: true });
    const fromColumns = encodePullBody(response(FlowColumns.from(many)));
    expect(fromColumns.length).toBeGreaterThan(1 << 20); // the big-body path
    expect(Buffer.compare(fromColumns, encodePullBody(response(many)))).toBe(0);
    expect((unpack.unpack(fromColumns) as ReturnType<typeof response>).batches[0]!.flows).toEqual(many);
    const small = encodePullBody(response(FlowColumns.from(flows)));
    expect((unpack.unpack(small) as ReturnType<typeof response>).batches[0]!.flows).toEqual(flows);
  });
});
