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
