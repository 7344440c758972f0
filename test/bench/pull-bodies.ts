// The benchmarks' floor reads the bodies a pull gets: fetched here once, outside any timing.
import { request } from 'node:http';

/** Every collector's current body as a pull gets it (gzip), by its base URL. */
export function fetchBodies(urls: string[]): Promise<Buffer[]> {
  return Promise.all(
    urls.map(
      (u) =>
        new Promise<Buffer>((resolve, reject) => {
          request(`${u}/api/v1/flows`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve(Buffer.concat(chunks)));
          })
            .on('error', reject)
            .end();
        }),
    ),
  );
}
