// The one place that creates `netlink` package sockets. HAZARD (see KERNEL-NOTES): an exception that
// escapes a socket callback, or an 'error' event without a listener, aborts the whole process
// (SIGABRT) no matter what uncaughtException handler exists. So every listener attached here runs
// its body inside try/catch and hands anything thrown to `onError`, and an 'error' listener is always
// attached before the socket can emit.
import { RawNetlinkSocket } from 'netlink';
import { NETLINK_NETFILTER } from './ctnetlink.js';

export interface SocketHandlers {
  /** One received datagram. May throw: the exception goes to `onError`, never to the native layer. */
  onMessage(buf: Buffer): void;
  /** A datagram larger than the receive buffer (its tail is lost). */
  onTruncated(buf: Buffer): void;
  /** Socket errors (ENOBUFS, ...) and anything thrown by the handlers. Must not throw itself. */
  onError(err: Error & { code?: string; errno?: number }): void;
}

export interface SocketOptions {
  /** Fixed receive size per datagram; 0 = peek each datagram's size first (two syscalls each). */
  msgBufferSize: number;
  /** SO_RCVBUF to ask for (the kernel caps it at net.core.rmem_max). */
  recvBufferSize: number;
}

export function openNetfilterSocket(opts: SocketOptions, h: SocketHandlers): RawNetlinkSocket {
  const sock = new RawNetlinkSocket(NETLINK_NETFILTER, {
    messagePeeking: opts.msgBufferSize === 0,
    msgBufferSize: opts.msgBufferSize || 4096,
    recvBufferSize: opts.recvBufferSize,
    sendBufferSize: 256 * 1024,
  });
  const safeError = (err: unknown) => {
    try {
      h.onError(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // Nothing may escape into the native callback.
    }
  };
  sock.on('error', safeError);
  sock.on('message', (buf: Buffer) => {
    try {
      h.onMessage(buf);
    } catch (err) {
      safeError(err);
    }
  });
  sock.on('truncatedMessage', (buf: Buffer) => {
    try {
      h.onTruncated(buf);
    } catch (err) {
      safeError(err);
    }
  });
  return sock;
}
