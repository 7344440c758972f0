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
    for (let k = 0; k < n; k++) out[k] = this.flowAt(k);
    return out;
  }

  /**
   * As JSON, a flow list is its flows, made one at a time as the encoder reads them: an array in
   * every respect an encoder looks at (Array.isArray, constructor, length, indices), whose element k
   * is a fresh `Flow` built on access. msgpackr reads each element once, so a pull of 190k flows
   * no longer holds 190k objects (~25 MB, promoted to the old generation while the encoder ran):
   * each dies young.
   */
  toJSON(): Flow[] {
    const n = this.length;
    return new Proxy(new Array<Flow>(n), {
      get: (target, key, receiver) => {
        if (typeof key === 'string') {
          const k = key.length <= 10 ? Number(key) : Number.NaN;
          if (k >= 0 && k < n && Number.isInteger(k)) return this.flowAt(k);
        }
        return Reflect.get(target, key, receiver);
      },
    });
  }

  private flowAt(k: number): Flow {
    const i = k * 4;
    const c = this.cnt;
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
    return f;
  }
}
