// The exporter's one V8 setting, made in-process because NODE_OPTIONS does not take it.
//
// A round decodes every pull body into flow objects (msgpackr's record reader) that live exactly
// as long as their collector takes to enrich and push: long enough to be alive at a scavenge, dead
// right after. V8's allocation-site pretenuring sees such a site's objects survive and, from then
// on, allocates them in the old generation: every decoded flow of every later round (about 150
// bytes each) becomes garbage that only a full collection frees, and the old generation grows to
// four times its live size between them. Whether that happens depends on when the first scavenges
// fall: with the same code and input, one shard of `npm run bench:shards` peaked at about 300 MB in
// some runs and 450–480 MB in others (heap 100 vs 260–300 MB after the rounds); with pretenuring
// off, every run stayed in the lower mode, at the same round time. Nothing the exporter keeps is
// allocated in volume at a site that would gain from pretenuring: its long-lived state is typed
// arrays and objects made once per address or series.
import { setFlagsFromString } from 'node:v8';

/** Turns V8's allocation-site pretenuring off (again is harmless), before the first pull. */
export function tuneExporterHeap(): void {
  setFlagsFromString('--no-allocation-site-pretenuring');
}
