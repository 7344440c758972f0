// Runs once before the tests: the integration tests need root and a few Debian packages. Say so in
// one clear line instead of letting dozens of tests fail with ENOENT.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const TOOLS: Record<string, string> = {
  nft: 'nftables',
  ip: 'iproute2',
  conntrack: 'conntrack',
  prometheus: 'prometheus',
  chromium: 'chromium',
};

export default function setup(): void {
  const isRoot = process.getuid?.() === 0;
  if (!isRoot) {
    if (process.env.CI) throw new Error('the tests need root (network namespaces, conntrack, BPF maps)');
    console.warn(
      'podflow tests: not root — tests that need the kernel are skipped (they fail when CI is set)',
    );
    return;
  }
  const missing = Object.keys(TOOLS).filter((tool) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    const pkgs = readFileSync(new URL('../../.ci/packages', import.meta.url), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'));
    throw new Error(`missing ${missing.join(', ')}: run  apt-get install -y ${pkgs.join(' ')}`);
  }
}
