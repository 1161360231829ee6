// Shared by the fault-injection suites (tests/faults/*.test.mjs): start a gateway the way every
// fault case wants it (access log to a file, admin listener with a token, short upstream timeout),
// measure its baseline, keep track of the requests a case makes, and check, after each case, the
// same invariants:
//   - the process is alive and answers GET /healthz (main and admin listeners) and a normal chat
//     completion through the mock;
//   - its open file descriptors return to the baseline: no connection to a client is left, every
//     other descriptor but the pooled upstream connections is back exactly, and the upstream
//     sockets are exactly the idle ones the pool reports (llm_gateway_upstream_connections);
//     nothing in flight, no active stream;
//   - its RSS (VmRSS) returns to within a margin of the baseline (not compared under ASan);
//   - no sanitizer report in its stderr (and none at exit: the harness checks that on stop);
//   - every request the case made that the gateway accepted has exactly one access-log line
//     (found by request id) and one count in llm_gateway_requests_total. Lines and counts of
//     /healthz and /metrics, which the checks themselves make, are set aside here; that they must
//     not exist at all is one test of its own (probes.test.mjs).
// Node built-ins only.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, gatewayBin, request, eventually, assertNoSanitizerReport, tmpDir, uid } from '../integration/harness.mjs';

export const ADMIN_TOKEN = `faults-admin-${crypto.randomBytes(8).toString('hex')}`;
export const UPSTREAM_KEY = 'faults-upstream-key';
const AUTH = { authorization: `Bearer ${ADMIN_TOKEN}` };

let sanitized;
/**
 * Whether the gateway binary is built with AddressSanitizer (its quarantine keeps freed memory)
 * or ThreadSanitizer (its allocator and shadow memory do not give memory back either).
 */
export function sanitizedBuild() {
  if (sanitized === undefined) {
    try {
      const bin = fs.readFileSync(gatewayBin());
      sanitized = bin.includes('__asan_init') || bin.includes('__tsan_init');
    } catch {
      sanitized = false;
    }
  }
  return sanitized;
}

/** FAULTS_SLOW=1 enables the cases that wait for the gateway's built-in 30-60 s timeouts. */
export const SLOW = process.env.FAULTS_SLOW === '1';

// ---------------------------------------------------------------------------------------------
// /proc

/** VmRSS of a process in KiB. */
export function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** The soft RLIMIT_NOFILE of a process (Infinity for unlimited). */
export function nofileLimit(pid = 'self') {
  const m = /^Max open files\s+(\S+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/** inode -> {lport, rport, state} for every IPv4/IPv6 TCP socket of the process's network namespace. */
function tcpSockets(pid) {
  const out = new Map();
  for (const f of ['tcp', 'tcp6']) {
    let text;
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const port = (addr) => parseInt(addr.slice(addr.lastIndexOf(':') + 1), 16);
      out.set(cols[9], { lport: port(cols[1]), rport: port(cols[2]), state: cols[3] });
    }
  }
  return out;
}

/**
 * The process's open descriptors, by kind:
 *   client    connections accepted on the main listener
 *   admin     connections accepted on the admin listener
 *   upstream  connections to one of `upstreamPorts`
 *   listen    listening sockets
 *   other     everything else (files, pipes, epoll, eventfd, timerfd, the Redis connection, ...)
 */
export function fdSnapshot(pid, { mainPort, adminPort, upstreamPorts = [] }) {
  const dir = `/proc/${pid}/fd`;
  const links = [];
  for (const name of fs.readdirSync(dir)) {
    try {
      links.push(fs.readlinkSync(path.join(dir, name)));
    } catch {} // closed in between
  }
  const tcp = tcpSockets(pid);
  const snap = { total: links.length, client: 0, admin: 0, upstream: 0, listen: 0, other: 0, otherKinds: {} };
  const up = new Set(upstreamPorts);
  for (const l of links) {
    const m = /^socket:\[(\d+)\]$/.exec(l);
    const s = m ? tcp.get(m[1]) : undefined;
    if (s && s.state === '0A') snap.listen++;
    else if (s && s.lport === mainPort) snap.client++;
    else if (s && adminPort && s.lport === adminPort) snap.admin++;
    else if (s && up.has(s.rport)) snap.upstream++;
    else {
      snap.other++;
      const kind = l.replace(/\[\d+\]$/, '').replace(/^\/.*/, 'file');
      snap.otherKinds[kind] = (snap.otherKinds[kind] ?? 0) + 1;
    }
  }
  return snap;
}

// ---------------------------------------------------------------------------------------------
// /metrics

/** Prometheus text -> [{name, labels, value}] (enough for the gateway's own output). */
export function parseMetrics(text) {
  const out = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const lm of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `partial`; undefined when there is none. */
export function metricSum(samples, name, partial = {}) {
  const found = samples.filter((s) => s.name === name && Object.entries(partial).every(([k, v]) => s.labels[k] === v));
  return found.length ? found.reduce((a, s) => a + s.value, 0) : undefined;
}

export async function fetchMetrics(gw) {
  const res = await request(`${gw.adminUrl}/metrics`, { headers: AUTH, timeoutMs: 5000 });
  assert.equal(res.status, 200, `GET /metrics: ${res.status} ${res.text}`);
  return { text: res.text, samples: parseMetrics(res.text) };
}

// ---------------------------------------------------------------------------------------------
// The access log

/** Complete JSON lines of the access log, and how many lines are not JSON (torn by a full disk). */
export function readAccessLog(file) {
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {}
  const lines = [];
  let torn = 0;
  const parts = text.split('\n');
  for (let i = 0; i < parts.length; i++) {
    const l = parts[i];
    if (!l) continue;
    try {
      const o = JSON.parse(l);
      if (o && typeof o === 'object' && i < parts.length - 1) lines.push(o);
      else torn++;
    } catch {
      torn++;
    }
  }
  return { lines, torn };
}

// ---------------------------------------------------------------------------------------------
// Requests a case makes

/**
 * Which requests the gateway must have logged and counted: ids of requests sent with an
 * x-request-id (each must appear exactly once), requests whose id the gateway made up (counted
 * only), and ids that must never appear (a smuggled request).
 */
export class Tracker {
  ids = new Set();
  anonymous = 0;
  forbidden = new Set();
  /** A fresh id for a request that must be logged once. */
  id(prefix = 'f') {
    const id = uid(prefix);
    this.ids.add(id);
    return id;
  }
  /** A request the gateway accepted without an id of ours. */
  anon(n = 1) {
    this.anonymous += n;
  }
  /** A request the gateway may or may not log (e.g. one it timed out before it was complete). */
  maybe(prefix = 'maybe') {
    const id = uid(prefix);
    this.optional.add(id);
    return id;
  }
  optional = new Set();
  /** An id that must appear in no log line. */
  forbid(prefix = 'smuggled') {
    const id = uid(prefix);
    this.forbidden.add(id);
    return id;
  }
  get expected() {
    return this.ids.size + this.anonymous;
  }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test

/**
 * YAML for a fault gateway. timeoutMs: the upstream's timeout_ms. keys / rateLimits: YAML blocks
 * (top-level `keys:` and `rate_limits:` sections) or ''.
 */
export function faultConfig({ mockUrl, logFile, timeoutMs = 5000, keys = '', rateLimits = '', threads = 2 }) {
  return `
server:
  listen: "127.0.0.1:0"
  threads: ${threads}
  drain_timeout_ms: 1000
admin:
  listen: "127.0.0.1:0"
  token: "\${FAULTS_ADMIN_TOKEN}"
upstreams:
  az:
    provider: azure
    base_url: "${mockUrl}"
    api_key: "${UPSTREAM_KEY}"
    deployments: {gpt-4o: gpt4o-prod}
    connect_timeout_ms: 2000
    timeout_ms: ${timeoutMs}
routes:
  - {match: "*", upstream: az}
logging:
  access_log: "${logFile}"
  level: info
${keys}
${rateLimits}
`;
}

export const chatBody = (extra = {}) => ({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], ...extra });

/**
 * Start a mock (unless given) and a gateway for one fault case, warm it up and take its baseline.
 * The gateway is stopped (and checked for sanitizer reports) when the test ends; the mock too when
 * this made it.
 * @returns {Promise<{gw, mock, tracker: Tracker, logFile: string, baseline: {fds, rss}, pid: number,
 *   ports: {mainPort, adminPort, upstreamPorts}, chat: Function, clientHeaders: object}>}
 */
export async function startFaultGateway(t, { mock, timeoutMs, keys = '', rateLimits = '', logFile, env = {}, clientKey, threads } = {}) {
  let ownMock = false;
  if (!mock) {
    mock = await startMock();
    ownMock = true;
  }
  logFile ??= path.join(tmpDir('llmgw-faults-'), 'access.log');
  const gw = await startGateway(faultConfig({ mockUrl: mock.url, logFile, timeoutMs, keys, rateLimits, threads }), {
    env: { FAULTS_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
    t,
  });
  if (ownMock) t.after(() => mock.close());
  const tracker = new Tracker();
  let probes = 0; // /healthz, /readyz and /metrics requests made through fg (not data-plane requests)
  const clientHeaders = clientKey ? { authorization: `Bearer ${clientKey}` } : {};
  const fg = {
    gw,
    mock,
    tracker,
    logFile,
    pid: gw.proc.pid,
    clientHeaders,
    ports: { mainPort: gw.port, adminPort: gw.adminPort, upstreamPorts: [mock.port] },
    get probes() {
      return probes;
    },
    /** GET /metrics on the admin listener (with the token). */
    metrics() {
      probes++;
      return fetchMetrics(gw);
    },
    /** GET /healthz on `base` (default: the main listener). */
    health(base = gw.url, timeoutMs = 5000) {
      probes++;
      return request(`${base}/healthz`, { timeoutMs });
    },
    /** A normal chat completion through the mock, logged under a tracked id. */
    async chat({ headers = {}, body = chatBody(), timeoutMs: tm = 10_000 } = {}) {
      const id = tracker.id('chat');
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-request-id': id, ...clientHeaders, ...headers },
        body,
        timeoutMs: tm,
      });
      return { ...res, id };
    },
  };
  // Warm up: each worker thread serves a request (connections are spread round-robin) and the
  // admin listener serves /metrics once, so lazily made state exists before the baseline.
  for (let i = 0; i < 4; i++) {
    const r = await fg.chat();
    assert.equal(r.status, 200, `warm-up request: ${r.status} ${r.text}`);
  }
  await fg.metrics();
  fg.baseline = await settle(fg, { what: 'baseline' });
  fg.baseline.rss = rssKiB(fg.pid);
  return fg;
}

/** Snapshot the descriptors once no client connection is open and the pool gauges agree with them. */
async function settle(fg, { timeoutMs = 10_000, what = 'settled', baseline } = {}) {
  let last;
  try {
    return await eventually(
      async () => {
        const fds = fdSnapshot(fg.pid, fg.ports);
        const { samples } = await fg.metrics();
        const again = fdSnapshot(fg.pid, fg.ports);
        const idle = metricSum(samples, 'llm_gateway_upstream_connections', { state: 'idle' }) ?? 0;
        const active = metricSum(samples, 'llm_gateway_upstream_connections', { state: 'active' }) ?? 0;
        const inFlight = metricSum(samples, 'llm_gateway_in_flight_requests') ?? 0;
        const streams = metricSum(samples, 'llm_gateway_active_streams') ?? 0;
        last = { fds, idle, active, inFlight, streams };
        // Stable across the /metrics call (but for the admin connection of that call itself).
        const stable = ['client', 'upstream', 'listen', 'other'].every((k) => again[k] === fds[k]);
        const ok =
          stable &&
          fds.client === 0 &&
          fds.admin === 0 && // the /metrics connection of the previous round has closed
          fds.upstream === idle &&
          active === 0 &&
          inFlight === 0 &&
          streams === 0 &&
          // Fewer "other" descriptors than the baseline is no leak (a socket that was on its way out
          // when the baseline was taken); more is.
          (!baseline || (fds.other <= baseline.fds.other && fds.listen === baseline.fds.listen));
        return ok ? { fds } : null;
      },
      { timeoutMs, intervalMs: 100, what },
    );
  } catch (e) {
    e.message +=
      `\nlast: ${JSON.stringify(last)}` + (baseline ? `\nbaseline: ${JSON.stringify(baseline.fds)}` : '') +
      '\n(client/admin: connections the gateway still holds; upstream must equal the idle gauge; other at most, listen equal to the baseline)';
    throw e;
  }
}

const PROBE_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The invariants every fault case ends with (see the top of this file).
 * @param {{rssMarginKiB?: number, droppedLinesMetric?: boolean, settleTimeoutMs?: number}} opts
 *   droppedLinesMetric: the case made the access log lose lines (disk full): lines in the file plus
 *   llm_gateway_access_log_dropped_total must equal the requests made.
 */
export async function checkInvariants(t, fg, { rssMarginKiB, droppedLinesMetric = false, settleTimeoutMs = 10_000 } = {}) {
  const { gw, tracker } = fg;
  assert.equal(gw.proc.exitCode, null, `the gateway is still running (signal ${gw.proc.signalCode}); stderr:\n${gw.stderr.slice(-30).join('\n')}`);
  assert.equal(gw.proc.signalCode, null, 'the gateway was not killed');
  assertNoSanitizerReport(gw.stderr);

  // Serving: probes on both listeners, and a normal request through the mock.
  for (const base of [gw.url, gw.adminUrl]) {
    const h = await fg.health(base);
    assert.equal(h.status, 200, `${base}/healthz: ${h.status} ${h.text}`);
  }
  const normal = await fg.chat();
  assert.equal(normal.status, 200, `a normal chat completion after the fault: ${normal.status} ${normal.text}`);
  assert.equal(normal.json?.object, 'chat.completion', `normal answer: ${normal.text}`);

  // Descriptors back to the baseline.
  const after = await settle(fg, { timeoutMs: settleTimeoutMs, what: 'descriptors back to the baseline', baseline: fg.baseline });
  t.diagnostic(`fds: baseline ${JSON.stringify(fg.baseline.fds)} after ${JSON.stringify(after.fds)}`);

  // RSS back within the margin (not under ASan or TSan: they hold on to freed memory).
  if (sanitizedBuild()) {
    t.diagnostic(`VmRSS not compared under a sanitizer (baseline ${fg.baseline.rss} KiB, now ${rssKiB(fg.pid)} KiB)`);
  } else await checkRss(t, fg, rssMarginKiB);

  await checkLogAndCount(t, fg, droppedLinesMetric);
}

async function checkRss(t, fg, rssMarginKiB) {
  const margin = rssMarginKiB ?? Math.max(16 * 1024, Math.round(fg.baseline.rss * 0.5));
  let rss;
  try {
    await eventually(() => (rss = rssKiB(fg.pid)) <= fg.baseline.rss + margin, { timeoutMs: 5000, intervalMs: 100, what: 'RSS' });
  } catch (e) {
    e.message += `: VmRSS ${rss} KiB, baseline ${fg.baseline.rss} KiB, margin ${margin} KiB`;
    throw e;
  }
  t.diagnostic(`VmRSS: baseline ${fg.baseline.rss} KiB, after ${rss} KiB`);
}

async function checkLogAndCount(t, fg, droppedLinesMetric) {
  const { tracker } = fg;

  // One access-log line and one count per accepted request. Probes (/healthz, /metrics) must be
  // neither (README), but that is checked by a test of its own (probes.test.mjs): here their lines
  // and counts are set aside, so that every case reports on its own fault.
  // The warm-up requests went through fg.chat(): they are tracked too.
  let last;
  try {
    await eventually(
      async () => {
        const { lines: all, torn } = readAccessLog(fg.logFile);
        const { samples } = await fg.metrics();
        const lines = all.filter((l) => !PROBE_PATHS.has(l.path));
        const probeLines = all.length - lines.length;
        const expected = tracker.expected + lines.filter((l) => tracker.optional.has(l.request_id)).length;
        const counted = metricSum(samples, 'llm_gateway_requests_total') ?? 0;
        const dropped = metricSum(samples, 'llm_gateway_access_log_dropped_total');
        // Probes counted too (not what the README says) would add at most one per probe made.
        const countedProbes = counted - expected;
        last = { lines: lines.length, torn, counted, dropped, expected, probeLines, probesMade: fg.probes };
        if (droppedLinesMetric) {
          // Lines lost to the disk cannot be told apart (data plane or probe): every counted
          // request is a whole line in the file or a count in the dropped metric.
          return dropped !== undefined && all.length + dropped === counted && countedProbes >= 0 && countedProbes <= fg.probes;
        }
        const probesOk = countedProbes === 0 || (countedProbes > 0 && countedProbes <= fg.probes && probeLines > 0);
        return lines.length === expected && probesOk;
      },
      { timeoutMs: 5000, intervalMs: 100, what: 'access-log lines and llm_gateway_requests_total matching the requests made' },
    );
  } catch (e) {
    e.message += `\n${JSON.stringify(last)}`;
    if (droppedLinesMetric && last?.dropped === undefined) e.message += '\nno llm_gateway_access_log_dropped_total in /metrics';
    throw e;
  }
  const lines = readAccessLog(fg.logFile).lines.filter((l) => !PROBE_PATHS.has(l.path));
  const perId = new Map();
  for (const l of lines) perId.set(l.request_id, (perId.get(l.request_id) ?? 0) + 1);
  const wrong = [];
  if (!droppedLinesMetric) {
    for (const id of tracker.ids) if (perId.get(id) !== 1) wrong.push(`${id}: ${perId.get(id) ?? 0} lines`);
  } else {
    for (const id of tracker.ids) if ((perId.get(id) ?? 0) > 1) wrong.push(`${id}: ${perId.get(id)} lines`);
  }
  for (const id of tracker.forbidden) if (perId.has(id)) wrong.push(`${id} must not be logged: ${perId.get(id)} lines`);
  for (const id of tracker.optional) if ((perId.get(id) ?? 0) > 1) wrong.push(`${id}: ${perId.get(id)} lines`);
  assert.deepEqual(wrong, [], `access-log lines per request id:\n${wrong.join('\n')}`);
}

/** The gateway's warn/error diagnostics (parsed stderr lines) matching msg, optionally for a request id. */
export function gatewayLogs(gw, msg, requestId) {
  return gw.logs.filter((o) => o.msg === msg && (requestId === undefined || o.request_id === requestId));
}
