// nf_conntrack_acct: the kernel only keeps byte/packet counters for connections created while it is
// on (per network namespace, default off). Turning it on affects new connections only.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../shared/log.js';

export const acctPath = (procPath: string) => join(procPath, 'sys/net/netfilter/nf_conntrack_acct');

export type AcctState = 'on' | 'turned-on' | 'off';

/**
 * Makes sure accounting is on (when `enable`), returning what was found. Never throws: failing to
 * turn it on is worth a clear warning, not a refusal to start (entries may still carry counters).
 */
export async function ensureConntrackAcct(
  procPath: string,
  enable: boolean,
  log?: Logger,
): Promise<AcctState> {
  const path = acctPath(procPath);
  let current: string | undefined;
  try {
    current = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    log?.warn(
      { err, path },
      `cannot read ${path}: is --proc-path the host's /proc and the nf_conntrack module loaded?`,
    );
  }
  if (current === '1') return 'on';
  if (!enable) {
    log?.warn(
      { path },
      'nf_conntrack_acct is off and --conntrack-acct=false: connections will carry no byte counters',
    );
    return 'off';
  }
  try {
    await writeFile(path, '1');
    log?.info({ path }, 'turned on nf_conntrack_acct (byte counters for connections created from now on)');
    return 'turned-on';
  } catch (err) {
    log?.warn(
      { err, path },
      `cannot turn on nf_conntrack_acct through ${path}: run "sysctl -w net.netfilter.nf_conntrack_acct=1" on the node (needs a writable host /proc)`,
    );
    return 'off';
  }
}
