// A collector in the same process (`podflow standalone`): the pipeline pulls its backlog directly,
// without HTTP or msgpack, through the same CollectorClient interface and the same ack rules.
import type { FlowBatch, PullResponse } from '../shared/flow.js';
import { type CollectorClient, PullError } from './pull.js';

/** What the in-process client needs of the collector's backlog (collector/backlog.ts). */
export interface LocalBacklog {
  readonly bootId: string;
  pull(maxFlows?: number): FlowBatch[];
  /** Pending pull boundaries after the last pull (see PullResponse.boundaries); optional. */
  pendingBoundaries?(): number[];
  /** Highest seq acknowledged (0: none); sent with the boundaries. */
  readonly acked?: number;
  ack(
    bootId: string,
    seq: number,
    cursors?: Readonly<Record<string, number>>,
  ): { ok: true } | { ok: false; reason: string };
  /** Per sink name, how far it got beyond the ack (see PullResponse.cursors); optional. */
  sinkCursors?(): Record<string, number>;
}

export class InProcessCollectorClient implements CollectorClient {
  readonly id: string;

  constructor(
    private readonly backlog: LocalBacklog,
    private readonly info: { node: string; source: 'netfilter' | 'cilium' },
  ) {
    this.id = `local:${info.node}`;
  }

  async pull(_signal: AbortSignal): Promise<PullResponse> {
    const res: PullResponse = {
      version: 1,
      bootId: this.backlog.bootId,
      node: this.info.node,
      source: this.info.source,
      batches: this.backlog.pull(),
    };
    // After the pull: its own boundary is among them.
    const boundaries = this.backlog.pendingBoundaries?.();
    if (boundaries !== undefined) {
      res.boundaries = boundaries;
      res.acked = this.backlog.acked ?? 0;
    }
    const cursors = this.backlog.sinkCursors?.();
    if (cursors !== undefined) res.cursors = cursors;
    return res;
  }

  async ack(
    bootId: string,
    seq: number,
    _signal: AbortSignal,
    cursors?: Readonly<Record<string, number>>,
  ): Promise<void> {
    const r = this.backlog.ack(bootId, seq, cursors);
    if (!r.ok) throw new PullError('boot', `ack: ${r.reason}`);
  }
}
