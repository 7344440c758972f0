// A collector HTTP server in a process of its own, for tests that measure its memory: the real
// pull API (collector/server.ts) over a backlog of `flows` flows in 10 batches, with the token file
// given. Prints one JSON line {port} on stdout once it listens; runs until killed.
//   node --import tsx test/helpers/flood-collector.ts <token-file> <flows>
import { FlowColumns } from '../../collector/flow-columns.js';
import { silentLogger } from '../../shared/log.js';
import { TokenFile } from '../../shared/token.js';
import { startTestCollector } from './test-collector.js';

const [tokenPath, count] = process.argv.slice(2);
const flows = Number(count);
const c = await startTestCollector('flood-node', {
  backlogMaxFlows: Math.max(flows, 1000),
  tokens: new TokenFile(tokenPath!, { log: silentLogger }),
});
const per = Math.ceil(flows / 10);
for (let b = 0; b < 10; b++) {
  // Columns, as the reducer hands a tick's flows to the backlog.
  const first = b * per;
  const batch = new FlowColumns(Math.max(0, Math.min(flows, first + per) - first));
  for (let k = 0; k < batch.length; k++) {
    const i = first + k;
    batch.set(
      k,
      `10.1.${(i >> 8) & 255}.${i & 255}`,
      `203.0.${(i >> 16) & 255}.${(i >> 8) & 255}`,
      i % 3 === 0 ? 17 : 6,
      1000 + i,
      3,
      2000 + i,
      4,
    );
  }
  c.backlog.append(b * 5000, (b + 1) * 5000, batch);
}
process.stdout.write(`${JSON.stringify({ port: Number(new URL(c.url).port) })}\n`);
