import { afterEach, describe, expect, it } from 'vitest';
import { isBatchUnsupported, loadBpf } from './index.js';

describe('native loader', () => {
  const platform = process.platform;
  afterEach(() => {
    Object.defineProperty(process, 'platform', { value: platform });
  });

  it('refuses other platforms with a clear error before loading anything', () => {
    Object.defineProperty(process, 'platform', { value: 'darwin' });
    expect(() => loadBpf()).toThrow('reading BPF maps is not supported on this platform (darwin)');
  });

  it('classifies the errors that mean "no batch lookups here"', () => {
    for (const code of ['EINVAL', 'ENOTSUPP', 'EOPNOTSUPP', 'ENOSYS'])
      expect(isBatchUnsupported({ code })).toBe(true);
    for (const code of ['EACCES', 'EPERM', 'ENOENT', undefined])
      expect(isBatchUnsupported({ code })).toBe(false);
    expect(isBatchUnsupported(undefined)).toBe(false);
  });
});
