// SLOW (about a minute): the container image's recipe. No Docker engine runs here, so .ci/image-check
// repeats the Dockerfile's steps (npm ci with the native addon and TypeScript build, npm prune
// --omit=dev, the runtime stage's copies) in a clean temporary copy of the tree, then starts the
// result. This test runs it and checks each of its steps reported success.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const execFileP = promisify(execFile);
const script = fileURLToPath(new URL('../.ci/image-check', import.meta.url));

describe('container image steps (.ci/image-check)', () => {
  it('builds, prunes and starts like the Dockerfile', async () => {
    const { stdout } = await execFileP('bash', [script], { timeout: 180_000, maxBuffer: 16 << 20 }).catch(
      (err: { stdout?: string; stderr?: string; message: string }) => {
        throw new Error(`.ci/image-check failed:\n${err.stdout ?? ''}${err.stderr ?? err.message}`);
      },
    );
    expect(stdout).toContain('image-check: podflow --help lists collector, exporter, standalone');
    expect(stdout).toMatch(/image-check: a bad option is refused: podflow: invalid --export-interval/);
    expect(stdout).toMatch(
      /image-check: native addon loaded \(openPinned on a missing pin: (ENOENT|EPERM)\)/,
    );
    expect(stdout).toContain('image-check: netlink binding loaded');
    expect(stdout).toContain('image-check: collector, exporter and standalone modules load');
    expect(stdout.trimEnd().endsWith('image-check: OK')).toBe(true);
  }, 200_000);
});
