// DESTROY events: the final counters of connections that end, including those that begin and end
// between two reads (a dump would never see them). Datagrams are only queued in the socket callback
// (nothing there can fail) and parsed when the tick drains them, right after its dump.
//
// Events are lossy: when the kernel cannot queue an event on our socket it drops it and the next
// receive fails with ENOBUFS. We count such occurrences (`lostEvents`) and carry on; a large
// SO_RCVBUF (capped by net.core.rmem_max) makes them rare.
import type { RawNetlinkSocket } from 'netlink';
import type { Logger } from '../../shared/log.js';
import type { ConnSample } from '../source.js';
import { IPCTNL_MSG_CT_DELETE, NFNLGRP_CONNTRACK_DESTROY, NLMSG_HDRLEN } from './ctnetlink.js';
import { CtSample, parseCtMessage } from './parser.js';
import { openNetfilterSocket } from './socket.js';

export interface EventsOptions {
  /** SO_RCVBUF to ask for. @default 8 MiB (the kernel caps it at net.core.rmem_max) */
  recvBufferSize?: number;
  /** Bytes of datagrams kept between two drains before new ones are dropped (and counted lost). */
  maxQueuedBytes?: number;
}

const u32le = (b: Buffer, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
const u16le = (b: Buffer, o: number) => b[o] | (b[o + 1] << 8);

export class ConntrackEvents {
  /** Times events were dropped (ENOBUFS from the kernel, or our queue full). */
  lostEvents = 0;
  /** Event messages that could not be parsed. */
  parseErrors = 0;
  /** DESTROY events handed on. */
  ended = 0;
  private sock: RawNetlinkSocket | undefined;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private readonly sample = new CtSample();
  private readonly maxQueuedBytes: number;
  private readonly recvBufferSize: number;

  constructor(
    opts: EventsOptions = {},
    private readonly log?: Logger,
  ) {
    this.recvBufferSize = opts.recvBufferSize ?? 8 * 1024 * 1024;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * 1024 * 1024;
  }

  /** Subscribes to DESTROY events. Throws (EPERM) without CAP_NET_ADMIN. */
  open(): void {
    const sock = openNetfilterSocket(
      // Peek each datagram's size: events are small, a fixed large buffer would waste memory.
      { msgBufferSize: 0, recvBufferSize: this.recvBufferSize },
      {
        onMessage: (buf) => {
          if (this.queuedBytes + buf.length > this.maxQueuedBytes) {
            this.lostEvents++;
            return;
          }
          this.queue.push(buf);
          this.queuedBytes += buf.length;
        },
        onTruncated: () => {
          this.parseErrors++;
        },
        onError: (err) => {
          if (err.code === 'ENOBUFS') this.lostEvents++;
          else this.log?.warn({ err }, 'conntrack events socket error');
        },
      },
    );
    try {
      sock.addMembership(NFNLGRP_CONNTRACK_DESTROY);
    } catch (err) {
      sock.close();
      throw err;
    }
    sock.unref();
    this.sock = sock;
  }

  /** SO_RCVBUF the kernel granted (it doubles the asked value, capped at 2 × rmem_max). */
  recvBufferBytes(): number {
    return this.sock?.getRecvBufferSize() ?? 0;
  }

  /** Hands every queued DESTROY event to `visit`, oldest first, and empties the queue. */
  drain(visit: (s: ConnSample) => void): void {
    const queue = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    const s = this.sample;
    for (const b of queue) {
      let off = 0;
      while (off + NLMSG_HDRLEN <= b.length) {
        const len = u32le(b, off);
        if (len < NLMSG_HDRLEN || off + len > b.length) {
          this.parseErrors++;
          break;
        }
        if (u16le(b, off + 4) === IPCTNL_MSG_CT_DELETE) {
          if (parseCtMessage(b, off, off + len, s)) {
            this.ended++;
            visit(s);
          } else {
            this.parseErrors++;
          }
        }
        off += (len + 3) & ~3;
      }
    }
  }

  close(): void {
    const s = this.sock;
    this.sock = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    try {
      s?.close();
    } catch {}
  }
}
