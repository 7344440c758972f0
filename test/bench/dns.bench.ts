// Benchmark of `--dns-names`: what learning names costs, next to a floor measured in the same run.
//
//   npm run bench:dns
//
// CPU: 10,000 distinct answer packets (IPv4/UDP, a question, a CNAME and two A records, ~110
// bytes: a typical CDN answer), laid out in a buffer as native/src/packet.c writes them, go through
// the real DnsLearner (collector/dns/message.ts, duplicate check, self-metrics, NameCache) several
// times over. The floor: the same walk over the same records that only reads each record's header
// and slices the packet (the least any reader does). Printed: µs per answer, the share of one core
// at 1,000 answers/s, and the ratio to the floor; dns-packet's decode of the same messages for
// comparison (why collector/dns/message.ts exists).
// Memory: the growth of heap and ArrayBuffers (after a full GC) of a NameCache holding 100k
// addresses with distinct names, against the floor: the names' bytes plus 16 bytes an address (and,
// for comparison, the same address and name strings held in plain arrays). Lookup: µs per nameOf.
// Figures, not assertions.

import * as dnsPacket from 'dns-packet';
import { Registry } from 'prom-client';
import { DnsLearner } from '../../collector/dns/learner.js';
import { NameCache } from '../../collector/dns/names.js';
import { PACKET_HEADER } from '../../native/index.js';
import { silentLogger } from '../../shared/log.js';
import { ManualClock } from '../fixtures/clock.js';

const N = 10_000;
const ROUNDS = 30;

function udp4(payload: Buffer, client: number): Buffer {
  const ip = Buffer.alloc(28);
  ip[0] = 0x45;
  ip.writeUInt16BE(28 + payload.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0x0a600000 + 10, 12); // 10.96.0.10: a cluster DNS service
  ip.writeUInt32BE(0x0a000000 + (client % 60000), 16);
  ip.writeUInt16BE(53, 20);
  ip.writeUInt16BE(30000 + (client % 30000), 22);
  ip.writeUInt16BE(8 + payload.length, 24);
  return Buffer.concat([ip, payload]);
}

/** Records as PacketSocket.recv lays them out. */
function records(): { buf: Buffer; end: number } {
  const parts: Buffer[] = [];
  for (let i = 0; i < N; i++) {
    const name = `svc-${i}.api.example.com`;
    const msg = dnsPacket.encode({
      type: 'response',
      id: i & 0xffff,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: [{ type: 'A', name }],
      answers: [
        { type: 'CNAME', name, ttl: 30, data: `edge-${i % 97}.cdn.example.net` },
        {
          type: 'A',
          name: `edge-${i % 97}.cdn.example.net`,
          ttl: 30,
          data: `203.0.${(i >> 8) & 0xff}.${i & 0xff}`,
        },
        {
          type: 'A',
          name: `edge-${i % 97}.cdn.example.net`,
          ttl: 30,
          data: `198.51.${(i >> 8) & 0xff}.${i & 0xff}`,
        },
      ],
    });
    const pkt = udp4(msg, i);
    const rec = Buffer.alloc((PACKET_HEADER + pkt.length + 3) & ~3);
    rec.writeUInt32LE(pkt.length, 0);
    rec.writeUInt16LE(pkt.length, 4);
    rec.writeUInt16LE(0x0800, 6);
    pkt.copy(rec, PACKET_HEADER);
    parts.push(rec);
  }
  const buf = Buffer.concat(parts);
  return { buf, end: buf.length };
}

function floorWalk(buf: Buffer, end: number): number {
  let p = 0;
  let sum = 0;
  while (p + PACKET_HEADER <= end) {
    const cap = buf.readUInt16LE(p + 4);
    const pkt = buf.subarray(p + PACKET_HEADER, p + PACKET_HEADER + cap);
    sum += pkt[9]! + buf.readUInt16LE(p + 6);
    p = (p + PACKET_HEADER + cap + 3) & ~3;
  }
  return sum;
}

/** CPU time (user + system) in ms: steadier than wall time on a shared machine. */
function time(fn: () => void): number {
  const t = process.cpuUsage();
  fn();
  const d = process.cpuUsage(t);
  return (d.user + d.system) / 1000;
}

const { buf, end } = records();
console.log(
  `dns bench: ${N} answers of ${Math.round(end / N)} bytes each (record included), ${ROUNDS} rounds`,
);

// Warm up both paths.
const clock = new ManualClock(0);
const learner = new DnsLearner({ graceMs: 60_000 }, { log: silentLogger, registry: new Registry(), clock });
for (let w = 0; w < 3; w++) {
  clock.advance(10_000); // past the duplicate window: every round counts
  learner.take(buf, end);
  floorWalk(buf, end);
}
let learnMs = 0;
let floorMs = 0;
let decodeMs = 0;
let sink = 0;
for (let r = 0; r < ROUNDS; r++) {
  clock.advance(10_000);
  learnMs += time(() => learner.take(buf, end));
  floorMs += time(() => {
    sink += floorWalk(buf, end);
  });
  decodeMs += time(() => {
    let p = 0;
    while (p + PACKET_HEADER <= end) {
      const cap = buf.readUInt16LE(p + 4);
      sink += dnsPacket.decode(buf.subarray(p + PACKET_HEADER + 28, p + PACKET_HEADER + cap)).answers!.length;
      p = (p + PACKET_HEADER + cap + 3) & ~3;
    }
  });
}
const per = (ms: number) => (ms * 1000) / (N * ROUNDS);
const learnUs = per(learnMs);
console.log(
  `learner:        ${learnUs.toFixed(2)} µs/answer = ${((learnUs * 1000) / 1e4).toFixed(3)}% of a core at 1,000 answers/s`,
);
console.log(`dns-packet decode of the same messages, alone: ${per(decodeMs).toFixed(2)} µs/answer`);
console.log(
  `floor (record walk): ${per(floorMs).toFixed(3)} µs/answer; learner/floor = ${(learnMs / floorMs).toFixed(0)}x`,
);
console.log(`names held: ${learner.cache.stats().names} (checksum ${sink})`);

// Memory at 100k names.
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.log('memory: run with --expose-gc (npm run bench:dns does)');
} else {
  // The cache's arrays are ArrayBuffers, outside the JS heap: both count.
  const used = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const M = 100_000;
  const addr = (i: number) => `203.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;
  const name = (i: number) => `svc-${i}.api.example.com`;
  // Floors: the names' bytes plus 16 bytes an address (what any store must hold), and the same
  // address and name strings held in plain arrays (what a store of JS strings starts from).
  let rawBytes = 0;
  for (let i = 0; i < M; i++) rawBytes += Buffer.byteLength(name(i)) + 16;
  let before = used();
  const addrs: string[] = new Array(M);
  const names: string[] = new Array(M);
  for (let i = 0; i < M; i++) {
    addrs[i] = addr(i);
    names[i] = name(i);
  }
  const stringBytes = used() - before;
  addrs.length = 0;
  names.length = 0;
  before = used();
  const cache = new NameCache({ maxNames: M, graceMs: 60_000 }, new ManualClock(0));
  // 250 pods asking (a full node), each answer's client a fresh string as the parser makes it.
  for (let i = 0; i < M; i++) cache.add(addr(i), name(i), 30, `10.0.0.${i % 250}`);
  const cacheBytes = used() - before;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(
    `cache at ${cache.stats().names} names: ${mib(cacheBytes)} = ${(cacheBytes / 1e6).toFixed(1)} MB (${Math.round(cacheBytes / M)} B/name; the store's own count ${mib(cache.memory().bytes)})`,
  );
  console.log(
    `floor (name bytes + 16 B an address): ${mib(rawBytes)}; ratio ${(cacheBytes / rawBytes).toFixed(2)}. The same as JS strings in arrays: ${mib(stringBytes)}`,
  );
  // Lookup, as the reducer asks once per new connection: the learned names, one client in ten the asker.
  let hits = 0;
  const ms = time(() => {
    for (let r = 0; r < 5; r++)
      for (let i = 0; i < M; i++) if (cache.nameOf(addr(i), `10.0.0.${i % 10}`) !== '') hits++;
  });
  console.log(`lookup: ${((ms * 1000) / (5 * M)).toFixed(2)} µs (address text made included; ${hits} hits)`);
}
