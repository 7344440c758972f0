// The pull API's body encoding, in one place: the collector serves with it, and the exporter's
// tests and benchmark build their bodies with exactly the same encoder.
import { promisify } from 'node:util';
import { constants, gzip } from 'node:zlib';
import { Packr } from 'msgpackr';
import type { PullResponse } from '../shared/flow.js';

// msgpackr records: a flow's keys are written once per body, not once per flow. Measured on 200k
// flows: 33 bytes per flow instead of 85, encoding 2.5x and decoding 3x faster than plain maps. No
// shared structures: every body defines its records inline, so any msgpackr decoder reads it alone.
const packr = new Packr({ useRecords: true });
const gzipP = promisify(gzip);

/** A pull response as the collector sends it (before optional gzip). */
export const encodePullBody = (r: PullResponse): Buffer => packr.pack(r);

/** Level 1: flow batches are repetitive, the fastest level gets most of the gain for little CPU. */
export const gzipPullBody = (body: Buffer): Promise<Buffer> => gzipP(body, { level: constants.Z_BEST_SPEED });
