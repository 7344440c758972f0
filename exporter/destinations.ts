// `--destinations-file`: address ranges outside the cluster, named and classed by the user (VPC
// peers, on-prem, partners), plus the providers' own range files (AWS ip-ranges.json, GCP
// cloud.json, Azure Service Tags JSON) given as local files, so that a cloud service in the
// cluster's region is named and classed as such instead of "internet". Read once at start; nothing
// is downloaded (docs/cost.md gives the refresh commands).
//
//   - cidr: 10.20.0.0/16          # a user's range: name and/or class
//     name: billing-vpc
//     class: private
//   - aws-ip-ranges: ip-ranges.json   # a provider file (relative to this file's directory)
//     services: [S3, DYNAMODB]        # optional filters, case-insensitive
//     regions: [eu-west-1]
//     class: same-zone                # optional: else by region (see Destination)
//
// Most specific range wins; at equal prefixes a user's range wins over a provider's.
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { StartupError } from '../shared/errors.js';
import { TRAFFIC_CLASSES, type TrafficClass } from '../shared/flow.js';
import { isCidr, type RangeEntry, RangeTable } from './range-table.js';

/** What a matching range says about a peer. */
export interface Destination {
  /** Put in dst_dns_name when the peer has no DNS name; '' names nothing. */
  name: string;
  /** The class the range sets; undefined: by `region`, else the class the address has anyway. */
  class?: TrafficClass;
  /**
   * A provider range's region: the local endpoint's region gives `inRegion`, another region
   * `cross-region`, an unknown local region `unknown`. Undefined for global ranges.
   */
  region?: string;
  /**
   * Class of a provider range in the local endpoint's region: `same-zone` (the providers do not
   * bill traffic to their services in the same region), `cross-zone` for AWS EC2 public addresses
   * (billed at the inter-zone rate within a region).
   */
  inRegion?: TrafficClass;
}

export type Destinations = RangeTable<Destination>;

/** The class a matching range gives a flow whose local endpoint is in `srcRegion`. */
export function destinationClass(d: Destination, srcRegion: string, otherwise: TrafficClass): TrafficClass {
  if (d.class !== undefined) return d.class;
  if (d.region === undefined) return otherwise;
  if (srcRegion === '') return 'unknown';
  return d.region === srcRegion ? (d.inRegion ?? 'same-zone') : 'cross-region';
}

/** Larger files are not range lists (Azure's Service Tags file, the largest, is about 5 MB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const RANK_PROVIDER = 0;
const RANK_PROVIDER_SPECIFIC = 1;
/** Above every provider rank (Azure's go up to 2). */
const RANK_USER = 10;

type Provider = 'aws-ip-ranges' | 'gcp-cloud' | 'azure-service-tags';
const PROVIDERS: readonly Provider[] = ['aws-ip-ranges', 'gcp-cloud', 'azure-service-tags'];
const USER_KEYS = new Set(['cidr', 'name', 'class']);
const PROVIDER_KEYS = new Set(['services', 'regions', 'class']);

/** A provider's range before filtering. */
interface ProviderRange {
  cidr: string;
  service: string;
  /** '' for global ranges. */
  region: string;
  name: string;
  rank: number;
  inRegion?: TrafficClass;
}

/**
 * `--destinations-file` loaded at start, before anything else starts (undefined without one). A bad
 * file is a configuration error: one line, exit status 2.
 */
export function startupDestinations(file: string | undefined): Destinations | undefined {
  if (file === undefined) return undefined;
  try {
    return loadDestinations(file);
  } catch (err) {
    throw new StartupError((err as Error).message, { exitCode: 2 });
  }
}

/**
 * Reads and checks the destinations file and the provider files it names. Throws an Error whose
 * message is one line naming the file, the entry and what was expected.
 */
export function loadDestinations(path: string): Destinations {
  const where = `--destinations-file ${path}`;
  const doc = parseFile(path, where, (text) => parseYaml(text) as unknown);
  if (doc === null || doc === undefined) return RangeTable.build<Destination>([]);
  if (!Array.isArray(doc)) {
    throw new Error(`${where}: expected a YAML list of {cidr, name, class} entries`);
  }
  const entries: RangeEntry<Destination>[] = [];
  doc.forEach((item: unknown, i: number) => {
    const at = `${where}: entry ${i + 1}`;
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new Error(`${at}: expected a mapping with cidr (and name, class), or ${PROVIDERS.join(', ')}`);
    }
    const e = item as Record<string, unknown>;
    const provider = PROVIDERS.filter((p) => p in e);
    if (provider.length > 1)
      throw new Error(`${at}: one provider file per entry, got ${provider.join(' and ')}`);
    const cls = classOf(e.class, at);
    if (provider.length === 1) {
      const p = provider[0];
      for (const k of Object.keys(e)) {
        if (k !== p && !PROVIDER_KEYS.has(k)) {
          throw new Error(`${at}: unknown key "${k}" (expected ${p}, services, regions, class)`);
        }
      }
      const file = e[p];
      if (typeof file !== 'string' || file.trim() === '')
        throw new Error(`${at}: ${p}: expected a file path`);
      const services = filterOf(e.services, `${at}: services`);
      const regions = filterOf(e.regions, `${at}: regions`);
      const full = resolve(dirname(path), file.trim());
      for (const r of providerRanges(p, full, at)) {
        if (services && !services.has(r.service.toLowerCase())) continue;
        if (regions && !regions.has(r.region.toLowerCase())) continue;
        const d: Destination = { name: r.name };
        if (cls !== undefined) d.class = cls;
        else if (r.region !== '') d.region = r.region;
        if (r.inRegion !== undefined && d.region !== undefined) d.inRegion = r.inRegion;
        entries.push({ cidr: r.cidr, value: d, rank: r.rank });
      }
      return;
    }
    for (const k of Object.keys(e)) {
      if (!USER_KEYS.has(k)) {
        throw new Error(
          `${at}: unknown key "${k}" (expected cidr, name, class, or one of ${PROVIDERS.join(', ')})`,
        );
      }
    }
    if (typeof e.cidr !== 'string' || !isCidr(e.cidr)) {
      throw new Error(
        `${at}: cidr: expected a range like 10.20.0.0/16 or 2001:db8::/32, got ${JSON.stringify(e.cidr)}`,
      );
    }
    if (e.name !== undefined && typeof e.name !== 'string') throw new Error(`${at}: name: expected text`);
    const name = typeof e.name === 'string' ? e.name.trim() : '';
    if (name === '' && cls === undefined) throw new Error(`${at}: expected a name, a class or both`);
    const d: Destination = { name };
    if (cls !== undefined) d.class = cls;
    entries.push({ cidr: e.cidr, value: d, rank: RANK_USER });
  });
  try {
    return RangeTable.build(entries);
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

function classOf(v: unknown, at: string): TrafficClass | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string' && (TRAFFIC_CLASSES as readonly string[]).includes(v)) return v as TrafficClass;
  throw new Error(`${at}: class: expected one of ${TRAFFIC_CLASSES.join(', ')}, got ${JSON.stringify(v)}`);
}

function filterOf(v: unknown, at: string): Set<string> | undefined {
  if (v === undefined) return undefined;
  const items = typeof v === 'string' ? v.split(',') : v;
  if (!Array.isArray(items) || !items.every((s) => typeof s === 'string')) {
    throw new Error(`${at}: expected a list of names`);
  }
  return new Set(items.map((s: string) => s.trim().toLowerCase()).filter((s) => s !== ''));
}

function parseFile<T>(path: string, where: string, parse: (text: string) => T): T {
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_FILE_BYTES) throw new Error(`larger than 64 MiB (${st.size} bytes)`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${where}: cannot read the file (${(err as Error).message.split('\n')[0]})`);
  }
  try {
    return parse(text);
  } catch (err) {
    throw new Error(
      `${where}: not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'} (${(err as Error).message.split('\n')[0]})`,
    );
  }
}

/** Provider regions that are not regions. */
const isGlobal = (region: string) => region === '' || region.toLowerCase() === 'global';

function providerRanges(p: Provider, path: string, at: string): ProviderRange[] {
  const where = `${at}: ${p} ${path}`;
  const doc = parseFile(path, where, (text) => JSON.parse(text) as unknown) as Record<string, unknown> | null;
  const fail = (what: string): never => {
    throw new Error(`${where}: ${what}`);
  };
  if (typeof doc !== 'object' || doc === null) return fail('expected a JSON object');
  const out: ProviderRange[] = [];
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  if (p === 'aws-ip-ranges') {
    // https://docs.aws.amazon.com/vpc/latest/userguide/aws-ip-syntax.html: prefixes[] {ip_prefix,
    // region, service, network_border_group}, ipv6_prefixes[] {ipv6_prefix, …}. Every range is
    // listed under AMAZON too: the named service wins at equal prefixes.
    if (!Array.isArray(doc.prefixes)) fail('expected "prefixes" (AWS ip-ranges.json)');
    for (const [list, key] of [
      [doc.prefixes, 'ip_prefix'],
      [doc.ipv6_prefixes ?? [], 'ipv6_prefix'],
    ] as const) {
      if (!Array.isArray(list)) fail('expected "ipv6_prefixes" to be a list');
      for (const x of list as Record<string, unknown>[]) {
        const cidr = str(x?.[key]);
        if (!isCidr(cidr))
          fail(`expected a range in "${key}" of every entry, got ${JSON.stringify(x?.[key])}`);
        const service = str(x.service);
        const region = isGlobal(str(x.region)) ? '' : str(x.region);
        out.push({
          cidr,
          service,
          region,
          name: region === '' ? `aws/${service}` : `aws/${service}/${region}`,
          rank: service === 'AMAZON' ? RANK_PROVIDER : RANK_PROVIDER_SPECIFIC,
          // Public IPv4 traffic within a region is billed at the inter-zone rate, in each direction.
          ...(service === 'EC2' ? { inRegion: 'cross-zone' as const } : {}),
        });
      }
    }
  } else if (p === 'gcp-cloud') {
    // https://www.gstatic.com/ipranges/cloud.json: prefixes[] {ipv4Prefix | ipv6Prefix, service, scope}.
    if (!Array.isArray(doc.prefixes)) fail('expected "prefixes" (GCP cloud.json)');
    for (const x of doc.prefixes as Record<string, unknown>[]) {
      const cidr = str(x?.ipv4Prefix) || str(x?.ipv6Prefix);
      if (!isCidr(cidr))
        fail(`expected a range in "ipv4Prefix" or "ipv6Prefix" of every entry, got ${JSON.stringify(cidr)}`);
      const region = isGlobal(str(x.scope)) ? '' : str(x.scope);
      out.push({
        cidr,
        service: str(x.service),
        region,
        name: region === '' ? 'gcp' : `gcp/${region}`,
        rank: RANK_PROVIDER_SPECIFIC,
      });
    }
  } else {
    // Azure Service Tags (ServiceTags_Public_*.json): values[] {name, properties: {region,
    // systemService, addressPrefixes[]}}. Regional tags (Storage.WestEurope) repeat the prefixes
    // of global ones (Storage, AzureCloud): the regional, service-specific tag wins.
    if (!Array.isArray(doc.values)) fail('expected "values" (Azure Service Tags JSON)');
    for (const v of doc.values as Record<string, unknown>[]) {
      const tag = str(v?.name);
      const props = (v?.properties ?? {}) as Record<string, unknown>;
      if (tag === '' || !Array.isArray(props.addressPrefixes)) {
        fail('expected "name" and "properties.addressPrefixes" in every value');
      }
      const region = isGlobal(str(props.region)) ? '' : str(props.region);
      const service = tag.split('.')[0];
      const rank = (region === '' ? 0 : 1) + (str(props.systemService) === '' ? 0 : 1);
      for (const cidr of props.addressPrefixes as unknown[]) {
        if (typeof cidr !== 'string' || !isCidr(cidr))
          fail(`tag ${tag}: expected address prefixes, got ${JSON.stringify(cidr)}`);
        out.push({ cidr: cidr as string, service, region, name: `azure/${tag}`, rank });
      }
    }
  }
  return out;
}
