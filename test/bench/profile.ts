// CPU profile of one phase of a benchmark's measured process, through the inspector (no flags).
import { writeFileSync } from 'node:fs';

/**
 * With a file name, CPU-profiles what runs until the returned function is called (the all-grew
 * ticks of the benches: PF_BENCH_PROFILE_GREW=/tmp/grew.cpuprofile), else does nothing.
 */
export async function profileIf(file: string | undefined): Promise<() => Promise<void>> {
  if (!file) return async () => {};
  const { Session } = await import('node:inspector');
  const session = new Session();
  session.connect();
  const post = (method: string) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, (err, res) => (err ? reject(err) : resolve(res))),
    );
  await post('Profiler.enable');
  await post('Profiler.start');
  return async () => {
    const { profile } = (await post('Profiler.stop')) as { profile: unknown };
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  };
}
