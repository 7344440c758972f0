import { describe, expect, it } from 'vitest';
import { shardFilter, shardOf } from './shard.js';

describe('shardOf', () => {
  it('is the same on every platform and version: the first 32 bits of SHA-256, modulo the total', () => {
    // Literal values: a change of the function would move collectors between shards on upgrade.
    expect([shardOf('node-a', 3), shardOf('node-b', 3), shardOf('ip-10-0-1-7.ec2.internal', 8)]).toEqual([
      0, 0, 7,
    ]);
    expect(shardOf('anything', 1)).toBe(0);
  });

  it('spreads 2,000 node names over 8 shards within a few percent of even, every name on one shard', () => {
    const per = new Array<number>(8).fill(0);
    const filters = per.map((_, shard) => shardFilter({ totalShards: 8, shard }));
    for (let i = 0; i < 2000; i++) {
      const name = `ip-10-0-${i >> 8}-${i & 255}.eu-west-1.compute.internal`;
      per[shardOf(name, 8)]++;
      expect(filters.filter((mine) => mine(name))).toHaveLength(1);
    }
    for (const n of per) expect(Math.abs(n - 250)).toBeLessThan(50);
  });
});
