// The one place where podflow's native addon (native/src/) is loaded. Everything else imports the
// typed surface below. The addon reads pinned BPF maps read-only (bpf_map.c), owns the netlink
// sockets of the conntrack source (netlink.c) and the packet socket that sees DNS answers
// (packet.c); Linux only.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
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

/** Opaque poll handle of a netlink socket (a libuv poll on its fd). */
export type PollHandle = { readonly __brand: 'PollHandle' };

interface Addon {
  nlOpen(protocol: number): number;
  nlSetRecvBuffer(fd: number, bytes: number): number;
  nlAddMembership(fd: number, group: number): number;
  nlSend(fd: number, msg: Buffer): number;
  nlRecv(fd: number, buf: Buffer, offset: number, slot: number, info: Int32Array): number;
  /** Any fd the addon opened (sockets, maps): 0 or -errno. */
  closeFd(fd: number): number;
  nlPoll(fd: number, callback: (status: number) => void): PollHandle;
  nlPollStart(h: PollHandle): number;
  nlPollStop(h: PollHandle): number;
  nlPollRef(h: PollHandle, ref: boolean): number;
  nlPollClose(h: PollHandle): number;
  openPinned(path: string): number;
  mapInfo(fd: number): BpfMapInfo;
  /** `each`: the per-key walk (ReadMode 'each'). */
  readChunk: ReadChunk<boolean>;
  pkOpen(): number;
  pkRecv(fd: number, buf: Buffer, offset: number, info: Int32Array): number;
}

/** Size of a read cursor (see `Bpf.readChunk`). */
export const CURSOR_SIZE = 72;
const CURSOR_DONE = 2;

export type ReadMode = 'batch' | 'each';

/** Reads the next entries of map `fd` into `keys`/`values` (see Bpf.readChunk); `mode` says how. */
type ReadChunk<Mode> = (
  fd: number,
  keySize: number,
  valueSize: number,
  keys: Buffer,
  values: Buffer,
  cursor: Buffer,
  mode: Mode,
) => number;

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
  readChunk: ReadChunk<ReadMode>;
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

let addon: Addon | undefined;

// Arguments are checked here, before the addon sees them (its C only guards against misuse).
/** A non-negative 32-bit integer argument (file descriptors, sizes, offsets). */
function int(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw new RangeError(`invalid ${name} ${v}`);
  return v;
}
/** A file descriptor: anything but a non-negative 32-bit integer is a wrong type of argument. */
function fd(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw new TypeError(`invalid file descriptor ${v}`);
  return v;
}
function buffer(b: Buffer): Buffer {
  if (!Buffer.isBuffer(b)) throw new TypeError('expected a Buffer');
  return b;
}
function recvInfo(info: Int32Array): Int32Array {
  if (!(info instanceof Int32Array) || info.length < RECV_INFO_LENGTH)
    throw new TypeError(`recv info must be an Int32Array(${RECV_INFO_LENGTH})`);
  return info;
}

/** Loads the addon once. Throws "<what> is not supported on this platform" off Linux. */
function loadAddon(what: string): Addon {
  if (process.platform !== 'linux') {
    throw new Error(`${what} is not supported on this platform (${process.platform})`);
  }
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  try {
    const load = require('node-gyp-build') as (dir: string) => Addon;
    addon = load(addonDir());
  } catch (cause) {
    throw new Error(
      'podflow native addon (native/) is not built: run `npm rebuild podflow` or `npm ci` with a C compiler, make and python3',
      { cause },
    );
  }
  return addon;
}

let cached: Bpf | undefined;

/** Loads the addon once. Throws "not supported on this platform" off Linux. */
export function loadBpf(): Bpf {
  if (cached) return cached;
  const addon = loadAddon('reading BPF maps');
  cached = {
    openPinned(path) {
      if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
        throw new TypeError(`invalid BPF pin path ${JSON.stringify(path)}`);
      }
      return addon.openPinned(path);
    },
    close(v) {
      const r = addon.closeFd(fd(v));
      if (r < 0) {
        throw Object.assign(new Error(`close: ${errnoName(r)}`), {
          code: errnoName(r),
          errno: -r,
          syscall: 'close',
        });
      }
    },
    mapInfo: (v) => addon.mapInfo(fd(v)),
    readChunk(v, keySize, valueSize, keys, values, cursor, mode) {
      if (!Number.isInteger(keySize) || keySize <= 0 || keySize > CURSOR_SIZE - 8) {
        throw new RangeError(`invalid key size ${keySize}`);
      }
      if (!Number.isInteger(valueSize) || valueSize <= 0)
        throw new RangeError(`invalid value size ${valueSize}`);
      if (buffer(cursor).length < CURSOR_SIZE) throw new RangeError(`cursor must be ${CURSOR_SIZE} bytes`);
      return addon.readChunk(
        fd(v),
        keySize,
        valueSize,
        buffer(keys),
        buffer(values),
        cursor,
        mode === 'each',
      );
    },
  };
  return cached;
}

// ------------------------------------------------------------------------------------------------
// Netlink sockets. Every call returns errors as values: a negative errno (see `errnoName`), never a
// throw, so that an expected condition (ENOBUFS: the kernel dropped messages for this socket) is
// handled where it happens. Only misuse (a bad argument) throws.

/** Counters filled by `recv` (an Int32Array of RECV_INFO_LENGTH). */
export const RECV_DATAGRAMS = 0;
/** Datagrams larger than the space left (not appended: their messages are lost). */
export const RECV_TRUNCATED = 1;
/** ENOBUFS reports: the kernel dropped messages for this socket since the last read. */
export const RECV_OVERRUNS = 2;
/** The errno that stopped the read (0: none). */
export const RECV_ERRNO = 3;
export const RECV_INFO_LENGTH = 4;

export interface Netlink {
  /** A non-blocking netlink socket of `protocol`, bound to a kernel-assigned port: fd or -errno. */
  open(protocol: number): number;
  /** Receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF capped by net.core.rmem_max): granted bytes or -errno. */
  setRecvBuffer(fd: number, bytes: number): number;
  /** Joins a multicast group: 0 or -errno. */
  addMembership(fd: number, group: number): number;
  /** Sends one datagram to the kernel: bytes sent or -errno. */
  send(fd: number, msg: Buffer): number;
  /**
   * Appends waiting datagrams to `buf` from `offset` (rounded up to 4) while `slot` bytes are free,
   * without blocking; returns the end offset. `info` gets the RECV_* counters.
   */
  recv(fd: number, buf: Buffer, offset: number, slot: number, info: Int32Array): number;
  /** 0 or -errno. */
  close(fd: number): number;
  /**
   * Calls `callback(0)` whenever the socket is readable once started, `callback(-errno)` on an error
   * condition (the handle is then stopped: read, then start it again).
   */
  poll(fd: number, callback: (status: number) => void): PollHandle;
  pollStart(h: PollHandle): number;
  pollStop(h: PollHandle): void;
  /** A referenced handle keeps the process alive. */
  pollRef(h: PollHandle, ref: boolean): void;
  /** Stops and frees the handle; the fd stays open. */
  pollClose(h: PollHandle): void;
}

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, n]) => [n, name] as [number, string]),
);

/** `ENOBUFS` for 105 (the platform's own numbering); `E<n>` when unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

let cachedNetlink: Netlink | undefined;

/** Loads the addon once. Throws "netlink sockets are not supported on this platform" off Linux. */
export function loadNetlink(): Netlink {
  if (cachedNetlink) return cachedNetlink;
  const a = loadAddon('netlink sockets');
  cachedNetlink = {
    open: (protocol) => a.nlOpen(int('netlink protocol', protocol)),
    setRecvBuffer: (v, bytes) => a.nlSetRecvBuffer(fd(v), int('buffer size', bytes)),
    addMembership: (v, group) => a.nlAddMembership(fd(v), int('group', group)),
    send: (v, msg) => a.nlSend(fd(v), buffer(msg)),
    recv: (v, buf, offset, slot, info) =>
      a.nlRecv(fd(v), buffer(buf), int('offset', offset), int('slot', slot), recvInfo(info)),
    close: (v) => a.closeFd(fd(v)),
    poll(v, callback) {
      if (typeof callback !== 'function') throw new TypeError('poll callback must be a function');
      return a.nlPoll(fd(v), callback);
    },
    pollStart: (h) => a.nlPollStart(h),
    pollStop: (h) => {
      a.nlPollStop(h);
    },
    pollRef: (h, ref) => {
      a.nlPollRef(h, ref);
    },
    pollClose: (h) => {
      a.nlPollClose(h);
    },
  };
  return cachedNetlink;
}

// ------------------------------------------------------------------------------------------------
// The packet socket of the DNS name learner (native/src/packet.c): DNS answers (UDP or TCP from port
// 53, IPv4 and IPv6) crossing any interface of this network namespace. Errors are values, as above.

/** Bytes before each packet in the buffer `recv` fills; records start 4-aligned. */
export const PACKET_HEADER = 12;
/** Free space `recv` needs to take one more packet (header + the largest captured packet). */
export const PACKET_SLOT = PACKET_HEADER + 65535;
/** `info` of PacketSocket.recv: packets appended, packets cut short, -, the errno that stopped it. */
export const PACKET_RECEIVED = 0;
export const PACKET_CUT = 1;
export const PACKET_ERRNO = 3;
/** sll_pkttype of a packet this host sends (PACKET_OUTGOING in linux/if_packet.h). */
export const PACKET_OUTGOING = 4;

export interface PacketSocket {
  /** A non-blocking AF_PACKET socket with the DNS-answer filter: fd, or -errno (-EPERM without CAP_NET_RAW). */
  open(): number;
  /**
   * Appends waiting packets to `buf` from `offset` (rounded up to 4) as records: u32 LE original
   * length, u16 LE captured length, u16 LE ethertype, u8 packet type, 3 bytes zero, the IP packet.
   * Returns the end offset; `info` gets the PACKET_* counters.
   */
  recv(fd: number, buf: Buffer, offset: number, info: Int32Array): number;
  /** 0 or -errno. */
  close(fd: number): number;
  /** Poll handles: as for netlink sockets (`Netlink.poll`). */
  poll(fd: number, callback: (status: number) => void): PollHandle;
  pollStart(h: PollHandle): number;
  pollClose(h: PollHandle): void;
  /** SO_RCVBUF(FORCE): granted bytes or -errno. */
  setRecvBuffer(fd: number, bytes: number): number;
}

let cachedPacket: PacketSocket | undefined;

/** Loads the addon once. Throws "packet sockets are not supported on this platform" off Linux. */
export function loadPacketSocket(): PacketSocket {
  if (cachedPacket) return cachedPacket;
  const a = loadAddon('packet sockets');
  const nl = loadNetlink();
  cachedPacket = {
    open: () => a.pkOpen(),
    recv(v, buf, offset, info) {
      if (int('offset', offset) > buffer(buf).length) throw new RangeError(`invalid offset ${offset}`);
      return a.pkRecv(fd(v), buf, offset, recvInfo(info));
    },
    close: (v) => nl.close(fd(v)),
    poll: (v, callback) => nl.poll(fd(v), callback),
    pollStart: (h) => nl.pollStart(h),
    pollClose: (h) => nl.pollClose(h),
    setRecvBuffer: (v, bytes) => nl.setRecvBuffer(fd(v), bytes),
  };
  return cachedPacket;
}
