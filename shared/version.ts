// podflow's version, read once from package.json: `podflow --version` and the build_info gauge.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** package.json is ../ from shared/ when run from source, ../../ from dist/shared/ when built. */
function readVersion(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const dir of [join(here, '..'), join(here, '..', '..')]) {
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'podflow' && typeof pkg.version === 'string') return pkg.version;
  }
  return 'unknown';
}

export const VERSION: string = readVersion();
