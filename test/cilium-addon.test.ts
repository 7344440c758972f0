// The native addon against real pinned BPF maps on a private bpffs mount: read-only open, map info,
// bulk read through BPF_MAP_LOOKUP_BATCH and through the per-key walk, errors with errno codes.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Bpf,
  type BpfError,
  CURSOR_SIZE,
  isBatchUnsupported,
  isDone,
  loadBpf,
  type ReadMode,
} from '../native/index.js';
import { type BpfMount, createMap, deleteEntries, mountBpffs, putEntries } from './helpers/bpf.js';
import { requireRoot } from './helpers/netns.js';

const execFileP = promisify(execFile);
const root = requireRoot();

function records(n: number, keySize: number, valueSize: number, seed: number): Buffer {
  const out = Buffer.alloc(n * (keySize + valueSize));
  for (let i = 0; i < n; i++) {
    const at = i * (keySize + valueSize);
    out.writeUInt32BE(i, at); // unique key prefix
    for (let j = 4; j < keySize + valueSize; j++) out[at + j] = (i * 31 + j * 7 + seed) & 0xff;
  }
  return out;
}

/** Reads the whole map in chunks of `chunk` entries into `keys`/`values`; returns the count. */
function readAll(
  bpf: Bpf,
  fd: number,
  ks: number,
  vs: number,
  keys: Buffer,
  values: Buffer,
  mode: ReadMode,
  chunk = 1000,
): number {
  const cursor = Buffer.alloc(CURSOR_SIZE);
  let n = 0;
  const cap = keys.length / ks;
  while (!isDone(cursor) && n < cap) {
    const want = Math.min(chunk, cap - n);
    n += bpf.readChunk(
      fd,
      ks,
      vs,
      keys.subarray(n * ks, (n + want) * ks),
      values.subarray(n * vs, (n + want) * vs),
      cursor,
      mode,
    );
  }
  return n;
}

/** Entries as a sorted list of hex "key=value" strings: order-independent comparison. */
function entries(keys: Buffer, values: Buffer, n: number, ks: number, vs: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      `${keys.subarray(i * ks, (i + 1) * ks).toString('hex')}=${values.subarray(i * vs, (i + 1) * vs).toString('hex')}`,
    );
  }
  return out.sort();
}

describe.skipIf(!root)('native BPF map reader', () => {
  let mnt: BpfMount;
  const bpf = loadBpf();
  const fds: number[] = [];

  beforeAll(async () => {
    mnt = await mountBpffs();
  });
  afterAll(async () => {
    for (const fd of fds) bpf.close(fd);
    await mnt?.cleanup();
  });

  it('opens a pinned map read-only and reports its info', async () => {
    const path = join(mnt.dir, 'info_map');
    await createMap(path, { type: 9, keySize: 14, valueSize: 56, maxEntries: 4096 });
    const fd = bpf.openPinned(path);
    fds.push(fd);
    const info = bpf.mapInfo(fd);
    expect(info).toMatchObject({ type: 9, keySize: 14, valueSize: 56, maxEntries: 4096, name: 'info_map' });
    expect(info.id).toBeGreaterThan(0);
    // O_ACCMODE of the map's file: 0 = O_RDONLY (BPF_F_RDONLY), 2 would be O_RDWR.
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
    expect(flags).toBeDefined();
    expect(Number.parseInt(flags!, 8) & 3).toBe(0);
  });

  it('opens maps through a read-only mount (BPF_F_RDONLY asks for read access only)', async () => {
    const path = join(mnt.dir, 'ro_map');
    await createMap(path, { type: 9, keySize: 14, valueSize: 56, maxEntries: 64 });
    await putEntries(path, 14, 56, records(3, 14, 56, 1));
    const ro = mkdtempSync(join(tmpdir(), 'pf-bpf-ro-'));
    try {
      await execFileP('mount', ['--bind', mnt.dir, ro]);
      await execFileP('mount', ['-o', 'remount,bind,ro', ro]);
      const fd = bpf.openPinned(join(ro, 'ro_map'));
      try {
        expect(readAll(bpf, fd, 14, 56, Buffer.alloc(64 * 14), Buffer.alloc(64 * 56), 'batch')).toBe(3);
      } finally {
        bpf.close(fd);
      }
    } finally {
      await execFileP('umount', [ro]).catch(() => execFileP('umount', ['-l', ro]));
      rmSync(ro, { recursive: true, force: true });
    }
  });

  it('reads every entry, identically through the batch and the per-key path', async () => {
    for (const [ks, vs, n] of [
      [14, 56, 5000],
      [38, 56, 3000],
    ] as const) {
      const path = join(mnt.dir, `read_${ks}`);
      await createMap(path, { type: 9, keySize: ks, valueSize: vs, maxEntries: 8192 });
      const recs = records(n, ks, vs, ks);
      await putEntries(path, ks, vs, recs);
      const fd = bpf.openPinned(path);
      fds.push(fd);
      const expected: string[] = [];
      for (let i = 0; i < n; i++) {
        const at = i * (ks + vs);
        expected.push(
          `${recs.subarray(at, at + ks).toString('hex')}=${recs.subarray(at + ks, at + ks + vs).toString('hex')}`,
        );
      }
      expected.sort();
      const keys = Buffer.alloc(8192 * ks);
      const values = Buffer.alloc(8192 * vs);
      const nb = readAll(bpf, fd, ks, vs, keys, values, 'batch');
      expect(nb).toBe(n);
      expect(entries(keys, values, nb, ks, vs)).toEqual(expected);
      keys.fill(0);
      values.fill(0);
      const ne = readAll(bpf, fd, ks, vs, keys, values, 'each');
      expect(ne).toBe(n);
      expect(entries(keys, values, ne, ks, vs)).toEqual(expected);
      // One entry per call: the cursor carries the position between calls.
      keys.fill(0);
      expect(readAll(bpf, fd, ks, vs, keys, values, 'each', 1)).toBe(n);
      expect(entries(keys, values, n, ks, vs)).toEqual(expected);
      keys.fill(0);
      expect(readAll(bpf, fd, ks, vs, keys, values, 'batch', 64)).toBe(n);
      expect(entries(keys, values, n, ks, vs)).toEqual(expected);

      // Deleted entries are gone on the next read.
      const firstKeys = Buffer.alloc(100 * ks);
      for (let i = 0; i < 100; i++) recs.copy(firstKeys, i * ks, i * (ks + vs), i * (ks + vs) + ks);
      await deleteEntries(path, ks, firstKeys);
      expect(readAll(bpf, fd, ks, vs, keys, values, 'batch')).toBe(n - 100);
      expect(readAll(bpf, fd, ks, vs, keys, values, 'each')).toBe(n - 100);
    }
  });

  it('reads an empty map as zero entries', async () => {
    const path = join(mnt.dir, 'empty');
    await createMap(path, { type: 9, keySize: 14, valueSize: 56, maxEntries: 64 });
    const fd = bpf.openPinned(path);
    fds.push(fd);
    const keys = Buffer.alloc(64 * 14);
    const values = Buffer.alloc(64 * 56);
    expect(readAll(bpf, fd, 14, 56, keys, values, 'batch')).toBe(0);
    expect(readAll(bpf, fd, 14, 56, keys, values, 'each')).toBe(0);
  });

  it('turns failed system calls into Errors with errno codes', async () => {
    let err: BpfError | undefined;
    try {
      bpf.openPinned(join(mnt.dir, 'missing'));
    } catch (e) {
      err = e as BpfError;
    }
    expect(err?.code).toBe('ENOENT');
    expect(err?.errno).toBe(2);
    expect(err?.syscall).toBe('bpf(BPF_OBJ_GET)');
    expect(err?.message).toContain(join(mnt.dir, 'missing'));
    // A descriptor that is not open: EBADF (EBADFD on newer kernels) from the kernel, not a crash.
    let bad: BpfError | undefined;
    try {
      bpf.mapInfo(1_000_000);
    } catch (e) {
      bad = e as BpfError;
    }
    expect(['EBADF:9', 'EBADFD:77']).toContain(`${bad?.code}:${bad?.errno}`);
    expect(() => bpf.openPinned('')).toThrow(TypeError);
    expect(() =>
      bpf.readChunk(-1, 14, 56, Buffer.alloc(14), Buffer.alloc(56), Buffer.alloc(CURSOR_SIZE), 'batch'),
    ).toThrow(TypeError);
    expect(() =>
      bpf.readChunk(0, 14, 56, Buffer.alloc(14), Buffer.alloc(56), Buffer.alloc(8), 'batch'),
    ).toThrow(RangeError);
    expect(isBatchUnsupported({ code: 'EINVAL' })).toBe(true);
    expect(isBatchUnsupported({ code: 'ENOTSUPP' })).toBe(true);
    expect(isBatchUnsupported({ code: 'EACCES' })).toBe(false);
  });

  it('refuses an unprivileged user with EACCES', async () => {
    const path = join(mnt.dir, 'private');
    await createMap(path, { type: 9, keySize: 14, valueSize: 56, maxEntries: 64 });
    chmodSync(mnt.dir, 0o755); // reachable, but the pin itself stays 0600 root
    const script = `import { loadBpf } from './native/index.ts';
try { loadBpf().openPinned(${JSON.stringify(path)}); console.log('opened'); }
catch (e) { console.log(e.code); }`;
    const { stdout } = await execFileP(
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
    );
    expect(stdout.trim()).toBe('EACCES');
  });
});
