// One tick's flows as columns: what the reducer hands to the backlog. When every connection of a
// 250k-entry table grows in one interval (~190k distinct flows), one object per flow made at every
// tick was most of the tick's allocation; V8 promoted them to the old generation (they outlive
// several young collections while the tick builds them) and the heap grew by ~25 MB per tick until
// a full collection. Columns cost two pointer arrays and two typed arrays per tick; `Flow` objects
// are made only when a pull takes the batch (collector/backlog.ts).
import type { Flow } from '../shared/flow.js';

export class FlowColumns {
  readonly src: string[];
  readonly dst: string[];
  readonly proto: Uint8Array;
  /** The peer's DNS name (Flow.dstName), '' for none. */
  readonly name: string[];
  /** Per flow: tx bytes, tx packets, rx bytes, rx packets. */
  readonly cnt: Float64Array;

  constructor(readonly length: number) {
    this.src = new Array<string>(length);
    this.dst = new Array<string>(length);
    this.proto = new Uint8Array(length);
    this.name = new Array<string>(length).fill('');
    this.cnt = new Float64Array(length * 4);
  }

  static from(flows: readonly Flow[]): FlowColumns {
    const c = new FlowColumns(flows.length);
    for (let k = 0; k < flows.length; k++) {
      const f = flows[k]!;
      c.set(k, f.src, f.dst, f.proto, f.txBytes, f.txPackets, f.rxBytes, f.rxPackets, f.dstName ?? '');
    }
    return c;
  }

  set(
    k: number,
    src: string,
    dst: string,
    proto: number,
    tb: number,
    tp: number,
    rb: number,
    rp: number,
    name = '',
  ): void {
    this.src[k] = src;
    this.name[k] = name;
    this.dst[k] = dst;
    this.proto[k] = proto;
    const i = k * 4;
    const c = this.cnt;
    c[i] = tb;
    c[i + 1] = tp;
    c[i + 2] = rb;
    c[i + 3] = rp;
  }

  /** Fresh `Flow` objects (they leave the collector's hands), in order. */
  toFlows(): Flow[] {
    const n = this.length;
    const out: Flow[] = new Array(n);
    const c = this.cnt;
    for (let k = 0; k < n; k++) {
      const i = k * 4;
      const f: Flow = {
        src: this.src[k]!,
        dst: this.dst[k]!,
        proto: this.proto[k]!,
        txBytes: c[i]!,
        rxBytes: c[i + 2]!,
        txPackets: c[i + 1]!,
        rxPackets: c[i + 3]!,
      };
      // Only when known: most flows have none, and the wire carries no empty field for them.
      const name = this.name[k]!;
      if (name !== '') f.dstName = name;
      out[k] = f;
    }
    return out;
  }

  /** As JSON, a flow list is its flows. */
  toJSON(): Flow[] {
    return this.toFlows();
  }
}
