// The log lines of the real executable (bin/podflow.js, built to dist/): JSON with level names when
// stderr is a pipe, readable lines on a terminal; an unreachable collector logged once without a
// stack, its repeats at debug, one line when it answers again; one debug line per export round.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './helpers/ports.js';
import { startTestCollector } from './helpers/test-collector.js';
import { waitFor } from './helpers/wait.js';

const execFileP = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/podflow.js');
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

beforeAll(async () => {
  await execFileP('npm', ['run', 'build', '--silent'], { cwd: ROOT });
}, 120_000);

function run(cmd: string, args: string[]) {
  const child: ChildProcess = spawn(cmd, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: '/nonexistent', NO_COLOR: '1', TERM: 'dumb' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = once(child, 'exit');
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, out: () => out };
}

interface Line {
  level: string;
  msg: string;
  err?: { type: string; message: string; stack?: string; code?: string };
  [k: string]: unknown;
}
const parse = (text: string): Line[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));

/** Forwards TCP on `port` to `to` (a collector coming up at the address the exporter pulls). */
async function forward(port: number, to: number): Promise<Server> {
  const open = new Set<Socket>();
  const srv = createServer((s) => {
    const up = connect(to, '127.0.0.1');
    for (const x of [s, up]) {
      open.add(x);
      x.on('close', () => open.delete(x));
    }
    s.pipe(up).pipe(s);
    s.on('error', () => up.destroy());
    up.on('error', () => s.destroy());
  });
  await new Promise<void>((resolve) => srv.listen(port, '127.0.0.1', resolve));
  cleanup.push(
    () =>
      new Promise((resolve) => {
        srv.close(() => resolve());
        // The exporter keeps its connection alive: end it, or close() waits for it.
        for (const x of open) x.destroy();
      }),
  );
  return srv;
}

describe('logs of the real executable', () => {
  it('writes JSON with level names to a pipe; an unreachable collector once, no stack; its return once', async () => {
    const [listen, dead] = await Promise.all([freePort(), freePort()]);
    const collectorUrl = `http://127.0.0.1:${dead}`;
    const p = run(process.execPath, [
      BIN,
      'exporter',
      '--listen',
      `127.0.0.1:${listen}`,
      '--collectors',
      collectorUrl,
      '--export-interval',
      '1s',
      '--log-level',
      'debug',
    ]);
    const pullLines = () => parse(p.out()).filter((l) => l.msg.startsWith('pull failed'));
    await waitFor('four failed pulls', async () => (pullLines().length >= 4 ? true : undefined));

    const lines = parse(p.out());
    for (const l of lines) expect(['debug', 'info', 'warn', 'error']).toContain(l.level);
    const pulls = pullLines();
    // The first failure warns; the same cause again is debug.
    expect(pulls.map((l) => l.level)).toEqual(['warn', ...pulls.slice(1).map(() => 'debug')]);
    const err = pulls[0].err!;
    expect(err.stack).toBeUndefined();
    expect(err).toMatchObject({ type: 'PullError', code: 'ECONNREFUSED' });
    // The cause's message appears once, not appended again to a message that quotes it.
    expect(err.message.split(`connect ECONNREFUSED 127.0.0.1:${dead}`).length - 1).toBe(1);
    expect(p.out()).not.toContain('    at ');
    // One debug line per round with what it did.
    const rounds = lines.filter((l) => l.msg === 'export round');
    expect(rounds.length).toBeGreaterThanOrEqual(3);
    expect(rounds[0]).toMatchObject({ level: 'debug', collectors: 1, pulled: 0, flows: 0, acked: 0 });
    expect(typeof rounds[0].ms).toBe('number');

    // The collector comes up at that address: one info line, and rounds pull it.
    const c = await startTestCollector('node-a');
    cleanup.push(() => c.close());
    await forward(dead, Number(new URL(c.url).port));
    const back = await waitFor('the recovery line', async () =>
      parse(p.out()).find((l) => l.msg === 'pull works again'),
    );
    expect(back).toMatchObject({ level: 'info', collector: collectorUrl });
    await waitFor('a round that pulled', async () =>
      parse(p.out()).find((l) => l.msg === 'export round' && l.pulled === 1),
    );
    expect(parse(p.out()).filter((l) => l.level === 'warn' && l.msg.startsWith('pull failed'))).toHaveLength(
      1,
    );
  }, 60_000);

  it('writes one readable line per record on a terminal', async () => {
    const listen = await freePort();
    // script(1) gives the process a pseudo-terminal as stdin, stdout and stderr.
    const p = run('script', [
      '-qfec',
      `${process.execPath} ${BIN} exporter --listen 127.0.0.1:${listen} --collectors http://127.0.0.1:1 --export-interval 1s`,
      '/dev/null',
    ]);
    const text = await waitFor('the first pull failure', async () =>
      /pull failed/.test(p.out()) ? p.out() : undefined,
    );
    const lines = text.split(/\r?\n/).filter((l) => l !== '');
    expect(lines.some((l) => l.startsWith('{'))).toBe(false);
    expect(lines).toContainEqual(
      expect.stringMatching(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}http: listening address=127\.0\.0\.1 port=\d+$/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^\d\d:\d\d:\d\d\.\d{3} WARN {2}pipeline: pull failed.* collector=http:\/\/127\.0\.0\.1:1 reason=network err="pull: ECONNREFUSED/,
      ),
    );
  }, 30_000);
});
