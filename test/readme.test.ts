import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { envName, OPTIONS } from '../shared/config.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it('starts with the command that runs podflow and the one that runs the tests', () => {
    const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1].trim().split('\n');
    expect(firstBlock).toEqual([
      'npm ci && npx podflow standalone',
      "apt-get install -y $(grep -v '^#' .ci/packages) && npm ci && npm test",
    ]);
    // .ci/run must run the same test command.
    expect(readFileSync(new URL('../.ci/run', import.meta.url), 'utf8')).toMatch(/^npm test$/m);
  });

  it.each(Object.keys(OPTIONS))('documents --%s in the options table', (name) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`--${name}\``));
    expect(row, `no options-table row for --${name}`).toBeDefined();
    expect(row).toContain(`\`${envName(name)}\``);
  });
});
