// The real executable (`node bin/podflow.js`, built by `npm run build`) against bad options: every
// start-up failure of configuration or bind exits 2 with one line on stderr, before anything on the
// host changed. Also --version, podflow_build_info, and the --listen defaults (in network namespaces
// of the test's own, where binding every address exposes nothing).
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, createNetns, httpStatus, kill, type Netns, requireRoot } from './helpers/netns.js';
import { freePort } from './helpers/ports.js';
import { waitFor } from './helpers/wait.js';

const BIN = new URL('../bin/podflow.js', import.meta.url).pathname;
const VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
/** No kubeconfig to find, whatever the machine has. */
const NO_KUBE = { HOME: '/nonexistent', KUBECONFIG: '', KUBERNETES_SERVICE_HOST: '' };
const root = requireRoot();
const tmp = mkdtempSync(join(tmpdir(), 'podflow-cli-'));

afterAll(() => cleanupAll());

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Waits for a child's exit (killed after 15 s: a hang fails the test instead of blocking it). */
async function exitOf(child: ChildProcess): Promise<Exit> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

function podflow(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Exit> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PODFLOW_')));
  return exitOf(
    spawn(process.execPath, [BIN, ...args], {
      env: { ...clean, ...NO_KUBE, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}

describe('bad options: exit 2, one line on stderr', () => {
  const file = (name: string, text: string) => {
    const p = join(tmp, name);
    writeFileSync(p, text);
    return p;
  };

  it.each([
    [
      ['collector', '--interval', '99999999h'],
      'invalid --interval: expected a duration like 5s, 500ms or 2m (at most 1h), got "99999999h"',
    ],
    [
      ['exporter', '--export-interval', '600h'],
      'invalid --export-interval: expected a duration like 5s, 500ms or 2m (at most 1h), got "600h"',
    ],
    [
      ['exporter', '--pull-max-bytes', '10737418240'],
      'invalid --pull-max-bytes: expected a whole number from 1024 to 1073741824, got "10737418240"',
    ],
    [
      ['exporter', '--http-sink-headers', 'Host=evil.example'],
      'invalid --http-sink-headers: header Host is set by podflow itself',
    ],
    [
      ['exporter', '--http-sink-headers', 'X Y=1'],
      'invalid --http-sink-headers: header name "X Y" is not an HTTP token',
    ],
    [
      ['exporter', '--collectors', 'http://admin:pw@10.0.0.1:9470'],
      'invalid --collectors: expected http:// or https:// base URLs like http://10.0.0.1:9470 without user:password@ (the pull API takes a bearer token: --pull-token-file), got "http://admin:***@10.0.0.1:9470"',
    ],
    [
      ['exporter', '--collectors', 'http://10.0.0.1:9470/?node=a'],
      'invalid --collectors: expected http:// or https:// base URLs like http://10.0.0.1:9470 without a query (?…): the API paths are appended, got "http://10.0.0.1:9470/?node=a"',
    ],
    [
      ['exporter', '--metrics-labels', ''],
      'invalid --metrics-labels: expected at least one label: all, or a comma-separated list of: src_namespace, src_pod, src_workload, src_node, src_zone, src_region, dst_namespace, dst_pod, dst_workload, dst_node, dst_zone, dst_region, dst_ip, dst_dns_name, dst_type, traffic_class, cross_zone, proto, got ""',
    ],
    [
      ['collector', '--conntrack-acct', 'maybe'],
      'invalid --conntrack-acct: expected true or false, got "maybe"',
    ],
    [['collector', '--node-name', ''], 'invalid --node-name: expected a non-empty name, got ""'],
    [
      ['standalone', '--listen', '[fe80::zz]:1'],
      'invalid --listen: expected an IP address between [ and ] (host:port, [v6]:port or :port, e.g. :9470, 127.0.0.1:9470 or [::1]:9470), got "[fe80::zz]:1"',
    ],
    [['collector', '--intervall', '5s'], "unknown option '--intervall' (Did you mean --interval?)"],
    [['collector', '--interval'], "option '--interval <duration>' argument missing"],
    [
      ['exporter'],
      '--collectors: no collector URLs given and no Kubernetes API server to discover them (give --collectors or --kubeconfig)',
    ],
  ])('podflow %j', async (args, line) => {
    const r = await podflow(args);
    expect(r.stderr).toBe(`podflow: ${line}\n`);
    expect(r.code).toBe(2);
  });

  it('refuses YAML bare numbers as durations and takes a bare 0', async () => {
    const bare = file('bare.yaml', 'interval: 5\n');
    const r = await podflow(['collector', '--config', bare]);
    expect(r.stderr).toBe(
      `podflow: invalid "interval" in ${bare}: expected a duration like 5s, 500ms or 2m (at least 100ms, at most 1h), got 5\n`,
    );
    expect(r.code).toBe(2);
    // metrics-ttl 0 ("0 keeps them") passes the options: the run stops later, at --collectors.
    const zero = await podflow(['exporter', '--metrics-ttl', '0']);
    expect(zero.stderr).toMatch(/^podflow: --collectors: no collector URLs given/);
  });

  it('refuses --config /dev/zero, a directory and a FIFO without reading them', async () => {
    // /dev/zero used to be read until memory ran out.
    for (const path of ['/dev/zero', tmp]) {
      const r = await podflow(['standalone', '--config', path]);
      expect(r.stderr).toBe(`podflow: --config ${path}: not a regular file\n`);
      expect(r.code).toBe(2);
    }
    const fifo = join(tmp, 'fifo');
    await exitOf(spawn('mkfifo', [fifo]));
    const r = await podflow(['standalone', '--config', fifo]);
    expect(r.stderr).toBe(`podflow: --config ${fifo}: not a regular file\n`);
    const big = file('big.yaml', `# ${'x'.repeat(2 * 1024 * 1024)}\n`);
    const b = await podflow(['standalone', '--config', big]);
    expect(b.stderr).toBe(`podflow: --config ${big}: larger than 1 MiB (${2 * 1024 * 1024 + 3} bytes)\n`);
    expect(b.code).toBe(2);
  });

  it('says an address in use in one line, exit 2', async () => {
    const taken = createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as { port: number }).port;
    try {
      const r = await podflow([
        'exporter',
        '--listen',
        `127.0.0.1:${port}`,
        '--collectors',
        'http://127.0.0.1:1',
      ]);
      expect(r.stderr).toBe(`podflow: --listen 127.0.0.1:${port}: address already in use\n`);
      expect(r.code).toBe(2);
    } finally {
      taken.close();
    }
  });
});

describe('--version and podflow_build_info', () => {
  it('prints podflow <version> and exits 0', async () => {
    const r = await podflow(['--version']);
    expect(r.stdout).toBe(`podflow ${VERSION}\n`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('serves podflow_build_info{version,node_version} 1 on /metrics', async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [BIN, 'exporter', '--listen', `127.0.0.1:${port}`, '--collectors', 'http://127.0.0.1:1'],
      { env: { PATH: process.env.PATH, ...NO_KUBE }, stdio: 'ignore' },
    );
    try {
      const text = await waitFor('exporter /metrics', async () => {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
        return res?.ok ? res.text() : undefined;
      });
      expect(text).toContain('# TYPE podflow_build_info gauge');
      expect(text).toContain(
        `podflow_build_info{version="${VERSION}",node_version="${process.versions.node}"} 1\n`,
      );
    } finally {
      await kill(child);
    }
  });
});

// Root: network namespaces (and the collector reads conntrack).
describe.skipIf(!root)('--listen', () => {
  /** HTTP status of GET url from inside `ns`, or 0 when nothing answers within 2 s. */
  const status = (ns: Netns, url: string): Promise<number> => httpStatus(ns, url, { maxSeconds: 2 });

  /**
   * Starts podflow with its default --listen in a fresh namespace (loopback and lan0 with 10.77.0.1,
   * fd77::1) and waits for /healthz on `ready`.
   */
  async function start(args: string[], ready: string): Promise<{ ns: Netns; child: ChildProcess }> {
    const ns = await createNetns('listen');
    // An address besides loopback, as a LAN would reach the host (the namespace is the test's own).
    await ns.exec('ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan1']);
    await ns.exec('ip', ['link', 'set', 'lan0', 'up']);
    await ns.exec('ip', ['link', 'set', 'lan1', 'up']);
    await ns.addAddress('lan0', '10.77.0.1/24');
    await ns.addAddress('lan0', 'fd77::1/64');
    const child = ns.spawn(process.execPath, [BIN, ...args], NO_KUBE);
    let log = '';
    child.stderr?.on('data', (d) => {
      log += d;
    });
    await waitFor(`${args[0]} answering on ${ready}`, async () => {
      if (child.exitCode !== null) throw new Error(`podflow exited: ${log}`);
      return (await status(ns, `${ready}/healthz`)) === 200 ? true : undefined;
    });
    return { ns, child };
  }

  it.each([
    ['exporter', ['exporter', '--collectors', 'http://127.0.0.1:1'], 9471],
    ['collector', ['collector', '--interval', '1s'], 9470],
  ])('%s by default answers on every address, IPv4 and IPv6', async (_name, args, port) => {
    const { ns, child } = await start(args, `http://127.0.0.1:${port}`);
    try {
      expect(await status(ns, `http://[::1]:${port}/healthz`)).toBe(200);
      expect(await status(ns, `http://10.77.0.1:${port}/healthz`)).toBe(200);
      expect(await status(ns, `http://[fd77::1]:${port}/healthz`)).toBe(200);
    } finally {
      await kill(child);
      await ns.delete();
    }
  });

  it('standalone by default answers on 127.0.0.1 only', async () => {
    const { ns, child } = await start(['standalone', '--interval', '1s'], 'http://127.0.0.1:9471');
    try {
      expect(await status(ns, 'http://[::1]:9471/healthz')).toBe(0);
      // A laptop's LAN must not see it.
      expect(await status(ns, 'http://10.77.0.1:9471/healthz')).toBe(0);
    } finally {
      await kill(child);
      await ns.delete();
    }
  });

  // The address is bound before the source starts: a wrong one changes nothing on the host.
  it('stops at a wrong or taken address before turning on nf_conntrack_acct', async () => {
    const ns = await createNetns('bind');
    try {
      await ns.trackConnections({ acct: false });
      await ns.sysctl('net.netfilter.nf_conntrack_acct', 0);
      // No resolver is reachable from the namespace: the name cannot be resolved.
      const unresolved = await exitOf(
        ns.spawn(process.execPath, [BIN, 'collector', '--listen', 'foo:19012'], NO_KUBE),
      );
      expect(unresolved.stderr).toBe('podflow: --listen foo:19012: cannot resolve host "foo"\n');
      expect(unresolved.code).toBe(2);
      const holder = ns.spawn(process.execPath, [
        '-e',
        "require('net').createServer().listen(19013, '127.0.0.1', () => console.log('up'))",
      ]);
      await once(holder.stdout!, 'data');
      const taken = await exitOf(
        ns.spawn(process.execPath, [BIN, 'collector', '--listen', '127.0.0.1:19013'], NO_KUBE),
      );
      expect(taken.stderr).toBe('podflow: --listen 127.0.0.1:19013: address already in use\n');
      expect(taken.code).toBe(2);
      await kill(holder, 'SIGKILL');
      expect(await ns.readSysctl('net.netfilter.nf_conntrack_acct')).toBe('0');
    } finally {
      await ns.delete();
    }
  });
});
