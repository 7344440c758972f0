// A Kubernetes cluster made of network namespaces, for end-to-end tests, built from one declarative
// description (ClusterSpec) that also yields the test API server's objects:
// - an underlay: a switch namespace (one bridge) joining the control namespace (10.250.0.1) and the
//   nodes (their InternalIPs), each node routing the other nodes' pod ranges to that node;
// - nodes: namespaces that forward and track connections, each running a real `podflow collector`
//   (bin/podflow.js, the built dist/) with --node-name and a kubeconfig for the test API server, so
//   that, like the DaemonSet, it takes its local endpoints from the pods of its node;
// - pods: namespaces of their own, attached to their node the way Calico does (attachPod: veth, no
//   bridge), so that all pod traffic, also between two pods of one node, is routed by the node and
//   counted by the node's conntrack, the table the collector reads;
// - a public host (documentation range) linked to one node, which masquerades pod traffic to it as a
//   real cluster's egress does: its replies go to the node's address;
// - a DNS server standing in for CoreDNS (dnsmasq in a pod of the spec, `spec.dns`): pods resolve
//   names there (`resolve`) before they talk, and the answers cross the nodes as CoreDNS's do;
// - the control namespace: `podflow exporter` discovering the collectors and enriching through the test
//   API server, a real Prometheus scraping it, and its HTTP sink forwarded to a real HttpReceiver;
//   or, with `spec.exporterPorts`, as many exporters as the test starts (shards, replicas), each
//   process on a port of its own that Prometheus scrapes.
// The API server and the receiver run in this process; namespaces reach them through relays (Unix
// sockets), so nothing is added to the root namespace. close() removes everything, also after a
// failed start.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'vitest';
import { type Harness, startHarness } from '../kube-api-server/harness.js';
import { node, pod, replicaSet } from '../kube-api-server/objects.js';
import { sentBy } from './conntrack-table.js';
import { type Dnsmasq, queryDns, startDnsmasq } from './dnsmasq.js';
import { HttpReceiver } from './http-receiver.js';
import {
  addRoute,
  attachPod,
  cleanupAll,
  connect,
  createNetns,
  httpStatus,
  kill,
  type Netns,
  run,
} from './netns.js';
import { type Prometheus, startPrometheus } from './prometheus.js';
import { type Relay, relayIntoNetns } from './relay.js';
import { waitFor } from './wait.js';

const BIN = new URL('../../bin/podflow.js', import.meta.url).pathname;
const DIST = new URL('../../dist/cmd/podflow.js', import.meta.url).pathname;
const COLLECTOR_LABELS = { 'app.kubernetes.io/name': 'podflow', 'app.kubernetes.io/component': 'collector' };
const CTL_UNDERLAY = ['10.250.0.1/24', 'fd00:250::1/64'];
const API_PORT = 6443;
const SINK_PORT = 9600;
const EXPORTER = '127.0.0.1:9471';

export interface PodDef {
  name: string;
  namespace: string;
  /**
   * The top owner, `Kind/name`. A Deployment's pod is owned by a ReplicaSet named like the pod less
   * its last `-part` (web-5f7c9-x1 → ReplicaSet web-5f7c9 → Deployment web), created alongside.
   */
  workload: string;
  /** The pod's addresses (IPv4, IPv6 or both), inside its node's podCidrs. */
  ips: string[];
}

export interface NodeDef {
  name: string;
  zone: string;
  /** topology.kubernetes.io/region; none when unset. */
  region?: string;
  /** spec.providerID (`aws:///zone/i-…` by default: --cloud auto picks the AWS preset). */
  providerID?: string;
  /** The node's underlay address (InternalIP) in 10.250.0.0/24 (10.250.0.1 is the control namespace). */
  ip: string;
  /** Its IPv6 underlay address in fd00:250::/64, for IPv6 pods. */
  ip6?: string;
  /** This node's pod ranges: the other nodes route them to this node. */
  podCidrs: string[];
  pods: PodDef[];
}

export interface PublicHostDef {
  /** The host's address (a /24 shared with `nodeIp`). */
  ip: string;
  /** The node it is linked to; that node masquerades pod traffic to it. */
  via: string;
  /** The node's address on that link: pod traffic leaves with it as source. */
  nodeIp: string;
}

export interface DnsDef {
  /** The pod (one of `nodes[].pods`) that answers DNS on its addresses, as CoreDNS does. */
  pod: string;
  /** Its only records: dnsmasq.conf lines (`host-record=name,address`, `cname=…`, `local-ttl=…`). */
  records: string[];
}

export interface ClusterSpec {
  nodes: NodeDef[];
  publicHost?: PublicHostDef;
  dns?: DnsDef;
  /** Added to the exporter's command line. */
  exporterArgs?: string[];
  /** A `--destinations-file` for the exporter (YAML text, written at start). */
  destinations?: string;
  /** The pull API's token: collectors accept it, the exporter sends it (as the chart sets both). */
  pullToken?: string;
  /** Give every collector a `--state-dir` of its own (kept across `restartCollector`). */
  stateDir?: boolean;
  /**
   * Several exporters: the ports of the control namespace's 127.0.0.1 that Prometheus scrapes, one
   * per exporter process the test starts (`startExporter({ name, port })`); start() starts none.
   * A process that replaces another takes a new port, so that each is an `instance` of its own and
   * Prometheus never takes one process's counters for a restart of another's. Declared up front
   * (not discovered): a new target is scraped within a scrape interval, where file discovery waits
   * up to 5 s; the ports not in use just fail their scrapes.
   */
  exporterPorts?: number[];
}

/** One exporter process of the control namespace (`Cluster.startExporter`). */
export interface Exporter {
  /**
   * Its `--pod-name` (the holder collectors' leases name), also its log prefix; `exporter` for the
   * default one, which runs under the default pod name (the hostname).
   */
  readonly name: string;
  /** `127.0.0.1:port` in the control namespace: its Prometheus `instance`. */
  readonly address: string;
  readonly proc: ChildProcess;
  /** Its log lines so far, with their prefix. */
  log(): string;
  /** Sends `signal` (SIGTERM: it flushes and lets go of its leases) and waits until it exited. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
}

export interface ExporterOptions {
  /** `--pod-name`, e.g. `podflow-exporter-1` (the shard comes from its ordinal). */
  name: string;
  /** Its port, one of `spec.exporterPorts`, not used by an earlier process. */
  port: number;
  /** Added to the command line after `spec.exporterArgs`. */
  args?: string[];
}

export type LogRecord = Record<string, unknown>;

/** Sum of `tx_bytes` of the records from pod `src` to pod `dst`. */
export const txOf = (recs: LogRecord[], src: string, dst: string): number =>
  recs.filter((r) => r.src_pod === src && r.dst_pod === dst).reduce((a, r) => a + Number(r.tx_bytes), 0);

function ownerOf(p: PodDef): { kind: string; name: string } {
  const [kind, name] = p.workload.split('/') as [string, string];
  if (kind !== 'Deployment') return { kind, name };
  return { kind: 'ReplicaSet', name: p.name.slice(0, p.name.lastIndexOf('-')) };
}

export class Cluster {
  ctl!: Netns;
  rx!: HttpReceiver;
  prom!: Prometheus;
  /** The running exporter process (replaced by startExporter); the default one only. */
  exporter: ChildProcess | undefined;
  private readonly exporterPortsUsed = new Set<number>();
  private readonly namespaces = new Map<string, Netns>();
  private readonly procs: ChildProcess[] = [];
  private readonly collectors = new Map<string, ChildProcess>();
  private readonly relays: Relay[] = [];
  private api: Harness | undefined;
  private dns: Dnsmasq | undefined;
  private dir = '';
  private logs = '';

  constructor(readonly spec: ClusterSpec) {}

  /** The namespace of a node or a pod, by name; `public` for the public host. */
  ns(name: string): Netns {
    const ns = this.namespaces.get(name);
    if (!ns) throw new Error(`no node or pod named ${name} in the cluster`);
    return ns;
  }

  /** Builds the namespaces, the API server objects and starts every process; ready for traffic. */
  async start(): Promise<void> {
    if (!existsSync(DIST)) throw new Error('run `npm run build` first (bin/podflow.js runs dist/)');
    this.dir = await mkdtemp(join(tmpdir(), 'pf-cluster-'));
    if (this.spec.pullToken !== undefined) {
      await writeFile(join(this.dir, 'pull-token'), `${this.spec.pullToken}\n`, { mode: 0o600 });
    }
    if (this.spec.destinations !== undefined) {
      await writeFile(join(this.dir, 'destinations.yaml'), this.spec.destinations);
    }
    await this.buildNetwork();
    if (this.spec.dns) {
      this.dns = await startDnsmasq(this.ns(this.spec.dns.pod), {
        listen: this.podDef(this.spec.dns.pod).ips,
        records: this.spec.dns.records,
        dir: this.dir,
      });
    }
    await this.startApiServer();
    this.rx = await HttpReceiver.start();
    this.relays.push(await relayIntoNetns(this.ctl, SINK_PORT, Number(new URL(this.rx.url).port), this.dir));
    for (const n of this.spec.nodes) this.spawnCollector(n);
    if (this.spec.exporterPorts === undefined) await this.startExporter();
    for (const n of this.spec.nodes) await this.collectorReady(n);
    this.prom = await startPrometheus({
      targets: this.spec.exporterPorts?.map((p) => `127.0.0.1:${p}`) ?? [EXPORTER],
      ns: this.ctl,
    });
  }

  /**
   * Pod `podName` asks the cluster's DNS server (`spec.dns`) for `name`, as its resolver would;
   * the answers' data (CNAME targets, then addresses).
   */
  resolve(
    podName: string,
    name: string,
    opts: { type?: 'A' | 'AAAA'; transport?: 'udp' | 'tcp' } = {},
  ): Promise<string[]> {
    if (!this.spec.dns) throw new Error('the cluster has no DNS server (spec.dns)');
    const server = this.podDef(this.spec.dns.pod).ips[0]!;
    return queryDns(this.ns(podName), server, name, opts.type ?? 'A', opts.transport ?? 'udp');
  }

  private podDef(name: string): PodDef {
    const p = this.spec.nodes.flatMap((n) => n.pods).find((x) => x.name === name);
    if (!p) throw new Error(`no pod named ${name} in the cluster spec`);
    return p;
  }

  private spawnCollector(n: NodeDef): void {
    const p = this.podflow(n.name, this.ns(n.name), [
      'collector',
      '--node-name',
      n.name,
      '--kubeconfig',
      this.kubeconfig,
      '--listen',
      '0.0.0.0:9470',
      '--interval',
      '500ms',
      ...this.tokenArgs,
      ...(this.spec.stateDir ? ['--state-dir', this.stateDirOf(n.name)] : []),
    ]);
    this.collectors.set(n.name, p);
  }

  /** The `--state-dir` of a node's collector (with `spec.stateDir`). */
  stateDirOf(nodeName: string): string {
    return join(this.dir, `state-${nodeName}`);
  }

  /**
   * Waits until the collector of `n` answers ready. A collector counts from its first read on: traffic
   * before that is history, not reported. Ready also means it has listed the pods of its node.
   */
  private async collectorReady(n: NodeDef, logsFrom = 0): Promise<void> {
    await this.waitFor(`collector of ${n.name} ready`, async () =>
      (await httpStatus(this.ctl, `http://${n.ip}:9470/readyz`)) === 200 ? true : undefined,
    );
    // Its local endpoints are the pods the API server puts on its node, not its own addresses.
    const started = this.logs
      .slice(logsFrom)
      .split('\n')
      .find((l) => l.startsWith(`[${n.name}] `) && l.includes('"collecting"'));
    expect(started, `collector of ${n.name} started`).toContain('"index":"kubernetes"');
  }

  /**
   * A rolling update of one node's collector: SIGTERM (it reads once more and waits until an exporter
   * took its backlog), then a new process on the same address, ready: a new boot id, or with
   * `spec.stateDir` the same one, continuing where the old process stopped. `signal: 'SIGKILL'` is a
   * crash instead; `downMs` keeps the node without a collector that long before the new one starts.
   */
  async restartCollector(
    nodeName: string,
    opts: { signal?: 'SIGTERM' | 'SIGKILL'; downMs?: number } = {},
  ): Promise<{ exitCode: number | null; signal: string | null }> {
    const n = this.spec.nodes.find((x) => x.name === nodeName);
    const old = this.collectors.get(nodeName);
    if (!n || !old) throw new Error(`no collector on ${nodeName}`);
    const exited = once(old, 'exit');
    old.kill(opts.signal ?? 'SIGTERM');
    const [exitCode, signal] = (await exited) as [number | null, string | null];
    if (opts.downMs) await new Promise((r) => setTimeout(r, opts.downMs));
    const from = this.logs.length;
    this.spawnCollector(n);
    await this.collectorReady(n, from);
    return { exitCode, signal };
  }

  /** The podflow processes' log lines so far (each prefixed with its role, e.g. `[node-a] `). */
  get log(): string {
    return this.logs;
  }

  private get kubeconfig(): string {
    return join(this.dir, 'kubeconfig');
  }

  /** `--pull-token-file` when the spec has a token (written at start). */
  private get tokenArgs(): string[] {
    return this.spec.pullToken === undefined ? [] : ['--pull-token-file', join(this.dir, 'pull-token')];
  }

  private async buildNetwork(): Promise<void> {
    this.ctl = await createNetns('ctl');
    const lan = await createNetns('lan');
    await run('ip', ['-n', lan.name, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await run('ip', ['-n', lan.name, 'link', 'set', 'br0', 'up']);
    const plug = async (ns: Netns, port: string, addrs: string[]) => {
      await connect({ ns, dev: 'pfu', addrs }, { ns: lan, dev: port, addrs: [] });
      await run('ip', ['-n', lan.name, 'link', 'set', port, 'master', 'br0']);
    };
    await plug(this.ctl, 'pfu0', CTL_UNDERLAY);
    let veth = 0;
    for (const [i, n] of this.spec.nodes.entries()) {
      const ns = await createNetns(n.name);
      this.namespaces.set(n.name, ns);
      await plug(ns, `pfu${i + 1}`, [`${n.ip}/24`, ...(n.ip6 ? [`${n.ip6}/64`] : [])]);
      await ns.sysctl('net.ipv4.ip_forward', 1);
      await ns.sysctl('net.ipv6.conf.all.forwarding', 1);
      await ns.trackConnections();
      // Entries stay for the whole test, so that conntrack's totals are cumulative to the end.
      for (const k of ['udp_timeout', 'udp_timeout_stream', 'tcp_timeout_time_wait', 'tcp_timeout_close']) {
        await ns.sysctl(`net.netfilter.nf_conntrack_${k}`, 600);
      }
      for (const p of n.pods) {
        const podNs = await createNetns(`pod-${p.name}`);
        this.namespaces.set(p.name, podNs);
        await attachPod(ns, podNs, { hostDev: `pfp${veth++}`, ips: p.ips });
      }
    }
    for (const n of this.spec.nodes) {
      for (const other of this.spec.nodes) {
        if (other === n) continue;
        for (const cidr of other.podCidrs) {
          const via = cidr.includes(':') ? other.ip6 : other.ip;
          if (via) await addRoute(this.ns(n.name), cidr, via);
        }
      }
    }
    const pub = this.spec.publicHost;
    if (pub) {
      const ns = await createNetns('public');
      this.namespaces.set('public', ns);
      const gw = this.ns(pub.via);
      await connect(
        { ns: gw, dev: 'pfpub', addrs: [`${pub.nodeIp}/24`] },
        { ns, dev: 'eth0', addrs: [`${pub.ip}/24`] },
      );
      // Egress to outside the cluster leaves with the node's address (what kube-proxy/Calico's
      // natOutgoing do): the public host has no route to pods, and conntrack's reply tuple names the
      // node, not the pod.
      await gw.nft(
        [
          'table ip podflow_test_nat {',
          '  chain postrouting { type nat hook postrouting priority srcnat; oifname "pfpub" masquerade; }',
          '}',
        ].join('\n'),
      );
    }
  }

  private async startApiServer(): Promise<void> {
    this.api = await startHarness();
    const s = this.api.server;
    const replicaSets = new Set<string>();
    for (const n of this.spec.nodes) {
      s.create(
        'nodes',
        node({
          name: n.name,
          zone: n.zone,
          region: n.region,
          providerID: n.providerID,
          internalIPs: [n.ip, ...(n.ip6 ? [n.ip6] : [])],
        }),
      );
      for (const p of n.pods) {
        const owner = ownerOf(p);
        const key = `${p.namespace}/${owner.name}`;
        if (owner.kind === 'ReplicaSet' && !replicaSets.has(key)) {
          replicaSets.add(key);
          const [kind, name] = p.workload.split('/') as [string, string];
          s.create('replicasets', replicaSet(owner.name, p.namespace, { kind, name }));
        }
        s.create('pods', pod({ name: p.name, namespace: p.namespace, node: n.name, ips: p.ips, owner }));
      }
      s.create(
        'pods',
        pod({
          name: `podflow-collector-${n.name}`,
          namespace: 'podflow',
          node: n.name,
          ips: [n.ip],
          labels: COLLECTOR_LABELS,
          owner: { kind: 'DaemonSet', name: 'podflow-collector' },
          hostNetwork: true,
        }),
      );
    }
    // Every namespace with a podflow process reaches the API server on its own 127.0.0.1:6443.
    const apiPort = Number(new URL(s.url).port);
    for (const ns of [this.ctl, ...this.spec.nodes.map((n) => this.ns(n.name))]) {
      this.relays.push(await relayIntoNetns(ns, API_PORT, apiPort, this.dir));
    }
    await writeFile(
      this.kubeconfig,
      s.kubeconfigYaml().replace(s.url, s.url.replace(/:\d+$/, `:${API_PORT}`)),
    );
  }

  private podflow(role: string, ns: Netns, args: string[]): ChildProcess {
    const p = ns.spawn(process.execPath, [BIN, ...args], {
      HOME: this.dir,
      KUBECONFIG: join(this.dir, 'none'),
    });
    if (p.stderr) {
      createInterface({ input: p.stderr }).on('line', (l) => {
        this.logs += `[${role}] ${l}\n`;
      });
    }
    p.on('exit', (code, sig) => {
      this.logs += `[${role}] exited with ${code ?? sig}\n`;
    });
    this.procs.push(p);
    return p;
  }

  /**
   * Starts `podflow exporter` in the control namespace and waits until it is ready: the default one
   * (on 127.0.0.1:9471, `exporter` in the logs), or with `opts` one of several (`spec.exporterPorts`).
   */
  async startExporter(opts?: ExporterOptions): Promise<Exporter> {
    let address = EXPORTER;
    if (opts !== undefined) {
      if (!this.spec.exporterPorts?.includes(opts.port)) {
        throw new Error(`port ${opts.port} is not in spec.exporterPorts: Prometheus would not scrape it`);
      }
      if (this.exporterPortsUsed.has(opts.port)) {
        throw new Error(`port ${opts.port} was used by an earlier exporter: take a new one (a new instance)`);
      }
      this.exporterPortsUsed.add(opts.port);
      address = `127.0.0.1:${opts.port}`;
    }
    const role = opts?.name ?? 'exporter';
    const logsFrom = this.logs.length;
    const proc = this.podflow(role, this.ctl, [
      'exporter',
      '--kubeconfig',
      this.kubeconfig,
      '--namespace',
      'podflow',
      '--listen',
      address,
      '--export-interval',
      '1s',
      '--http-sink-url',
      `http://127.0.0.1:${SINK_PORT}/ingest`,
      ...this.tokenArgs,
      ...(this.spec.destinations === undefined
        ? []
        : ['--destinations-file', join(this.dir, 'destinations.yaml')]),
      ...(this.spec.exporterArgs ?? []),
      ...(opts === undefined ? [] : ['--pod-name', opts.name, ...(opts.args ?? [])]),
    ]);
    if (opts === undefined) this.exporter = proc;
    await this.waitFor(`${role} ready`, async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${role} exited`);
      return (await httpStatus(this.ctl, `http://${address}/readyz`)) === 200 ? true : undefined;
    });
    return {
      name: role,
      address,
      proc,
      log: () =>
        this.logs
          .slice(logsFrom)
          .split('\n')
          .filter((l) => l.startsWith(`[${role}] `))
          .join('\n'),
      stop: async (signal = 'SIGTERM') => {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        const exited = once(proc, 'exit');
        proc.kill(signal);
        await exited;
      },
    };
  }

  /**
   * Polls `fn` until it returns a value; on timeout fails with what `got` says and the tail of the
   * podflow processes' logs.
   */
  async waitFor<T>(
    what: string,
    fn: () => Promise<T | undefined>,
    timeoutMs = 20_000,
    got?: () => Promise<string> | string,
  ): Promise<T> {
    try {
      return await waitFor(what, fn, timeoutMs);
    } catch (err) {
      const state = got ? `: got ${await got()}` : '';
      const logs = this.logs
        .split('\n')
        .filter((l) => !l.includes('pull failed'))
        .join('\n')
        .slice(-3000);
      throw new Error(`${(err as Error).message}${state}; logs:\n${logs}`, { cause: err });
    }
  }

  /** A PromQL query's value (sum of its samples; 0 when empty). */
  async q(promql: string): Promise<number> {
    return (await this.prom.scalar(promql)) ?? 0;
  }

  /** Bytes `local` sent to `peer` by the conntrack of node `nodeName` (the table its collector reads). */
  sentBy(nodeName: string, local: string, peer: string): Promise<number> {
    return sentBy(this.ns(nodeName), local, peer);
  }

  /** Records of the requests the receiver answered 2xx, once per Idempotency-Key. */
  deliveredRecords(): LogRecord[] {
    const byKey = new Map<string, Buffer>();
    for (const r of this.rx.requests) {
      if (typeof r.answer !== 'number' || r.answer < 200 || r.answer >= 300) continue;
      const key = String(r.headers['idempotency-key'] ?? '');
      expect(key).not.toBe('');
      const seen = byKey.get(key);
      // A retried batch keeps its key: the same key accepted twice must be the same batch, counted once.
      if (seen) expect(seen.equals(r.body)).toBe(true);
      else byKey.set(key, r.body);
    }
    return [...byKey.values()].flatMap((b) =>
      b
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as LogRecord),
    );
  }

  /** Stops every process (also the traffic servers started in the namespaces) and removes everything. */
  async close(): Promise<void> {
    // Unset when start() failed before it: the same for rx below.
    await this.prom?.stop().catch(() => undefined);
    await this.dns?.stop().catch(() => undefined);
    for (const p of this.procs) await kill(p, 'SIGKILL').catch(() => undefined);
    await cleanupAll();
    for (const r of this.relays) await r.close().catch(() => undefined);
    await this.rx?.close().catch(() => undefined);
    await this.api?.close().catch(() => undefined);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
