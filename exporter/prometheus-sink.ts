// Prometheus sink: the flow counters of CONTRACT.md (bytes, packets, cost), served with the explicit prom-client
// Registry of the process (/metrics); series idle for `metrics-ttl` are removed.
import { StringDecoder } from 'node:string_decoder';
import type { Registry } from 'prom-client';
import { fmix32 } from '../shared/hash.js';
import { FLOW_LABELS, type FlowLabel } from '../shared/config.js';
import type { EnrichedFlow } from '../shared/flow.js';
import type { ChunkedRegistry, MetricsChunks } from '../shared/http.js';
import type { Logger } from '../shared/log.js';
import type { ExporterMetrics } from './metrics.js';
import type { Sink } from './sink.js';

export interface PrometheusSinkConfig {
  /** `metrics-prefix`: `podflow`, or `egressd` for egressd-compatible names and labels. */
  metricsPrefix: 'podflow' | 'egressd';
  /** `metrics-labels`: podflow labels kept; series are summed over the others. Ignored for egressd. */
  metricsLabels: readonly FlowLabel[];
  /** `metrics-ttl` in ms: a series not updated for this long is removed; 0 keeps series forever. */
  metricsTtl: number;
  /** `metrics-pod-ips`: fill dst_ip for pod and node peers too. */
  metricsPodIps: boolean;
  /**
   * `metrics-max-series`: most series per counter. Flows of further series are summed into one
   * overflow series whose every label is `_overflow_`, so totals stay exact while /metrics stays
   * renderable. @default 200000
   */
  maxSeries?: number;
  /**
   * A batch counted here is safe from this process's death once a scrape served it (onDurable).
   * Before the first scrape, or when nothing has scraped for this long (no Prometheus, a long
   * outage), at once instead: the collectors must not keep batches for a scraper that does not
   * come. @default 300000 (5 min)
   */
  scrapeGraceMs?: number;
  /**
   * `cluster-name`: the label `cluster` with this value on every series (first, whatever
   * `metricsLabels` keeps). The same on every series, so it is no part of a series' key: it is
   * written into each line as it is rendered. None when unset.
   */
  clusterName?: string;
}

/** What `PrometheusSink.totals()` returns: the live series, as typed arrays. */
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

/** Label value of the overflow series: not a valid pod, namespace, node name or address. */
export const OVERFLOW = '_overflow_';

type Getter = (f: EnrichedFlow) => string;

/** One label: its name on the metric and where its value comes from. */
interface LabelSpec {
  name: string;
  get: Getter;
}

function podflowLabels(config: PrometheusSinkConfig): LabelSpec[] {
  const keep = new Set(config.metricsLabels);
  const podIps = config.metricsPodIps;
  const get: Record<FlowLabel, Getter> = {
    src_namespace: (f) => f.srcNamespace,
    src_pod: (f) => f.srcPod,
    src_workload: (f) => f.srcWorkload,
    src_node: (f) => f.srcNode,
    src_zone: (f) => f.srcZone,
    src_region: (f) => f.srcRegion,
    dst_namespace: (f) => f.dstNamespace,
    dst_pod: (f) => f.dstPod,
    dst_workload: (f) => f.dstWorkload,
    dst_node: (f) => f.dstNode,
    dst_zone: (f) => f.dstZone,
    dst_region: (f) => f.dstRegion,
    // Pod and node addresses churn with every rollout: left out unless asked for (cardinality).
    dst_ip: (f) => (podIps || f.dstType === 'private' || f.dstType === 'public' ? f.dstIp : ''),
    dst_dns_name: (f) => f.dstDnsName,
    dst_type: (f) => f.dstType,
    traffic_class: (f) => f.trafficClass,
    cross_zone: (f) => (f.crossZone ? 'true' : 'false'),
    proto: (f) => f.proto,
  };
  return FLOW_LABELS.filter((l) => keep.has(l)).map((name) => ({ name, get: get[name] }));
}

/**
 * castai/egressd's exporter: `egressd_transmit_bytes_total` and `egressd_received_bytes_total`, with
 * src_ip and dst_ip always filled and dst_ip_type private/public by address (egressd's
 * netaddr IsPrivate) as the enrich stage classed it (so the grouped 0.0.0.0 / :: of
 * --group-public-ips is public), the other labels as podflow's. egressd has no packet counters.
 */
function egressdLabels(): LabelSpec[] {
  return [
    { name: 'cross_zone', get: (f) => (f.crossZone ? 'true' : 'false') },
    { name: 'dst_ip', get: (f) => f.dstIp },
    { name: 'dst_ip_type', get: (f) => (f.dstType === 'public' ? 'public' : 'private') },
    { name: 'dst_namespace', get: (f) => f.dstNamespace },
    { name: 'dst_node', get: (f) => f.dstNode },
    { name: 'dst_pod', get: (f) => f.dstPod },
    { name: 'dst_zone', get: (f) => f.dstZone },
    { name: 'proto', get: (f) => f.proto },
    { name: 'src_ip', get: (f) => f.srcIp },
    { name: 'src_namespace', get: (f) => f.srcNamespace },
    { name: 'src_node', get: (f) => f.srcNode },
    { name: 'src_pod', get: (f) => f.srcPod },
    { name: 'src_zone', get: (f) => f.srcZone },
  ];
}

interface Family {
  name: string;
  help: string;
  /** Index of the counter within a series' COUNTERS. */
  k: number;
}

/** Counters per series: tx bytes, rx bytes, tx packets, rx packets, cost. */
const COUNTERS = 5;

/** Prometheus text format escaping of a label value (backslash, double quote, newline). */
const escapeLabel = (v: string) =>
  /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;

/**
 * A copy of `v` that shares no memory with it. Decoded strings can be slices of a larger string
 * holding a whole pull body's text (msgpackr's string extraction); a label value kept for the life
 * of a series must not keep that alive.
 */
const detached = (v: string): string => JSON.parse(JSON.stringify(v)) as string;

/** Bytes per /metrics chunk: large enough that a chunk costs little, small enough to stay cheap. */
const CHUNK_BYTES = 256 << 10;

/**
 * What a /metrics response needs of the sink, copied when the response starts: a round running while
 * a slow scraper reads (pushes, expiry moving slots down) must not mix into the text in progress.
 * The copies are typed arrays (about 90 bytes per series at 14 labels); the value arrays are shared,
 * as interning only appends to them and re-interning replaces them.
 */
interface Snapshot {
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
class FlowText {
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

/**
 * The endpoint labels read by a switch rather than through the label's getter: one call site
 * calling fourteen different closures is megamorphic (no inlining, a full call each), and these
 * reads ran for every label of every flow. Codes index ENDPOINT_FIELDS; -1: use the getter.
 */
const ENDPOINT_FIELDS = [
  'src_namespace',
  'src_pod',
  'src_workload',
  'src_node',
  'src_zone',
  'dst_namespace',
  'dst_pod',
  'dst_workload',
  'dst_node',
  'dst_zone',
] as const;

function endpointField(code: number, f: EnrichedFlow): string {
  switch (code) {
    case 0:
      return f.srcNamespace;
    case 1:
      return f.srcPod;
    case 2:
      return f.srcWorkload;
    case 3:
      return f.srcNode;
    case 4:
      return f.srcZone;
    case 5:
      return f.dstNamespace;
    case 6:
      return f.dstPod;
    case 7:
      return f.dstWorkload;
    case 8:
      return f.dstNode;
    default:
      return f.dstZone;
  }
}

/** The labels of one endpoint (src_… or dst_…), most specific first. */
const ENDPOINT_LABELS = ['pod', 'workload', 'node', 'namespace', 'zone'];
/**
 * Endpoints remembered per group before starting over: above the pods of a large cluster (every
 * pod can be a peer of every shard), so that a round does not start over again and again.
 */
const GROUP_MEMO_MAX = 250_000;

interface LabelGroup {
  /** Label index whose value keys the memo. */
  key: number;
  /** Label indexes of the group, the key first. */
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
  /**
   * By endpoint number (direct-mapped, `number & PEER_MASK`): the number held at each slot (-1:
   * none) and the ids of its members and extras, in that order, per slot. Made on the first
   * numbered flow.
   */
  tags?: Float64Array;
  peerIds?: Int32Array;
}

/**
 * Slots of the by-number memo: above the endpoints a shard meets in a round at 60,000 pods; the
 * enrich stage numbers endpoints one after another, so live ones rarely share a slot.
 */
const PEER_SLOTS = 1 << 17;
/** Labels outside the endpoint groups that EnrichedFlow.srcPeer / dstPeer fix too. */
const FIXED_BY_PEER = ['src_region', 'dst_region', 'dst_ip', 'dst_type', 'dst_ip_type'];
const PEER_MASK = PEER_SLOTS - 1;

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
const MIN_CAPACITY = 1024;

/**
 * The flow counters live here, not in prom-client's per-series maps: at a million flows per round
 * and tens of thousands of series, prom-client's label hashing on every increment and its formatter
 * (microseconds per sample) dominated the round and the scrape. The text is appended to the explicit
 * Registry's `metrics()` output, so /metrics serves self-metrics and flow counters from one Registry.
 *
 * Series are slots in typed arrays (label ids, counters, last update, hash index), not objects: a
 * counter held in an object field is a boxed double, and every increment of one in the old
 * generation allocated a young number the next scavenge had to promote (about a hundred MB per
 * round at a million flows), so the heap grew to several times the live set between full GCs. In
 * typed arrays an increment allocates nothing, and a series costs tens of bytes instead of a kB.
 * A /metrics response copies the ids and counts (about 90 bytes per series at 14 labels) and is
 * made a chunk at a time from per-value `name="value"` byte pieces (`chunks`, `FlowText`).
 */
export class PrometheusSink implements Sink {
  readonly name = 'prometheus';
  private readonly labels: LabelSpec[];
  private readonly getters: Getter[];
  private readonly families: Family[];
  /** Number of labels. */
  private readonly n: number;
  /**
   * Open-addressing index over the slots: at position p (from `hash & mask`, linear probing),
   * `table[2p]` = slot + 1 (0 where free) and `table[2p + 1]` = the slot's hash, side by side so
   * that a probe reads one cache line, not the slot's hash elsewhere. At most half full. A Map from
   * hash to slot cost a boxed number per lookup for hashes beyond the small-integer range, and more
   * cache misses.
   */
  private table = new Int32Array(4);
  private mask = 1;
  /** Live series: slots 0 … count-1. */
  private count = 0;
  private capacity = 0;
  /** Label value ids, `n` per slot. */
  private ids = new Int32Array(0);
  /** tx bytes, rx bytes, tx packets, rx packets, cost per slot (COUNTERS). */
  private counts = new Float64Array(0);
  /** Last push that touched the slot (clock ms). */
  private last = new Float64Array(0);
  private hashes = new Int32Array(0);
  /** Per slot: a serial number given at creation (ever increasing), and the creation time (clock ms). */
  private serials = new Float64Array(0);
  private born = new Float64Array(0);
  private serial = 0;
  /** Per label: value → id, and id → value. Rebuilt from the live series when expired values pile up. */
  private interns: Map<string, number>[];
  private values: string[][];
  private readonly scratch: Int32Array;
  /** Labels taken per endpoint (labelIds), and the others with their last value and its id. */
  private readonly groups: LabelGroup[];
  private readonly singles: number[];
  private readonly lastValue: (string | undefined)[];
  private readonly lastId: Int32Array;
  private lastExpire = Number.NEGATIVE_INFINITY;
  private readonly maxSeries: number;
  /** The overflow series: present once the limit was hit (until it idles out). */
  private overflowOn = false;
  private readonly overflowCounts = new Float64Array(COUNTERS);
  private overflowLast = 0;
  private overflowSerial = 0;
  private overflowBorn = 0;
  private readonly overflowText: string;
  /** `cluster="…",` written after `{` of every line, or empty. */
  private readonly fixed: Buffer;
  /** Flows summed into the overflow series since the last push (for the self-metric). */
  private overflowed = 0;
  /** onDurable callbacks of pushes no complete scrape has served yet, oldest first. */
  private unscraped: (() => void)[] = [];
  /** When a scrape last completed (clock ms); undefined until the first. */
  private lastScrape: number | undefined;

  constructor(
    private readonly config: PrometheusSinkConfig,
    private readonly deps: { registry: Registry; metrics?: ExporterMetrics; log?: Logger },
    private readonly clock: () => number = Date.now,
  ) {
    const egressd = config.metricsPrefix === 'egressd';
    this.labels = egressd ? egressdLabels() : podflowLabels(config);
    this.getters = this.labels.map((l) => l.get);
    this.n = this.labels.length;
    this.maxSeries = config.maxSeries ?? 200_000;
    this.interns = this.labels.map(() => new Map());
    this.values = this.labels.map(() => []);
    this.scratch = new Int32Array(this.n);
    const names = this.labels.map((l) => l.name);
    this.groups = [];
    const grouped = new Set<number>();
    for (const side of ['src', 'dst']) {
      // Most specific first: the key of the group.
      const members = ENDPOINT_LABELS.map((l) => names.indexOf(`${side}_${l}`)).filter((j) => j >= 0);
      if (members.length < 2) continue;
      for (const j of members) grouped.add(j);
      const codes = members.map((j) => (ENDPOINT_FIELDS as readonly string[]).indexOf(names[j]));
      const extras = FIXED_BY_PEER.filter((l) => l.startsWith(side))
        .map((l) => names.indexOf(l))
        .filter((j) => j >= 0);
      for (const j of extras) grouped.add(j);
      this.groups.push({
        key: members[0],
        members,
        codes,
        memo: new Map(),
        src: side === 'src',
        extras,
        extraValue: extras.map(() => undefined),
        extraId: new Int32Array(extras.length),
      });
    }
    this.singles = names.map((_, j) => j).filter((j) => !grouped.has(j));
    this.lastValue = this.singles.map(() => undefined);
    this.lastId = new Int32Array(this.singles.length);
    const fixed = config.clusterName !== undefined ? `cluster="${escapeLabel(config.clusterName)}",` : '';
    this.fixed = Buffer.from(fixed);
    this.overflowText = `{${fixed}${this.labels.map((l) => `${l.name}="${OVERFLOW}"`).join(',')}}`;
    const p = config.metricsPrefix;
    this.families = [
      {
        name: `${p}_transmit_bytes_total`,
        help: 'Bytes sent by the local endpoint (src) to the peer (dst)',
        k: 0,
      },
      {
        name: `${p}_received_bytes_total`,
        help: 'Bytes received by the local endpoint (src) from the peer (dst)',
        k: 1,
      },
    ];
    if (!egressd) {
      this.families.push(
        {
          name: `${p}_transmit_packets_total`,
          help: 'Packets sent by the local endpoint (src) to the peer (dst)',
          k: 2,
        },
        {
          name: `${p}_received_packets_total`,
          help: 'Packets received by the local endpoint (src) from the peer (dst)',
          k: 3,
        },
        {
          name: `${p}_traffic_cost_total`,
          help: 'Cost of the bytes of the series under the price table (--cloud, --prices), USD',
          k: 4,
        },
      );
    }
    const registry = deps.registry;
    for (const f of this.families) {
      if (registry.getSingleMetric(f.name)) throw new Error(`metric ${f.name} is already registered`);
    }
    const inner = registry.metrics.bind(registry);
    registry.metrics = async () => this.render((await inner()).trimEnd());
    // /metrics (shared/http.ts) writes these chunks instead of the whole text as one string. The
    // pushes counted before the scrape began are in its snapshot: once the scraper has the whole
    // body, they are safe (a failed scrape leaves them waiting for the next).
    (registry as ChunkedRegistry).metricsChunks = async () => {
      const due = this.unscraped.splice(0);
      const text = this.chunks((await inner()).trimEnd());
      text.done = (complete) => {
        if (!complete) {
          this.unscraped.unshift(...due);
          return;
        }
        this.lastScrape = this.clock();
        for (const fn of due) fn();
      };
      return text;
    };
  }

  /**
   * Once a scraper has shown itself (a complete scrape), a push is safe when the next complete
   * scrape served it. Before the first scrape, or when none came for `scrapeGraceMs`, at once:
   * waiting would only make the collectors hold their batches for a scraper that does not come.
   */
  onDurable(fn: () => void): void {
    const last = this.lastScrape;
    if (last === undefined || this.clock() - last > (this.config.scrapeGraceMs ?? 300_000)) {
      for (const f of this.unscraped.splice(0)) f();
      fn();
      return;
    }
    this.unscraped.push(fn);
  }

  /**
   * Every live series with its totals, for sinks that push them (remote write, OTLP metrics) rather
   * than being scraped: copies, as a scrape's snapshot. The overflow series, when present, is last,
   * every label `_overflow_`.
   */
  totals(): SeriesTotals {
    const n = this.n;
    let count = this.count;
    // One slot more than the live series: room for the overflow series.
    const copy = <T extends Int32Array | Float64Array>(a: T, per: number, make: (len: number) => T): T => {
      const b = make((count + 1) * per);
      b.set(a.subarray(0, count * per));
      return b;
    };
    const ids = copy(this.ids, n, (l) => new Int32Array(l));
    const counts = copy(this.counts, COUNTERS, (l) => new Float64Array(l));
    const serials = copy(this.serials, 1, (l) => new Float64Array(l));
    const born = copy(this.born, 1, (l) => new Float64Array(l));
    const values = this.values.map((v) => v.slice());
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
    const cluster = this.config.clusterName;
    if (cluster !== undefined) {
      // The constant label first, as in the text: one more id per series, always 0.
      const wide = new Int32Array(count * (n + 1));
      for (let s = 0; s < count; s++) wide.set(ids.subarray(s * n, s * n + n), s * (n + 1) + 1);
      return {
        labels: ['cluster', ...this.labels.map((l) => l.name)],
        families: this.families,
        perSeries: COUNTERS,
        count,
        ids: wide,
        counts,
        values: [[cluster], ...values],
        serials,
        born,
        serial: this.serial,
      };
    }
    return {
      labels: this.labels.map((l) => l.name),
      families: this.families,
      perSeries: COUNTERS,
      count,
      ids,
      counts,
      values,
      serials,
      born,
      serial: this.serial,
    };
  }

  /** Number of flow series currently exported (per counter). */
  get seriesCount(): number {
    return this.count;
  }

  /**
   * The flow counters in Prometheus text format, one block per counter, ending with a newline;
   * `head` (the Registry's other metrics) goes first, separated by a blank line. The same text as
   * `chunks` joined: for tests and small registries (the whole text is held twice, as bytes and as
   * a string). /metrics streams `chunks` instead.
   */
  render(head = ''): string {
    const decoder = new StringDecoder('utf8');
    const text = this.chunks(head);
    let out = '';
    for (let c = text.next(); c !== undefined; c = text.next()) out += decoder.write(c);
    return out + decoder.end();
  }

  /**
   * The text of `render` in chunks of about 256 kB (`chunkBytes`), each ending at a line end: call
   * `next()` until it returns undefined. The state is copied now (see `Snapshot`); chunks are made
   * as they are asked for, so that a response holds one or two of them at a time instead of the
   * whole text: at 200,000 series of 14 labels the text is over 200 MB, and as one string plus the
   * Buffer the socket needed it took several times that at its peak.
   */
  chunks(head = '', chunkBytes = CHUNK_BYTES): MetricsChunks {
    const n = this.n;
    const count = this.count;
    const snap: Snapshot = {
      count,
      ids: this.ids.slice(0, count * n),
      counts: this.counts.slice(0, count * COUNTERS),
      values: this.values,
      overflow: this.overflowOn ? this.overflowCounts.slice() : undefined,
    };
    const sections: Section[] = [];
    if (head.length > 0) sections.push(`${head}\n\n`);
    for (let i = 0; i < this.families.length; i++) {
      const f = this.families[i];
      sections.push(`${i > 0 ? '\n' : ''}# HELP ${f.name} ${f.help}\n# TYPE ${f.name} counter\n`);
      sections.push({ name: Buffer.from(f.name, 'latin1'), k: f.k });
      if (snap.overflow !== undefined) {
        sections.push(`${f.name}${this.overflowText} ${snap.overflow[f.k]}\n`);
      }
    }
    return new FlowText(
      sections,
      snap,
      this.labels.map((l) => l.name),
      chunkBytes,
      this.fixed,
    );
  }

  async push(flows: readonly EnrichedFlow[]): Promise<void> {
    const now = this.clock();
    const scratch = this.scratch;
    const n = this.n;
    let ids = this.ids;
    let table = this.table;
    let mask = this.mask;
    let wrap = (mask << 1) | 1;
    let counts = this.counts;
    let last = this.last;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      this.labelIds(f);
      let h = FNV_OFFSET;
      for (let j = 0; j < n; j++) h = Math.imul(h ^ scratch[j], FNV_PRIME);
      // The index probes from the low bits: mix every id bit into them.
      h = fmix32(h) | 0;
      let p = (h & mask) << 1;
      let s = table[p] - 1;
      while (s >= 0) {
        if (table[p + 1] === h) {
          const base = s * n;
          let j = 0;
          while (j < n && ids[base + j] === scratch[j]) j++;
          if (j === n) break;
        }
        p = (p + 2) & wrap;
        s = table[p] - 1;
      }
      if (s < 0) {
        if (this.count >= this.maxSeries) {
          this.addOverflow(f, now);
          continue;
        }
        s = this.create(h);
        ids = this.ids;
        table = this.table;
        mask = this.mask;
        wrap = (mask << 1) | 1;
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
    // The pipeline pushes once per collector: scan for idle series at most once a second.
    if (now - this.lastExpire >= 1000) this.expire(now);
    this.deps.metrics?.series.set(this.count);
    if (this.overflowed > 0) {
      this.deps.metrics?.seriesOverflow.inc(this.overflowed);
      this.overflowed = 0;
    }
  }

  /**
   * The value ids of flow `f`'s labels, into `scratch`. The labels of one endpoint come as a group
   * (src_namespace, src_pod, src_workload, src_node, src_zone): remembered together under the most
   * specific one's value, and taken from there when the others are the same strings (the enrich
   * stage hands out the cluster view's own strings, so that is one pointer comparison each). Other
   * labels remember their last value. A million flows a round pay one string lookup per group
   * instead of one per label: the lookups were about a third of the sink's time.
   *
   * Flows numbered by the enrich stage (srcPeer, dstPeer) skip even that: a group's ids, and those
   * of the side's labels the number fixes (FIXED_BY_PEER), come from a slot of a typed array by the
   * number. The string map of 60,000 peer pods missed the cache about five times per group and flow.
   */
  private labelIds(f: EnrichedFlow): void {
    const { getters, scratch, groups } = this;
    for (let g = 0; g < groups.length; g++) {
      const group = groups[g];
      const peer = group.src ? f.srcPeer : f.dstPeer;
      const { members, extras } = group;
      if (peer === undefined) {
        this.groupIds(group, f);
        this.byLast(extras, group.extraValue, group.extraId, f);
        continue;
      }
      // By the enrich stage's number of the endpoint: typed-array reads instead of string maps'.
      const m = members.length;
      const w = m + extras.length;
      const tags = group.tags ?? this.numbered(group);
      const at = peer & PEER_MASK;
      const ids = group.peerIds!;
      if (tags[at] === peer) {
        for (let k = 0; k < m; k++) scratch[members[k]] = ids[at * w + k];
        for (let k = 0; k < extras.length; k++) scratch[extras[k]] = ids[at * w + m + k];
        continue;
      }
      this.groupIds(group, f);
      for (let k = 0; k < extras.length; k++) {
        const j = extras[k];
        scratch[j] = this.idOf(j, getters[j](f));
      }
      tags[at] = peer;
      for (let k = 0; k < m; k++) ids[at * w + k] = scratch[members[k]];
      for (let k = 0; k < extras.length; k++) ids[at * w + m + k] = scratch[extras[k]];
    }
    this.byLast(this.singles, this.lastValue, this.lastId, f);
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

  /** The ids of `group`'s labels of flow `f` into `scratch`, by the memo of their values. */
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
  private numbered(group: LabelGroup): Float64Array {
    group.tags = new Float64Array(PEER_SLOTS).fill(-1);
    group.peerIds = new Int32Array(PEER_SLOTS * (group.members.length + group.extras.length));
    return group.tags;
  }

  private idOf(j: number, v: string): number {
    const id = this.interns[j].get(v);
    return id === undefined ? this.intern(j, v) : id;
  }

  /** Ids are about to be renumbered (reintern): what was remembered of them is void. */
  private forgetIds(): void {
    for (const g of this.groups) {
      g.memo.clear();
      g.tags?.fill(-1);
      g.extraValue.fill(undefined);
    }
    this.lastValue.fill(undefined);
  }

  private intern(j: number, v: string): number {
    const own = detached(v);
    const id = this.values[j].length;
    this.values[j].push(own);
    this.interns[j].set(own, id);
    return id;
  }

  private addOverflow(f: EnrichedFlow, now: number): void {
    this.overflowed++;
    if (!this.overflowOn) {
      this.deps.log?.warn(
        { maxSeries: this.maxSeries },
        'flow series limit reached: flows of new series are summed into the _overflow_ series (raise --metrics-max-series or reduce --metrics-labels)',
      );
      this.overflowOn = true;
      this.overflowCounts.fill(0);
      this.overflowSerial = ++this.serial;
      this.overflowBorn = now;
    }
    this.overflowLast = now;
    this.overflowCounts[0] += f.txBytes;
    this.overflowCounts[1] += f.rxBytes;
    this.overflowCounts[2] += f.txPackets;
    this.overflowCounts[3] += f.rxPackets;
    this.overflowCounts[4] += f.cost;
  }

  /** A new series with the label ids in `scratch` and hash `h`; returns its slot. */
  private create(h: number): number {
    if (this.count === this.capacity) this.resize(Math.max(MIN_CAPACITY, this.capacity * 2));
    const s = this.count++;
    this.ids.set(this.scratch, s * this.n);
    this.counts.fill(0, s * COUNTERS, s * COUNTERS + COUNTERS);
    this.hashes[s] = h;
    this.serials[s] = ++this.serial;
    this.born[s] = this.clock();
    this.index(s);
    return s;
  }

  private resize(capacity: number): void {
    const grow = <T extends Int32Array | Float64Array>(a: T, per: number, make: (len: number) => T): T => {
      const b = make(capacity * per);
      b.set(a.subarray(0, Math.min(a.length, this.count * per)));
      return b;
    };
    this.ids = grow(this.ids, this.n, (l) => new Int32Array(l));
    this.counts = grow(this.counts, COUNTERS, (l) => new Float64Array(l));
    this.last = grow(this.last, 1, (l) => new Float64Array(l));
    this.hashes = grow(this.hashes, 1, (l) => new Int32Array(l));
    this.serials = grow(this.serials, 1, (l) => new Float64Array(l));
    this.born = grow(this.born, 1, (l) => new Float64Array(l));
    this.capacity = capacity;
    this.rechain();
  }

  /** Removes series not updated within `metrics-ttl` (Prometheus then marks them stale). */
  expire(now: number = this.clock()): void {
    this.lastExpire = now;
    const ttl = this.config.metricsTtl;
    if (ttl <= 0) return;
    if (this.overflowOn && now - this.overflowLast >= ttl) this.overflowOn = false;
    const n = this.n;
    const { ids, counts, last, hashes, serials, born } = this;
    // Live series are moved down over the expired ones, keeping their order.
    let w = 0;
    for (let r = 0; r < this.count; r++) {
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
    const removed = this.count - w;
    if (removed === 0) return;
    this.count = w;
    if (this.capacity > MIN_CAPACITY && this.capacity > 4 * w) {
      this.resize(Math.max(MIN_CAPACITY, 2 * w));
    }
    // Ids of values no live series uses would pile up with pod churn: re-intern now and then.
    if (this.interns.some((m) => m.size > 2 * this.count + 1000)) this.reintern();
    else this.rechain();
  }

  /** Rebuilds the index from `hashes` (after slots moved or the capacity changed). */
  private rechain(): void {
    let size = 2;
    while (size < 2 * this.capacity) size *= 2;
    if (this.table.length === 2 * size) this.table.fill(0);
    else this.table = new Int32Array(2 * size);
    this.mask = size - 1;
    for (let s = 0; s < this.count; s++) this.index(s);
  }

  /** Enters slot `s` (its hash in `hashes`) into the index. */
  private index(s: number): void {
    const { table, mask } = this;
    const h = this.hashes[s];
    let p = h & mask;
    while (table[2 * p] !== 0) p = (p + 1) & mask;
    table[2 * p] = s + 1;
    table[2 * p + 1] = h;
  }

  private reintern(): void {
    this.forgetIds();
    const n = this.n;
    const old = this.values;
    this.interns = this.labels.map(() => new Map());
    this.values = this.labels.map(() => []);
    const ids = this.ids;
    for (let s = 0; s < this.count; s++) {
      let h = FNV_OFFSET;
      for (let j = 0; j < n; j++) {
        const v = old[j][ids[s * n + j]];
        let id = this.interns[j].get(v);
        if (id === undefined) {
          id = this.values[j].length;
          this.values[j].push(v);
          this.interns[j].set(v, id);
        }
        ids[s * n + j] = id;
        h = Math.imul(h ^ id, FNV_PRIME);
      }
      this.hashes[s] = fmix32(h) | 0;
    }
    this.rechain();
  }

  async close(_deadline: number): Promise<void> {}
}
