// Hashing for the open-addressing tables (shared/hash-index.ts): no allocation, 32-bit integer arithmetic.

/** MurmurHash3's finalizer: spreads every input bit over the whole 32-bit result (unsigned). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
