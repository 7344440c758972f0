// The built-in view's JSON API (GET /api/v1/traffic): plain data shared by the exporter, which
// computes it from its recent rounds (exporter/traffic-ring.ts), and the page (view/), which draws it.

import { TRAFFIC_CLASSES, type TrafficClass } from './flow.js';

export const TRAFFIC_PATH = '/api/v1/traffic';

/** Traffic classes as CONTRACT.md `traffic_class` names them, cheapest first (the flows' own list). */
export const VIEW_CLASSES = TRAFFIC_CLASSES;
export type ViewClass = TrafficClass;

/** How finely the endpoints of the map and table are grouped. */
export const VIEW_GROUPS = ['namespace', 'workload', 'pod'] as const;
export type ViewGroup = (typeof VIEW_GROUPS)[number];

/**
 * One end of a conversation, at the asked grouping. In-cluster pods are grouped by namespace,
 * workload or pod; nodes are always themselves; peers outside the cluster are their DNS name when
 * they have one, else their address (at namespace grouping: `internet` or `private network`).
 */
export interface TrafficNode {
  /** Unique within a response: `ns:shop`, `wl:shop/Deployment/api`, `pod:shop/api-7f…`, `node:n1`, `name:api.stripe.com`, `ip:203.0.113.7`, `ext:internet`. */
  id: string;
  /** What the page shows. */
  label: string;
  kind: 'namespace' | 'workload' | 'pod' | 'node' | 'external';
  /** Empty outside the cluster and for nodes. */
  namespace: string;
  /** Peers outside the cluster: the address(es) behind a name, comma-separated, at most a few. */
  ip?: string;
}

/**
 * Traffic between two ends in one class over the window, each byte counted once, by its sender:
 * `aToB` sent by `a`, `bToA` sent by `b` (for a peer outside the cluster, what the local end received).
 */
export interface TrafficRow {
  a: TrafficNode;
  b: TrafficNode;
  class: ViewClass;
  aToB: number;
  bToA: number;
  /** aToB + bToA. */
  bytes: number;
  /** bytes / seconds of the response. */
  rate: number;
  /** USD, or null when the flows carry no cost (no price table). */
  cost: number | null;
}

export interface ClassTotal {
  class: ViewClass;
  bytes: number;
  rate: number;
  cost: number | null;
}

export interface TrafficResponse {
  /** The window asked for, seconds. */
  window: number;
  /** What rates divide by: the window, or less when the process has run for less. */
  seconds: number;
  group: ViewGroup;
  /** When this was computed, ms since the epoch. */
  now: number;
  /** The export interval, seconds: new data comes at most this often (the page polls at it). */
  interval: number;
  /** `cluster` of the flows, when they carry one. */
  cluster?: string;
  /** Per class with traffic in the window (after filters), in VIEW_CLASSES order. */
  totals: ClassTotal[];
  total: { bytes: number; rate: number; cost: number | null };
  /** Rows matching the filters; `rows` holds the largest `limit` of them, largest first. */
  matched: number;
  rows: TrafficRow[];
  /** Every namespace with traffic in the window, whatever the filters (for the filter's choices). */
  namespaces: string[];
  /** Flows that arrived too late for the ring (older than its oldest round) since start. */
  late: number;
}
