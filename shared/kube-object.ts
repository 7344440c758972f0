// The compact record both sides keep of a Kubernetes object instead of the object itself (a pod is
// 5-10 kB of JSON): its key and version. Free of any client library, so the collector can use it.

/** The least a cache needs of an object: its key and version. */
export interface Compact {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

/** The compact `metadata` of any object; never throws. */
export function compactMeta(obj: unknown): Compact['metadata'] {
  const m = ((obj as { metadata?: Record<string, unknown> } | null)?.metadata ?? {}) as Record<
    string,
    unknown
  >;
  const out: Compact['metadata'] = { name: String(m.name ?? '') };
  if (typeof m.namespace === 'string' && m.namespace !== '') out.namespace = m.namespace;
  if (typeof m.resourceVersion === 'string') out.resourceVersion = m.resourceVersion;
  return out;
}

/** How a list/watch client pages, watches and backs off (the exporter's informers, the collector's own client). */
export interface InformerOptions {
  labelSelector?: string;
  fieldSelector?: string;
  /** Items per list page. @default 500 */
  pageSize?: number;
  /** timeoutSeconds asked of the server for each watch (it then ends it cleanly). @default 300 */
  watchTimeoutSeconds?: number;
  /** A socket with no byte for this long is cut. @default watchTimeoutSeconds + 60 s */
  idleTimeoutMs?: number;
  /** Deadline of one list page. @default 60 s */
  listTimeoutMs?: number;
  /** First retry delay after an error; doubles up to maxBackoffMs. @default 500 */
  initialBackoffMs?: number;
  /** @default 30 s */
  maxBackoffMs?: number;
}

/** The paging, watch and backoff settings of InformerOptions, every default applied. */
export type InformerTimings = Required<Omit<InformerOptions, 'labelSelector' | 'fieldSelector'>>;

/** Applies the defaults documented on InformerOptions, in the one place both clients take them from. */
export function informerTimings(options: InformerOptions): InformerTimings {
  const watchTimeoutSeconds = options.watchTimeoutSeconds ?? 300;
  return {
    pageSize: options.pageSize ?? 500,
    watchTimeoutSeconds,
    idleTimeoutMs: options.idleTimeoutMs ?? (watchTimeoutSeconds + 60) * 1000,
    listTimeoutMs: options.listTimeoutMs ?? 60_000,
    initialBackoffMs: options.initialBackoffMs ?? 500,
    maxBackoffMs: options.maxBackoffMs ?? 30_000,
  };
}

/** A pod as the collector's local index needs it (the exporter's cluster view keeps more). */
export interface PodAddresses extends Compact {
  /** Every IP of the pod (status.podIPs, else status.podIP). */
  ips: string[];
  hostNetwork: boolean;
  /** Phase Succeeded or Failed. */
  ended: boolean;
}

/**
 * Pods kept current by one list/watch: the collector's own (collector/kube-watch.ts) or, in
 * `podflow standalone`, the exporter's pod informer, so that one process watches pods once.
 */
export interface PodFeed {
  /** Register before start(): `add` fires for every pod of the first list. */
  on(verb: 'add' | 'update' | 'delete', cb: (pod: PodAddresses) => void): void;
  /** Begins listing and watching; returns at once. */
  start(): void;
  synced(): boolean;
  whenSynced(): Promise<void>;
  /** Why the pods are not listed yet (the API server's last answer), or undefined. */
  lastError(): string | undefined;
  close(): Promise<void>;
}
