// DESTROY events: the final counters of connections that end, including those that begin and end
// between two reads (a dump would never see them). Datagrams are only queued as they arrive and
// parsed when the tick drains them, right after its dump.
//
// Events are lossy: when the kernel cannot queue an event on the socket it drops it and reports
// ENOBUFS on the next read. The socket (socket.ts, over podflow's addon) returns that as a count:
// it is added to `lostEvents` and reading goes on, in this process. A large receive buffer
// (SO_RCVBUFFORCE: not capped by net.core.rmem_max, as the collector holds CAP_NET_ADMIN) and reading
// as soon as datagrams arrive make losses rare.
import type { Logger } from '../../shared/log.js';
import type { ConnSample } from '../source.js';
import { IPCTNL_MSG_CT_DELETE, NFNLGRP_CONNTRACK_DESTROY } from './ctnetlink.js';
import { CtSample, walkDatagram } from './parser.js';
import { type NetfilterSocket, NetlinkError, openNetfilterSocket } from './socket.js';

export interface EventsOptions {
  /** SO_RCVBUF to ask for. @default 8 MiB */
  recvBufferSize?: number;
  /** Bytes of datagrams kept between two drains before new ones are dropped (and counted lost). @default 32 MiB */
  maxQueuedBytes?: number;
}

/** Raised by open() when the subscription is refused. */
export class EventsError extends Error {
  override name = 'EventsError';
  constructor(
    message: string,
    readonly errno: number | undefined,
  ) {
    super(message);
  }
}

/**
 * An event skb holds one message and is at most NLMSG_GOODSIZE (a page, capped at 8 KiB): a read
 * stops when less than this is free in the receive buffer.
 */
const EVENT_SLOT = 8192;
/** Queue chunk size: received batches are copied into chunks of this size, reused after a drain. */
const CHUNK = 256 * 1024;

export class ConntrackEvents {
  /** Times events were lost: ENOBUFS reported by the kernel, or our queue was full. */
  lostEvents = 0;
  /** Event messages that could not be parsed. */
  parseErrors = 0;
  /** DESTROY events handed on. */
  ended = 0;
  /** SO_RCVBUF the kernel granted (it doubles the asked value). */
  recvBufferBytes = 0;
  private sock: NetfilterSocket | undefined;
  /** Filled chunks (each used up to its length in `used`), then the one being filled. */
  private chunks: Buffer[] = [];
  private used: number[] = [];
  private queuedBytes = 0;
  private spare: Buffer | undefined;
  private readonly sample = new CtSample();
  private readonly maxQueuedBytes: number;
  private readonly recvBufferSize: number;

  constructor(
    opts: EventsOptions = {},
    private readonly log?: Logger,
  ) {
    this.recvBufferSize = opts.recvBufferSize ?? 8 * 1024 * 1024;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 32 * 1024 * 1024;
  }

  /** Subscribes. Rejects with EventsError (errno EPERM, ...). */
  async open(): Promise<void> {
    if (this.sock) return;
    try {
      this.sock = openNetfilterSocket(
        {
          msgBufferSize: EVENT_SLOT,
          recvBufferSize: this.recvBufferSize,
          readBufferSize: 64 * 1024,
          groups: [NFNLGRP_CONNTRACK_DESTROY],
        },
        {
          onMessage: (b) => this.enqueue(b),
          onTruncated: (n) => {
            this.lostEvents += n;
          },
          onLost: (n) => {
            this.lostEvents += n;
          },
          onError: (err) => this.log?.warn({ err }, 'conntrack events socket'),
        },
      );
    } catch (err) {
      throw new EventsError(
        `conntrack events subscription failed: ${(err as Error).message}`,
        err instanceof NetlinkError ? err.errno : undefined,
      );
    }
    // The subscription does not keep the process alive: the loop's timers and the server do.
    this.sock.unref();
    this.recvBufferBytes = this.sock.recvBufferBytes;
  }

  /** Copies a batch of datagrams (a view into the socket's buffer) into the queue. */
  private enqueue(b: Buffer): void {
    if (this.queuedBytes + b.length > this.maxQueuedBytes) {
      this.lostEvents++;
      return;
    }
    let i = this.chunks.length - 1;
    if (i < 0 || this.used[i]! + b.length > this.chunks[i]!.length) {
      const size = Math.max(CHUNK, b.length);
      const fresh = this.spare && this.spare.length >= size ? this.spare : Buffer.allocUnsafe(size);
      if (fresh === this.spare) this.spare = undefined;
      this.chunks.push(fresh);
      this.used.push(0);
      i++;
    }
    b.copy(this.chunks[i]!, this.used[i]!);
    this.used[i]! += b.length;
    this.queuedBytes += b.length;
  }

  /** Hands every queued DESTROY event to `visit`, oldest first, and empties the queue. */
  drain(visit: (s: ConnSample) => void): void {
    const chunks = this.chunks;
    const used = this.used;
    this.chunks = [];
    this.used = [];
    this.queuedBytes = 0;
    const counted = (s: CtSample) => {
      this.ended++;
      visit(s);
    };
    for (let i = 0; i < chunks.length; i++) {
      this.parseErrors += walkDatagram(
        chunks[i]!.subarray(0, used[i]),
        IPCTNL_MSG_CT_DELETE,
        this.sample,
        counted,
      );
    }
    // One chunk is kept for the next burst; a large backlog's others go back to the allocator.
    if (chunks.length > 0) this.spare = chunks[0];
  }

  close(): void {
    this.sock?.close();
    this.sock = undefined;
    this.chunks = [];
    this.used = [];
    this.queuedBytes = 0;
    this.spare = undefined;
  }
}
