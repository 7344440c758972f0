// The one place where podflow's native addon (native/src/bpf_map.c) is loaded. Everything else
// imports the typed surface below. The addon reads pinned BPF maps read-only; Linux only.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What BPF_OBJ_GET_INFO_BY_FD says about a map (struct bpf_map_info). */
export interface BpfMapInfo {
  /** enum bpf_map_type: 1 hash, 9 LRU hash, … */
  type: number;
  /** Kernel map id: a re-created map (same pin path) gets a new one. */
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** Error thrown by the addon for a failed system call. */
export interface BpfError extends Error {
  /** errno name, e.g. EACCES, ENOENT, EINVAL, ENOTSUPP. */
  code: string;
  errno: number;
  /** e.g. `bpf(BPF_OBJ_GET)`. */
  syscall: string;
}

export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_LRU_HASH = 9;

interface Addon {
  openPinned(path: string): number;
  close(fd: number): void;
  mapInfo(fd: number): BpfMapInfo;
  readChunk(
    fd: number,
    keySize: number,
    valueSize: number,
    keys: Buffer,
    values: Buffer,
    cursor: Buffer,
    each: boolean,
  ): number;
}

/** Size of a read cursor (see `Bpf.readChunk`). */
export const CURSOR_SIZE = 72;
const CURSOR_DONE = 2;

export type ReadMode = 'batch' | 'each';

/** Typed, argument-checked access to pinned BPF maps. */
export interface Bpf {
  /** Opens a pinned map read-only (BPF_OBJ_GET with BPF_F_RDONLY). Returns a file descriptor. */
  openPinned(path: string): number;
  close(fd: number): void;
  mapInfo(fd: number): BpfMapInfo;
  /**
   * Copies the next entries into `keys`/`values` (packed, keySize/valueSize apart; as many as fit)
   * and returns how many. `cursor` (CURSOR_SIZE bytes, zero-filled to start a read) keeps the
   * position; `isDone(cursor)` tells when the map has been read to the end.
   * `batch` uses BPF_MAP_LOOKUP_BATCH (throws code EINVAL/ENOTSUPP/EOPNOTSUPP where the kernel or
   * map lacks it: see isBatchUnsupported); `each` walks GET_NEXT_KEY + LOOKUP_ELEM.
   */
  readChunk(
    fd: number,
    keySize: number,
    valueSize: number,
    keys: Buffer,
    values: Buffer,
    cursor: Buffer,
    mode: ReadMode,
  ): number;
}

export const isDone = (cursor: Buffer): boolean => cursor[0] === CURSOR_DONE;

/** True when the error means "this kernel/map has no batch lookup": use the per-key walk. */
export function isBatchUnsupported(err: unknown): boolean {
  const code = (err as Partial<BpfError> | undefined)?.code;
  return code === 'EINVAL' || code === 'ENOTSUPP' || code === 'EOPNOTSUPP' || code === 'ENOSYS';
}

/** The directory holding binding.gyp: native/ from source, ../../native from dist/native/. */
function addonDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const dir of [here, join(here, '..', '..', 'native')]) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
  }
  return here;
}

let cached: Bpf | undefined;

/** Loads the addon once. Throws "not supported on this platform" off Linux. */
export function loadBpf(): Bpf {
  if (cached) return cached;
  if (process.platform !== 'linux') {
    throw new Error(`reading BPF maps is not supported on this platform (${process.platform})`);
  }
  const require = createRequire(import.meta.url);
  let addon: Addon;
  try {
    const load = require('node-gyp-build') as (dir: string) => Addon;
    addon = load(addonDir());
  } catch (cause) {
    throw new Error(
      'podflow native addon (native/) is not built: run `npm rebuild podflow` or `npm ci` with a C compiler, make and python3',
      { cause },
    );
  }
  const fd = (v: number) => {
    if (!Number.isInteger(v) || v < 0) throw new TypeError(`invalid file descriptor ${v}`);
    return v;
  };
  cached = {
    openPinned(path) {
      if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
        throw new TypeError(`invalid BPF pin path ${JSON.stringify(path)}`);
      }
      return addon.openPinned(path);
    },
    close: (v) => addon.close(fd(v)),
    mapInfo: (v) => addon.mapInfo(fd(v)),
    readChunk(v, keySize, valueSize, keys, values, cursor, mode) {
      if (!Number.isInteger(keySize) || keySize <= 0 || keySize > CURSOR_SIZE - 8) {
        throw new RangeError(`invalid key size ${keySize}`);
      }
      if (!Number.isInteger(valueSize) || valueSize <= 0)
        throw new RangeError(`invalid value size ${valueSize}`);
      if (!Buffer.isBuffer(keys) || !Buffer.isBuffer(values) || !Buffer.isBuffer(cursor)) {
        throw new TypeError('expected Buffers');
      }
      if (cursor.length < CURSOR_SIZE) throw new RangeError(`cursor must be ${CURSOR_SIZE} bytes`);
      return addon.readChunk(fd(v), keySize, valueSize, keys, values, cursor, mode === 'each');
    },
  };
  return cached;
}
