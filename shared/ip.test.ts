import { describe, expect, it } from 'vitest';
import { addressWords, isPrivateIp } from './ip.js';

describe('isPrivateIp', () => {
  const table: [string, boolean][] = [
    ['10.0.0.1', true],
    ['10.255.255.255', true],
    ['172.15.255.255', false],
    ['172.16.0.1', true],
    ['172.31.255.255', true],
    ['172.32.0.0', false],
    ['192.168.1.1', true],
    ['192.169.0.1', false],
    ['100.63.255.255', false],
    ['100.64.0.1', true],
    ['100.127.255.255', true],
    ['100.128.0.0', false],
    ['127.0.0.1', true],
    ['169.254.169.254', true],
    ['0.0.0.0', true],
    ['8.8.8.8', false],
    ['1.1.1.1', false],
    ['11.0.0.1', false],
    ['::1', true],
    ['::', true],
    ['fc00::1', true],
    ['fd12:3456::1', true],
    ['FD00::1', true],
    ['fe80::1', true],
    ['febf::1', true],
    ['fec0::1', false],
    ['fd::1', false],
    ['2001:4860:4860::8888', false],
    ['2a00:1450::1', false],
    ['::ffff:10.1.2.3', true],
    ['::ffff:8.8.8.8', false],
    // Multicast never routes on the internet; documentation ranges count as public (test hosts).
    ['224.0.0.1', true],
    ['239.255.255.250', true],
    ['240.0.0.1', false],
    ['ff02::1', true],
    ['192.0.2.1', false],
    ['198.51.100.7', false],
    ['203.0.113.9', false],
    ['2001:db8::1', false],
  ];
  it.each(table)('%s → %s', (ip, want) => {
    expect(isPrivateIp(ip)).toBe(want);
  });
});

describe('addressWords', () => {
  const words = (ip: string) => {
    const w = new Uint32Array(4);
    return addressWords(ip, w) ? [...w].map((x) => x.toString(16)) : undefined;
  };
  it('parses IPv4 as its mapped form and IPv6 in any spelling', () => {
    expect(words('203.0.113.5')).toEqual(['0', '0', 'ffff', 'cb007105']);
    expect(words('::ffff:203.0.113.5')).toEqual(words('203.0.113.5'));
    expect(words('2001:DB8::a')).toEqual(['20010db8', '0', '0', 'a']);
    expect(words('2001:db8:0:0:0:0:0:a')).toEqual(words('2001:db8::a'));
    expect(words('::')).toEqual(['0', '0', '0', '0']);
  });
  it('refuses what is not an address', () => {
    for (const bad of ['', '1.2.3', '1.2.3.256', 'a.b.c.d', '2001:db8::1::2', '1:2:3:4:5:6:7:8:9', 'x']) {
      expect(words(bad), bad).toBeUndefined();
    }
  });
});
