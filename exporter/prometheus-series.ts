// The flow series of the Prometheus sink (and of the totals sinks): per series its label value ids
// and counts, in typed columns, found by one HashIndex (shared/hash-index.ts); idle series removed
// after --metrics-ttl; flows beyond --metrics-max-series summed into one overflow series.
//
// Series are slots in typed arrays, not objects: a counter held in an object field is a boxed
// double, and every increment of one in the old generation allocated a young number the next
// scavenge had to promote (about a hundred MB per round at a million flows), so the heap grew to
// several times the live set between full GCs. In typed arrays an increment allocates nothing, and
// a series costs tens of bytes instead of a kB.
import type { EnrichedFlow } from '../shared/flow.js';
import { fmix32 } from '../shared/hash.js';
import { grown, HashIndex } from '../shared/hash-index.js';
import type { Logger } from '../shared/log.js';
import {
  COUNTERS,
  ENDPOINT_FIELDS,
  ENDPOINT_LABELS,
  endpointField,
  FIXED_BY_PEER,
  type FlowSchema,
  type Getter,
  OVERFLOW,
} from './prometheus-families.js';
import type { Snapshot } from './prometheus-text.js';

/** What `totals()` returns: the live series, as typed arrays. */
export interface SeriesTotals {
  /** Label names, in the order of each series' ids. */
  labels: readonly string[];
  /** The counters: name, help, and the index of its count among a series' `perSeries`. */
  families: readonly { name: string; help: string; k: number }[];
  /** Counts per series in `counts` (the stride). */
  perSeries: number;
  count: number;
  /** Label value ids, `labels.length` per series (into `values`). */
  ids: Int32Array;
  /** tx bytes, rx bytes, tx packets, rx packets, cost per series (`perSeries` each). */
  counts: Float64Array;
  values: string[][];
  /** Per series: its creation serial (a series with a serial above an earlier `serial` is newer). */
  serials: Float64Array;
  /** Per series: its creation time, clock ms. */
  born: Float64Array;
  /** The highest serial given so far. */
  serial: number;
}

export interface SeriesConfig {
  /** `metrics-ttl` in ms: a series not updated for this long is removed; 0 keeps series forever. */
  metricsTtl: number;
  /** `metrics-max-series`: most series; flows of further series go to the overflow series. @default 200000 */
  maxSeries?: number;
}

/**
 * A copy of `v` that shares no memory with it. Decoded strings can be slices of a larger string
 * holding a whole pull body's text (msgpackr's string extraction); a label value kept for the life
 * of a series must not keep that alive.
 */
const detached = (v: string): string => JSON.parse(JSON.stringify(v)) as string;

/**
 * Endpoints remembered per group before starting over: above the pods of a large cluster (every
 * pod can be a peer of every shard), so that a round does not start over again and again.
 */
const GROUP_MEMO_MAX = 250_000;
/**
 * Slots of the by-number memo: above the endpoints a shard meets in a round at 60,000 pods; the
 * enrich stage numbers endpoints one after another, so live ones rarely share a slot.
 */
const PEER_SLOTS = 1 << 17;
const PEER_MASK = PEER_SLOTS - 1;

interface LabelGroup {
  /** Label indexes of the group, the most specific (the memo's key) first. */
  members: number[];
  /** Their ENDPOINT_FIELDS codes, same order. */
  codes: number[];
  memo: Map<string, { values: string[]; ids: number[] }>;
  /**
   * Label indexes of the side's other labels that its endpoint number fixes (FIXED_BY_PEER): taken
   * with the group from the by-number memo; else like the single labels, by their last value.
   */
  extras: number[];
  extraValue: (string | undefined)[];
  extraId: Int32Array;
  /** Whether the group is the src endpoint's (EnrichedFlow.srcPeer) or the dst's (dstPeer). */
  src: boolean;
  /** Label indexes of the members, then of the extras: the ids a row holds, in its order. */
  slots: number[];
  /**
   * By endpoint number (direct-mapped, `number & PEER_MASK`), one row per slot: the number held
   * (0: none; a number beyond 2^31 never matches, and is only slower), the hash of the ids
   * (`slotsHash`), then the ids of `slots`, side by side so that a flow reads one cache line.
   * Made on the first numbered flow.
   */
  byPeer?: Int32Array;
}

/**
 * Label values as ids (per label: value → id, id → value), and the ids of a flow's labels. The
 * labels of one endpoint come as a group (src_namespace, src_pod, src_workload, src_node,
 * src_zone): remembered together, by the enrich stage's number of the endpoint when the flow has
 * one, else under the most specific label's value. Other labels remember their last value. A
 * million flows a round pay a typed-array read (or one string lookup) per group instead of one
 * string lookup per label: the lookups were about a third of the sink's time.
 */
class LabelIds {
  /** Per label: value → id, and id → value. Rebuilt from the live series when expired values pile up. */
  interns: Map<string, number>[];
  values: string[][];
  /** The ids of the flow last given to `of`. */
  readonly scratch: Int32Array;
  private readonly getters: Getter[];
  private readonly groups: LabelGroup[] = [];
  /** Labels in no group, with their last value and its id. */
  private readonly singles: number[];
  private readonly lastValue: (string | undefined)[];
  private readonly lastId: Int32Array;

  constructor(schema: FlowSchema) {
    const names = schema.labels.map((l) => l.name);
    this.getters = schema.labels.map((l) => l.get);
    this.interns = names.map(() => new Map());
    this.values = names.map(() => []);
    this.scratch = new Int32Array(names.length);
    const grouped = new Set<number>();
    for (const side of ['src', 'dst']) {
      const members = ENDPOINT_LABELS.map((l) => names.indexOf(`${side}_${l}`)).filter((j) => j >= 0);
      if (members.length < 2) continue;
      for (const j of members) grouped.add(j);
      const codes = members.map((j) => (ENDPOINT_FIELDS as readonly string[]).indexOf(names[j]));
      const extras = FIXED_BY_PEER.filter((l) => l.startsWith(side))
        .map((l) => names.indexOf(l))
        .filter((j) => j >= 0);
      for (const j of extras) grouped.add(j);
      this.groups.push({
        members,
        codes,
        memo: new Map(),
        src: side === 'src',
        extras,
        extraValue: extras.map(() => undefined),
        extraId: new Int32Array(extras.length),
        slots: [...members, ...extras],
      });
    }
    this.singles = names.map((_, j) => j).filter((j) => !grouped.has(j));
    this.lastValue = this.singles.map(() => undefined);
    this.lastId = new Int32Array(this.singles.length);
  }

  /** The value ids of flow `f`'s labels, into `scratch`. */
  of(f: EnrichedFlow): void {
    const { scratch, groups } = this;
    for (let g = 0; g < groups.length; g++) {
      const group = groups[g];
      const r = this.row(group, f);
      if (r < 0) {
        this.groupIds(group, f);
        this.byLast(group.extras, group.extraValue, group.extraId, f);
        continue;
      }
      // By the enrich stage's number of the endpoint: typed-array reads instead of string maps'.
      const rows = group.byPeer as Int32Array;
      const { slots } = group;
      for (let k = 0; k < slots.length; k++) scratch[slots[k]] = rows[r + 2 + k];
    }
    this.byLast(this.singles, this.lastValue, this.lastId, f);
  }

  /**
   * When the label set has both endpoint groups and `f` numbers both its endpoints: a hash of the
   * ids the two groups give it (`keyOf` of any series with those ids is the same), else undefined.
   * Two typed-array reads: at the series limit it turns away most flows of no series before their
   * other labels are looked at (SeriesStore.add).
   */
  groupsKey(f: EnrichedFlow): number | undefined {
    const { groups } = this;
    if (groups.length !== 2) return undefined;
    const a = this.row(groups[0], f);
    if (a < 0) return undefined;
    const b = this.row(groups[1], f);
    if (b < 0) return undefined;
    return combine((groups[0].byPeer as Int32Array)[a + 1], (groups[1].byPeer as Int32Array)[b + 1]);
  }

  /** `groupsKey` of the series whose ids are the `n` at `o` of `ids` (undefined: no two groups). */
  keyOf(ids: Int32Array, o: number): number | undefined {
    const { groups } = this;
    if (groups.length !== 2) return undefined;
    return combine(slotsHash(ids, o, groups[0].slots), slotsHash(ids, o, groups[1].slots));
  }

  /**
   * The offset in `group.byPeer` of the row of `f`'s endpoint on the group's side, filled from the
   * interns when it held another endpoint; -1 when the flow does not number that endpoint. Writes
   * into `scratch` at the group's slots.
   */
  private row(group: LabelGroup, f: EnrichedFlow): number {
    const peer = group.src ? f.srcPeer : f.dstPeer;
    if (peer === undefined || peer <= 0) return -1;
    const { members, extras, slots } = group;
    const rows = group.byPeer ?? this.numbered(group);
    const r = (peer & PEER_MASK) * (2 + slots.length);
    if (rows[r] === peer) return r;
    // Straight from the interns: the string memo would only hold the same endpoints twice.
    const { scratch, getters } = this;
    const m = members.length;
    for (let k = 0; k < m; k++) scratch[members[k]] = this.idOf(members[k], endpointField(group.codes[k], f));
    for (let k = 0; k < extras.length; k++) scratch[extras[k]] = this.idOf(extras[k], getters[extras[k]](f));
    rows[r] = peer;
    rows[r + 1] = slotsHash(scratch, 0, slots);
    for (let k = 0; k < slots.length; k++) rows[r + 2 + k] = scratch[slots[k]];
    return r;
  }

  /** The ids of labels `js` of flow `f` into `scratch`, remembering each label's last value. */
  private byLast(js: number[], lastValue: (string | undefined)[], lastId: Int32Array, f: EnrichedFlow): void {
    const { getters, scratch } = this;
    for (let k = 0; k < js.length; k++) {
      const j = js[k];
      const v = getters[j](f);
      if (v === lastValue[k]) {
        scratch[j] = lastId[k];
        continue;
      }
      const id = this.idOf(j, v);
      lastValue[k] = v;
      lastId[k] = id;
      scratch[j] = id;
    }
  }

  /**
   * The ids of `group`'s labels of flow `f` into `scratch`, by the memo of their values: the
   * enrich stage hands out the cluster view's own strings, so a hit is one pointer comparison per
   * label.
   */
  private groupIds(group: LabelGroup, f: EnrichedFlow): void {
    const { scratch } = this;
    const { members, codes } = group;
    const key = endpointField(codes[0], f);
    let memo = group.memo.get(key);
    if (memo !== undefined) {
      let k = 0;
      while (k < members.length && endpointField(codes[k], f) === memo.values[k]) k++;
      if (k === members.length) {
        for (k = 0; k < members.length; k++) scratch[members[k]] = memo.ids[k];
        return;
      }
    } else {
      // Bounded: pods come and go; starting over costs one lookup per label once.
      if (group.memo.size >= GROUP_MEMO_MAX) group.memo.clear();
      memo = {
        values: new Array<string>(members.length).fill(''),
        ids: new Array<number>(members.length).fill(0),
      };
      group.memo.set(key, memo);
    }
    for (let k = 0; k < members.length; k++) {
      const j = members[k];
      const v = endpointField(codes[k], f);
      const id = this.idOf(j, v);
      memo.values[k] = v;
      memo.ids[k] = id;
      scratch[j] = id;
    }
  }

  /** The by-number memo of `group`, made on the first numbered flow (sinks fed by hand need none). */
  private numbered(group: LabelGroup): Int32Array {
    // Zero is no endpoint's number (they count from 1): the pages of slots never used stay untouched.
    group.byPeer = new Int32Array(PEER_SLOTS * (2 + group.slots.length));
    return group.byPeer;
  }

  private idOf(j: number, v: string): number {
    const id = this.interns[j].get(v);
    return id === undefined ? this.intern(j, v) : id;
  }

  private intern(j: number, v: string): number {
    const own = detached(v);
    const id = this.values[j].length;
    this.values[j].push(own);
    this.interns[j].set(own, id);
    return id;
  }

  /** Whether values no live series uses may have piled up (pod churn): time to `reintern`. */
  stale(live: number): boolean {
    return this.interns.some((m) => m.size > 2 * live + 1000);
  }

  /**
   * Numbers the values of the first `count` rows of `ids` (`n` per row) afresh, in place: only
   * values still used keep an id. What was remembered of the old ids is void.
   */
  reintern(ids: Int32Array, count: number): void {
    for (const g of this.groups) {
      g.memo.clear();
      g.byPeer?.fill(0);
      g.extraValue.fill(undefined);
    }
    this.lastValue.fill(undefined);
    const n = this.scratch.length;
    const old = this.values;
    this.interns = old.map(() => new Map());
    this.values = old.map(() => []);
    for (let s = 0; s < count; s++) {
      for (let j = 0; j < n; j++) {
        const v = old[j][ids[s * n + j]];
        let id = this.interns[j].get(v);
        if (id === undefined) {
          id = this.values[j].length;
          this.values[j].push(v);
          this.interns[j].set(v, id);
        }
        ids[s * n + j] = id;
      }
    }
  }
}

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
const MIN_CAPACITY = 1024;

/**
 * The hash of a row of `n` label ids at `o`: FNV-1a over the ids, then mixed so that every bit
 * reaches the low ones the index probes from.
 */
function rowHash(ids: Int32Array, o: number, n: number): number {
  let h = FNV_OFFSET;
  for (let j = 0; j < n; j++) h = Math.imul(h ^ ids[o + j], FNV_PRIME);
  return fmix32(h) | 0;
}

/** FNV-1a over the ids at `o + slots[k]`, mixed (the hash of one endpoint group's ids). */
function slotsHash(ids: Int32Array, o: number, slots: readonly number[]): number {
  let h = FNV_OFFSET;
  for (let k = 0; k < slots.length; k++) h = Math.imul(h ^ ids[o + slots[k]], FNV_PRIME);
  return fmix32(h) | 0;
}

/** One hash of the two endpoint groups' hashes. */
const combine = (a: number, b: number): number => fmix32(Math.imul(a, 0x9e3779b1) ^ b) | 0;

/**
 * A Bloom filter of 32-bit hashes, about 8 bits per entry, two bits per hash. Both bits lie in one
 * 32-bit word (a blocked filter): one memory read per lookup instead of two, for a few more false
 * positives (each costs the exact look that follows).
 */
class Bloom {
  private readonly bits: Int32Array;
  private readonly shift: number;

  constructor(entries: number) {
    let size = 1 << 10;
    while (size < entries / 4) size *= 2;
    this.bits = new Int32Array(size);
    this.shift = 32 - Math.log2(size);
  }

  add(h: number): void {
    this.bits[h >>> this.shift] |= bloomMask(h);
  }

  has(h: number): boolean {
    const mask = bloomMask(h);
    return (this.bits[h >>> this.shift] & mask) === mask;
  }
}

/** The two bits of hash `h` in its word: from a second mix of `h`, not from the word index. */
function bloomMask(h: number): number {
  const m = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  return (1 << (m & 31)) | (1 << ((m >>> 5) & 31));
}

/** A copy of column `a` with room for `length` entries (longer or shorter). */
const resized = <T extends Int32Array | Float64Array>(a: T, length: number): T =>
  length >= a.length ? grown(a, length) : (a.slice(0, length) as T);

export class SeriesStore {
  /** Number of labels. */
  private readonly n: number;
  private readonly labelIds: LabelIds;
  /** Slots by the hash of their label ids. */
  private readonly index = new HashIndex(MIN_CAPACITY);
  /** Live series: slots 0 … count-1 (expiry moves live ones down over the expired). */
  private live = 0;
  private capacity = 0;
  /** Label value ids, `n` per slot. */
  private ids = new Int32Array(0);
  /** Per slot: COUNTERS counts, in COUNTED order. */
  private counts = new Float64Array(0);
  /** Last add that touched the slot (clock ms). */
  private last = new Float64Array(0);
  private hashes = new Int32Array(0);
  /** Per slot: a serial number given at creation (ever increasing), and the creation time (clock ms). */
  private serials = new Float64Array(0);
  private born = new Float64Array(0);
  private serial = 0;
  private lastExpire = Number.NEGATIVE_INFINITY;
  /**
   * Bloom filters of the live series, made when first asked at the series limit, dropped whenever
   * series come or go or are rehashed: of their hashes, and of their endpoint groups' key
   * (LabelIds.keyOf).
   */
  private bloom: Bloom | undefined;
  private groupBloom: Bloom | undefined;
  private readonly maxSeries: number;
  /** The overflow series: present once the limit was hit (until it idles out). */
  private overflowOn = false;
  private readonly overflowCounts = new Float64Array(COUNTERS);
  private overflowLast = 0;
  private overflowSerial = 0;
  private overflowBorn = 0;

  constructor(
    private readonly schema: FlowSchema,
    private readonly config: SeriesConfig,
    private readonly log?: Logger,
  ) {
    this.n = schema.labels.length;
    this.labelIds = new LabelIds(schema);
    this.maxSeries = config.maxSeries ?? 200_000;
  }

  /** Live series (without the overflow series). */
  get count(): number {
    return this.live;
  }

  /**
   * Counts `flows` at time `now` into their series; returns how many went to the overflow series.
   * Idle series are removed on the way, at most once a second (the pipeline adds once per
   * collector).
   */
  add(flows: readonly EnrichedFlow[], now: number): number {
    const labelIds = this.labelIds;
    const scratch = labelIds.scratch;
    const index = this.index;
    const n = this.n;
    let overflowed = 0;
    let ids = this.ids;
    let counts = this.counts;
    let last = this.last;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      if (this.live >= this.maxSeries) {
        // At the limit: a flow whose two endpoints no live series has together is of no series,
        // whatever its other labels; said by two rows of ids and a filter.
        const k = labelIds.groupsKey(f);
        if (k !== undefined && !this.mayHaveGroups(k)) {
          this.addOverflow(f, now);
          overflowed++;
          continue;
        }
      }
      labelIds.of(f);
      const h = rowHash(scratch, 0, n);
      // At the limit, most flows of a round belong to no series (all labels: a million distinct
      // label sets, 200,000 series): the filter says so from the CPU cache, the index would have
      // missed it once per flow.
      if (this.live >= this.maxSeries && !this.mayHave(h)) {
        this.addOverflow(f, now);
        overflowed++;
        continue;
      }
      let s = index.first(h);
      for (; s >= 0; s = index.next()) {
        const base = s * n;
        let j = 0;
        while (j < n && ids[base + j] === scratch[j]) j++;
        if (j === n) break;
      }
      if (s < 0) {
        if (this.live >= this.maxSeries) {
          this.addOverflow(f, now);
          overflowed++;
          continue;
        }
        s = this.create(h, now);
        ids = this.ids;
        counts = this.counts;
        last = this.last;
      }
      last[s] = now;
      const c = s * COUNTERS;
      counts[c] += f.txBytes;
      counts[c + 1] += f.rxBytes;
      counts[c + 2] += f.txPackets;
      counts[c + 3] += f.rxPackets;
      counts[c + 4] += f.cost;
    }
    this.expireDue(now);
    return overflowed;
  }

  /** `expire`, unless it ran within the last second. */
  expireDue(now: number): void {
    if (now - this.lastExpire >= 1000) this.expire(now);
  }

  private addOverflow(f: EnrichedFlow, now: number): void {
    if (!this.overflowOn) {
      this.log?.warn(
        { maxSeries: this.maxSeries },
        'flow series limit reached: flows of new series are summed into the _overflow_ series (raise --metrics-max-series or reduce --metrics-labels)',
      );
      this.overflowOn = true;
      this.overflowCounts.fill(0);
      this.overflowSerial = ++this.serial;
      this.overflowBorn = now;
    }
    this.overflowLast = now;
    const c = this.overflowCounts;
    c[0] += f.txBytes;
    c[1] += f.rxBytes;
    c[2] += f.txPackets;
    c[3] += f.rxPackets;
    c[4] += f.cost;
  }

  /**
   * False when no live series has hash `h` (at the limit, most flows of a round belong to no
   * series: the filter, 256 kB at 200,000 series, says so from the CPU cache where the 2 MB
   * index would have missed once per flow).
   */
  private mayHave(h: number): boolean {
    this.bloom ??= this.filterOf((s) => this.hashes[s]);
    return this.bloom.has(h);
  }

  /** False when no live series has endpoint groups of key `k` (LabelIds.groupsKey). */
  private mayHaveGroups(k: number): boolean {
    this.groupBloom ??= this.filterOf((s) => this.labelIds.keyOf(this.ids, s * this.n) as number);
    return this.groupBloom.has(k);
  }

  /** A Bloom filter of `key` of every live series. */
  private filterOf(key: (s: number) => number): Bloom {
    const bloom = new Bloom(this.live);
    for (let s = 0; s < this.live; s++) bloom.add(key(s));
    return bloom;
  }

  /** A new series with the label ids in `scratch` and hash `h`; returns its slot. */
  private create(h: number, now: number): number {
    this.bloom = undefined;
    this.groupBloom = undefined;
    if (this.live === this.capacity) {
      // Never beyond the limit: at 200,000 series, doubling would leave 62,000 slots (9 MB) unused.
      this.resize(Math.max(MIN_CAPACITY, Math.min(this.capacity * 2, this.maxSeries)));
    }
    const s = this.live++;
    this.ids.set(this.labelIds.scratch, s * this.n);
    this.counts.fill(0, s * COUNTERS, s * COUNTERS + COUNTERS);
    this.hashes[s] = h;
    this.serials[s] = ++this.serial;
    this.born[s] = now;
    this.index.add(h, s);
    return s;
  }

  private resize(capacity: number): void {
    this.ids = resized(this.ids, capacity * this.n);
    this.counts = resized(this.counts, capacity * COUNTERS);
    this.last = resized(this.last, capacity);
    this.hashes = resized(this.hashes, capacity);
    this.serials = resized(this.serials, capacity);
    this.born = resized(this.born, capacity);
    this.capacity = capacity;
  }

  /** Removes series not updated within `metrics-ttl` before `now` (Prometheus then marks them stale). */
  expire(now: number): void {
    this.lastExpire = now;
    const ttl = this.config.metricsTtl;
    if (ttl <= 0) return;
    if (this.overflowOn && now - this.overflowLast >= ttl) this.overflowOn = false;
    const n = this.n;
    const { ids, counts, last, hashes, serials, born } = this;
    // Live series are moved down over the expired ones, keeping their order.
    let w = 0;
    for (let r = 0; r < this.live; r++) {
      if (now - last[r] >= ttl) continue;
      if (w !== r) {
        ids.copyWithin(w * n, r * n, r * n + n);
        counts.copyWithin(w * COUNTERS, r * COUNTERS, r * COUNTERS + COUNTERS);
        last[w] = last[r];
        hashes[w] = hashes[r];
        serials[w] = serials[r];
        born[w] = born[r];
      }
      w++;
    }
    if (w === this.live) return;
    this.live = w;
    if (this.capacity > MIN_CAPACITY && this.capacity > 4 * w) {
      this.resize(Math.max(MIN_CAPACITY, 2 * w));
    }
    // Ids of values no live series uses would pile up with pod churn: re-intern now and then.
    if (this.labelIds.stale(w)) {
      this.labelIds.reintern(this.ids, w);
      for (let s = 0; s < w; s++) this.hashes[s] = rowHash(this.ids, s * n, n);
    }
    // Slots moved: the index is built again (and the filter when next asked).
    this.bloom = undefined;
    this.groupBloom = undefined;
    this.index.clear(Math.max(MIN_CAPACITY, w));
    for (let s = 0; s < w; s++) this.index.add(this.hashes[s], s);
  }

  /**
   * What a /metrics response needs, copied now: a round running while a slow scraper reads must
   * not mix into the text in progress (see Snapshot).
   */
  snapshot(): Snapshot {
    const count = this.live;
    return {
      count,
      ids: this.ids.slice(0, count * this.n),
      counts: this.counts.slice(0, count * COUNTERS),
      values: this.labelIds.values,
      overflow: this.overflowOn ? this.overflowCounts.slice() : undefined,
    };
  }

  /**
   * Every live series with its totals, for sinks that push them (remote write, OTLP metrics) rather
   * than being scraped: copies, as a scrape's snapshot. The overflow series, when present, is last,
   * every label `_overflow_`; the schema's constant `cluster` label, when set, first.
   */
  totals(): SeriesTotals {
    const n = this.n;
    let count = this.live;
    // One slot more than the live series: room for the overflow series.
    const copy = <T extends Int32Array | Float64Array>(a: T, per: number): T => {
      const b = new (a.constructor as new (len: number) => T)((count + 1) * per);
      b.set(a.subarray(0, count * per));
      return b;
    };
    const ids = copy(this.ids, n);
    const counts = copy(this.counts, COUNTERS);
    const serials = copy(this.serials, 1);
    const born = copy(this.born, 1);
    const values = this.labelIds.values.map((v) => v.slice());
    if (this.overflowOn) {
      for (let j = 0; j < n; j++) {
        ids[count * n + j] = values[j].length;
        values[j].push(OVERFLOW);
      }
      counts.set(this.overflowCounts, count * COUNTERS);
      serials[count] = this.overflowSerial;
      born[count] = this.overflowBorn;
      count++;
    }
    const names = this.schema.labels.map((l) => l.name);
    const totals = {
      labels: names,
      families: this.schema.families,
      perSeries: COUNTERS,
      count,
      ids,
      counts,
      values,
      serials,
      born,
      serial: this.serial,
    };
    const cluster = this.schema.cluster;
    if (cluster === undefined) return totals;
    // The constant label first, as in the text: one more id per series, always 0.
    const wide = new Int32Array(count * (n + 1));
    for (let s = 0; s < count; s++) wide.set(ids.subarray(s * n, s * n + n), s * (n + 1) + 1);
    return { ...totals, labels: ['cluster', ...names], ids: wide, values: [[cluster], ...values] };
  }
}
