// The netfilter source, tracker and reducer against the real kernel: each test reads the conntrack
// table of network namespaces it creates, with real TCP/UDP traffic of known sizes, and checks the
// counted bytes against the kernel's own accounting (`conntrack -L -o extended`).
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CtSample, parseCtMessage } from '../collector/netfilter/parser.js';
import type { Flow } from '../shared/flow.js';
import {
  addRoute,
  cleanupAll,
  createNetns,
  createPair,
  kill,
  type Netns,
  requireRoot,
  runClient,
  startServer,
} from './helpers/netns.js';

const root = requireRoot();
const repo = join(fileURLToPath(import.meta.url), '../..');
const readerScript = join(repo, 'test/helpers/conntrack-reader.ts');

interface TickOut {
  flows: Flow[];
  entries: number;
  parseErrors: number;
  lostEvents: number;
  endedEvents: number;
  baseline: boolean;
  error?: string;
}

/** The reader harness running inside a namespace, driven over stdin/stdout. */
class Reader {
  private lines: AsyncIterator<string>;
  private stderr = '';
  constructor(readonly proc: ChildProcess) {
    this.lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
    proc.stderr?.on('data', (d) => {
      this.stderr += d;
    });
    proc.stdin?.on('error', () => undefined); // EPIPE when it already exited: reported by next()
  }
  static async start(ns: Netns, opts: object, prefix: string[] = []): Promise<Reader> {
    const proc = prefix.length
      ? ns.spawn(prefix[0]!, [
          ...prefix.slice(1),
          process.execPath,
          '--import',
          'tsx',
          readerScript,
          JSON.stringify(opts),
        ])
      : ns.spawn(process.execPath, ['--import', 'tsx', readerScript, JSON.stringify(opts)]);
    return new Reader(proc);
  }
  async next<T>(): Promise<T> {
    const r = await this.lines.next();
    if (r.done) throw new Error(`reader exited: ${this.stderr.slice(-2000)}`);
    return JSON.parse(r.value) as T;
  }
  async ready(): Promise<void> {
    const r = await this.next<{ ready?: boolean; error?: string }>();
    if (!r.ready) throw new Error(`reader failed: ${r.error}`);
  }
  async tick(): Promise<TickOut> {
    this.proc.stdin!.write('{"cmd":"tick"}\n');
    const r = await this.next<TickOut>();
    if (r.error) throw new Error(r.error);
    return r;
  }
  stderrText(): string {
    return this.stderr;
  }
  /** Keeps the reader's event loop busy for `ms` (its sockets are not read meanwhile). */
  async block(ms: number): Promise<void> {
    this.proc.stdin!.write(`${JSON.stringify({ cmd: 'block', ms })}\n`);
    await this.next();
  }
  async raw(): Promise<Buffer[]> {
    this.proc.stdin!.write('{"cmd":"raw"}\n');
    return (await this.next<{ datagrams: string[] }>()).datagrams.map((d) => Buffer.from(d, 'base64'));
  }
  async stop(): Promise<void> {
    this.proc.stdin!.end('{"cmd":"exit"}\n');
    await kill(this.proc);
  }
}

interface CtLine {
  proto: number;
  origSrc: string;
  replySrc: string;
  origBytes: number;
  origPackets: number;
  replyBytes: number;
  replyPackets: number;
}

/** `conntrack -L -o extended` of the namespace: the kernel's own view, parsed. */
async function kernelTable(ns: Netns, extra: string[] = []): Promise<CtLine[]> {
  const { stdout } = await ns.exec('conntrack', ['-L', '-o', 'extended', ...extra]);
  return parseConntrackOutput(stdout);
}

function parseConntrackOutput(text: string): CtLine[] {
  const out: CtLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const get = (key: string, nth: number) => f.filter((x) => x.startsWith(`${key}=`))[nth]?.split('=')[1];
    const src0 = get('src', 0);
    const src1 = get('src', 1);
    if (!src0 || !src1) continue;
    out.push({
      proto: Number(f[3]),
      origSrc: src0,
      replySrc: src1,
      origBytes: Number(get('bytes', 0) ?? 0),
      origPackets: Number(get('packets', 0) ?? 0),
      replyBytes: Number(get('bytes', 1) ?? 0),
      replyPackets: Number(get('packets', 1) ?? 0),
    });
  }
  return out;
}

/** What the reducer should report for these entries when `local` are the local addresses. */
function expectedFlows(lines: CtLine[], local: Set<string>): Map<string, [number, number, number, number]> {
  const m = new Map<string, [number, number, number, number]>();
  const add = (k: string, v: [number, number, number, number]) => {
    const o = m.get(k) ?? [0, 0, 0, 0];
    m.set(k, [o[0] + v[0], o[1] + v[1], o[2] + v[2], o[3] + v[3]]);
  };
  for (const l of lines) {
    if (local.has(l.origSrc))
      add(`${l.origSrc} ${l.replySrc} ${l.proto}`, [
        l.origBytes,
        l.origPackets,
        l.replyBytes,
        l.replyPackets,
      ]);
    if (local.has(l.replySrc))
      add(`${l.replySrc} ${l.origSrc} ${l.proto}`, [
        l.replyBytes,
        l.replyPackets,
        l.origBytes,
        l.origPackets,
      ]);
  }
  return m;
}

function flowMap(...ticks: TickOut[]): Map<string, [number, number, number, number]> {
  const m = new Map<string, [number, number, number, number]>();
  for (const t of ticks) {
    for (const f of t.flows) {
      const k = `${f.src} ${f.dst} ${f.proto}`;
      const o = m.get(k) ?? [0, 0, 0, 0];
      m.set(k, [o[0] + f.txBytes, o[1] + f.txPackets, o[2] + f.rxBytes, o[3] + f.rxPackets]);
    }
  }
  return m;
}

const sorted = (m: Map<string, unknown>) => new Map([...m].sort(([a], [b]) => a.localeCompare(b)));

describe.skipIf(!root)('netfilter source on a real conntrack table', () => {
  let pair: Awaited<ReturnType<typeof createPair>>;
  let reader: Reader;
  let local: Set<string>;

  beforeAll(async () => {
    pair = await createPair(210);
    local = new Set([pair.a4, pair.a6]);
    // Short-lived entries end quickly once closed, so later tests can also rely on expiry.
    reader = await Reader.start(pair.a, { local: [...local] });
    await reader.ready();
  });

  afterAll(async () => {
    await reader?.stop().catch(() => undefined);
    await cleanupAll();
  });

  it('counts TCP and UDP over IPv4 and IPv6 exactly as the kernel accounts them', async () => {
    expect((await reader.tick()).baseline).toBe(true);
    const tcp = await startServer(pair.b, 'tcp', '::');
    const udp4 = await startServer(pair.b, 'udp', '0.0.0.0');
    const udp6 = await startServer(pair.b, 'udp', '::');
    const runs = [
      await runClient(pair.a, 'tcp', pair.b4, tcp.port, { send: 10_000, receive: 30_000, count: 3 }),
      await runClient(pair.a, 'tcp', pair.b6, tcp.port, { send: 20_000, receive: 5_000, count: 2 }),
      await runClient(pair.a, 'udp', pair.b4, udp4.port, { send: 1_000, receive: 300, count: 4 }),
      await runClient(pair.a, 'udp', pair.b6, udp6.port, { send: 700, receive: 1_200, count: 2 }),
    ];
    expect(runs.map((r) => r.failed)).toEqual([0, 0, 0, 0]);
    const t = await reader.tick();
    const kernel = await kernelTable(pair.a);
    expect(t.parseErrors).toBe(0);
    expect(t.entries).toBe(kernel.length);
    const got = flowMap(t);
    expect(sorted(got)).toEqual(sorted(expectedFlows(kernel, local)));
    // Payload plus headers: at least what the applications sent and received.
    const v4tcp = got.get(`${pair.a4} ${pair.b4} 6`)!;
    expect(v4tcp[0]).toBeGreaterThanOrEqual(30_000);
    expect(v4tcp[2]).toBeGreaterThanOrEqual(90_000);
    const v6udp = got.get(`${pair.a6} ${pair.b6} 17`)!;
    // UDP: one datagram each way per exchange, 8 + 40 bytes of headers on IPv6.
    expect(v6udp).toEqual([2 * (700 + 48), 2, 2 * (1_200 + 48), 2]);
    // Nothing new: the next tick is empty.
    expect((await reader.tick()).flows).toEqual([]);
    await Promise.all([tcp.stop(), udp4.stop(), udp6.stop()]);
  });

  it('attributes DNATed traffic to the backend (reply source), not the service address', async () => {
    await pair.a.nft(
      [
        'table ip podflow_nat {',
        `  chain out { type nat hook output priority -100; ip daddr 10.96.0.10 tcp dport 80 dnat to ${pair.b4}:8080; }`,
        '}',
      ].join('\n'),
    );
    await addRoute(pair.a, '10.96.0.0/24', pair.b4);
    const srv = await startServer(pair.b, 'tcp', '0.0.0.0', 8080);
    await reader.tick();
    const r = await runClient(pair.a, 'tcp', '10.96.0.10', 80, { send: 4_000, receive: 9_000, count: 2 });
    expect(r.failed).toBe(0);
    const t = await reader.tick();
    const kernel = (await kernelTable(pair.a, ['-d', '10.96.0.10'])).filter((l) => l.origSrc === pair.a4);
    expect(kernel.length).toBe(2);
    expect(kernel.every((l) => l.replySrc === pair.b4)).toBe(true);
    const got = flowMap(t);
    expect([...got.keys()]).toEqual([`${pair.a4} ${pair.b4} 6`]);
    const sum = kernel.reduce((n, l) => n + l.origBytes, 0);
    expect(got.get(`${pair.a4} ${pair.b4} 6`)![0]).toBe(sum);
    await srv.stop();
  });

  it('counts hundreds of connections that end between two reads exactly once (DESTROY events)', async () => {
    const srv = await startServer(pair.b, 'tcp', '0.0.0.0');
    const udp = await startServer(pair.b, 'udp', '0.0.0.0');
    // Start from an empty table (earlier tests' entries linger in TIME_WAIT).
    await pair.a.exec('conntrack', ['-F']);
    await reader.tick();
    // Half of them seen by a read before they end: the event must add only the rest.
    await runClient(pair.a, 'tcp', pair.b4, srv.port, {
      send: 500,
      receive: 1_500,
      count: 100,
      concurrency: 10,
    });
    const seen = await reader.tick();
    await runClient(pair.a, 'tcp', pair.b4, srv.port, {
      send: 800,
      receive: 200,
      count: 200,
      concurrency: 10,
    });
    await runClient(pair.a, 'udp', pair.b4, udp.port, { send: 64, receive: 64, count: 100, concurrency: 10 });
    const before = await kernelTable(pair.a, ['-s', pair.a4]);
    // 300 TCP connections, each its own entry (connect() walks ports sequentially per destination).
    // The 100 UDP clients take random ephemeral ports: two of them may share one and so one entry
    // (its counters then hold both), so fewer than 100 UDP entries is the kernel being right.
    expect(before.filter((e) => e.proto === 6).length).toBeGreaterThanOrEqual(300);
    expect(before.filter((e) => e.proto === 17).length).toBeGreaterThanOrEqual(90);
    // End them all before the next read: the dump never sees the last 300.
    await pair.a.exec('conntrack', ['-D', '-s', pair.a4]).catch(() => undefined);
    expect((await kernelTable(pair.a, ['-s', pair.a4])).length).toBe(0);
    const ticks = [await reader.tick()];
    expect(ticks[0]!.entries).toBe(0);
    // Events travel through the subscriber process: the last ones may come with a later tick.
    const endedSince = () => ticks.at(-1)!.endedEvents - seen.endedEvents;
    for (let i = 0; i < 50 && endedSince() < before.length; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ticks.push(await reader.tick());
    }
    expect(endedSince()).toBe(before.length); // one DESTROY per deleted entry
    expect(ticks.at(-1)!.lostEvents).toBe(0);
    const got = flowMap(seen, ...ticks);
    expect(sorted(got)).toEqual(sorted(expectedFlows(before, local)));
    expect((await reader.tick()).flows).toEqual([]);
    await Promise.all([srv.stop(), udp.stop()]);
  });

  it('tells a reused tuple (a new connection, even with a recycled id) apart and survives counters zeroed underneath', async () => {
    const udp = await startServer(pair.b, 'udp', '0.0.0.0');
    await reader.tick();
    const opts = { send: 2_000, receive: 100, localPort: 40_123 };
    await runClient(pair.a, 'udp', pair.b4, udp.port, opts);
    const first = await kernelTable(pair.a, ['-p', 'udp', '--sport', '40123']);
    const t1 = await reader.tick();
    // Zero the counters (GET_CTRZERO) after the read; then less traffic on the same entry.
    // (conntrack refuses -z with filters: this zeroes every entry; the others do not change.)
    await pair.a.exec('conntrack', ['-L', '-z']);
    await runClient(pair.a, 'udp', pair.b4, udp.port, { ...opts, send: 100 });
    const afterZero = await kernelTable(pair.a, ['-p', 'udp', '--sport', '40123']);
    const t2 = await reader.tick();
    // Same 5-tuple, new connection: delete the entry and send again.
    await pair.a.exec('conntrack', ['-D', '-p', 'udp', '--sport', '40123']);
    const t3 = await reader.tick();
    await runClient(pair.a, 'udp', pair.b4, udp.port, { ...opts, send: 300 });
    const reused = await kernelTable(pair.a, ['-p', 'udp', '--sport', '40123']);
    const t4 = await reader.tick();
    const bytes = (ls: CtLine[]) => ls.reduce((n, l) => n + l.origBytes, 0);
    expect(bytes(first)).toBe(2_028);
    expect(bytes(afterZero)).toBe(128);
    expect(bytes(reused)).toBe(328);
    const tx = (t: TickOut) => t.flows.reduce((n, f) => n + f.txBytes, 0);
    expect([tx(t1), tx(t2), tx(t3), tx(t4)]).toEqual([2_028, 128, 0, 328]);
    await udp.stop();
  });

  it('replays real dump datagrams, bit-flipped and truncated, through the parser without a throw', async () => {
    const srv = await startServer(pair.b, 'tcp', '::');
    await runClient(pair.a, 'tcp', pair.b6, srv.port, { send: 100, receive: 100, count: 5 });
    await runClient(pair.a, 'tcp', pair.b4, srv.port, { send: 100, receive: 100, count: 5 });
    await srv.stop();
    const datagrams = await reader.raw();
    const messages: Buffer[] = [];
    for (const d of datagrams) {
      for (let off = 0; off + 16 <= d.length; ) {
        const len = d.readUInt32LE(off);
        if (d.readUInt16LE(off + 4) === 0x100) messages.push(d.subarray(off, off + len));
        off += (len + 3) & ~3;
      }
    }
    expect(messages.length).toBeGreaterThanOrEqual(10);
    const s = new CtSample();
    for (const m of messages) expect(parseCtMessage(m, 0, m.length, s)).toBe(true);
    let rejected = 0;
    for (let i = 0; i < 20_000; i++) {
      const m = Buffer.from(messages[i % messages.length]!);
      const cut = i % 3 === 0 ? Math.floor(Math.random() * m.length) : m.length;
      for (let f = 0; f < 1 + (i % 5); f++) m[Math.floor(Math.random() * m.length)]! ^= 1 << (i % 8);
      const b = m.subarray(0, cut);
      if (!parseCtMessage(b, 0, b.length, s)) rejected++;
      else expect(`${s.origSrc}${s.replySrc}`.length).toBeGreaterThan(0);
    }
    expect(rejected).toBeGreaterThan(0);
  });
});

describe.skipIf(!root)('netfilter source failure paths', () => {
  afterAll(cleanupAll);

  it('counts lost DESTROY events (ENOBUFS) and carries on', async () => {
    const pair = await createPair(211);
    const reader = await Reader.start(pair.a, { local: [pair.a4], eventsRecvBuffer: 1 });
    try {
      await reader.ready();
      await reader.tick();
      const udp = await startServer(pair.b, 'udp', '0.0.0.0');
      await runClient(pair.a, 'udp', pair.b4, udp.port, {
        send: 32,
        receive: 32,
        count: 1500,
        concurrency: 50,
      });
      // 1500 DESTROY events into a receive buffer of a few KiB while the reader is busy.
      const busy = reader.block(1500);
      await pair.a.exec('conntrack', ['-D', '-s', pair.a4]).catch(() => undefined);
      await busy;
      const t = await reader.tick();
      expect(t.lostEvents).toBeGreaterThan(0);
      expect(t.endedEvents).toBeLessThan(1500);
      // Still reading: new traffic is counted by the next ticks.
      await runClient(pair.a, 'udp', pair.b4, udp.port, { send: 500, receive: 10, count: 1 });
      const next = await reader.tick();
      expect(next.flows.reduce((n, f) => n + f.txBytes, 0)).toBe(528);
    } finally {
      await reader.stop();
    }
  });

  it('turns nf_conntrack_acct on at start, so that new connections carry counters', async () => {
    const ns = await createNetns('acct');
    await ns.trackConnections({ acct: false });
    expect(await ns.readSysctl('net.netfilter.nf_conntrack_acct')).toBe('0');
    const reader = await Reader.start(ns, {});
    try {
      await reader.ready();
      expect(await ns.readSysctl('net.netfilter.nf_conntrack_acct')).toBe('1');
    } finally {
      await reader.stop();
    }
  });

  it('warns once, clearly, when entries carry no byte counters', async () => {
    const ns = await createNetns('nocount');
    await ns.trackConnections({ acct: false });
    const reader = await Reader.start(ns, { conntrackAcct: false });
    try {
      await reader.ready();
      await ns.exec('conntrack', [
        '-I',
        '-p',
        'udp',
        '-s',
        '10.9.0.1',
        '-d',
        '10.9.0.2',
        '--sport',
        '1',
        '--dport',
        '2',
        '-t',
        '60',
      ]);
      const t1 = await reader.tick();
      const t2 = await reader.tick();
      expect([t1.entries, t2.entries]).toEqual([1, 1]);
      expect((t1 as TickOut & { noCounters: number }).noCounters).toBe(1);
      const warnings = reader
        .stderrText()
        .split('\n')
        .filter((l) => l.includes('conntrack entries carry no byte counters'));
      expect(warnings.length).toBe(1);
      expect(warnings[0]).toContain('nf_conntrack_acct');
    } finally {
      await reader.stop();
    }
  });

  it('says "reading conntrack needs root or CAP_NET_ADMIN" without the capability', async () => {
    const ns = await createNetns('noperm');
    await ns.trackConnections();
    const reader = await Reader.start(ns, {}, ['setpriv', '--inh-caps=-all', '--bounding-set=-all']);
    const r = await reader.next<{ error?: string; name?: string }>();
    expect(r).toEqual({ error: 'reading conntrack needs root or CAP_NET_ADMIN', name: 'StartupError' });
    const code = await new Promise<number | null>((resolve) => {
      if (reader.proc.exitCode !== null) resolve(reader.proc.exitCode);
      else reader.proc.on('exit', (c) => resolve(c));
    });
    expect(code).toBe(3);
  });

  it('survives handlers that throw inside netlink socket callbacks', async () => {
    const ns = await createNetns('throw');
    await ns.trackConnections();
    const script = [
      `import { openNetfilterSocket } from ${JSON.stringify(join(repo, 'collector/netfilter/socket.ts'))};`,
      `import { ConntrackDumper } from ${JSON.stringify(join(repo, 'collector/netfilter/dump.ts'))};`,
      `import { buildDumpRequest } from ${JSON.stringify(join(repo, 'collector/netfilter/ctnetlink.ts'))};`,
      'const errors = [];',
      'const sock = openNetfilterSocket({ msgBufferSize: 0, recvBufferSize: 65536 }, {',
      "  onMessage() { throw new Error('boom in onMessage'); },",
      "  onTruncated() { throw new Error('boom'); },",
      '  onError(err) { errors.push(err.message); },',
      '});',
      'sock.send(buildDumpRequest(1, 0), { port: 0 }, () => {});',
      'await new Promise((r) => setTimeout(r, 300));',
      'sock.close();',
      'const d = new ConntrackDumper();',
      "const rejected = await d.dump(() => { throw new Error('boom in visit'); }).then(() => 'resolved', (e) => e.message);",
      "const after = await d.dump(() => {}).then((r) => 'ok ' + r.entries, (e) => 'failed ' + e.message);",
      'd.close();',
      'console.log(JSON.stringify({ errors, rejected, after }));',
    ].join('\n');
    // A table with entries, so that the dump has messages to visit.
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
      execFile(
        'ip',
        [
          'netns',
          'exec',
          ns.name,
          'sh',
          '-c',
          'conntrack -I -p udp -s 10.9.0.1 -d 10.9.0.2 --sport 1 --dport 2 -t 60 >/dev/null 2>&1; exec "$@"',
          'sh',
          process.execPath,
          '--import',
          'tsx',
          '--input-type=module',
          '-e',
          script,
        ],
        { cwd: repo },
        (err, stdout, stderr) =>
          err ? reject(new Error(`child failed: ${err.message} ${stderr}`)) : resolve({ stdout }),
      );
    });
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
      errors: string[];
      rejected: string;
      after: string;
    };
    expect(r.errors).toContain('boom in onMessage');
    expect(r.rejected).toBe('conntrack entry visitor failed');
    expect(r.after).toBe('ok 1');
  });
});
