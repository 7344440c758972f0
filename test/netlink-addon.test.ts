// podflow's netlink sockets (native/src/netlink.c through native/index.ts and
// collector/netfilter/socket.ts): failures come back as values, never as throws or aborts, and a
// DESTROY-events socket that overflows (ENOBUFS) is counted and read on, in the collector's one process.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { NETLINK_NETFILTER } from '../collector/netfilter/ctnetlink.js';
import { openNetfilterSocket } from '../collector/netfilter/socket.js';
import {
  errnoName,
  loadNetlink,
  RECV_DATAGRAMS,
  RECV_ERRNO,
  RECV_INFO_LENGTH,
  RECV_OVERRUNS,
  RECV_TRUNCATED,
} from '../native/index.js';
import { cleanupAll, createPair, kill, requireRoot, runClient, startServer } from './helpers/netns.js';

const root = requireRoot();
const repo = join(fileURLToPath(import.meta.url), '../..');

describe.skipIf(!root)('netlink addon: errors as values', () => {
  const nl = loadNetlink();

  it('returns a negative errno for a refused socket, a closed fd and a bad group', () => {
    const bad = nl.open(4000);
    expect(bad).toBeLessThan(0);
    expect(errnoName(bad)).toBe('EPROTONOSUPPORT');

    const fd = nl.open(NETLINK_NETFILTER);
    expect(fd).toBeGreaterThanOrEqual(0);
    // SO_RCVBUFFORCE as root: not capped by net.core.rmem_max; the kernel doubles what is asked.
    expect(nl.setRecvBuffer(fd, 1 << 20)).toBe(2 << 20);
    expect(errnoName(nl.addMembership(fd, 4000))).toBe('EINVAL');
    const info = new Int32Array(RECV_INFO_LENGTH);
    // Nothing waiting is not an error: no datagram, no errno, the offset unchanged.
    expect(nl.recv(fd, Buffer.alloc(65536), 8, 32768, info)).toBe(8);
    expect([...info]).toEqual([0, 0, 0, 0]);
    expect(nl.close(fd)).toBe(0);

    expect(errnoName(nl.close(fd))).toBe('EBADF');
    expect(errnoName(nl.send(fd, Buffer.alloc(20)))).toBe('EBADF');
    expect(errnoName(nl.setRecvBuffer(fd, 4096))).toBe('EBADF');
    expect(errnoName(nl.addMembership(fd, 3))).toBe('EBADF');
    expect(nl.recv(fd, Buffer.alloc(65536), 0, 32768, info)).toBe(0);
    expect(errnoName(info[RECV_ERRNO]!)).toBe('EBADF');
    expect([info[RECV_DATAGRAMS], info[RECV_TRUNCATED], info[RECV_OVERRUNS]]).toEqual([0, 0, 0]);
  });

  it('throws only for misuse: wrong argument types and ranges', () => {
    expect(() => nl.open(-1)).toThrow(RangeError);
    expect(() => nl.send(0, 'text' as unknown as Buffer)).toThrow(TypeError);
    expect(() => nl.recv(0, Buffer.alloc(8), 0, 8, new Int32Array(2))).toThrow('Int32Array(4)');
    expect(() => nl.poll(0, undefined as unknown as () => void)).toThrow(TypeError);
  });

  it('openNetfilterSocket names what failed: a refused group is a NetlinkError with its code', () => {
    const handlers = { onMessage() {}, onTruncated() {}, onError() {} };
    expect(() =>
      openNetfilterSocket({ msgBufferSize: 8192, recvBufferSize: 65536, groups: [4000] }, handlers),
    ).toThrow(
      expect.objectContaining({
        name: 'NetlinkError',
        code: 'EINVAL',
        message: 'joining netlink group 4000: EINVAL',
      }),
    );
  });
});

/** The reader harness (test/helpers/conntrack-reader.ts) in a namespace, driven over stdin/stdout. */
function startReader(proc: ChildProcess) {
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr += d;
  });
  const next = async <T>() => {
    const r = await lines.next();
    if (r.done) throw new Error(`reader exited: ${stderr.slice(-2000)}`);
    return JSON.parse(r.value) as T;
  };
  const send = async <T>(cmd: object) => {
    proc.stdin!.write(`${JSON.stringify(cmd)}\n`);
    return next<T>();
  };
  return { next, send };
}

interface Tick {
  flows: { txBytes: number }[];
  lostEvents: number;
  endedEvents: number;
}

describe.skipIf(!root)('DESTROY events overflowing a tiny receive buffer', () => {
  afterAll(cleanupAll);

  it('counts the lost events, reads on, and stays one process', async () => {
    const pair = await createPair(212);
    const proc = pair.a.spawn(process.execPath, [
      '--import',
      'tsx',
      join(repo, 'test/helpers/conntrack-reader.ts'),
      JSON.stringify({ local: [pair.a4], eventsRecvBuffer: 1 }),
    ]);
    const reader = startReader(proc);
    try {
      expect(await reader.next<{ ready?: boolean }>()).toEqual({ ready: true });
      await reader.send({ cmd: 'tick' });
      const udp = await startServer(pair.b, 'udp', '0.0.0.0');
      await runClient(pair.a, 'udp', pair.b4, udp.port, {
        send: 16,
        receive: 16,
        count: 1000,
        concurrency: 50,
      });
      // A burst of 1000 DESTROY events into a few KiB while the reader's event loop is busy.
      const busy = reader.send({ cmd: 'block', ms: 1000 });
      await pair.a.exec('conntrack', ['-D', '-s', pair.a4]).catch(() => undefined);
      await busy;
      const t1 = await reader.send<Tick>({ cmd: 'tick' });
      expect(t1.lostEvents).toBeGreaterThan(0);
      expect(t1.endedEvents).toBeLessThan(1000);
      // One process: the events are read by the reader itself, no subscriber child.
      const children = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim();
      expect(children).toBe('');
      // Reading goes on: one connection ending now is seen through its event, with its bytes.
      await runClient(pair.a, 'udp', pair.b4, udp.port, { send: 300, receive: 10, count: 1 });
      await pair.a.exec('conntrack', ['-D', '-s', pair.a4]);
      let t2 = await reader.send<Tick>({ cmd: 'tick' });
      for (let i = 0; i < 20 && t2.endedEvents === t1.endedEvents; i++) {
        await new Promise((r) => setTimeout(r, 50));
        t2 = await reader.send<Tick>({ cmd: 'tick' });
      }
      expect(t2.endedEvents).toBe(t1.endedEvents + 1);
      expect(t2.flows.reduce((n, f) => n + f.txBytes, 0)).toBe(328);
      await udp.stop();
    } finally {
      proc.stdin?.end('{"cmd":"exit"}\n');
      await kill(proc);
    }
  });
});
