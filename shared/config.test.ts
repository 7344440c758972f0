import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, envName, loadConfig, OPTIONS, parseDuration } from './config.js';

const tmp = mkdtempSync(join(tmpdir(), 'podflow-config-'));
const yamlFile = (name: string, text: string) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};

describe('parseDuration', () => {
  it.each([
    ['5s', 5000],
    ['500ms', 500],
    ['2m', 120_000],
    ['1h30m', 5_400_000],
    ['1.5s', 1500],
    ['0s', 0],
  ])('%s = %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', '5', 's', '5x', '-1s', '5s ', 'abc'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('loadConfig', () => {
  it('gives the contract defaults', () => {
    const c = loadConfig({ command: 'collector', flags: {}, env: { NODE_NAME: 'n1' } });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9470 });
    expect(c.interval).toBe(5000);
    expect(c.source).toBe('auto');
    expect(c.nodeName).toBe('n1');
    expect(c.metricsPrefix).toBe('podflow');
    expect(c.kubeconfig).toBeUndefined();
    expect(loadConfig({ command: 'exporter', flags: {}, env: {} }).listen.port).toBe(9471);
    expect(loadConfig({ command: 'standalone', flags: {}, env: {} }).listen.port).toBe(9471);
  });

  it('takes flags over env over file over defaults', () => {
    const file = yamlFile('prec.yaml', 'interval: 7s\nsource: netfilter\nlog-level: warn\n');
    const env = { PODFLOW_INTERVAL: '3s', PODFLOW_SOURCE: 'cilium' };
    const c = loadConfig({ command: 'collector', flags: { config: file, interval: '1s' }, env });
    expect(c.interval).toBe(1000); // flag
    expect(c.source).toBe('cilium'); // env
    expect(c.logLevel).toBe('warn'); // file
    expect(c.procPath).toBe('/proc'); // default
  });

  it('reads the config file from PODFLOW_CONFIG', () => {
    const file = yamlFile('env.yaml', 'interval: 9\n');
    expect(loadConfig({ command: 'collector', flags: {}, env: { PODFLOW_CONFIG: file } }).interval).toBe(
      9000,
    );
  });

  it('parses lists, booleans, headers and addresses', () => {
    // ${TOKEN} is kept as written: the HTTP sink expands it when it builds its headers.
    const token = '$' + '{TOKEN}';
    const c = loadConfig({
      command: 'standalone',
      flags: { 'exclude-namespaces': 'kube-system, monitoring', 'host-network': true, listen: '[::1]:9999' },
      env: {
        PODFLOW_HTTP_SINK_HEADERS: `Authorization=Bearer ${token},X-A=b=c`,
        PODFLOW_GROUP_PUBLIC_IPS: 'false',
      },
    });
    expect(c.excludeNamespaces).toEqual(['kube-system', 'monitoring']);
    expect(c.hostNetwork).toBe(true);
    expect(c.groupPublicIps).toBe(false);
    expect(c.listen).toEqual({ host: '::1', port: 9999 });
    expect(c.httpSinkHeaders).toEqual({ Authorization: `Bearer ${token}`, 'X-A': 'b=c' });
  });

  it('accepts YAML mappings and lists', () => {
    const file = yamlFile(
      'lists.yaml',
      'http-sink-headers:\n  X-Token: abc\nmetrics-labels: [src_namespace, proto]\n',
    );
    const c = loadConfig({ command: 'exporter', flags: { config: file }, env: {} });
    expect(c.httpSinkHeaders).toEqual({ 'X-Token': 'abc' });
    expect(c.metricsLabels).toEqual(['src_namespace', 'proto']);
  });

  // Each bad input stops start-up with one line that names where the value came from.
  it.each([
    [{ flags: { interval: 'abc' }, env: {} }, 'invalid --interval: expected a duration like 5s, 500ms or 2m'],
    [{ flags: {}, env: { PODFLOW_SOURCE: 'ebpf' } }, 'invalid PODFLOW_SOURCE: expected one of'],
    [{ flags: {}, env: { PODFLOW_INTERVL: '5s' } }, 'unknown environment variable PODFLOW_INTERVL'],
    [{ flags: { listen: '9470' }, env: {} }, 'invalid --listen: expected host:port'],
    [
      { flags: { 'backlog-max-flows': '12.5' }, env: {} },
      'invalid --backlog-max-flows: expected a whole number',
    ],
    [{ flags: { 'backlog-max-flows': '10' }, env: {} }, 'expected a whole number ≥ 1000'],
    [{ flags: { 'conntrack-acct': 'maybe' }, env: {} }, 'invalid --conntrack-acct'],
  ])('rejects %j', (src, message) => {
    expect(() => loadConfig({ command: 'collector', ...src })).toThrow(ConfigError);
    expect(() => loadConfig({ command: 'collector', ...src })).toThrow(message);
  });

  it('names unknown and bad keys of the config file', () => {
    const unknown = yamlFile('unknown.yaml', 'intervall: 5s\n');
    expect(() => loadConfig({ command: 'collector', flags: { config: unknown }, env: {} })).toThrow(
      `unknown key "intervall" in ${unknown}`,
    );
    const bad = yamlFile('bad.yaml', 'interval: soon\n');
    expect(() => loadConfig({ command: 'collector', flags: { config: bad }, env: {} })).toThrow(
      `invalid "interval" in ${bad}: expected a duration`,
    );
    const notMap = yamlFile('list.yaml', '- a\n- b\n');
    expect(() => loadConfig({ command: 'collector', flags: { config: notMap }, env: {} })).toThrow(
      'expected a mapping of option: value',
    );
    const broken = yamlFile('broken.yaml', 'a: [\n');
    expect(() => loadConfig({ command: 'collector', flags: { config: broken }, env: {} })).toThrow(
      'not valid YAML',
    );
    expect(() =>
      loadConfig({ command: 'collector', flags: { config: join(tmp, 'missing.yaml') }, env: {} }),
    ).toThrow('cannot read the file');
  });

  it('rejects options given to a command they do not apply to', () => {
    expect(() =>
      loadConfig({ command: 'collector', flags: {}, env: { PODFLOW_HTTP_SINK_URL: 'http://x/' } }),
    ).toThrow('PODFLOW_HTTP_SINK_URL does not apply to "podflow collector"');
  });

  it('rejects non-http sink URLs', () => {
    expect(() => loadConfig({ command: 'exporter', flags: { 'http-sink-url': 'ftp://x' }, env: {} })).toThrow(
      'invalid --http-sink-url: expected an http:// or https:// URL',
    );
  });

  it('names every option PODFLOW_<UPPER_SNAKE>', () => {
    expect(envName('http-sink-url')).toBe('PODFLOW_HTTP_SINK_URL');
    for (const name of Object.keys(OPTIONS)) expect(envName(name)).toMatch(/^PODFLOW_[A-Z0-9_]+$/);
  });
});
