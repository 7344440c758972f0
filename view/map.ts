// The service map: the largest conversations as an SVG graph laid out by d3-force. Nodes keep their
// place from one round to the next (a new node starts beside a known neighbour), so the map moves
// only where the traffic changed. Colours come from the stylesheet by class name (c-<class>).
import {
  forceCollide,
  forceLink,
  forceManyBody,
  forceSimulation,
  forceX,
  forceY,
  type SimulationLinkDatum,
  type SimulationNodeDatum,
} from 'd3-force';
import type { TrafficNode, TrafficRow } from '../shared/traffic.js';
import { formatBytes, formatRate } from './format.js';

/** Edges drawn at most: beyond that a map is a hairball; the table lists the rest. */
export const MAP_EDGES = 40;
/** Edges whose rate is written beside them. */
const LABELLED_EDGES = 12;
const SVG = 'http://www.w3.org/2000/svg';

interface MapNode extends SimulationNodeDatum {
  id: string;
  node: TrafficNode;
  bytes: number;
  r: number;
}

interface MapLink extends SimulationLinkDatum<MapNode> {
  row: TrafficRow;
  /** Several classes between the same two nodes are drawn as curves bent apart. */
  bend: number;
}

const el = <K extends keyof SVGElementTagNameMap>(
  name: K,
  attrs: Record<string, string | number>,
  parent?: Element,
): SVGElementTagNameMap[K] => {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  parent?.appendChild(e);
  return e;
};

const short = (s: string, max = 30) => (s.length > max ? `${s.slice(0, max - 1)}…` : s);

export class ServiceMap {
  private readonly positions = new Map<string, { x: number; y: number }>();

  constructor(private readonly svg: SVGSVGElement) {}

  /**
   * Lays out and draws the largest rows. `box`: the SVG's size in pixels, read by the caller before
   * it changed the page (reading it after would force the browser to lay the page out at once).
   */
  render(rows: readonly TrafficRow[], box: { width: number; height: number }): void {
    const top = rows.filter((r) => r.a.id !== r.b.id).slice(0, MAP_EDGES);
    const nodes = new Map<string, MapNode>();
    const add = (n: TrafficNode, bytes: number): MapNode => {
      let m = nodes.get(n.id);
      if (m === undefined) {
        m = { id: n.id, node: n, bytes: 0, r: 0, ...this.positions.get(n.id) };
        nodes.set(n.id, m);
      }
      m.bytes += bytes;
      return m;
    };
    const pairs = new Map<string, number>();
    const links: MapLink[] = top.map((row) => {
      const source = add(row.a, row.bytes);
      const target = add(row.b, row.bytes);
      const pair = [row.a.id, row.b.id].sort().join('\n');
      const k = pairs.get(pair) ?? 0;
      pairs.set(pair, k + 1);
      return { source, target, row, bend: k === 0 ? 0 : k % 2 === 1 ? (k + 1) / 2 : -k / 2 };
    });
    const list = [...nodes.values()];
    const maxBytes = Math.max(1, ...list.map((n) => n.bytes));
    for (const n of list) n.r = 6 + 12 * Math.sqrt(n.bytes / maxBytes);
    // A newcomer starts next to a neighbour already placed, not wherever the layout would drop it.
    for (const l of links) {
      const [s, t] = [l.source as MapNode, l.target as MapNode];
      if (s.x === undefined && t.x !== undefined) Object.assign(s, { x: t.x + 30, y: (t.y ?? 0) + 30 });
      if (t.x === undefined && s.x !== undefined) Object.assign(t, { x: s.x + 30, y: (s.y ?? 0) - 30 });
    }
    const known = list.filter((n) => this.positions.has(n.id)).length;
    const sim = forceSimulation(list)
      .force(
        'link',
        forceLink<MapNode, MapLink>(links)
          .id((d) => d.id)
          .distance(110)
          .strength(0.3),
      )
      .force('charge', forceManyBody<MapNode>().strength(-450))
      .force(
        'collide',
        // Room for the label under the node too, not only the circle.
        forceCollide<MapNode>((d) => Math.max(d.r + 26, Math.min(d.node.label.length, 30) * 2.8)),
      )
      // Pulled harder up and down than sideways: the map's box is wide.
      .force('x', forceX<MapNode>(0).strength(0.03))
      .force('y', forceY<MapNode>(0).strength(0.07))
      .stop();
    // Laid out at once (no animation): from scratch d3's full run (300 ticks); from the last
    // round's places a shorter, faster-cooling one, which only settles what changed.
    if (known > 0) sim.alphaDecay(0.05);
    sim.alpha(known === list.length ? 0.1 : known > 0 ? 0.5 : 1);
    sim.tick(Math.ceil(Math.log(sim.alphaMin() / sim.alpha()) / Math.log(1 - sim.alphaDecay())));
    this.positions.clear();
    for (const n of list) this.positions.set(n.id, { x: n.x ?? 0, y: n.y ?? 0 });
    this.draw(list, links, box);
  }

  private draw(list: MapNode[], links: MapLink[], box: { width: number; height: number }): void {
    const svg = this.svg;
    svg.replaceChildren();
    if (list.length === 0) {
      svg.setAttribute('viewBox', '0 0 400 60');
      el('text', { x: 200, y: 35, class: 'empty', 'text-anchor': 'middle' }, svg).textContent =
        'No traffic in this window yet';
      svg.setAttribute('aria-label', 'Service map: no traffic in this window yet');
      return;
    }
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of list) {
      const x = n.x ?? 0;
      const y = n.y ?? 0;
      x0 = Math.min(x0, x - n.r - 90);
      x1 = Math.max(x1, x + n.r + 90);
      y0 = Math.min(y0, y - n.r - 20);
      y1 = Math.max(y1, y + n.r + 30);
    }
    svg.setAttribute('viewBox', `${x0} ${y0} ${x1 - x0} ${y1 - y0}`);
    // A layout wider than the box is drawn smaller: its text is scaled back up to stay readable.
    const scale = Math.min(box.width / (x1 - x0), box.height / (y1 - y0));
    svg.style.setProperty(
      '--text-scale',
      String(Number.isFinite(scale) && scale > 0 ? Math.min(1.3, 1 / scale) : 1),
    );
    const maxRate = Math.max(...links.map((l) => l.row.rate), 1e-9);
    const edges = el('g', { class: 'edges' }, svg);
    links.forEach((l, i) => {
      const [s, t] = [l.source as MapNode, l.target as MapNode];
      const { row } = l;
      const g = el(
        'g',
        {
          class: `edge c-${row.class}`,
          'data-a': row.a.id,
          'data-b': row.b.id,
          'data-class': row.class,
          'data-rate': row.rate,
        },
        edges,
      );
      const [sx, sy, tx, ty] = [s.x ?? 0, s.y ?? 0, t.x ?? 0, t.y ?? 0];
      // A quadratic curve bent sideways by `bend`: parallel edges of several classes stay apart.
      const len = Math.hypot(tx - sx, ty - sy) || 1;
      const cx = (sx + tx) / 2 - ((ty - sy) / len) * 36 * l.bend;
      const cy = (sy + ty) / 2 + ((tx - sx) / len) * 36 * l.bend;
      el(
        'path',
        {
          d: `M${sx},${sy} Q${cx},${cy} ${tx},${ty}`,
          'stroke-width': (1.5 + 9 * Math.sqrt(row.rate / maxRate)).toFixed(2),
        },
        g,
      );
      el('title', {}, g).textContent =
        `${row.a.label} ⇄ ${row.b.label}: ${formatRate(row.rate)} (${row.class}), ` +
        `${formatBytes(row.aToB)} → and ${formatBytes(row.bToA)} ←`;
      if (i < LABELLED_EDGES) {
        // The curve's midpoint: halfway between the chord's middle and the control point.
        const label = el(
          'text',
          {
            x: ((sx + tx) / 2 + cx) / 2,
            y: ((sy + ty) / 2 + cy) / 2 - 4,
            class: 'rate',
            'text-anchor': 'middle',
          },
          g,
        );
        label.textContent = formatRate(row.rate);
      }
    });
    const nodes = el('g', { class: 'nodes' }, svg);
    for (const n of list) {
      const g = el('g', { class: `node k-${n.node.kind}`, 'data-id': n.id }, nodes);
      el('circle', { cx: n.x ?? 0, cy: n.y ?? 0, r: n.r.toFixed(1) }, g);
      const text = el('text', { x: n.x ?? 0, y: (n.y ?? 0) + n.r + 13, 'text-anchor': 'middle' }, g);
      text.textContent = short(n.node.label);
      const detail = [n.node.label, n.node.namespace && `namespace ${n.node.namespace}`, n.node.ip];
      el('title', {}, g).textContent = detail.filter(Boolean).join('\n');
    }
    const first = links[0].row;
    svg.setAttribute(
      'aria-label',
      `Service map: ${list.length} endpoints, ${links.length} connections; the largest ` +
        `${first.a.label} to ${first.b.label} at ${formatRate(first.rate)}`,
    );
  }
}
