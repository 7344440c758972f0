// Label and field selectors as the Kubernetes API server parses them
// (k8s.io/apimachinery/pkg/labels/selector.go, pkg/fields/selector.go), enough for list and watch:
// labels `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`; fields `f=v`, `f==v`, `f!=v`.
// A bad selector is a 400 BadRequest, as on a real server.

export type Labels = Record<string, string> | undefined;

export type LabelRequirement =
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: Set<string> }
  | { op: 'exists' | 'notexists'; key: string };

export class SelectorError extends Error {}

/** Split on commas that are not inside parentheses. */
function splitTop(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

const KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function checkKey(key: string, whole: string): string {
  if (!KEY.test(key))
    throw new SelectorError(`unable to parse requirement: invalid label key "${key}" in "${whole}"`);
  return key;
}
function checkValue(value: string, whole: string): string {
  if (!VALUE.test(value)) {
    throw new SelectorError(`unable to parse requirement: invalid label value "${value}" in "${whole}"`);
  }
  return value;
}

export function parseLabelSelector(text: string | null): LabelRequirement[] {
  if (text === null || text.trim() === '') return [];
  const out: LabelRequirement[] = [];
  for (const part of splitTop(text)) {
    let m = /^(\S+?)\s+(in|notin)\s*\(([^)]*)\)$/.exec(part);
    if (m) {
      const values = new Set(
        m[3]
          .split(',')
          .map((v) => v.trim())
          .filter((v) => v.length > 0)
          .map((v) => checkValue(v, part)),
      );
      out.push({ op: m[2] as 'in' | 'notin', key: checkKey(m[1], part), values });
      continue;
    }
    m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part);
    if (m) {
      out.push({
        op: m[2] === '!=' ? 'neq' : 'eq',
        key: checkKey(m[1], part),
        value: checkValue(m[3], part),
      });
      continue;
    }
    m = /^(!?)\s*([^!=\s()]+)$/.exec(part);
    if (m) {
      out.push({ op: m[1] === '!' ? 'notexists' : 'exists', key: checkKey(m[2], part) });
      continue;
    }
    throw new SelectorError(`unable to parse requirement: "${part}"`);
  }
  return out;
}

export function matchLabels(reqs: LabelRequirement[], labels: Labels): boolean {
  for (const r of reqs) {
    const has = labels !== undefined && Object.hasOwn(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    switch (r.op) {
      case 'eq':
        if (v !== r.value) return false;
        break;
      case 'neq':
        // As upstream: a missing label satisfies `!=`.
        if (v === r.value) return false;
        break;
      case 'in':
        if (v === undefined || !r.values.has(v)) return false;
        break;
      case 'notin':
        if (v !== undefined && r.values.has(v)) return false;
        break;
      case 'exists':
        if (!has) return false;
        break;
      case 'notexists':
        if (has) return false;
        break;
    }
  }
  return true;
}

export interface FieldRequirement {
  field: string;
  value: string;
  neq: boolean;
}

export function parseFieldSelector(text: string | null, supported: readonly string[]): FieldRequirement[] {
  if (text === null || text.trim() === '') return [];
  const out: FieldRequirement[] = [];
  for (const part of text.split(',').map((p) => p.trim())) {
    if (part === '') continue;
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(part);
    if (!m) throw new SelectorError(`invalid selector: '${text}'; can't understand '${part}'`);
    const field = m[1].trim();
    if (!supported.includes(field)) throw new SelectorError(`field label not supported: ${field}`);
    out.push({ field, value: m[3].trim(), neq: m[2] === '!=' });
  }
  return out;
}

export function matchFields(reqs: FieldRequirement[], get: (field: string) => string): boolean {
  for (const r of reqs) {
    if ((get(r.field) === r.value) === r.neq) return false;
  }
  return true;
}
