// A collector in the same process (`podflow standalone`): the pipeline pulls its backlog directly,
// without HTTP or msgpack, through the same CollectorClient interface and the same ack rules.
import type { FlowBatch, PullResponse } from '../shared/flow.js';
import { type CollectorClient, PullError, type PullSource, pullResponse } from '../shared/pull-contract.js';

/** What the in-process client needs of the collector's backlog (collector/backlog.ts). */
export interface LocalBacklog extends PullSource {
  pull(maxFlows?: number): FlowBatch[];
  ack(
    bootId: string,
    seq: number,
    cursors?: Readonly<Record<string, number>>,
  ): { ok: true } | { ok: false; reason: string };
}

export class InProcessCollectorClient implements CollectorClient {
  readonly id: string;

  /**
   * `durable` (the collector's `--state-dir`): awaited after a pull and after an ack, so that what
   * the pipeline saw (pull boundaries, acknowledgements) is on disk before it acts on it.
   */
  constructor(
    private readonly backlog: LocalBacklog,
    private readonly info: { node: string; source: 'netfilter' | 'cilium' },
    private readonly durable?: () => Promise<void>,
  ) {
    this.id = `local:${info.node}`;
  }

  async pull(_signal: AbortSignal): Promise<PullResponse> {
    const res = pullResponse(this.backlog, this.info, this.backlog.pull());
    await this.durable?.();
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
    await this.durable?.();
  }
}
