import { describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
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
});
