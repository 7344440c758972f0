// Sharding of the collectors among exporters (--total-shards, --shard), as kube-state-metrics
// shards objects: each collector belongs to exactly one shard, by a stable hash of its node name
// (static mode: of its base URL), so every shard computes the same split without talking to the
// others. A change of the total moves collectors between shards; nothing is lost or counted twice
// in the move, because a collector serves one exporter at a time (its pull lease) and keeps each
// sink's cursor (docs/exporter.md "Sharding").
import { createHash } from 'node:crypto';

export interface ShardConfig {
  /** `--total-shards`. */
  totalShards: number;
  /** `--shard`, from 0 to totalShards - 1. */
  shard: number;
}

/**
 * The shard of `key` among `total`: the first 32 bits of its SHA-256, modulo the total. SHA-256
 * rather than a fast hash: it is the same on every platform and version, and it runs once per
 * collector, not per flow.
 */
export function shardOf(key: string, total: number): number {
  if (total <= 1) return 0;
  return createHash('sha256').update(key).digest().readUInt32BE(0) % total;
}

/** A test of whether this shard owns a key, remembering its answers (keys come back every round). */
export function shardFilter(config: ShardConfig): (key: string) => boolean {
  if (config.totalShards <= 1) return () => true;
  const known = new Map<string, boolean>();
  return (key) => {
    let mine = known.get(key);
    if (mine === undefined) {
      mine = shardOf(key, config.totalShards) === config.shard;
      // Discovery churns through pod IPs over months: the memo is bounded by starting over.
      if (known.size >= 100_000) known.clear();
      known.set(key, mine);
    }
    return mine;
  };
}
