// The packet socket of `--dns-names` (native/src/packet.c through native/index.ts), in a test
// network namespace: its kernel filter passes UDP and TCP from port 53, IPv4 and IPv6, and nothing
// else; records come in the layout PacketSocket.recv documents.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, createNetns, requireRoot } from './helpers/netns.js';

const ROOT = new URL('..', import.meta.url).pathname;
const root = requireRoot();

/** Opens the socket, sends datagrams from ports 53 and 54 over lo (v4, v6) and a TCP answer, prints what arrived. */
const SCRIPT = String.raw`
import { createSocket } from 'node:dgram';
import { createServer, connect } from 'node:net';
const { loadPacketSocket, PACKET_HEADER, PACKET_RECEIVED } = await import(process.argv[1]);
const pk = loadPacketSocket();
const fd = pk.open();
if (fd < 0) throw new Error('open: ' + fd);
const send = (type, host, port) => new Promise((resolve) => {
  const s = createSocket(type);
  s.bind(port, host, () => s.send(Buffer.from('answer from ' + port), 9, host, () => { s.close(); resolve(); }));
});
await send('udp4', '127.0.0.1', 53);
await send('udp4', '127.0.0.1', 54);
await send('udp6', '::1', 53);
await send('udp6', '::1', 5353);
// TCP from port 53: the server's segments (SYN-ACK, data, FIN) pass; the client's do not.
await new Promise((resolve) => {
  const srv = createServer((c) => c.end('tcp answer')).listen(53, '127.0.0.1', () => {
    const c = connect(53, '127.0.0.1');
    c.on('data', () => {});
    c.on('close', () => { srv.close(); resolve(); });
  });
});
await new Promise((r) => setTimeout(r, 100));
const buf = Buffer.alloc(1 << 20);
const info = new Int32Array(4);
const end = pk.recv(fd, buf, 0, info);
const got = [];
for (let p = 0; p + PACKET_HEADER <= end; ) {
  const cap = buf.readUInt16LE(p + 4);
  const et = buf.readUInt16LE(p + 6);
  const ip = p + PACKET_HEADER;
  const l4 = et === 0x0800 ? ip + (buf[ip] & 15) * 4 : ip + 40;
  const proto = et === 0x0800 ? buf[ip + 9] : buf[ip + 6];
  got.push({ et, proto, sport: buf.readUInt16BE(l4), dport: buf.readUInt16BE(l4 + 2), len: buf.readUInt32LE(p), cap });
  p = (p + PACKET_HEADER + cap + 3) & ~3;
}
pk.close(fd);
console.log(JSON.stringify({ received: info[PACKET_RECEIVED], got }));
`;

describe.skipIf(!root)('packet socket (DNS answers)', () => {
  afterAll(cleanupAll);

  it('passes UDP and TCP from port 53 over IPv4 and IPv6, nothing else', async () => {
    const ns = await createNetns('pk');
    const { stdout } = await ns.exec(process.execPath, [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      SCRIPT,
      join(ROOT, 'native/index.ts'),
    ]);
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
      received: number;
      got: { et: number; proto: number; sport: number; dport: number; len: number; cap: number }[];
    };
    // lo: each packet is seen leaving and arriving (PACKET_OUTGOING and PACKET_HOST).
    expect(r.got.every((g) => g.sport === 53)).toBe(true);
    expect(r.got.every((g) => g.len === g.cap)).toBe(true);
    const udp = r.got.filter((g) => g.proto === 17);
    expect(udp.filter((g) => g.et === 0x0800).length).toBe(2);
    expect(udp.filter((g) => g.et === 0x86dd).length).toBe(2);
    expect(r.got.filter((g) => g.proto === 6).length).toBeGreaterThanOrEqual(4);
    expect(r.received).toBe(r.got.length);
  }, 30_000);
});
