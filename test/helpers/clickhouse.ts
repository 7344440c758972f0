// A real ClickHouse server (/usr/sbin/clickhouse-server, Debian package clickhouse-server) for tests:
// a tiny config in a temp dir, HTTP and native ports on loopback, no password for `default`. It
// answers within a second.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kill } from './netns.js';
import { freePort } from './ports.js';

export class ClickHouse {
  private output = '';

  private constructor(
    private readonly dir: string,
    private readonly proc: ChildProcess,
    readonly port: number,
  ) {
    proc.stdout?.on('data', (d) => {
      this.output += d;
    });
    proc.stderr?.on('data', (d) => {
      this.output += d;
    });
  }

  static async start(): Promise<ClickHouse> {
    const dir = await mkdtemp(join(tmpdir(), 'podflow-ch-'));
    const [http, tcp] = [await freePort(), await freePort()];
    await writeFile(
      join(dir, 'config.xml'),
      `<yandex>
  <logger><level>error</level><console>1</console></logger>
  <http_port>${http}</http_port>
  <tcp_port>${tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${dir}/data/</path>
  <tmp_path>${dir}/tmp/</tmp_path>
  <users_config>${dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
</yandex>
`,
    );
    await writeFile(
      join(dir, 'users.xml'),
      `<yandex>
  <profiles><default/></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default/></quotas>
</yandex>
`,
    );
    const proc = spawn('clickhouse-server', [`--config-file=${join(dir, 'config.xml')}`], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const ch = new ClickHouse(dir, proc, http);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`clickhouse-server exited: ${ch.output}`);
      const ok = await fetch(`${ch.url}/ping`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return ch;
      if (Date.now() > deadline) throw new Error(`clickhouse-server not up after 20 s: ${ch.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Runs one statement over the HTTP interface; the answer's text, or an error with what it said. */
  async query(sql: string): Promise<string> {
    const res = await fetch(`${this.url}/`, { method: 'POST', body: sql });
    const text = await res.text();
    if (!res.ok) throw new Error(`clickhouse: ${sql.slice(0, 60)}: ${res.status} ${text}`);
    return text;
  }

  async close(): Promise<void> {
    await kill(this.proc).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
