import { describe, expect, it } from 'vitest';
import type { EnrichedFlow } from '../shared/flow.js';
import type { TrafficResponse } from '../shared/traffic.js';
import { ManualClock } from '../test/fixtures/clock.js';
import { fromApi, toDb } from '../test/fixtures/flows.js';
import { classOf, type TrafficQuery, TrafficRing } from './traffic-ring.js';

const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 60_000);

/** shop/api-1 to data/db-0 across zones, without the class and cost the enrich stage adds. */
function flow(over: Partial<EnrichedFlow> & Record<string, unknown>): EnrichedFlow {
  return {
    ts: T0,
    intervalSeconds: 15,
    ...fromApi,
    ...toDb,
    proto: 'TCP',
    txBytes: 1000,
    rxBytes: 3000,
    txPackets: 1,
    rxPackets: 1,
    ...over,
  } as EnrichedFlow;
}

/** A pod of shop/api on n1 talking to the internet name api.stripe.com. */
const toStripe = (over: Partial<EnrichedFlow> = {}) =>
  flow({
    dstIp: '203.0.113.7',
    dstPod: '',
    dstNamespace: '',
    dstWorkload: '',
    dstNode: '',
    dstZone: '',
    dstDnsName: 'api.stripe.com',
    dstType: 'public',
    crossZone: false,
    ...over,
  });

function ring(opts: { interval?: number; maxPairs?: number; cluster?: string } = {}) {
  const clock = new ManualClock(T0 + 1000);
  const r = new TrafficRing(
    { exportInterval: opts.interval ?? 15_000, maxPairsPerBucket: opts.maxPairs, clusterName: opts.cluster },
    clock,
  );
  return {
    r,
    at: (t: number) => {
      clock.t = t;
    },
    q: (over: Partial<TrafficQuery> = {}): TrafficResponse =>
      r.query({ window: 5 * 60_000, group: 'workload', limit: 100, ...over }),
  };
}

const edge = (res: TrafficResponse) =>
  res.rows.map((r) => `${r.a.label} ${r.aToB}>< ${r.bToA} ${r.b.label} ${r.class}`);

describe('TrafficRing', () => {
  it('counts each byte once, by its sender: both reports of a pod pair make one row', async () => {
    const { r, q } = ring();
    await r.push([
      // api → db as api's node reports it, and db → api as db's node reports it.
      flow({ txBytes: 1000, rxBytes: 3000 }),
      flow({
        srcIp: '10.0.1.1',
        srcPod: 'db-0',
        srcNamespace: 'data',
        srcWorkload: 'StatefulSet/db',
        srcNode: 'n2',
        srcZone: 'b',
        dstIp: '10.0.0.1',
        dstPod: 'api-1',
        dstNamespace: 'shop',
        dstWorkload: 'Deployment/api',
        dstNode: 'n1',
        dstZone: 'a',
        txBytes: 3000,
        rxBytes: 1000,
      }),
      // A peer outside the cluster reports nothing itself: what the pod received is counted too.
      toStripe({ txBytes: 500, rxBytes: 7000 }),
    ]);
    const res = q();
    expect(edge(res)).toEqual([
      'Deployment/api 500>< 7000 api.stripe.com internet',
      'Deployment/api 1000>< 3000 StatefulSet/db cross-zone',
    ]);
    expect(res.total.bytes).toBe(11_500);
    expect(res.totals.map((t) => [t.class, t.bytes])).toEqual([
      ['cross-zone', 4000],
      ['internet', 7500],
    ]);
    expect(res.rows[0].b).toMatchObject({ kind: 'external', ip: '203.0.113.7', id: 'name:api.stripe.com' });
  });

  it('groups by namespace, workload or pod', async () => {
    const { r, q } = ring();
    await r.push([
      flow({ srcPod: 'api-1', txBytes: 100 }),
      flow({ srcPod: 'api-2', srcIp: '10.0.0.2', txBytes: 200 }),
      flow({ srcPod: 'web-1', srcWorkload: 'Deployment/web', srcIp: '10.0.0.3', txBytes: 400 }),
      // Unnamed internet peers: one node per address, or one "internet" node by namespace.
      toStripe({ dstDnsName: '', dstIp: '198.51.100.1', txBytes: 10, rxBytes: 0 }),
      toStripe({ dstDnsName: '', dstIp: '198.51.100.2', txBytes: 20, rxBytes: 0 }),
    ]);
    const labels = (res: TrafficResponse) => res.rows.map((x) => `${x.a.label}>${x.b.label}=${x.bytes}`);
    expect(labels(q({ group: 'pod' }))).toEqual([
      'web-1>db-0=400',
      'api-2>db-0=200',
      'api-1>db-0=100',
      'api-1>198.51.100.2=20',
      'api-1>198.51.100.1=10',
    ]);
    expect(labels(q({ group: 'workload' }))).toEqual([
      'Deployment/web>StatefulSet/db=400',
      'Deployment/api>StatefulSet/db=300',
      'Deployment/api>198.51.100.2=20',
      'Deployment/api>198.51.100.1=10',
    ]);
    expect(labels(q({ group: 'namespace' }))).toEqual(['shop>data=700', 'shop>internet=30']);
    expect(q({ group: 'namespace' }).rows[0].a).toEqual({
      id: 'ns:shop',
      label: 'shop',
      kind: 'namespace',
      namespace: 'shop',
    });
  });

  it('windows: rates divide by the time covered, old rounds leave the window, older ones the ring', async () => {
    const { r, q, at } = ring();
    // Started at T0 + 1s; a round 30 s later: the 5 minute window covers 30 s so far.
    at(T0 + 31_000);
    await r.push([flow({ ts: T0 + 30_000, txBytes: 3000, rxBytes: 0 })]);
    let res = q();
    expect(res.seconds).toBe(30);
    expect(res.rows[0].rate).toBe(100);
    expect(res.total.rate).toBe(100);
    // A collector's backlog from before the start (a restart) widens what rates divide by.
    const backlog = ring();
    backlog.at(T0 + 31_000);
    await backlog.r.push([flow({ ts: T0 + 5000, intervalSeconds: 60, txBytes: 8600, rxBytes: 0 })]);
    expect(backlog.q().seconds).toBe(86);
    expect(backlog.q().total.rate).toBe(100);
    // Ten minutes on: out of the 5 minute window, still in the 15 minute one, whose rate spans
    // the 10 minutes since start.
    at(T0 + 601_000);
    await r.push([flow({ ts: T0 + 600_000, txBytes: 6000, rxBytes: 0 })]);
    res = q();
    expect(res.total.bytes).toBe(6000);
    // The window is whole buckets: the last 20 of 15 s, the current one up to now.
    expect(res.seconds).toBe(286);
    res = q({ window: 15 * 60_000 });
    expect(res.total.bytes).toBe(9000);
    expect(res.seconds).toBe(600);
    // A round older than the ring (a collector's backlog arriving late) is counted as late.
    await r.push([flow({ ts: T0 - 600_000, txBytes: 1, rxBytes: 0 })]);
    expect(q().late).toBe(1);
    // A collector clock ahead of ours lands in the current bucket.
    await r.push([flow({ ts: T0 + 3_600_000, txBytes: 50, rxBytes: 0 })]);
    expect(q({ window: 15_000 }).total.bytes).toBe(6050);
    // After 15 more minutes everything has left the ring, and the endpoints with it.
    at(T0 + 1_600_000);
    await r.push([toStripe({ ts: T0 + 1_600_000, txBytes: 1, rxBytes: 0 })]);
    expect(q({ window: 15 * 60_000 }).total.bytes).toBe(1);
    expect(r.size()).toEqual({ pairs: 1, endpoints: 2, buckets: 1 });
  });

  it('filters by namespace (either end), class and text, and lists every namespace', async () => {
    const { r, q } = ring();
    await r.push([
      flow({ txBytes: 100 }),
      toStripe({ txBytes: 10, rxBytes: 0 }),
      flow({
        srcNamespace: 'web',
        srcPod: 'front-1',
        srcWorkload: 'Deployment/front',
        srcIp: '10.0.0.9',
        dstNamespace: 'shop',
        dstPod: 'api-1',
        dstWorkload: 'Deployment/api',
        dstZone: 'a',
        srcZone: 'a',
        crossZone: false,
        txBytes: 1,
      }),
    ]);
    const labels = (res: TrafficResponse) => res.rows.map((x) => `${x.a.label}>${x.b.label}`);
    expect(labels(q({ namespace: 'data' }))).toEqual(['Deployment/api>StatefulSet/db']);
    expect(labels(q({ namespace: 'web' }))).toEqual(['Deployment/front>Deployment/api']);
    expect(q({ namespace: 'web' }).matched).toBe(1);
    expect(labels(q({ class: 'internet' }))).toEqual(['Deployment/api>api.stripe.com']);
    expect(labels(q({ class: 'same-zone' }))).toEqual(['Deployment/front>Deployment/api']);
    expect(labels(q({ text: 'STRIPE' }))).toEqual(['Deployment/api>api.stripe.com']);
    expect(labels(q({ text: '203.0.113' }))).toEqual(['Deployment/api>api.stripe.com']);
    expect(labels(q({ text: 'front', class: 'cross-zone' }))).toEqual([]);
    // Totals follow the filters; the namespace choices do not.
    const res = q({ class: 'internet' });
    expect(res.total.bytes).toBe(10);
    expect(res.namespaces).toEqual(['data', 'shop', 'web']);
    // limit: the largest rows, and how many matched.
    const top = q({ limit: 1 });
    expect(top.matched).toBe(3);
    expect(labels(top)).toEqual(['Deployment/api>StatefulSet/db']);
  });

  it('takes the class and cost the flows carry, else derives the class and reports no cost', async () => {
    expect(classOf(flow({}))).toBe('cross-zone');
    expect(classOf(flow({ crossZone: false, dstZone: 'a' }))).toBe('same-zone');
    expect(classOf(flow({ crossZone: false, dstZone: '', dstNode: 'n1' }))).toBe('same-zone');
    expect(classOf(flow({ crossZone: false, dstZone: '' }))).toBe('unknown');
    expect(classOf(toStripe())).toBe('internet');
    expect(classOf(toStripe({ dstType: 'private' }))).toBe('private');
    expect(classOf(flow({ trafficClass: 'cross-region' }))).toBe('cross-region');
    expect(classOf(flow({ trafficClass: 'not-a-class' as never }))).toBe('cross-zone');

    const { r, q } = ring({ cluster: 'prod' });
    await r.push([flow({})]);
    expect(q().rows[0].cost).toBeNull();
    expect(q().total.cost).toBeNull();
    await r.push([
      flow({ trafficClass: 'cross-region', cost: 0.25 }),
      flow({ trafficClass: 'cross-region', cost: 0.5 }),
    ]);
    const res = q();
    expect(res.cluster).toBe('prod');
    expect(res.rows.map((x) => [x.class, x.cost])).toEqual([
      ['cross-region', 0.75],
      ['cross-zone', 0],
    ]);
    expect(res.totals.map((t) => [t.class, t.cost])).toEqual([
      ['cross-zone', 0],
      ['cross-region', 0.75],
    ]);
    expect(res.total.cost).toBe(0.75);
  });

  it('keeps at most maxPairsPerBucket pairs a bucket, the rest summed under "other"', async () => {
    const { r, q } = ring({ maxPairs: 100 });
    const flows = Array.from({ length: 1000 }, (_, i) =>
      toStripe({ dstDnsName: '', dstIp: `198.51.${i >> 8}.${i & 255}`, txBytes: 1, rxBytes: 1 }),
    );
    await r.push(flows);
    await r.push(flows);
    expect(r.size()).toMatchObject({ pairs: 101, endpoints: 101 });
    const res = q({ group: 'pod', limit: 1 });
    expect(res.total.bytes).toBe(4000);
    expect(res.rows[0]).toMatchObject({ b: { id: 'other', label: 'other peers' }, bytes: 3600 });
  });

  it('stays bounded over time: at most 90 buckets, endpoints of past rounds forgotten', async () => {
    // 1 s rounds for 20 minutes, a new set of pods every round.
    const { r, q, at } = ring({ interval: 1000 });
    for (let s = 0; s < 1200; s++) {
      at(T0 + s * 1000);
      await r.push([
        flow({ ts: T0 + s * 1000, srcPod: `api-${s}`, dstPod: `db-${s}`, txBytes: 10, rxBytes: 0 }),
      ]);
    }
    const size = r.size();
    expect(size.buckets).toBe(90);
    // Each bucket is 10 s wide (15 min / 90): its 10 rounds' pods, two endpoints a round.
    expect(size.pairs).toBe(size.buckets * 10);
    expect(size.endpoints).toBe(size.buckets * 20);
    expect(q({ window: 15 * 60_000 }).total.bytes).toBe(size.pairs * 10);
  });
});
