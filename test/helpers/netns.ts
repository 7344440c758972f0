// Network namespaces for integration tests: everything a test creates lives inside namespaces named
// `pf-<pid>-<rand>-<role>` and is torn down by `cleanupAll()` (afterAll) or, as a last resort, on
// process exit. Nothing here touches the root namespace's addresses or routes: veth pairs are
// created directly inside the namespaces, and traffic only flows between namespaces.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * True when running as root. When not root: throws if `CI` is set (a root-only test must fail, not
 * skip, in CI), else returns false so the caller can `describe.skipIf(!root)`.
 */
export function requireRoot(): boolean {
  const root = process.getuid?.() === 0;
  if (!root && process.env.CI) {
    throw new Error('this test needs root (network namespaces, conntrack): run CI as root');
  }
  return root;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

const namespaces = new Set<string>();
const processes = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when afterAll did not run (crash, timeout): synchronous, so it works in 'exit'.
  process.on('exit', () => {
    for (const p of processes) {
      try {
        p.kill('SIGKILL');
      } catch {}
    }
    for (const ns of namespaces) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {}
    }
  });
}

/** Runs a command (not in a shell); rejects with stderr in the message when it fails. */
export async function run(cmd: string, args: string[], input?: string): Promise<ExecResult> {
  try {
    if (input !== undefined) {
      return await new Promise<ExecResult>((resolve, reject) => {
        const child = execFile(cmd, args, { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) =>
          err ? reject(Object.assign(err, { stdout, stderr })) : resolve({ stdout, stderr }),
        );
        child.stdin?.end(input);
      });
    }
    return await execFileP(cmd, args, { maxBuffer: 256 * 1024 * 1024 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`, {
      cause: err,
    });
  }
}

export interface Netns {
  readonly name: string;
  /** Runs a command inside the namespace and waits for it. */
  exec(cmd: string, args?: string[], input?: string): Promise<ExecResult>;
  /** Starts a long-running process inside the namespace; killed by `kill()` or `cleanupAll()`. */
  spawn(cmd: string, args?: string[], env?: NodeJS.ProcessEnv): ChildProcess;
  /** `sysctl -w key=value` inside the namespace. */
  sysctl(key: string, value: string | number): Promise<void>;
  /** Reads a sysctl inside the namespace. */
  readSysctl(key: string): Promise<string>;
  /** Adds an address (`10.1.0.1/24`, `fd00:1::1/64`) to an interface of this namespace. */
  addAddress(dev: string, cidr: string): Promise<void>;
  /**
   * Makes the namespace track connections: an nft table with input, output and forward chains whose
   * rule needs conntrack (a namespace tracks nothing until some rule does).
   */
  trackConnections(opts?: { acct?: boolean }): Promise<void>;
  /** `nft -f -` inside the namespace. */
  nft(script: string): Promise<void>;
  delete(): Promise<void>;
}

/**
 * The HTTP status of a GET of `url` from inside `ns` (curl), 0 when nothing answered (refused, reset,
 * or no answer within `maxSeconds` when given).
 */
export async function httpStatus(
  ns: Netns,
  url: string,
  opts: { maxSeconds?: number } = {},
): Promise<number> {
  const limit = opts.maxSeconds === undefined ? [] : ['-m', String(opts.maxSeconds)];
  try {
    const { stdout } = await ns.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', ...limit, url]);
    return Number(stdout.trim());
  } catch {
    return 0;
  }
}

/** Creates a uniquely named namespace with `lo` up. Tracked for `cleanupAll()`. */
export async function createNetns(role: string): Promise<Netns> {
  installExitHook();
  const name = `pf-${process.pid}-${randomBytes(3).toString('hex')}-${role}`.slice(0, 60);
  await run('ip', ['netns', 'add', name]);
  namespaces.add(name);
  const ns: Netns = {
    name,
    exec: (cmd, args = [], input) => run('ip', ['netns', 'exec', name, cmd, ...args], input),
    spawn: (cmd, args = [], env) => spawnTracked('ip', ['netns', 'exec', name, cmd, ...args], env),
    sysctl: async (key, value) => {
      await run('ip', ['netns', 'exec', name, 'sysctl', '-q', '-w', `${key}=${value}`]);
    },
    readSysctl: async (key) => (await run('ip', ['netns', 'exec', name, 'sysctl', '-n', key])).stdout.trim(),
    addAddress: async (dev, cidr) => {
      // nodad: IPv6 addresses are usable at once instead of after duplicate address detection.
      const extra = cidr.includes(':') ? ['nodad'] : [];
      await run('ip', ['-n', name, 'addr', 'add', cidr, 'dev', dev, ...extra]);
    },
    trackConnections: async (opts) => {
      await ns.nft(
        [
          'table inet podflow_test {',
          '  chain input { type filter hook input priority 0; ct state new,established,related counter; }',
          '  chain output { type filter hook output priority 0; ct state new,established,related counter; }',
          '  chain forward { type filter hook forward priority 0; ct state new,established,related counter; }',
          '}',
        ].join('\n'),
      );
      if (opts?.acct ?? true) await ns.sysctl('net.netfilter.nf_conntrack_acct', 1);
    },
    nft: async (script) => {
      await run('ip', ['netns', 'exec', name, 'nft', '-f', '-'], script);
    },
    delete: () => deleteNetns(name),
  };
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return ns;
}

export async function deleteNetns(name: string): Promise<void> {
  if (!namespaces.has(name)) return;
  namespaces.delete(name);
  // Processes still running inside keep nothing alive (ip netns del only unmounts), but kill ours.
  await run('ip', ['netns', 'del', name]).catch(() => undefined);
}

function spawnTracked(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  installExitHook();
  const child = spawn(cmd, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: env ? { ...process.env, ...env } : process.env,
  });
  processes.add(child);
  child.on('exit', () => processes.delete(child));
  child.on('error', () => processes.delete(child));
  return child;
}

/** Kills a process started with `Netns.spawn` and waits for it to exit. */
export async function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

export interface VethEnd {
  ns: Netns;
  dev: string;
  /** Addresses with prefix length, e.g. `10.200.0.1/24`, `fd00:200::1/64`. */
  addrs: string[];
}

/**
 * Connects two namespaces with a veth pair (created inside `a`, its peer moved straight into `b`:
 * the pair never exists in the root namespace), adds the addresses and brings both ends up.
 */
export async function connect(a: VethEnd, b: VethEnd): Promise<void> {
  await run('ip', [
    '-n',
    a.ns.name,
    'link',
    'add',
    a.dev,
    'type',
    'veth',
    'peer',
    'name',
    b.dev,
    'netns',
    b.ns.name,
  ]);
  for (const end of [a, b]) {
    for (const cidr of end.addrs) await end.ns.addAddress(end.dev, cidr);
    await run('ip', ['-n', end.ns.name, 'link', 'set', end.dev, 'up']);
  }
}

/** Adds a route inside a namespace (e.g. toward a DNAT "service" address through a veth). */
export async function addRoute(ns: Netns, dst: string, via: string): Promise<void> {
  await run('ip', ['-n', ns.name, ...(dst.includes(':') ? ['-6'] : []), 'route', 'add', dst, 'via', via]);
}

/** Kills every process and deletes every namespace this process created. For afterAll. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...processes].map((p) => kill(p, 'SIGKILL').catch(() => undefined)));
  await Promise.all([...namespaces].map((n) => deleteNetns(n)));
}

// ---------------------------------------------------------------------------------------------
// Traffic with exact payload sizes.
//
// The server (TCP or UDP) reads a 4-byte big-endian "reply size" R at the start of each TCP stream
// or UDP datagram, consumes the rest, and answers with exactly R bytes (TCP: after the client
// half-closes, then closes). The client sends exactly `send` bytes (≥ 4) per connection/datagram
// and reports the bytes it sent and received. Runs as `node -e` inside the namespace.

const TRAFFIC_JS = String.raw`
const net = require('node:net');
const dgram = require('node:dgram');
const [mode, proto, host, portArg, ...rest] = process.argv.slice(1);
const port = Number(portArg);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
if (mode === 'server') {
  if (proto === 'tcp') {
    const srv = net.createServer((sock) => {
      let want = -1, head = Buffer.alloc(0), got = 0;
      sock.on('data', (d) => {
        got += d.length;
        if (want < 0) { head = Buffer.concat([head, d]); if (head.length >= 4) want = head.readUInt32BE(0); }
      });
      sock.on('end', () => { sock.end(Buffer.alloc(Math.max(want, 0), 0x61)); });
      sock.on('error', () => {});
    });
    srv.listen({ host, port }, () => out({ ready: true, port: srv.address().port }));
  } else {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    s.on('message', (m, r) => { if (m.length >= 4) s.send(Buffer.alloc(m.readUInt32BE(0), 0x62), r.port, r.address); });
    s.bind(port, host, () => out({ ready: true, port: s.address().port }));
  }
} else {
  const o = JSON.parse(rest[0]);
  const count = o.count ?? 1, conc = o.concurrency ?? 1;
  let sent = 0, received = 0, done = 0, started = 0, failed = 0;
  const payload = () => { const b = Buffer.alloc(o.send, 0x63); b.writeUInt32BE(o.receive, 0); return b; };
  const finish = () => { if (done === count) { out({ connections: done - failed, failed, sent, received }); process.exit(0); } };
  const one = () => {
    if (started >= count) return;
    started++;
    const next = () => { done++; finish(); one(); };
    if (proto === 'tcp') {
      const sock = net.connect({ host, port, localAddress: o.localAddress, localPort: o.localPort });
      let rx = 0;
      sock.on('connect', () => {
        const p = payload();
        if (!o.paceMs) return sock.end(p);
        // A long transfer: the payload in o.chunks pieces, one every o.paceMs.
        const size = Math.ceil(p.length / o.chunks);
        let off = 0;
        const step = () => {
          const part = p.subarray(off, off + size);
          off += part.length;
          if (off >= p.length) sock.end(part); else { sock.write(part); setTimeout(step, o.paceMs); }
        };
        step();
      });
      sock.on('data', (d) => { rx += d.length; });
      sock.on('close', (hadErr) => { if (hadErr || rx !== o.receive) failed++; else { sent += o.send; received += rx; } setTimeout(next, o.holdMs ?? 0); });
      sock.on('error', () => {});
    } else {
      const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      const timer = setTimeout(() => { failed++; s.close(); next(); }, 3000);
      s.on('message', (m) => { clearTimeout(timer); sent += o.send; received += m.length; s.close(); setTimeout(next, o.holdMs ?? 0); });
      s.bind({ port: o.localPort ?? 0, address: o.localAddress }, () => s.send(payload(), port, host));
    }
  };
  for (let i = 0; i < conc; i++) one();
}
`;

export interface TrafficServer {
  proc: ChildProcess;
  port: number;
  stop(): Promise<void>;
}

/** Starts a TCP or UDP server inside `ns` on host:port (port 0 = any) and waits until it listens. */
export async function startServer(
  ns: Netns,
  proto: 'tcp' | 'udp',
  host: string,
  port = 0,
): Promise<TrafficServer> {
  const proc = ns.spawn(process.execPath, ['-e', TRAFFIC_JS, 'server', proto, host, String(port)]);
  const lines = createInterface({ input: proc.stdout! });
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr += d;
  });
  const ready = await Promise.race([
    (async () => {
      for await (const line of lines) return JSON.parse(line) as { port: number };
      throw new Error(`traffic server in ${ns.name} exited: ${stderr}`);
    })(),
    new Promise<never>((_, reject) =>
      setTimeout(
        () => reject(new Error(`traffic server in ${ns.name} not ready: ${stderr}`)),
        10_000,
      ).unref(),
    ),
  ]);
  return { proc, port: ready.port, stop: () => kill(proc) };
}

export interface ClientOptions {
  /** Payload bytes sent per connection (TCP) or datagram (UDP), at least 4. */
  send: number;
  /** Payload bytes the server answers with. */
  receive: number;
  /** Connections (TCP) or request datagrams (UDP, each from a new socket). Default 1. */
  count?: number;
  /** Connections in flight at once. Default 1. */
  concurrency?: number;
  localAddress?: string;
  localPort?: number;
  /** Wait this long after each connection ends before the next starts. */
  holdMs?: number;
  /** TCP: send the payload in `chunks` pieces, one every `paceMs` (a long transfer). */
  paceMs?: number;
  chunks?: number;
}

export interface ClientResult {
  connections: number;
  failed: number;
  sent: number;
  received: number;
}

/** Runs the traffic client inside `ns` against host:port and returns what it sent and received. */
export async function runClient(
  ns: Netns,
  proto: 'tcp' | 'udp',
  host: string,
  port: number,
  opts: ClientOptions,
): Promise<ClientResult> {
  if (opts.send < 4) throw new Error('send must be at least 4 bytes (the reply-size header)');
  const { stdout } = await ns.exec(process.execPath, [
    '-e',
    TRAFFIC_JS,
    'client',
    proto,
    host,
    String(port),
    JSON.stringify(opts),
  ]);
  const last = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as ClientResult;
}

/**
 * A pair of namespaces joined by a veth, both tracking connections with accounting on:
 * `a` holds 10.<n>.0.1/24 + fd00:<n>::1/64, `b` 10.<n>.0.2/24 + fd00:<n>::2/64.
 */
export async function createPair(
  n = 200,
): Promise<{ a: Netns; b: Netns; a4: string; b4: string; a6: string; b6: string }> {
  const a = await createNetns('a');
  const b = await createNetns('b');
  const a4 = `10.${n}.0.1`;
  const b4 = `10.${n}.0.2`;
  const a6 = `fd00:${n}::1`;
  const b6 = `fd00:${n}::2`;
  await connect(
    { ns: a, dev: 'pfa', addrs: [`${a4}/24`, `${a6}/64`] },
    { ns: b, dev: 'pfb', addrs: [`${b4}/24`, `${b6}/64`] },
  );
  await a.trackConnections();
  await b.trackConnections();
  return { a, b, a4, b4, a6, b6 };
}

export interface PodLink {
  /** Name of the node's end of the veth pair (the pod's end is `eth0`). */
  hostDev: string;
  /** The pod's addresses without prefix: IPv4 get /32, IPv6 /128 (dual-stack: one of each). */
  ips: string[];
}

/**
 * Attaches a pod namespace to its node the way Calico does: a veth pair and no bridge, so that all
 * pod traffic, also between two pods of one node, is routed by the node (and passes its conntrack).
 * - Pod: eth0 holds only the pod's /32 and /128; it reaches everything through the next hops
 *   169.254.1.1 (`169.254.1.1 dev eth0 scope link` + `default via 169.254.1.1`) and `fe80::1`.
 * - Node: one host route per pod address through the veth. Calico answers the pod's ARP for
 *   169.254.1.1 with proxy_arp, which answers only for addresses the node routes elsewhere (a real
 *   node has a default route; a test node has none), so here the node's end carries 169.254.1.1/32
 *   itself (the same /32 on every pod veth, as a local address it is answered on any of them), and
 *   the link-local fe80::1 for the pods' IPv6 default route.
 * The node must forward (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding).
 */
export async function attachPod(node: Netns, pod: Netns, link: PodLink): Promise<void> {
  const v6 = link.ips.some((ip) => ip.includes(':'));
  const v4 = link.ips.some((ip) => !ip.includes(':'));
  await connect(
    { ns: node, dev: link.hostDev, addrs: ['169.254.1.1/32', 'fe80::1/64'] },
    { ns: pod, dev: 'eth0', addrs: link.ips.map((ip) => `${ip}/${ip.includes(':') ? 128 : 32}`) },
  );
  for (const ip of link.ips) {
    await run('ip', [
      '-n',
      node.name,
      ...(ip.includes(':') ? ['-6'] : []),
      'route',
      'add',
      ip,
      'dev',
      link.hostDev,
    ]);
  }
  if (v4) {
    await run('ip', ['-n', pod.name, 'route', 'add', '169.254.1.1', 'dev', 'eth0', 'scope', 'link']);
    await run('ip', ['-n', pod.name, 'route', 'add', 'default', 'via', '169.254.1.1', 'dev', 'eth0']);
  }
  if (v6) await run('ip', ['-n', pod.name, '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0']);
}
