// Reduces per-connection deltas to flows: (local endpoint IP, peer IP, protocol) with tx/rx bytes and
// packets for one interval. Source-agnostic: works on any ConntrackSource (netfilter, Cilium).
//
// API for the collector loop:
//
//   const reducer = createReducer({ groupPublicIps }, { podIndex, log });
//   every interval:  const r = await reducer.tick(source);   // r.columns (r.flows as objects): this interval's flows
//
// `tick` calls `source.read` and then `source.drainEnded` and returns the flows of everything counted
// since the previous successful tick. When `source.read` throws, `tick` rejects (wrapped as
// "reading conntrack") and nothing is lost: what was counted before the failure is returned by the
// next successful tick. Ticks must not overlap (await each one). The first successful tick is the
// baseline (connections that existed before start are not counted, see collector/tracker.ts), so it
// normally returns no flows; `r.baseline` tells. Not so after a restart with `--state-dir`
// (`restore`): the tracker continues where the previous process left off.
//
// Direction rules (so that summing tx over every series of every collector counts each byte once):
// - orig source local  → flow(local = orig source, peer = reply source): tx = orig, rx = reply
// - reply source local → flow(local = reply source, peer = orig source): tx = reply, rx = orig
// - both local (pod to pod on one node): both flows; neither local: ignored.
// - a sample marked with `localEnd` (sources that keep one entry per local end, Cilium) is reported
//   only from that end: 'src' = the orig source, 'dst' = the reply source.
// The peer of a DNATed connection (ClusterIP → backend) is the reply tuple's source: the backend.
import type { Flow } from '../shared/flow.js';
import { fmix32 } from '../shared/hash.js';
import { grown, HashIndex, SlotIds } from '../shared/hash-index.js';
import { isPrivateIp } from '../shared/ip.js';
import type { Logger } from '../shared/log.js';
import { FlowColumns } from './flow-columns.js';
import type { PodIndex } from './pod-index.js';
import type { ConntrackSource } from './source.js';
import { type TrackedConn, Tracker, type TrackerSnapshot } from './tracker.js';

export interface ReducerConfig {
  /** Report public peers as 0.0.0.0 / :: (option `group-public-ips`). */
  groupPublicIps: boolean;
  /** Count connections that existed before the first tick in full (default false: baseline). */
  countExisting?: boolean;
}

/** Names of peer addresses (collector/dns/): '' when none is known. */
export interface PeerNames {
  /** The name `client` (a local endpoint) or else any pod of the node looked up and got `ip` for. */
  nameOf(ip: string, client: string): string;
}

export interface ReducerDeps {
  podIndex: PodIndex;
  log?: Logger;
  /** Optional (`--dns-names`): the peer's name is part of a series, asked when a connection is first counted. */
  names?: PeerNames;
}

export interface TickResult {
  /** This interval's flows as columns: what the collector loop hands to the backlog. */
  columns: FlowColumns;
  /** The same flows as objects, made on first access (tests, tools). */
  readonly flows: Flow[];
  /** Entries seen by this tick's read (for podflow_collector_conntrack_entries). */
  entries: number;
  parseErrors: number;
  /** The read may have missed entries (dump interrupted); nothing is lost, the next read catches up. */
  interrupted: boolean;
  /** Connections the tracker remembers after this tick. */
  tracked: number;
  /** Entries of this read without byte counters (nf_conntrack_acct was off when they were created). */
  noCounters: number;
  /** This tick was the baseline read. */
  baseline: boolean;
}

export interface Reducer {
  tick(source: ConntrackSource): Promise<TickResult>;
  /** What the tracker remembers (for `--state-dir`); call between ticks only. */
  snapshot(): TrackerSnapshot;
  /** The tracker's version (Tracker.version): unchanged, a new snapshot would say nothing new. */
  readonly trackerVersion: number;
  /** Continues from what a previous process's tracker remembered (`--state-dir`); before the first tick. */
  restore(snap: TrackerSnapshot): void;
}

export function createReducer(config: ReducerConfig, deps: ReducerDeps): Reducer {
  return new FlowReducer(config, deps);
}

/** Series not added to for this many ticks are dropped (bounded memory). */
const IDLE_TICKS = 3;

/**
 * A series tag (what ConnSeries keeps per connection) names a series as `index + reuse * IDX_SPAN`:
 * when an idle series is dropped and its index reused, the reuse count moves on and old tags stop
 * matching.
 */
const IDX_SPAN = 2 ** 24;
const REUSE_MASK = 2 ** 28 - 1;
/**
 * A connection's two tags (ConnSeries): both ends local, a and b are the two series' tags; one end
 * local, a is its series' tag and b says which end that is (tags are -1 until set).
 */
const ORIG_END_SERIES = -2;
const REPLY_END_SERIES = -3;
/** Numbers per series in SeriesTable.rec, and where its last tick and reuse count sit. */
const REC = 6;
const R_LAST = 4;
const R_REUSE = 5;

/**
 * The series each connection adds to, cached per tracker slot (TrackedConn.slot) so that a
 * connection's delta goes to its series without hashing its addresses: two tags per slot, side by
 * side. Forgotten when the tracker gives the slot to another connection (`reset`).
 */
class ConnSeries {
  tags = new Float64Array(1024 * 2).fill(-1);

  /** The slot holds a new connection (Tracker onNewConnection; before any delta of it). */
  readonly reset = (slot: number): void => {
    if (slot * 2 >= this.tags.length) {
      let n = this.tags.length * 2;
      while (slot * 2 >= n) n *= 2;
      this.tags = grown(this.tags, n, -1);
    }
    this.tags[slot * 2] = -1;
    this.tags[slot * 2 + 1] = -1;
  };
}

/**
 * The accumulated traffic of every (local, peer, proto) series, kept in columns (index = series):
 * at 250k connections growing in one interval with ~190k distinct peer pairs, objects and string
 * keys per series were most of the heap and of the collector's peak memory. Series are found
 * through a hash index on (local, peer, proto, name); a connection's series are cached per
 * connection (ConnSeries), so the index is consulted only when a connection is first counted.
 */
class SeriesTable {
  src: (string | undefined)[] = [];
  dst: (string | undefined)[] = [];
  /** The peer's DNS name, '' for none. */
  name: (string | undefined)[] = [];
  proto = new Uint8Array(1024);
  /**
   * What a delta reads and writes, side by side (REC numbers per series, one or two cache lines
   * instead of one per column: when every connection grew, the tick's time goes to cache misses):
   * tx bytes, tx packets, rx bytes, rx packets; the tick that last added to it (equal to the current
   * tick = listed in `touched`); the reuse count, bumped when the index is freed (see IDX_SPAN).
   */
  rec = new Float64Array(1024 * REC);
  hash = new Uint32Array(1024);
  /** 1 = in use. */
  live = new Uint8Array(1024);
  touched = new Int32Array(1024);
  nTouched = 0;
  private readonly ids = new SlotIds(1024, (cap) => this.grow(cap));
  private readonly index = new HashIndex(1024);

  /** The series of (src, dst, proto, name), created when new; returns its tag. */
  find(src: string, dst: string, proto: number, name: string): number {
    const h = hashSeries(src, dst, proto, name);
    for (let idx = this.index.first(h); idx >= 0; idx = this.index.next()) {
      if (
        this.proto[idx] === proto &&
        this.src[idx] === src &&
        this.dst[idx] === dst &&
        this.name[idx] === name
      )
        return this.tagOf(idx);
    }
    const idx = this.ids.take();
    this.src[idx] = src;
    this.dst[idx] = dst;
    this.name[idx] = name;
    this.proto[idx] = proto;
    this.hash[idx] = h;
    this.live[idx] = 1;
    const r = this.rec;
    const o = idx * REC;
    r[o] = r[o + 1] = r[o + 2] = r[o + 3] = 0;
    this.index.add(h, idx);
    return this.tagOf(idx);
  }

  tagOf(idx: number): number {
    return idx + this.rec[idx * REC + R_REUSE]! * IDX_SPAN;
  }

  /** The index a tag names, or -1 when that series was dropped meanwhile. */
  resolve(tag: number): number {
    if (tag < 0) return -1;
    const idx = tag % IDX_SPAN;
    if (this.rec[idx * REC + R_REUSE] !== (tag - idx) / IDX_SPAN) return -1;
    return idx;
  }

  add(idx: number, tick: number, tb: number, tp: number, rb: number, rp: number): void {
    const r = this.rec;
    const o = idx * REC;
    r[o] += tb;
    r[o + 1] += tp;
    r[o + 2] += rb;
    r[o + 3] += rp;
    if (r[o + R_LAST] !== tick) {
      r[o + R_LAST] = tick;
      if (this.nTouched === this.touched.length) this.touched = grown(this.touched, this.nTouched * 2);
      this.touched[this.nTouched++] = idx;
    }
  }

  /** Drops series idle since before `oldest`. */
  sweep(oldest: number): void {
    const used = this.ids.used;
    for (let idx = 0; idx < used; idx++) {
      if (this.live[idx] === 1 && this.rec[idx * REC + R_LAST]! < oldest) this.drop(idx);
    }
  }

  private drop(idx: number): void {
    this.index.remove(this.hash[idx]!, idx);
    this.live[idx] = 0;
    const o = idx * REC + R_REUSE;
    this.rec[o] = (this.rec[o]! + 1) & REUSE_MASK;
    this.src[idx] = undefined;
    this.dst[idx] = undefined;
    this.name[idx] = undefined;
    this.ids.release(idx);
  }

  private grow(cap: number): void {
    if (cap > IDX_SPAN) throw new Error('too many flow series');
    this.proto = grown(this.proto, cap);
    this.rec = grown(this.rec, cap * REC);
    this.hash = grown(this.hash, cap);
    this.live = grown(this.live, cap);
  }
}

function hashString(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h;
}

/** FNV-1a over both addresses, the name and the protocol, finished with a murmur3 mix. */
function hashSeries(src: string, dst: string, proto: number, name: string): number {
  let h = hashString(hashString(0x811c9dc5, src) ^ 0x20, dst);
  if (name !== '') h = hashString(h ^ 0x20, name);
  return fmix32(Math.imul(h ^ proto, 0x01000193));
}

class FlowReducer implements Reducer {
  private readonly series = new SeriesTable();
  private readonly conns = new ConnSeries();
  private readonly tracker: Tracker;
  private readonly index: PodIndex;
  private readonly names: PeerNames | undefined;
  private tickNo = 1;
  private running = false;

  constructor(
    private readonly config: ReducerConfig,
    deps: ReducerDeps,
  ) {
    this.index = deps.podIndex;
    this.names = deps.names;
    this.tracker = new Tracker(this.onDelta, {
      countExisting: config.countExisting ?? false,
      onNewConnection: this.conns.reset,
    });
  }

  restore(snap: TrackerSnapshot): void {
    this.tracker.restore(snap);
  }

  get trackerVersion(): number {
    return this.tracker.version;
  }

  snapshot(): TrackerSnapshot {
    if (this.running) throw new Error('tracker snapshot taken during a tick');
    return this.tracker.snapshot();
  }

  async tick(source: ConntrackSource): Promise<TickResult> {
    if (this.running) throw new Error('reducer tick already running: ticks must not overlap');
    this.running = true;
    try {
      const baseline = this.tracker.inBaseline;
      this.tracker.begin();
      let stats: Awaited<ReturnType<ConntrackSource['read']>>;
      try {
        stats = await source.read(this.tracker.visit);
      } catch (err) {
        // What was counted before the failure stays in the series: the next tick returns it.
        throw new Error('reading conntrack', { cause: err });
      }
      source.drainEnded(this.tracker.visitEnded);
      const interrupted = stats.interrupted ?? false;
      this.tracker.end(!interrupted);
      const columns = this.collect();
      let flows: Flow[] | undefined;
      return {
        columns,
        get flows() {
          flows ??= columns.toFlows();
          return flows;
        },
        entries: stats.entries,
        parseErrors: stats.parseErrors,
        interrupted,
        tracked: this.tracker.size,
        noCounters: this.tracker.noCounters,
        baseline,
      };
    } finally {
      this.running = false;
    }
  }

  /**
   * This tick's flows (a copy: they leave the collector's hands), then housekeeping. Columns, not
   * objects: see collector/flow-columns.ts.
   */
  private collect(): FlowColumns {
    const t = this.series;
    const n = t.nTouched;
    const flows = new FlowColumns(n);
    const r = t.rec;
    for (let k = 0; k < n; k++) {
      const idx = t.touched[k]!;
      const o = idx * REC;
      flows.set(
        k,
        t.src[idx]!,
        t.dst[idx]!,
        t.proto[idx]!,
        r[o]!,
        r[o + 1]!,
        r[o + 2]!,
        r[o + 3]!,
        t.name[idx]!,
      );
      r[o] = r[o + 1] = r[o + 2] = r[o + 3] = 0;
    }
    t.nTouched = 0;
    const now = this.tickNo++;
    if (now % IDLE_TICKS === 0) t.sweep(now - IDLE_TICKS + 1);
    return flows;
  }

  private readonly onDelta = (c: TrackedConn, ob: number, op: number, rb: number, rp: number): void => {
    const origSrc = c.origSrc;
    const replySrc = c.replySrc;
    // Locality is asked every time (a pod's IP may become known after its connection started); the
    // series are cached per connection while the answer stays the same.
    // A source that keeps one entry per local end (Cilium) says which end this one is for: the
    // other end's entry reports the other side, so this one must not.
    const end = c.localEnd;
    const srcLocal = end !== 2 && this.index.isLocal(origSrc);
    const peerLocal = end !== 1 && this.index.isLocal(replySrc);
    if (!srcLocal && !peerLocal) return;
    const t = this.series;
    const tick = this.tickNo;
    const tags = this.conns.tags;
    const k = c.slot * 2;
    if (srcLocal !== peerLocal) {
      // One local end: tx is what that end sent. The second tag says which end the cached series is for.
      const which = srcLocal ? ORIG_END_SERIES : REPLY_END_SERIES;
      let idx = tags[k + 1] === which ? t.resolve(tags[k]!) : -1;
      if (idx < 0) {
        const local = srcLocal ? origSrc : replySrc;
        const peer = srcLocal ? replySrc : origSrc;
        // The name is taken when the connection is first counted (its lookup precedes it) and stays
        // with it; grouped public peers (--group-public-ips) keep theirs.
        const name = this.names === undefined ? '' : this.names.nameOf(peer, local);
        const tag = t.find(local, this.peer(peer), c.proto, name);
        tags[k] = tag;
        tags[k + 1] = which;
        idx = tag % IDX_SPAN;
      }
      if (srcLocal) t.add(idx, tick, ob, op, rb, rp);
      else t.add(idx, tick, rb, rp, ob, op);
      return;
    }
    // Both ends local (pod to pod on this node): count it from each side.
    let a = t.resolve(tags[k]!);
    let b = a < 0 ? -1 : t.resolve(tags[k + 1]!);
    if (b < 0) {
      // Pod to pod on this node: the peer is known by the cluster, not by a DNS name.
      const ta = t.find(origSrc, this.peer(replySrc), c.proto, '');
      const tb = t.find(replySrc, this.peer(origSrc), c.proto, '');
      tags[k] = ta;
      tags[k + 1] = tb;
      a = ta % IDX_SPAN;
      b = tb % IDX_SPAN;
    }
    t.add(a, tick, ob, op, rb, rp);
    t.add(b, tick, rb, rp, ob, op);
  };

  private peer(ip: string): string {
    if (!this.config.groupPublicIps || isPrivateIp(ip)) return ip;
    return ip.includes(':') ? '::' : '0.0.0.0';
  }
}
