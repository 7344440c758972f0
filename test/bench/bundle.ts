// Benchmarks whose measured processes must not pay for the TypeScript loader (its time, and about
// 30 MB of RSS) run them from plain JavaScript: the benchmark file bundled with esbuild into
// dist/bench/, its packages left to node_modules as in the built image.
import { execFileSync } from 'node:child_process';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Bundles the benchmark `file` (its import.meta.url) into dist/bench/<name>.mjs and returns that
 * path. `splitting`: a chunk per dynamic import, so that each process loads only its own modules.
 */
export function bundled(file: string, opts: { splitting?: boolean } = {}): string {
  const self = fileURLToPath(file);
  const out = join(root, 'dist/bench', `${basename(self, '.ts')}.mjs`);
  execFileSync(join(root, 'node_modules/.bin/esbuild'), [
    self,
    '--bundle',
    '--platform=node',
    '--format=esm',
    '--log-level=warning',
    '--packages=external',
    ...(opts.splitting
      ? ['--splitting', '--out-extension:.js=.mjs', `--outdir=${dirname(out)}`]
      : [`--outfile=${out}`]),
  ]);
  return out;
}
