// Real BPF maps for tests: a private bpffs mount in a temp dir, maps created and pinned there with
// Cilium's conntrack layouts, filled and changed through a small C tool (native/test/bpf-tool.c,
// compiled here on first use). The production addon stays read-only; this is the only writer.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const toolSource = join(root, 'native', 'test', 'bpf-tool.c');

let toolPath: Promise<string> | undefined;

/** Compiles the tool once per source version (cached in the temp dir). */
function tool(): Promise<string> {
  toolPath ??= (async () => {
    const src = readFileSync(toolSource);
    const hash = createHash('sha256').update(src).digest('hex').slice(0, 12);
    const out = join(tmpdir(), `podflow-bpf-tool-${hash}`);
    if (!existsSync(out)) {
      const tmp = `${out}.${process.pid}`;
      await execFileP('cc', ['-O2', '-Wall', '-o', tmp, toolSource]);
      await execFileP('mv', [tmp, out]);
    }
    return out;
  })();
  return toolPath;
}

function runTool(args: string[], input?: Buffer): Promise<void> {
  return tool().then(
    (bin) =>
      new Promise<void>((resolve, reject) => {
        const child = execFile(bin, args, { encoding: 'buffer', maxBuffer: 1 << 20 }, (err, _out, stderr) => {
          if (err)
            reject(new Error(`bpf-tool ${args.join(' ')}: ${stderr.toString().trim() || err.message}`));
          else resolve();
        });
        // The tool may exit before reading stdin (create, or on error): its exit status tells.
        child.stdin?.on('error', () => {});
        child.stdin?.end(input ?? Buffer.alloc(0));
      }),
  );
}

export interface BpfMount {
  dir: string;
  /** Unmounts and removes the temp dir (also after a failed test: call it from afterAll). */
  cleanup(): Promise<void>;
}

const mounts = new Set<string>();
let exitHook = false;

/** Mounts a private bpffs at a fresh temp dir. The host's /sys/fs/bpf is not touched. */
export async function mountBpffs(): Promise<BpfMount> {
  const dir = mkdtempSync(join(tmpdir(), 'pf-bpffs-'));
  try {
    await execFileP('mount', ['-t', 'bpf', 'bpf', dir]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  mounts.add(dir);
  if (!exitHook) {
    exitHook = true;
    // Last resort when cleanup() did not run (crash, timeout): synchronous, so it works in 'exit'.
    process.on('exit', () => {
      for (const d of mounts) {
        try {
          execFileSync('umount', ['-l', d], { stdio: 'ignore' });
          rmSync(d, { recursive: true, force: true });
        } catch {}
      }
    });
  }
  let done = false;
  return {
    dir,
    async cleanup() {
      if (done) return;
      done = true;
      mounts.delete(dir);
      // Unmounting drops the pins; maps vanish once no fd holds them.
      await execFileP('umount', [dir]).catch(() => execFileP('umount', ['-l', dir]));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface MapSpec {
  type?: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export async function createMap(path: string, spec: MapSpec): Promise<void> {
  await runTool([
    'create',
    path,
    String(spec.type ?? 9),
    String(spec.keySize),
    String(spec.valueSize),
    String(spec.maxEntries),
  ]);
}

/** Inserts or overwrites entries: `records` is key bytes then value bytes, repeated. */
export async function putEntries(
  path: string,
  keySize: number,
  valueSize: number,
  records: Buffer,
): Promise<void> {
  await runTool(['update', path, String(keySize), String(valueSize)], records);
}

export async function deleteEntries(path: string, keySize: number, keys: Buffer): Promise<void> {
  await runTool(['delete', path, String(keySize)], keys);
}

// --- Cilium conntrack layouts ----------------------------------------------------------------------

export const CT_OUT = 0;
export const CT_IN = 1;
export const CT_RELATED = 2;
export const CT_SERVICE = 4;
export const KEY4_SIZE = 14;
export const KEY6_SIZE = 38;
export const CT_VALUE_SIZE = 56;

export interface CtKeySpec {
  /** Who opened the connection, and from which port. */
  src: string;
  sport: number;
  /** Where it was opened to. */
  dst: string;
  dport: number;
  proto: number;
  flags: number;
}

export function ipBytes(ip: string): Buffer {
  if (ip.includes('.')) return Buffer.from(ip.split('.').map(Number));
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return out;
}

/**
 * Cilium's tuple key. Its address names are those of the reply direction: the opener's address goes
 * into `daddr` (first), the destination's into `saddr`; the ports are named for the original
 * direction.
 */
export function ctKey(k: CtKeySpec): Buffer {
  const src = ipBytes(k.src);
  const dst = ipBytes(k.dst);
  const a = src.length;
  const key = Buffer.alloc(a === 4 ? KEY4_SIZE : KEY6_SIZE);
  src.copy(key, 0); // daddr
  dst.copy(key, a); // saddr
  key.writeUInt16BE(k.dport, 2 * a);
  key.writeUInt16BE(k.sport, 2 * a + 2);
  key[2 * a + 4] = k.proto;
  key[2 * a + 5] = k.flags;
  return key;
}

/** Cilium ≤1.15 value: rx/tx counters as seen by the local endpoint. */
export function ctValue15(v: {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
  lifetime: number;
}): Buffer {
  const b = Buffer.alloc(CT_VALUE_SIZE);
  b.writeBigUInt64LE(BigInt(v.rxPackets), 0);
  b.writeBigUInt64LE(BigInt(v.rxBytes), 8);
  b.writeBigUInt64LE(BigInt(v.txPackets), 16);
  b.writeBigUInt64LE(BigInt(v.txBytes), 24);
  b.writeUInt32LE(v.lifetime >>> 0, 32);
  return b;
}

/** Cilium ≥1.16 value: one packets/bytes pair per entry; backend id only on service entries. */
export function ctValue16(v: {
  packets: number;
  bytes: number;
  lifetime: number;
  backendId?: number;
}): Buffer {
  const b = Buffer.alloc(CT_VALUE_SIZE);
  b.writeBigUInt64LE(BigInt(v.backendId ?? 0), 8);
  b.writeBigUInt64LE(BigInt(v.packets), 16);
  b.writeBigUInt64LE(BigInt(v.bytes), 24);
  b.writeUInt32LE(v.lifetime >>> 0, 32);
  return b;
}

/** CLOCK_MONOTONIC in whole seconds: Cilium's ktime-mode "now". */
export const monoSeconds = (): number => Number(process.hrtime.bigint() / 1_000_000_000n);
