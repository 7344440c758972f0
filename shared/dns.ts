// DNS names as they cross boundaries (collector/dns/ learns them, the pull wire and the state file
// carry them, the exporter checks them).

/** The longest name in presentation form (RFC 1035: 255 octets on the wire). */
export const MAX_DNS_NAME = 253;

/**
 * A host name as podflow reports it: 1–253 characters, dot-separated labels of 1–63 letters,
 * digits, `-` or `_` (service records and some internal names use `_`), no trailing dot.
 */
export function isDnsName(v: unknown): v is string {
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_DNS_NAME) return false;
  let label = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 46) {
      if (label === 0) return false;
      label = 0;
      continue;
    }
    const ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 95;
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}
