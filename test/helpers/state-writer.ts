// Child process of collector/state.test.ts: writes two different collector states into the state
// directory given as argument, in turn, as fast as it can, printing a line after each write, until
// it is killed. The test kills it at random moments and checks that the file always decodes.
import { Backlog } from '../../collector/backlog.js';
import { encodeBatch, encodeState, encodeTracker, StateStore } from '../../collector/state.js';
import { Tracker } from '../../collector/tracker.js';

function stateOf(connections: number, savedAt: number): Buffer {
  const t = new Tracker(() => undefined);
  t.begin();
  for (let i = 0; i < connections; i++) {
    t.visit({
      family: 4,
      proto: 6,
      zone: 0,
      id: i,
      origSrc: `10.0.${(i >> 8) & 255}.${i & 255}`,
      origDst: '10.1.0.1',
      origSport: i & 65535,
      origDport: 443,
      replySrc: '10.1.0.1',
      origBytes: i * 3,
      origPackets: i,
      replyBytes: i * 5,
      replyPackets: i,
      hasCounters: true,
      key: (i * 2654435761) >>> 0,
      key2: i,
    });
  }
  t.end(true);
  const b = new Backlog({ backlogMaxFlows: 1_000_000 }, { bootId: `boot-${savedAt}` });
  b.append(0, 1, [
    { src: '10.0.0.1', dst: '10.1.0.1', proto: 6, txBytes: savedAt, rxBytes: 0, txPackets: 1, rxPackets: 0 },
  ]);
  const snap = b.snapshot();
  return encodeState(
    { node: 'node-a', source: 'netfilter', savedAt },
    snap,
    encodeTracker(t.snapshot()),
    snap.batches.map(encodeBatch),
  );
}

const store = new StateStore(process.argv[2]!);
await store.open();
const states = [stateOf(20_000, 1), stateOf(30_000, 2)];
for (let i = 0; ; i++) {
  await store.write(states[i % 2]!);
  process.stdout.write(`${i}\n`);
}
