import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, PRICE_KEYS } from '../shared/config.js';
import { costOf, PRESETS, PRICES_AS_OF, presetOfProvider, priceTable } from './prices.js';

const doc = readFileSync(new URL('../docs/cost.md', import.meta.url), 'utf8');

describe('presets', () => {
  // The table in docs/cost.md is what users read: the code must hold the same numbers.
  it('match the documented table, key by key', () => {
    const rows = doc.split('\n').filter((l) => /^\| `[a-z-]+` +\|( [\d.]+ +\|){4}$/.test(l));
    const documented = Object.fromEntries(
      rows.map((l) => {
        const cells = l.split('|').map((c) => c.trim());
        return [cells[1].replace(/`/g, ''), cells.slice(2, 6).map(Number)];
      }),
    );
    expect(Object.keys(documented).sort()).toEqual([...PRICE_KEYS].sort());
    for (const key of PRICE_KEYS) {
      expect([PRESETS.aws[key], PRESETS.gcp[key], PRESETS.azure[key], PRESETS.none[key]], key).toEqual(
        documented[key],
      );
    }
    expect(doc).toContain(`recorded **${PRICES_AS_OF}**`);
  });

  it('known list prices', () => {
    expect(PRESETS.aws).toMatchObject({ 'cross-zone': 0.02, internet: 0.09, 'nat-gateway': 0.045 });
    expect(PRESETS.gcp).toMatchObject({ 'cross-zone': 0.01, internet: 0.12 });
    expect(PRESETS.azure).toMatchObject({ 'cross-zone': 0, 'cross-region': 0.02, internet: 0.087 });
    for (const p of Object.values(PRESETS)) {
      expect(p['same-zone']).toBe(0);
      expect(p['internet-ingress']).toBe(0);
    }
  });

  it.each([
    ['aws', 'aws'],
    ['gce', 'gcp'],
    ['azure', 'azure'],
    ['kind', 'none'],
    [undefined, 'none'],
  ])('providerID scheme %s → %s', (scheme, preset) => {
    expect(presetOfProvider(scheme)).toBe(preset);
  });
});

describe('priceTable', () => {
  it('nat-gateway is 0 unless asked for; preset takes the preset price', () => {
    expect(priceTable('aws', {}).perGiB['nat-gateway']).toBe(0);
    expect(priceTable('aws', { 'nat-gateway': 'preset' }).perGiB['nat-gateway']).toBe(0.045);
    expect(priceTable('gcp', { 'nat-gateway': 0.05 }).perGiB['nat-gateway']).toBe(0.05);
  });

  it('overrides only the keys given', () => {
    const t = priceTable('aws', { 'cross-zone': 0.02, internet: 0.1 });
    expect(t.perGiB).toMatchObject({
      'cross-zone': 0.02,
      internet: 0.1,
      'cross-region': 0.02,
      private: 0.02,
    });
    expect(costOf(t, 'internet', true, 2 ** 30, 2 ** 30)).toBeCloseTo(0.1, 15);
  });

  it('none prices nothing but what --prices sets', () => {
    const t = priceTable('none', { 'cross-region': 0.03 });
    expect(costOf(t, 'cross-zone', false, 2 ** 40, 0)).toBe(0);
    expect(costOf(t, 'cross-region', false, 2 ** 31, 0)).toBeCloseTo(0.06, 15);
  });
});

describe('--prices, --cloud and --destinations-file options', () => {
  const load = (flags: Record<string, unknown>) => loadConfig({ command: 'exporter', flags, env: {} });
  const failure = (flags: Record<string, unknown>) => {
    try {
      load(flags);
      return '';
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
  };

  it('defaults: --cloud auto, no overrides, no file', () => {
    const c = load({});
    expect([c.cloud, c.prices, c.destinationsFile]).toEqual(['auto', {}, undefined]);
  });

  it('parses class=price pairs, preset, and numbers in YAML form', () => {
    expect(load({ prices: 'cross-zone=0.02, internet=0.1,nat-gateway=preset' }).prices).toEqual({
      'cross-zone': 0.02,
      internet: 0.1,
      'nat-gateway': 'preset',
    });
    expect(load({ prices: { 'internet-ingress': 0, private: '1e-3' } }).prices).toEqual({
      'internet-ingress': 0,
      private: 0.001,
    });
    expect(loadConfig({ command: 'standalone', flags: {}, env: { PODFLOW_CLOUD: 'gcp' } }).cloud).toBe('gcp');
  });

  it.each([
    [
      'cross-zone',
      /^invalid --prices: expected class=price pairs like cross-zone=0\.02,internet=0\.09, got "cross-zone"$/,
    ],
    [
      'egress=0.1',
      /^invalid --prices: unknown key "egress": expected same-zone, cross-zone, cross-region, internet, private, unknown, internet-ingress or nat-gateway, got "egress=0\.1"$/,
    ],
    [
      'internet=-1',
      /^invalid --prices: internet: expected a price per GiB of 0 or more like 0\.02, or preset, got "internet=-1"$/,
    ],
    ['internet=0.1,internet=0.2', /^invalid --prices: internet is given twice/],
    ['internet=free', /^invalid --prices: internet: expected a price per GiB/],
  ])('refuses --prices %s in one line', (value, want) => {
    expect(failure({ prices: value })).toMatch(want);
  });

  it('refuses an unknown cloud, and the options on the collector', () => {
    expect(failure({ cloud: 'oracle' })).toBe(
      'invalid --cloud: expected auto, aws, gcp, azure or none, got "oracle"',
    );
    expect(() => loadConfig({ command: 'collector', flags: { prices: 'internet=1' }, env: {} })).toThrow(
      '--prices does not apply to "podflow collector" (only exporter, standalone)',
    );
  });
});
