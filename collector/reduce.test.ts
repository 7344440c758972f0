import { describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { seededInt } from '../test/helpers/random.js';
import { createReducer } from './reduce.js';
import type { ConnSample, ConntrackSource, ReadStats } from './source.js';

function sample(
  origSrc: string,
  origDst: string,
  replySrc: string,
  c: [number, number, number, number],
  id = 1,
  proto = 6,
): ConnSample {
  return {
    family: origSrc.includes(':') ? 6 : 4,
    proto,
    zone: 0,
    id,
    origSrc,
    origDst,
    origSport: 40000 + id,
    origDport: 80,
    replySrc,
    origBytes: c[0],
    origPackets: c[1],
    replyBytes: c[2],
    replyPackets: c[3],
    hasCounters: true,
  };
}

/** A source that replays scripted reads; a read given as an Error fails. */
class ScriptedSource implements ConntrackSource {
  readonly name = 'netfilter' as const;
  reads: (ConnSample[] | Error)[] = [];
  ended: ConnSample[][] = [];
  async start() {}
  async close() {}
  async read(visit: (s: ConnSample) => void): Promise<ReadStats> {
    const r = this.reads.shift() ?? [];
    if (r instanceof Error) throw r;
    for (const s of r) visit(s);
    return { entries: r.length, parseErrors: 0 };
  }
  drainEnded(visit: (s: ConnSample) => void): void {
    for (const s of this.ended.shift() ?? []) visit(s);
  }
}

const sortFlows = (f: Flow[]) => [...f].sort((a, b) => `${a.src}${a.dst}`.localeCompare(`${b.src}${b.dst}`));

function setup(local: string[], groupPublicIps = false) {
  const set = new Set(local);
  const source = new ScriptedSource();
  const reducer = createReducer({ groupPublicIps }, { podIndex: { isLocal: (ip) => set.has(ip) } });
  return { source, reducer };
}

describe('createReducer', () => {
  it('outbound: tx = orig, rx = reply; DNAT peer = reply source (the backend)', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    source.reads = [[], [sample('10.1.0.5', '10.96.0.10', '10.2.0.9', [100, 2, 300, 3])]];
    expect((await reducer.tick(source)).baseline).toBe(true);
    const r = await reducer.tick(source);
    expect(r.flows).toEqual([
      { src: '10.1.0.5', dst: '10.2.0.9', proto: 6, txBytes: 100, txPackets: 2, rxBytes: 300, rxPackets: 3 },
    ]);
    expect(r.entries).toBe(1);
  });

  it('inbound: the local endpoint is the reply source, tx = reply, rx = orig', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    source.reads = [[], [sample('192.0.2.50', '10.1.0.5', '10.1.0.5', [40, 1, 900, 2])]];
    await reducer.tick(source);
    expect((await reducer.tick(source)).flows).toEqual([
      { src: '10.1.0.5', dst: '192.0.2.50', proto: 6, txBytes: 900, txPackets: 2, rxBytes: 40, rxPackets: 1 },
    ]);
  });

  it('both local: one flow per side, and tx summed over all flows counts each byte once', async () => {
    const { source, reducer } = setup(['10.1.0.5', '10.1.0.6']);
    source.reads = [[], [sample('10.1.0.5', '10.96.0.1', '10.1.0.6', [100, 1, 250, 1])]];
    await reducer.tick(source);
    const { flows } = await reducer.tick(source);
    expect(sortFlows(flows)).toEqual([
      { src: '10.1.0.5', dst: '10.1.0.6', proto: 6, txBytes: 100, txPackets: 1, rxBytes: 250, rxPackets: 1 },
      { src: '10.1.0.6', dst: '10.1.0.5', proto: 6, txBytes: 250, txPackets: 1, rxBytes: 100, rxPackets: 1 },
    ]);
    expect(flows.reduce((n, f) => n + f.txBytes, 0)).toBe(350);
  });

  it('across two collectors (pod to pod on two nodes) tx sums to the bytes once', async () => {
    const a = setup(['10.1.0.5']);
    const b = setup(['10.2.0.9']);
    const conn = sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [100, 1, 250, 1]);
    a.source.reads = [[], [conn]];
    b.source.reads = [[], [conn]];
    await a.reducer.tick(a.source);
    await b.reducer.tick(b.source);
    const flows = [...(await a.reducer.tick(a.source)).flows, ...(await b.reducer.tick(b.source)).flows];
    expect(flows.reduce((n, f) => n + f.txBytes, 0)).toBe(350);
    expect(flows.reduce((n, f) => n + f.rxBytes, 0)).toBe(350);
  });

  it('honours localEnd: per-end entries (Cilium OUT/IN) are each reported from their end only', async () => {
    const { source, reducer } = setup(['10.1.0.5', '10.1.0.6']);
    const base = sample('10.1.0.5', '10.1.0.6', '10.1.0.6', [300, 3, 700, 4]);
    source.reads = [
      [],
      [
        { ...base, localEnd: 'src' },
        { ...base, id: 2, origSport: 40002, localEnd: 'dst' },
      ],
    ];
    await reducer.tick(source);
    const { flows } = await reducer.tick(source);
    expect(sortFlows(flows)).toEqual([
      { src: '10.1.0.5', dst: '10.1.0.6', proto: 6, txBytes: 300, txPackets: 3, rxBytes: 700, rxPackets: 4 },
      { src: '10.1.0.6', dst: '10.1.0.5', proto: 6, txBytes: 700, txPackets: 4, rxBytes: 300, rxPackets: 3 },
    ]);
  });

  it('ignores connections with no local end and groups by (local, peer, proto)', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    source.reads = [
      [],
      [
        sample('10.9.0.1', '10.9.0.2', '10.9.0.2', [1, 1, 1, 1], 1),
        sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [10, 1, 20, 1], 2),
        sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [5, 1, 7, 1], 3),
        sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [3, 1, 4, 1], 4, 17),
      ],
    ];
    await reducer.tick(source);
    expect(sortFlows((await reducer.tick(source)).flows)).toEqual([
      { src: '10.1.0.5', dst: '10.2.0.9', proto: 6, txBytes: 15, txPackets: 2, rxBytes: 27, rxPackets: 2 },
      { src: '10.1.0.5', dst: '10.2.0.9', proto: 17, txBytes: 3, txPackets: 1, rxBytes: 4, rxPackets: 1 },
    ]);
  });

  it('group-public-ips maps public peers to 0.0.0.0 / :: and keeps private ones', async () => {
    const { source, reducer } = setup(['10.1.0.5', 'fd00::5'], true);
    source.reads = [
      [],
      [
        sample('10.1.0.5', '8.8.8.8', '8.8.8.8', [1, 1, 1, 1], 1),
        sample('10.1.0.5', '1.1.1.1', '1.1.1.1', [2, 1, 2, 1], 2),
        sample('10.1.0.5', '10.3.0.1', '10.3.0.1', [4, 1, 4, 1], 3),
        sample('fd00::5', '2a00:1450::1', '2a00:1450::1', [8, 1, 8, 1], 4),
      ],
    ];
    await reducer.tick(source);
    const byDst = Object.fromEntries((await reducer.tick(source)).flows.map((f) => [f.dst, f.txBytes]));
    expect(byDst).toEqual({ '0.0.0.0': 3, '10.3.0.1': 4, '::': 8 });
  });

  it('a failed read loses nothing: what was counted comes with the next tick', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    source.reads = [
      [],
      [sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [10, 1, 10, 1])],
      new Error('socket gone'),
      [sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [15, 2, 10, 1])],
    ];
    source.ended = [[], [], [], []];
    await reducer.tick(source);
    expect((await reducer.tick(source)).flows[0]?.txBytes).toBe(10);
    await expect(reducer.tick(source)).rejects.toThrow('reading conntrack');
    expect((await reducer.tick(source)).flows[0]?.txBytes).toBe(5);
  });

  it('counts connections that ended between reads from their DESTROY', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    source.reads = [[], []];
    source.ended = [[], [sample('10.1.0.5', '10.2.0.9', '10.2.0.9', [70, 3, 80, 2], 9)]];
    await reducer.tick(source);
    expect((await reducer.tick(source)).flows).toEqual([
      { src: '10.1.0.5', dst: '10.2.0.9', proto: 6, txBytes: 70, txPackets: 3, rxBytes: 80, rxPackets: 2 },
    ]);
  });

  it('a connection idle long enough for its series to be dropped counts into the right series again', async () => {
    const { source, reducer } = setup(['10.1.0.5']);
    const a = (b: number) => sample('10.1.0.5', '10.2.0.1', '10.2.0.1', [b, 1, 0, 0], 1);
    const b = (b: number) => sample('10.1.0.5', '10.2.0.2', '10.2.0.2', [b, 1, 0, 0], 2);
    const c = (b: number) => sample('10.1.0.5', '10.2.0.3', '10.2.0.3', [b, 1, 0, 0], 3);
    // a grows once, then stays idle while b and then c (new series, reusing a's dropped index) grow.
    source.reads = [
      [a(0), b(0)],
      [a(10), b(0)],
      [a(10), b(5)],
      [a(10), b(6)],
      [a(10), b(7)],
    ];
    source.reads.push([a(10), b(8), c(1)], [a(10), b(9), c(2)], [a(30), b(9), c(3)]);
    const got: Flow[][] = [];
    for (let i = 0; i < 8; i++) got.push((await reducer.tick(source)).flows);
    expect(got[1]).toEqual([
      { src: '10.1.0.5', dst: '10.2.0.1', proto: 6, txBytes: 10, txPackets: 0, rxBytes: 0, rxPackets: 0 },
    ]);
    expect(sortFlows(got[7]!).map((f) => [f.dst, f.txBytes])).toEqual([
      ['10.2.0.1', 20],
      ['10.2.0.3', 1],
    ]);
  });

  it('follows a connection whose local end changes between ticks into the right series', async () => {
    const local = new Set(['10.1.0.5']);
    const source = new ScriptedSource();
    const reducer = createReducer(
      { groupPublicIps: false },
      { podIndex: { isLocal: (ip) => local.has(ip) } },
    );
    const conn = (n: number) => sample('10.1.0.5', '10.1.0.9', '10.1.0.9', [10 * n, n, 100 * n, n], 1);
    source.reads = [[conn(0)], [conn(1)], [conn(2)], [conn(3)], [conn(4)]];
    const tick = async () =>
      sortFlows((await reducer.tick(source)).flows).map((f) => [f.src, f.dst, f.txBytes, f.rxBytes]);
    await tick(); // baseline
    expect(await tick()).toEqual([['10.1.0.5', '10.1.0.9', 10, 100]]);
    local.add('10.1.0.9'); // the peer turns out to be a pod of this node: counted from both ends
    expect(await tick()).toEqual([
      ['10.1.0.5', '10.1.0.9', 10, 100],
      ['10.1.0.9', '10.1.0.5', 100, 10],
    ]);
    local.delete('10.1.0.5'); // the opener left: only the reply end is local
    expect(await tick()).toEqual([['10.1.0.9', '10.1.0.5', 100, 10]]);
    local.add('10.1.0.5');
    local.delete('10.1.0.9'); // and back to the opener's end alone
    expect(await tick()).toEqual([['10.1.0.5', '10.1.0.9', 10, 100]]);
  });

  it('sums what a plain per-key model sums, through many series, drops and reuse', async () => {
    const local = ['10.1.0.1', '10.1.0.2', 'fd00::1'];
    const { source, reducer } = setup(local);
    const rnd = seededInt(7);
    const conns = Array.from({ length: 3000 }, (_, i) => {
      const l = local[i % 3]!;
      const peer = l.includes(':') ? `fd00:9::${(rnd(400) + 1).toString(16)}` : `10.9.${rnd(4)}.${rnd(250)}`;
      const both = i % 97 === 0;
      const dst = both ? local[(i + 1) % 3 === 2 ? 0 : (i + 1) % 3]! : peer;
      return {
        l,
        dst: l.includes(':') === dst.includes(':') ? dst : peer,
        id: i + 1,
        proto: i % 5 === 0 ? 17 : 6,
        c: [0, 0, 0, 0] as [number, number, number, number],
      };
    });
    const want = new Map<string, number>();
    let got = new Map<string, number>();
    source.reads.push(conns.map((k) => sample(k.l, k.dst, k.dst, [...k.c], k.id, k.proto)));
    await reducer.tick(source);
    for (let tick = 0; tick < 30; tick++) {
      // Some ticks grow many connections, others few: series go idle, are dropped and come back.
      const share = tick % 7 === 3 ? 1 : 20;
      for (const k of conns) {
        if (rnd(share) !== 0) continue;
        const d = [rnd(1000) + 1, 1, rnd(1000), 1];
        for (let j = 0; j < 4; j++) k.c[j]! += d[j]!;
        const key = (src: string, peer: string) => `${src} ${peer} ${k.proto}`;
        const add = (kk: string, v: number) => want.set(kk, (want.get(kk) ?? 0) + v);
        add(key(k.l, k.dst), d[0]!);
        if (local.includes(k.dst)) add(key(k.dst, k.l), d[2]!);
      }
      source.reads.push(conns.map((k) => sample(k.l, k.dst, k.dst, [...k.c], k.id, k.proto)));
      for (const f of (await reducer.tick(source)).flows) {
        const kk = `${f.src} ${f.dst} ${f.proto}`;
        got.set(kk, (got.get(kk) ?? 0) + f.txBytes);
      }
    }
    got = new Map([...got].filter(([, v]) => v !== 0));
    expect(new Map([...want].filter(([, v]) => v !== 0))).toEqual(got);
    expect(got.size).toBeGreaterThan(1000);
  });

  it('names a connection’s peer when it is first counted, and keeps the name when public peers are grouped', async () => {
    const asked: string[] = [];
    const names = {
      nameOf(ip: string, client: string) {
        asked.push(`${client}>${ip}`);
        return ip === '203.0.113.5' || ip === '203.0.113.6'
          ? 'api.example.com'
          : ip === '198.51.100.9'
            ? 'cdn.example.net'
            : '';
      },
    };
    const source = new ScriptedSource();
    const reducer = createReducer(
      { groupPublicIps: true },
      { podIndex: { isLocal: (ip) => ip === '10.0.0.1' }, names },
    );
    source.reads = [
      [],
      [
        sample('10.0.0.1', '203.0.113.5', '203.0.113.5', [100, 1, 200, 2], 1),
        sample('10.0.0.1', '203.0.113.6', '203.0.113.6', [10, 1, 20, 1], 2),
        sample('10.0.0.1', '198.51.100.9', '198.51.100.9', [5, 1, 5, 1], 3),
        sample('10.0.0.1', '192.0.2.1', '192.0.2.1', [1, 1, 1, 1], 4),
      ],
      [sample('10.0.0.1', '203.0.113.5', '203.0.113.5', [150, 2, 250, 3], 1)],
    ];
    await reducer.tick(source);
    const r = await reducer.tick(source);
    const byName = Object.fromEntries(r.flows.map((f) => [f.dstName ?? '', [f.dst, f.txBytes]]));
    expect(byName).toEqual({
      'api.example.com': ['0.0.0.0', 110],
      'cdn.example.net': ['0.0.0.0', 5],
      '': ['0.0.0.0', 1],
    });
    expect(asked).toEqual([
      '10.0.0.1>203.0.113.5',
      '10.0.0.1>203.0.113.6',
      '10.0.0.1>198.51.100.9',
      '10.0.0.1>192.0.2.1',
    ]);
    // The next tick: the connection's series is cached, the name not asked again.
    const r2 = await reducer.tick(source);
    expect(r2.flows).toEqual([
      {
        src: '10.0.0.1',
        dst: '0.0.0.0',
        proto: 6,
        txBytes: 50,
        txPackets: 1,
        rxBytes: 50,
        rxPackets: 1,
        dstName: 'api.example.com',
      },
    ]);
    expect(asked).toHaveLength(4);
  });
});
