import { describe, expect, it } from 'vitest';
import { formatBytes, formatCost, formatRate, formatSeconds } from './format.js';

describe('page number formats', () => {
  it.each([
    [0, '0 B'],
    [-5, '0 B'],
    [999, '999 B'],
    [999.6, '1.00 kB'],
    [1234, '1.23 kB'],
    [12_345, '12.3 kB'],
    [123_456, '123 kB'],
    [99_960, '100 kB'],
    [1.5e9, '1.50 GB'],
    [2e18, '2000 PB'],
  ])('bytes %d → %s', (n, text) => {
    expect(formatBytes(n)).toBe(text);
  });

  it('rates, costs and windows', () => {
    expect(formatRate(2500)).toBe('2.50 kB/s');
    expect(formatCost(null)).toBe('—');
    expect(formatCost(0)).toBe('$0');
    expect(formatCost(0.00123)).toBe('$0.0012');
    expect(formatCost(1.5)).toBe('$1.50');
    expect(formatCost(1234.5)).toBe('$1,234.50');
    expect([45, 60, 300, 890, 90, 3600, 299.6].map(formatSeconds)).toEqual([
      '45s',
      '1m',
      '5m',
      '14m50s',
      '1m30s',
      '1h',
      '5m',
    ]);
  });
});
