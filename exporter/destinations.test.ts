import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type Destination, destinationClass, loadDestinations } from './destinations.js';

const FIXTURES = new URL('../test/fixtures/ranges/', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'pf-dest-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** Writes a destinations file and returns its path. */
function file(yaml: string, name = `d${n++}.yaml`): string {
  const path = join(dir, name);
  writeFileSync(path, yaml);
  return path;
}

/** The load error's message (one line), or '' when it loaded. */
function failure(path: string): string {
  try {
    loadDestinations(path);
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('destinations file: user ranges', () => {
  const table = loadDestinations(
    file(`
- cidr: 10.20.0.0/16
  name: billing-vpc
  class: private
- cidr: 10.20.5.0/24
  name: billing-db
- cidr: 10.20.5.7/32
  class: same-zone
- cidr: 2001:db8:100::/48
  name: on-prem
  class: cross-region
- cidr: 52.218.0.0/17
  name: my-s3-endpoint
  class: same-zone
- aws-ip-ranges: ${FIXTURES}aws-ip-ranges.json
`),
  );

  it.each<[string, Destination | undefined]>([
    ['10.20.1.1', { name: 'billing-vpc', class: 'private' }],
    // The most specific range wins, with what it says: a name only, a class only.
    ['10.20.5.1', { name: 'billing-db' }],
    ['10.20.5.7', { name: '', class: 'same-zone' }],
    ['2001:db8:100:1::9', { name: 'on-prem', class: 'cross-region' }],
    // At an equal prefix, the user's own entry wins over the provider file.
    ['52.218.1.1', { name: 'my-s3-endpoint', class: 'same-zone' }],
    ['52.94.25.1', { name: 'aws/DYNAMODB/eu-west-1', region: 'eu-west-1' }],
    ['10.21.0.1', undefined],
  ])('%s', (ip, want) => {
    expect(table.lookup(ip)).toEqual(want);
  });

  it('an empty file has no ranges', () => {
    expect(loadDestinations(file('# nothing yet\n')).size).toBe(0);
  });
});

describe('provider range files', () => {
  it('AWS ip-ranges.json: service and region names; the named service over AMAZON; EC2 public addresses', () => {
    const t = loadDestinations(file(`- aws-ip-ranges: ${FIXTURES}aws-ip-ranges.json\n`));
    expect(t.size).toBe(10);
    expect(t.lookup('52.218.100.1')).toEqual({ name: 'aws/S3/eu-west-1', region: 'eu-west-1' });
    expect(t.lookup('2a05:d050:4000::1')).toEqual({ name: 'aws/S3/eu-west-1', region: 'eu-west-1' });
    expect(t.lookup('52.92.17.1')).toEqual({ name: 'aws/S3/us-east-1', region: 'us-east-1' });
    expect(t.lookup('3.248.0.9')).toEqual({
      name: 'aws/EC2/eu-west-1',
      region: 'eu-west-1',
      inRegion: 'cross-zone',
    });
    // GLOBAL ranges have no region: named, classed as the address would be.
    expect(t.lookup('13.33.0.1')).toEqual({ name: 'aws/CLOUDFRONT' });
    expect(t.lookup('8.8.8.8')).toBeUndefined();
  });

  it('filters by service and region, case-insensitively, relative to the destinations file', () => {
    writeFileSync(join(dir, 'ip-ranges.json'), JSON.stringify(awsSample()));
    const t = loadDestinations(
      file('- aws-ip-ranges: ip-ranges.json\n  services: [s3]\n  regions: EU-WEST-1\n'),
    );
    expect(t.lookup('52.218.0.1')?.name).toBe('aws/S3/eu-west-1');
    // AMAZON's own listing of the same range was filtered out, not only outranked.
    expect(t.lookup('3.248.0.9')).toBeUndefined();
    expect(t.lookup('52.92.17.1')).toBeUndefined();
    expect(t.size).toBe(2);
  });

  it('a class on a provider entry applies to all its ranges', () => {
    const t = loadDestinations(file(`- gcp-cloud: ${FIXTURES}gcp-cloud.json\n  class: private\n`));
    expect(t.lookup('35.184.0.1')).toEqual({ name: 'gcp/us-central1', class: 'private' });
  });

  it('GCP cloud.json: region from scope, IPv4 and IPv6', () => {
    const t = loadDestinations(file(`- gcp-cloud: ${FIXTURES}gcp-cloud.json\n`));
    expect(t.lookup('34.77.1.1')).toEqual({ name: 'gcp/europe-west1', region: 'europe-west1' });
    expect(t.lookup('2600:1900:4010::5')).toEqual({ name: 'gcp/europe-west1', region: 'europe-west1' });
    expect(t.lookup('35.184.0.1')).toEqual({ name: 'gcp/us-central1', region: 'us-central1' });
  });

  it('Azure Service Tags: the regional service tag over the regional and the global ones', () => {
    const t = loadDestinations(file(`- azure-service-tags: ${FIXTURES}azure-service-tags.json\n`));
    expect(t.lookup('20.38.100.1')).toEqual({ name: 'azure/Storage.WestEurope', region: 'westeurope' });
    expect(t.lookup('2603:1020:201::1')).toEqual({ name: 'azure/Storage.WestEurope', region: 'westeurope' });
    expect(t.lookup('20.151.0.1')).toEqual({ name: 'azure/AzureCloud.westeurope', region: 'westeurope' });
    expect(t.lookup('2603:1020:202::1')).toEqual({
      name: 'azure/AzureCloud.westeurope',
      region: 'westeurope',
    });
  });
});

describe('destinationClass', () => {
  const s3: Destination = { name: 'aws/S3/eu-west-1', region: 'eu-west-1' };
  const ec2: Destination = { name: 'aws/EC2/eu-west-1', region: 'eu-west-1', inRegion: 'cross-zone' };
  it.each<[string, Destination, string, string]>([
    ['a service in the local region is not billed: same-zone', s3, 'eu-west-1', 'same-zone'],
    ['in another region', s3, 'us-east-1', 'cross-region'],
    ['the local region unknown', s3, '', 'unknown'],
    ['EC2 public addresses in the region: the inter-zone rate', ec2, 'eu-west-1', 'cross-zone'],
    ['a global range keeps the class of its address', { name: 'aws/CLOUDFRONT' }, 'eu-west-1', 'internet'],
    ['a class given wins', { name: 'x', class: 'private', region: 'eu-west-1' }, 'us-east-1', 'private'],
  ])('%s', (_name, d, region, want) => {
    expect(destinationClass(d, region, 'internet')).toBe(want);
  });
});

describe('bad files get one clear line', () => {
  it.each([
    ['not a list', 'cidr: 10.0.0.0/8\n', /: expected a YAML list of \{cidr, name, class\} entries$/],
    [
      'a bad range',
      '- cidr: 10.0.0.0/8\n  name: a\n- cidr: 10.0.0/33\n  name: b\n',
      /: entry 2: cidr: expected a range like 10\.20\.0\.0\/16 or 2001:db8::\/32, got "10\.0\.0\/33"$/,
    ],
    [
      'a bad class',
      '- cidr: 10.0.0.0/8\n  class: cheap\n',
      /: entry 1: class: expected one of same-zone, cross-zone, cross-region, internet, private, unknown, got "cheap"$/,
    ],
    ['neither name nor class', '- cidr: 10.0.0.0/8\n', /: entry 1: expected a name, a class or both$/],
    ['an unknown key', '- cidr: 10.0.0.0/8\n  nmae: x\n', /: entry 1: unknown key "nmae"/],
    ['a scalar entry', '- 10.0.0.0/8\n', /: entry 1: expected a mapping with cidr/],
    [
      'two providers',
      `- aws-ip-ranges: a.json\n  gcp-cloud: b.json\n`,
      /: entry 1: one provider file per entry/,
    ],
    [
      'a missing provider file',
      '- gcp-cloud: nowhere.json\n',
      /: entry 1: gcp-cloud \S+nowhere\.json: cannot read the file \(ENOENT/,
    ],
    ['not YAML', '- cidr: [\n', /: not valid YAML \(/],
  ])('%s', (_name, yaml, want) => {
    const msg = failure(file(yaml));
    expect(msg).toMatch(/^--destinations-file /);
    expect(msg).toMatch(want);
    expect(msg).not.toContain('\n');
  });

  it.each([
    [
      'aws-ip-ranges',
      '{"prefixes": [{"ip_prefix": "52.0.0.0/33", "service": "S3"}]}',
      /expected a range in "ip_prefix" of every entry, got "52\.0\.0\.0\/33"$/,
    ],
    ['aws-ip-ranges', '{"values": []}', /expected "prefixes" \(AWS ip-ranges\.json\)$/],
    [
      'gcp-cloud',
      '{"prefixes": [{"scope": "x"}]}',
      /expected a range in "ipv4Prefix" or "ipv6Prefix" of every entry/,
    ],
    [
      'azure-service-tags',
      '{"values": [{"name": "X"}]}',
      /expected "name" and "properties\.addressPrefixes" in every value$/,
    ],
    ['azure-service-tags', '{"values": [', /not valid JSON/],
  ])('%s with a broken file', (provider, json, want) => {
    const path = join(dir, `broken-${n++}.json`);
    writeFileSync(path, json);
    const msg = failure(file(`- ${provider}: ${path}\n`));
    expect(msg).toMatch(new RegExp(`^--destinations-file \\S+: entry 1: ${provider} ${path}: `));
    expect(msg).toMatch(want);
    expect(msg).not.toContain('\n');
  });
});

function awsSample() {
  return {
    syncToken: '1',
    createDate: '2026-12-06-00-00-00',
    prefixes: [
      {
        ip_prefix: '52.218.0.0/17',
        region: 'eu-west-1',
        service: 'AMAZON',
        network_border_group: 'eu-west-1',
      },
      { ip_prefix: '52.218.0.0/17', region: 'eu-west-1', service: 'S3', network_border_group: 'eu-west-1' },
      { ip_prefix: '52.92.16.0/20', region: 'us-east-1', service: 'S3', network_border_group: 'us-east-1' },
      {
        ip_prefix: '3.248.0.0/13',
        region: 'eu-west-1',
        service: 'AMAZON',
        network_border_group: 'eu-west-1',
      },
    ],
    ipv6_prefixes: [
      {
        ipv6_prefix: '2a05:d050:4000::/40',
        region: 'eu-west-1',
        service: 'S3',
        network_border_group: 'eu-west-1',
      },
    ],
  };
}
