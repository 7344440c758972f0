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

/** MurmurHash3's body step: mixes the 32-bit word `k` into the running hash `h` (signed result). */
export function murmurMix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
