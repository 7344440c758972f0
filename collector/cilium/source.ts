// ConntrackSource over Cilium's BPF conntrack maps (cilium_ct{4,_any4,6,_any6}_global), read through
// podflow's read-only addon (native/index.ts). See docs/cilium.md.
//
// Each tick: check every pin (a new map id means Cilium re-created the map: reopen), read each map
// in chunks of CHUNK entries (BPF_MAP_LOOKUP_BATCH, or the per-key walk where the kernel lacks
// batch lookups), and hand every OUT/IN entry to the tracker as a ConnSample. Value layout (≤1.15 or
// ≥1.16) and lifetime clock (ktime or jiffies) are configured or detected from the entries.
//
// Expired entries (lifetime passed, waiting for Cilium's GC) are reported once more with their final
// counters, then left out so the tracker forgets them. Cilium revives such an entry, counters and all,
// when the tuple is used again; podflow then reports only what was added since it expired.
import { join } from 'node:path';
import {
  BPF_MAP_TYPE_HASH,
  BPF_MAP_TYPE_LRU_HASH,
  type Bpf,
  type BpfError,
  CURSOR_SIZE,
  isBatchUnsupported,
  isDone,
  loadBpf,
  type ReadMode,
} from '../../native/index.js';
import { u32le } from '../../shared/bytes.js';
import { StartupError } from '../../shared/errors.js';
import { type Logger, silentLogger } from '../../shared/log.js';
import type { ConnSample, ConntrackSource, ReadStats } from '../source.js';
import {
  detectHz,
  expired,
  jiffiesClock,
  ktimeClock,
  type LifetimeClock,
  type MonoSeconds,
  monoSeconds,
  plausibleShare,
  readTimerListJiffies,
} from './clock.js';
import {
  CiliumSample,
  CT_MAPS,
  CT_VALUE_SIZE,
  fillSample,
  type Layout,
  layoutEvidence,
  TUPLE_F_RELATED,
  TUPLE_F_SERVICE,
  valueView,
} from './ct.js';

/** Entries read per system call (and parsed before the next): ~0.75 MB of buffers for IPv6. */
const CHUNK = 8192;
const LIFETIME_SAMPLE = 4096;
const VALUE_WORDS = CT_VALUE_SIZE / 4;
/** Reads between two detection attempts while the layout or clock is still unknown. */
const DETECT_EVERY = 12;

export interface CiliumSourceConfig {
  /** Where the maps are pinned (option `cilium-bpf-path`). */
  ciliumBpfPath: string;
  ciliumLayout: 'auto' | 'v1.15' | 'v1.16';
  ciliumClock: 'auto' | 'ktime' | 'jiffies';
  /** The host's /proc (option `proc-path`): HZ and jiffies for the jiffies clock. */
  procPath: string;
}

export interface CiliumSourceDeps {
  log?: Logger;
  /** The addon; loaded in start() when not given. */
  bpf?: Bpf;
  /** `auto` (batch, falling back to per-key where unsupported), or force one path (tests, benchmarks). */
  readMode?: 'auto' | ReadMode;
  /** CLOCK_MONOTONIC seconds (injectable for tests). */
  mono?: MonoSeconds;
}

interface MapState {
  name: string;
  path: string;
  family: 4 | 6;
  keySize: number;
  fd: number | undefined;
  id: number;
  maxEntries: number;
  mode: ReadMode;
  /** Read at the previous tick (a map that just vanished makes the read incomplete once). */
  present: boolean;
}

/**
 * An entry podflow saw expire. `state` 0: its final counters were reported and it is left out while
 * expired. 1: Cilium revived it (the tuple was used again before its GC ran): it is reported as a
 * new connection — identity `key2 ^ salt`, counters minus those at expiry — so that neither the
 * tracker's memory of the old connection nor its forgetting can count the old bytes again.
 */
interface Expired {
  key2: number;
  state: 0 | 1;
  salt: number;
  origBytes: number;
  origPackets: number;
  replyBytes: number;
  replyPackets: number;
  seen: number;
}

export class CiliumSource implements ConntrackSource {
  readonly name = 'cilium' as const;
  private readonly log: Logger;
  private readonly mono: MonoSeconds;
  private bpf: Bpf | undefined;
  private readonly maps: MapState[];
  private layout: Layout | undefined;
  private clock: LifetimeClock | undefined;
  private hz: number | undefined;
  private jiffiesSample: { jiffies: number; mono: number } | undefined;
  private readonly sample = new CiliumSample();
  private readonly keys: Buffer;
  private readonly values: Buffer;
  private readonly values32: Uint32Array;
  private readonly cursor = Buffer.alloc(CURSOR_SIZE);
  private readonly lifetimes = new Uint32Array(LIFETIME_SAMPLE);
  private readonly expired = new Map<number, Expired>();
  private gen = 0;
  private salt = 0;
  /** Read number from which layout/clock detection may run again. */
  private nextDetect = 0;
  private warnedNoCounters = false;
  private readonly forcedMode: ReadMode | undefined;

  constructor(
    private readonly config: CiliumSourceConfig,
    deps: CiliumSourceDeps = {},
  ) {
    this.log = deps.log ?? silentLogger;
    this.mono = deps.mono ?? monoSeconds;
    this.bpf = deps.bpf;
    const forced = deps.readMode === 'each' || deps.readMode === 'batch' ? deps.readMode : undefined;
    this.maps = CT_MAPS.map((m) => ({
      name: m.name,
      path: join(config.ciliumBpfPath, m.name),
      family: m.family,
      keySize: m.keySize,
      fd: undefined,
      id: 0,
      maxEntries: 0,
      mode: forced ?? 'batch',
      present: false,
    }));
    this.forcedMode = forced;
    this.layout = config.ciliumLayout === 'auto' ? undefined : config.ciliumLayout;
    this.keys = Buffer.alloc(CHUNK * 38);
    this.values = Buffer.alloc(CHUNK * CT_VALUE_SIZE);
    this.values32 = valueView(this.values);
  }

  /** The value layout in use (configured or detected); undefined until detected. */
  get currentLayout(): Layout | undefined {
    return this.layout;
  }

  /** The lifetime clock in use; undefined until detected. */
  get currentClock(): LifetimeClock['mode'] | undefined {
    return this.clock?.mode;
  }

  async start(): Promise<void> {
    const dir = this.config.ciliumBpfPath;
    try {
      this.bpf ??= loadBpf();
    } catch (err) {
      throw new StartupError(`--source cilium: ${(err as Error).message}`);
    }
    let opened = 0;
    for (const m of this.maps) {
      try {
        if (this.refresh(m)) opened++;
      } catch (err) {
        throw new StartupError(startupMessage(err, m, dir));
      }
    }
    if (opened === 0) {
      throw new StartupError(
        `--source cilium: no Cilium conntrack map under ${dir} (${CT_MAPS.map((m) => m.name).join(', ')}): is Cilium running on this node, and the host's /sys/fs/bpf mounted at --cilium-bpf-path?`,
      );
    }
    if (this.config.ciliumClock !== 'ktime') {
      const hz = await detectHz(this.config.procPath, this.mono);
      if (hz) {
        this.hz = hz.hz;
        const jiffies = readTimerListJiffies(this.config.procPath);
        if (jiffies !== undefined) this.jiffiesSample = { jiffies, mono: this.mono() };
        this.log.info({ hz: hz.hz, how: hz.how }, 'kernel HZ');
      } else {
        this.log.warn(
          { procPath: this.config.procPath },
          'kernel HZ unknown (no CONFIG_HZ, no /proc/timer_list): jiffies lifetimes cannot be read, expired entries are reported until Cilium removes them',
        );
      }
    }
    if (this.config.ciliumClock === 'ktime') this.clock = ktimeClock(this.mono);
    if (this.config.ciliumClock === 'jiffies' && this.hz !== undefined) {
      this.clock = jiffiesClock(this.hz, this.mono, this.jiffiesSample);
    }
    this.log.info(
      {
        path: dir,
        maps: this.maps.filter((m) => m.fd !== undefined).map((m) => `${m.name} (${m.maxEntries})`),
        layout: this.layout ?? 'detect',
        clock: this.clock?.mode ?? 'detect',
      },
      'reading Cilium conntrack maps',
    );
  }

  async read(visit: (s: ConnSample) => void): Promise<ReadStats> {
    const bpf = this.bpf;
    if (!bpf) throw new Error('cilium source: read() before start()');
    this.gen++;
    let interrupted = false;
    for (const m of this.maps) {
      const wasPresent = m.present;
      m.present = this.refresh(m);
      if (!m.present && wasPresent) interrupted = true; // gone (Cilium restarting): keep its connections once
    }
    if (this.needsDetection() && this.gen >= this.nextDetect) {
      await this.detect(bpf);
      // Undecided (no counters, no entries): try again later, not on every tick (it costs a read).
      if (this.needsDetection()) this.nextDetect = this.gen + DETECT_EVERY;
    }
    const now = this.clock?.now() ?? 0;
    let entries = 0;
    for (const m of this.maps) {
      if (m.fd === undefined) continue;
      // Values land in this.values, which this.values32 views.
      const r = await this.readMap(bpf, m, (keys, _values, n) => {
        entries += n;
        this.visitChunk(m, keys, n, now, visit);
      });
      if (!r) interrupted = true;
    }
    if (!interrupted) {
      for (const [k, e] of this.expired) if (e.seen !== this.gen) this.expired.delete(k);
    }
    return { entries, parseErrors: 0, interrupted };
  }

  drainEnded(): void {
    // Cilium has no end-of-connection events: ended connections leave the maps and are forgotten.
  }

  async close(): Promise<void> {
    for (const m of this.maps) {
      if (m.fd !== undefined) this.bpf?.close(m.fd);
      m.fd = undefined;
    }
  }

  /**
   * Makes `m.fd` the map currently pinned at `m.path`. Returns false when nothing is pinned there.
   * A pin holding a different map id (Cilium re-created it) replaces the old descriptor.
   */
  private refresh(m: MapState): boolean {
    const bpf = this.bpf!;
    let fd: number;
    try {
      fd = bpf.openPinned(m.path);
    } catch (err) {
      if ((err as BpfError).code !== 'ENOENT') throw err;
      if (m.fd !== undefined) {
        this.log.warn(
          { map: m.name, path: m.path },
          'Cilium conntrack map is gone; waiting for it to come back',
        );
        bpf.close(m.fd);
        m.fd = undefined;
      }
      return false;
    }
    try {
      const info = bpf.mapInfo(fd);
      if (m.fd !== undefined && info.id === m.id) {
        bpf.close(fd);
        return true;
      }
      checkMap(m, info);
      if (m.fd !== undefined) {
        this.log.info(
          { map: m.name, oldId: m.id, newId: info.id },
          'Cilium conntrack map was re-created: reopened',
        );
        bpf.close(m.fd);
        // A new map may come from a different Cilium version or configuration.
        if (this.config.ciliumLayout === 'auto') this.layout = undefined;
        if (this.config.ciliumClock === 'auto') this.clock = undefined;
        this.nextDetect = 0;
      }
      m.fd = fd;
      m.id = info.id;
      m.maxEntries = info.maxEntries;
      return true;
    } catch (err) {
      bpf.close(fd);
      throw err;
    }
  }

  /**
   * Reads all of `m` chunk by chunk. Returns false when the read stopped early (more entries than the
   * map can hold: it kept changing under a per-key walk).
   */
  private async readMap(
    bpf: Bpf,
    m: MapState,
    onChunk: (keys: Buffer, values: Buffer, n: number) => void,
  ): Promise<boolean> {
    const fd = m.fd!;
    const keys = this.keys.subarray(0, CHUNK * m.keySize);
    const values = this.values;
    const cursor = this.cursor;
    cursor.fill(0);
    // The per-key walk restarts after a concurrently deleted key: bound it by the map size.
    const limit = m.maxEntries + CHUNK;
    let total = 0;
    while (!isDone(cursor)) {
      if (total > limit) return false;
      let n: number;
      try {
        n = bpf.readChunk(fd, m.keySize, CT_VALUE_SIZE, keys, values, cursor, m.mode);
      } catch (err) {
        if (m.mode === 'batch' && this.forcedMode === undefined && total === 0 && isBatchUnsupported(err)) {
          this.log.info(
            { map: m.name, code: (err as BpfError).code },
            'batch lookup not supported here: reading entry by entry',
          );
          m.mode = 'each';
          cursor.fill(0);
          continue;
        }
        throw new Error(`reading ${m.path}`, { cause: err });
      }
      total += n;
      if (n > 0) onChunk(keys, values, n);
      // Let the HTTP server and timers run between chunks: a 250k-entry read is ~30 chunks.
      if (!isDone(cursor)) await yieldToLoop();
    }
    return true;
  }

  private visitChunk(
    m: MapState,
    keys: Buffer,
    n: number,
    now: number,
    visit: (s: ConnSample) => void,
  ): void {
    const s = this.sample;
    const v32 = this.values32;
    const clock = this.clock;
    const expiredMap = this.expired;
    for (let i = 0; i < n; i++) {
      if (!fillSample(s, keys, i * m.keySize, v32, i * VALUE_WORDS, m.family, this.layout)) continue;
      const isExpired = clock !== undefined && expired(s.lifetime, now);
      if (expiredMap.size === 0 && !isExpired) {
        visit(s); // the common case
        continue;
      }
      let e = expiredMap.get(s.key);
      if (e !== undefined && e.key2 !== s.key2) e = undefined; // another tuple with the same 53-bit hash
      if (e === undefined) {
        if (isExpired) {
          // Report its final counters once; afterwards it is left out and the tracker forgets it.
          expiredMap.set(s.key, {
            key2: s.key2,
            state: 0,
            salt: 0,
            origBytes: s.origBytes,
            origPackets: s.origPackets,
            replyBytes: s.replyBytes,
            replyPackets: s.replyPackets,
            seen: this.gen,
          });
        }
        visit(s);
        continue;
      }
      e.seen = this.gen;
      if (isExpired && e.state === 0) continue; // still expired: left out
      if (
        s.origBytes < e.origBytes ||
        s.origPackets < e.origPackets ||
        s.replyBytes < e.replyBytes ||
        s.replyPackets < e.replyPackets
      ) {
        // Counters went back: Cilium collected the old entry and created a new one for the tuple.
        expiredMap.delete(s.key);
        if (isExpired) {
          expiredMap.set(s.key, { ...e, state: 0, salt: 0, ...counters(s), seen: this.gen });
        }
        visit(s);
        continue;
      }
      if (e.state === 0) {
        // Revived: from now on a new connection, counting only what was added since it expired.
        e.state = 1;
        this.salt = (this.salt + 0x9e3779b9) >>> 0 || 1;
        e.salt = this.salt;
      }
      const raw = counters(s);
      s.key2 = (s.key2 ^ e.salt) >>> 0;
      s.origBytes -= e.origBytes;
      s.origPackets -= e.origPackets;
      s.replyBytes -= e.replyBytes;
      s.replyPackets -= e.replyPackets;
      visit(s);
      if (isExpired) {
        // The revived connection expired in turn (its final counters just went out).
        Object.assign(e, raw);
        e.state = 0;
      }
    }
  }

  private needsDetection(): boolean {
    return this.layout === undefined || (this.clock === undefined && this.config.ciliumClock === 'auto');
  }

  /** Reads the maps once to detect the value layout and/or the lifetime clock. */
  private async detect(bpf: Bpf): Promise<void> {
    let layout: Layout | undefined;
    let sampled = 0;
    const lifetimes = this.lifetimes;
    for (const m of this.maps) {
      if (m.fd === undefined) continue;
      await this.readMap(bpf, m, (keys, values, n) => {
        if (this.layout === undefined && layout !== 'v1.15') {
          layout = layoutEvidence(keys, values, n, m.keySize, m.family) ?? layout;
        }
        const flagsAt = (m.family === 4 ? 8 : 32) + 5;
        for (let i = 0; i < n && sampled < LIFETIME_SAMPLE; i++) {
          if ((keys[i * m.keySize + flagsAt] & (TUPLE_F_RELATED | TUPLE_F_SERVICE)) !== 0) continue;
          lifetimes[sampled++] = u32le(values, i * CT_VALUE_SIZE + 32);
        }
      });
    }
    if (this.layout === undefined && layout !== undefined) {
      this.layout = layout;
      this.log.info({ layout }, 'Cilium conntrack value layout detected');
    } else if (this.layout === undefined && sampled > 0 && !this.warnedNoCounters) {
      this.warnedNoCounters = true;
      this.log.warn(
        { entries: sampled },
        "Cilium's conntrack entries carry no traffic counters: Cilium ≥ 1.16 counts only with bpf-conntrack-accounting (or set --cilium-layout); flows have no bytes until then",
      );
    }
    if (this.clock === undefined && this.config.ciliumClock === 'auto' && sampled > 0) {
      const k = ktimeClock(this.mono);
      const kShare = plausibleShare(lifetimes, sampled, k);
      let chosen: LifetimeClock | undefined;
      let jShare = 0;
      if (this.hz !== undefined) {
        const j = jiffiesClock(this.hz, this.mono, this.jiffiesSample);
        jShare = plausibleShare(lifetimes, sampled, j);
        if (jShare > kShare && jShare >= 0.5) chosen = j;
      }
      if (chosen === undefined && kShare >= 0.5 && kShare >= jShare) chosen = k;
      if (chosen) {
        this.clock = chosen;
        this.log.info(
          { clock: chosen.mode, ktimeShare: kShare, jiffiesShare: jShare, sampled },
          'Cilium conntrack clock detected',
        );
      }
    }
  }
}

const counters = (s: ConnSample) => ({
  origBytes: s.origBytes,
  origPackets: s.origPackets,
  replyBytes: s.replyBytes,
  replyPackets: s.replyPackets,
});

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Refuses maps whose shape is not Cilium's conntrack: a clear error naming the map and sizes. */
function checkMap(m: MapState, info: { type: number; keySize: number; valueSize: number }): void {
  if (info.keySize !== m.keySize || info.valueSize !== CT_VALUE_SIZE) {
    throw new Error(
      `${m.path}: key size ${info.keySize} and value size ${info.valueSize} bytes, expected ${m.keySize} and ${CT_VALUE_SIZE} (Cilium's conntrack tuple and ct_entry): not a Cilium conntrack map, or a Cilium version podflow does not know`,
    );
  }
  if (info.type !== BPF_MAP_TYPE_LRU_HASH && info.type !== BPF_MAP_TYPE_HASH) {
    throw new Error(`${m.path}: map type ${info.type}, expected a hash or LRU hash map (1 or 9)`);
  }
}

function startupMessage(err: unknown, m: MapState, dir: string): string {
  const code = (err as Partial<BpfError>).code;
  if (code === 'EACCES' || code === 'EPERM') {
    return `--source cilium: permission denied opening ${m.path} (${code}): the collector needs to run as root with CAP_BPF (or CAP_SYS_ADMIN) and the host's /sys/fs/bpf mounted at --cilium-bpf-path (${dir})`;
  }
  return `--source cilium: ${(err as Error).message}`;
}

export function createCiliumSource(config: CiliumSourceConfig, deps: CiliumSourceDeps = {}): CiliumSource {
  return new CiliumSource(config, deps);
}
