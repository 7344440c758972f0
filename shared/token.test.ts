import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../test/fixtures/clock.js';
import { StartupError } from './errors.js';
import { silentLogger } from './log.js';
import { loadTokenFile, parseTokens, TokenFile, TokenFileError } from './token.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'pf-token-'));
  dirs.push(d);
  return d;
}

describe('parseTokens', () => {
  it('takes non-empty trimmed lines and skips comments', () => {
    expect(parseTokens('  a1 \n\n# old one\r\nb2\r\n')).toEqual(['a1', 'b2']);
    expect(parseTokens('\n# nothing\n')).toEqual([]);
  });
});

describe('TokenFile', () => {
  it('accepts any listed token as Bearer and nothing else', () => {
    const f = join(tempDir(), 'token');
    writeFileSync(f, 'first-token\nsecond-token\n');
    const t = new TokenFile(f, { log: silentLogger });
    expect(t.first()).toBe('first-token');
    expect(t.accepts('Bearer first-token')).toBe(true);
    expect(t.accepts('bearer second-token')).toBe(true);
    for (const bad of [
      undefined,
      '',
      'Bearer',
      'Bearer ',
      'first-token',
      'Basic first-token',
      'Bearer first-toke',
      'Bearer first-token x',
      'Bearer first-tokenX',
    ]) {
      expect(t.accepts(bad), String(bad)).toBe(false);
    }
  });

  it('re-reads the file when it changes: rotation without restart', () => {
    const f = join(tempDir(), 'token');
    writeFileSync(f, 'old\n');
    const clock = new ManualClock(0);
    const t = new TokenFile(f, { log: silentLogger, clock, recheckMs: 1000 });
    expect(t.accepts('Bearer old')).toBe(true);
    writeFileSync(f, 'new\nold\n');
    clock.advance(1000);
    expect(t.accepts('Bearer new')).toBe(true);
    expect(t.accepts('Bearer old')).toBe(true);
    writeFileSync(f, 'new\n');
    // Not re-checked within recheckMs; then it is.
    clock.advance(10);
    expect(t.accepts('Bearer old')).toBe(true);
    clock.advance(1000);
    expect(t.accepts('Bearer old')).toBe(false);
    expect(t.first()).toBe('new');
  });

  it('follows a Kubernetes Secret update: the ..data symlink swapped to a new directory', () => {
    const d = tempDir();
    mkdirSync(join(d, '..v1'));
    writeFileSync(join(d, '..v1', 'token'), 'v1-token\n');
    symlinkSync('..v1', join(d, '..data'));
    symlinkSync('..data/token', join(d, 'token'));
    const clock = new ManualClock(0);
    const t = new TokenFile(join(d, 'token'), { log: silentLogger, clock });
    expect(t.first()).toBe('v1-token');
    mkdirSync(join(d, '..v2'));
    writeFileSync(join(d, '..v2', 'token'), 'v2-token\n');
    symlinkSync('..v2', join(d, '..data_tmp'));
    renameSync(join(d, '..data_tmp'), join(d, '..data'));
    rmSync(join(d, '..v1'), { recursive: true });
    clock.advance(5000);
    expect(t.accepts('Bearer v2-token')).toBe(true);
    expect(t.accepts('Bearer v1-token')).toBe(false);
  });

  it('keeps the tokens it has when the file becomes unusable, and warns once', () => {
    const f = join(tempDir(), 'token');
    writeFileSync(f, 'good\n');
    const clock = new ManualClock(0);
    const warnings: string[] = [];
    const log = {
      ...silentLogger,
      warn: (o: { problem: string }) => warnings.push(o.problem),
      info: () => {},
    };
    const t = new TokenFile(f, { log: log as never, clock });
    writeFileSync(f, '\n');
    for (let i = 0; i < 5; i++) {
      clock.advance(2000);
      expect(t.accepts('Bearer good')).toBe(true);
    }
    rmSync(f);
    clock.advance(2000);
    expect(t.accepts('Bearer good')).toBe(true);
    expect(warnings).toEqual([`${f}: holds no token (one per line)`, `${f}: cannot read it (ENOENT)`]);
  });

  it('refuses at start a file that cannot be used, naming the option', () => {
    const d = tempDir();
    const cases: [string, RegExp][] = [
      [join(d, 'missing'), /cannot read it \(ENOENT\)/],
      [d, /not a regular file/],
    ];
    writeFileSync(join(d, 'empty'), '# only a comment\n');
    cases.push([join(d, 'empty'), /holds no token/]);
    writeFileSync(join(d, 'spaces'), 'two words\n');
    cases.push([join(d, 'spaces'), /printable ASCII without spaces/]);
    writeFileSync(join(d, 'big'), 'x'.repeat(100_000));
    cases.push([join(d, 'big'), /at most 65536/]);
    for (const [path, msg] of cases) {
      expect(() => new TokenFile(path, { log: silentLogger })).toThrow(TokenFileError);
      expect(() => loadTokenFile({ pullTokenFile: path, metricsAuth: false }, silentLogger)).toThrow(
        new RegExp(`^--pull-token-file ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*${msg.source}`),
      );
    }
  });

  it('--metrics-auth needs a token file; without one there is no token file', () => {
    expect(() => loadTokenFile({ metricsAuth: true }, silentLogger)).toThrow(StartupError);
    expect(loadTokenFile({ metricsAuth: false }, silentLogger)).toBeUndefined();
  });
});
