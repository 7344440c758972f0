// Conntrack's own accounting of a test namespace, read with the conntrack tool: what podflow's
// figures are checked against.
import type { Netns } from './netns.js';

/** One `conntrack -L` entry: both tuples' addresses and what each direction carried. */
export interface CtEntry {
  origSrc: string;
  origDst: string;
  replySrc: string;
  replyDst: string;
  origBytes: number;
  origPackets: number;
  replyBytes: number;
  replyPackets: number;
  /** The line as printed, for failure messages. */
  line: string;
}

/** Every entry of a namespace's conntrack table (both families), from the conntrack tool. */
export async function conntrackEntries(ns: Netns): Promise<CtEntry[]> {
  const { stdout } = await ns.exec('conntrack', ['-L', '-o', 'extended']);
  const re =
    /src=(\S+) dst=(\S+) .*?packets=(\d+) bytes=(\d+) src=(\S+) dst=(\S+) .*?packets=(\d+) bytes=(\d+)/;
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const m = re.exec(line);
      if (!m) throw new Error(`conntrack line without counters: ${line}`);
      const [, origSrc, origDst, origPackets, origBytes, replySrc, replyDst, replyPackets, replyBytes] = m;
      return {
        origSrc: origSrc!,
        origDst: origDst!,
        origBytes: Number(origBytes),
        origPackets: Number(origPackets),
        replySrc: replySrc!,
        replyDst: replyDst!,
        replyBytes: Number(replyBytes),
        replyPackets: Number(replyPackets),
        line,
      };
    });
}

/**
 * Bytes `local` sent to `peer`, as a namespace's conntrack counted them. The peer is the reply
 * tuple's source (the real peer also behind NAT); `local` opened the connection or answered it.
 */
export async function sentBy(ns: Netns, local: string, peer: string): Promise<number> {
  let n = 0;
  for (const e of await conntrackEntries(ns)) {
    if (e.origSrc === local && e.replySrc === peer) n += e.origBytes;
    if (e.replySrc === local && e.origSrc === peer) n += e.replyBytes;
  }
  return n;
}
