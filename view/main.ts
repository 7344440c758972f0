// The built-in view's page: polls /api/v1/traffic once per export round and draws the totals per
// traffic class, the service map and the top talkers. Everything it shows is text in the DOM
// (tables, SVG text with titles). The filters live in the page's query string, so a view can be
// bookmarked or shared. Requests go to this page's own origin, relative to its path (it works
// behind a proxy that serves it under a prefix).
import {
  TRAFFIC_PATH,
  type TrafficResponse,
  type TrafficRow,
  VIEW_CLASSES,
  VIEW_GROUPS,
} from '../shared/traffic.js';
import { formatBytes, formatCost, formatRate, formatSeconds } from './format.js';
import { ServiceMap } from './map.js';

const WINDOWS = ['1m', '5m', '15m'];
const LIMITS = ['25', '50', '200', '1000'];
const FILTERS = ['window', 'group', 'namespace', 'class', 'q', 'limit'] as const;
type Filter = (typeof FILTERS)[number];
const DEFAULTS: Record<Filter, string> = {
  window: '5m',
  group: 'workload',
  namespace: '',
  class: '',
  q: '',
  limit: '50',
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const main = $<HTMLElement>('view');
const form = $<HTMLFormElement>('filters');
const status = $<HTMLElement>('status');
const field = (name: Filter) => form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement;
const mapSvg = document.getElementById('map') as unknown as SVGSVGElement;
const map = new ServiceMap(mapSvg);

function option(select: HTMLSelectElement, value: string, label = value): void {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = label;
  select.append(o);
}

function cell(row: HTMLTableRowElement, text: string, opts: { value?: number; className?: string } = {}) {
  const td = row.insertCell();
  td.textContent = text;
  if (opts.value !== undefined) td.dataset.value = String(opts.value);
  if (opts.className) td.className = opts.className;
  return td;
}

/** An end of a conversation: its label, with its namespace or address in smaller type below. */
function endCell(row: HTMLTableRowElement, n: TrafficRow['a'], group: string): void {
  const td = row.insertCell();
  td.className = `end k-${n.kind}`;
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = n.label;
  td.append(name);
  const sub = n.kind === 'external' ? (n.ip ?? '') : group !== 'namespace' ? n.namespace : '';
  if (sub !== '' && sub !== n.label) {
    const s = document.createElement('span');
    s.className = 'sub';
    s.textContent = sub;
    td.append(s);
  }
}

function classCell(row: HTMLTableRowElement, cls: string): void {
  const td = row.insertCell();
  const badge = document.createElement('span');
  badge.className = `badge c-${cls}`;
  badge.textContent = cls;
  td.append(badge);
}

function renderTotals(res: TrafficResponse): void {
  const body = $<HTMLTableSectionElement>('totals-body');
  body.replaceChildren();
  for (const t of res.totals) {
    const tr = body.insertRow();
    tr.dataset.class = t.class;
    classCell(tr, t.class);
    cell(tr, formatRate(t.rate), { value: t.rate, className: 'num' });
    cell(tr, formatBytes(t.bytes), { value: t.bytes, className: 'num' });
    cell(tr, formatCost(t.cost), { value: t.cost ?? undefined, className: 'num' });
  }
  const foot = $<HTMLTableRowElement>('totals-all');
  foot.replaceChildren();
  const th = document.createElement('th');
  th.scope = 'row';
  th.textContent = 'All';
  foot.append(th);
  cell(foot, formatRate(res.total.rate), { value: res.total.rate, className: 'num' });
  cell(foot, formatBytes(res.total.bytes), { value: res.total.bytes, className: 'num' });
  cell(foot, formatCost(res.total.cost), { value: res.total.cost ?? undefined, className: 'num' });
}

function renderTalkers(res: TrafficResponse): void {
  const body = $<HTMLTableSectionElement>('talkers-body');
  body.replaceChildren();
  for (const r of res.rows) {
    const tr = body.insertRow();
    tr.dataset.a = r.a.id;
    tr.dataset.b = r.b.id;
    tr.dataset.class = r.class;
    endCell(tr, r.a, res.group);
    endCell(tr, r.b, res.group);
    classCell(tr, r.class);
    cell(tr, formatRate(r.rate), { value: r.rate, className: 'num' });
    cell(tr, `${formatBytes(r.aToB)} / ${formatBytes(r.bToA)}`, { className: 'num dir' });
    cell(tr, formatBytes(r.bytes), { value: r.bytes, className: 'num' });
    cell(tr, formatCost(r.cost), { value: r.cost ?? undefined, className: 'num' });
  }
  $<HTMLElement>('talkers-count').textContent =
    res.matched === 0
      ? 'No traffic matches in this window.'
      : `${res.rows.length} of ${res.matched.toLocaleString('en-US')} conversations, largest first.`;
}

/** The namespace choices follow the traffic; the chosen one stays even when it went quiet. */
function renderNamespaces(res: TrafficResponse, chosen: string): void {
  const select = field('namespace') as HTMLSelectElement;
  const want = [...new Set([...res.namespaces, ...(chosen ? [chosen] : [])])].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (want.join('\n') === have.join('\n')) return;
  select.length = 1;
  for (const ns of want) option(select, ns);
  select.value = chosen;
}

function render(res: TrafficResponse, filters: Record<Filter, string>): void {
  performance.mark('podflow:render-start');
  const box = { width: mapSvg.clientWidth, height: mapSvg.clientHeight };
  renderNamespaces(res, filters.namespace);
  renderTotals(res);
  renderTalkers(res);
  performance.mark('podflow:map-start');
  map.render(res.rows, box);
  performance.measure('podflow:map', 'podflow:map-start');
  const at = new Date(res.now).toLocaleTimeString();
  $<HTMLElement>('cluster').textContent = res.cluster ?? '';
  // The window is whole export rounds: a few seconds short of it is not worth a word.
  $<HTMLElement>('span').textContent =
    `Rates are averages over the last ${formatSeconds(Math.round(res.seconds))}` +
    (res.seconds < res.window * 0.9 ? ' (the traffic seen so far)' : '') +
    '; each byte is counted once, by its sender.';
  status.textContent = `Live: updated ${at}, every ${formatSeconds(res.interval)}`;
  status.classList.remove('down');
  main.dataset.now = String(res.now);
  main.dataset.seconds = String(res.seconds);
  main.dataset.rounds = String(Number(main.dataset.rounds ?? 0) + 1);
  main.setAttribute('aria-busy', 'false');
  performance.measure('podflow:render', 'podflow:render-start');
}

function readFilters(): Record<Filter, string> {
  const out = { ...DEFAULTS };
  for (const f of FILTERS) out[f] = field(f).value.trim();
  return out;
}

let timer: number | undefined;
let inFlight: AbortController | undefined;
let intervalMs = 5000;

async function poll(): Promise<void> {
  clearTimeout(timer);
  inFlight?.abort();
  const abort = new AbortController();
  inFlight = abort;
  const filters = readFilters();
  const params = new URLSearchParams();
  for (const f of FILTERS) if (filters[f] !== '') params.set(f, filters[f]);
  try {
    // Relative: the API beside this page, wherever it is mounted.
    const res = await fetch(`${TRAFFIC_PATH.slice(1)}?${params}`, { signal: abort.signal });
    if (!res.ok) throw new Error(`${res.status} ${(await res.text()).trim()}`);
    const data = (await res.json()) as TrafficResponse;
    if (abort.signal.aborted) return;
    intervalMs = Math.max(1000, data.interval * 1000);
    render(data, filters);
  } catch (err) {
    if (abort.signal.aborted) return;
    status.textContent = `Not updated: ${(err as Error).message}. Trying again.`;
    status.classList.add('down');
  }
  timer = window.setTimeout(poll, intervalMs);
}

function setup(): void {
  const url = new URLSearchParams(location.search);
  for (const w of WINDOWS) option(field('window') as HTMLSelectElement, w);
  for (const g of VIEW_GROUPS) option(field('group') as HTMLSelectElement, g);
  for (const l of LIMITS) option(field('limit') as HTMLSelectElement, l);
  option(field('namespace') as HTMLSelectElement, '', 'all');
  option(field('class') as HTMLSelectElement, '', 'all');
  for (const c of VIEW_CLASSES) option(field('class') as HTMLSelectElement, c);
  for (const f of FILTERS) {
    const v = url.get(f) ?? DEFAULTS[f];
    if (f === 'namespace' && v !== '') option(field(f) as HTMLSelectElement, v);
    field(f).value = v;
  }
  const changed = () => {
    const params = new URLSearchParams();
    for (const [f, v] of Object.entries(readFilters())) if (v !== DEFAULTS[f as Filter]) params.set(f, v);
    history.replaceState(null, '', params.size > 0 ? `?${params}` : location.pathname);
    void poll();
  };
  form.addEventListener('change', changed);
  let typing: number | undefined;
  field('q').addEventListener('input', () => {
    clearTimeout(typing);
    typing = window.setTimeout(changed, 250);
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    changed();
  });
  void poll();
}

setup();
