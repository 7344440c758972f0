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

class FlowReducer implements Reducer {
  private readonly acc = new Map<string, Flow>();
  private readonly tracker: Tracker;
  private readonly isLocal: (ip: string) => boolean;
  private running = false;

  constructor(
    private readonly config: ReducerConfig,
    deps: ReducerDeps,
  ) {
    const index = deps.podIndex;
    this.isLocal = (ip) => index.isLocal(ip);
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
        throw new Error('reading conntrack', { cause: err });
      }
      source.drainEnded(this.tracker.visitEnded);
      const interrupted = stats.interrupted ?? false;
      this.tracker.end(!interrupted);
      const flows = [...this.acc.values()];
      this.acc.clear();
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

  private readonly onDelta = (c: TrackedConn, ob: number, op: number, rb: number, rp: number): void => {
    if (this.isLocal(c.origSrc)) this.add(c.origSrc, this.peer(c.replySrc), c.proto, ob, op, rb, rp);
    if (this.isLocal(c.replySrc)) this.add(c.replySrc, this.peer(c.origSrc), c.proto, rb, rp, ob, op);
  };

  private peer(ip: string): string {
    if (!this.config.groupPublicIps || !isPublicIp(ip)) return ip;
    return ip.includes(':') ? '::' : '0.0.0.0';
  }

  private add(src: string, dst: string, proto: number, tb: number, tp: number, rb: number, rp: number): void {
    const key = `${src} ${dst} ${proto}`;
    const f = this.acc.get(key);
    if (f === undefined) {
      this.acc.set(key, { src, dst, proto, txBytes: tb, rxBytes: rb, txPackets: tp, rxPackets: rp });
    } else {
      f.txBytes += tb;
      f.rxBytes += rb;
      f.txPackets += tp;
      f.rxPackets += rp;
    }
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
