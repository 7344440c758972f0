// What a collector keeps in `--state-dir` so that a restart (SIGTERM or SIGKILL) neither loses nor
// repeats bytes: the tracker's remembered connections (what was already counted of each) and the
// backlog (boot id, seq numbering, pull boundaries, every batch not yet acknowledged), in ONE file,
// so the two always describe the same instant: every byte the tracker has counted is either in a
// batch of that backlog or was acknowledged before.
//
// File layout (little-endian):
//   "PFSTATE1"  u32 crc32(body)  u32 body length  body
//   body = sections, each `u32 length, bytes`: meta, tracker, then one per batch.
//   A section is `u32 head length, msgpack head, then columns (u32 byte length, raw bytes)`.
// The checksum and the length catch a torn or corrupt file; every field is then checked for type
// and range before anything is used, so a bad file is a reason to start with a baseline, never a
// crash or a count taken twice. Columns are raw typed arrays: a 250k-connection tracker is a few
// copies of memory, not 250k objects.
//
// Writes are crash-safe: the bytes go to a temporary file in the same directory, which is fsynced
// and renamed over the state file, then the directory is fsynced. A crash at any instant leaves the
// old state or the new one, never a mix.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import { isDnsName } from '../shared/dns.js';
import type { BacklogSnapshot } from './backlog.js';
import { FlowColumns } from './flow-columns.js';
import type { TrackerSnapshot } from './tracker.js';

export const STATE_FILE = 'collector.state';
const TMP_FILE = 'collector.state.tmp';
const MAGIC = Buffer.from('PFSTATE1', 'latin1');
const HEADER = MAGIC.length + 8;

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/** Whose state it is: a file of another node or source is not used. */
export interface StateOwner {
  node: string;
  source: 'netfilter' | 'cilium';
}

export interface CollectorState extends StateOwner {
  /** When it was written, ms since the epoch. */
  savedAt: number;
  tracker: TrackerSnapshot;
  backlog: BacklogSnapshot;
}

// --- encoding ---

/** One section: a msgpack head, then raw columns. */
function section(head: unknown, cols: ArrayBufferView[] = []): Buffer {
  const h = packr.pack(head);
  let size = 4 + h.length;
  for (const c of cols) size += 4 + c.byteLength;
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32LE(h.length, 0);
  h.copy(out, 4);
  let o = 4 + h.length;
  for (const c of cols) {
    out.writeUInt32LE(c.byteLength, o);
    out.set(new Uint8Array(c.buffer, c.byteOffset, c.byteLength), o + 4);
    o += 4 + c.byteLength;
  }
  return out;
}

/** The tracker's section: made once per tick, reused by writes between ticks. */
export function encodeTracker(t: TrackerSnapshot): Buffer {
  return section({ gen: t.gen, baseline: t.baseline, n: t.n, addrs: t.addrs, stringKeys: t.stringKeys }, [
    t.family,
    t.proto,
    t.ends,
    t.keyA,
    t.keyB,
    t.gens,
    t.cnt,
    t.orig,
    t.reply,
  ]);
}

/** One batch's section. Batches never change once made: a writer caches this per batch. */
export function encodeBatch(b: BacklogSnapshot['batches'][number]): Buffer {
  const f = b.flows instanceof FlowColumns ? b.flows : FlowColumns.from(b.flows);
  const addrs: string[] = [];
  const index = new Map<string, number>();
  const at = (ip: string): number => {
    let i = index.get(ip);
    if (i === undefined) {
      i = addrs.length;
      index.set(ip, i);
      addrs.push(ip);
    }
    return i;
  };
  const src = new Uint32Array(f.length);
  const dst = new Uint32Array(f.length);
  for (let k = 0; k < f.length; k++) {
    src[k] = at(f.src[k]!);
    dst[k] = at(f.dst[k]!);
  }
  const head = { seq: b.seq, from: b.from, to: b.to, n: f.length, addrs };
  if (!f.name.some((n) => n !== '')) return section(head, [src, dst, f.proto, f.cnt]);
  // DNS names (collector/dns/): a table in the head (index 0 = none) and one more column. Files
  // without it (no names, or written before names existed) read as before.
  const names = [''];
  const nameIndex = new Map<string, number>([['', 0]]);
  const name = new Uint32Array(f.length);
  for (let k = 0; k < f.length; k++) {
    const v = f.name[k]!;
    let i = nameIndex.get(v);
    if (i === undefined) {
      i = names.length;
      nameIndex.set(v, i);
      names.push(v);
    }
    name[k] = i;
  }
  return section({ ...head, names }, [src, dst, f.proto, f.cnt, name]);
}

/** The whole file from its parts (`tracker` from encodeTracker, `batches` from encodeBatch). */
export function encodeState(
  meta: StateOwner & { savedAt: number },
  backlog: Omit<BacklogSnapshot, 'batches'>,
  tracker: Buffer,
  batches: Buffer[],
): Buffer {
  const head = section({
    format: 1,
    node: meta.node,
    source: meta.source,
    savedAt: meta.savedAt,
    bootId: backlog.bootId,
    lastSeq: backlog.lastSeq,
    ackedSeq: backlog.ackedSeq,
    boundaries: backlog.boundaries,
    cursors: backlog.cursors ?? {},
    batches: batches.length,
  });
  const parts = [head, tracker, ...batches];
  let body = 0;
  for (const p of parts) body += 4 + p.length;
  const out = Buffer.allocUnsafe(HEADER + body);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(body, MAGIC.length + 4);
  let o = HEADER;
  for (const p of parts) {
    out.writeUInt32LE(p.length, o);
    p.copy(out, o + 4);
    o += 4 + p.length;
  }
  out.writeUInt32LE(crc32(out.subarray(HEADER)), MAGIC.length);
  return out;
}

// --- decoding: trusts nothing ---

class Bad extends Error {}

function check(ok: boolean, what: string): asserts ok {
  if (!ok) throw new Bad(what);
}

/** Reads length-prefixed chunks from a buffer, every length checked against what is left. */
class Reader {
  constructor(
    private readonly buf: Buffer,
    private off = 0,
    private readonly end = buf.length,
  ) {}
  chunk(what: string): Buffer {
    check(this.off + 4 <= this.end, `${what}: truncated`);
    const len = this.buf.readUInt32LE(this.off);
    check(len <= this.end - this.off - 4, `${what}: truncated`);
    const c = this.buf.subarray(this.off + 4, this.off + 4 + len);
    this.off += 4 + len;
    return c;
  }
  get done(): boolean {
    return this.off === this.end;
  }
}

function head(r: Reader, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = packr.unpack(r.chunk(what));
  } catch (err) {
    if (err instanceof Bad) throw err;
    throw new Bad(`${what}: not msgpack`);
  }
  check(v !== null && typeof v === 'object' && !Array.isArray(v), `${what}: not a map`);
  return v as Record<string, unknown>;
}

/** A column of exactly `n` elements, copied (the file buffer may be unaligned). */
function column<T extends Uint8Array | Uint32Array | Float64Array>(
  r: Reader,
  make: new (n: number) => T,
  n: number,
  what: string,
): T {
  const c = r.chunk(what);
  const out = new make(n);
  check(c.length === out.byteLength, `${what}: ${c.length} bytes, expected ${out.byteLength}`);
  new Uint8Array(out.buffer).set(c);
  return out;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

function addresses(v: unknown, what: string): string[] {
  check(Array.isArray(v), `${what}: not a list`);
  for (const a of v) check(typeof a === 'string' && isIP(a) !== 0, `${what}: not an IP address`);
  return v as string[];
}

/** A batch's name table: '' (none) first, then DNS names. */
function dnsNames(v: unknown): string[] {
  check(Array.isArray(v) && v[0] === '', 'batch names: not a name table');
  const names = v as unknown[];
  for (let i = 1; i < names.length; i++) check(isDnsName(names[i]), 'batch names: not a DNS name');
  return names as string[];
}

function indices(c: Uint32Array, size: number, what: string): void {
  for (let i = 0; i < c.length; i++) check(c[i]! < size, `${what}: index out of range`);
}

function counts(c: Float64Array, what: string): void {
  for (let i = 0; i < c.length; i++) check(isCount(c[i]), `${what}: not a count`);
}

function decodeTracker(r: Reader): TrackerSnapshot {
  const h = head(r, 'tracker');
  const { gen, baseline, n } = h;
  check(isCount(gen) && gen < 2 ** 32, 'tracker: bad gen');
  check(typeof baseline === 'boolean', 'tracker: bad baseline');
  check(isCount(n) && n <= 2 ** 26, 'tracker: bad size');
  const addrs = addresses(h.addrs, 'tracker addresses');
  check(Array.isArray(h.stringKeys), 'tracker: bad string keys');
  const stringKeys = h.stringKeys as unknown[];
  for (const e of stringKeys) {
    check(
      Array.isArray(e) && e.length === 2 && isCount(e[0]) && e[0] < n && typeof e[1] === 'string',
      'tracker: bad string key',
    );
  }
  const t: TrackerSnapshot = {
    gen,
    baseline,
    n,
    family: column(r, Uint8Array, n, 'tracker family'),
    proto: column(r, Uint8Array, n, 'tracker proto'),
    ends: column(r, Uint8Array, n, 'tracker ends'),
    keyA: column(r, Uint32Array, n, 'tracker keys'),
    keyB: column(r, Uint32Array, n, 'tracker keys'),
    gens: column(r, Uint32Array, n * 2, 'tracker gens'),
    cnt: column(r, Float64Array, n * 4, 'tracker counters'),
    addrs,
    orig: column(r, Uint32Array, n, 'tracker addresses'),
    reply: column(r, Uint32Array, n, 'tracker addresses'),
    stringKeys: stringKeys as [number, string][],
  };
  check(r.done, 'tracker: trailing bytes');
  for (let i = 0; i < n; i++) {
    check(t.family[i] === 4 || t.family[i] === 6, 'tracker: bad family');
    check(t.ends[i]! <= 2, 'tracker: bad end');
    const seen = t.gens[i * 2]!;
    const ended = t.gens[i * 2 + 1]!;
    check(seen >= 1 && seen <= gen && ended <= gen, 'tracker: bad read number');
  }
  indices(t.orig, addrs.length, 'tracker addresses');
  indices(t.reply, addrs.length, 'tracker addresses');
  counts(t.cnt, 'tracker counters');
  return t;
}

function decodeBatch(r: Reader): BacklogSnapshot['batches'][number] {
  const h = head(r, 'batch');
  const { seq, from, to, n } = h;
  check(isCount(seq) && seq >= 1, 'batch: bad seq');
  check(isTime(from) && isTime(to) && from <= to, 'batch: bad interval');
  check(isCount(n) && n <= 2 ** 26, 'batch: bad size');
  const addrs = addresses(h.addrs, 'batch addresses');
  const src = column(r, Uint32Array, n, 'batch src');
  const dst = column(r, Uint32Array, n, 'batch dst');
  const proto = column(r, Uint8Array, n, 'batch proto');
  const cnt = column(r, Float64Array, n * 4, 'batch counters');
  const names = h.names === undefined ? undefined : dnsNames(h.names);
  const name = names === undefined ? undefined : column(r, Uint32Array, n, 'batch names');
  check(r.done, 'batch: trailing bytes');
  indices(src, addrs.length, 'batch src');
  indices(dst, addrs.length, 'batch dst');
  counts(cnt, 'batch counters');
  if (names !== undefined && name !== undefined) indices(name, names.length, 'batch names');
  const flows = new FlowColumns(n);
  for (let k = 0; k < n; k++) {
    flows.src[k] = addrs[src[k]!]!;
    flows.dst[k] = addrs[dst[k]!]!;
    if (names !== undefined && name !== undefined) flows.name[k] = names[name[k]!]!;
  }
  flows.proto.set(proto);
  flows.cnt.set(cnt);
  return { seq, from, to, flows };
}

export type DecodeResult = { ok: true; state: CollectorState } | { ok: false; reason: string };

/** Decodes a state file. Never throws: anything wrong is a reason. */
export function decodeState(buf: Buffer): DecodeResult {
  try {
    check(buf.length >= HEADER, 'shorter than its header');
    check(buf.subarray(0, MAGIC.length).equals(MAGIC), 'not a podflow state file');
    const body = buf.readUInt32LE(MAGIC.length + 4);
    check(body === buf.length - HEADER, `truncated or extended: ${buf.length - HEADER} of ${body} bytes`);
    check(crc32(buf.subarray(HEADER)) === buf.readUInt32LE(MAGIC.length), 'checksum mismatch');
    const file = new Reader(buf, HEADER);
    const meta = head(new Reader(file.chunk('meta')), 'meta');
    check(meta.format === 1, `unknown format ${String(meta.format)}`);
    const { node, source, savedAt, bootId, lastSeq, ackedSeq, boundaries } = meta;
    check(typeof node === 'string' && node.length > 0, 'meta: bad node');
    check(source === 'netfilter' || source === 'cilium', 'meta: bad source');
    check(isTime(savedAt), 'meta: bad time');
    check(typeof bootId === 'string' && bootId.length > 0 && bootId.length <= 64, 'meta: bad boot id');
    check(isCount(lastSeq) && isCount(ackedSeq) && ackedSeq <= lastSeq, 'meta: bad seq');
    check(Array.isArray(boundaries), 'meta: bad boundaries');
    let prev = ackedSeq;
    for (const b of boundaries as unknown[]) {
      check(isCount(b) && b > prev && b <= lastSeq, 'meta: bad boundaries');
      prev = b;
    }
    // Optional: files written before sink cursors existed have none.
    const cursors: Record<string, number> = {};
    if (meta.cursors !== undefined) {
      check(
        meta.cursors !== null && typeof meta.cursors === 'object' && !Array.isArray(meta.cursors),
        'meta: bad cursors',
      );
      const entries = Object.entries(meta.cursors as Record<string, unknown>);
      check(entries.length <= 64, 'meta: too many cursors');
      for (const [name, at] of entries) {
        check(
          name.length > 0 && name.length <= 64 && isCount(at) && at > ackedSeq && at <= lastSeq,
          'meta: bad cursor',
        );
        cursors[name] = at as number;
      }
    }
    check(isCount(meta.batches), 'meta: bad batch count');
    const tracker = decodeTracker(new Reader(file.chunk('tracker')));
    const batches: BacklogSnapshot['batches'][number][] = [];
    let seq = ackedSeq;
    for (let i = 0; i < meta.batches; i++) {
      const b = decodeBatch(new Reader(file.chunk('batch')));
      check(b.seq > seq && b.seq <= lastSeq, 'batch: seq out of order');
      seq = b.seq;
      batches.push(b);
    }
    check(file.done, 'trailing bytes');
    return {
      ok: true,
      state: {
        node,
        source,
        savedAt,
        tracker,
        backlog: { bootId, lastSeq, ackedSeq, boundaries: boundaries as number[], cursors, batches },
      },
    };
  } catch (err) {
    if (err instanceof Bad) return { ok: false, reason: err.message };
    return { ok: false, reason: `unreadable (${(err as Error).message})` };
  }
}

// --- the directory ---

export type LoadResult =
  | { kind: 'none' }
  | { kind: 'ok'; state: CollectorState }
  | { kind: 'refused'; reason: string };

/** The state file in `--state-dir`. No I/O until `open()`. */
export class StateStore {
  readonly file: string;
  private readonly tmp: string;

  constructor(readonly dir: string) {
    this.file = join(dir, STATE_FILE);
    this.tmp = join(dir, TMP_FILE);
  }

  /**
   * Creates the directory if needed and proves it writable (a temporary file written, synced and
   * removed). Throws the cause when it cannot.
   */
  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    // A temporary file is what a crash in the middle of a write leaves: never a state.
    await rm(this.tmp, { force: true });
    await this.writeFileSynced(this.tmp, Buffer.alloc(0));
    await rm(this.tmp, { force: true });
  }

  /** Reads the state file for `owner`: none, one to use, or one refused (with the reason). */
  async load(owner: StateOwner): Promise<LoadResult> {
    let buf: Buffer;
    try {
      buf = await readFile(this.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
      return { kind: 'refused', reason: `cannot read it (${(err as Error).message})` };
    }
    const d = decodeState(buf);
    if (!d.ok) return { kind: 'refused', reason: d.reason };
    if (d.state.node !== owner.node) {
      return { kind: 'refused', reason: `it is node ${d.state.node}'s, this is ${owner.node}` };
    }
    if (d.state.source !== owner.source) {
      return {
        kind: 'refused',
        reason: `it was written reading ${d.state.source}, this reads ${owner.source}`,
      };
    }
    return { kind: 'ok', state: d.state };
  }

  /** Replaces the state file with `buf`, crash-safely (see the file's head). */
  async write(buf: Buffer): Promise<void> {
    await this.writeFileSynced(this.tmp, buf);
    await rename(this.tmp, this.file);
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** Removes the state file (a restart then starts with a baseline, under a new boot id). */
  async discard(): Promise<void> {
    await rm(this.file, { force: true });
  }

  private async writeFileSynced(path: string, buf: Buffer): Promise<void> {
    const f = await open(path, 'w', 0o600);
    try {
      let off = 0;
      while (off < buf.length) off += (await f.write(buf, off, buf.length - off)).bytesWritten;
      await f.sync();
    } finally {
      await f.close();
    }
  }
}
