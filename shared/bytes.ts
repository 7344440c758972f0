// Integers read at byte offsets, for parsing netlink messages and BPF map entries in place. Plain byte
// arithmetic, small enough for V8 to inline into the parsing loops (Buffer's read methods check their
// arguments and throw, which the parsers do not want: they check lengths themselves and never throw).
// Results are exact: 64-bit values below 2^53, which no byte or packet counter reaches.
//
// Per-entry code binds them to module constants (`const { u16le } = bytes`, see
// collector/netfilter/parser.ts): called through import bindings they were not inlined as well.

export function u16le(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8);
}
export function i32le(b: Uint8Array, o: number): number {
  return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24);
}
export function u32le(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}
export function be16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
export function be32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
export function be64(b: Uint8Array, o: number): number {
  return be32(b, o) * 4294967296 + be32(b, o + 4);
}
/** Host-order (little-endian) u64 at 32-bit index `i` of a word view (aligned 64-bit fields). */
export function u64words(v: Uint32Array, i: number): number {
  return v[i + 1] * 4294967296 + v[i];
}
/** Any of the 8 bytes at `o` set. */
export function nonZero64(b: Uint8Array, o: number): boolean {
  return (b[o] | b[o + 1] | b[o + 2] | b[o + 3] | b[o + 4] | b[o + 5] | b[o + 6] | b[o + 7]) !== 0;
}
