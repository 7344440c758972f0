// How the page writes numbers: SI units to three significant digits, costs in USD.

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

/** 0 B, 999 B, 1.23 kB, 12.3 MB, 123 GB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n <= 0) return '0 B';
  let u = 0;
  let v = n;
  while (v >= 999.5 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  if (u === 0) return `${Math.round(v)} B`;
  return `${v >= 99.95 ? v.toFixed(0) : v >= 9.995 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[u]}`;
}

export const formatRate = (bytesPerSecond: number): string => `${formatBytes(bytesPerSecond)}/s`;

/** null (no price table) → —; $0, $0.0012, $1.50, $1,234.50. */
export function formatCost(usd: number | null): string {
  if (usd === null || !Number.isFinite(usd)) return '—';
  if (usd === 0) return '$0';
  if (usd < 0.01) return `$${usd.toPrecision(2)}`;
  return `$${usd.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

/** 45s, 5m, 14m50s, 1h: whole seconds as the filters write durations. */
export function formatSeconds(seconds: number): string {
  const s = Math.round(seconds);
  if (s >= 3600 && s % 3600 === 0) return `${s / 3600}h`;
  if (s >= 60) return `${Math.floor(s / 60)}m${s % 60 === 0 ? '' : `${s % 60}s`}`;
  return `${s}s`;
}
