// The Cilium source end to end against real pinned BPF maps (a private bpffs mount): entries in both
// value layouts → CiliumSource → the shared tracker and reducer → Flow records with exact bytes.
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CiliumSource, type CiliumSourceConfig } from '../collector/cilium/source.js';
import { createReducer } from '../collector/reduce.js';
import { createSource } from '../collector/select-source.js';
import type { ConnSample } from '../collector/source.js';
import { type Bpf, loadBpf } from '../native/index.js';
import { StartupError } from '../shared/errors.js';
import type { Flow } from '../shared/flow.js';
import {
  type BpfMount,
  CT_IN,
  CT_OUT,
  CT_RELATED,
  CT_SERVICE,
  type CtKeySpec,
  createMap,
  ctKey,
  ctValue15,
  ctValue16,
  deleteEntries,
  monoSeconds,
  mountBpffs,
  putEntries,
} from './helpers/bpf.js';
import { requireRoot } from './helpers/netns.js';

const execFileP = promisify(execFile);
const root = requireRoot();

const MAPS = [
  ['cilium_ct4_global', 14],
  ['cilium_ct_any4_global', 14],
  ['cilium_ct6_global', 38],
  ['cilium_ct_any6_global', 38],
] as const;
type MapName = (typeof MAPS)[number][0];
const keySize = (name: MapName) => (name.includes('6') ? 38 : 14);

const LOCAL = new Set(['10.0.1.5', '10.0.1.6', 'fd00::5', 'fd00::6']);
const podIndex = { isLocal: (ip: string) => LOCAL.has(ip) };

interface Entry {
  map: MapName;
  key: CtKeySpec;
  value: Buffer;
}

async function put(dir: string, entries: Entry[]): Promise<void> {
  for (const [name] of MAPS) {
    const mine = entries.filter((e) => e.map === name);
    if (mine.length === 0) continue;
    await putEntries(
      join(dir, name),
      keySize(name),
      56,
      Buffer.concat(mine.flatMap((e) => [ctKey(e.key), e.value])),
    );
  }
}

async function makeMaps(dir: string, maxEntries = 1024): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (const [name, ks] of MAPS) await createMap(join(dir, name), { keySize: ks, valueSize: 56, maxEntries });
}

const sortFlows = (f: Flow[]) =>
  [...f].sort((a, b) => `${a.src} ${a.dst} ${a.proto}`.localeCompare(`${b.src} ${b.dst} ${b.proto}`));

/** Plain copies of the samples one read produces (the source reuses one object). */
async function samples(source: CiliumSource): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  await source.read((s: ConnSample) => {
    out.push({
      family: s.family,
      proto: s.proto,
      src: `${s.origSrc}:${s.origSport}`,
      dst: `${s.origDst}:${s.origDport}`,
      peer: s.replySrc,
      orig: [s.origBytes, s.origPackets],
      reply: [s.replyBytes, s.replyPackets],
      localEnd: s.localEnd,
      hasCounters: s.hasCounters,
    });
  });
  return out.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

const cfg = (dir: string, over: Partial<CiliumSourceConfig> = {}): CiliumSourceConfig => ({
  ciliumBpfPath: dir,
  ciliumLayout: 'auto',
  ciliumClock: 'auto',
  procPath: '/proc',
  ...over,
});

describe.skipIf(!root)('Cilium conntrack source on real BPF maps', () => {
  let mnt: BpfMount;
  let n = 0;
  const open: CiliumSource[] = [];
  const newDir = () => join(mnt.dir, `set${++n}`);
  const source = (dir: string, over: Partial<CiliumSourceConfig> = {}, readMode?: 'batch' | 'each') => {
    const s = new CiliumSource(cfg(dir, over), { readMode });
    open.push(s);
    return s;
  };

  beforeAll(async () => {
    mnt = await mountBpffs();
  });
  afterAll(async () => {
    for (const s of open) await s.close();
    await mnt?.cleanup();
  });

  // Entries shared by the layout tests. Lifetimes are an hour ahead on CLOCK_MONOTONIC (ktime mode).
  const live = () => monoSeconds() + 3600;
  const egressKey: CtKeySpec = {
    src: '10.0.1.5',
    sport: 40000,
    dst: '93.184.216.34',
    dport: 443,
    proto: 6,
    flags: CT_OUT,
  };
  const ingressKey: CtKeySpec = {
    src: '10.0.2.9',
    sport: 50000,
    dst: '10.0.1.6',
    dport: 8080,
    proto: 6,
    flags: CT_IN,
  };
  const udpKey: CtKeySpec = {
    src: '10.0.1.5',
    sport: 5353,
    dst: '10.0.2.9',
    dport: 53,
    proto: 17,
    flags: CT_OUT,
  };
  const icmpKey: CtKeySpec = {
    src: '10.0.1.6',
    sport: 0,
    dst: '10.0.2.9',
    dport: 0,
    proto: 1,
    flags: CT_OUT,
  };
  const v6Key: CtKeySpec = {
    src: 'fd00::5',
    sport: 41000,
    dst: '2001:db8::1',
    dport: 443,
    proto: 6,
    flags: CT_OUT,
  };
  const v6InKey: CtKeySpec = {
    src: 'fd00:1::9',
    sport: 7000,
    dst: 'fd00::6',
    dport: 53,
    proto: 17,
    flags: CT_IN,
  };
  const serviceKey: CtKeySpec = {
    src: '10.0.1.5',
    sport: 40002,
    dst: '10.96.0.10',
    dport: 53,
    proto: 6,
    flags: CT_SERVICE,
  };
  const relatedKey: CtKeySpec = {
    src: '10.0.2.9',
    sport: 0,
    dst: '10.0.1.5',
    dport: 0,
    proto: 6,
    flags: CT_RELATED | CT_IN,
  };

  it('v1.15 layout: OUT/IN, TCP/UDP/ICMP, IPv4/IPv6 → exact flows, then deltas', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const v = (rxb: number, rxp: number, txb: number, txp: number) =>
      ctValue15({ rxBytes: rxb, rxPackets: rxp, txBytes: txb, txPackets: txp, lifetime: live() });
    await put(dir, [
      { map: 'cilium_ct4_global', key: egressKey, value: v(5000, 8, 1000, 10) },
      { map: 'cilium_ct4_global', key: ingressKey, value: v(111, 2, 222, 3) },
      // Service state (backend id where ≤1.15 keeps rx_bytes) and ICMP errors: not connections.
      { map: 'cilium_ct4_global', key: serviceKey, value: v(7, 1, 999, 9) },
      { map: 'cilium_ct4_global', key: relatedKey, value: v(64, 1, 0, 0) },
      { map: 'cilium_ct_any4_global', key: udpKey, value: v(120, 1, 60, 1) },
      { map: 'cilium_ct_any4_global', key: icmpKey, value: v(84, 1, 84, 1) },
      { map: 'cilium_ct6_global', key: v6Key, value: v(3000, 5, 2000, 4) },
      { map: 'cilium_ct_any6_global', key: v6InKey, value: v(90, 1, 180, 1) },
    ]);
    const src = source(dir);
    await src.start();
    expect(await samples(src)).toEqual(
      [
        {
          family: 4,
          proto: 6,
          src: '10.0.1.5:40000',
          dst: '93.184.216.34:443',
          peer: '93.184.216.34',
          orig: [1000, 10],
          reply: [5000, 8],
          localEnd: 'src',
          hasCounters: true,
        },
        {
          family: 4,
          proto: 6,
          src: '10.0.2.9:50000',
          dst: '10.0.1.6:8080',
          peer: '10.0.1.6',
          orig: [111, 2],
          reply: [222, 3],
          localEnd: 'dst',
          hasCounters: true,
        },
        {
          family: 4,
          proto: 17,
          src: '10.0.1.5:5353',
          dst: '10.0.2.9:53',
          peer: '10.0.2.9',
          orig: [60, 1],
          reply: [120, 1],
          localEnd: 'src',
          hasCounters: true,
        },
        {
          family: 4,
          proto: 1,
          src: '10.0.1.6:0',
          dst: '10.0.2.9:0',
          peer: '10.0.2.9',
          orig: [84, 1],
          reply: [84, 1],
          localEnd: 'src',
          hasCounters: true,
        },
        {
          family: 6,
          proto: 6,
          src: 'fd00::5:41000',
          dst: '2001:db8::1:443',
          peer: '2001:db8::1',
          orig: [2000, 4],
          reply: [3000, 5],
          localEnd: 'src',
          hasCounters: true,
        },
        {
          family: 6,
          proto: 17,
          src: 'fd00:1::9:7000',
          dst: 'fd00::6:53',
          peer: 'fd00::6',
          orig: [90, 1],
          reply: [180, 1],
          localEnd: 'dst',
          hasCounters: true,
        },
      ].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    );
    expect(src.currentLayout).toBe('v1.15');
    expect(src.currentClock).toBe('ktime');

    // Through the shared tracker and reducer (counting what existed at start, to see every byte).
    const src2 = source(dir);
    await src2.start();
    const reducer = createReducer({ groupPublicIps: false, countExisting: true }, { podIndex });
    const first = await reducer.tick(src2);
    expect(first.entries).toBe(8); // every map entry seen, service and related included
    expect(sortFlows(first.flows)).toEqual(
      sortFlows([
        {
          src: '10.0.1.5',
          dst: '93.184.216.34',
          proto: 6,
          txBytes: 1000,
          rxBytes: 5000,
          txPackets: 10,
          rxPackets: 8,
        },
        {
          src: '10.0.1.6',
          dst: '10.0.2.9',
          proto: 6,
          txBytes: 222,
          rxBytes: 111,
          txPackets: 3,
          rxPackets: 2,
        },
        {
          src: '10.0.1.5',
          dst: '10.0.2.9',
          proto: 17,
          txBytes: 60,
          rxBytes: 120,
          txPackets: 1,
          rxPackets: 1,
        },
        { src: '10.0.1.6', dst: '10.0.2.9', proto: 1, txBytes: 84, rxBytes: 84, txPackets: 1, rxPackets: 1 },
        {
          src: 'fd00::5',
          dst: '2001:db8::1',
          proto: 6,
          txBytes: 2000,
          rxBytes: 3000,
          txPackets: 4,
          rxPackets: 5,
        },
        {
          src: 'fd00::6',
          dst: 'fd00:1::9',
          proto: 17,
          txBytes: 180,
          rxBytes: 90,
          txPackets: 1,
          rxPackets: 1,
        },
      ]),
    );

    // Counters grow: the next tick reports exactly the growth; an entry that left the map is forgotten.
    await put(dir, [
      { map: 'cilium_ct4_global', key: egressKey, value: v(5500, 10, 1300, 13) },
      { map: 'cilium_ct6_global', key: v6Key, value: v(3000, 5, 2100, 5) },
    ]);
    await deleteEntries(join(dir, 'cilium_ct_any4_global'), 14, ctKey(udpKey));
    const second = await reducer.tick(src2);
    expect(sortFlows(second.flows)).toEqual(
      sortFlows([
        {
          src: '10.0.1.5',
          dst: '93.184.216.34',
          proto: 6,
          txBytes: 300,
          rxBytes: 500,
          txPackets: 3,
          rxPackets: 2,
        },
        {
          src: 'fd00::5',
          dst: '2001:db8::1',
          proto: 6,
          txBytes: 100,
          rxBytes: 0,
          txPackets: 1,
          rxPackets: 0,
        },
      ]),
    );
    expect(second.entries).toBe(7);
    // A new connection on the same tuple (Cilium GC'd the old entry): counted in full.
    await put(dir, [{ map: 'cilium_ct_any4_global', key: udpKey, value: v(40, 1, 20, 1) }]);
    const third = await reducer.tick(src2);
    expect(third.flows).toEqual([
      { src: '10.0.1.5', dst: '10.0.2.9', proto: 17, txBytes: 20, rxBytes: 40, txPackets: 1, rxPackets: 1 },
    ]);
  });

  it('v1.16 layout: one counter per entry, reported in the direction of its entry', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const v = (bytes: number, packets: number, backendId = 0) =>
      ctValue16({ bytes, packets, backendId, lifetime: live() });
    await put(dir, [
      { map: 'cilium_ct4_global', key: egressKey, value: v(6000, 18) },
      { map: 'cilium_ct4_global', key: ingressKey, value: v(333, 5) },
      { map: 'cilium_ct4_global', key: serviceKey, value: v(0, 0, 42) },
      { map: 'cilium_ct_any6_global', key: v6InKey, value: v(270, 2) },
    ]);
    const src = source(dir);
    await src.start();
    const reducer = createReducer({ groupPublicIps: false, countExisting: true }, { podIndex });
    const first = await reducer.tick(src);
    expect(src.currentLayout).toBe('v1.16');
    expect(sortFlows(first.flows)).toEqual(
      sortFlows([
        {
          src: '10.0.1.5',
          dst: '93.184.216.34',
          proto: 6,
          txBytes: 6000,
          rxBytes: 0,
          txPackets: 18,
          rxPackets: 0,
        },
        { src: '10.0.1.6', dst: '10.0.2.9', proto: 6, txBytes: 0, rxBytes: 333, txPackets: 0, rxPackets: 5 },
        { src: 'fd00::6', dst: 'fd00:1::9', proto: 17, txBytes: 0, rxBytes: 270, txPackets: 0, rxPackets: 2 },
      ]),
    );
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(6500, 20) }]);
    expect((await reducer.tick(src)).flows).toEqual([
      {
        src: '10.0.1.5',
        dst: '93.184.216.34',
        proto: 6,
        txBytes: 500,
        rxBytes: 0,
        txPackets: 2,
        rxPackets: 0,
      },
    ]);
    // Configured layout wins over detection: read as ≤1.15, the same bytes land elsewhere.
    const forced = source(dir, { ciliumLayout: 'v1.15' });
    await forced.start();
    const s = (await samples(forced)).find((x) => x.src === '10.0.1.5:40000');
    expect(s).toMatchObject({ orig: [6500, 20], reply: [0, 0] });
  });

  it('v1.16 without conntrack accounting: no counters, one warning; detected once counters appear', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const v = (bytes: number, packets: number) => ctValue16({ bytes, packets, lifetime: live() });
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(0, 0) }]);
    const logs: string[] = [];
    const { pino } = await import('pino');
    const log = pino({ level: 'info' }, { write: (line: string) => logs.push(line) });
    const src = new CiliumSource(cfg(dir), { log });
    open.push(src);
    await src.start();
    const reducer = createReducer({ groupPublicIps: false }, { podIndex });
    const first = await reducer.tick(src);
    expect([first.noCounters, src.currentLayout]).toEqual([1, undefined]);
    // Accounting switched on in the agent: counters appear. Detection is retried every 12 reads.
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(4000, 9) }]);
    const flows = [];
    for (let i = 0; i < 13; i++) flows.push(...(await reducer.tick(src)).flows);
    expect(src.currentLayout).toBe('v1.16');
    expect(flows).toEqual([
      {
        src: '10.0.1.5',
        dst: '93.184.216.34',
        proto: 6,
        txBytes: 4000,
        rxBytes: 0,
        txPackets: 9,
        rxPackets: 0,
      },
    ]);
    expect(logs.filter((l) => l.includes('carry no traffic counters'))).toHaveLength(1);
  });

  it('pod to pod on one node: OUT and IN entries are two samples, each owned by its local end', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const out: CtKeySpec = {
      src: '10.0.1.5',
      sport: 40001,
      dst: '10.0.1.6',
      dport: 80,
      proto: 6,
      flags: CT_OUT,
    };
    const inn: CtKeySpec = { ...out, flags: CT_IN };
    // A sent 300 bytes and received 700; B's entry sees the same connection from its side.
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: out,
        value: ctValue15({ txBytes: 300, txPackets: 3, rxBytes: 700, rxPackets: 4, lifetime: live() }),
      },
      {
        map: 'cilium_ct4_global',
        key: inn,
        value: ctValue15({ rxBytes: 300, rxPackets: 3, txBytes: 700, txPackets: 4, lifetime: live() }),
      },
    ]);
    const src = source(dir);
    await src.start();
    const got = await samples(src);
    expect(got).toHaveLength(2);
    expect(got).toContainEqual(
      expect.objectContaining({ src: '10.0.1.5:40001', orig: [300, 3], reply: [700, 4], localEnd: 'src' }),
    );
    expect(got).toContainEqual(
      expect.objectContaining({ src: '10.0.1.5:40001', orig: [300, 3], reply: [700, 4], localEnd: 'dst' }),
    );
  });

  // The shared reducer reports a sample that carries `localEnd` only from that end, so this
  // pod-to-pod connection (an OUT and an IN entry) is counted once per end, never twice.
  it('pod to pod on one node: each end reports the connection once', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const out: CtKeySpec = {
      src: '10.0.1.5',
      sport: 40001,
      dst: '10.0.1.6',
      dport: 80,
      proto: 6,
      flags: CT_OUT,
    };
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: out,
        value: ctValue15({ txBytes: 300, txPackets: 3, rxBytes: 700, rxPackets: 4, lifetime: live() }),
      },
      {
        map: 'cilium_ct4_global',
        key: { ...out, flags: CT_IN },
        value: ctValue15({ rxBytes: 300, rxPackets: 3, txBytes: 700, txPackets: 4, lifetime: live() }),
      },
    ]);
    const src = source(dir);
    await src.start();
    const reducer = createReducer({ groupPublicIps: false, countExisting: true }, { podIndex });
    expect(sortFlows((await reducer.tick(src)).flows)).toEqual(
      sortFlows([
        {
          src: '10.0.1.5',
          dst: '10.0.1.6',
          proto: 6,
          txBytes: 300,
          rxBytes: 700,
          txPackets: 3,
          rxPackets: 4,
        },
        {
          src: '10.0.1.6',
          dst: '10.0.1.5',
          proto: 6,
          txBytes: 700,
          rxBytes: 300,
          txPackets: 4,
          rxPackets: 3,
        },
      ]),
    );
  });

  it('expired entries: final counters once, then left out; a revived entry counts only its growth', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const v = (txb: number, lifetime: number) =>
      ctValue15({ txBytes: txb, txPackets: 1, rxBytes: 10, rxPackets: 1, lifetime });
    const flow = (tx: number) => [
      {
        src: '10.0.1.5',
        dst: '93.184.216.34',
        proto: 6,
        txBytes: tx,
        rxBytes: 0,
        txPackets: 0,
        rxPackets: 0,
      },
    ];
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(1000, live()) }]);
    const src = source(dir, { ciliumClock: 'ktime' });
    await src.start();
    const reducer = createReducer({ groupPublicIps: false }, { podIndex });
    expect((await reducer.tick(src)).baseline).toBe(true);
    // Traffic after the baseline, then the entry expires (lifetime in the past, GC not run yet).
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(1200, monoSeconds() - 5) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(200));
    expect((await reducer.tick(src)).flows).toEqual([]);
    // The source itself: an expired entry is handed on once, then no more.
    const probe = source(dir, { ciliumClock: 'ktime' });
    await probe.start();
    expect(await samples(probe)).toHaveLength(1);
    expect(await samples(probe)).toHaveLength(0);
    // The tuple is used again: Cilium revives the entry with its old counters. Only the growth
    // since it expired is new, however long the tracker remembers the old connection.
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(2500, live()) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(1300));
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(2550, live()) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(50));
    // It expires again (final growth reported), then is revived a second time.
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(2600, monoSeconds() - 5) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(50));
    expect((await reducer.tick(src)).flows).toEqual([]);
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(2610, live()) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(10));
    // Cilium collected it and a new connection took the tuple: counters start over, counted in full.
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(70, live()) }]);
    expect((await reducer.tick(src)).flows).toEqual([
      {
        src: '10.0.1.5',
        dst: '93.184.216.34',
        proto: 6,
        txBytes: 70,
        rxBytes: 10,
        txPackets: 1,
        rxPackets: 1,
      },
    ]);
    await put(dir, [{ map: 'cilium_ct4_global', key: egressKey, value: v(90, live()) }]);
    expect((await reducer.tick(src)).flows).toEqual(flow(20));
  });

  it('detects the jiffies clock from lifetimes (HZ from the kernel)', async () => {
    const dir = newDir();
    await makeMaps(dir);
    const { readTimerListJiffies, detectHz } = await import('../collector/cilium/clock.js');
    const hz = (await detectHz('/proc'))!.hz;
    const jiffies = readTimerListJiffies('/proc')!;
    const nowUnits = Math.floor(jiffies / 256);
    const ahead = Math.floor((3600 * hz) / 256);
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: egressKey,
        value: ctValue15({ txBytes: 1, txPackets: 1, rxBytes: 1, rxPackets: 1, lifetime: nowUnits + ahead }),
      },
      // Expired by 100 s in jiffies units: left out after its one final report.
      {
        map: 'cilium_ct4_global',
        key: ingressKey,
        value: ctValue15({
          txBytes: 1,
          txPackets: 1,
          rxBytes: 1,
          rxPackets: 1,
          lifetime: nowUnits - Math.ceil((100 * hz) / 256),
        }),
      },
    ]);
    const src = source(dir);
    await src.start();
    expect(await samples(src)).toHaveLength(2);
    expect(src.currentClock).toBe('jiffies');
    const third = await samples(src);
    expect(third.map((s) => s.src)).toEqual(['10.0.1.5:40000']);
  });

  it('batch and per-key reads give identical samples', async () => {
    const dir = newDir();
    await makeMaps(dir, 20000);
    const entries: Entry[] = [];
    for (let i = 0; i < 9000; i++) {
      entries.push({
        map: i % 2 ? 'cilium_ct4_global' : 'cilium_ct6_global',
        key: {
          src: i % 2 ? `10.0.${i >> 8}.${i & 255}` : `fd00::${i.toString(16)}`,
          sport: 1024 + i,
          dst: i % 2 ? '10.9.9.9' : 'fd00::99',
          dport: 443,
          proto: 6,
          flags: i % 3 === 0 ? CT_IN : CT_OUT,
        },
        value: ctValue15({
          txBytes: i * 3,
          txPackets: i,
          rxBytes: i * 5,
          rxPackets: i + 1,
          lifetime: live(),
        }),
      });
    }
    await put(dir, entries);
    const batch = source(dir, {}, 'batch');
    const each = source(dir, {}, 'each');
    await batch.start();
    await each.start();
    const a = await samples(batch);
    const b = await samples(each);
    expect(a).toHaveLength(9000);
    expect(b).toEqual(a);
  });

  it('falls back to the per-key walk when the kernel refuses batch lookups (EINVAL)', async () => {
    const dir = newDir();
    await makeMaps(dir);
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: egressKey,
        value: ctValue15({ txBytes: 10, txPackets: 1, rxBytes: 20, rxPackets: 2, lifetime: live() }),
      },
      {
        map: 'cilium_ct_any6_global',
        key: v6InKey,
        value: ctValue15({ txBytes: 30, txPackets: 3, rxBytes: 40, rxPackets: 4, lifetime: live() }),
      },
    ]);
    // The real addon, except that batch lookups fail the way a pre-5.6 kernel makes them fail.
    const real = loadBpf();
    const modes: string[] = [];
    const oldKernel: Bpf = {
      ...real,
      readChunk(fd, ks, vs, keys, values, cursor, mode) {
        modes.push(mode);
        if (mode === 'batch')
          throw Object.assign(new Error('bpf(BPF_MAP_LOOKUP_BATCH): Invalid argument'), { code: 'EINVAL' });
        return real.readChunk(fd, ks, vs, keys, values, cursor, mode);
      },
    };
    const logs: string[] = [];
    const { pino } = await import('pino');
    const log = pino({ level: 'info' }, { write: (line: string) => logs.push(line) });
    const fallback = new CiliumSource(cfg(dir), { bpf: oldKernel, log });
    open.push(fallback);
    await fallback.start();
    const reference = source(dir, {}, 'batch');
    await reference.start();
    expect(await samples(fallback)).toEqual(await samples(reference));
    // Logged once per map (each map keeps its own read mode).
    expect(logs.filter((l) => l.includes('batch lookup not supported here')).length).toBe(4);
    const before = modes.length;
    await samples(fallback);
    expect(modes.slice(before).every((m) => m === 'each')).toBe(true); // the switch sticks
  });

  it('a map replaced by Cilium (new map id at the same pin) is reopened on the next tick', async () => {
    const dir = newDir();
    await makeMaps(dir);
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: egressKey,
        value: ctValue15({ txBytes: 100, txPackets: 1, rxBytes: 200, rxPackets: 2, lifetime: live() }),
      },
    ]);
    const src = source(dir);
    await src.start();
    expect((await samples(src)).map((s) => s.src)).toEqual(['10.0.1.5:40000']);
    // Cilium restarts: the pin disappears for a moment (the read goes on without it), then a new
    // map is pinned with other entries.
    unlinkSync(join(dir, 'cilium_ct4_global'));
    const gone = await src.read(() => {});
    expect(gone).toMatchObject({ entries: 0, interrupted: true });
    await createMap(join(dir, 'cilium_ct4_global'), { keySize: 14, valueSize: 56, maxEntries: 1024 });
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: ingressKey,
        value: ctValue15({ txBytes: 5, txPackets: 1, rxBytes: 6, rxPackets: 1, lifetime: live() }),
      },
    ]);
    expect((await samples(src)).map((s) => s.src)).toEqual(['10.0.2.9:50000']);
    // Replaced without a gap (rename over the pin is not possible on bpffs: unlink + pin).
    unlinkSync(join(dir, 'cilium_ct4_global'));
    await createMap(join(dir, 'cilium_ct4_global'), { keySize: 14, valueSize: 56, maxEntries: 1024 });
    await put(dir, [
      {
        map: 'cilium_ct4_global',
        key: udpKey,
        value: ctValue15({ txBytes: 5, txPackets: 1, rxBytes: 6, rxPackets: 1, lifetime: live() }),
      },
    ]);
    expect((await samples(src)).map((s) => s.src)).toEqual(['10.0.1.5:5353']);
  });

  it('wrong key or value size: one clear error naming the map and the sizes', async () => {
    const dir = newDir();
    mkdirSync(dir);
    await createMap(join(dir, 'cilium_ct4_global'), { keySize: 16, valueSize: 56, maxEntries: 64 });
    const src = source(dir);
    const err = await src.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartupError);
    expect((err as Error).message).toBe(
      `--source cilium: ${join(dir, 'cilium_ct4_global')}: key size 16 and value size 56 bytes, expected 14 and 56 (Cilium's conntrack tuple and ct_entry): not a Cilium conntrack map, or a Cilium version podflow does not know`,
    );
    // The same problem appearing while running (map re-created with another layout) fails the tick.
    const dir2 = newDir();
    await makeMaps(dir2);
    const running = source(dir2);
    await running.start();
    unlinkSync(join(dir2, 'cilium_ct6_global'));
    await createMap(join(dir2, 'cilium_ct6_global'), { keySize: 38, valueSize: 64, maxEntries: 64 });
    await expect(running.read(() => {})).rejects.toThrow(
      /cilium_ct6_global: key size 38 and value size 64 bytes/,
    );
  });

  it('no maps: a clear start-up error; --source auto picks Cilium when its maps are readable', async () => {
    const dir = newDir();
    mkdirSync(dir);
    await expect(source(dir).start()).rejects.toThrow(
      new StartupError(
        `--source cilium: no Cilium conntrack map under ${dir} (cilium_ct4_global, cilium_ct_any4_global, cilium_ct6_global, cilium_ct_any6_global): is Cilium running on this node, and the host's /sys/fs/bpf mounted at --cilium-bpf-path?`,
      ),
    );
    // (The fallback to netfilter runs the real netfilter source: see test/cilium-collector.test.ts.)
    const logs: string[] = [];
    const { pino } = await import('pino');
    const log = pino({ level: 'info' }, { write: (line: string) => logs.push(line) });
    const withMaps = newDir();
    await makeMaps(withMaps);
    const auto = createSource(
      {
        procPath: '/proc',
        conntrackAcct: false,
        ciliumLayout: 'auto',
        ciliumClock: 'auto',
        source: 'auto',
        ciliumBpfPath: withMaps,
      },
      log,
    );
    expect(auto.name).toBe('netfilter'); // nothing chosen before start()
    await auto.start();
    try {
      expect(auto.name).toBe('cilium');
      expect((await auto.read(() => {})).entries).toBe(0);
      expect(logs.join('')).toContain('--source auto: Cilium conntrack maps found and readable');
    } finally {
      await auto.close();
    }
  });

  it('permission denied: one clear start-up line', async () => {
    const dir = newDir();
    await makeMaps(dir);
    chmodSync(mnt.dir, 0o755);
    chmodSync(dir, 0o755);
    const script = `import { CiliumSource } from './collector/cilium/source.ts';
const s = new CiliumSource({ ciliumBpfPath: ${JSON.stringify(dir)}, ciliumLayout: 'auto', ciliumClock: 'auto', procPath: '/proc' });
try { await s.start(); console.log('started'); } catch (e) { process.stderr.write(e.name + ': ' + e.message + '\\n'); process.exitCode = 1; }`;
    const r = await execFileP(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        '--inh-caps=-all',
        '--bounding-set=-all',
        '--',
        process.execPath,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
      ],
      { cwd: join(import.meta.dirname, '..') },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([
      `StartupError: --source cilium: permission denied opening ${join(dir, 'cilium_ct4_global')} (EACCES): the collector needs to run as root with CAP_BPF (or CAP_SYS_ADMIN) and the host's /sys/fs/bpf mounted at --cilium-bpf-path (${dir})`,
    ]);
  });
});
