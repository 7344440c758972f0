// The one place that creates ctnetlink sockets, over podflow's addon (native/index.ts). The addon
// returns every failure as a value and never blocks: a libuv poll handle says when datagrams wait,
// and each wake-up copies as many as fit into one receive buffer this socket owns (no allocation
// per datagram). ENOBUFS (the kernel dropped messages, events sockets under load) is counted and
// reading goes on, in this process.
import {
  errnoName,
  loadNetlink,
  type Netlink,
  type PollHandle,
  RECV_DATAGRAMS,
  RECV_ERRNO,
  RECV_INFO_LENGTH,
  RECV_OVERRUNS,
  RECV_TRUNCATED,
} from '../../native/index.js';
import { NETLINK_NETFILTER } from './ctnetlink.js';

/** A failed netlink system call: `errno` and its name (`code`), e.g. EPERM. */
export class NetlinkError extends Error {
  override name = 'NetlinkError';
  readonly code: string;
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
    this.code = errnoName(errno);
  }
}

const fail = (what: string, negErrno: number) =>
  new NetlinkError(`${what}: ${errnoName(negErrno)}`, -negErrno);

export interface SocketHandlers {
  /**
   * Received datagrams, back to back (each starts 4-aligned, as netlink messages do). The view is
   * into the socket's receive buffer: valid only during the call. May throw: the exception goes to
   * `onError`.
   */
  onMessage(buf: Buffer): void;
  /** `count` datagrams were larger than the receive buffer's free space (their messages are lost). */
  onTruncated(count: number): void;
  /** The kernel dropped messages for this socket (ENOBUFS), `count` times since the last read. */
  onLost?(count: number): void;
  /** Receive errors other than ENOBUFS, and anything thrown by the handlers. Must not throw itself. */
  onError(err: Error & { code?: string; errno?: number }): void;
}

export interface SocketOptions {
  /** Largest datagram expected: a read stops when less than this is free. @default 32768 */
  msgBufferSize: number;
  /** SO_RCVBUF to ask for (SO_RCVBUFFORCE with CAP_NET_ADMIN, else capped by net.core.rmem_max). */
  recvBufferSize: number;
  /** Bytes received per wake-up at most (the receive buffer). @default 512 KiB */
  readBufferSize?: number;
  /** Multicast groups to join (NFNLGRP_*). */
  groups?: number[];
}

/** Largest datagram the kernel builds for a dump (netlink caps its dump allocations at 32 KiB). */
const MAX_DUMP_DATAGRAM = 32768;

/** Opens a NETLINK_NETFILTER socket and starts reading it. Throws NetlinkError when it cannot. */
export function openNetfilterSocket(opts: SocketOptions, h: SocketHandlers): NetfilterSocket {
  return new NetfilterSocket(loadNetlink(), opts, h);
}

export class NetfilterSocket {
  /** SO_RCVBUF the kernel granted (it doubles the asked value). */
  readonly recvBufferBytes: number;
  private fd: number;
  private readonly poll: PollHandle;
  private readonly buf: Buffer;
  private readonly slot: number;
  private readonly info = new Int32Array(RECV_INFO_LENGTH);

  constructor(
    private readonly nl: Netlink,
    opts: SocketOptions,
    private readonly h: SocketHandlers,
  ) {
    this.slot = opts.msgBufferSize > 0 ? opts.msgBufferSize : MAX_DUMP_DATAGRAM;
    this.buf = Buffer.allocUnsafe(Math.max(opts.readBufferSize ?? 512 * 1024, this.slot));
    const fd = nl.open(NETLINK_NETFILTER);
    if (fd < 0) throw fail('socket(AF_NETLINK, NETLINK_NETFILTER)', fd);
    this.fd = fd;
    try {
      const granted = nl.setRecvBuffer(fd, opts.recvBufferSize);
      if (granted < 0) throw fail('setsockopt(SO_RCVBUF)', granted);
      this.recvBufferBytes = granted;
      for (const g of opts.groups ?? []) {
        const r = nl.addMembership(fd, g);
        if (r < 0) throw fail(`joining netlink group ${g}`, r);
      }
      this.poll = nl.poll(fd, (status) => this.onReadable(status));
      const r = nl.pollStart(this.poll);
      if (r < 0) {
        nl.pollClose(this.poll);
        throw fail('polling the netlink socket', r);
      }
    } catch (err) {
      nl.close(fd);
      throw err;
    }
  }

  /** Sends one request. Returns the error instead of throwing (the socket stays usable). */
  send(msg: Buffer): NetlinkError | undefined {
    if (this.fd < 0) return new NetlinkError('netlink socket closed', 9 /* EBADF */);
    const n = this.nl.send(this.fd, msg);
    return n < 0 ? fail('sending a netlink request', n) : undefined;
  }

  /** A referenced socket keeps the process alive (while a request is in flight). */
  ref(): void {
    if (this.fd >= 0) this.nl.pollRef(this.poll, true);
  }

  unref(): void {
    if (this.fd >= 0) this.nl.pollRef(this.poll, false);
  }

  close(): void {
    if (this.fd < 0) return;
    this.nl.pollClose(this.poll);
    this.nl.close(this.fd);
    this.fd = -1;
  }

  private onReadable(status: number): void {
    if (this.fd < 0) return;
    const info = this.info;
    let end = 0;
    try {
      end = this.nl.recv(this.fd, this.buf, 0, this.slot, info);
      if (info[RECV_OVERRUNS]! > 0) this.h.onLost?.(info[RECV_OVERRUNS]!);
      if (info[RECV_TRUNCATED]! > 0) this.h.onTruncated(info[RECV_TRUNCATED]!);
      if (info[RECV_DATAGRAMS]! > 0) this.h.onMessage(this.buf.subarray(0, end));
      if (info[RECV_ERRNO]! !== 0)
        this.h.onError(fail('receiving from the netlink socket', -info[RECV_ERRNO]!));
    } catch (err) {
      this.safeError(err);
    }
    // libuv stops the handle on an error condition (POLLERR: a pending ENOBUFS, now read and counted).
    if (status < 0 && this.fd >= 0) {
      const r = this.nl.pollStart(this.poll);
      if (r < 0) this.safeError(fail('polling the netlink socket', r));
    }
  }

  private safeError(err: unknown): void {
    try {
      this.h.onError(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // A handler that throws from onError has nowhere left to report to.
    }
  }
}
