// Streaming dump of the conntrack table over one netlink socket. Each batch of datagrams is parsed
// in place in the socket's receive buffer as it arrives and every entry handed to the visitor at once:
// the dump is never collected (a 250k-entry table is ~60 MB of datagrams), and nothing is allocated
// per datagram, so memory stays flat whatever the table size.
import { i32le, u16le, u32le } from '../../shared/bytes.js';
import type { ConnSample } from '../source.js';
import {
  AF_UNSPEC,
  align4,
  buildDumpRequest,
  buildMessage,
  IPCTNL_MSG_CT_GET_STATS,
  IPCTNL_MSG_CT_NEW,
  messageAt,
  NLM_F_ACK,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSG_OVERRUN,
} from './ctnetlink.js';
import { CtSample, parseCtMessage } from './parser.js';
import { type NetfilterSocket, NetlinkError, openNetfilterSocket } from './socket.js';

export { NetlinkError };

export interface DumpResult {
  entries: number;
  parseErrors: number;
  /** Entries without counters (nf_conntrack_acct was off when they were created). */
  noCounters: number;
  /** The table changed during the dump (NLM_F_DUMP_INTR) or a datagram was cut: entries may be missing. */
  interrupted: boolean;
}

export const EPERM = 1;

interface Pending {
  seq: number;
  /** Visits entries (undefined for requests that are not dumps). */
  visit: ((s: ConnSample) => void) | undefined;
  result: DumpResult;
  resolve(r: DumpResult): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  /** The kernel's dump ends with DONE; a plain request ends with an ACK/ERROR. */
  isDump: boolean;
}

export interface DumperOptions {
  /** Largest datagram expected: the kernel sizes dump datagrams to the space offered, up to 32 KiB. @default 32768 */
  msgBufferSize?: number;
  /** Time allowed for one dump. @default 60000 */
  timeoutMs?: number;
}

export class ConntrackDumper {
  private sock: NetfilterSocket | undefined;
  private pending: Pending | undefined;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly sample = new CtSample();
  private readonly msgBufferSize: number;
  private readonly timeoutMs: number;

  constructor(opts: DumperOptions = {}) {
    this.msgBufferSize = opts.msgBufferSize ?? 32768;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** Dumps the table (both families by default), visiting each entry as its datagram arrives. */
  dump(visit: (s: ConnSample) => void, family = AF_UNSPEC): Promise<DumpResult> {
    return this.request(buildDumpRequest(this.nextSeq(), family), visit, true);
  }

  /**
   * Asks for the table's global statistics: cheap, and needs the same permission as a dump (every
   * ctnetlink request needs CAP_NET_ADMIN), so it is the start-up permission check.
   */
  probe(): Promise<DumpResult> {
    return this.request(
      buildMessage(IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST | NLM_F_ACK, this.nextSeq(), AF_UNSPEC),
      undefined,
      false,
    );
  }

  close(): void {
    if (this.pending) this.finish(this.pending, new Error('conntrack socket closed'));
    this.closeSocket();
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  private request(msg: Buffer, visit: ((s: ConnSample) => void) | undefined, isDump: boolean) {
    if (this.pending) return Promise.reject(new Error('a conntrack dump is already running'));
    let sock: NetfilterSocket;
    try {
      sock = this.socket();
    } catch (err) {
      return Promise.reject(err);
    }
    const seq = u32le(msg, 8);
    return new Promise<DumpResult>((resolve, reject) => {
      const p: Pending = {
        seq,
        visit,
        isDump,
        result: { entries: 0, parseErrors: 0, noCounters: 0, interrupted: false },
        resolve,
        reject,
        timer: setTimeout(() => {
          // No DONE in time: the socket's state is unknown, start over with a fresh one.
          this.finish(p, new Error(`conntrack dump: no answer within ${this.timeoutMs} ms`));
        }, this.timeoutMs),
      };
      p.timer.unref();
      this.pending = p;
      // Referenced while a request is in flight: a process that exits with a send pending in the
      // native layer aborts.
      sock.ref();
      const err = sock.send(msg);
      if (err) this.finish(p, new Error('sending the conntrack dump request failed', { cause: err }));
    });
  }

  private socket(): NetfilterSocket {
    if (!this.sock) {
      this.sock = openNetfilterSocket(
        { msgBufferSize: this.msgBufferSize, recvBufferSize: 1024 * 1024 },
        {
          onMessage: (buf) => this.onDatagram(buf),
          onTruncated: () => {
            // Cannot happen with a slot of 32 KiB (the kernel's largest dump datagram); counted anyway.
            // Part of a datagram is lost: entries may be missing from this read.
            const p = this.pending;
            if (p) {
              p.result.parseErrors++;
              p.result.interrupted = true;
            }
          },
          onError: (err) => {
            const p = this.pending;
            if (p) this.finish(p, new Error('conntrack socket error', { cause: err }));
          },
        },
      );
      this.sock.unref();
    }
    return this.sock;
  }

  private closeSocket(): void {
    const s = this.sock;
    this.sock = undefined;
    try {
      s?.close();
    } catch {}
  }

  /**
   * Settles the pending request once. A failure also drops the socket: the kernel would refuse a
   * new dump on it until the old one is read out, so the next request simply starts on a fresh one.
   */
  private finish(p: Pending, err?: Error): void {
    if (this.pending !== p) return;
    this.pending = undefined;
    clearTimeout(p.timer);
    this.sock?.unref();
    if (err) {
      this.closeSocket();
      p.reject(err);
    } else {
      p.resolve(p.result);
    }
  }

  /** Datagrams back to back (see SocketHandlers.onMessage): framed by their messages' lengths. */
  private onDatagram(b: Buffer): void {
    const p = this.pending;
    if (!p) return; // stale datagrams of an abandoned request
    const r = p.result;
    const s = this.sample;
    for (let off = 0, len = messageAt(b, 0); len !== 0; off += align4(len), len = messageAt(b, off)) {
      if (len < 0) {
        // The rest of this batch cannot be framed: its entries are missing from this read.
        r.parseErrors++;
        r.interrupted = true;
        return;
      }
      const type = u16le(b, off + 4);
      const flags = u16le(b, off + 6);
      if (u32le(b, off + 8) === p.seq) {
        if (flags & NLM_F_DUMP_INTR) r.interrupted = true;
        if (type === IPCTNL_MSG_CT_NEW) {
          if (parseCtMessage(b, off, off + len, s)) {
            r.entries++;
            if (!s.hasCounters) r.noCounters++;
            if (p.visit !== undefined) {
              try {
                p.visit(s);
              } catch (err) {
                this.finish(p, new Error('conntrack entry visitor failed', { cause: err }));
                return;
              }
            }
          } else {
            r.parseErrors++;
          }
        } else if (type === NLMSG_DONE) {
          // DONE carries the dump's final status (an int, negative errno on failure).
          const status = len >= NLMSG_HDRLEN + 4 ? i32le(b, off + NLMSG_HDRLEN) : 0;
          if (status < 0)
            this.finish(p, new NetlinkError(`conntrack dump failed: errno ${-status}`, -status));
          else this.finish(p);
          return;
        } else if (type === NLMSG_ERROR) {
          const errno = len >= NLMSG_HDRLEN + 4 ? -i32le(b, off + NLMSG_HDRLEN) : 0;
          if (errno !== 0)
            this.finish(p, new NetlinkError(`conntrack request failed: errno ${errno}`, errno));
          else if (!p.isDump) this.finish(p);
          return;
        } else if (type === NLMSG_OVERRUN) {
          r.interrupted = true;
        } else if (!p.isDump && type !== NLMSG_DONE) {
          // GET_STATS answers with one message (then the ACK).
          r.entries++;
        }
      }
    }
  }
}
