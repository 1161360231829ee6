#!/usr/bin/env node
// Summarises an h2load --log-file (tab-separated: start time in µs since the epoch, HTTP status,
// µs until the end of the response) into one JSON line: achieved rate, non-2xx count and exact
// latency percentiles (h2load's own summary has no percentiles).
//   node h2load-stats.mjs LOGFILE
import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean);
const lat = new Float64Array(rows.length);
let n = 0;
let non2xx = 0;
let first = Infinity;
let last = -Infinity;
for (const row of rows) {
  const [start, status, us] = row.split('\t').map(Number);
  if (!Number.isFinite(us)) continue;
  if (status < 200 || status > 299) non2xx += 1;
  lat[n++] = us;
  if (start < first) first = start;
  if (start > last) last = start;
}
const s = lat.subarray(0, n).sort();
const pct = (p) => (n ? s[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))] : null);
const span = n > 1 ? (last - first) / 1e6 : null;
process.stdout.write(
  JSON.stringify({
    requests: n,
    non2xx,
    span_s: span,
    rate: span ? (n - 1) / span : null,
    latency_us: { p50: pct(50), p90: pct(90), p99: pct(99), p999: pct(99.9), max: pct(100) },
  }) + '\n',
);
