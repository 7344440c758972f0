// The `podflow` executable: parses the command line once, validates the configuration with the one
// schema of shared/config.ts, and hands over to the wiring of the chosen command.
import { CommanderError, Option, Command as Program } from 'commander';
import {
  type Command,
  type Config,
  ConfigError,
  envName,
  loadConfig,
  OPTIONS,
  type OptionName,
  type OptionSpec,
} from '../shared/config.js';
import { StartupError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/log.js';
import { VERSION } from '../shared/version.js';

type Run = (config: Config, log: Logger, signal: AbortSignal) => Promise<void>;

/**
 * The commands and their wiring. Each is loaded only when chosen: `podflow collector` runs on
 * every node and must not load the exporter's @kubernetes/client-node (test/collector-imports.test.ts).
 */
const COMMANDS: Record<Command, { description: string; load: () => Promise<{ run: Run }> }> = {
  collector: {
    description: 'the per-node agent: reads conntrack, serves flows to exporters',
    load: () => import('./collector.js'),
  },
  exporter: {
    description: 'the cluster aggregator: pulls collectors, enriches flows, emits metrics and logs',
    load: () => import('./exporter.js'),
  },
  standalone: {
    description: 'collector + exporter in one process on this host (no Kubernetes needed)',
    load: () => import('./standalone.js'),
  },
};

/** Exits the process with one clear line. Start-up problems only: a running process logs and goes on. */
function die(message: string, code = 2): never {
  process.stderr.write(`podflow: ${message}\n`);
  process.exit(code);
}

async function run(command: Command, flags: Record<string, unknown>): Promise<void> {
  let config: Config;
  try {
    config = loadConfig({ command, flags, env: process.env });
  } catch (err) {
    if (err instanceof ConfigError) die(err.message);
    throw err;
  }
  const log = createLogger(config.logLevel);
  const abort = new AbortController();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    abort.abort();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    const wiring = await COMMANDS[command].load();
    await wiring.run(config, log, abort.signal);
  } catch (err) {
    if (err instanceof StartupError) die(err.message, err.exitCode);
    log.error({ err }, 'fatal');
    die(err instanceof Error ? err.message : String(err), 1);
  }
}

const program = new Program('podflow')
  .description('Kubernetes network-traffic monitor: who talks to whom, and what it costs')
  .version(`podflow ${VERSION}`, '--version', 'print the version and exit')
  // Command-line mistakes (unknown option, missing value) end like a bad value: one line, exit 2.
  .exitOverride()
  .configureOutput({
    outputError: (str, write) =>
      write(
        `podflow: ${str
          .replace(/^error: /, '')
          .trim()
          .replace(/\s*\n\s*/g, ' ')}\n`,
      ),
  });

for (const command of Object.keys(COMMANDS) as Command[]) {
  const sub = program.command(command).description(COMMANDS[command].description);
  sub.addOption(
    new Option('--config <file>', 'YAML file of options (keys are the flag names)').env('PODFLOW_CONFIG'),
  );
  for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) {
    if (!spec.commands.includes(command)) continue;
    const isBool = spec.arg === undefined;
    const flag = isBool ? `--${name} [true|false]` : `--${name} <${spec.arg}>`;
    const def =
      spec.default !== undefined && typeof spec.default !== 'function'
        ? ` (default: ${JSON.stringify(spec.default)})`
        : '';
    // Env and defaults are merged by loadConfig, not by commander, so precedence lives in one place.
    sub.addOption(new Option(flag, `${spec.help}${def} [env ${envName(name)}]`));
  }
  sub.action(async (opts: Record<string, unknown>) => {
    const flags: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(opts)) {
      // commander camelCases option names; the schema speaks kebab-case.
      flags[k === 'config' ? 'config' : k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)] = v;
    }
    await run(command, flags);
  });
}

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // Help and --version exit 0; anything else commander has said already, in one line.
    const done = ['commander.helpDisplayed', 'commander.help', 'commander.version'].includes(err.code);
    process.exit(done ? err.exitCode : 2);
  }
  die(err instanceof Error ? err.message : String(err), 1);
});
