// A conntrack reader run as a child process inside a test's network namespace
// (`ip netns exec NS node --import tsx test/helpers/conntrack-reader.ts '<json options>'`): it reads
// that namespace's table with the real netfilter source, tracker and reducer, and answers commands
// given as JSON lines on stdin with JSON lines on stdout:
//   {"cmd":"tick"}  → {"flows":[...], "entries":n, "parseErrors":n, "lostEvents":n, ...}
//   {"cmd":"dump"}  → {"entries":[{proto, origSrc, ..., origBytes, ...}], "stats": {...}}
//   {"cmd":"exit"}
// Options: {"local": ["10.1.0.1", ...], "groupPublicIps": false, "eventsRecvBuffer": n,
//           "countExisting": false, "events": true, "conntrackAcct": true}
import { createInterface } from 'node:readline';
import { AF_UNSPEC, buildDumpRequest, NLMSG_DONE } from '../../collector/netfilter/ctnetlink.js';
import { openNetfilterSocket } from '../../collector/netfilter/socket.js';
import { createNetfilterSource } from '../../collector/netfilter/source.js';
import { createReducer } from '../../collector/reduce.js';
import { createLogger } from '../../shared/log.js';

const opts = JSON.parse(process.argv[2] ?? '{}') as {
  local?: string[];
  groupPublicIps?: boolean;
  eventsRecvBuffer?: number;
  countExisting?: boolean;
  events?: boolean;
  conntrackAcct?: boolean;
};
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const log = createLogger('warn');
const local = new Set(opts.local ?? []);
const source = createNetfilterSource(
  {
    procPath: '/proc',
    conntrackAcct: opts.conntrackAcct ?? true,
    events: opts.events ?? true,
    eventsRecvBuffer: opts.eventsRecvBuffer,
  },
  { log },
);
const reducer = createReducer(
  { groupPublicIps: opts.groupPublicIps ?? false, countExisting: opts.countExisting ?? false },
  { podIndex: { isLocal: (ip) => local.has(ip) }, log },
);

/** The datagrams of one dump as received (batches of datagrams back to back, copied). */
function rawDump(): Promise<Buffer[]> {
  const got: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const sock = openNetfilterSocket(
      { msgBufferSize: 32768, recvBufferSize: 1 << 20 },
      {
        onMessage(b) {
          got.push(Buffer.from(b));
          for (let off = 0; off + 16 <= b.length; ) {
            const len = b.readUInt32LE(off);
            if (len < 16) break;
            if (b.readUInt16LE(off + 4) === NLMSG_DONE) {
              sock.close();
              resolve(got);
              return;
            }
            off += (len + 3) & ~3;
          }
        },
        onTruncated: () => undefined,
        onError(err) {
          sock.close();
          reject(err);
        },
      },
    );
    const err = sock.send(buildDumpRequest(1, AF_UNSPEC));
    if (err) {
      sock.close();
      reject(err);
    }
  });
}

try {
  await source.start();
} catch (err) {
  out({ error: (err as Error).message, name: (err as Error).name });
  process.exit(3);
}
out({ ready: true });

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { cmd: string };
  try {
    if (cmd.cmd === 'tick') {
      const r = await reducer.tick(source);
      out({ ...r, lostEvents: source.lostEvents, endedEvents: source.endedEvents });
    } else if (cmd.cmd === 'dump') {
      const entries: unknown[] = [];
      const stats = await source.read((s) => {
        entries.push({
          family: s.family,
          proto: s.proto,
          zone: s.zone,
          id: s.id,
          origSrc: s.origSrc,
          origDst: s.origDst,
          origSport: s.origSport,
          origDport: s.origDport,
          replySrc: s.replySrc,
          origBytes: s.origBytes,
          origPackets: s.origPackets,
          replyBytes: s.replyBytes,
          replyPackets: s.replyPackets,
          hasCounters: s.hasCounters,
        });
      });
      out({ entries, stats });
    } else if (cmd.cmd === 'block') {
      const until = Date.now() + (cmd as { ms?: number }).ms!;
      while (Date.now() < until) {
        // Busy on purpose: the sockets are not read meanwhile.
      }
      out({ blocked: true });
    } else if (cmd.cmd === 'raw') {
      // The datagrams of one dump, as received (base64), for replaying into the parser.
      out({ datagrams: (await rawDump()).map((b) => b.toString('base64')) });
    } else if (cmd.cmd === 'exit') {
      break;
    }
  } catch (err) {
    out({ error: (err as Error).message, cause: String((err as Error).cause ?? '') });
  }
}
await source.close();
process.exit(0);
