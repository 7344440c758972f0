// The built-in view end to end: the real `podflow standalone` runs in a test network namespace,
// real TCP and UDP traffic flows to a peer namespace, and a real headless Chromium in the same
// namespace opens the page. The page must show that traffic with the bytes conntrack counted, its
// rate, its class and the peer's name, update map and table on the next round without a reload,
// filter by text, and fetch nothing but from podflow itself.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatBytes, formatRate } from '../view/format.js';
import { type Chromium, launchChromium, type Page } from './helpers/chromium.js';
import { conntrackEntries } from './helpers/conntrack-table.js';
import {
  cleanupAll,
  createPair,
  httpStatus,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
} from './helpers/netns.js';
import { waitFor } from './helpers/wait.js';

const ROOT = new URL('..', import.meta.url).pathname;
const root = requireRoot();
const PORT = 9471;
const ORIGIN = `http://127.0.0.1:${PORT}`;

/** Bytes both ways between this namespace and `peer`, as conntrack counted them. */
async function conntrackBytes(ns: Netns, peer: string): Promise<number> {
  let n = 0;
  for (const e of await conntrackEntries(ns)) {
    if (e.origSrc === peer || e.replySrc === peer) n += e.origBytes + e.replyBytes;
  }
  return n;
}

/** What the page shows for the conversation with `peer`: its table row and its map edge. */
interface Shown {
  rounds: number;
  seconds: number;
  row?: {
    source: string;
    destination: string;
    cls: string;
    rate: number;
    rateText: string;
    total: number;
    totalText: string;
  };
  edge?: { cls: string; rate: number; title: string };
  mapLabels: string[];
  rows: number;
}
const shown = (page: Page, peer: string): Promise<Shown> =>
  page.evaluate<Shown>(`(() => {
    const main = document.getElementById('view');
    const id = ${JSON.stringify(`ip:${peer}`)};
    const tr = [...document.querySelectorAll('#talkers-body tr')].find((r) => r.dataset.b === id);
    const edge = [...document.querySelectorAll('#map .edge')].find((g) => g.dataset.b === id);
    return {
      rounds: Number(main.dataset.rounds ?? 0),
      seconds: Number(main.dataset.seconds ?? 0),
      rows: document.querySelectorAll('#talkers-body tr').length,
      row: tr && {
        source: tr.cells[0].textContent,
        destination: tr.cells[1].textContent,
        cls: tr.cells[2].textContent,
        rate: Number(tr.cells[3].dataset.value),
        rateText: tr.cells[3].textContent,
        total: Number(tr.cells[5].dataset.value),
        totalText: tr.cells[5].textContent,
      },
      edge: edge && { cls: edge.dataset.class, rate: Number(edge.dataset.rate), title: edge.querySelector('title').textContent },
      mapLabels: [...document.querySelectorAll('#map .node text')].map((t) => t.textContent),
    };
  })()`);

describe.skipIf(!root)('built-in view in Chromium', () => {
  let host: Netns;
  let peer: Netns;
  let addr: { a4: string; b4: string; a6: string; b6: string };
  let podflow: ChildProcess | undefined;
  let log = '';
  let chromium: Chromium | undefined;
  let home: string;

  beforeAll(async () => {
    await promisify(execFile)('npm', ['run', 'build', '--silent'], { cwd: ROOT });
    home = await mkdtemp(join(tmpdir(), 'podflow-view-home-'));
    const pair = await createPair(232);
    host = pair.a;
    peer = pair.b;
    addr = pair;
  }, 180_000);

  afterAll(async () => {
    await chromium?.close();
    if (podflow) await kill(podflow).catch(() => undefined);
    await cleanupAll();
    if (home) await rm(home, { recursive: true, force: true });
  });

  it('shows real traffic with its bytes, rate, class and peer, updates each round, and fetches only from podflow', async () => {
    const tcp = await startServer(peer, 'tcp', addr.b4);
    const udp = await startServer(peer, 'udp', addr.b6);
    await host.exec('conntrack', ['-F']).catch(() => undefined);
    podflow = host.spawn(
      process.execPath,
      [
        join(ROOT, 'bin/podflow.js'),
        'standalone',
        '--listen',
        `127.0.0.1:${PORT}`,
        '--interval',
        '1s',
        '--export-interval',
        '1s',
        '--node-name',
        'view-node',
        '--cluster-name',
        'lab-1',
      ],
      { HOME: home, KUBECONFIG: join(home, 'none') },
    );
    podflow.stderr?.on('data', (d) => {
      log += d;
    });
    await waitFor('podflow ready', async () => {
      if (podflow?.exitCode !== null) throw new Error(`podflow exited: ${log}`);
      const status = await httpStatus(host, `${ORIGIN}/readyz`);
      return status === 200 ? true : undefined;
    });

    chromium = await launchChromium({ ns: host });
    const page = await chromium.newPage();
    await page.navigate(`${ORIGIN}/?window=1m`);
    await page.waitFor(
      'the first round on the page',
      `Number(document.getElementById('view').dataset.rounds) >= 1`,
    );
    // --cluster-name names the cluster in the header.
    expect(await page.evaluate<string>(`document.getElementById('cluster').textContent`)).toBe('lab-1');

    // Round one: TCP over IPv4.
    const sent = await runClient(host, 'tcp', addr.b4, tcp.port, { send: 10_000, receive: 30_000, count: 5 });
    expect(sent).toMatchObject({ connections: 5, sent: 50_000, received: 150_000 });
    const v4 = await waitFor('the IPv4 conversation on the page, as conntrack counted it', async () => {
      const s = await shown(page, addr.b4);
      return s.row !== undefined && s.row.total === (await conntrackBytes(host, addr.b4)) ? s : undefined;
    });
    // conntrack counts IP and TCP headers too: more than the payloads.
    expect(v4.row!.total).toBeGreaterThan(200_000);
    expect(v4.row).toMatchObject({
      source: 'view-node',
      destination: addr.b4,
      cls: 'private',
      totalText: formatBytes(v4.row!.total),
    });
    expect(v4.row!.rate).toBeCloseTo(v4.row!.total / v4.seconds, 6);
    expect(v4.row!.rateText).toBe(formatRate(v4.row!.rate));
    expect(v4.edge).toMatchObject({ cls: 'private', rate: v4.row!.rate });
    expect(v4.edge!.title).toContain(`view-node ⇄ ${addr.b4}: ${formatRate(v4.row!.rate)} (private)`);
    expect(v4.mapLabels).toEqual(expect.arrayContaining(['view-node', addr.b4]));
    const totals = await page.evaluate<{ cls: string; bytes: number }[]>(
      `[...document.querySelectorAll('#totals-body tr')].map((r) => ({ cls: r.dataset.class, bytes: Number(r.cells[2].dataset.value) }))`,
    );
    expect(totals.find((t) => t.cls === 'private')?.bytes).toBeGreaterThanOrEqual(v4.row!.total);

    // Round two: UDP over IPv6 appears in table and map without a reload.
    await runClient(host, 'udp', addr.b6, udp.port, { send: 700, receive: 2_100, count: 3 });
    const v6 = await waitFor('the IPv6 conversation on the page', async () => {
      const s = await shown(page, addr.b6);
      return s.row !== undefined && s.row.total === (await conntrackBytes(host, addr.b6)) ? s : undefined;
    });
    expect(v6.rounds).toBeGreaterThan(v4.rounds);
    expect(v6.row).toMatchObject({ source: 'view-node', destination: addr.b6, cls: 'private' });
    expect(v6.edge?.cls).toBe('private');
    expect(v6.mapLabels).toEqual(expect.arrayContaining(['view-node', addr.b4, addr.b6]));

    // The text filter, typed as a user would: only the IPv6 peer is left.
    await page.evaluate(
      `(() => { const q = document.querySelector('[name=q]'); q.value = 'fd00'; q.dispatchEvent(new Event('input', { bubbles: true })); })()`,
    );
    await page.waitFor(
      'the filtered table',
      `(() => { const rows = [...document.querySelectorAll('#talkers-body tr')]; return rows.length === 1 && rows[0].dataset.b === ${JSON.stringify(`ip:${addr.b6}`)}; })()`,
    );
    expect(await page.evaluate('location.search')).toBe('?window=1m&q=fd00');

    // Nothing but podflow itself: the page, then its API.
    expect(page.requests.length).toBeGreaterThan(3);
    for (const url of page.requests) expect(url.startsWith(`${ORIGIN}/`), url).toBe(true);
    expect(page.requests[0]).toBe(`${ORIGIN}/?window=1m`);
    expect(page.requests.slice(1).every((u) => u.startsWith(`${ORIGIN}/api/v1/traffic?`))).toBe(true);
    expect(page.errors).toEqual([]);
  });
});
