import { describe, expect, it } from 'vitest';
import { causeOf, createLogger, formatPretty, isExpectedError, OncePerCause, serializeError } from './log.js';

/** A logger writing JSON records into an array. */
function capture(level = 'debug') {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger(level, {
    pretty: false,
    destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
  });
  return { log, lines };
}

const refused = () => {
  const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9470'), { code: 'ECONNREFUSED' });
  return Object.assign(new Error('pull: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9470', { cause }), {
    name: 'PullError',
    reason: 'network',
  });
};

describe('createLogger', () => {
  it('writes level names, not numbers', () => {
    const { log, lines } = capture('info');
    log.info('a');
    log.warn('b');
    log.debug('not written');
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      ['info', 'a'],
      ['warn', 'b'],
    ]);
  });

  it('logs an expected network error without a stack, its message once', () => {
    const { log, lines } = capture();
    log.warn({ err: refused() }, 'pull failed');
    expect(lines[0].err).toEqual({
      type: 'PullError',
      message: 'pull: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9470',
      code: 'ECONNREFUSED',
      reason: 'network',
    });
  });

  it('logs an unexpected error with the stacks of it and its cause, messages not repeated', () => {
    const { log, lines } = capture();
    const err = new TypeError('reading batches', { cause: new RangeError('offset out of range') });
    log.error({ err }, 'export round failed');
    const e = lines[0].err as { type: string; message: string; stack: string };
    expect(e.type).toBe('TypeError');
    expect(e.message).toBe('reading batches: offset out of range');
    expect(e.stack).toMatch(/^TypeError: reading batches\n\s+at /);
    expect(e.stack).toContain('caused by: RangeError: offset out of range');
  });
});

describe('isExpectedError', () => {
  it('knows network failures, timeouts and pulls that failed for them, along the cause chain', () => {
    expect(isExpectedError(refused())).toBe(true);
    const timeout = Object.assign(new Error('pull: no answer within 5000ms'), {
      name: 'PullError',
      reason: 'timeout',
    });
    expect(isExpectedError(timeout)).toBe(true);
    expect(
      isExpectedError(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
    ).toBe(true);
    const fetchFailed = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' }),
    });
    expect(isExpectedError(new Error('http sink: POST http://x/: ETIMEDOUT', { cause: fetchFailed }))).toBe(
      true,
    );
    // A collector answering something podflow cannot read is not the network's doing.
    expect(
      isExpectedError(Object.assign(new Error('pull: bad body'), { name: 'PullError', reason: 'invalid' })),
    ).toBe(false);
    expect(isExpectedError(new TypeError('x is undefined'))).toBe(false);
    expect(isExpectedError('a string')).toBe(false);
  });
});

describe('OncePerCause', () => {
  it('warns once per cause, repeats at debug, and says once when it clears', () => {
    const { log, lines } = capture();
    const once = new OncePerCause(log);
    const fail = (key: string, cause: string) => once.failing(key, cause, { key }, `${key} failed`);
    fail('a', 'network ECONNREFUSED');
    fail('a', 'network ECONNREFUSED');
    fail('a', 'network ECONNREFUSED');
    fail('b', 'network ECONNREFUSED'); // another key: its own warning
    fail('a', 'timeout'); // the cause changed: a warning again
    fail('a', 'timeout');
    once.recovered('a', { key: 'a' }, 'a works again');
    once.recovered('a', { key: 'a' }, 'a works again'); // already working: nothing
    once.recovered('c', { key: 'c' }, 'c works again'); // never failed: nothing
    fail('a', 'timeout'); // failing again after recovery: a warning
    expect(lines.map((l) => `${l.level} ${l.msg}`)).toEqual([
      'warn a failed',
      'debug a failed',
      'debug a failed',
      'warn b failed',
      'warn a failed',
      'debug a failed',
      'info a works again',
      'warn a failed',
    ]);
    expect(once.isFailing('b')).toBe(true);
    expect(once.isFailing('c')).toBe(false);
  });

  it('takes the reason and code of an error as its cause, else the message', () => {
    expect(causeOf(refused())).toBe('network ECONNREFUSED');
    expect(causeOf(new Error('answered 503'))).toBe('answered 503');
  });
});

describe('formatPretty', () => {
  it('makes one readable line of a record, quoting values with spaces', () => {
    const line = JSON.stringify({
      level: 'warn',
      time: '2026-01-02T03:04:05.678Z',
      stage: 'pipeline',
      collector: 'http://10.0.0.2:9470',
      reason: 'network',
      err: serializeError(refused()),
      msg: 'pull failed',
    });
    expect(formatPretty(line)).toBe(
      '03:04:05.678 WARN  pipeline: pull failed collector=http://10.0.0.2:9470 reason=network err="pull: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9470"\n',
    );
  });

  it('puts the stack of an unexpected error on indented lines below', () => {
    const line = JSON.stringify({
      level: 'error',
      time: '2026-01-02T03:04:05.678Z',
      err: serializeError(new Error('boom')),
      msg: 'x',
    });
    const out = formatPretty(line).split('\n');
    expect(out[0]).toBe('03:04:05.678 ERROR x err=boom');
    expect(out[1]).toBe('    Error: boom');
    expect(out[2]).toMatch(/^ {8}at /);
  });

  it('colours the level only when asked', () => {
    const line = JSON.stringify({
      level: 'info',
      time: '2026-01-02T03:04:05.678Z',
      msg: 'listening',
      port: 9471,
    });
    expect(formatPretty(line, true)).toBe('03:04:05.678 \x1b[32mINFO \x1b[0m listening port=9471\n');
  });
});
