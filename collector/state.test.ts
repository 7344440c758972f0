import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Flow } from '../shared/flow.js';
import { silentLogger } from '../shared/log.js';
import { conn } from '../test/fixtures/flows.js';
import { seeded, seededInt } from '../test/helpers/random.js';
import { Backlog } from './backlog.js';
import { Checkpoint } from './checkpoint.js';
import { FlowColumns } from './flow-columns.js';
import type { ConnSample } from './source.js';
import {
  type CollectorState,
  decodeState,
  encodeBatch,
  encodeState,
  encodeTracker,
  STATE_FILE,
  StateStore,
} from './state.js';
import { Tracker } from './tracker.js';

const sample = (id: number, ob: number, rb: number, over: Partial<ConnSample> = {}): ConnSample =>
  conn({
    id,
    origSport: 1000 + id,
    replySrc: `10.0.1.${id % 250}`,
    origBytes: ob,
    origPackets: ob > 0 ? 1 : 0,
    replyBytes: rb,
    replyPackets: rb > 0 ? 1 : 0,
    key: (id * 2654435761) >>> 0,
    key2: id,
    ...over,
  });

/** A tracker that sums what it counts per connection id. */
function tracker() {
  const counted = new Map<number, number>();
  let current = 0;
  const t = new Tracker((c, ob, _op, rb) => {
    counted.set(current, (counted.get(current) ?? 0) + ob + rb);
    void c;
  });
  const read = (samples: ConnSample[], ended: ConnSample[] = []) => {
    t.begin();
    for (const s of samples) {
      current = s.id;
      t.visit(s);
    }
    for (const s of ended) {
      current = s.id;
      t.visitEnded(s);
    }
    t.end(true);
  };
  return { t, counted, read };
}

const flow = (src: string, dst: string, tx: number, rx = 0): Flow => ({
  src,
  dst,
  proto: 6,
  txBytes: tx,
  rxBytes: rx,
  txPackets: 1,
  rxPackets: rx > 0 ? 1 : 0,
});

const owner = { node: 'node-a', source: 'netfilter' as const };

function fileOf(t: Tracker, b: Backlog, savedAt = 1): Buffer {
  const snap = b.snapshot();
  return encodeState({ ...owner, savedAt }, snap, encodeTracker(t.snapshot()), snap.batches.map(encodeBatch));
}

/** A tracker and a backlog in the middle of their lives: baseline, growth, an ended connection, pulls, an ack. */
function busyState() {
  const a = tracker();
  a.read([sample(1, 100, 200), sample(2, 50, 0)]); // baseline
  a.read([
    sample(1, 150, 260),
    sample(2, 50, 0),
    sample(3, 10, 10, { family: 6, origSrc: 'fd00::1', replySrc: 'fd00::2' }),
  ]);
  // One connection identified by a string key (a source without numeric keys).
  a.read(
    [
      sample(1, 170, 260),
      sample(3, 10, 30, { family: 6, origSrc: 'fd00::1', replySrc: 'fd00::2' }),
      sample(4, 7, 7, { key: undefined, key2: undefined }),
    ],
    [sample(2, 80, 5)],
  );
  const b = new Backlog({ backlogMaxFlows: 1000 }, { bootId: 'boot-1' });
  b.append(0, 5, [flow('10.0.0.1', '10.0.1.1', 50, 60)]);
  b.append(
    5,
    10,
    FlowColumns.from([
      flow('10.0.0.1', '10.0.1.1', 20, 0),
      { ...flow('fd00::1', 'fd00::2', 0, 20), dstName: 'api.example.com' },
    ]),
  );
  b.pull(1); // boundary at 1
  b.ack('boot-1', 1);
  b.append(10, 15, [flow('10.0.0.1', '10.0.1.2', 7, 7)]);
  b.pull(); // boundary at 3
  // Prometheus took everything up to 3 for good; the HTTP sink has nothing beyond the ack.
  b.ack('boot-1', 1, { prometheus: 3 });
  b.append(15, 20, [flow('10.0.0.1', '10.0.1.2', 1, 1)]);
  return { a, b };
}

describe('state file', () => {
  it('round trip: the restored tracker continues from its counts, the backlog under the same boot id and seqs', () => {
    const { a, b } = busyState();
    const d = decodeState(fileOf(a.t, b, 1234));
    if (!d.ok) throw new Error(d.reason);
    const s: CollectorState = d.state;
    expect(s).toMatchObject({ node: 'node-a', source: 'netfilter', savedAt: 1234 });

    const b2 = new Backlog({ backlogMaxFlows: 1000 });
    b2.restore(s.backlog);
    expect(b2.bootId).toBe('boot-1');
    expect(b2.acked).toBe(1);
    expect(b2.pendingBoundaries()).toEqual([3]);
    expect(b2.sinkCursors()).toEqual({ prometheus: 3 });
    expect(b2.pull()).toEqual(b.pull());
    expect(b2.append(20, 25, [flow('10.0.0.1', '10.0.1.2', 1)])).toBe(5);
    expect(b2.ack('boot-1', 5)).toEqual({ ok: true, dropped: 4 });

    const r = tracker();
    r.t.restore(s.tracker);
    expect(r.t.size).toBe(a.t.size);
    expect(r.t.inBaseline).toBe(false);
    // Same reads on both: the original and the restored tracker count exactly the same.
    const next = [
      sample(1, 200, 300), // grew by 30 + 40
      sample(3, 10, 30, { family: 6, origSrc: 'fd00::1', replySrc: 'fd00::2' }), // unchanged
      sample(4, 9, 7, { key: undefined, key2: undefined }), // string-keyed, grew by 2
      sample(5, 11, 12), // new since the snapshot: in full
    ];
    a.counted.clear();
    // Connection 2 ended before the snapshot (kept as a tombstone): its DESTROY seen again adds nothing.
    a.read(next, [sample(2, 80, 5)]);
    r.read(next, [sample(2, 80, 5)]);
    expect([...r.counted]).toEqual([...a.counted]);
    expect(Object.fromEntries(r.counted)).toEqual({ 1: 70, 4: 2, 5: 23 });
    expect(r.t.size).toBe(a.t.size);
  });

  it('restores a tracker taken before its first complete read as a baseline still to come', () => {
    const a = tracker();
    const b = new Backlog({ backlogMaxFlows: 1000 });
    const d = decodeState(fileOf(a.t, b));
    if (!d.ok) throw new Error(d.reason);
    const r = tracker();
    r.t.restore(d.state.tracker);
    r.read([sample(1, 100, 100)]);
    expect(r.counted.size).toBe(0);
  });

  it('refuses a file cut short, extended, bit-flipped or of another format, with a reason', () => {
    const { a, b } = busyState();
    const good = fileOf(a.t, b);
    expect(decodeState(good).ok).toBe(true);
    const reasons = new Set<string>();
    for (let n = 0; n < good.length; n++) {
      const d = decodeState(good.subarray(0, n));
      expect(d.ok, `cut at ${n}`).toBe(false);
      if (!d.ok) reasons.add(d.reason.split(':')[0]!);
    }
    expect(decodeState(Buffer.concat([good, Buffer.from([0])])).ok).toBe(false);
    const rand = seededInt(7);
    for (let i = 0; i < 2000; i++) {
      const bad = Buffer.from(good);
      const at = rand(bad.length);
      bad[at] = bad[at]! ^ (1 << rand(8));
      expect(decodeState(bad).ok, `bit flipped at ${at}`).toBe(false);
    }
    expect(decodeState(Buffer.from('PFSTATE1')).ok).toBe(false);
    expect(decodeState(Buffer.alloc(0))).toEqual({ ok: false, reason: 'shorter than its header' });
    expect([...reasons].sort()).toEqual(['shorter than its header', 'truncated or extended']);
    const foreign = Buffer.from(good);
    foreign.write('PFSTATE0', 0, 'latin1');
    expect(decodeState(foreign)).toEqual({ ok: false, reason: 'not a podflow state file' });
  });

  it('fuzz: random bytes and mutated bodies with a valid checksum never throw; what decodes restores cleanly', () => {
    const { a, b } = busyState();
    const good = fileOf(a.t, b);
    const rand = seeded(99);
    const int = (n: number) => Math.floor(rand() * n);
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      let buf: Buffer;
      if (i % 3 === 0) {
        buf = Buffer.alloc(int(600));
        for (let k = 0; k < buf.length; k++) buf[k] = int(256);
        if (i % 2 === 0) Buffer.from('PFSTATE1').copy(buf);
      } else {
        // Mutate the body, then make checksum and length right again: only the field checks stand guard.
        buf = Buffer.from(good);
        for (let m = 1 + int(4); m > 0; m--) {
          const at = 16 + int(buf.length - 16);
          buf[at] = i % 2 === 0 ? int(256) : buf[at]! ^ (1 << int(8));
        }
        if (i % 5 === 0) buf = buf.subarray(0, 16 + int(buf.length - 16));
        buf.writeUInt32LE(buf.length - 16, 12);
        buf.writeUInt32LE(crc32(buf.subarray(16)), 8);
      }
      const d = decodeState(buf);
      if (!d.ok) {
        expect(typeof d.reason).toBe('string');
        continue;
      }
      accepted++;
      // A file that passes every check is usable: restoring it throws nothing.
      const t = new Tracker(() => undefined);
      t.restore(d.state.tracker);
      const bl = new Backlog({ backlogMaxFlows: 1000 });
      bl.restore(d.state.backlog);
      bl.pull();
    }
    // Some mutations hit only counts or addresses of the same shape and still decode.
    expect(accepted).toBeLessThan(3000);
  });
});

describe('StateStore', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pf-state-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('creates its directory, writes, reads back, and refuses a file of another node or source', async () => {
    const store = new StateStore(join(dir, 'a', 'b'));
    await store.open();
    expect(await store.load(owner)).toEqual({ kind: 'none' });
    const { a, b } = busyState();
    await store.write(fileOf(a.t, b));
    expect((await stat(store.file)).mode & 0o777).toBe(0o600);
    const got = await store.load(owner);
    expect(got.kind).toBe('ok');
    expect(await store.load({ node: 'node-b', source: 'netfilter' })).toEqual({
      kind: 'refused',
      reason: "it is node node-a's, this is node-b",
    });
    expect(await store.load({ node: 'node-a', source: 'cilium' })).toEqual({
      kind: 'refused',
      reason: 'it was written reading netfilter, this reads cilium',
    });
    await writeFile(store.file, (await readFile(store.file)).subarray(0, 100));
    const torn = await store.load(owner);
    expect(torn.kind).toBe('refused');
    await store.discard();
    expect(await store.load(owner)).toEqual({ kind: 'none' });
  });

  it('open() fails with the cause where the directory cannot be made or written', async () => {
    const file = join(dir, 'plain-file');
    await writeFile(file, 'x');
    await expect(new StateStore(join(file, 'state')).open()).rejects.toThrow(/ENOTDIR/);
    if (process.getuid?.() !== 0) {
      const ro = join(dir, 'read-only');
      await new StateStore(ro).open();
      await chmod(ro, 0o500);
      await expect(new StateStore(ro).open()).rejects.toThrow(/EACCES/);
    }
  });

  it('a write killed at any instant leaves the old state or the new one, never a mix', async () => {
    // A child writes two different states in turn, as fast as it can; it is killed (SIGKILL) at a
    // random moment, again and again. Every time, the file decodes, and is one of the two.
    const target = join(dir, 'crash');
    const child = (): ChildProcess =>
      spawn(
        process.execPath,
        ['--import', 'tsx', new URL('../test/helpers/state-writer.ts', import.meta.url).pathname, target],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
    const rand = seededInt(3);
    const seen = new Set<number>();
    for (let round = 0; round < 12; round++) {
      const p = child();
      const lines = createInterface({ input: p.stdout! });
      let writes = 0;
      const enough = 2 + rand(6);
      for await (const _ of lines) if (++writes >= enough) break;
      // Somewhere in the middle of a later write.
      await new Promise((r) => setTimeout(r, rand(15)));
      p.kill('SIGKILL');
      await once(p, 'exit');
      const d = decodeState(await readFile(join(target, STATE_FILE)));
      if (!d.ok) throw new Error(`round ${round}: ${d.reason}`);
      expect([1, 2]).toContain(d.state.savedAt);
      expect(d.state.tracker.n).toBe(d.state.savedAt === 1 ? 20_000 : 30_000);
      seen.add(d.state.savedAt);
    }
    expect(seen.size).toBe(2);
  }, 60_000);
});

describe('Checkpoint', () => {
  it('hands a tick batch to pulls only once the state holding it is written; a failing directory stops nothing', async () => {
    const writes: Buffer[] = [];
    let fail = false;
    let discarded = 0;
    let release: (() => void) | undefined;
    const store = {
      write: async (buf: Buffer) => {
        await new Promise<void>((r) => {
          release = r;
        });
        if (fail) throw new Error('ENOSPC: no space left on device');
        writes.push(buf);
      },
      discard: async () => {
        discarded++;
      },
    };
    const { a } = busyState();
    const b = new Backlog({ backlogMaxFlows: 1000, holdNew: true }, { bootId: 'boot-x' });
    const cp = new Checkpoint({
      store,
      backlog: b,
      tracker: () => a.t.snapshot(),
      trackerVersion: () => a.t.version,
      owner: () => owner,
      log: silentLogger,
    });
    cp.mark();
    b.append(0, 5, [flow('10.0.0.1', '10.0.1.1', 5)]);
    const committed = cp.afterTick();
    await new Promise((r) => setImmediate(r));
    expect(b.pull()).toEqual([]); // written not yet
    expect(b.ack('boot-x', 1).ok).toBe(false);
    release!();
    await committed;
    expect(b.pull().map((x) => x.seq)).toEqual([1]);
    const d = decodeState(writes[0]!);
    if (!d.ok) throw new Error(d.reason);
    expect(d.state.backlog.lastSeq).toBe(1);
    expect(d.state.backlog.batches.map((x) => x.seq)).toEqual([1]);
    // The pull recorded a boundary: it is durable only after another write.
    const durable = cp.boundariesDurable();
    await new Promise((r) => setImmediate(r));
    release!();
    await durable;
    const d2 = decodeState(writes[1]!);
    expect(d2.ok && d2.state.backlog.boundaries).toEqual([1]);
    await cp.boundariesDurable(); // nothing new: no write
    expect(writes.length).toBe(2);

    fail = true;
    b.append(5, 10, [flow('10.0.0.1', '10.0.1.1', 6)]);
    const failing = cp.afterTick();
    await new Promise((r) => setImmediate(r));
    release!();
    await failing;
    // Delivery goes on; the stale state file is removed so that a restart does not use it.
    expect(b.pull().map((x) => x.seq)).toEqual([1, 2]);
    expect(discarded).toBe(1);
  });
});
