// The built-in view's memory: a sink that keeps the traffic of the last ~15 minutes in a ring of
// time buckets, and answers the view's queries (GET /api/v1/traffic) from it.
//
// Bounded whatever the traffic: at most MAX_BUCKETS buckets (each at least one export interval
// wide), each holding at most `maxPairsPerBucket` (local endpoint, peer, class) pairs in typed
// arrays (33 bytes a pair); pairs beyond that are summed into one pair per local endpoint and class
// whose peer is "other", so totals stay exact. Endpoints (pod, node, or outside address with its
// DNS name) are interned once and counted by the pairs that use them: an endpoint no bucket holds
// any more is forgotten, so pod churn does not grow the table. Grouping (namespace, workload, pod)
// and filters are applied when a query runs, over the buckets of its window.
//
// Each byte is counted once, by its sender: a flow's tx is sent by the local endpoint; its rx is
// taken only from a peer outside the cluster (private, public), because a pod or node peer on a
// monitored node reports those bytes as its own tx.
import { type Clock, systemClock } from '../shared/clock.js';
import type { EnrichedFlow } from '../shared/flow.js';
import { grown } from '../shared/hash-index.js';
import {
  type ClassTotal,
  type TrafficNode,
  type TrafficResponse,
  type TrafficRow,
  VIEW_CLASSES,
  type ViewClass,
  type ViewGroup,
} from '../shared/traffic.js';
import type { Sink } from './sink.js';

export interface TrafficRingConfig {
  /** `export-interval`, ms: buckets are at least this wide (rounds land one per bucket). */
  exportInterval: number;
  /** How far back the ring reaches, ms. @default 900000 (15 min) */
  spanMs?: number;
  /** Most pairs one bucket keeps apart; the rest go to "other". @default 50000 */
  maxPairsPerBucket?: number;
  /** `--cluster-name`, shown by the page's header. @default none */
  clusterName?: string;
}

export interface TrafficQuery {
  /** ms; clipped to the ring's span. */
  window: number;
  group: ViewGroup;
  /** Either end in this namespace. */
  namespace?: string;
  class?: ViewClass;
  /** Case-insensitive text found in either end (namespace, workload, pod, node, address, DNS name). */
  text?: string;
  /** Most rows returned (largest first). */
  limit: number;
}

/** Buckets at most: with short export intervals, buckets get wider instead of more numerous. */
const MAX_BUCKETS = 90;
const DEFAULT_SPAN_MS = 15 * 60_000;
/** Endpoint ids fit 24 bits, so that a pair key (two ids and a class) is one safe integer. */
const MAX_ENDPOINTS = 1 << 24;
const CLASS_INDEX = new Map<string, number>(VIEW_CLASSES.map((c, i) => [c, i]));

type EndpointType = 'pod' | 'node' | 'private' | 'public' | 'other';

interface Endpoint {
  key: string;
  type: EndpointType;
  namespace: string;
  workload: string;
  pod: string;
  node: string;
  ip: string;
  dnsName: string;
  /** What free-text filters search, lower case. */
  text: string;
}

/** Id 0: the peer of the pairs a full bucket could not keep apart. */
const OTHER = 0;

class Bucket {
  /** Which interval (ts / width, floored) the bucket holds; -1: empty. */
  idx = -1;
  n = 0;
  src = new Uint32Array(0);
  dst = new Uint32Array(0);
  cls = new Uint8Array(0);
  /** Bytes sent by src to dst, and by dst to src (outside peers only). */
  ab = new Float64Array(0);
  ba = new Float64Array(0);
  cost = new Float64Array(0);
  /** Whether any flow of the bucket carried a cost. */
  hasCost = false;
  /** Pair key → slot; kept for the newest buckets only, rebuilt when a late flow needs it. */
  index: Map<number, number> | undefined;

  grow(): void {
    const cap = Math.max(256, this.src.length * 2);
    this.src = grown(this.src, cap);
    this.dst = grown(this.dst, cap);
    this.cls = grown(this.cls, cap);
    this.ab = grown(this.ab, cap);
    this.ba = grown(this.ba, cap);
    this.cost = grown(this.cost, cap);
  }

  /** Drops the spare capacity and the index of a bucket that takes no more (or hardly any) flows. */
  settle(): void {
    this.index = undefined;
    if (this.src.length === this.n) return;
    this.src = this.src.slice(0, this.n);
    this.dst = this.dst.slice(0, this.n);
    this.cls = this.cls.slice(0, this.n);
    this.ab = this.ab.slice(0, this.n);
    this.ba = this.ba.slice(0, this.n);
    this.cost = this.cost.slice(0, this.n);
  }

  indexed(): Map<number, number> {
    if (this.index === undefined) {
      this.index = new Map();
      for (let i = 0; i < this.n; i++) this.index.set(pairKey(this.src[i], this.dst[i], this.cls[i]), i);
    }
    return this.index;
  }
}

const pairKey = (src: number, dst: number, cls: number): number => (src * MAX_ENDPOINTS + dst) * 8 + cls;

/**
 * The flow's traffic class: the one the enrich stage gave it when it gives one (`trafficClass`),
 * else derived from what every flow has: the peer's type and the zones of both ends.
 */
export function classOf(f: EnrichedFlow): ViewClass {
  // Checked, not trusted: a flow from a sink test or an older exporter may carry anything.
  const given: string | undefined = f.trafficClass;
  if (given !== undefined && CLASS_INDEX.has(given)) return given as ViewClass;
  if (f.dstType === 'public') return 'internet';
  if (f.dstType === 'private') return 'private';
  if (f.crossZone) return 'cross-zone';
  if (f.srcNode !== '' && f.srcNode === f.dstNode) return 'same-zone';
  if (f.srcZone !== '' && f.srcZone === f.dstZone) return 'same-zone';
  return 'unknown';
}

const SEP = '\u001f';

export class TrafficRing implements Sink {
  readonly name = 'view';
  private readonly width: number;
  private readonly exportInterval: number;
  /** How far back the ring reaches, ms: the longest window a query may ask. */
  readonly spanMs: number;
  private readonly buckets: Bucket[];
  private readonly maxPairs: number;
  /**
   * Since when the ring has seen traffic: the start, or the start of the oldest interval pushed
   * when earlier (a collector's backlog after a restart). Rates divide by no more than the time since.
   */
  private since: number;
  /** Interned endpoints by id (undefined: a free id), with the number of pairs using each. */
  private readonly endpoints: (Endpoint | undefined)[] = [];
  private readonly refs: number[] = [];
  private readonly byKey = new Map<string, number>();
  private readonly free: number[] = [];
  private late = 0;
  private readonly cluster: string | undefined;

  constructor(
    config: TrafficRingConfig,
    private readonly clock: Clock = systemClock,
  ) {
    const span = config.spanMs ?? DEFAULT_SPAN_MS;
    this.exportInterval = config.exportInterval;
    this.spanMs = span;
    this.width = Math.max(config.exportInterval, Math.ceil(span / MAX_BUCKETS));
    this.buckets = Array.from({ length: Math.ceil(span / this.width) }, () => new Bucket());
    this.maxPairs = config.maxPairsPerBucket ?? 50_000;
    this.cluster = config.clusterName;
    this.since = clock.now();
    const other: Endpoint = {
      key: '',
      type: 'other',
      namespace: '',
      workload: '',
      pod: '',
      node: '',
      ip: '',
      dnsName: '',
      text: 'other',
    };
    this.endpoints.push(other);
    // Never freed.
    this.refs.push(1);
  }

  /** Width of one bucket, ms: the finest step of a window. */
  get bucketMs(): number {
    return this.width;
  }

  push(flows: readonly EnrichedFlow[]): Promise<void> {
    const now = this.clock.now();
    const current = Math.floor(now / this.width);
    const oldest = current - this.buckets.length + 1;
    for (const o of this.buckets) {
      // Rounds that left the span go now, not when their slot is next used: their endpoints with them.
      if (o.idx >= 0 && o.idx < oldest) this.evict(o);
      // Only the newest two buckets keep their pair index; an older one gets it back when a late flow comes.
      else if (o.index !== undefined && o.idx < current - 1) o.settle();
    }
    let b: Bucket | undefined;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      const outside = f.dstType === 'private' || f.dstType === 'public';
      const ab = f.txBytes;
      const ba = outside ? f.rxBytes : 0;
      const fc: number | undefined = f.cost;
      const cost = typeof fc === 'number' && Number.isFinite(fc) ? fc : undefined;
      if (ab === 0 && ba === 0 && (cost ?? 0) === 0) continue;
      // A collector's clock ahead of ours puts its flows in our current bucket, not in the future.
      const idx = Math.min(Math.floor(f.ts / this.width), current);
      if (idx < oldest) {
        this.late++;
        continue;
      }
      const from = f.ts - f.intervalSeconds * 1000;
      if (from < this.since) this.since = from;
      if (b === undefined || b.idx !== idx) b = this.bucketFor(idx);
      const cls = CLASS_INDEX.get(classOf(f)) as number;
      const s = this.intern(srcKey(f), f, 'src');
      if (s < 0) {
        this.late++;
        continue;
      }
      const dKey = dstKey(f);
      let d = this.byKey.get(dKey) ?? -1;
      const index = b.indexed();
      let slot = d >= 0 ? index.get(pairKey(s, d, cls)) : undefined;
      if (slot === undefined) {
        if (b.n >= this.maxPairs) {
          d = OTHER;
          slot = index.get(pairKey(s, OTHER, cls));
        } else if (d < 0) {
          d = this.intern(dKey, f, 'dst');
          if (d < 0) d = OTHER;
        }
      }
      if (slot === undefined) {
        if (b.n === b.src.length) b.grow();
        slot = b.n++;
        b.src[slot] = s;
        b.dst[slot] = d;
        b.cls[slot] = cls;
        b.ab[slot] = 0;
        b.ba[slot] = 0;
        b.cost[slot] = 0;
        this.refs[s]++;
        this.refs[d]++;
        index.set(pairKey(s, d, cls), slot);
      }
      b.ab[slot] += ab;
      b.ba[slot] += ba;
      if (cost !== undefined) {
        b.cost[slot] += cost;
        b.hasCost = true;
      }
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * The traffic of the last `window` (whole buckets, the current one included) grouped and
   * filtered as asked. Rates divide by the time the window covers, or by the time since the ring
   * has traffic when that is shorter, so a young process does not show rates too low.
   */
  query(q: TrafficQuery): TrafficResponse {
    const now = this.clock.now();
    const current = Math.floor(now / this.width);
    const k = Math.max(1, Math.min(this.buckets.length, Math.ceil(q.window / this.width)));
    const first = current - k + 1;
    const seconds = Math.max(0.001, (now - Math.max(first * this.width, this.since)) / 1000);
    const eps = this.endpoints;
    const gidOf = new Int32Array(eps.length).fill(-1);
    // Per endpoint: 0 not looked at yet, 1 matches, 2 does not (namespace and text filters apart).
    const nsMatch = new Uint8Array(eps.length);
    const textMatch = new Uint8Array(eps.length);
    const seen = new Uint8Array(eps.length);
    const text = q.text?.toLowerCase();
    const wantClass = q.class === undefined ? -1 : (CLASS_INDEX.get(q.class) as number);
    const groups: GroupAcc[] = [];
    const groupIndex = new Map<string, number>();
    const rows = new Map<number, RowAcc>();
    const classBytes = new Float64Array(VIEW_CLASSES.length);
    const classCost = new Float64Array(VIEW_CLASSES.length);
    let hasCost = false;

    const group = (id: number): number => {
      let g = gidOf[id];
      if (g >= 0) return g;
      const e = eps[id] as Endpoint;
      const node = groupNode(e, q.group);
      g = groupIndex.get(node.id) ?? -1;
      if (g < 0) {
        g = groups.length;
        groups.push({ node, ips: [] });
        groupIndex.set(node.id, g);
      }
      const ga = groups[g];
      // A name stands for addresses: the first few are shown beside it.
      if (e.ip !== '' && node.id.startsWith('name:') && ga.ips.length < 3 && !ga.ips.includes(e.ip)) {
        ga.ips.push(e.ip);
      }
      gidOf[id] = g;
      return g;
    };
    const matches = (cache: Uint8Array, id: number, test: (e: Endpoint) => boolean): boolean => {
      if (cache[id] === 0) cache[id] = test(eps[id] as Endpoint) ? 1 : 2;
      return cache[id] === 1;
    };
    const inNamespace = (e: Endpoint) => e.namespace === q.namespace;
    const hasText = (e: Endpoint) => e.text.includes(text as string);

    for (const b of this.buckets) {
      if (b.idx < first || b.idx > current) continue;
      if (b.hasCost) hasCost = true;
      for (let i = 0; i < b.n; i++) {
        const s = b.src[i];
        const d = b.dst[i];
        seen[s] = 1;
        seen[d] = 1;
        const c = b.cls[i];
        if (wantClass >= 0 && c !== wantClass) continue;
        if (
          q.namespace !== undefined &&
          !matches(nsMatch, s, inNamespace) &&
          !matches(nsMatch, d, inNamespace)
        )
          continue;
        if (text !== undefined && !matches(textMatch, s, hasText) && !matches(textMatch, d, hasText))
          continue;
        const ga = group(s);
        const gb = group(d);
        const ab = b.ab[i];
        const ba = b.ba[i];
        // One row per pair of ends, whichever end reported it (pods on two monitored nodes both
        // do): its first report says which end is `a`. Outside peers never report: they are `b`.
        const key = (ga < gb ? ga * MAX_ENDPOINTS + gb : gb * MAX_ENDPOINTS + ga) * 8 + c;
        let r = rows.get(key);
        if (r === undefined) {
          r = { a: ga, b: gb, cls: c, ab: 0, ba: 0, cost: 0 };
          rows.set(key, r);
        }
        if (r.a === ga) {
          r.ab += ab;
          r.ba += ba;
        } else {
          r.ab += ba;
          r.ba += ab;
        }
        r.cost += b.cost[i];
        classBytes[c] += ab + ba;
        classCost[c] += b.cost[i];
      }
    }

    const all = [...rows.values()];
    all.sort((x, y) => y.ab + y.ba - (x.ab + x.ba));
    const nodeOf = (g: number): TrafficNode => {
      const ga = groups[g];
      return ga.ips.length > 0 ? { ...ga.node, ip: ga.ips.join(', ') } : ga.node;
    };
    const out: TrafficRow[] = all.slice(0, q.limit).map((r) => {
      const bytes = r.ab + r.ba;
      return {
        a: nodeOf(r.a),
        b: nodeOf(r.b),
        class: VIEW_CLASSES[r.cls],
        aToB: r.ab,
        bToA: r.ba,
        bytes,
        rate: bytes / seconds,
        cost: hasCost ? r.cost : null,
      };
    });
    const totals: ClassTotal[] = [];
    let totalBytes = 0;
    let totalCost = 0;
    for (let c = 0; c < VIEW_CLASSES.length; c++) {
      if (classBytes[c] === 0 && classCost[c] === 0) continue;
      totals.push({
        class: VIEW_CLASSES[c],
        bytes: classBytes[c],
        rate: classBytes[c] / seconds,
        cost: hasCost ? classCost[c] : null,
      });
      totalBytes += classBytes[c];
      totalCost += classCost[c];
    }
    const namespaces = new Set<string>();
    for (let id = 0; id < seen.length; id++) {
      const ns = seen[id] === 1 ? (eps[id] as Endpoint).namespace : '';
      if (ns !== '') namespaces.add(ns);
    }
    return {
      window: q.window / 1000,
      seconds,
      group: q.group,
      now,
      interval: this.exportInterval / 1000,
      ...(this.cluster !== undefined ? { cluster: this.cluster } : {}),
      totals,
      total: { bytes: totalBytes, rate: totalBytes / seconds, cost: hasCost ? totalCost : null },
      matched: all.length,
      rows: out,
      namespaces: [...namespaces].sort(),
      late: this.late,
    };
  }

  /** Pairs and interned endpoints held now (for tests and the memory figures). */
  size(): { pairs: number; endpoints: number; buckets: number } {
    let pairs = 0;
    let buckets = 0;
    for (const b of this.buckets) {
      if (b.idx < 0) continue;
      pairs += b.n;
      buckets++;
    }
    return { pairs, endpoints: this.byKey.size, buckets };
  }

  /** The bucket of interval `idx`, emptying the slot's older bucket first. */
  private bucketFor(idx: number): Bucket {
    const b = this.buckets[idx % this.buckets.length];
    if (b.idx !== idx) {
      this.evict(b);
      b.idx = idx;
    }
    return b;
  }

  private evict(b: Bucket): void {
    for (let i = 0; i < b.n; i++) {
      this.unref(b.src[i]);
      this.unref(b.dst[i]);
    }
    b.idx = -1;
    b.n = 0;
    b.hasCost = false;
    b.index = undefined;
    b.src = new Uint32Array(0);
    b.dst = new Uint32Array(0);
    b.cls = new Uint8Array(0);
    b.ab = new Float64Array(0);
    b.ba = new Float64Array(0);
    b.cost = new Float64Array(0);
  }

  private unref(id: number): void {
    if (--this.refs[id] > 0 || id === OTHER) return;
    const e = this.endpoints[id] as Endpoint;
    this.byKey.delete(e.key);
    this.endpoints[id] = undefined;
    this.free.push(id);
  }

  /** The id of an endpoint (interned with 0 pairs when new), or -1 when the table is full. */
  private intern(key: string, f: EnrichedFlow, end: 'src' | 'dst'): number {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const e = end === 'src' ? srcEndpoint(key, f) : dstEndpoint(key, f);
    let id = this.free.pop();
    if (id === undefined) {
      if (this.endpoints.length >= MAX_ENDPOINTS) return -1;
      id = this.endpoints.length;
      this.endpoints.push(e);
      this.refs.push(0);
    } else {
      this.endpoints[id] = e;
      this.refs[id] = 0;
    }
    this.byKey.set(key, id);
    return id;
  }
}

interface GroupAcc {
  node: TrafficNode;
  /** Outside peers: the first few addresses seen behind the node. */
  ips: string[];
}

interface RowAcc {
  a: number;
  b: number;
  cls: number;
  ab: number;
  ba: number;
  cost: number;
}

function srcKey(f: EnrichedFlow): string {
  return f.srcPod !== ''
    ? `p${SEP}${f.srcNamespace}${SEP}${f.srcPod}${SEP}${f.srcWorkload}${SEP}${f.srcNode}`
    : `n${SEP}${f.srcNode}`;
}

function dstKey(f: EnrichedFlow): string {
  switch (f.dstType) {
    case 'pod':
      return `p${SEP}${f.dstNamespace}${SEP}${f.dstPod}${SEP}${f.dstWorkload}${SEP}${f.dstNode}`;
    case 'node':
      return `n${SEP}${f.dstNode}`;
    default:
      return `x${SEP}${f.dstType}${SEP}${f.dstIp}${SEP}${f.dstDnsName}${SEP}${f.dstNamespace}${SEP}${f.dstWorkload}`;
  }
}

function endpoint(
  key: string,
  type: EndpointType,
  fields: Omit<Endpoint, 'key' | 'type' | 'text'>,
): Endpoint {
  const words = [fields.namespace, fields.workload, fields.pod, fields.node, fields.ip, fields.dnsName];
  if (type === 'public') words.push('internet');
  return {
    key,
    type,
    ...fields,
    text: words
      .filter((w) => w !== '')
      .join(' ')
      .toLowerCase(),
  };
}

function srcEndpoint(key: string, f: EnrichedFlow): Endpoint {
  return f.srcPod !== ''
    ? endpoint(key, 'pod', {
        namespace: f.srcNamespace,
        workload: f.srcWorkload,
        pod: f.srcPod,
        node: f.srcNode,
        ip: '',
        dnsName: '',
      })
    : endpoint(key, 'node', { namespace: '', workload: '', pod: '', node: f.srcNode, ip: '', dnsName: '' });
}

function dstEndpoint(key: string, f: EnrichedFlow): Endpoint {
  switch (f.dstType) {
    case 'pod':
      return endpoint(key, 'pod', {
        namespace: f.dstNamespace,
        workload: f.dstWorkload,
        pod: f.dstPod,
        node: f.dstNode,
        ip: '',
        dnsName: '',
      });
    case 'node':
      return endpoint(key, 'node', {
        namespace: '',
        workload: '',
        pod: '',
        node: f.dstNode,
        ip: '',
        dnsName: '',
      });
    default:
      return endpoint(key, f.dstType, {
        namespace: f.dstNamespace,
        workload: f.dstWorkload,
        pod: '',
        node: '',
        ip: f.dstIp,
        dnsName: f.dstDnsName,
      });
  }
}

/** What an endpoint is drawn as at a grouping (see TrafficNode). */
function groupNode(e: Endpoint, group: ViewGroup): TrafficNode {
  switch (e.type) {
    case 'pod': {
      const ns = e.namespace;
      if (group === 'namespace') return { id: `ns:${ns}`, label: ns, kind: 'namespace', namespace: ns };
      if (group === 'workload')
        return { id: `wl:${ns}/${e.workload}`, label: e.workload, kind: 'workload', namespace: ns };
      return { id: `pod:${ns}/${e.pod}`, label: e.pod, kind: 'pod', namespace: ns };
    }
    case 'node':
      return { id: `node:${e.node}`, label: e.node, kind: 'node', namespace: '' };
    case 'other':
      return { id: 'other', label: 'other peers', kind: 'external', namespace: '' };
    default:
      if (e.dnsName !== '')
        return { id: `name:${e.dnsName}`, label: e.dnsName, kind: 'external', namespace: '' };
      if (group === 'namespace') {
        const label = e.type === 'public' ? 'internet' : 'private network';
        return { id: `ext:${e.type}`, label, kind: 'external', namespace: '' };
      }
      return { id: `ip:${e.ip}`, label: e.ip, kind: 'external', namespace: '' };
  }
}
