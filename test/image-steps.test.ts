// SLOW (about a minute): the container image's recipe. No Docker engine runs here, so .ci/image-check
// repeats the Dockerfile's steps (npm ci with the native addon and TypeScript build, npm prune
// --omit=dev, the runtime stage's copies) in a clean temporary copy of the tree, then starts the
// result. This test runs it and checks each of its steps reported success.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const execFileP = promisify(execFile);
const script = fileURLToPath(new URL('../.ci/image-check', import.meta.url));
const read = (path: string) => readFileSync(fileURLToPath(new URL(`../${path}`, import.meta.url)), 'utf8');

/** The runtime (last) stage's `LABEL k="v" …` instructions, continuation lines joined, ARGs substituted. */
function runtimeLabels(dockerfile: string, args: Record<string, string>): Map<string, string> {
  const joined = dockerfile.replace(/\\\n\s*/g, ' ');
  const stage = joined.split(/^FROM /m).at(-1)!;
  const defaults = new Map<string, string>();
  for (const [, name, value] of stage.matchAll(/^ARG ([A-Z_]+)(?:=(.*))?$/gm))
    defaults.set(name, value ?? '');
  // A global ARG (before the first FROM) keeps its default when the stage declares it again.
  for (const [, name, value] of joined.split(/^FROM /m)[0].matchAll(/^ARG ([A-Z_]+)=(.*)$/gm)) {
    if (defaults.get(name) === '') defaults.set(name, value);
  }
  const labels = new Map<string, string>();
  for (const [, body] of stage.matchAll(/^LABEL (.*)$/gm)) {
    for (const [, key, value] of body.matchAll(/([a-z0-9.-]+)="([^"]*)"/g)) {
      labels.set(
        key,
        value.replace(/\$\{([A-Z_]+)\}/g, (_, n: string) => args[n] ?? defaults.get(n) ?? ''),
      );
    }
  }
  return labels;
}

describe('container image labels', () => {
  const dockerfile = read('Dockerfile');
  const pkg = JSON.parse(read('package.json'));

  it('carries the OCI annotations, from package.json and the build arguments', () => {
    const args = {
      VERSION: '1.2.3',
      REVISION: 'abc123',
      CREATED: '2026-01-02T03:04:05Z',
      SOURCE: 'https://example.test/podflow',
    };
    const labels = runtimeLabels(dockerfile, args);
    expect(Object.fromEntries(labels)).toEqual({
      'org.opencontainers.image.title': pkg.name,
      'org.opencontainers.image.description': pkg.description,
      'org.opencontainers.image.licenses': pkg.license,
      'org.opencontainers.image.version': '1.2.3',
      'org.opencontainers.image.revision': 'abc123',
      'org.opencontainers.image.created': '2026-01-02T03:04:05Z',
      'org.opencontainers.image.source': 'https://example.test/podflow',
      'org.opencontainers.image.base.name': 'docker.io/library/node:20-bookworm-slim',
    });
    // Without build arguments the version is the package's, and the base is the stage's FROM.
    const plain = runtimeLabels(dockerfile, {});
    expect(plain.get('org.opencontainers.image.version')).toBe(pkg.version);
    const from = /^FROM (\S+)\s*$/m.exec(dockerfile.split(/^# ---- runtime/m)[1])![1];
    // biome-ignore lint/suspicious/noTemplateCurlyInString: Dockerfile syntax, not a template string
    const nodeArg = '${NODE_VERSION}';
    expect(plain.get('org.opencontainers.image.base.name')).toBe(
      `docker.io/library/${from.replace(nodeArg, '20')}`,
    );
  });

  it("documents a build for amd64 and arm64 with the labels' arguments", () => {
    const install = read('docs/install.md');
    expect(install).toContain('docker buildx build --platform linux/amd64,linux/arm64');
    for (const arg of ['VERSION', 'REVISION', 'CREATED']) expect(install).toContain(`--build-arg ${arg}=`);
  });
});

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
