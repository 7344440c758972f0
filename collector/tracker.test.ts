import { describe, expect, it } from 'vitest';
import { conn as connSample } from '../test/fixtures/flows.js';
import { seededInt } from '../test/helpers/random.js';
import type { ConnSample } from './source.js';
import { type TrackedConn, Tracker } from './tracker.js';

function conn(
  id: number,
  sport: number,
  bytes: [number, number],
  opts: Partial<ConnSample> = {},
): ConnSample {
  return connSample({
    id,
    origSport: sport,
    origBytes: bytes[0],
    origPackets: bytes[0] > 0 ? 1 : 0,
    replyBytes: bytes[1],
    replyPackets: bytes[1] > 0 ? 1 : 0,
    ...opts,
  });
}

/** The same connection with a numeric identity, as the netfilter source provides it. */
const keyed = (c: ConnSample): ConnSample => ({ ...c, key: (c.id * 65536 + c.origSport) >>> 0, key2: c.id });

function setup(countExisting = false) {
  const deltas: [number, number][] = [];
  const t = new Tracker((_c: TrackedConn, ob, _op, rb) => deltas.push([ob, rb]), { countExisting });
  const read = (samples: ConnSample[], ended: ConnSample[] = [], complete = true) => {
    deltas.length = 0;
    t.begin();
    for (const s of samples) t.visit(s);
    for (const s of ended) t.visitEnded(s);
    t.end(complete);
    return [...deltas];
  };
  return { t, read };
}

for (const [name, wrap] of [
  ['string keys', (c: ConnSample) => c],
  ['numeric keys', keyed],
] as const) {
  describe(`Tracker (${name})`, () => {
    it('takes the first read as a baseline, then counts growth only', () => {
      const { read } = setup();
      expect(read([wrap(conn(1, 1000, [500, 700]))])).toEqual([]);
      expect(read([wrap(conn(1, 1000, [600, 900]))])).toEqual([[100, 200]]);
      expect(read([wrap(conn(1, 1000, [600, 900]))])).toEqual([]);
    });

    it('counts new connections in full after the baseline', () => {
      const { read } = setup();
      read([]);
      expect(read([wrap(conn(2, 1001, [10, 20]))])).toEqual([[10, 20]]);
    });

    it('countExisting counts the first read in full', () => {
      const { read } = setup(true);
      expect(read([wrap(conn(1, 1000, [5, 6]))])).toEqual([[5, 6]]);
    });

    it('treats a new id on the same tuple as a new connection', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [500, 500]))]);
      expect(read([wrap(conn(7, 1000, [40, 60]))])).toEqual([[40, 60]]);
    });

    it('treats counters that went down as a reset: everything shown is new', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [500, 500]))]);
      expect(read([wrap(conn(1, 1000, [30, 700]))])).toEqual([[30, 700]]);
      expect(read([wrap(conn(1, 1000, [31, 700]))])).toEqual([[1, 0]]);
    });

    it('DESTROY after the read saw the entry adds only the rest', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [100, 100]))]);
      expect(read([wrap(conn(1, 1000, [150, 100]))], [wrap(conn(1, 1000, [170, 130]))])).toEqual([
        [50, 0],
        [20, 30],
      ]);
      // Gone from the table afterwards: nothing more, and no double count.
      expect(read([])).toEqual([]);
      expect(read([])).toEqual([]);
    });

    it('DESTROY of an entry the read no longer saw adds final − last counted', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [100, 100]))]);
      expect(read([], [wrap(conn(1, 1000, [180, 110]))])).toEqual([[80, 10]]);
    });

    it('DESTROY of a connection never seen counts it in full, also during the baseline tick', () => {
      const { read } = setup();
      expect(read([], [wrap(conn(3, 1003, [11, 22]))])).toEqual([[11, 22]]);
      expect(read([], [wrap(conn(4, 1004, [1, 2]))])).toEqual([[1, 2]]);
    });

    it('a read that still shows an ended entry adds nothing (tombstone), nor does a second DESTROY', () => {
      const { read, t } = setup();
      read([]);
      expect(read([], [wrap(conn(5, 1005, [10, 10]))])).toEqual([[10, 10]]);
      expect(read([wrap(conn(5, 1005, [10, 10]))], [wrap(conn(5, 1005, [10, 10]))])).toEqual([]);
      expect(t.size).toBe(0); // the tombstone lives one tick only
    });

    it('a new connection reusing an ended id and tuple counts in full', () => {
      const { read } = setup();
      read([]);
      expect(read([wrap(conn(5, 1005, [10, 10]))], [wrap(conn(5, 1005, [12, 10]))])).toEqual([
        [10, 10],
        [2, 0],
      ]);
      expect(read([wrap(conn(5, 1005, [3, 1]))])).toEqual([[3, 1]]);
      expect(read([wrap(conn(5, 1005, [4, 1]))])).toEqual([[1, 0]]);
      // Ended twice in a row with different final counters: two connections.
      expect(read([], [wrap(conn(5, 1005, [6, 1]))])).toEqual([[2, 0]]);
      expect(read([], [wrap(conn(5, 1005, [7, 7]))])).toEqual([[7, 7]]);
    });

    it('forgets entries two complete reads did not see, keeps them after an interrupted one', () => {
      const { read, t } = setup();
      read([wrap(conn(1, 1000, [1, 1])), wrap(conn(2, 1002, [1, 1]))]);
      expect(t.size).toBe(2);
      read([wrap(conn(1, 1000, [1, 1]))], [], false);
      read([wrap(conn(1, 1000, [1, 1]))], [], false);
      expect(t.size).toBe(2);
      // Still there: the next read shows growth only, not its whole history.
      expect(read([wrap(conn(1, 1000, [1, 1])), wrap(conn(2, 1002, [5, 1]))])).toEqual([[4, 0]]);
      read([wrap(conn(1, 1000, [1, 1]))]);
      expect(t.size).toBe(2);
      read([wrap(conn(1, 1000, [1, 1]))]);
      expect(t.size).toBe(1);
    });

    it('a DESTROY arriving one tick late still counts only the rest', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [100, 100]))]);
      expect(read([])).toEqual([]); // gone from the table; its event is not here yet
      expect(read([], [wrap(conn(1, 1000, [130, 100]))])).toEqual([[30, 0]]);
    });

    it('counts no bytes for entries without counters, and reports them', () => {
      const { read, t } = setup();
      read([]);
      const none = { ...conn(9, 1009, [0, 0]), hasCounters: false };
      expect(read([wrap(none)])).toEqual([]);
      expect(t.noCounters).toBe(1);
    });

    it('tells connections apart by zone and by protocol', () => {
      const { read } = setup();
      read([wrap(conn(1, 1000, [10, 10]))]);
      const z = conn(1, 1000, [3, 3], { zone: 2 });
      const zoned = name === 'numeric keys' ? { ...z, key: 999, key2: 1 } : z;
      expect(read([wrap(conn(1, 1000, [10, 10])), zoned])).toEqual([[3, 3]]);
    });
  });
}

describe('Tracker numeric key collisions', () => {
  it('keeps two connections apart when key collides but key2 differs', () => {
    const deltas: number[] = [];
    const t = new Tracker((_c, ob) => deltas.push(ob), { countExisting: true });
    const a = { ...conn(1, 1, [10, 0]), key: 5, key2: 1 };
    const b = { ...conn(2, 2, [20, 0]), key: 5, key2: 2 };
    t.begin();
    t.visit(a);
    t.visit(b);
    t.end(true);
    t.begin();
    t.visit({ ...a, origBytes: 11 });
    t.visit({ ...b, origBytes: 25 });
    t.end(true);
    expect(deltas).toEqual([10, 20, 1, 5]);
    expect(t.size).toBe(2);
  });
});

describe('Tracker against a reference model', () => {
  it('counts exactly what a plain Map model counts, through growth, collisions and removals', () => {
    // Few distinct `key` values force long probe runs and backward-shift deletions.
    const rand = seededInt(12345);
    let counted = 0;
    const t = new Tracker((_c, ob) => {
      counted += ob;
    });
    const live = new Map<number, number>(); // id → orig bytes
    let nextId = 1;
    let expected = 0;
    let first = true;
    for (let tick = 0; tick < 60; tick++) {
      // Change the live set: end some, start some, grow some.
      let missing = 0;
      for (const id of [...live.keys()]) {
        if (rand(5) === 0) {
          live.delete(id);
          missing++;
        }
      }
      const add = 50 + rand(400);
      for (let i = 0; i < add; i++) live.set(nextId++, 0);
      t.begin();
      for (const [id, bytes] of live) {
        const grown = rand(3) === 0 ? bytes + 1 + rand(1000) : bytes;
        if (!first) expected += grown - bytes;
        live.set(id, grown);
        t.visit({ ...conn(id, id & 0xffff, [grown, 0]), key: id % 97, key2: id });
      }
      t.end(true);
      first = false;
      // Live entries plus those missing from this read only (kept one more read).
      expect(t.size).toBe(live.size + missing);
    }
    // New connections after the baseline are counted in full from 0, which the model did too.
    expect(counted).toBe(expected);
  });

  it('never takes a freed slot for the connection the previous read visited next', () => {
    let counted = 0;
    const t = new Tracker((_c, ob) => {
      counted += ob;
    });
    const a = (bytes: number) => ({ ...conn(1, 1000, [bytes, 0]), key: 11, key2: 1 });
    const b = (bytes: number) => ({ ...conn(2, 1001, [bytes, 0]), key: 22, key2: 2 });
    const read = (...xs: ConnSample[]) => {
      t.begin();
      for (const x of xs) t.visit(x);
      t.end(true);
    };
    read(a(10), b(400)); // baseline: after A comes B
    read(a(10));
    read(a(10)); // B unseen by two complete reads: forgotten, its slot freed (key words stay)
    expect(t.size).toBe(1);
    // The same identity again, after A as before: a new connection, counted in full.
    read(a(10), b(500));
    expect(counted).toBe(500);
    read(a(15), b(520));
    expect(counted).toBe(525);
  });

  it('counts exactly what a Map model counts when the read order changes between reads', () => {
    const rand = seededInt(777);
    let counted = 0;
    const t = new Tracker((_c, ob) => {
      counted += ob;
    });
    const live = new Map<number, number>();
    let nextId = 1;
    let expected = 0;
    for (let tick = 0; tick < 40; tick++) {
      for (const id of [...live.keys()]) if (rand(6) === 0) live.delete(id);
      for (let i = rand(200); i > 0; i--) live.set(nextId++, 0);
      const ids = [...live.keys()];
      // Mostly the same order as before, with swapped pairs; now and then reversed or shuffled.
      const how = rand(4);
      if (how === 0) ids.reverse();
      for (let i = 0; i < ids.length; i++) {
        if (how === 1 || rand(10) === 0) {
          const j = rand(ids.length);
          [ids[i], ids[j]] = [ids[j]!, ids[i]!];
        }
      }
      t.begin();
      for (const id of ids) {
        const bytes = live.get(id)!;
        const grown = rand(2) === 0 ? bytes + 1 + rand(100) : bytes;
        if (tick > 0) expected += grown - bytes;
        live.set(id, grown);
        t.visit({ ...conn(id, id & 0xffff, [grown, 0]), key: id % 31, key2: id });
      }
      t.end(true);
    }
    expect(counted).toBe(expected);
  });
});
