import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{cmd,collector,exporter,shared,native,view}/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['node_modules', 'dist', 'test/bench/**'],
    // Integration tests create network namespaces and start real processes: run files one at a
    // time so that two tests never race for the machine's two cores or for ports.
    fileParallelism: false,
    globalSetup: ['test/setup/prereqs.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
