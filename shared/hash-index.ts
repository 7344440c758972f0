// An open-addressing index from 32-bit hashes to slot ids, for tables that keep their rows in
// typed columns (the collector's connection tracker and flow series, the Prometheus sink's series).
// The index holds no keys: the caller hashes its key, walks the slots whose stored hash matches and
// compares the key against its own columns. So the equality check is the caller's inlined code, not
// a callback, and one index serves keys of any shape (two words, strings, a row of label ids).
//
//   for (let s = index.first(h); s >= 0; s = index.next()) if (sameKey(s)) return s;
//   index.add(h, slot);  …  index.remove(h, slot);
//
// Layout: one Int32Array, per position two words side by side, slot + 1 (0 = empty) and the slot's
// hash, so that a probe reads one cache line and rejects a foreign slot without touching its row.
// Linear probing from `hash & mask`; at most half full (it doubles before that); removal shifts the
// rest of the probe run back (no tombstones, so lookups stay short however much churn there is).

export class HashIndex {
  /** Per position p: `table[2p]` = slot + 1 (0 where empty), `table[2p + 1]` = the slot's hash. */
  private table: Int32Array;
  /** Positions − 1 (a power of two minus one). */
  private mask: number;
  /** Slots held. */
  private count = 0;
  /** The probe in progress (first/next): the word index of the last match, and the hash sought. */
  private at = 0;
  private want = 0;

  /** `expected`: how many slots to hold before the first growth. */
  constructor(expected = 512) {
    const size = positionsFor(expected);
    this.table = new Int32Array(size * 2);
    this.mask = size - 1;
  }

  get size(): number {
    return this.count;
  }

  /**
   * The first slot whose hash is `h` (-1: none); `next` gives the others, in probe order. Only one
   * probe at a time: an `add` or `remove` ends it.
   */
  first(h: number): number {
    h |= 0;
    this.want = h;
    return this.scan((h & this.mask) << 1);
  }

  /** The next slot of the probe `first` started whose hash is the one sought (-1: no more). */
  next(): number {
    return this.scan((this.at + 2) & ((this.mask << 1) | 1));
  }

  private scan(p: number): number {
    const t = this.table;
    const wrap = (this.mask << 1) | 1;
    const h = this.want;
    for (;;) {
      const v = t[p]!;
      if (v === 0) return -1;
      if (t[p + 1] === h) {
        this.at = p;
        return v - 1;
      }
      p = (p + 2) & wrap;
    }
  }

  /** Enters `slot` under hash `h` (the caller knows it is not there yet). */
  add(h: number, slot: number): void {
    if ((this.count + 1) * 2 > this.mask + 1) this.rehash(positionsFor(this.count + 1));
    this.place(h | 0, slot + 1);
    this.count++;
  }

  /** Removes `slot` (entered under hash `h`), shifting the rest of its probe run back. */
  remove(h: number, slot: number): void {
    const t = this.table;
    const mask = this.mask;
    const wrap = (mask << 1) | 1;
    const v = slot + 1;
    let i = (h & mask) << 1;
    while (t[i] !== v) {
      if (t[i] === 0) return;
      i = (i + 2) & wrap;
    }
    t[i] = 0;
    this.count--;
    let j = i;
    for (;;) {
      j = (j + 2) & wrap;
      if (t[j] === 0) return;
      const home = (t[j + 1]! & mask) << 1;
      // Move j back into the hole at i unless its home lies cyclically in (i, j].
      const inRange = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!inRange) {
        t[i] = t[j]!;
        t[i + 1] = t[j + 1]!;
        t[j] = 0;
        i = j;
      }
    }
  }

  /** Empties the index, sized for `expected` slots (tables that rebuild their index wholesale). */
  clear(expected = 512): void {
    const size = positionsFor(expected);
    if (size === this.mask + 1) this.table.fill(0);
    else this.table = new Int32Array(size * 2);
    this.mask = size - 1;
    this.count = 0;
  }

  private place(h: number, v: number): void {
    const t = this.table;
    const wrap = (this.mask << 1) | 1;
    let p = (h & this.mask) << 1;
    while (t[p] !== 0) p = (p + 2) & wrap;
    t[p] = v;
    t[p + 1] = h;
  }

  private rehash(size: number): void {
    const old = this.table;
    this.table = new Int32Array(size * 2);
    this.mask = size - 1;
    for (let p = 0; p < old.length; p += 2) {
      const v = old[p]!;
      if (v !== 0) this.place(old[p + 1]!, v);
    }
  }
}

/** Positions (a power of two) that hold `n` slots at most half full. */
function positionsFor(n: number): number {
  let size = 4;
  while (size < 2 * n) size *= 2;
  return size;
}

/**
 * Slot ids of a table whose rows live in typed columns: freed ids are handed out again first, so the
 * columns stay as long as the most rows held at once. When every row is taken, `grow` is told the
 * doubled capacity to lengthen the columns to.
 */
export class SlotIds {
  private readonly free: number[] = [];
  /** Ids handed out so far (the highest + 1): rows at or beyond it were never used. */
  used = 0;

  constructor(
    private capacity: number,
    private readonly grow: (capacity: number) => void,
  ) {}

  take(): number {
    const id = this.free.pop();
    if (id !== undefined) return id;
    if (this.used === this.capacity) {
      this.capacity *= 2;
      this.grow(this.capacity);
    }
    return this.used++;
  }

  release(id: number): void {
    this.free.push(id);
  }
}

type Column = Uint8Array | Int32Array | Uint32Array | Float64Array;

/** A copy of column `a` lengthened to `length`, the new part filled with `fill`. */
export function grown<T extends Column>(a: T, length: number, fill = 0): T {
  const b = new (a.constructor as new (n: number) => T)(length);
  b.set(a);
  if (fill !== 0) b.fill(fill, a.length);
  return b;
}
