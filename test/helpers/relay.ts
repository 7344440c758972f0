// Reaching a server of the test process (root network namespace, 127.0.0.1) from inside a test
// network namespace, without any address or route in the root namespace: a relay listens on the
// namespace's loopback and forwards each connection over a Unix socket (file system objects are
// not bound to a network namespace) to the server's loopback port.
import type { ChildProcess } from 'node:child_process';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Netns } from './netns.js';

const RELAY_JS = `const net=require('net');const [port,path]=process.argv.slice(1);
net.createServer(c=>{const u=net.connect(path);c.pipe(u).pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy());})
.listen(+port,'127.0.0.1',()=>console.log('ready'));`;

export interface Relay {
  close(): Promise<void>;
}

/** Makes 127.0.0.1:`rootPort` of this process reachable as 127.0.0.1:`nsPort` inside `ns`. */
export async function relayIntoNetns(
  ns: Netns,
  nsPort: number,
  rootPort: number,
  dir: string,
): Promise<Relay> {
  const sock = join(dir, `relay-${ns.name}-${nsPort}.sock`);
  const srv: Server = createServer((c) => {
    const u = createConnection(rootPort, '127.0.0.1');
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((resolve) => srv.listen(sock, resolve));
  const p: ChildProcess = ns.spawn(process.execPath, ['-e', RELAY_JS, String(nsPort), sock]);
  try {
    await new Promise<void>((resolve, reject) => {
      p.stdout?.once('data', () => resolve());
      p.once('exit', (code) => reject(new Error(`relay into ${ns.name} exited ${code}`)));
    });
  } catch (err) {
    srv.close();
    throw err;
  }
  return {
    async close() {
      // Killed by a signal (e.g. by cleanupAll), a process has no exit code but a signal code.
      if (p.exitCode === null && p.signalCode === null) {
        const gone = new Promise((resolve) => p.once('exit', resolve));
        p.kill();
        await gone;
      }
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    },
  };
}
