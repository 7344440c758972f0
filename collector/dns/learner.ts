// The DNS name learner (`--dns-names`): a packet socket (native/src/packet.c) sees the DNS answers
// crossing the node's interfaces — CoreDNS or NodeLocal DNS answering pods, upstream resolvers
// answering the node — and every address they give is named in the NameCache (the name asked) for
// the answer's TTL plus `--dns-grace`. No query is ever sent, no firewall rule added.
//
// Needs CAP_NET_RAW and the host network namespace. Where the socket cannot be opened the learner
// warns once and names nothing; the collector runs on.

import type { Gauge, Registry } from 'prom-client';
import { Counter as PromCounter, Gauge as PromGauge } from 'prom-client';
import {
  errnoName,
  loadPacketSocket,
  PACKET_ERRNO,
  PACKET_HEADER,
  PACKET_RECEIVED,
  type PacketSocket,
  type PollHandle,
} from '../../native/index.js';
import { type Clock, systemClock } from '../../shared/clock.js';
import type { Logger } from '../../shared/log.js';
import { NameCache } from './names.js';
import { type ParseError, parsePacket } from './parse.js';

export interface DnsLearnerConfig {
  /** `--dns-grace` in ms. */
  graceMs: number;
  /** Addresses held at most. @default 100000 */
  maxNames?: number;
}

export interface DnsLearnerDeps {
  log: Logger;
  registry: Registry;
  /** @default the addon's packet socket */
  socket?: PacketSocket;
  /** Answer times, TTL expiry and sweeps. @default systemClock */
  clock?: Clock;
}

/** What the cache holds at most by default: 100k addresses stay under 10 MB (test/bench/dns.bench.ts). */
export const DEFAULT_MAX_NAMES = 100_000;
/** The same answer seen on two interfaces (a pod's veth and the node's uplink) counts once. */
const DUPLICATE_WINDOW_MS = 2000;
const BUFFER_BYTES = 1 << 20;
const SWEEP_EVERY_MS = 30_000;

export class DnsLearner {
  readonly cache: NameCache;
  private fd = -1;
  private poll: PollHandle | undefined;
  private readonly buf = Buffer.allocUnsafe(BUFFER_BYTES);
  private readonly info = new Int32Array(4);
  private readonly recent = new Map<string, number>();
  private lastSweep = 0;
  private readonly clock: Clock;
  /** Totals, read when Prometheus scrapes (a prom-client inc per packet costs more than the parse). */
  private readonly totals = { packets: 0, answers: 0, errors: new Map<ParseError, number>() };
  private readonly learning: Gauge;

  constructor(
    config: DnsLearnerConfig,
    private readonly deps: DnsLearnerDeps,
  ) {
    this.clock = deps.clock ?? systemClock;
    this.cache = new NameCache(
      { maxNames: config.maxNames ?? DEFAULT_MAX_NAMES, graceMs: config.graceMs },
      this.clock,
    );
    const registers = [deps.registry];
    const cache = this.cache;
    const totals = this.totals;
    new PromCounter({
      name: 'podflow_collector_dns_packets_total',
      help: 'Packets from port 53 seen on the node (each answer once, however many interfaces it crossed)',
      registers,
      collect() {
        this.reset();
        this.inc(totals.packets);
      },
    });
    new PromCounter({
      name: 'podflow_collector_dns_answers_total',
      help: 'DNS responses read (named addresses or not)',
      registers,
      collect() {
        this.reset();
        this.inc(totals.answers);
      },
    });
    new PromCounter({
      name: 'podflow_collector_dns_parse_errors_total',
      help: 'DNS packets that gave nothing, by reason (truncated, fragment, tcp-partial: not reassembled; malformed)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of totals.errors) this.inc({ reason }, n);
      },
    });
    new PromGauge({
      name: 'podflow_collector_dns_names',
      help: 'Peer addresses with a DNS name held',
      registers,
      collect() {
        this.set(cache.stats().names);
      },
    });
    new PromCounter({
      name: 'podflow_collector_dns_evictions_total',
      help: 'Addresses dropped from the name cache to stay within its size (least recently used first)',
      registers,
      collect() {
        this.reset();
        this.inc(cache.stats().evictions);
      },
    });
    this.learning = new PromGauge({
      name: 'podflow_collector_dns_learning',
      help: '1 while DNS answers are read (--dns-names on and the packet socket open)',
      registers,
    });
  }

  /** Opens the packet socket and starts reading. Never throws: without it, one warning. */
  start(): boolean {
    const { log } = this.deps;
    let socket: PacketSocket;
    let fd: number;
    try {
      socket = this.deps.socket ?? loadPacketSocket();
      fd = socket.open();
    } catch (err) {
      log.warn({ err }, '--dns-names: no packet socket (platform or addon): peers are not named');
      return false;
    }
    if (fd < 0) {
      const code = errnoName(fd);
      log.warn(
        { errno: code },
        code === 'EPERM' || code === 'EACCES'
          ? '--dns-names: cannot open a packet socket without CAP_NET_RAW (add it, or set --dns-names=false): peers are not named'
          : `--dns-names: cannot open a packet socket (${code}): peers are not named`,
      );
      return false;
    }
    this.fd = fd;
    // A burst of answers (a node's pods all resolving after a rollout) waits here, not dropped.
    socket.setRecvBuffer(fd, 4 << 20);
    this.poll = socket.poll(fd, (status) => this.onReadable(socket, status));
    socket.pollStart(this.poll);
    this.learning.set(1);
    log.info('--dns-names: learning peer names from DNS answers on this node');
    return true;
  }

  close(): void {
    if (this.fd < 0) return;
    const socket = this.deps.socket ?? loadPacketSocket();
    if (this.poll !== undefined) socket.pollClose(this.poll);
    socket.close(this.fd);
    this.poll = undefined;
    this.fd = -1;
    this.learning.set(0);
  }

  private onReadable(socket: PacketSocket, status: number): void {
    if (this.fd < 0) return;
    for (;;) {
      const end = socket.recv(this.fd, this.buf, 0, this.info);
      if (this.info[PACKET_RECEIVED] === 0) {
        if (this.info[PACKET_ERRNO] !== 0) {
          this.deps.log.warn(
            { errno: errnoName(this.info[PACKET_ERRNO]!) },
            '--dns-names: reading the packet socket failed',
          );
        }
        break;
      }
      this.take(this.buf, end);
    }
    // libuv stops a handle after an error condition: start it again (the read cleared it).
    if (status < 0 && this.poll !== undefined) socket.pollStart(this.poll);
    const now = this.clock.now();
    if (now - this.lastSweep >= SWEEP_EVERY_MS) {
      this.lastSweep = now;
      this.cache.sweep();
      this.recent.clear();
    }
  }

  /** Parses the records `recv` wrote in `buf[0, end)` (layout in native/index.ts PacketSocket.recv). */
  take(buf: Buffer, end: number): void {
    let p = 0;
    while (p + PACKET_HEADER <= end) {
      const orig = buf.readUInt32LE(p);
      const cap = buf.readUInt16LE(p + 4);
      const ethertype = buf.readUInt16LE(p + 6);
      this.packet(buf, p + PACKET_HEADER, Math.min(cap, end - p - PACKET_HEADER), orig, ethertype);
      p = (p + PACKET_HEADER + cap + 3) & ~3;
    }
  }

  /** One captured IP packet. */
  packet(buf: Buffer, off: number, len: number, orig: number, ethertype: number): void {
    const r = parsePacket(buf, off, len, orig, ethertype);
    const totals = this.totals;
    if (typeof r === 'string') {
      totals.packets++;
      totals.errors.set(r, (totals.errors.get(r) ?? 0) + 1);
      return;
    }
    const now = this.clock.now();
    const seen = this.recent.get(r.key);
    if (seen !== undefined && now - seen < DUPLICATE_WINDOW_MS) return;
    if (this.recent.size >= 4096) this.recent.clear();
    this.recent.set(r.key, now);
    totals.packets++;
    totals.answers += r.messages;
    for (const a of r.addresses) this.cache.add(a.address, a.name, a.ttl, r.client);
  }
}
