// The Prometheus text of the flow series: a /metrics body made a chunk at a time from a snapshot of
// the series store, the lines made of byte copies of per-value `name="value"` pieces (no string per
// line or per series). Family headers and the overflow series' labels are made once per sink.
import type { MetricsChunks } from '../shared/http.js';
import { COUNTERS, type FlowSchema, OVERFLOW } from './prometheus-families.js';

/** Prometheus text format escaping of a label value (backslash, double quote, newline). */
export const escapeLabel = (v: string) =>
  /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;

/** Bytes per /metrics chunk: large enough that a chunk costs little, small enough to stay cheap. */
export const CHUNK_BYTES = 256 << 10;

/**
 * What a /metrics response needs of the series store, copied when the response starts: a round
 * running while a slow scraper reads (pushes, expiry moving slots down) must not mix into the text
 * in progress. The copies are typed arrays (about 90 bytes per series at 14 labels); the value
 * arrays are shared, as interning only appends to them and re-interning replaces them.
 */
export interface Snapshot {
  count: number;
  ids: Int32Array;
  counts: Float64Array;
  values: string[][];
  /** The overflow series' counts, when it is present. */
  overflow: Float64Array | undefined;
}

/**
 * Encodes `name="escaped value"` pieces once per response into one byte arena, on first use, so
 * that a line is made of byte copies: no string per line or per series.
 */
class Pieces {
  private arena = Buffer.allocUnsafe(64 << 10);
  private dv = new DataView(this.arena.buffer, this.arena.byteOffset, this.arena.length);
  private used = 0;
  /** Per label: value id → offset in the arena (-1: not encoded yet); and length. */
  private readonly at: Int32Array[];
  private readonly len: Int32Array[];

  constructor(
    private readonly names: readonly string[],
    private readonly values: string[][],
  ) {
    this.at = values.map((v) => new Int32Array(v.length).fill(-1));
    this.len = values.map((v) => new Int32Array(v.length));
  }

  /** Offset of the piece of label `j`, value `id`; its length is `length(j, id)` after this call. */
  offset(j: number, id: number): number {
    const at = this.at[j][id];
    return at >= 0 ? at : this.encode(j, id);
  }

  length(j: number, id: number): number {
    return this.len[j][id];
  }

  get bytes(): Buffer {
    return this.arena;
  }

  /** The arena as a DataView (for copies four bytes at a time). */
  get view(): DataView {
    if (this.dv.buffer !== this.arena.buffer) {
      this.dv = new DataView(this.arena.buffer, this.arena.byteOffset, this.arena.length);
    }
    return this.dv;
  }

  private encode(j: number, id: number): number {
    const piece = `${this.names[j]}="${escapeLabel(this.values[j][id])}"`;
    const need = Buffer.byteLength(piece);
    if (this.used + need > this.arena.length) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * this.arena.length, this.used + need));
      this.arena.copy(bigger, 0, 0, this.used);
      this.arena = bigger;
    }
    const at = this.used;
    this.used += this.arena.write(piece, at);
    this.at[j][id] = at;
    this.len[j][id] = need;
    return at;
  }
}

/** Writes `v` (a count) as Prometheus text into `buf` at `o`; returns the new offset. */
function writeCount(buf: Buffer, o: number, v: number): number {
  // Integers below 2^53 (every count in practice) digit by digit: the same text as String(v).
  if (v >= 0 && v <= Number.MAX_SAFE_INTEGER && Math.floor(v) === v) {
    if (v === 0) {
      buf[o] = 48;
      return o + 1;
    }
    let digits = 0;
    for (let t = v; t >= 1; t = Math.floor(t / 10)) digits++;
    let t = v;
    for (let k = o + digits - 1; k >= o; k--) {
      buf[k] = 48 + (t % 10);
      t = Math.floor(t / 10);
    }
    return o + digits;
  }
  return o + buf.write(String(v), o, 'latin1');
}

/** One family's header (HELP and TYPE lines), lines and overflow line, in text order. */
type Section = string | { name: Buffer; k: number };

/**
 * The flow text of one response, made a chunk at a time (`next`). A plain object with loops in
 * methods rather than a generator: V8 optimizes the byte-copy loops of plain functions far better
 * (a generator took three times as long).
 */
class FlowText implements MetricsChunks {
  private sec = 0;
  /** Next series of the current lines section. */
  private s = 0;
  private readonly pieces: Pieces;
  private readonly at: Int32Array;
  private readonly len: Int32Array;

  constructor(
    private readonly sections: readonly Section[],
    private readonly snap: Snapshot,
    names: readonly string[],
    private readonly size: number,
    /** `cluster="…",` (the constant label), or empty. */
    private readonly fixed: Buffer,
    /**
     * Told how the response ended (MetricsChunks). Given here, not set afterwards: a property
     * added to the object later changed its shape and halved the speed of the byte loops.
     */
    readonly done: (complete: boolean) => void,
  ) {
    this.pieces = new Pieces(names, snap.values);
    this.at = new Int32Array(names.length);
    this.len = new Int32Array(names.length);
  }

  /**
   * The next chunk (whole lines), or undefined at the end. Written into `into` when given (the
   * caller reuses its buffers), else into a new Buffer; a line longer than that gets a Buffer of
   * its own.
   */
  next(into?: Buffer): Buffer | undefined {
    let buf: Buffer | undefined;
    let o = 0;
    const fresh = (need: number) =>
      into !== undefined && into.length >= need ? into : Buffer.allocUnsafe(Math.max(this.size, need));
    while (this.sec < this.sections.length) {
      const sec = this.sections[this.sec];
      if (typeof sec === 'string') {
        const need = Buffer.byteLength(sec);
        if (buf === undefined) buf = fresh(need);
        else if (o + need > buf.length) break;
        o += buf.write(sec, o);
        this.sec++;
        continue;
      }
      if (this.s < this.snap.count) {
        if (buf === undefined) buf = fresh(this.lineBytes(sec, this.s));
        const end = this.lines(sec, buf, o);
        if (end === o) {
          if (o > 0) break;
          // A line longer than the chunk (label values of many kB): a Buffer of its own.
          buf = Buffer.allocUnsafe(this.lineBytes(sec, this.s));
          o = this.lines(sec, buf, 0);
          break;
        }
        o = end;
        if (this.s < this.snap.count) break;
      }
      this.s = 0;
      this.sec++;
    }
    return buf === undefined ? undefined : buf.subarray(0, o);
  }

  /** Upper bound of the bytes of series `s`'s line; leaves its pieces in `at`/`len`. */
  private lineBytes(sec: { name: Buffer }, s: number): number {
    const { pieces, at, len } = this;
    const n = at.length;
    const ids = this.snap.ids;
    // name, braces, commas, space, a count of at most 24 characters, newline.
    let need = sec.name.length + this.fixed.length + n + 28;
    for (let j = 0; j < n; j++) {
      const id = ids[s * n + j];
      at[j] = pieces.offset(j, id);
      len[j] = pieces.length(j, id);
      need += len[j];
    }
    return need;
  }

  /** Writes lines of `sec` from series `this.s` at `o` while they fit; returns the end offset. */
  private lines(sec: { name: Buffer; k: number }, buf: Buffer, o: number): number {
    const { at, len } = this;
    const n = at.length;
    const { count, counts } = this.snap;
    const name = sec.name;
    const fixed = this.fixed;
    const out = new DataView(buf.buffer, buf.byteOffset, buf.length);
    let s = this.s;
    for (; s < count; s++) {
      if (o + this.lineBytes(sec, s) > buf.length) break;
      const arena = this.pieces.bytes;
      const from = this.pieces.view;
      for (let k = 0; k < name.length; k++) buf[o++] = name[k];
      buf[o++] = 123; // {
      for (let k = 0; k < fixed.length; k++) buf[o++] = fixed[k];
      for (let j = 0; j < n; j++) {
        if (j > 0) buf[o++] = 44; // ,
        // Four bytes at a time through DataViews (about twice as fast as byte by byte), then the rest.
        let k = at[j];
        const end = k + len[j];
        for (; k + 4 <= end; k += 4, o += 4) out.setUint32(o, from.getUint32(k));
        for (; k < end; k++) buf[o++] = arena[k];
      }
      buf[o++] = 125; // }
      buf[o++] = 32;
      o = writeCount(buf, o, counts[s * COUNTERS + sec.k]);
      buf[o++] = 10;
    }
    this.s = s;
    return o;
  }
}

/** The text of one schema's series: what does not change between responses is made here, once. */
export class FlowTextWriter {
  /** Per family: its HELP and TYPE lines (after a blank line but for the first). */
  private readonly headers: string[];
  /** Per family: its name as bytes, the start of each of its lines. */
  private readonly names: Buffer[];
  /** `{…}` of the overflow series: the constant label, then every label `_overflow_`. */
  private readonly overflowLabels: string;
  private readonly labelNames: string[];
  /** `cluster="…",` written after `{` of every line, or empty. */
  private readonly fixed: Buffer;

  constructor(private readonly schema: FlowSchema) {
    this.headers = schema.families.map(
      (f, i) => `${i > 0 ? '\n' : ''}# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`,
    );
    this.names = schema.families.map((f) => Buffer.from(f.name, 'latin1'));
    this.labelNames = schema.labels.map((l) => l.name);
    const fixed = schema.cluster !== undefined ? `cluster="${escapeLabel(schema.cluster)}",` : '';
    this.fixed = Buffer.from(fixed);
    this.overflowLabels = `{${fixed}${this.labelNames.map((l) => `${l}="${OVERFLOW}"`).join(',')}}`;
  }

  /**
   * The text of `snap`, one block per family, ending with a newline; `head` (the Registry's
   * metrics) goes first, separated by a blank line. Made in chunks of about `chunkBytes`, each
   * ending at a line end, as they are asked for. `done`: told how the response ended.
   */
  chunks(head: string, snap: Snapshot, chunkBytes: number, done: (complete: boolean) => void): MetricsChunks {
    const sections: Section[] = [];
    if (head.length > 0) sections.push(`${head}\n\n`);
    const families = this.schema.families;
    for (let i = 0; i < families.length; i++) {
      const f = families[i];
      sections.push(this.headers[i]);
      sections.push({ name: this.names[i], k: f.k });
      if (snap.overflow !== undefined) {
        sections.push(`${f.name}${this.overflowLabels} ${snap.overflow[f.k]}\n`);
      }
    }
    return new FlowText(sections, snap, this.labelNames, chunkBytes, this.fixed, done);
  }
}
