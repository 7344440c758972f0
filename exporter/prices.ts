// What traffic costs: the price presets of `--cloud` and the overrides of `--prices`, in USD per GiB
// (2^30 bytes). The model (docs/cost.md): every byte is priced once, at its sender. A flow's tx
// bytes (sent by the local endpoint) are priced by the flow's traffic class; its rx bytes are
// someone else's tx (another pod's, counted by that pod's own flow) or the internet's, priced by
// `internet-ingress`. So pod-to-pod across nodes is priced once per direction, by each side's tx.
//
// The presets are the providers' published list prices for the cheapest tier in their main US
// region, recorded on PRICES_AS_OF; docs/cost.md names the pages. Check them for your region
// and contract, and override with --prices.
import type { Config, PriceKey, Prices } from '../shared/config.js';
import type { TrafficClass } from '../shared/flow.js';

export type Cloud = Config['cloud'];
export type Preset = Exclude<Cloud, 'auto'>;

export const PRICES_AS_OF = '2026-12-06';

/** A preset: every key's price per GiB. `nat-gateway` is applied only when --prices asks for it. */
export const PRESETS: Readonly<Record<Preset, Readonly<Record<PriceKey, number>>>> = {
  // aws.amazon.com/ec2/pricing/on-demand/ (Data Transfer), aws.amazon.com/vpc/pricing/ (NAT gateway).
  aws: {
    'same-zone': 0,
    // $0.01/GB out of one zone plus $0.01/GB into the other: priced once, at the sender.
    'cross-zone': 0.02,
    // Between US or EU regions: $0.02/GB, charged to the sending side only.
    'cross-region': 0.02,
    // To the internet, the first 10 TB a month (after 100 GB free across the account).
    internet: 0.09,
    // A private address outside the cluster: most often another subnet or a peered VPC in the
    // region, billed like cross-zone traffic (VPC peering across zones).
    private: 0.02,
    // A zone or region missing: priced like cross-zone, so that unlabelled nodes show as cost.
    unknown: 0.02,
    'internet-ingress': 0,
    'nat-gateway': 0.045,
  },
  // cloud.google.com/vpc/network-pricing, cloud.google.com/nat/pricing.
  gcp: {
    'same-zone': 0,
    // Between zones of one region: $0.01/GiB, egress only.
    'cross-zone': 0.01,
    // Between regions of one continent (Northern America, Europe): $0.02/GiB.
    'cross-region': 0.02,
    // Premium Tier to the internet, 0–1 TiB a month, worldwide except China and Australia.
    internet: 0.12,
    private: 0.01,
    unknown: 0.01,
    'internet-ingress': 0,
    // Cloud NAT data processing, both directions.
    'nat-gateway': 0.045,
  },
  // azure.microsoft.com/pricing/details/bandwidth/, azure.microsoft.com/pricing/details/azure-nat-gateway/.
  azure: {
    'same-zone': 0,
    // Azure does not bill transfer between availability zones of a region.
    'cross-zone': 0,
    // Between regions within North America or Europe: $0.02/GB.
    'cross-region': 0.02,
    // Microsoft global network routing, 100 GB–10 TB a month, from North America or Europe.
    internet: 0.087,
    // VNet peering within a region: $0.01/GB out plus $0.01/GB in.
    private: 0.02,
    unknown: 0,
    'internet-ingress': 0,
    'nat-gateway': 0.045,
  },
  none: {
    'same-zone': 0,
    'cross-zone': 0,
    'cross-region': 0,
    internet: 0,
    private: 0,
    unknown: 0,
    'internet-ingress': 0,
    'nat-gateway': 0,
  },
};

/** The preset of a node's spec.providerID scheme (`aws://…`, `gce://…`, `azure://…`). */
export function presetOfProvider(scheme: string | undefined): Preset {
  if (scheme === 'aws') return 'aws';
  if (scheme === 'gce') return 'gcp';
  if (scheme === 'azure') return 'azure';
  return 'none';
}

const GIB = 2 ** 30;

/** The prices in force, per byte. */
export interface PriceTable {
  preset: Preset;
  /** Per GiB, as configured (for logs and docs). */
  perGiB: Readonly<Record<PriceKey, number>>;
  /** Per byte of tx, by traffic class. */
  tx: Readonly<Record<TrafficClass, number>>;
  /** Per byte received from the internet. */
  ingress: number;
  /** Per byte both ways between a local endpoint and a public address. */
  nat: number;
}

/** The preset with `--prices` over it. `nat-gateway` stays 0 unless given. */
export function priceTable(preset: Preset, overrides: Prices): PriceTable {
  const base = PRESETS[preset];
  const perGiB = { ...base, 'nat-gateway': 0 };
  for (const [k, v] of Object.entries(overrides) as [PriceKey, number | 'preset'][]) {
    perGiB[k] = v === 'preset' ? base[k] : v;
  }
  return {
    preset,
    perGiB,
    tx: {
      'same-zone': perGiB['same-zone'] / GIB,
      'cross-zone': perGiB['cross-zone'] / GIB,
      'cross-region': perGiB['cross-region'] / GIB,
      internet: perGiB.internet / GIB,
      private: perGiB.private / GIB,
      unknown: perGiB.unknown / GIB,
    },
    ingress: perGiB['internet-ingress'] / GIB,
    nat: perGiB['nat-gateway'] / GIB,
  };
}

/** The cost of one flow's bytes (see the model above). */
export function costOf(
  t: PriceTable,
  cls: TrafficClass,
  publicPeer: boolean,
  txBytes: number,
  rxBytes: number,
): number {
  let c = txBytes * t.tx[cls];
  if (cls === 'internet') c += rxBytes * t.ingress;
  if (publicPeer && t.nat !== 0) c += (txBytes + rxBytes) * t.nat;
  return c;
}
