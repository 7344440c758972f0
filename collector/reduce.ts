// Reduces per-connection deltas to flows: (local endpoint IP, peer IP, protocol) with tx/rx bytes and
// packets for one interval. Source-agnostic: works on any ConntrackSource (netfilter, Cilium).
//
// API for the collector loop:
//
//   const reducer = createReducer({ groupPublicIps }, { podIndex, log });
//   every interval:  const r = await reducer.tick(source);   // r.flows: this interval's flows
//
// `tick` calls `source.read` and then `source.drainEnded` and returns the flows of everything counted
// since the previous successful tick. When `source.read` throws, `tick` rejects (wrapped as
// "reading conntrack") and nothing is lost: what was counted before the failure is returned by the
// next successful tick. Ticks must not overlap (await each one). The first successful tick is the
// baseline (connections that existed before start are not counted, see collector/tracker.ts), so it
// normally returns no flows; `r.baseline` tells.
//
// Direction rules (so that summing tx over every series of every collector counts each byte once):
// - orig source local  → flow(local = orig source, peer = reply source): tx = orig, rx = reply
// - reply source local → flow(local = reply source, peer = orig source): tx = reply, rx = orig
// - both local (pod to pod on one node): both flows; neither local: ignored.
// - a sample marked with `localEnd` (sources that keep one entry per local end, Cilium) is reported
//   only from that end: 'src' = the orig source, 'dst' = the reply source.
// The peer of a DNATed connection (ClusterIP → backend) is the reply tuple's source: the backend.
import type { Flow } from '../shared/flow.js';
import type { Logger } from '../shared/log.js';
import type { PodIndex } from './pod-index.js';
import type { ConntrackSource } from './source.js';
import { type TrackedConn, Tracker } from './tracker.js';

export interface ReducerConfig {
  /** Report public peers as 0.0.0.0 / :: (option `group-public-ips`). */
  groupPublicIps: boolean;
  /** Count connections that existed before the first tick in full (default false: baseline). */
  countExisting?: boolean;
}

export interface ReducerDeps {
  podIndex: PodIndex;
  log?: Logger;
}

export interface TickResult {
  flows: Flow[];
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
}

export function createReducer(config: ReducerConfig, deps: ReducerDeps): Reducer {
  return new FlowReducer(config, deps);
}

/** Accumulated traffic of one (local, peer, proto) across ticks; reset when emitted. */
class Series {
  tb = 0;
  tp = 0;
  rb = 0;
  rp = 0;
  /** Listed in this tick's `touched`. */
  touched = false;
  /** Tick that last added to it; series idle for a few ticks are dropped. */
  lastTick = 0;
  /** Dropped from the index: connections caching it must look theirs up again. */
  dead = false;
  constructor(
    readonly src: string,
    readonly dst: string,
    readonly proto: number,
  ) {}
}

/**
 * What a connection caches in its tracker tag: its one series (one local end), or both (both ends
 * local). Checked against the current locality on every delta, so a pod IP learnt later is honoured.
 */
type ConnTag = Series | [Series, Series];

/** Series not added to for this many ticks are dropped (bounded memory). */
const IDLE_TICKS = 3;

class FlowReducer implements Reducer {
  private readonly series = new Map<string, Series>();
  private touched: Series[] = [];
  private readonly tracker: Tracker;
  private readonly index: PodIndex;
  private tickNo = 1;
  private running = false;

  constructor(
    private readonly config: ReducerConfig,
    deps: ReducerDeps,
  ) {
    this.index = deps.podIndex;
    this.tracker = new Tracker(this.onDelta, { countExisting: config.countExisting ?? false });
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
      const flows = this.collect();
      return {
        flows,
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

  /** This tick's flows (fresh objects: they leave the collector's hands), then housekeeping. */
  private collect(): Flow[] {
    const flows: Flow[] = new Array(this.touched.length);
    for (let i = 0; i < this.touched.length; i++) {
      const s = this.touched[i]!;
      flows[i] = {
        src: s.src,
        dst: s.dst,
        proto: s.proto,
        txBytes: s.tb,
        rxBytes: s.rb,
        txPackets: s.tp,
        rxPackets: s.rp,
      };
      s.tb = s.tp = s.rb = s.rp = 0;
      s.touched = false;
    }
    this.touched = [];
    const now = this.tickNo++;
    if (now % IDLE_TICKS === 0) {
      for (const [key, s] of this.series) {
        if (now - s.lastTick >= IDLE_TICKS) {
          s.dead = true;
          this.series.delete(key);
        }
      }
    }
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
    const tag = c.tag as ConnTag | undefined;
    if (srcLocal !== peerLocal) {
      // One local end: tx is what that end sent.
      const local = srcLocal ? origSrc : replySrc;
      let s = tag;
      if (s === undefined || Array.isArray(s) || s.dead || s.src !== local) {
        s = this.seriesFor(local, this.peer(srcLocal ? replySrc : origSrc), c.proto);
        c.tag = s;
      }
      if (srcLocal) this.add(s, ob, op, rb, rp);
      else this.add(s, rb, rp, ob, op);
      return;
    }
    // Both ends local (pod to pod on this node): count it from each side.
    let pair = tag;
    if (pair === undefined || !Array.isArray(pair) || pair[0].dead || pair[1].dead) {
      pair = [
        this.seriesFor(origSrc, this.peer(replySrc), c.proto),
        this.seriesFor(replySrc, this.peer(origSrc), c.proto),
      ];
      c.tag = pair;
    }
    this.add(pair[0], ob, op, rb, rp);
    this.add(pair[1], rb, rp, ob, op);
  };

  private add(s: Series, tb: number, tp: number, rb: number, rp: number): void {
    s.tb += tb;
    s.tp += tp;
    s.rb += rb;
    s.rp += rp;
    s.lastTick = this.tickNo;
    if (!s.touched) {
      s.touched = true;
      this.touched.push(s);
    }
  }

  private seriesFor(src: string, dst: string, proto: number): Series {
    const key = `${src} ${dst} ${proto}`;
    let s = this.series.get(key);
    if (s === undefined) {
      s = new Series(src, dst, proto);
      this.series.set(key, s);
    }
    return s;
  }

  private peer(ip: string): string {
    if (!this.config.groupPublicIps || !isPublicIp(ip)) return ip;
    return ip.includes(':') ? '::' : '0.0.0.0';
  }
}

/**
 * True for globally routable unicast addresses; false for private (RFC 1918, ULA), shared (CGNAT),
 * loopback, link-local, multicast, documentation and other special-purpose ranges.
 */
export function isPublicIp(ip: string): boolean {
  if (!ip.includes(':')) return isPublicV4(ip);
  const lower = ip.toLowerCase();
  if (lower.startsWith('::ffff:') && lower.includes('.')) return isPublicV4(lower.slice(7));
  if (lower === '::' || lower === '::1') return false;
  const first = Number.parseInt(lower.split(':')[0] || '0', 16);
  // Global unicast is 2000::/3; inside it, 2001:db8::/32 is documentation.
  if ((first & 0xe000) !== 0x2000) return false;
  return !lower.startsWith('2001:db8:');
}

function isPublicV4(ip: string): boolean {
  const p = ip.split('.');
  if (p.length !== 4) return false;
  const a = Number(p[0]);
  const b = Number(p[1]);
  const c = Number(p[2]);
  if (a === 0 || a === 10 || a === 127 || a >= 224) return false;
  if (a === 100 && b >= 64 && b <= 127) return false; // shared address space (CGNAT)
  if (a === 169 && b === 254) return false;
  if (a === 172 && b >= 16 && b <= 31) return false;
  if (a === 192 && b === 168) return false;
  if (a === 192 && b === 0 && (c === 0 || c === 2)) return false;
  if (a === 198 && (b === 18 || b === 19)) return false; // benchmarking
  if (a === 198 && b === 51 && c === 100) return false;
  if (a === 203 && b === 0 && c === 113) return false;
  return true;
}
