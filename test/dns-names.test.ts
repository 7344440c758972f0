// `--dns-names` end to end: a real DNS server (dnsmasq, no upstream, its own records) answers in a
// peer namespace; in the "node" namespace, clients look names up (A, AAAA, a CNAME chain, an answer
// over TCP, one that is stale when its connection starts, one answered with TTL 0, one re-pointed
// to another address while the test runs) and then open real TCP connections to the
// addresses; `podflow standalone` (the real executable) runs in the node namespace, and its HTTP
// sink records and /metrics series must carry the names asked. Without CAP_NET_RAW: one warning,
// no names, the collector keeps running.
import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sentBy } from './helpers/conntrack-table.js';
import { type Dnsmasq, queryDns, queryDnsAnswers, startDnsmasq } from './helpers/dnsmasq.js';
import {
  addRoute,
  cleanupAll,
  createPair,
  httpStatus,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
  type TrafficServer,
} from './helpers/netns.js';
import { waitFor } from './helpers/wait.js';

const execFileP = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const root = requireRoot();

/** An HTTP log receiver inside the namespace: one line per NDJSON record. */
const RECEIVER_JS = String.raw`
require('node:http').createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => { process.stdout.write(Buffer.concat(chunks).toString()); res.writeHead(200).end(); });
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

const RECORDS = [
  // TTL 1 s on every answer but ttl0's: with --dns-grace=2s a name is good for 3 s.
  'local-ttl=1',
  'address=/web.example.test/203.0.113.10',
  'host-record=api.example.test,2001:db8::11',
  'host-record=cdn.example.test,203.0.113.12',
  'cname=www.example.test,cdn.example.test',
  'host-record=tcp.example.test,203.0.113.14',
  'host-record=stale.example.test,203.0.113.13',
  'host-record=ttl0.example.test,203.0.113.20,0',
];

// The addresses a name is re-pointed between: `moved.example.test` first answers X, then Y; then
// `other.example.test` answers X. These records sit in an `addn-hosts=` file that dnsmasq reads
// again on SIGHUP.
const X = '203.0.113.21';
const Y = '203.0.113.22';

interface SinkRecord {
  dst_ip: string;
  dst_dns_name: string;
  dst_type: string;
  tx_bytes: number;
}

describe.skipIf(!root)('DNS names learned on the node', () => {
  let node: Netns;
  let peer: Netns;
  let dir: string;
  let dnsmasq: Dnsmasq | undefined;
  let podflow: ChildProcess | undefined;
  let receiver: ChildProcess | undefined;
  let server4: TrafficServer | undefined;
  let server6: TrafficServer | undefined;
  let dnsServer: string;
  let dnsServer6: string;
  let nodeAddr: string;
  let hosts: string;
  let podflowLog = '';
  const records: SinkRecord[] = [];

  beforeAll(async () => {
    // The real executable runs dist/; `npm test` has just built it.
    if (process.env.npm_lifecycle_event !== 'test')
      await execFileP('npm', ['run', 'build', '--silent'], { cwd: ROOT });
    const pair = await createPair(211);
    node = pair.a;
    peer = pair.b;
    dnsServer = pair.b4;
    dnsServer6 = pair.b6;
    nodeAddr = pair.a4;
    // The named addresses live in the peer namespace: documentation ranges stand in for the internet.
    for (const a of ['203.0.113.10', '203.0.113.12', '203.0.113.13', '203.0.113.14', '203.0.113.20', X, Y])
      await peer.addAddress('pfb', `${a}/32`);
    await peer.addAddress('pfb', '2001:db8::11/128');
    await addRoute(node, '203.0.113.0/24', pair.b4);
    await addRoute(node, '2001:db8::/64', pair.b6);
    dir = await mkdtemp(join(tmpdir(), 'podflow-dns-'));
    hosts = join(dir, 'hosts');
    await writeFile(hosts, `${X} moved.example.test\n`);
    dnsmasq = await startDnsmasq(peer, {
      listen: [pair.b4, pair.b6],
      records: [...RECORDS, `addn-hosts=${hosts}`],
      dir,
    });
    server4 = await startServer(peer, 'tcp', '0.0.0.0');
    server6 = await startServer(peer, 'tcp', '::');
    receiver = node.spawn(process.execPath, ['-e', RECEIVER_JS, '9501']);
    createInterface({ input: receiver.stdout! }).on('line', (line) => {
      if (line.trim() !== '') records.push(JSON.parse(line) as SinkRecord);
    });
    await node.exec('conntrack', ['-F']).catch(() => undefined);
    const home = await mkdtemp(join(tmpdir(), 'podflow-dns-home-'));
    podflow = node.spawn(
      process.execPath,
      [
        BIN,
        'standalone',
        '--listen',
        '127.0.0.1:9471',
        '--interval',
        '500ms',
        '--export-interval',
        '1s',
        '--dns-grace',
        '2s',
        '--group-public-ips',
        '--http-sink-url',
        'http://127.0.0.1:9501/ingest',
      ],
      { HOME: home, KUBECONFIG: join(home, 'none') },
    );
    podflow.stderr?.on('data', (d) => {
      podflowLog += d;
    });
    await waitFor('podflow ready', async () => {
      if (podflow!.exitCode !== null) throw new Error(`podflow exited: ${podflowLog}`);
      const status = await httpStatus(node, 'http://127.0.0.1:9471/readyz');
      return status === 200 ? true : undefined;
    });
  }, 120_000);

  afterAll(async () => {
    for (const p of [podflow, receiver]) if (p) await kill(p);
    await dnsmasq?.stop();
    await server4?.stop();
    await server6?.stop();
    await cleanupAll();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const query = (
    name: string,
    type: 'A' | 'AAAA',
    transport: 'udp' | 'tcp',
    server = dnsServer,
  ): Promise<string[]> => queryDns(node, server, name, type, transport);

  it('names peers by the name asked: A, AAAA, a CNAME chain, TCP; a stale answer names nothing', async () => {
    expect(await query('stale.example.test', 'A', 'udp')).toEqual(['203.0.113.13']);
    // TTL 1 s + grace 2 s: stale by the time its connection starts.
    await new Promise((r) => setTimeout(r, 4000));
    expect(await query('web.example.test', 'A', 'udp')).toEqual(['203.0.113.10']);
    // Over IPv6 both ways: the answer comes from the server's IPv6 address.
    expect(await query('api.example.test', 'AAAA', 'udp', dnsServer6)).toEqual(['2001:db8::11']);
    expect(await query('www.example.test', 'A', 'udp')).toEqual(['cdn.example.test', '203.0.113.12']);
    expect(await query('tcp.example.test', 'A', 'tcp')).toEqual(['203.0.113.14']);
    const opts = { send: 1000, receive: 3000 };
    const results = await Promise.all([
      runClient(node, 'tcp', '203.0.113.10', server4!.port, opts),
      runClient(node, 'tcp', '2001:db8::11', server6!.port, opts),
      runClient(node, 'tcp', '203.0.113.12', server4!.port, opts),
      runClient(node, 'tcp', '203.0.113.14', server4!.port, opts),
      runClient(node, 'tcp', '203.0.113.13', server4!.port, { send: 777, receive: 100 }),
    ]);
    for (const r of results) expect(r.failed).toBe(0);

    // Public peers are grouped (--group-public-ips): the name is what tells them apart.
    const names = () => {
      const m = new Map<string, number>();
      for (const r of records) {
        if (r.dst_type !== 'public') continue;
        m.set(r.dst_dns_name, (m.get(r.dst_dns_name) ?? 0) + r.tx_bytes);
      }
      return m;
    };
    const want = ['web.example.test', 'api.example.test', 'www.example.test', 'tcp.example.test', ''];
    await waitFor('sink records with every name', async () =>
      want.every((n) => (names().get(n) ?? 0) > 0) ? true : undefined,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([...names()])}; podflow: ${podflowLog.slice(-2000)}`);
    });
    expect([...names().keys()].sort()).toEqual([...want].sort());
    expect(
      records
        .filter((r) => r.dst_type === 'public')
        .every((r) => r.dst_ip === '0.0.0.0' || r.dst_ip === '::'),
    ).toBe(true);
    // The stale one: 777 bytes of payload plus headers, under no name.
    expect(names().get('')).toBeGreaterThan(777);
    expect(names().get('')).toBeLessThan(2000);

    const { stdout: metrics } = await node.exec('curl', ['-s', 'http://127.0.0.1:9471/metrics']);
    for (const n of ['web.example.test', 'api.example.test', 'www.example.test', 'tcp.example.test']) {
      expect(metrics).toMatch(
        new RegExp(
          `^podflow_transmit_bytes_total\\{[^}]*dst_dns_name="${n.replaceAll('.', '\\.')}"[^}]*\\} [1-9]`,
          'm',
        ),
      );
    }
    expect(metrics).not.toMatch(/dst_dns_name="cdn\.example\.test"/);
    expect(metrics).toMatch(/^podflow_collector_dns_answers_total [5-9]/m);
    expect(metrics).toMatch(/^podflow_collector_dns_learning 1/m);
  }, 60_000);

  it('TTL 0 named for the grace; a re-pointed name names both addresses, the newest answer wins', async () => {
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const opts = { send: 1000, receive: 3000 };
    const connect = async (ip: string) =>
      expect((await runClient(node, 'tcp', ip, server4!.port, opts)).failed).toBe(0);
    // Names are kept to whole seconds. Asked early in a second and connected just after the next
    // one begins, the TTL (0) alone has run out: only --dns-grace keeps the name.
    const nextSecond = () => sleep(1050 - (Date.now() % 1000));
    await nextSecond();
    expect(await queryDnsAnswers(node, dnsServer, 'ttl0.example.test', 'A', 'udp')).toEqual([
      { data: '203.0.113.20', ttl: 0 },
    ]);
    await nextSecond();
    await connect('203.0.113.20');

    expect(await queryDnsAnswers(node, dnsServer, 'moved.example.test', 'A', 'udp')).toEqual([
      { data: X, ttl: 1 },
    ]);
    await connect(X);
    // The collector names a connection when it first counts it (every 500 ms): the connection to X
    // is counted under `moved` before `other` is asked, meanwhile `moved` goes to Y.
    const counted = sleep(800);
    await writeFile(hosts, `${Y} moved.example.test\n${X} other.example.test\n`);
    await dnsmasq!.reload();
    expect(await query('moved.example.test', 'A', 'udp')).toEqual([Y]);
    await connect(Y);
    await counted;
    const toX1 = await sentBy(node, nodeAddr, X);
    // `moved`'s answer for X is still fresh (TTL 1 + grace 2): the newer answer wins over it.
    expect(await query('other.example.test', 'A', 'udp')).toEqual([X]);
    await connect(X);

    const bytes = (name: string) =>
      records.filter((r) => r.dst_dns_name === name).reduce((n, r) => n + r.tx_bytes, 0);
    const got = () => ({
      ttl0: bytes('ttl0.example.test'),
      moved: bytes('moved.example.test'),
      other: bytes('other.example.test'),
    });
    // Exactly what conntrack counted for the connections each name belongs to.
    const want = {
      ttl0: await sentBy(node, nodeAddr, '203.0.113.20'),
      moved: toX1 + (await sentBy(node, nodeAddr, Y)),
      other: (await sentBy(node, nodeAddr, X)) - toX1,
    };
    expect(want.ttl0).toBeGreaterThan(1000);
    expect(toX1).toBeGreaterThan(1000);
    expect(want.other).toBeGreaterThan(1000);
    await waitFor('the sink records of the TTL 0 and re-pointed names', async () =>
      JSON.stringify(got()) === JSON.stringify(want) ? true : undefined,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: got ${JSON.stringify(got())}, conntrack ${JSON.stringify(want)}`);
    });
    const { stdout: metrics } = await node.exec('curl', ['-s', 'http://127.0.0.1:9471/metrics']);
    for (const n of ['ttl0', 'moved', 'other'])
      expect(metrics).toMatch(
        new RegExp(
          `^podflow_transmit_bytes_total\\{[^}]*dst_dns_name="${n}\\.example\\.test"[^}]*\\} [1-9]`,
          'm',
        ),
      );
  }, 30_000);

  it('without CAP_NET_RAW: one warning, no names, the collector runs on', async () => {
    const proc = node.spawn('setpriv', [
      '--inh-caps=-net_raw',
      '--bounding-set=-net_raw',
      process.execPath,
      BIN,
      'collector',
      '--listen',
      '127.0.0.1:9472',
      '--interval',
      '500ms',
    ]);
    let log = '';
    proc.stderr?.on('data', (d) => {
      log += d;
    });
    proc.stdout?.on('data', (d) => {
      log += d;
    });
    try {
      await waitFor('the collector ready', async () => {
        if (proc.exitCode !== null) throw new Error(`collector exited: ${log}`);
        const status = await httpStatus(node, 'http://127.0.0.1:9472/readyz');
        return status === 200 ? true : undefined;
      });
      const warnings = log.split('\n').filter((l) => l.includes('--dns-names'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/CAP_NET_RAW/);
      const { stdout: metrics } = await node.exec('curl', ['-s', 'http://127.0.0.1:9472/metrics']);
      expect(metrics).toMatch(/^podflow_collector_dns_learning 0/m);
      expect(proc.exitCode).toBeNull();
    } finally {
      await kill(proc);
    }
  }, 30_000);
});
