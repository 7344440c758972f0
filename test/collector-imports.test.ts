// The collector runs on every node: nothing it imports may load @kubernetes/client-node (about
// 70 MB of RSS on its own; the collector has its own small list/watch, collector/kube-watch.ts).
// Walks the import graph of cmd/collector.ts through the sources, static and dynamic imports alike.
import { readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const SPEC =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'|\bimport\(\s*'([^']+)'\s*\)|(?:^|\n)\s*import\s+'([^']+)'/g;

/** Every package a module reaches, with the chain of project files that leads to it. */
function packagesOf(entry: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const seen = new Set<string>();
  const walk = (file: string, chain: string[]) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(SPEC)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      const here = [...chain, relative(REPO, file)];
      if (spec.startsWith('.')) walk(join(dirname(file), spec.replace(/\.js$/, '.ts')), here);
      else if (!spec.startsWith('node:') && !found.has(spec)) found.set(spec, here);
    }
  };
  walk(join(REPO, entry), []);
  return found;
}

describe('what the collector loads', () => {
  it('reaches no @kubernetes/client-node, through any import', () => {
    const pkgs = packagesOf('cmd/collector.ts');
    const kube = [...pkgs].filter(([p]) => p.startsWith('@kubernetes/'));
    expect(kube).toEqual([]);
    // The walk does see packages: msgpackr (pull bodies) is among them.
    expect(pkgs.has('msgpackr')).toBe(true);
  });

  it('the exporter, by the same walk, does load it (the walk finds it where it is)', () => {
    expect(packagesOf('cmd/exporter.ts').has('@kubernetes/client-node')).toBe(true);
  });
});
