// One HTTP exchange as it goes over the wire: the body as sent (no transparent decompression, unlike
// fetch), every header, any method and body. For tests that look at what a server answers exactly.
import { request } from 'node:http';

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** `base` is a URL (`http://127.0.0.1:9470`) or a loopback port. */
export function rawHttp(
  base: string | number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<RawAnswer> {
  const url = new URL(path, typeof base === 'number' ? `http://127.0.0.1:${base}` : base);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
