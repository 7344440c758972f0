// The Grafana dashboards, built from one definition: podflow.json for podflow's metric names and
// podflow-egressd.json for `--metrics-prefix egressd` (egressd_* names, pods instead of workloads,
// dst_ip_type instead of dst_type). The Helm chart ships byte-identical copies.
//   Regenerate after a change:  npm run dashboards
// test/grafana-dashboard.test.ts checks that the committed files are this script's output and runs
// every query of both against a real Prometheus scraping real podflow processes.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type Flavour = 'podflow' | 'egressd';

/** Where each dashboard is written, relative to the repository root. */
export const DASHBOARD_FILES: Record<Flavour, string[]> = {
  podflow: ['deploy/grafana/podflow.json', 'deploy/helm/podflow/dashboards/podflow.json'],
  egressd: ['deploy/grafana/podflow-egressd.json', 'deploy/helm/podflow/dashboards/podflow-egressd.json'],
};

/**
 * The flow labels each flavour's panels read (filters, grouping, names). With `--metrics-labels`
 * keeping at least these, every panel has data; a dropped label only empties its own column.
 */
export const NEEDED_LABELS: Record<Flavour, string[]> = {
  // The workload-level set docs/exporter.md suggests for large clusters. src_node, dst_node, dst_ip
  // and dst_dns_name are shown where kept (node panel, service map, destination tables).
  podflow: [
    'src_namespace',
    'src_workload',
    'src_zone',
    'dst_namespace',
    'dst_workload',
    'dst_zone',
    'dst_type',
    'traffic_class',
    'cross_zone',
    'proto',
  ],
  // egressd's label set is fixed (--metrics-labels does not apply to it).
  egressd: [
    'src_namespace',
    'src_pod',
    'src_node',
    'src_zone',
    'dst_namespace',
    'dst_pod',
    'dst_node',
    'dst_zone',
    'dst_ip',
    'dst_ip_type',
    'cross_zone',
    'proto',
  ],
};

// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax
const DS = { type: 'prometheus', uid: '${datasource}' };

interface Names {
  tx: string;
  rx: string;
  /** The sender's name below the namespace: workload, or pod for egressd. */
  srcName: string;
  dstName: string;
  /** pod/node/private/public (podflow), private/public (egressd). */
  dstType: string;
  /** "workload" or "pod", for titles. */
  unit: string;
  units: string;
  /** Extra columns of the internet destination table. */
  destColumns: string[];
}

const NAMES: Record<Flavour, Names> = {
  podflow: {
    tx: 'podflow_transmit_bytes_total',
    rx: 'podflow_received_bytes_total',
    srcName: 'src_workload',
    dstName: 'dst_workload',
    dstType: 'dst_type',
    unit: 'workload',
    units: 'workloads',
    destColumns: ['dst_ip', 'dst_dns_name'],
  },
  egressd: {
    tx: 'egressd_transmit_bytes_total',
    rx: 'egressd_received_bytes_total',
    srcName: 'src_pod',
    dstName: 'dst_pod',
    dstType: 'dst_ip_type',
    unit: 'pod',
    units: 'pods',
    destColumns: ['dst_ip'],
  },
};

const cap = (s: string) => s[0].toUpperCase() + s.slice(1);

export function buildDashboard(flavour: Flavour): Record<string, unknown> {
  const n = NAMES[flavour];

  // ---- PromQL pieces ---------------------------------------------------------------------------
  /** Every template variable: sources (namespace, workload, node, zone) and destinations. */
  const sel = (...extra: string[]) =>
    `{${[
      'src_namespace=~"$namespace"',
      `${n.srcName}=~"$workload"`,
      'src_node=~"$node"',
      'src_zone=~"$zone"',
      'dst_namespace=~"$dst_namespace"',
      `${n.dstName}=~"$dst_workload"`,
      ...extra,
    ].join(', ')}}`;
  const rate = (metric: string, s: string) => `rate(${metric}${s}[$__rate_interval])`;
  /** Bytes over the time range; `atEnd` evaluates it at the range's end from every step. */
  const over = (metric: string, s: string, atEnd = false) =>
    `increase(${metric}${s}[$__range]${atEnd ? ' @ end()' : ''})`;
  /**
   * The top `k` series of `by` over the whole time range, as a time series: ranked once at the end
   * of the range (`@ end()`) instead of at every step, so lines do not come and go as ranks swap.
   */
  const ranked = (k: number, by: string, metric: string, s: string) =>
    `sum by (${by}) (${rate(metric, s)}) and on (${by}) topk(${k}, sum by (${by}) (${over(metric, s, true)}))`;
  /** An empty label shown as `text`: traffic of the node itself has no namespace or workload. */
  const blank = (expr: string, label: string, text: string) =>
    `label_replace(${expr}, "${label}", "${text}", "${label}", "")`;
  /**
   * `source` = "namespace/name" of the sender, or "node/<node>" for the node's own traffic;
   * `target` likewise for pods and nodes, "internet" and "private network" for addresses outside
   * the cluster. `expr` must keep the src_/dst_ namespace, name, node and type labels.
   */
  const named = (expr: string) => {
    let e = `label_join(${expr}, "source", "|", "src_namespace", "${n.srcName}", "src_node")`;
    e = `label_replace(${e}, "source", "$1/$2", "source", "([^|]+)[|]([^|]+)[|].*")`;
    e = `label_replace(${e}, "source", "node/$1", "source", "[|][|](.+)")`;
    // src_node not kept (--metrics-labels): the node's own traffic has no name left.
    e = `label_replace(${e}, "source", "(node)", "source", "[|]*")`;
    e = `label_join(${e}, "target", "|", "${n.dstType}", "dst_namespace", "${n.dstName}", "dst_node")`;
    e = `label_replace(${e}, "target", "$1/$2", "target", "[^|]*[|]([^|]+)[|]([^|]+)[|].*")`;
    e = `label_replace(${e}, "target", "node/$1", "target", "[^|]*[|][|][|](.+)")`;
    e = `label_replace(${e}, "target", "node", "target", "node[|].*")`;
    e = `label_replace(${e}, "target", "internet", "target", "public[|].*")`;
    e = `label_replace(${e}, "target", "private network", "target", "private[|].*")`;
    return e;
  };
  const namedLabels = `src_namespace, ${n.srcName}, src_node, ${n.dstType}, dst_namespace, ${n.dstName}, dst_node`;
  /** Bytes over the range per (source, target) pair. */
  const pairs = (s: string, atEnd = false) =>
    `sum by (source, target) (${named(`sum by (${namedLabels}) (${over(n.tx, s, atEnd)})`)})`;
  /** A legend name for a scraped podflow process: its node, else its pod, else the target address. */
  const who = (expr: string) =>
    `label_replace(label_replace(label_replace(${expr}, "who", "$1", "instance", "(.*)"), "who", "$1", "pod", "(.+)"), "who", "$1", "node", "(.+)")`;

  // ---- panels ----------------------------------------------------------------------------------
  type Panel = Record<string, unknown> & { w: number; h: number };
  const target = (expr: string, opts: { refId?: string; legend?: string; table?: boolean } = {}) => ({
    datasource: DS,
    expr,
    refId: opts.refId ?? 'A',
    legendFormat: opts.legend ?? '__auto',
    ...(opts.table
      ? { instant: true, range: false, format: 'table' }
      : { range: true, instant: false, format: 'time_series' }),
  });
  const stat = (title: string, description: string, expr: string, unit = 'Bps'): Panel => ({
    type: 'stat',
    title,
    description,
    w: 0,
    h: 4,
    targets: [target(expr)],
    fieldConfig: {
      defaults: {
        unit,
        color: { mode: 'thresholds' },
        thresholds: { mode: 'absolute', steps: [{ color: 'blue', value: null }] },
        ...(unit === 'percentunit' ? { decimals: 1 } : {}),
      },
      overrides: [],
    },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'value',
      graphMode: 'area',
      justifyMode: 'auto',
      orientation: 'auto',
      textMode: 'auto',
    },
  });
  const series = (
    title: string,
    description: string,
    targets: ReturnType<typeof target>[],
    opts: { unit?: string; stacked?: boolean; w?: number; h?: number } = {},
  ): Panel => ({
    type: 'timeseries',
    title,
    description,
    w: opts.w ?? 12,
    h: opts.h ?? 8,
    targets,
    fieldConfig: {
      defaults: {
        unit: opts.unit ?? 'Bps',
        custom: {
          drawStyle: 'line',
          lineWidth: 1,
          fillOpacity: opts.stacked ? 40 : 10,
          stacking: { mode: opts.stacked ? 'normal' : 'none', group: 'A' },
          showPoints: 'never',
        },
      },
      overrides: [],
    },
    options: {
      legend: { displayMode: 'table', placement: 'right', calcs: ['mean', 'max'], showLegend: true },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  });
  const table = (
    title: string,
    description: string,
    targets: ReturnType<typeof target>[],
    transformations: unknown[],
    sortBy: { displayName: string; desc: boolean }[],
    opts: { w?: number; h?: number; unit?: string } = {},
  ): Panel => ({
    type: 'table',
    title,
    description,
    w: opts.w ?? 24,
    h: opts.h ?? 9,
    targets,
    transformations,
    fieldConfig: {
      defaults: { unit: opts.unit ?? 'bytes', custom: { align: 'auto', filterable: true } },
      overrides: [],
    },
    options: {
      showHeader: true,
      cellHeight: 'sm',
      footer: { show: false, reducer: ['sum'], fields: '' },
      sortBy,
    },
  });
  const row = (title: string): Panel => ({ type: 'row', title, collapsed: false, w: 24, h: 1, panels: [] });

  /**
   * What the traffic costs (podflow_traffic_cost_total, USD under --cloud/--prices; egressd has no
   * such counter). Rates are shown per hour, totals over the time range.
   */
  const costRow = (): Panel[] => {
    const cost = 'podflow_traffic_cost_total';
    const perHour = (e: string) => `${e} * 3600`;
    const billed = sel('traffic_class=~"cross-zone|cross-region|internet"');
    const outside = sel('dst_type=~"public|private"');
    return [
      row('Cost'),
      {
        ...stat(
          'Traffic cost per hour',
          'What the selected traffic costs per hour under the price table (--cloud, --prices): every byte priced once, at its sender.',
          perHour(`sum(${rate(cost, all)})`),
          'currencyUSD',
        ),
        w: 6,
      },
      {
        ...stat(
          'Cost over the time range',
          'What the selected traffic cost over the selected time range.',
          `sum(${over(cost, all)})`,
          'currencyUSD',
        ),
        w: 6,
      },
      {
        ...stat(
          'Cross-zone cost per hour',
          'Cost per hour of traffic between zones of one region.',
          perHour(`sum(${rate(cost, sel('traffic_class="cross-zone"'))})`),
          'currencyUSD',
        ),
        w: 6,
      },
      {
        ...stat(
          'Internet cost per hour',
          'Cost per hour of traffic to and from the internet.',
          perHour(`sum(${rate(cost, sel('traffic_class="internet"'))})`),
          'currencyUSD',
        ),
        w: 6,
      },
      series(
        'Cost by traffic class',
        'Cost per hour by how the cloud bills the bytes: same-zone, cross-zone, cross-region, internet, private, unknown.',
        [target(perHour(`sum by (traffic_class) (${rate(cost, all)})`), { legend: '{{traffic_class}}' })],
        { unit: 'currencyUSD', stacked: true },
      ),
      series(
        `Cost by ${n.unit}`,
        `Cost per hour by sending ${n.unit} (the 15 largest over the time range); (node) is the nodes' own traffic.`,
        [target(perHour(nodeOwn(ranked(15, srcBy, cost, all))), { legend: srcLegend })],
        { unit: 'currencyUSD' },
      ),
      table(
        `Cost by ${n.unit} and class`,
        `What each ${n.unit} cost over the selected time range, per billed traffic class (top 30).`,
        [
          target(
            nodeOwn(`topk(30, sum by (src_namespace, ${n.srcName}, traffic_class) (${over(cost, billed)}))`),
            { table: true },
          ),
        ],
        [
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true },
              renameByName: {
                src_namespace: 'Namespace',
                [n.srcName]: cap(n.unit),
                traffic_class: 'Class',
                Value: 'Cost',
              },
            },
          },
        ],
        [{ displayName: 'Cost', desc: true }],
        { w: 12, h: 9, unit: 'currencyUSD' },
      ),
      table(
        'External destinations by cost',
        'What traffic to each address outside the cluster cost over the selected time range (top 20), with its DNS or destination-range name where known.',
        [
          target(`topk(20, sum by (dst_ip, dst_dns_name, traffic_class) (${over(cost, outside)}))`, {
            table: true,
          }),
        ],
        [
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true },
              renameByName: {
                dst_ip: 'Destination',
                dst_dns_name: 'Name',
                traffic_class: 'Class',
                Value: 'Cost',
              },
            },
          },
        ],
        [{ displayName: 'Cost', desc: true }],
        { w: 12, h: 9, unit: 'currencyUSD' },
      ),
    ];
  };

  const all = sel();
  const cross = sel('cross_zone="true"');
  const pub = sel(`${n.dstType}="public"`);
  const podPairs = sel(`${n.srcName}!=""`, `${n.dstName}!=""`);
  const share = `sum(${rate(n.tx, cross)}) / sum(${rate(n.tx, all)})`;
  const srcBy = `src_namespace, ${n.srcName}`;
  const srcLegend = `{{src_namespace}} {{${n.srcName}}}`;
  const nodeOwn = (e: string) => blank(blank(e, 'src_namespace', '(node)'), n.srcName, '(node)');

  const panels: Panel[] = [
    row('Overview'),
    {
      ...stat(
        'Traffic sent',
        'Bytes per second sent by the selected pods (transmit counts every byte once).',
        `sum(${rate(n.tx, all)})`,
      ),
      w: 5,
    },
    {
      ...stat(
        'Cross-zone traffic',
        'Bytes per second sent to a peer in another availability zone (both zones known).',
        `sum(${rate(n.tx, cross)})`,
      ),
      w: 5,
    },
    {
      ...stat('Cross-zone share', 'Cross-zone bytes as a share of all bytes sent.', share, 'percentunit'),
      w: 4,
    },
    {
      ...stat(
        'Internet egress',
        `Bytes per second sent to public addresses (${n.dstType}="public").`,
        `sum(${rate(n.tx, pub)})`,
      ),
      w: 5,
    },
    {
      ...stat(
        'Internet ingress',
        `Bytes per second received from public addresses (${n.dstType}="public"): downloads, and the answers to requests sent out.`,
        `sum(${rate(n.rx, pub)})`,
      ),
      w: 5,
    },
    series(
      'Traffic by namespace',
      "Bytes per second sent, by the namespace of the sending pod; (node) is the nodes' own traffic (host network).",
      [
        target(blank(`sum by (src_namespace) (${rate(n.tx, all)})`, 'src_namespace', '(node)'), {
          legend: '{{src_namespace}}',
        }),
      ],
      { stacked: true },
    ),
    series(
      `Traffic by ${n.unit}`,
      `Bytes per second sent, by ${n.unit} (the 15 largest over the time range); (node) is the nodes' own traffic.`,
      [target(nodeOwn(ranked(15, srcBy, n.tx, all)), { legend: srcLegend })],
    ),
    series(
      'Traffic by node',
      'Bytes per second sent from each node: its pods and its own traffic.',
      [
        target(blank(`sum by (src_node) (${rate(n.tx, all)})`, 'src_node', '(not kept)'), {
          legend: '{{src_node}}',
        }),
      ],
      { stacked: true },
    ),
    series(
      'Traffic by protocol',
      'Bytes per second sent, by IP protocol (TCP, UDP, ICMP, …).',
      [target(`sum by (proto) (${rate(n.tx, all)})`, { legend: '{{proto}}' })],
      { stacked: true },
    ),

    row('Zones'),
    series(
      'Cross-zone traffic by zone pair',
      'Bytes per second sent from one zone to another: what cross-zone data transfer is billed on.',
      [
        target(`sum by (src_zone, dst_zone) (${rate(n.tx, cross)})`, {
          legend: '{{src_zone}} → {{dst_zone}}',
        }),
      ],
      { stacked: true },
    ),
    series(
      'Cross-zone share',
      'Cross-zone bytes as a share of all bytes sent.',
      [target(share, { legend: 'cross-zone share' })],
      {
        unit: 'percentunit',
      },
    ),
    series(
      `Cross-zone traffic by ${n.unit}`,
      'Who causes cross-zone traffic: sender → receiver (the 15 largest pairs over the time range).',
      [
        target(
          `sum by (source, target) (${named(`sum by (${namedLabels}) (${rate(n.tx, cross)})`)}) and on (source, target) topk(15, ${pairs(cross, true)})`,
          { legend: '{{source}} → {{target}}' },
        ),
      ],
      { w: 24 },
    ),

    row('Internet'),
    series(
      `Internet egress by ${n.unit}`,
      `Bytes per second sent to public addresses, by ${n.unit} (the 15 largest over the time range).`,
      [target(nodeOwn(ranked(15, srcBy, n.tx, pub)), { legend: srcLegend })],
    ),
    series(
      `Internet ingress by ${n.unit}`,
      `Bytes per second received from public addresses, by ${n.unit} (the 15 largest over the time range).`,
      [target(nodeOwn(ranked(15, srcBy, n.rx, pub)), { legend: srcLegend })],
    ),
    table(
      'Internet egress by destination',
      `Bytes sent to each public address over the selected time range (top 20)${
        flavour === 'podflow' ? ', with the name a pod looked up for it' : ''
      }. With group-public-ips all of them show as 0.0.0.0 / ::.`,
      [target(`topk(20, sum by (${n.destColumns.join(', ')}) (${over(n.tx, pub)}))`, { table: true })],
      [
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: { dst_ip: 'Destination', dst_dns_name: 'DNS name', Value: 'Bytes' },
          },
        },
      ],
      [{ displayName: 'Bytes', desc: true }],
      { w: 12, h: 8 },
    ),
    table(
      'Internet ingress by source address',
      'Bytes received from each public address over the selected time range (top 20).',
      [target(`topk(20, sum by (dst_ip) (${over(n.rx, pub)}))`, { table: true })],
      [
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: { dst_ip: 'Source address', Value: 'Bytes' },
          },
        },
      ],
      [{ displayName: 'Bytes', desc: true }],
      { w: 12, h: 8 },
    ),

    ...(flavour === 'podflow' ? costRow() : []),

    row('Who talks to whom'),
    {
      type: 'nodeGraph',
      title: 'Service map',
      description: `Bytes sent over the selected time range between ${n.units} (namespace/name), nodes (node/…), the internet and private networks outside the cluster. Circles show bytes sent, arrows bytes from sender to receiver.`,
      w: 24,
      h: 14,
      targets: [
        // Edges: one row per sender → receiver pair with id, source, target and the bytes.
        target(`label_join(${pairs(all)}, "id", " → ", "source", "target")`, { refId: 'edges', table: true }),
        // Nodes: every sender with its bytes sent, and every receiver that sends nothing (0).
        target(
          `label_replace(sum by (id) (label_replace(${pairs(all)}, "id", "$1", "source", "(.+)")), "title", "$1", "id", "(.+)") or label_replace(0 * sum by (id) (label_replace(${pairs(all)}, "id", "$1", "target", "(.+)")), "title", "$1", "id", "(.+)")`,
          { refId: 'nodes', table: true },
        ),
      ],
      // Prometheus names the value field Value (Value #<refId> beside other queries): the node graph
      // reads mainstat.
      transformations: [
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: { Value: 'mainstat', 'Value #edges': 'mainstat', 'Value #nodes': 'mainstat' },
          },
        },
      ],
      fieldConfig: { defaults: { unit: 'bytes' }, overrides: [] },
      options: { nodes: { mainStatUnit: 'bytes' }, edges: { mainStatUnit: 'bytes' } },
    },
    table(
      'Top talkers',
      `The 20 largest sender → receiver pairs over the selected time range: ${n.units} (namespace/name), nodes, the internet.`,
      [
        target(
          `topk(20, sum by (source, target, ${n.dstType}, cross_zone) (${named(
            `sum by (${namedLabels}, cross_zone) (${over(n.tx, all)})`,
          )}))`,
          { table: true },
        ),
      ],
      [
        {
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: {
              source: 'From',
              target: 'To',
              [n.dstType]: 'To type',
              cross_zone: 'Cross-zone',
              Value: 'Bytes',
            },
          },
        },
      ],
      [{ displayName: 'Bytes', desc: true }],
    ),
    table(
      `Pod-to-pod matrix (${n.units})`,
      `Bytes sent between pods over the selected time range: rows are senders, columns receivers (namespace/${n.unit}, so equal names in two namespaces stay apart).`,
      [target(pairs(podPairs), { table: true })],
      [
        {
          id: 'groupingToMatrix',
          options: { rowField: 'source', columnField: 'target', valueField: 'Value', emptyValue: 'zero' },
        },
      ],
      // groupingToMatrix names its first column "<rowField>\<columnField>": senders in name order.
      [{ displayName: 'source\\target', desc: false }],
      { h: 10 },
    ),

    row('podflow health'),
    series(
      'Conntrack read duration (p99)',
      "Time of one conntrack read + reduce tick per collector (99th percentile). Close to the interval means the node's table is large for the CPU limit.",
      [
        target(
          who(
            'histogram_quantile(0.99, sum by (le, instance, pod, node) (rate(podflow_collector_read_duration_seconds_bucket{node=~"$node"}[$__rate_interval])))',
          ),
          { legend: '{{who}}' },
        ),
      ],
      { unit: 's', w: 8 },
    ),
    series(
      'Conntrack entries',
      "Entries seen by each collector's last read, and those without byte counters (nf_conntrack_acct was off when they were created).",
      [
        target(who('sum by (instance, pod, node) (podflow_collector_conntrack_entries{node=~"$node"})'), {
          legend: '{{who}}',
        }),
        target(
          who('sum by (instance, pod, node) (podflow_collector_entries_without_counters{node=~"$node"})'),
          {
            refId: 'B',
            legend: '{{who}} without counters',
          },
        ),
      ],
      { unit: 'short', w: 8 },
    ),
    series(
      'Collector backlog',
      'Flows waiting for the exporter to acknowledge them. Growing: the exporter does not keep up or cannot pull.',
      [
        target(who('sum by (instance, pod, node) (podflow_collector_backlog_flows{node=~"$node"})'), {
          legend: '{{who}}',
        }),
      ],
      { unit: 'short', w: 8 },
    ),
    series(
      'Pull errors',
      "Failed pulls and acknowledgements by collector and reason, named by the collector's node when the collectors are scraped with a node label (the chart's PodMonitor adds it). The collector keeps the flows; they arrive with a later pull.",
      [target(pullErrors(), { legend: '{{node}} {{reason}}' })],
      { unit: 'reqps', w: 8 },
    ),
    series(
      'Dropped records and flows',
      'Records a sink gave up on (exporter) and flows a collector dropped at its backlog bound. Should stay at zero.',
      [
        target('sum by (sink, reason) (rate(podflow_exporter_dropped_records_total[$__rate_interval]))', {
          legend: '{{sink}} {{reason}}',
        }),
        target(
          who(
            'sum by (instance, pod, node) (rate(podflow_collector_dropped_flows_total{node=~"$node"}[$__rate_interval]))',
          ),
          {
            refId: 'B',
            legend: 'collector {{who}} backlog full',
          },
        ),
      ],
      { unit: 'short', w: 8 },
    ),
    series(
      'Export round duration (p99)',
      'One exporter round: pull every collector, enrich, push to every sink, acknowledge.',
      [
        target(
          who(
            'histogram_quantile(0.99, sum by (le, instance, pod, node) (rate(podflow_exporter_cycle_duration_seconds_bucket[$__rate_interval])))',
          ),
          { legend: '{{who}}' },
        ),
      ],
      { unit: 's', w: 8 },
    ),
  ];

  // ---- layout: rows and panels left to right, wrapping at 24 columns ---------------------------
  let x = 0;
  let y = 0;
  let rowH = 0;
  const placed = panels.map((p, i) => {
    const { w, h, ...rest } = p;
    const width = w === 0 ? 6 : w;
    if (x + width > 24 || p.type === 'row') {
      y += rowH;
      x = 0;
      rowH = 0;
    }
    const gridPos = { x, y, w: width, h };
    x += width;
    rowH = Math.max(rowH, h);
    if (p.type === 'row') {
      y += h;
      x = 0;
      rowH = 0;
    }
    return p.type === 'row'
      ? { id: i + 1, type: p.type, title: p.title, collapsed: false, gridPos, panels: [] }
      : {
          id: i + 1,
          type: p.type,
          title: p.title,
          description: p.description,
          datasource: DS,
          gridPos,
          ...rest,
        };
  });

  const variable = (name: string, label: string, query: string) => ({
    name,
    label,
    type: 'query',
    datasource: DS,
    definition: query,
    query: { query, refId: `${name}-query`, qryType: 1 },
    refresh: 2,
    includeAll: true,
    multi: true,
    // Regex matchers: .* also matches series without the label (a label dropped by --metrics-labels).
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
    regex: '',
    hide: 0,
    options: [],
  });
  const needs = NEEDED_LABELS[flavour].join(' ');

  return {
    __requires: [
      { type: 'grafana', id: 'grafana', name: 'Grafana', version: '10.0.0' },
      { type: 'datasource', id: 'prometheus', name: 'Prometheus', version: '1.0.0' },
      { type: 'panel', id: 'nodeGraph', name: 'Node Graph', version: '' },
      { type: 'panel', id: 'stat', name: 'Stat', version: '' },
      { type: 'panel', id: 'table', name: 'Table', version: '' },
      { type: 'panel', id: 'timeseries', name: 'Time series', version: '' },
    ],
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
      ],
    },
    description:
      flavour === 'podflow'
        ? `podflow: pod-to-pod, cross-zone and internet traffic from conntrack, and podflow's own health. Needs the flow labels ${needs} (--metrics-labels keeping at least these; the default keeps all). For --metrics-prefix egressd use podflow-egressd.json.`
        : `podflow with --metrics-prefix egressd (egressd_* names and labels): pod-to-pod, cross-zone and internet traffic, and podflow's own health. Reads the labels ${needs}. For podflow's own names use podflow.json.`,
    editable: true,
    fiscalYearStartMonth: 0,
    graphTooltip: 1,
    id: null,
    links: [],
    panels: placed,
    refresh: '1m',
    schemaVersion: 39,
    tags: ['podflow', 'network', 'kubernetes', ...(flavour === 'egressd' ? ['egressd'] : [])],
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          regex: '',
          hide: 0,
          includeAll: false,
          multi: false,
          refresh: 1,
          current: {},
          options: [],
        },
        variable('namespace', 'Namespace', `label_values(${n.tx}, src_namespace)`),
        variable('workload', cap(n.unit), `label_values(${n.tx}{src_namespace=~"$namespace"}, ${n.srcName})`),
        variable('node', 'Node', `label_values(${n.tx}{src_namespace=~"$namespace"}, src_node)`),
        variable('zone', 'Zone', `label_values(${n.tx}, src_zone)`),
        variable('dst_namespace', 'Destination namespace', `label_values(${n.tx}, dst_namespace)`),
        variable(
          'dst_workload',
          `Destination ${n.unit}`,
          `label_values(${n.tx}{dst_namespace=~"$dst_namespace"}, ${n.dstName})`,
        ),
      ],
    },
    time: { from: 'now-6h', to: 'now' },
    timepicker: {},
    timezone: '',
    title: flavour === 'podflow' ? 'podflow network traffic' : 'podflow network traffic (egressd names)',
    uid: flavour === 'podflow' ? 'podflow-traffic' : 'podflow-traffic-egressd',
    version: 1,
    weekStart: '',
  };
}

/**
 * Pull errors per collector and reason, the collector named by its node: the collector URL's
 * host:port is the collector's scrape `instance` (host network: the node's address), whose `node`
 * label the chart's PodMonitor sets. Collectors not scraped that way keep their host:port.
 */
function pullErrors(): string {
  const errors = 'sum by (collector, reason) (rate(podflow_exporter_pull_errors_total[$__rate_interval]))';
  const withInstance = `label_replace(${errors}, "instance", "$1", "collector", "https?://([^/]+).*")`;
  const nodes =
    'max by (instance, node) (0 * podflow_collector_conntrack_entries{node=~"$node", node!=""} + 1)';
  // Collectors scraped without a node label (or not at all) keep their host:port.
  const named = 'max by (instance) (podflow_collector_conntrack_entries{node!=""})';
  const fallback = `label_replace(${withInstance}, "node", "$1", "instance", "(.*)") unless on (instance) ${named}`;
  return `(${withInstance} * on (instance) group_left (node) ${nodes}) or ${fallback}`;
}

/** The file's text: what the committed files must equal. */
export function dashboardText(flavour: Flavour): string {
  return `${JSON.stringify(buildDashboard(flavour), null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  for (const flavour of ['podflow', 'egressd'] as const) {
    for (const file of DASHBOARD_FILES[flavour]) writeFileSync(`${root}${file}`, dashboardText(flavour));
  }
}
