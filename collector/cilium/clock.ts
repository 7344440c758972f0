// The clock of Cilium's conntrack `lifetime` field, so that expired entries (waiting for Cilium's
// garbage collector) can be told apart from live ones.
//
// Cilium's datapath takes "now" from bpf_mono_now(): in ktime mode CLOCK_MONOTONIC seconds
// (bpf_ktime_get_ns() / 1e9); in jiffies mode (agent `--bpf-clock-probe`, kernels with
// bpf_jiffies64) `jiffies64 >> 8`, timeouts scaled by the kernel's HZ. A lifetime is now + timeout.
//
// jiffies are not readable directly by an unprivileged process. podflow takes one sample at start
// from /proc/timer_list ("jiffies: N", root only) and advances it with CLOCK_MONOTONIC × HZ (both tick
// together); without /proc/timer_list it uses the kernel's boot value, jiffies64 = 2^32 − 300·HZ +
// uptime·HZ (INITIAL_JIFFIES, include/linux/jiffies.h), which is within a second of the truth.
//
// HZ comes from CONFIG_HZ (/proc/config.gz, else /boot/config-<release>), else from two
// /proc/timer_list samples 200 ms apart rounded to the nearest of 100/250/300/1000.
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

export type ClockMode = 'ktime' | 'jiffies';

/** CLOCK_MONOTONIC in seconds (fractional). */
export type MonoSeconds = () => number;
export const monoSeconds: MonoSeconds = () => Number(process.hrtime.bigint()) / 1e9;

const INITIAL_JIFFIES_BASE = 2 ** 32;
const KNOWN_HZ = [100, 250, 300, 1000];

export interface HzResult {
  hz: number;
  /** Where it came from, for the start-up log. */
  how: string;
}

export function configHz(text: string): number | undefined {
  const m = /^CONFIG_HZ=(\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

export function readTimerListJiffies(procPath: string): number | undefined {
  try {
    const text = readFileSync(join(procPath, 'timer_list'), 'latin1');
    const m = /^jiffies: (\d+)$/m.exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Kernel HZ: CONFIG_HZ, else measured from /proc/timer_list. Undefined when neither works. */
export async function detectHz(
  procPath: string,
  mono: MonoSeconds = monoSeconds,
): Promise<HzResult | undefined> {
  try {
    const hz = configHz(gunzipSync(readFileSync(join(procPath, 'config.gz'))).toString('latin1'));
    if (hz) return { hz, how: `CONFIG_HZ in ${join(procPath, 'config.gz')}` };
  } catch {}
  const boot = `/boot/config-${release()}`;
  try {
    const hz = configHz(readFileSync(boot, 'latin1'));
    if (hz) return { hz, how: `CONFIG_HZ in ${boot}` };
  } catch {}
  const j0 = readTimerListJiffies(procPath);
  const t0 = mono();
  if (j0 === undefined) return undefined;
  await new Promise((r) => setTimeout(r, 200));
  const j1 = readTimerListJiffies(procPath);
  const t1 = mono();
  if (j1 === undefined || t1 <= t0) return undefined;
  const measured = (j1 - j0) / (t1 - t0);
  let best = KNOWN_HZ[0];
  for (const hz of KNOWN_HZ) if (Math.abs(hz - measured) < Math.abs(best - measured)) best = hz;
  return { hz: best, how: `measured from ${join(procPath, 'timer_list')} (${measured.toFixed(0)}/s)` };
}

/** "now" in lifetime units for one clock mode. */
export interface LifetimeClock {
  mode: ClockMode;
  /** Current time in the units of `lifetime` (u32, may wrap). */
  now(): number;
  /** Lifetime units per second. */
  unitsPerSecond: number;
}

export function ktimeClock(mono: MonoSeconds = monoSeconds): LifetimeClock {
  return { mode: 'ktime', unitsPerSecond: 1, now: () => Math.floor(mono()) >>> 0 };
}

/**
 * jiffies mode: `jiffies64 >> 8`. `sample` is a jiffies value read at `sampleMono` (from
 * /proc/timer_list); without it the boot value of jiffies is used.
 */
export function jiffiesClock(
  hz: number,
  mono: MonoSeconds = monoSeconds,
  sample?: { jiffies: number; mono: number },
): LifetimeClock {
  const base = sample ?? { jiffies: INITIAL_JIFFIES_BASE - 300 * hz, mono: 0 };
  return {
    mode: 'jiffies',
    unitsPerSecond: hz / 256,
    now: () => Math.floor((base.jiffies + (mono() - base.mono) * hz) / 256) >>> 0,
  };
}

/** True when `lifetime` is before `now` (u32 arithmetic: both may have wrapped). */
export const expired = (lifetime: number, now: number): boolean => ((lifetime - now) | 0) < 0;

/**
 * How well `clock` explains the lifetimes seen: the share of entries whose lifetime lies between
 * `now - maxAgeSeconds` (expired, not yet collected) and `now + maxAheadSeconds` (the longest
 * timeout). The two modes' "now" differ by ~2^24 units, so the wrong mode explains almost none.
 */
export function plausibleShare(
  lifetimes: Uint32Array,
  n: number,
  clock: LifetimeClock,
  maxAgeSeconds = 24 * 3600,
  maxAheadSeconds = 2 * 24 * 3600,
): number {
  if (n === 0) return 0;
  const now = clock.now();
  const behind = maxAgeSeconds * clock.unitsPerSecond;
  const ahead = maxAheadSeconds * clock.unitsPerSecond;
  let hits = 0;
  for (let i = 0; i < n; i++) {
    const d = (lifetimes[i] - now) | 0;
    if (d >= -behind && d <= ahead) hits++;
  }
  return hits / n;
}
