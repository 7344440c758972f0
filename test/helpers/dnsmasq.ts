// A real DNS server for tests (dnsmasq, Debian; .ci/packages): no upstream, no /etc/hosts, only the
// records a test gives, listening on addresses inside a namespace the test created. And a client
// that asks it one question over UDP or TCP from a namespace (dns-packet, as any stub resolver
// would send it), so that the answer crosses the namespaces' interfaces like a pod's lookup.
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kill, type Netns } from './netns.js';
import { waitFor } from './wait.js';

const ROOT = new URL('../..', import.meta.url).pathname;

/** Asks `server` for `name` (type A or AAAA) over UDP or TCP; prints the answers (data, TTL) as JSON. */
const QUERY_JS = String.raw`
const [root, server, name, type, transport] = process.argv.slice(1);
const packet = require(root + '/node_modules/dns-packet');
const msg = packet.encode({ type: 'query', id: 4242, flags: packet.RECURSION_DESIRED, questions: [{ type, name }] });
const done = (buf) => { const r = packet.decode(buf); console.log(JSON.stringify(r.answers.map((a) => ({ data: a.data, ttl: a.ttl })))); process.exit(0); };
if (transport === 'udp') {
  const s = require('node:dgram').createSocket(server.includes(':') ? 'udp6' : 'udp4');
  s.on('message', done);
  s.send(msg, 53, server);
} else {
  const c = require('node:net').connect(53, server, () => c.write(packet.streamEncode({ type: 'query', id: 4243, flags: packet.RECURSION_DESIRED, questions: [{ type, name }] })));
  let got = Buffer.alloc(0);
  c.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) done(got.subarray(2)); });
}
setTimeout(() => { console.error('no answer'); process.exit(1); }, 5000);
`;

/**
 * Asks the DNS server at `server` (port 53) for `name` from inside `ns`; the answers' data: the
 * addresses, CNAME targets before them.
 */
export async function queryDns(
  ns: Netns,
  server: string,
  name: string,
  type: 'A' | 'AAAA',
  transport: 'udp' | 'tcp',
): Promise<string[]> {
  return (await queryDnsAnswers(ns, server, name, type, transport)).map((a) => a.data);
}

/** One answer record: its data (an address or a CNAME target) and the TTL the server gave it. */
export interface DnsAnswer {
  data: string;
  ttl: number;
}

/** As queryDns, with each answer's TTL. */
export async function queryDnsAnswers(
  ns: Netns,
  server: string,
  name: string,
  type: 'A' | 'AAAA',
  transport: 'udp' | 'tcp',
): Promise<DnsAnswer[]> {
  const { stdout } = await ns.exec(process.execPath, ['-e', QUERY_JS, ROOT, server, name, type, transport]);
  return JSON.parse(stdout) as DnsAnswer[];
}

export interface Dnsmasq {
  proc: ChildProcess;
  /**
   * SIGHUP: dnsmasq empties its cache and reads its `addn-hosts=` files again (a record re-pointed
   * while it runs); resolves once it has logged reading them.
   */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts dnsmasq in `ns` on port 53 of the `listen` addresses (which must be up in `ns`), serving
 * only `records` (dnsmasq.conf lines: `address=`, `host-record=`, `cname=`, `local-ttl=`,
 * `addn-hosts=`, …); its
 * configuration is written into `dir`. Resolves once it answers on its sockets.
 */
export async function startDnsmasq(
  ns: Netns,
  opts: { listen: string[]; records: string[]; dir: string },
): Promise<Dnsmasq> {
  const conf = join(opts.dir, `dnsmasq-${ns.name}.conf`);
  await writeFile(
    conf,
    [
      'no-resolv',
      'no-hosts',
      'no-poll',
      'bind-interfaces',
      ...opts.listen.map((a) => `listen-address=${a}`),
      'port=53',
      ...opts.records,
      '',
    ].join('\n'),
  );
  const proc = ns.spawn('dnsmasq', [
    '--keep-in-foreground',
    `--conf-file=${conf}`,
    '--pid-file=',
    '--user=root',
    '--log-facility=-',
  ]);
  let log = '';
  proc.stderr?.on('data', (d) => {
    log += d;
  });
  // dnsmasq logs `started` once its sockets are bound.
  await waitFor(
    'dnsmasq started',
    async () => {
      if (proc.exitCode !== null) throw new Error(`dnsmasq exited: ${log}`);
      return log.includes('started') ? true : undefined;
    },
    10_000,
  );
  const reload = async (): Promise<void> => {
    // dnsmasq logs `read <file> - <n> names` (or addresses) per hosts file it has read.
    const reads = () => log.split('\n').filter((l) => / read \S+ - \d+ /.test(l)).length;
    const before = reads();
    proc.kill('SIGHUP');
    await waitFor(
      'dnsmasq reloaded',
      async () => {
        if (proc.exitCode !== null) throw new Error(`dnsmasq exited: ${log}`);
        return reads() > before ? true : undefined;
      },
      10_000,
    );
  };
  return { proc, reload, stop: () => kill(proc) };
}
