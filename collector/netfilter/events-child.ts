// The DESTROY-event subscriber, run as a child process of the collector (see events.ts for why).
// argv: [recvBufferSize]. It forwards every datagram to stdout as a frame:
//   u32le length of the payload, u8 kind, payload
//   kind 0 = event datagram, 1 = ready, 2 = events lost (ENOBUFS reported), 3 = fatal error (JSON)
// It exits when stdin closes (the collector went away) and when its socket fails.
import { RawNetlinkSocket } from 'netlink';
import { NETLINK_NETFILTER, NFNLGRP_CONNTRACK_DESTROY } from './ctnetlink.js';

const KIND_EVENT = 0;
const KIND_READY = 1;
const KIND_LOST = 2;
const KIND_ERROR = 3;

let pending: Buffer[] = [];
let scheduled = false;

function frame(kind: number, payload: Buffer): void {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32LE(payload.length, 0);
  head[4] = kind;
  pending.push(head, payload);
  if (!scheduled) {
    scheduled = true;
    // One write per loop turn, however many events arrived in it.
    setImmediate(flush);
  }
}

function flush(): void {
  scheduled = false;
  const out = Buffer.concat(pending);
  pending = [];
  process.stdout.write(out);
}

/** Reports a fatal error to the collector and exits (it decides whether to start a new child). */
function fail(err: unknown): void {
  const e = err as { code?: string; errno?: number; message?: string };
  const payload = Buffer.from(JSON.stringify({ code: e.code, errno: e.errno, message: e.message }));
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32LE(payload.length, 0);
  head[4] = KIND_ERROR;
  const out = Buffer.concat([...pending, head, payload]);
  pending = [];
  process.stdout.write(out, () => process.exit(2));
  setTimeout(() => process.exit(2), 1000).unref();
}

let sock: RawNetlinkSocket;
try {
  sock = new RawNetlinkSocket(NETLINK_NETFILTER, {
    recvBufferSize: Number(process.argv[2] ?? 8 << 20) || 8 << 20,
    sendBufferSize: 64 * 1024,
  });
  sock.on('error', (err: Error & { code?: string }) => {
    try {
      if (err.code === 'ENOBUFS') frame(KIND_LOST, Buffer.alloc(0));
      else fail(err);
    } catch {}
  });
  sock.on('message', (buf: Buffer) => {
    try {
      frame(KIND_EVENT, buf);
    } catch {}
  });
  sock.addMembership(NFNLGRP_CONNTRACK_DESTROY);
  frame(KIND_READY, Buffer.from(String(sock.getRecvBufferSize())));
} catch (err) {
  fail(err);
}

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.stdout.on('error', () => process.exit(0));
