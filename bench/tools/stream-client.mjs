#!/usr/bin/env node
// Streaming benchmark client (Node, no dependencies). Opens --streams SSE streams (each on its own
// connection, started evenly over --ramp-ms), timestamps every event as it arrives and compares it
// with the send time the paced upstream embedded in it ("t", CLOCK_MONOTONIC ms), so
//   delivery latency = receive time - send time   (per event; same machine, same clock)
//   time to first byte = first event received - request started
//   gap = time between consecutive events of one stream (the upstream paces them --interval-ms)
// With --pid it samples that process's RSS (VmRSS) while streams are open, and notes it at the
// moment all streams are open at once. Prints one JSON object on stdout.
//   node stream-client.mjs --url http://127.0.0.1:PORT/v1/chat/completions --body FILE
//        --streams 1000 --ramp-ms 2000 --chunks 100 [--auth KEY] [--pid PID] [--timeout-ms N]
import http from 'node:http';
import { readFileSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = new URL(args.url);
const body = readFileSync(args.body);
const streams = Number(args.streams ?? 1000);
const rampMs = Number(args['ramp-ms'] ?? 2000);
const chunks = Number(args.chunks ?? 20);
const pid = args.pid ? Number(args.pid) : null;
const timeoutMs = Number(args['timeout-ms'] ?? 120000);

const now = () => Number(process.hrtime.bigint()) / 1e6;
const headers = {
  'content-type': 'application/json',
  accept: 'text/event-stream',
  'content-length': body.length,
  'user-agent': 'OpenAI/Python 1.54.4',
};
if (args.auth) headers.authorization = `Bearer ${args.auth}`;

const rssKiB = () => {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
};

const ttfb = [];
const firstEventLatency = [];
const latency = [];
const gaps = [];
const errors = {};
const countError = (k) => (errors[k] = (errors[k] ?? 0) + 1);
let open = 0;
let maxOpen = 0;
let finished = 0;
let ok = 0;
const rssBase = rssKiB();
let rssMax = rssBase;
let rssAllOpen = null;
let allOpenAt = null;

function startStream() {
  const started = now();
  let buf = '';
  let events = 0;
  let lastRecv = null;
  let done = false;
  let counted = false;
  let sawDone = false;
  const finish = (err) => {
    if (done) return;
    done = true;
    if (counted) open -= 1;
    finished += 1;
    if (err) countError(err);
    else if (!sawDone || events !== chunks) countError(`incomplete (${events}/${chunks} events${sawDone ? '' : ', no [DONE]'})`);
    else ok += 1;
    if (finished === streams) report();
  };
  const req = http.request(
    { host: url.hostname, port: url.port, path: url.pathname + url.search, method: 'POST', headers, agent: false },
    (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', () => finish(`status ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      res.on('data', (piece) => {
        const recv = now();
        buf += piece;
        let cut;
        while ((cut = buf.indexOf('\n\n')) !== -1) {
          const ev = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          if (!ev.startsWith('data: ')) continue;
          if (ev === 'data: [DONE]') {
            sawDone = true;
            continue;
          }
          const m = /"t":([0-9.]+)/.exec(ev);
          if (!m) {
            countError('event without t');
            continue;
          }
          const lat = recv - Number(m[1]);
          latency.push(lat);
          if (events === 0) {
            ttfb.push(recv - started);
            firstEventLatency.push(lat);
            counted = true;
            open += 1;
            if (open > maxOpen) maxOpen = open;
            if (open === streams && rssAllOpen === null) {
              rssAllOpen = rssKiB();
              allOpenAt = recv;
            }
          } else {
            gaps.push(recv - lastRecv);
          }
          lastRecv = recv;
          events += 1;
        }
      });
      res.on('end', () => finish(null));
      res.on('error', (e) => finish(`response ${e.code ?? e.message}`));
    },
  );
  req.on('error', (e) => finish(`request ${e.code ?? e.message}`));
  req.end(body);
}

const pct = (arr, p) => {
  if (arr.length === 0) return null;
  const i = Math.min(arr.length - 1, Math.max(0, Math.ceil((p / 100) * arr.length) - 1));
  return arr[i];
};
const summary = (arr) => {
  const s = Float64Array.from(arr).sort();
  const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return { n: s.length, p50: r(pct(s, 50)), p90: r(pct(s, 90)), p99: r(pct(s, 99)), p999: r(pct(s, 99.9)), max: r(pct(s, 100)) };
};

let reported = false;
function report() {
  if (reported) return;
  reported = true;
  clearInterval(sampler);
  const out = {
    streams,
    chunks,
    ok,
    errors,
    max_open: maxOpen,
    all_open_reached: rssAllOpen !== null || maxOpen === streams,
    rss_base_kib: rssBase,
    rss_all_open_kib: rssAllOpen,
    rss_max_kib: rssMax,
    ttfb_ms: summary(ttfb),
    first_event_latency_ms: summary(firstEventLatency),
    event_latency_ms: summary(latency),
    gap_ms: summary(gaps),
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

const sampler = setInterval(() => {
  const r = rssKiB();
  if (r !== null && (rssMax === null || r > rssMax)) rssMax = r;
}, 50);
const t0 = now();
for (let i = 0; i < streams; i++) {
  const at = (i * rampMs) / streams;
  setTimeout(startStream, Math.max(0, t0 + at - now()));
}
setTimeout(() => {
  countError('client timeout');
  report();
}, timeoutMs).unref();
