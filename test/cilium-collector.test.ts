// `podflow collector --source cilium` as a real process against real pinned BPF maps: counters that
// grow in the maps come out of the pull API as flow records with exact byte counts.
import { mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXPORTER_HEADER, type Flow, PULL_PATH, type PullResponse } from '../shared/flow.js';
import {
  type BpfMount,
  CT_IN,
  CT_OUT,
  type CtKeySpec,
  createMap,
  ctKey,
  ctValue15,
  monoSeconds,
  mountBpffs,
  putEntries,
} from './helpers/bpf.js';
import { requireRoot } from './helpers/netns.js';
import { type Podflow, startPodflow } from './helpers/podflow.js';
import { freePort } from './helpers/ports.js';
import { waitFor } from './helpers/wait.js';

const root = requireRoot();

/** This host's first non-loopback IPv4 address: a local endpoint of a collector without Kubernetes. */
function hostIpv4(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('this host has no non-loopback IPv4 address to act as the local endpoint');
}

describe.skipIf(!root)('podflow collector --source cilium', () => {
  let mnt: BpfMount;
  let child: Podflow | undefined;
  let home: string;

  beforeAll(async () => {
    mnt = await mountBpffs();
    home = mkdtempSync(join(tmpdir(), 'pf-home-')); // no ~/.kube/config: the host is the endpoint
  });
  afterAll(async () => {
    await child?.stop('SIGKILL');
    await mnt?.cleanup();
    rmSync(home, { recursive: true, force: true });
  });

  it('serves the growth of Cilium counters as flows', async () => {
    const dir = mnt.dir;
    for (const [name, ks] of [
      ['cilium_ct4_global', 14],
      ['cilium_ct_any4_global', 14],
    ] as const) {
      await createMap(join(dir, name), { keySize: ks, valueSize: 56, maxEntries: 1024 });
    }
    const me = hostIpv4();
    const out: CtKeySpec = {
      src: me,
      sport: 40000,
      dst: '198.51.100.7',
      dport: 443,
      proto: 6,
      flags: CT_OUT,
    };
    const inn: CtKeySpec = {
      src: '198.51.100.8',
      sport: 50000,
      dst: me,
      dport: 8080,
      proto: 17,
      flags: CT_IN,
    };
    const write = async (grow: number) => {
      const lifetime = monoSeconds() + 3600;
      await putEntries(
        join(dir, 'cilium_ct4_global'),
        14,
        56,
        Buffer.concat([
          ctKey(out),
          ctValue15({
            txBytes: 1000 + grow * 100,
            txPackets: 10 + grow,
            rxBytes: 5000 + grow * 10,
            rxPackets: 8,
            lifetime,
          }),
        ]),
      );
      await putEntries(
        join(dir, 'cilium_ct_any4_global'),
        14,
        56,
        Buffer.concat([
          ctKey(inn),
          ctValue15({ rxBytes: 300 + grow * 30, rxPackets: 3 + grow, txBytes: 600, txPackets: 6, lifetime }),
        ]),
      );
    };
    await write(0);

    const port = await freePort();
    child = startPodflow(
      [
        'collector',
        '--source',
        'cilium',
        '--cilium-bpf-path',
        dir,
        '--listen',
        `127.0.0.1:${port}`,
        '--interval',
        '300ms',
        // Nobody acknowledges in this test: do not wait for an exporter at SIGTERM.
        '--shutdown-timeout',
        '0s',
      ],
      { env: { HOME: home } },
    );
    const { base } = child;
    await child.ready('/readyz');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^podflow_collector_conntrack_entries 2$/m);

    // The first tick was the baseline (history before start is not counted): grow the counters.
    await write(2);
    const flows = await waitFor('flows', async () => {
      const body = unpack(
        Buffer.from(
          await (
            await fetch(`${base}${PULL_PATH}`, { headers: { [EXPORTER_HEADER]: 'test-exporter' } })
          ).arrayBuffer(),
        ),
      ) as PullResponse;
      expect(body.source).toBe('cilium');
      const all: Flow[] = body.batches.flatMap((b) => b.flows);
      return all.length >= 2 ? all : undefined;
    });
    const sorted = [...flows].sort((a, b) => a.proto - b.proto);
    expect(sorted).toEqual([
      { src: me, dst: '198.51.100.7', proto: 6, txBytes: 200, rxBytes: 20, txPackets: 2, rxPackets: 0 },
      { src: me, dst: '198.51.100.8', proto: 17, txBytes: 0, rxBytes: 60, txPackets: 0, rxPackets: 2 },
    ]);
    expect(child.log).toContain('"layout":"v1.15"');
    const { code } = await child.stop('SIGTERM');
    expect(code).toBe(0);
  });

  it('--source auto without Cilium maps reads netfilter and says why', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'pf-nocilium-'));
    const port = await freePort();
    const auto = startPodflow(
      [
        'collector',
        '--cilium-bpf-path',
        empty,
        '--conntrack-acct',
        'false', // read only: leave the host's sysctl alone
        '--listen',
        `127.0.0.1:${port}`,
      ],
      { env: { HOME: home } },
    );
    try {
      await auto.ready('/readyz');
      const line = auto.log.split('\n').find((l) => l.includes('--source auto'));
      expect(JSON.parse(line!)).toMatchObject({
        source: 'netfilter',
        reason: expect.stringContaining(`no Cilium conntrack map under ${empty}`),
        msg: '--source auto: not using Cilium maps: reading netfilter conntrack',
      });
      expect(auto.log).toContain('"source":"netfilter","interval"');
    } finally {
      await auto.stop('SIGTERM');
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
