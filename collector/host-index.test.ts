import { describe, expect, it } from 'vitest';
import { HostIndex } from './host-index.js';

describe('HostIndex', () => {
  it('holds the host addresses except loopback, and follows changes on refresh', () => {
    let ifaces: Record<string, { address: string; internal: boolean }[]> = {
      lo: [
        { address: '127.0.0.1', internal: true },
        { address: '::1', internal: true },
      ],
      eth0: [
        { address: '192.168.1.20', internal: false },
        { address: 'fe80::1%eth0', internal: false },
        { address: '2001:DB8::20', internal: false },
      ],
    };
    const index = new HostIndex({ refreshMs: 60_000 }, { interfaces: () => ifaces });
    expect(index.isLocal('192.168.1.20')).toBe(false); // no I/O before start()
    index.start();
    expect(index.isLocal('192.168.1.20')).toBe(true);
    expect(index.isLocal('fe80::1')).toBe(true);
    expect(index.isLocal('2001:db8::20')).toBe(true);
    expect(index.isLocal('127.0.0.1')).toBe(false);
    expect(index.isLocal('::1')).toBe(false);
    ifaces = { eth0: [{ address: '192.168.1.21', internal: false }] };
    index.refresh();
    expect(index.isLocal('192.168.1.20')).toBe(false);
    expect(index.isLocal('192.168.1.21')).toBe(true);
    index.close();
  });

  it('keeps the previous addresses when reading them fails', () => {
    let fail = false;
    const index = new HostIndex(
      {},
      {
        interfaces: () => {
          if (fail) throw new Error('EMFILE');
          return { eth0: [{ address: '10.0.0.9', internal: false }] };
        },
      },
    );
    index.start();
    fail = true;
    index.refresh();
    expect(index.isLocal('10.0.0.9')).toBe(true);
    index.close();
  });
});
