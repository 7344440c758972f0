import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  type Command,
  ConfigError,
  type ConfigSources,
  envName,
  FLOW_LABELS,
  loadConfig,
  OPTIONS,
  type OptionName,
  parseDuration,
} from './config.js';

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
    // Go's time.ParseDuration takes a bare 0, and only that bare number.
    ['0', 0],
  ])('%s = %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['', '5', 's', '5x', '-1s', '5s ', 'abc'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('loadConfig', () => {
  it('gives the contract defaults', () => {
    const c = loadConfig({ command: 'collector', flags: {}, env: { NODE_NAME: 'n1' } });
    // Collector and exporter: every address, IPv4 and IPv6. Standalone: this host only.
    expect(c.listen).toEqual({ host: '', port: 9470 });
    expect(c.interval).toBe(5000);
    expect(c.source).toBe('auto');
    expect(c.nodeName).toBe('n1');
    expect(c.metricsPrefix).toBe('podflow');
    expect(c.kubeconfig).toBeUndefined();
    expect(loadConfig({ command: 'exporter', flags: {}, env: {} }).listen).toEqual({ host: '', port: 9471 });
    expect(loadConfig({ command: 'standalone', flags: {}, env: {} }).listen).toEqual({
      host: '127.0.0.1',
      port: 9471,
    });
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
    const file = yamlFile('env.yaml', 'interval: 9s\n');
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
    [
      { flags: {}, env: { PODFLOW_SOURCE: 'ebpf' } },
      'invalid PODFLOW_SOURCE: expected auto, netfilter or cilium, got "ebpf"',
    ],
    [{ flags: {}, env: { PODFLOW_INTERVL: '5s' } }, 'unknown environment variable PODFLOW_INTERVL'],
    [{ flags: { listen: '9470' }, env: {} }, 'invalid --listen: expected host:port'],
    [
      { flags: { 'backlog-max-flows': '12.5' }, env: {} },
      'invalid --backlog-max-flows: expected a whole number',
    ],
    [{ flags: { 'backlog-max-flows': '10' }, env: {} }, 'expected a whole number from 1000 to 10000000'],
    [
      { flags: { 'conntrack-acct': 'maybe' }, env: {} },
      'invalid --conntrack-acct: expected true or false, got "maybe"',
    ],
    [{ flags: { 'node-name': '' }, env: {} }, 'invalid --node-name: expected a non-empty name, got ""'],
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

/** The message loadConfig throws for these sources, or '' when it accepts them. */
function failure(src: Partial<ConfigSources> & { command?: Command }): string {
  try {
    loadConfig({ command: 'standalone', flags: {}, env: {}, ...src });
    return '';
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
}
const flag = (name: string, value: unknown, command: Command = 'standalone') =>
  failure({ command, flags: { [name]: value } });

describe('durations', () => {
  // Above Node's setTimeout limit (2^31-1 ms) a timer fires at once: `--interval 99999999h` read
  // conntrack in a tight loop. Every duration has a maximum, said in the message.
  it.each([
    ['interval', '99999999h', 'standalone', '1h'],
    ['interval', '61m', 'collector', '1h'],
    ['export-interval', '600h', 'exporter', '1h'],
    ['pull-timeout', '11m', 'exporter', '10m'],
    ['http-sink-timeout', '10m1s', 'exporter', '10m'],
    ['shutdown-timeout', '2h', 'collector', '1h'],
    ['pod-retention', '169h', 'collector', '168h'],
    ['metrics-ttl', '9999h', 'standalone', '168h'],
  ] as const)('--%s %s is above its maximum', (name, value, command, max) => {
    expect(flag(name, value, command)).toBe(
      `invalid --${name}: expected a duration like 5s, 500ms or 2m (at most ${max}), got "${value}"`,
    );
  });

  it.each([
    ['interval', '1h'],
    ['export-interval', '1h'],
    ['http-sink-timeout', '10m'],
    ['shutdown-timeout', '1h'],
    ['pod-retention', '168h'],
    ['metrics-ttl', '168h'],
  ])('--%s takes its maximum %s', (name, value) => expect(flag(name, value)).toBe(''));

  it('says both bounds when the text is no duration at all', () => {
    expect(flag('interval', 'soon')).toBe(
      'invalid --interval: expected a duration like 5s, 500ms or 2m (at least 100ms, at most 1h), got "soon"',
    );
    expect(flag('interval', '0')).toBe(
      'invalid --interval: expected a duration like 5s, 500ms or 2m (at least 100ms), got "0"',
    );
  });

  // "0 keeps them": a bare 0 is a duration wherever the minimum is 0, from a flag, env or YAML.
  it('takes a bare 0 in flags, env and YAML', () => {
    const ttl = (src: Partial<ConfigSources>) =>
      loadConfig({ command: 'exporter', flags: {}, env: {}, ...src }).metricsTtl;
    expect(ttl({ flags: { 'metrics-ttl': '0' } })).toBe(0);
    expect(ttl({ env: { PODFLOW_METRICS_TTL: '0' } })).toBe(0);
    expect(ttl({ flags: { config: yamlFile('ttl0.yaml', 'metrics-ttl: 0\n') } })).toBe(0);
    expect(ttl({ flags: { config: yamlFile('ttl0s.yaml', 'metrics-ttl: "0"\n') } })).toBe(0);
    for (const name of ['pod-retention', 'shutdown-timeout']) expect(flag(name, '0')).toBe('');
  });

  // A bare number has no unit: refused everywhere alike (YAML `interval: 5` used to mean 5 s).
  it('refuses other bare numbers in flags, env and YAML alike', () => {
    const msg = (got: string) =>
      `expected a duration like 5s, 500ms or 2m (at least 100ms, at most 1h), got ${got}`;
    expect(flag('interval', '5')).toBe(`invalid --interval: ${msg('"5"')}`);
    expect(failure({ env: { PODFLOW_INTERVAL: '5' } })).toBe(`invalid PODFLOW_INTERVAL: ${msg('"5"')}`);
    const file = yamlFile('bare.yaml', 'interval: 5\n');
    expect(failure({ flags: { config: file } })).toBe(`invalid "interval" in ${file}: ${msg('5')}`);
  });
});

describe('counts', () => {
  it('bounds --pull-max-bytes at 1 GiB', () => {
    expect(flag('pull-max-bytes', '10737418240', 'exporter')).toBe(
      'invalid --pull-max-bytes: expected a whole number from 1024 to 1073741824, got "10737418240"',
    );
    expect(
      loadConfig({ command: 'exporter', flags: { 'pull-max-bytes': '1073741824' }, env: {} }).pullMaxBytes,
    ).toBe(1073741824);
    expect(loadConfig({ command: 'exporter', flags: {}, env: {} }).pullMaxBytes).toBe(128 * 1024 * 1024);
  });

  it.each([
    ['backlog-max-flows', 10_000_000],
    ['http-sink-queue-max', 1_000_000],
    ['http-sink-batch-max', 100_000],
    ['metrics-max-series', 2_000_000],
  ])('bounds --%s at %d', (name, max) => {
    expect(flag(name, String(max))).toBe('');
    expect(flag(name, String(max + 1))).toMatch(
      new RegExp(`^invalid --${name}: expected a whole number from \\d+ to ${max}, got "${max + 1}"$`),
    );
  });

  it('takes only decimal digits (no 1e9, hex or lists from YAML)', () => {
    expect(flag('metrics-max-series', '1e5')).toContain('expected a whole number');
    expect(flag('metrics-max-series', '0x10')).toContain('expected a whole number');
    const file = yamlFile('list-count.yaml', 'metrics-max-series: [5]\n');
    expect(failure({ flags: { config: file } })).toContain('expected a whole number from 1 to 2000000');
  });
});

describe('--http-sink-headers', () => {
  const headers = (value: unknown) => flag('http-sink-headers', value);

  it.each(['Bad Name=x', 'X(y)=1', 'Ä=1', 'X:Y=1'])('refuses a name that is no HTTP token: %j', (value) => {
    expect(headers(value)).toMatch(/^invalid --http-sink-headers: header name ".*" is not an HTTP token$/);
  });

  it.each([
    'Host',
    'content-length',
    'Transfer-Encoding',
    'CONNECTION',
    'Idempotency-Key',
    'Content-Encoding',
  ])('refuses %s, which podflow sets itself (any case)', (name) => {
    expect(headers(`${name}=x`)).toBe(`invalid --http-sink-headers: header ${name} is set by podflow itself`);
  });

  it('refuses a value with CR, LF or NUL without repeating it (it may be a token)', () => {
    for (const bad of ['a\r\nX-Evil: 1', 'a\nb', 'a\u0000b']) {
      const file = yamlFile('hdr.yaml', `http-sink-headers:\n  Authorization: ${JSON.stringify(bad)}\n`);
      const msg = failure({ flags: { config: file } });
      expect(msg).toBe(
        `invalid "http-sink-headers" in ${file}: header Authorization: the value holds a line break or NUL`,
      );
    }
    expect(headers('Authorization=Bearer s3cret,Bad Name=1')).not.toContain('s3cret');
  });

  it('refuses a header given twice', () => {
    expect(headers('X-A=1,x-a=2')).toBe('invalid --http-sink-headers: header x-a is given twice');
  });

  it('allows Content-Type and keeps $ENV references for the sink to expand', () => {
    const token = '$' + '{TOKEN}';
    const c = loadConfig({
      command: 'exporter',
      flags: { 'http-sink-headers': `content-type=application/json,Authorization=Bearer ${token}` },
      env: {},
    });
    expect(c.httpSinkHeaders).toEqual({
      'content-type': 'application/json',
      Authorization: `Bearer ${token}`,
    });
  });
});

describe('URLs', () => {
  it.each([
    ['ftp://10.0.0.1:9470', 'expected http:// or https:// base URLs like http://10.0.0.1:9470'],
    ['http://10.0.0.1:9470/?x=1', 'without a query (?…)'],
    ['http://10.0.0.1:9470/#top', 'without a fragment (#…)'],
    ['http://user:pw@10.0.0.1:9470', 'without user:password@'],
    ['http://10.0.0.1:9470,not a url', 'expected http:// or https:// base URLs'],
  ])('--collectors refuses %s', (value, problem) => {
    const msg = flag('collectors', value, 'exporter');
    expect(msg).toMatch(/^invalid --collectors: expected /);
    expect(msg).toContain(problem);
    expect(msg).not.toContain(':pw@');
  });

  it.each([
    ['ftp://sink/x', 'expected an http:// or https:// URL'],
    ['https://u:secret@sink/x', 'without user:password@'],
    ['https://sink/x#frag', 'without a fragment'],
  ])('--http-sink-url refuses %s', (value, problem) => {
    const msg = flag('http-sink-url', value, 'exporter');
    expect(msg).toMatch(/^invalid --http-sink-url: expected /);
    expect(msg).toContain(problem);
    expect(msg).not.toContain('secret');
  });

  it('takes a sink URL with a query, and collector base URLs with a path', () => {
    const c = loadConfig({
      command: 'exporter',
      flags: {
        'http-sink-url': 'https://logs/ingest?source=podflow',
        collectors: 'http://a:9470/x, https://[fd00::1]:9470',
      },
      env: {},
    });
    expect(c.httpSinkUrl).toBe('https://logs/ingest?source=podflow');
    expect(c.collectors).toEqual(['http://a:9470/x', 'https://[fd00::1]:9470']);
  });
});

describe('--config FILE', () => {
  const load = (file: string) => failure({ flags: { config: file } });

  it('refuses what is not a regular file before reading it', () => {
    // /dev/zero never ends and a FIFO blocks until a writer comes: both hung start-up before.
    expect(load('/dev/zero')).toBe('--config /dev/zero: not a regular file');
    const fifo = join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(load(fifo)).toBe(`--config ${fifo}: not a regular file`);
    const dir = join(tmp, 'dir');
    mkdirSync(dir);
    expect(load(dir)).toBe(`--config ${dir}: not a regular file`);
  });

  it('refuses a file larger than 1 MiB', () => {
    const big = yamlFile('big.yaml', `# ${'x'.repeat(1024 * 1024)}\ninterval: 5s\n`);
    expect(load(big)).toMatch(new RegExp(`^--config ${big}: larger than 1 MiB \\(\\d+ bytes\\)$`));
    const fits = yamlFile('fits.yaml', `# ${'x'.repeat(1000 * 1024)}\ninterval: 5s\n`);
    expect(load(fits)).toBe('');
  });
});

describe('--metrics-labels', () => {
  const labels = (value: unknown) =>
    loadConfig({ command: 'exporter', flags: { 'metrics-labels': value }, env: {} }).metricsLabels;

  it('takes all, the documented default, as every label', () => {
    expect(labels('all')).toEqual([...FLOW_LABELS]);
    expect(loadConfig({ command: 'exporter', flags: {}, env: {} }).metricsLabels).toEqual([...FLOW_LABELS]);
    expect(labels('proto, dst_type')).toEqual(['proto', 'dst_type']);
  });

  it.each([
    ['', 'expected at least one label: all, or a comma-separated list of: src_namespace'],
    [' , ', 'expected at least one label'],
    ['all,proto', 'unknown label "all"'],
    ['proto,proto', 'label proto is given twice'],
    ['pod', 'unknown label "pod": expected all, or a comma-separated list of:'],
  ])('refuses %j', (value, message) => {
    expect(flag('metrics-labels', value, 'exporter')).toContain(`invalid --metrics-labels: ${message}`);
  });
});

describe('--total-shards and --shard', () => {
  const load = (flags: Record<string, unknown>, env: NodeJS.ProcessEnv = {}) =>
    loadConfig({ command: 'exporter', flags, env });

  it('is one shard, number 0, by default', () => {
    const c = load({});
    expect([c.totalShards, c.shard]).toEqual([1, 0]);
  });

  it('takes the shard from a StatefulSet pod name when the total is above 1', () => {
    expect(load({ 'total-shards': '3' }, { POD_NAME: 'podflow-exporter-2' }).shard).toBe(2);
    expect(load({ 'total-shards': '3', 'pod-name': 'podflow-exporter-0' }).shard).toBe(0);
    // Given, it wins over the pod name.
    expect(load({ 'total-shards': '3', shard: '1' }, { POD_NAME: 'podflow-exporter-2' }).shard).toBe(1);
  });

  it('refuses a shard outside the total, and a pod name without an ordinal', () => {
    expect(failure({ command: 'exporter', flags: { 'total-shards': '2', shard: '2' } })).toBe(
      'invalid --shard: expected a whole number from 0 to 1 (below --total-shards 2), got 2',
    );
    expect(
      failure({
        command: 'exporter',
        flags: { 'total-shards': '2' },
        env: { POD_NAME: 'podflow-exporter-5' },
      }),
    ).toBe(
      'invalid --shard (from --pod-name "podflow-exporter-5"): expected a whole number from 0 to 1 (below --total-shards 2), got 5',
    );
    expect(
      failure({ command: 'exporter', flags: { 'total-shards': '2' }, env: { POD_NAME: 'exporter-abc' } }),
    ).toBe(
      '--shard: not given, and --pod-name "exporter-abc" does not end in a StatefulSet ordinal (-N): give --shard from 0 to 1 with --total-shards 2',
    );
    expect(failure({ command: 'exporter', flags: { shard: '1' } })).toContain(
      'expected a whole number from 0 to 0 (below --total-shards 1), got 1',
    );
  });

  it('--cluster-name applies to exporter and standalone', () => {
    expect(load({ 'cluster-name': 'prod-eu' }).clusterName).toBe('prod-eu');
    expect(load({}).clusterName).toBeUndefined();
    expect(failure({ command: 'collector', flags: { 'cluster-name': 'x' } })).toContain(
      'does not apply to "podflow collector"',
    );
  });
});

describe('--listen', () => {
  it.each([
    [':9470', { host: '', port: 9470 }],
    ['0.0.0.0:9470', { host: '0.0.0.0', port: 9470 }],
    ['[::]:9470', { host: '::', port: 9470 }],
    ['[::1]:0', { host: '::1', port: 0 }],
    // The chart writes the pod's host IP between brackets, whatever its family.
    ['[10.1.2.3]:9470', { host: '10.1.2.3', port: 9470 }],
    ['localhost:9470', { host: 'localhost', port: 9470 }],
  ])('takes %s', (value, listen) => {
    expect(loadConfig({ command: 'exporter', flags: { listen: value }, env: {} }).listen).toEqual(listen);
  });

  it.each(['9470', ':99999', '[zz]:1', 'a b:1', '::1:9470', 'host:', '[::1]'])('refuses %j', (value) => {
    expect(flag('listen', value)).toMatch(/^invalid --listen: expected .*host:port, \[v6\]:port or :port/);
  });
});

// Every option, fed a bad value, says so in one plain line naming the flag: no zod wording.
describe('every bad value gets one clean line', () => {
  const BAD: Record<OptionName, unknown> = {
    listen: 'nowhere',
    interval: '5 seconds',
    source: 'ebpf',
    'node-name': '',
    kubeconfig: ' ',
    collectors: 'file:///etc/passwd',
    'http-sink-url': 'localhost:8080',
    'metrics-prefix': 'prom',
    'log-level': 'verbose',
    'proc-path': '',
    'conntrack-acct': 'maybe',
    'pull-lease': '5s',
    'pod-name': 'two words',
    'state-dir': ' ',
    'exclude-namespaces': { a: 1 },
    'host-network': 'on',
    'group-public-ips': '2',
    'backlog-max-flows': '-1',
    'pod-retention': '-5s',
    namespace: '',
    'collector-selector': '',
    'collector-port': '70000',
    'pull-concurrency': '0',
    'pull-timeout': '1d',
    'pull-max-bytes': '1k',
    'export-interval': '15',
    'metrics-labels': 'everything',
    'metrics-ttl': 'never',
    'metrics-pod-ips': 'maybe',
    'metrics-max-series': 'lots',
    'metrics-gzip': 'gzip',
    'http-sink-gzip': 'y',
    'http-sink-headers': 'NoEquals',
    'http-sink-timeout': '10',
    'http-sink-max-retries': '101',
    'http-sink-queue-max': '0',
    'http-sink-batch-max': '',
    'cilium-bpf-path': '',
    'cilium-layout': 'v2',
    'cilium-clock': 'tsc',
    'pull-token-file': '',
    'metrics-auth': 'no way',
    view: 'off',
    'shutdown-timeout': 'forever',
    cloud: 'aws-govcloud',
    prices: 'cross-zone=cheap',
    'destinations-file': '',
    'dns-names': 'sometimes',
    'dns-grace': '2h',
    'total-shards': '0',
    shard: '-1',
    'cluster-name': 'prod east',
  };
  const JARGON =
    /Invalid input|Invalid option|expected string, received|expected number|Too small|Too big|received|\n/;
  const command = (name: OptionName): Command => OPTIONS[name].commands[0];

  it.each(Object.keys(OPTIONS) as OptionName[])('--%s', (name) => {
    expect(name in BAD, `no bad value for --${name} in this table`).toBe(true);
    const msg = flag(name, BAD[name], command(name));
    expect(msg).toMatch(new RegExp(`^invalid --${name}: expected|^invalid --${name}: `));
    expect(msg).not.toMatch(JARGON);
  });

  // Any YAML type, not only strings: a mapping where a scalar belongs, a list where a number does.
  it.each(Object.keys(OPTIONS) as OptionName[])('"%s" in YAML given a mapping or a list', (name) => {
    for (const [i, value] of ['{ a: { b: 1 } }', '[[1]]'].entries()) {
      const file = yamlFile(`type-${name}-${i}.yaml`, `${name}: ${value}\n`);
      const msg = failure({ command: command(name), flags: { config: file } });
      expect(msg).toMatch(new RegExp(`^invalid "${name}" in ${file}: `));
      expect(msg).not.toMatch(JARGON);
    }
  });
});

describe('the sinks map (egressd exporter format)', () => {
  const fixture = (name: string) =>
    readFileSync(new URL(`../test/fixtures/egressd/${name}`, import.meta.url), 'utf8');
  /** exporter.config of one of egressd's Helm values files: the exporter's config file. */
  const exporterConfig = (values: string) =>
    (parseYaml(values) as { exporter: { config: string } }).exporter.config;
  const load = (name: string, text: string, env: NodeJS.ProcessEnv = {}) =>
    loadConfig({ command: 'exporter', flags: { config: yamlFile(name, text) }, env });

  it("loads egressd's config test file as it is", () => {
    const c = load('egressd-config-test.yaml', fixture('config_test.yaml'), { API_KEY_ENV_VAR: 's3cret' });
    expect(c.exportInterval).toBe(60_000);
    expect(c.namespace).toBe('egressd');
    expect(c.sinks).toEqual([
      {
        kind: 'http',
        name: 'castai',
        url: 'https://api.cast.ai',
        method: 'POST',
        gzip: true,
        encoding: 'protobuf',
        headers: { 'X-Api-Key': 's3cret' },
        timeout: 30_000,
        maxRetries: 5,
        queueMax: 100_000,
        batchMax: 10_000,
        fields: {},
        omitEmpty: false,
      },
      {
        kind: 'prom_remote_write',
        name: 'prom',
        url: 'http://prometheus:8428/api/v1/write',
        headers: { 'X-Scope-OrgID': 'org-id' },
        labels: { 'label-key': 'label-value' },
        gzip: false,
        timeout: 30_000,
        batchMax: 5000,
      },
    ]);
  });

  it("loads egressd's demo and Tilt exporter configs (remote write to VictoriaMetrics)", () => {
    const demo = load('egressd-demo.yaml', exporterConfig(fixture('egressd-demo-values.yaml')));
    expect(demo.exportInterval).toBe(15_000);
    expect(demo.sinks).toMatchObject([
      {
        kind: 'prom_remote_write',
        name: 'prom_sink',
        url: 'http://egressd-victoria:8428/api/v1/write',
        headers: { 'My-Optional-Header': 'my-header-value' },
        labels: { my_custom_label: 'label_value' },
      },
    ]);
    const tilt = load('egressd-tilt.yaml', exporterConfig(fixture('values-tilt.yaml')));
    expect(tilt.exportInterval).toBe(10_000);
    expect(tilt.sinks).toMatchObject([
      {
        kind: 'prom_remote_write',
        name: 'tilt_prom',
        url: 'http://victoria-metrics-single-server:8428/api/v1/write',
      },
    ]);
  });

  it("loads the egressd chart's default exporter config, rendered with an API key", () => {
    // The chart's template with the API key set: the `if` kept, the API URL filled in.
    const text = exporterConfig(fixture('values.yaml'))
      .split('\n')
      .filter((l) => !/^\s*\{\{-? (if|end)/.test(l))
      .join('\n')
      .replace('{{.Values.castai.apiURL}}', 'https://api.cast.ai');
    const c = load('egressd-chart.yaml', text, { CLUSTER_ID: 'c-42', API_KEY: 'k' });
    expect(c.sinks).toMatchObject([
      {
        kind: 'http',
        name: 'castai',
        url: 'https://api.cast.ai/v1/kubernetes/clusters/c-42/egressd-metrics',
        encoding: 'protobuf',
        gzip: true,
        method: 'POST',
        headers: { 'X-API-Key': 'k' },
      },
    ]);
  });

  it('takes several sinks of each kind, with podflow options and defaults from --http-sink-*', () => {
    const c = load(
      'many.yaml',
      [
        'http-sink-max-retries: 2',
        'sinks:',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
        '  a: {http: {url: "http://${HOST}/a", fields: {env: prod, n: 1}, omit_empty: true, headers: {Content-Type: application/json}}}',
        '  b: {http: {url: "http://127.0.0.1/b", method: put, batch_max: 10}}',
        '  l: {loki: {url: "http://127.0.0.1:3100/loki/api/v1/push", labels: {job: podflow}}}',
        '  o: {otlp_logs: {url: "http://127.0.0.1:4318/v1/logs", resource: {service.name: podflow}}}',
        '  m: {otlp_metrics: {url: "http://127.0.0.1:4318/v1/metrics"}}',
        '  r: {prom_remote_write: {url: "http://127.0.0.1:9090/api/v1/write", batch_max: 100}}',
      ].join('\n'),
      { HOST: '127.0.0.1:8080' },
    );
    expect(c.sinks.map((s) => `${s.name}:${s.kind}`)).toEqual([
      'a:http',
      'b:http',
      'l:loki',
      'o:otlp_logs',
      'm:otlp_metrics',
      'r:prom_remote_write',
    ]);
    expect(c.sinks[0]).toMatchObject({
      url: 'http://127.0.0.1:8080/a',
      fields: { env: 'prod', n: '1' },
      omitEmpty: true,
      encoding: 'json',
      maxRetries: 2,
      headers: { 'Content-Type': 'application/json' },
    });
    expect(c.sinks[1]).toMatchObject({ method: 'PUT', batchMax: 10 });
    expect(c.sinks[2]).toMatchObject({
      streamLabels: ['src_namespace', 'src_node'],
      labels: { job: 'podflow' },
    });
    expect(
      loadConfig({
        command: 'collector',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
        flags: { config: yamlFile('c.yaml', 'sinks: {a: {http: {url: "${NOPE}"}}}') },
        env: {},
      }).sinks,
    ).toEqual([]);
  });

  // Each problem is one line naming the path in the map.
  it.each([
    ['sinks: [1]', 'invalid sinks in F: expected a mapping of sink name to sink'],
    ['sinks: {a: {kafka: {}}}', 'invalid sinks.a.kafka in F: unknown sink kind'],
    [
      'sinks: {a: {http: {url: "http://x"}, loki: {url: "http://x"}}}',
      'invalid sinks.a in F: expected exactly one of',
    ],
    ['sinks: {a: {http: {}}}', 'invalid sinks.a.http.url in F: required'],
    [
      'sinks: {a: {http: {url: "ftp://x"}}}',
      'invalid sinks.a.http.url in F: expected an http:// or https:// URL',
    ],
    [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
      'sinks: {a: {http: {url: "http://${NOPE}/"}}}',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
      'invalid sinks.a.http.url in F: uses ${NOPE} but NOPE is not set',
    ],
    [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
      'sinks: {a: {http: {url: "http://x", headers: {X-Key: "${NOPE}"}}}}',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the ${ENV} syntax of the file
      'invalid sinks.a.http.headers.X-Key in F: uses ${NOPE}',
    ],
    [
      'sinks: {a: {http: {url: "http://x", encoding: avro}}}',
      'invalid sinks.a.http.encoding in F: expected json or protobuf, got "avro"',
    ],
    [
      'sinks: {a: {http: {url: "http://x", timeout: 5}}}',
      'invalid sinks.a.http.timeout in F: expected a duration',
    ],
    [
      'sinks: {a: {http: {url: "http://x", method: GET}}}',
      'invalid sinks.a.http.method in F: expected POST, PUT or PATCH',
    ],
    ['sinks: {a: {http: {url: "http://x", urls: 1}}}', 'invalid sinks.a.http.urls in F: unknown key'],
    [
      'sinks: {a: {http: {url: "http://x", headers: {Content-Encoding: br}}}}',
      'invalid sinks.a.http.headers in F: header Content-Encoding is set by podflow itself',
    ],
    [
      'sinks: {a: {prom_remote_write: {url: "http://x", labels: {src_pod: x}}}}',
      'invalid sinks.a.prom_remote_write.labels.src_pod in F: a flow label',
    ],
    [
      'sinks: {a: {loki: {url: "http://x", stream_labels: [dst_ip]}}}',
      'invalid sinks.a.loki.stream_labels in F: "dst_ip" is not a low-cardinality field',
    ],
    ['sinks: {"a b": {http: {url: "http://x"}}}', 'invalid sinks.a b in F: a sink name is'],
    ['sinks: {prometheus: {http: {url: "http://x"}}}', 'invalid sinks.prometheus in F: the name prometheus'],
    [
      'http-sink-url: http://x\nsinks: {http: {http: {url: "http://x"}}}',
      'invalid sinks.http in F: the name http is the sink of --http-sink-url',
    ],
    [
      'exportInterval: 5s\nexport-interval: 5s',
      '"exportInterval" and "export-interval" in F are the same option',
    ],
    ['exportInterval: 5', 'invalid "exportInterval" in F: expected a duration'],
  ])('%s', (text, message) => {
    const file = yamlFile('bad-sinks.yaml', text);
    let msg = '';
    try {
      loadConfig({ command: 'exporter', flags: { config: file }, env: {} });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      msg = (err as Error).message;
    }
    expect(msg).toContain(message.replace(' F', ` ${file}`));
    expect(msg).not.toContain('\n');
  });
});
