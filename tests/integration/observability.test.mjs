// Observability: the Prometheus metrics on /metrics (exact values after a known sequence, bounded
// label values, the admin token), the JSON access log (fields, file target, SIGUSR1 reopen,
// bodies), and that no client key, upstream key or admin token leaks into any output.
// Everything goes through the real binary against tests/mock_upstream.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  runGateway,
  writeTemp,
  tmpDir,
  request,
  streamRequest,
  uid,
  closedPort,
  jsonLines,
  eventually,
  parseSSE,
} from './harness.mjs';

const T = { timeout: 30_000 };
const HOOK = { timeout: 30_000 };

// ---------------------------------------------------------------------------------------------
// Helpers (kept in this file: harness.mjs and mock_upstream.mjs belong to other suites too).

/**
 * Parse the Prometheus text format into samples: [{name, labels: {..}, value: number}].
 * Lines are `name{l1="v1",...} value` or `name value`; # lines and blank lines are skipped.
 * Label values may carry the format's escapes (\\, \", \n).
 */
function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    let i = 0;
    while (i < line.length && /[a-zA-Z0-9_:]/.test(line[i])) i++;
    const name = line.slice(0, i);
    const labels = {};
    if (line[i] === '{') {
      i++;
      for (;;) {
        while (line[i] === ' ' || line[i] === ',') i++;
        if (line[i] === '}') {
          i++;
          break;
        }
        const eq = line.indexOf('=', i);
        assert.ok(eq > i, `metrics line without '=' in its labels: ${line}`);
        const lname = line.slice(i, eq).trim();
        assert.equal(line[eq + 1], '"', `label value not quoted: ${line}`);
        let j = eq + 2;
        let value = '';
        while (j < line.length && line[j] !== '"') {
          if (line[j] === '\\') {
            const n = line[j + 1];
            value += n === 'n' ? '\n' : n;
            j += 2;
          } else value += line[j++];
        }
        assert.ok(j < line.length, `unterminated label value: ${line}`);
        labels[lname] = value;
        i = j + 1;
      }
    }
    const rest = line.slice(i).trim().split(/\s+/);
    const v = rest[0];
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
    assert.ok(name, `metrics line without a name: ${line}`);
    assert.ok(!Number.isNaN(value) || v === 'NaN', `metrics line without a numeric value: ${line}`);
    samples.push({ name, labels, value });
  }
  return samples;
}

const sameLabels = (a, b) => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
};

/** Samples of `name` whose labels include every pair of `partial`. */
function series(samples, name, partial = {}) {
  return samples.filter((s) => s.name === name && Object.entries(partial).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one sample of `name` with exactly these labels (undefined if none). */
function metric(samples, name, labels = {}) {
  const found = samples.filter((s) => s.name === name && sameLabels(s.labels, labels));
  assert.ok(found.length <= 1, `${name}${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value;
}

/** Sum over the samples of `name` matching `partial`. */
function metricSum(samples, name, partial = {}) {
  return series(samples, name, partial).reduce((a, s) => a + s.value, 0);
}

/** Assert exact values: [[name, labels, expected], ...]; one message listing every mismatch. */
function assertMetrics(samples, expectations, text) {
  const wrong = [];
  for (const [name, labels, expected] of expectations) {
    const got = metric(samples, name, labels);
    if (got !== expected) wrong.push(`${name}${JSON.stringify(labels)}: expected ${expected}, got ${got}`);
  }
  assert.deepEqual(wrong, [], `metric values differ:\n${wrong.join('\n')}\n--- /metrics ---\n${text}`);
}

async function fetchMetrics(baseUrl, headers = {}) {
  const res = await request(`${baseUrl}/metrics`, { headers });
  assert.equal(res.status, 200, `GET /metrics: ${res.status} ${res.text}`);
  return { text: res.text, samples: parseMetrics(res.text), res };
}

/**
 * /metrics once the gateway has finished accounting: a request's counters are updated after its
 * last byte went out, so the client can see the answer a moment before /metrics shows it.
 */
async function settledMetrics(baseUrl, expectedRequests, { headers = {}, timeoutMs = 3000 } = {}) {
  let last;
  try {
    return await eventually(
      async () => {
        last = await fetchMetrics(baseUrl, headers);
        const total = metricSum(last.samples, 'llm_gateway_requests_total');
        const inFlight = metric(last.samples, 'llm_gateway_in_flight_requests', {});
        return total === expectedRequests && inFlight === 0 ? last : null;
      },
      { timeoutMs, what: `${expectedRequests} requests counted and none in flight` },
    );
  } catch (e) {
    e.message += `\n--- last /metrics ---\n${last?.text}`;
    throw e;
  }
}

const chatBody = (model = 'gpt-4o', extra = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });

/** Access-log lines (parsed JSON objects) among a list of text lines. */

/** The gateway's access-log line (stdout) for a request id, once it is written. */
async function stdoutLine(gw, id, timeoutMs = 3000) {
  return eventually(() => jsonLines(gw.stdout).find((o) => o.request_id === id), {
    timeoutMs,
    what: `access-log line for ${id} on stdout`,
  });
}

const readLines = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

/** The access-log line for a request id in a file, once it is written. */
async function fileLine(file, id, timeoutMs = 3000) {
  return eventually(() => jsonLines(readLines(file)).find((o) => o.request_id === id), {
    timeoutMs,
    what: `access-log line for ${id} in ${file}`,
  });
}

/** Every access-log field, in the README's order. */
const FIELDS = [
  'ts', 'request_id', 'key', 'method', 'path', 'endpoint', 'model', 'upstream', 'deployment', 'attempts', 'status',
  'stream', 'bytes_in', 'bytes_out', 'duration_ms', 'upstream_first_byte_ms', 'overhead_us',
  'prompt_tokens', 'completion_tokens', 'total_tokens', 'finish_reason', 'content_filter', 'error', 'cut',
  'upstream_request_id', 'client', 'user_agent', 'trace_id',
];
const NUMBER_FIELDS = new Set([
  'status', 'bytes_in', 'bytes_out', 'duration_ms', 'upstream_first_byte_ms', 'overhead_us',
  'prompt_tokens', 'completion_tokens', 'total_tokens',
]);
const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Every field present with the right JSON type; numbers are integers >= 0. */
function assertLineShape(line, { bodies = false } = {}) {
  const ctx = JSON.stringify(line);
  for (const f of FIELDS) assert.ok(Object.hasOwn(line, f), `field ${f} missing: ${ctx}`);
  const expectedKeys = bodies ? [...FIELDS, 'request_body', 'response_body'] : FIELDS;
  assert.deepEqual(Object.keys(line).sort(), [...expectedKeys].sort(), `the fields of the line: ${ctx}`);
  for (const f of NUMBER_FIELDS) {
    if (line[f] === null) continue;
    assert.equal(typeof line[f], 'number', `${f} is a JSON number: ${ctx}`);
    assert.ok(Number.isInteger(line[f]) && line[f] >= 0, `${f} is a whole number >= 0: ${ctx}`);
  }
  for (const f of ['status', 'bytes_in', 'bytes_out', 'duration_ms']) assert.equal(typeof line[f], 'number', `${f} never null: ${ctx}`);
  assert.equal(typeof line.stream, 'boolean', `stream is a boolean: ${ctx}`);
  assert.match(line.ts, RFC3339_MS, 'ts is RFC 3339 with milliseconds, UTC');
  for (const f of ['request_id', 'key', 'method', 'path', 'endpoint']) assert.equal(typeof line[f], 'string', `${f}: ${ctx}`);
  for (const f of ['model', 'upstream', 'deployment', 'finish_reason', 'error', 'upstream_request_id', 'client', 'user_agent', 'trace_id']) {
    assert.ok(line[f] === null || typeof line[f] === 'string', `${f} is a string or null: ${ctx}`);
  }
  assert.ok(Array.isArray(line.attempts), `attempts is a list: ${ctx}`);
  for (const a of line.attempts) {
    const keys = Object.keys(a).sort();
    assert.ok(
      JSON.stringify(keys) === '["duration_ms","status","upstream"]' || JSON.stringify(keys) === '["duration_ms","error","upstream"]',
      `an attempt is {upstream, status or error, duration_ms}: ${ctx}`,
    );
    assert.equal(typeof a.upstream, 'string', `attempt upstream: ${ctx}`);
    assert.ok(Number.isInteger(a.duration_ms) && a.duration_ms >= 0, `attempt duration_ms: ${ctx}`);
  }
  if (line.attempts.length > 0) assert.equal(line.attempts.at(-1).upstream, line.upstream, `the last attempt is the logged upstream: ${ctx}`);
  const cf = line.content_filter;
  if (cf !== null) {
    assert.deepEqual(Object.keys(cf).sort(), ['completion', 'prompt'], `content_filter shape: ${ctx}`);
    assert.ok(Array.isArray(cf.prompt) && Array.isArray(cf.completion), `content_filter lists: ${ctx}`);
  }
}

/** The request was answered within [t0, t1] (Date.now() values): ts and durations agree. */
function assertTiming(line, t0, t1) {
  const ts = Date.parse(line.ts);
  assert.ok(ts >= t0 - 50 && ts <= t1 + 50, `ts ${line.ts} is when the request arrived (${new Date(t0).toISOString()}..${new Date(t1).toISOString()})`);
  assert.ok(line.duration_ms <= t1 - t0 + 50, `duration_ms ${line.duration_ms} <= what the client saw (${t1 - t0})`);
  if (line.upstream_first_byte_ms !== null) assert.ok(line.upstream_first_byte_ms <= line.duration_ms + 1, 'first byte before the end');
  if (line.overhead_us !== null) assert.ok(line.overhead_us <= (line.duration_ms + 1) * 1000, 'overhead within the duration');
}

/** One raw HTTP exchange on its own connection; resolves with every byte the server sent. */
function rawExchange(port, bytes, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const s = net.connect({ port, host: '127.0.0.1' });
    let localPort;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`raw exchange on port ${port} timed out`));
    }, timeoutMs);
    s.on('connect', () => {
      localPort = s.localPort;
      s.write(bytes);
    });
    s.on('data', (c) => chunks.push(c));
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(chunks), localPort });
    });
  });
}

function rawPost(pathname, headers, body) {
  const b = Buffer.from(JSON.stringify(body));
  let head = `POST ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (const [k, v] of Object.entries({ 'content-type': 'application/json', 'content-length': String(b.length), connection: 'close', ...headers })) {
    head += `${k}: ${v}\r\n`;
  }
  return Buffer.concat([Buffer.from(head + '\r\n'), b]);
}

let versionCache;
async function gatewayVersion() {
  if (versionCache === undefined) {
    const r = await runGateway(['--version']);
    assert.equal(r.code, 0, r.stderr);
    const m = /(\d+\.\d+[^\s]*)/.exec(r.stdout);
    assert.ok(m, `--version printed a version: ${r.stdout}`);
    versionCache = m[1];
  }
  return versionCache;
}

const randomSecret = (prefix) => `${prefix}-${crypto.randomBytes(16).toString('hex')}`;

// ---------------------------------------------------------------------------------------------
// 1. Exact metric values

describe('metrics: exact values after a known sequence', () => {
  const KEY_A = randomSecret('sk-obs-team-a');
  const KEY_B = randomSecret('sk-obs-team-b');
  let mock;
  let gw;
  let deadPort;

  before(async () => {
    mock = await startMock();
    deadPort = await closedPort();
    gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "obs-upstream-key"
    deployments: {gpt-4o: gpt4o-prod}
  other:
    provider: openai
    base_url: "${mock.url}"
    api_key: "obs-upstream-key-2"
  down:
    provider: azure
    base_url: "http://127.0.0.1:${deadPort}"
    api_key: "obs-upstream-key"
    connect_timeout_ms: 2000
  tlsbad:
    provider: azure
    base_url: "https://127.0.0.1:${mock.port}"
    api_key: "obs-upstream-key"
    connect_timeout_ms: 2000
  slow:
    provider: azure
    base_url: "${mock.url}"
    api_key: "obs-upstream-key"
    timeout_ms: 300
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "llama-*", upstream: other}
  - {match: "down-*", upstream: down}
  - {match: "tls-*", upstream: tlsbad}
  - {match: "slow-*", upstream: slow}
keys:
  - {name: team-a, key: "${KEY_A}", rpm: 6}
  - {name: team-b, key: "${KEY_B}"}
logging:
  access_log: "off"
`,
    );
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const A = { authorization: `Bearer ${KEY_A}` };
  const B = { authorization: `Bearer ${KEY_B}` };
  const chat = (headers, body = chatBody()) => request(`${gw.url}/v1/chat/completions`, { headers, body });
  const stream = async (headers, body = chatBody('gpt-4o', { stream: true })) => {
    const s = streamRequest(`${gw.url}/v1/chat/completions`, { headers, body });
    const head = await s.response;
    const done = await s.done;
    assert.equal(done.complete, true, 'stream complete');
    return { status: head.status, text: done.body.toString('utf8') };
  };
  let requestsSoFar = 0;

  test('counters, histograms and gauges after 2 chats, a stream, a prompt filter, a filtered stream, a 404, a 401 and a 429', T, async () => {
    // team-a (rpm 6): six admitted requests, then the gateway's own 429.
    assert.equal((await chat(A)).status, 200);
    assert.equal((await chat(A)).status, 200);
    const s = await stream(A);
    assert.equal(s.status, 200);
    assert.ok(s.text.includes('data: [DONE]'), 'stream finished');
    const cf400 = await chat({ ...A, 'x-mock-scenario': 'content-filter-400' });
    assert.equal(cf400.status, 400);
    assert.equal(cf400.json?.error?.code, 'content_filter');
    const fs1 = await stream({ ...A, 'x-mock-scenario': 'filtered-stream' });
    assert.equal(fs1.status, 200);
    assert.ok(fs1.text.includes('"finish_reason":"content_filter"'));
    assert.equal((await chat(A, chatBody('llama-3'))).status, 200, 'the openai upstream');
    const nf = await chat(A, chatBody('mistral-large'));
    assert.equal(nf.status, 404, `no route: ${nf.text}`);
    assert.equal(nf.json?.error?.code, 'model_not_found');
    const unauth = await chat({ authorization: 'Bearer sk-not-a-key-of-this-gateway' });
    assert.equal(unauth.status, 401);
    const limited = await chat(A);
    assert.equal(limited.status, 429, `7th team-a request: ${limited.text}`);
    assert.equal(limited.headers['x-gateway-rate-limited'], 'requests');
    requestsSoFar = 9;

    const { samples: m, text } = await settledMetrics(gw.adminUrl, requestsSoFar);
    const req = (code, model = 'gpt-4o', upstream = 'azure', key = 'team-a') => [
      'llm_gateway_requests_total',
      { endpoint: 'chat_completions', model, upstream, key, code },
    ];
    const cf = (stage, category, severity, filtered, expected) => [
      'llm_gateway_content_filter_total',
      { stage, category, severity, filtered },
      expected,
    ];
    const hist = { endpoint: 'chat_completions', model: 'gpt-4o', upstream: 'azure' };
    assertMetrics(
      m,
      [
        [...req('200'), 4], // 2 chats, the stream, the filtered stream
        [...req('400'), 1],
        [...req('429'), 1], // rate limiting runs after routing: model and upstream are known
        [...req('200', 'llama-*', 'other'), 1],
        [...req('404', 'none', 'none'), 1],
        // usage: the 2 chats and the stream (11 prompt / 7 completion each); the 400 and the
        // filtered stream carry none
        ['llm_gateway_tokens_total', { model: 'gpt-4o', key: 'team-a', type: 'prompt' }, 33],
        ['llm_gateway_tokens_total', { model: 'gpt-4o', key: 'team-a', type: 'completion' }, 21],
        ['llm_gateway_tokens_total', { model: 'llama-*', key: 'team-a', type: 'prompt' }, 11],
        ['llm_gateway_tokens_total', { model: 'llama-*', key: 'team-a', type: 'completion' }, 7],
        ['llm_gateway_rate_limited_total', { key: 'team-a', limit: 'requests' }, 1],
        ['llm_gateway_upstream_responses_total', { upstream: 'azure', code: '200' }, 4],
        ['llm_gateway_upstream_responses_total', { upstream: 'azure', code: '400' }, 1],
        ['llm_gateway_upstream_responses_total', { upstream: 'other', code: '200' }, 1],
        // whole-request histogram: every request of the label set, the 429 included
        ['llm_gateway_request_duration_seconds_count', hist, 6],
        ['llm_gateway_request_duration_seconds_bucket', { ...hist, le: '+Inf' }, 6],
        ['llm_gateway_request_duration_seconds_count', { endpoint: 'chat_completions', model: 'llama-*', upstream: 'other' }, 1],
        // first byte: only requests an upstream answered
        ['llm_gateway_upstream_first_byte_seconds_count', hist, 5],
        ['llm_gateway_upstream_first_byte_seconds_count', { endpoint: 'chat_completions', model: 'llama-*', upstream: 'other' }, 1],
        ['llm_gateway_overhead_seconds_count', { endpoint: 'chat_completions' }, 6],
        // content filter, one count per request, stage and category with the highest severity:
        // prompt: 3 chats (gpt-4o x2 and llama, 6 categories each: hate, sexual, violence,
        // self_harm safe; jailbreak and custom_blocklists without severity), the stream and the
        // filtered stream (4 safe each), the 400 (4 + self_harm medium filtered)
        cf('prompt', 'hate', 'safe', 'false', 6),
        cf('prompt', 'sexual', 'safe', 'false', 6),
        cf('prompt', 'violence', 'safe', 'false', 6),
        cf('prompt', 'self_harm', 'safe', 'false', 5),
        cf('prompt', 'self_harm', 'medium', 'true', 1),
        cf('prompt', 'jailbreak', 'none', 'false', 4),
        cf('prompt', 'custom_blocklists', 'none', 'false', 3),
        // completion: 3 chats (6 categories), the stream (3 annotated chunks, counted once), the
        // filtered stream (4 safe + protected_material_text detected and filtered)
        cf('completion', 'hate', 'safe', 'false', 5),
        cf('completion', 'sexual', 'safe', 'false', 5),
        cf('completion', 'violence', 'safe', 'false', 5),
        cf('completion', 'self_harm', 'safe', 'false', 5),
        cf('completion', 'protected_material_code', 'none', 'false', 3),
        cf('completion', 'protected_material_text', 'none', 'false', 3),
        cf('completion', 'protected_material_text', 'none', 'true', 1),
        ['llm_gateway_content_filtered_requests_total', { stage: 'prompt', key: 'team-a' }, 1],
        ['llm_gateway_content_filtered_requests_total', { stage: 'completion', key: 'team-a' }, 1],
        ['llm_gateway_in_flight_requests', {}, 0],
        ['llm_gateway_active_streams', {}, 0],
        ['llm_gateway_build_info', { version: await gatewayVersion() }, 1],
      ],
      text,
    );

    // The 401: authentication runs first, so neither model nor upstream is known.
    const unauthSeries = series(m, 'llm_gateway_requests_total', { code: '401' });
    assert.equal(unauthSeries.length, 1, `one 401 series:\n${text}`);
    assert.deepEqual({ ...unauthSeries[0].labels, endpoint: undefined }, {
      code: '401', key: 'unauthenticated', model: 'none', upstream: 'none', endpoint: undefined,
    });
    assert.equal(unauthSeries[0].value, 1);
    // Every request series: exactly the ones above, nothing else.
    assert.equal(series(m, 'llm_gateway_requests_total').length, 6, `request series:\n${text}`);
    assert.equal(metricSum(m, 'llm_gateway_request_duration_seconds_count', { model: 'none', upstream: 'none' }), 2, 'the 404 and the 401');
    assert.equal(metricSum(m, 'llm_gateway_content_filter_total', { filtered: 'true' }), 2, 'two filtered results');
    assert.equal(series(m, 'llm_gateway_tokens_total').length, 4, `token series:\n${text}`);
    assert.equal(metricSum(m, 'llm_gateway_upstream_errors_total'), 0, 'no upstream errors yet');
    assert.equal(metricSum(m, 'llm_gateway_rate_limited_total'), 1);

    // Histogram buckets: cumulative, the overhead's smallest boundary 10 µs.
    const le = (s) => (s.labels.le === '+Inf' ? Infinity : Number(s.labels.le));
    const overhead = series(m, 'llm_gateway_overhead_seconds_bucket', { endpoint: 'chat_completions' }).sort((a, b) => le(a) - le(b));
    assert.ok(overhead.length > 2, 'overhead buckets');
    assert.equal(le(overhead[0]), 1e-5, `smallest overhead bucket is 10 µs, printed ${overhead[0].labels.le}`);
    assert.ok(overhead.some((s) => s.labels.le === '1e-05'), 'le="1e-05" (prometheus-cpp prints 0.00001 so)');
    assert.equal(overhead.at(-1).labels.le, '+Inf');
    assert.equal(overhead.at(-1).value, 6);
    for (let i = 1; i < overhead.length; i++) assert.ok(overhead[i].value >= overhead[i - 1].value, 'buckets are cumulative');
    const durBuckets = series(m, 'llm_gateway_request_duration_seconds_bucket', hist).sort((a, b) => le(a) - le(b));
    for (let i = 1; i < durBuckets.length; i++) assert.ok(durBuckets[i].value >= durBuckets[i - 1].value, 'duration buckets are cumulative');
    assert.ok(metric(m, 'llm_gateway_request_duration_seconds_sum', hist) > 0);

    // Pooled connections after the requests.
    assert.ok(metric(m, 'llm_gateway_upstream_connections', { upstream: 'azure', state: 'idle' }) >= 1, `idle azure connection:\n${text}`);
    assert.equal(metric(m, 'llm_gateway_upstream_connections', { upstream: 'azure', state: 'active' }), 0);
    assert.ok(metric(m, 'llm_gateway_upstream_connections', { upstream: 'other', state: 'idle' }) >= 1);
  });

  test('a stream of many annotated chunks counts once per category and request', T, async () => {
    const before = (await settledMetrics(gw.adminUrl, requestsSoFar)).samples;
    // Every event split in two writes 5 ms apart: the gateway sees the annotations in pieces.
    const s = await stream({ ...B, 'x-mock-split-ms': '5' });
    assert.equal(s.status, 200);
    const annotated = parseSSE(s.text).filter((e) => e.data.includes('"content_filter_results":{"hate"'));
    assert.ok(annotated.length >= 3, `several annotated chunks (${annotated.length})`);
    requestsSoFar += 1;
    const after = (await settledMetrics(gw.adminUrl, requestsSoFar)).samples;
    const delta = (stage, category, severity = 'safe', filtered = 'false') => {
      const l = { stage, category, severity, filtered };
      return (metric(after, 'llm_gateway_content_filter_total', l) ?? 0) - (metric(before, 'llm_gateway_content_filter_total', l) ?? 0);
    };
    for (const c of ['hate', 'sexual', 'violence', 'self_harm']) {
      assert.equal(delta('prompt', c), 1, `prompt ${c}`);
      assert.equal(delta('completion', c), 1, `completion ${c}: once, not once per chunk`);
    }
    assert.equal(metricSum(after, 'llm_gateway_content_filter_total') - metricSum(before, 'llm_gateway_content_filter_total'), 8);
    assert.equal(metric(after, 'llm_gateway_tokens_total', { model: 'gpt-4o', key: 'team-b', type: 'prompt' }), 11);
    assert.equal(metric(after, 'llm_gateway_tokens_total', { model: 'gpt-4o', key: 'team-b', type: 'completion' }), 7);
  });

  test('gauges while a stream is held: in flight 1, active streams 1, one active upstream connection; 0 after', T, async () => {
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { ...B, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chatBody('gpt-4o', { stream: true }),
    });
    assert.equal((await s.response).status, 200);
    await s.waitFor((t) => t.includes('\n\n'));
    await mock.waitGated(tag);
    const during = await fetchMetrics(gw.adminUrl);
    assert.equal(metric(during.samples, 'llm_gateway_in_flight_requests', {}), 1, during.text);
    assert.equal(metric(during.samples, 'llm_gateway_active_streams', {}), 1, during.text);
    assert.equal(metric(during.samples, 'llm_gateway_upstream_connections', { upstream: 'azure', state: 'active' }), 1, during.text);
    mock.release(tag);
    assert.equal((await s.done).complete, true);
    requestsSoFar += 1;
    const { samples: m, text } = await settledMetrics(gw.adminUrl, requestsSoFar);
    assert.equal(metric(m, 'llm_gateway_active_streams', {}), 0, text);
    assert.equal(metric(m, 'llm_gateway_upstream_connections', { upstream: 'azure', state: 'active' }), 0, text);
  });

  test('gauges go back to 0 when the client goes away mid-stream or before the first byte', T, async () => {
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { ...B, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chatBody('gpt-4o', { stream: true }),
    });
    await s.waitFor((t) => t.includes('\n\n'));
    await mock.waitGated(tag);
    s.abort();
    const id = uid();
    const h = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { ...B, 'x-mock-scenario': 'hang', 'x-test-id': id },
      body: chatBody(),
    });
    const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
    h.abort();
    await mock.waitAborted(rec);
    mock.release(tag);
    requestsSoFar += 2;
    let last;
    await eventually(
      async () => {
        last = await fetchMetrics(gw.adminUrl);
        const m = last.samples;
        return (
          metric(m, 'llm_gateway_in_flight_requests', {}) === 0 &&
          metric(m, 'llm_gateway_active_streams', {}) === 0 &&
          metric(m, 'llm_gateway_upstream_connections', { upstream: 'azure', state: 'active' }) === 0
        );
      },
      { timeoutMs: 3000, what: 'in flight, active streams and active connections back to 0' },
    ).catch((e) => {
      e.message += `\n${last?.text}`;
      throw e;
    });
    // Both are counted once (the one that got no response at all is counted today with code "0").
    const m = last.samples;
    assert.equal(metricSum(m, 'llm_gateway_requests_total'), requestsSoFar, last.text);
  });

  test('upstream errors by kind: connect (closed port), tls (https to a plain server), timeout (hang, timeout_ms 300)', T, async () => {
    const down = await chat(B, chatBody('down-1'));
    assert.equal(down.status, 502, down.text);
    assert.equal(down.json?.error?.code, 'upstream_unreachable');
    const tls = await chat(B, chatBody('tls-1'));
    assert.equal(tls.status, 502, tls.text);
    assert.equal(tls.json?.error?.code, 'upstream_tls_error');
    const hang = await chat({ ...B, 'x-mock-scenario': 'hang' }, chatBody('slow-1'));
    assert.equal(hang.status, 504, hang.text);
    assert.equal(hang.json?.error?.code, 'upstream_timeout');
    requestsSoFar += 3;
    const { samples: m, text } = await settledMetrics(gw.adminUrl, requestsSoFar);
    assertMetrics(
      m,
      [
        ['llm_gateway_upstream_errors_total', { upstream: 'down', kind: 'connect' }, 1],
        ['llm_gateway_upstream_errors_total', { upstream: 'tlsbad', kind: 'tls' }, 1],
        ['llm_gateway_upstream_errors_total', { upstream: 'slow', kind: 'timeout' }, 1],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'down-*', upstream: 'down', key: 'team-b', code: '502' }, 1],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'tls-*', upstream: 'tlsbad', key: 'team-b', code: '502' }, 1],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'slow-*', upstream: 'slow', key: 'team-b', code: '504' }, 1],
        ['llm_gateway_request_duration_seconds_count', { endpoint: 'chat_completions', model: 'slow-*', upstream: 'slow' }, 1],
      ],
      text,
    );
    assert.equal(metricSum(m, 'llm_gateway_upstream_errors_total'), 3, text);
    assert.equal(series(m, 'llm_gateway_upstream_responses_total', { upstream: 'down' }).length, 0, 'no response from a closed port');
    assert.equal(series(m, 'llm_gateway_upstream_first_byte_seconds_count', { upstream: 'slow' }).length, 0, 'no first byte from a hung upstream');
  });

  test('a stream cut by timeout_ms: 200 counted, one timeout error, no active stream left', T, async () => {
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { ...B, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chatBody('slow-2', { stream: true }),
    });
    assert.equal((await s.response).status, 200);
    const done = await s.done;
    assert.equal(done.complete, false, 'the client sees the stream cut');
    mock.release(tag);
    requestsSoFar += 1;
    const { samples: m, text } = await settledMetrics(gw.adminUrl, requestsSoFar);
    assertMetrics(
      m,
      [
        ['llm_gateway_upstream_errors_total', { upstream: 'slow', kind: 'timeout' }, 2],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'slow-*', upstream: 'slow', key: 'team-b', code: '200' }, 1],
        ['llm_gateway_upstream_responses_total', { upstream: 'slow', code: '200' }, 1],
        ['llm_gateway_active_streams', {}, 0],
        ['llm_gateway_in_flight_requests', {}, 0],
      ],
      text,
    );
  });

  test('the 401 of a chat request is labelled endpoint="chat_completions" (the endpoint comes from the path)', T, async () => {
    // The endpoint is a property of the path, which the client chose and which reveals nothing
    // about keys; the access log shows the path, so the metrics should agree with it.
    const before = (await settledMetrics(gw.adminUrl, requestsSoFar)).samples;
    const res = await chat({ authorization: 'Bearer sk-still-not-a-key' });
    assert.equal(res.status, 401);
    requestsSoFar += 1;
    const { samples: m } = await settledMetrics(gw.adminUrl, requestsSoFar);
    const l = { endpoint: 'chat_completions', model: 'none', upstream: 'none', key: 'unauthenticated', code: '401' };
    assert.equal(
      (metric(m, 'llm_gateway_requests_total', l) ?? 0) - (metric(before, 'llm_gateway_requests_total', l) ?? 0),
      1,
      `401 on POST /v1/chat/completions counted under ${JSON.stringify(l)}; got:\n${series(m, 'llm_gateway_requests_total', { code: '401' })
        .map((s) => JSON.stringify(s.labels) + ' ' + s.value)
        .join('\n')}`,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Bounded label values

describe('metrics: label values a client invents do not become series', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
    deployments: {gpt-4o: gpt4o-prod}
  other:
    provider: openai
    base_url: "${mock.url}"
    api_key: "k2"
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "o1", upstream: other}
  - {match: "*", upstream: other}
logging:
  access_log: "off"
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const send = async (model, status = 200) => {
    const res = await request(`${gw.url}/v1/chat/completions`, { body: chatBody(model) });
    assert.equal(res.status, status, `${model}: ${res.text}`);
  };

  test('the model label is the configured name or the route pattern, never the name sent', T, async () => {
    for (const model of ['gpt-4o', 'gpt-4o-invented-1', 'gpt-4o-invented-2', 'llama-whatever', 'o1']) await send(model);
    const first = await settledMetrics(gw.url, 5);
    const m = first.samples;
    const key = 'anonymous';
    assertMetrics(
      m,
      [
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'gpt-4o', upstream: 'azure', key, code: '200' }, 1],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'gpt-4o*', upstream: 'azure', key, code: '200' }, 2],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: '*', upstream: 'other', key, code: '200' }, 1],
        ['llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'o1', upstream: 'other', key, code: '200' }, 1],
        ['llm_gateway_tokens_total', { model: 'gpt-4o*', key, type: 'prompt' }, 22],
        ['llm_gateway_tokens_total', { model: '*', key, type: 'completion' }, 7],
      ],
      first.text,
    );
    assert.ok(!first.text.includes('invented'), `no invented model name in /metrics:\n${first.text}`);
    assert.ok(!first.text.includes('llama'), 'no invented model name in /metrics');
    const count = (s) => ({
      requests: series(s, 'llm_gateway_requests_total').length,
      duration: series(s, 'llm_gateway_request_duration_seconds_count').length,
      firstByte: series(s, 'llm_gateway_upstream_first_byte_seconds_count').length,
      tokens: series(s, 'llm_gateway_tokens_total').length,
      lines: s.length,
    });
    const before = count(m);
    assert.equal(before.requests, 4);

    // More invented names, some of them shaped like label syntax or reserved values.
    const invented = [
      ...Array.from({ length: 8 }, (_, i) => `gpt-4o-invented-${i + 3}-${crypto.randomBytes(3).toString('hex')}`),
      ...Array.from({ length: 8 }, (_, i) => `made-up-${i}-${crypto.randomBytes(3).toString('hex')}`),
      'none',
      '*',
      'x"} 1\nllm_gateway_injected_total{a="b',
    ];
    for (const model of invented) await send(model);
    const second = await settledMetrics(gw.url, 5 + invented.length);
    assert.deepEqual(count(second.samples), before, 'no new series, no new lines');
    // Names the azure route matches but no deployment can have are refused (400 invalid_model):
    // one new status series, and still no new model label.
    for (const model of ['gpt-4o*', 'gpt-4o\\"']) await send(model, 400);
    const third = await settledMetrics(gw.url, 5 + invented.length + 2);
    assert.equal(
      metric(third.samples, 'llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'gpt-4o*', upstream: 'azure', key: 'anonymous', code: '400' }),
      2,
    );
    assert.deepEqual(
      [...new Set(series(third.samples, 'llm_gateway_requests_total').map((s) => s.labels.model))].sort(),
      ['*', 'gpt-4o', 'gpt-4o*', 'o1'].sort(),
    );
    assert.ok(!second.text.includes('injected'), 'a model name cannot inject a metric');
    assert.ok(!second.text.includes('made-up') && !second.text.includes('invented'), 'no invented name');
    const models = new Set(series(second.samples, 'llm_gateway_requests_total').map((s) => s.labels.model));
    assert.deepEqual([...models].sort(), ['*', 'gpt-4o', 'gpt-4o*', 'o1'].sort());
    assert.equal(
      metric(second.samples, 'llm_gateway_requests_total', { endpoint: 'chat_completions', model: '*', upstream: 'other', key: 'anonymous', code: '200' }),
      1 + 8 + 2 + 1, // llama-whatever, made-up-*, none, *, the injection attempt
    );
  });
});

// ---------------------------------------------------------------------------------------------
// 3. /metrics access

describe('metrics endpoint: admin token and listener', () => {
  const ADMIN_TOKEN = randomSecret('adm');
  let mock;
  before(async () => {
    mock = await startMock();
  }, HOOK);
  after(async () => {
    await mock?.close();
  });
  const upstreams = () => `
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
routes:
  - {match: "gpt-4o*", upstream: azure}
logging:
  access_log: "off"
`;

  test('with admin.token: 401 without the token or with a wrong one, metrics with Bearer <token>; probes stay open', T, async (t) => {
    const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
  token: "${ADMIN_TOKEN}"
${upstreams()}`, { t });
    assert.ok(gw.adminUrl);
    for (const headers of [
      {},
      { authorization: 'Bearer wrong-token' },
      { authorization: ADMIN_TOKEN }, // no "Bearer "
      { authorization: `Bearer ${ADMIN_TOKEN}x` },
      { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` },
      { authorization: `Basic ${Buffer.from(`u:${ADMIN_TOKEN}`).toString('base64')}` },
      { 'api-key': ADMIN_TOKEN },
    ]) {
      const res = await request(`${gw.adminUrl}/metrics`, { headers });
      assert.equal(res.status, 401, `${JSON.stringify(headers)} -> ${res.status}`);
      assert.ok(!res.text.includes('llm_gateway_'), `no metric text in the 401: ${res.text}`);
      assert.ok(!res.text.includes(ADMIN_TOKEN), 'the token is not echoed');
    }
    const ok = await request(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.match(String(ok.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(ok.text, /^# TYPE llm_gateway_in_flight_requests gauge$/m);
    assert.equal(metric(parseMetrics(ok.text), 'llm_gateway_build_info', { version: await gatewayVersion() }), 1);
    for (const base of [gw.adminUrl, gw.url]) {
      for (const p of ['/healthz', '/readyz']) {
        const res = await request(`${base}${p}`);
        assert.equal(res.status, 200, `${base}${p} open without a token`);
      }
    }
    // The main listener does not serve the admin listener's metrics.
    const main = await request(`${gw.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.notEqual(main.status, 200, `main listener /metrics: ${main.status}`);
    assert.ok(!main.text.includes('llm_gateway_'), 'no metric text on the main listener');
  });

  test('admin without a token: /metrics is open on the admin listener', T, async (t) => {
    const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
admin:
  listen: "127.0.0.1:0"
${upstreams()}`, { t });
    const res = await request(`${gw.adminUrl}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.text, /^llm_gateway_in_flight_requests 0$/m);
  });

  test('no admin section: /metrics, /healthz and /readyz on the main listener', T, async (t) => {
    const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
${upstreams()}`, { t });
    assert.equal(gw.adminUrl, null);
    assert.equal((await request(`${gw.url}/v1/chat/completions`, { body: chatBody() })).status, 200);
    const { samples, text } = await settledMetrics(gw.url, 1);
    assert.equal(
      metric(samples, 'llm_gateway_requests_total', { endpoint: 'chat_completions', model: 'gpt-4o*', upstream: 'azure', key: 'anonymous', code: '200' }),
      1,
      text,
    );
    assert.equal((await request(`${gw.url}/healthz`)).status, 200);
    assert.equal((await request(`${gw.url}/readyz`)).status, 200);
    // /metrics itself is not a request of the data plane: fetching it again changes no counter.
    const again = await fetchMetrics(gw.url);
    assert.equal(metricSum(again.samples, 'llm_gateway_requests_total'), 1);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Access log

describe('access log on stdout', () => {
  const KEY_A = randomSecret('sk-log-a');
  const KEY_LIM = randomSecret('sk-log-lim');
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "log-upstream"
    deployments: {gpt-4o: gpt4o-prod}
routes:
  - {match: "gpt-4o*", upstream: azure}
keys:
  - {name: team-a, key: "${KEY_A}"}
  - {name: team-lim, key: "${KEY_LIM}", rpm: 1}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const A = { authorization: `Bearer ${KEY_A}` };
  /** A request with its own x-request-id; resolves with the response, its access-log line and timing. */
  const logged = async (headers, body, { stream = false, pathname = '/v1/chat/completions' } = {}) => {
    const id = uid('req');
    const t0 = Date.now();
    let res;
    if (stream) {
      const s = streamRequest(`${gw.url}${pathname}`, { headers: { 'x-request-id': id, ...headers }, body });
      const head = await s.response;
      const done = await s.done;
      res = { status: head.status, headers: head.headers, body: done.body, text: done.body.toString('utf8') };
    } else {
      res = await request(`${gw.url}${pathname}`, { headers: { 'x-request-id': id, ...headers }, body });
    }
    const t1 = Date.now();
    const line = await stdoutLine(gw, id);
    assertLineShape(line);
    assertTiming(line, t0, t1);
    assert.equal(line.request_id, res.headers['x-gateway-request-id'], 'request_id is the x-gateway-request-id');
    assert.equal(line.status, res.status, 'status as sent');
    return { res, line, id };
  };

  test('a normal request: every field, with its value', T, async () => {
    const traceId = crypto.randomBytes(16).toString('hex');
    const id = uid('req');
    const body = Buffer.from(JSON.stringify(chatBody()));
    const raw = rawPost('/v1/chat/completions', { ...A, 'x-request-id': id, 'user-agent': 'obs-test/1.0', traceparent: `00-${traceId}-${crypto.randomBytes(8).toString('hex')}-01` }, JSON.parse(body));
    const t0 = Date.now();
    const { bytes, localPort } = await rawExchange(gw.port, raw);
    const t1 = Date.now();
    const text = bytes.toString('utf8');
    assert.match(text, /^HTTP\/1\.1 200 /);
    const apim = /\r\napim-request-id: ([^\r]+)\r\n/i.exec(text)?.[1];
    assert.ok(apim, 'the mock sent apim-request-id');
    assert.match(text, new RegExp(`\\r\\nx-gateway-request-id: ${id}\\r\\n`, 'i'));

    const line = await stdoutLine(gw, id);
    assertLineShape(line);
    assertTiming(line, t0, t1);
    assert.deepEqual(
      { ...line, ts: undefined, duration_ms: undefined, upstream_first_byte_ms: undefined, overhead_us: undefined },
      {
        ts: undefined,
        request_id: id,
        key: 'team-a',
        method: 'POST',
        path: '/v1/chat/completions',
        endpoint: 'chat_completions',
        model: 'gpt-4o',
        upstream: 'azure',
        deployment: 'gpt4o-prod',
        attempts: [{ upstream: 'azure', status: 200, duration_ms: line.attempts[0]?.duration_ms }],
        status: 200,
        stream: false,
        bytes_in: raw.length,
        bytes_out: bytes.length,
        duration_ms: undefined,
        upstream_first_byte_ms: undefined,
        overhead_us: undefined,
        prompt_tokens: 11,
        completion_tokens: 7,
        total_tokens: 18,
        finish_reason: 'stop',
        // every annotation "safe": nothing listed (the README allows null or empty lists)
        content_filter: line.content_filter === null ? null : { prompt: [], completion: [] },
        error: null,
        cut: null,
        upstream_request_id: apim,
        client: `127.0.0.1:${localPort}`,
        user_agent: 'obs-test/1.0',
        trace_id: traceId,
      },
    );
    assert.equal(typeof line.upstream_first_byte_ms, 'number');
    assert.equal(typeof line.overhead_us, 'number');
  });

  test('a streamed request: stream true, usage from the stream, bytes_out = what the client received', T, async () => {
    const id = uid('req');
    const raw = rawPost('/v1/chat/completions', { ...A, 'x-request-id': id }, chatBody('gpt-4o', { stream: true }));
    const { bytes } = await rawExchange(gw.port, raw);
    assert.match(bytes.toString('utf8'), /^HTTP\/1\.1 200 [\s\S]*data: \[DONE\]/);
    const line = await stdoutLine(gw, id);
    assertLineShape(line);
    assert.equal(line.stream, true);
    assert.equal(line.status, 200);
    assert.equal(line.bytes_in, raw.length, 'bytes_in: request line, headers and body');
    assert.equal(line.bytes_out, bytes.length, 'bytes_out: status line, headers and the chunked body');
    assert.deepEqual([line.prompt_tokens, line.completion_tokens, line.total_tokens], [11, 7, 18]);
    assert.equal(line.finish_reason, 'stop');
    assert.equal(typeof line.upstream_first_byte_ms, 'number');
    assert.equal(line.error, null);
    assert.equal(line.trace_id, null);
    assert.equal(line.user_agent, null);
    assert.ok(line.upstream_request_id);
  });

  test('a generated request id is the one logged', T, async () => {
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: A, body: chatBody() });
    assert.equal(res.status, 200);
    const id = res.headers['x-gateway-request-id'];
    assert.ok(id);
    const line = await stdoutLine(gw, id);
    assert.equal(line.upstream_request_id, res.headers['apim-request-id']);
  });

  test('the prompt filtered (400 content_filter): content_filter lists self_harm, no tokens, no gateway error', T, async () => {
    const { res, line } = await logged({ ...A, 'x-mock-scenario': 'content-filter-400' }, chatBody());
    assert.equal(res.status, 400);
    assert.deepEqual(line.content_filter, { prompt: ['self_harm'], completion: [] });
    assert.equal(line.error, null, 'an upstream error, not the gateway\'s');
    assert.equal(line.upstream_request_id, res.headers['apim-request-id']);
    assert.deepEqual([line.prompt_tokens, line.completion_tokens, line.total_tokens, line.finish_reason], [null, null, null, null]);
    assert.equal(line.stream, false);
    assert.equal(line.model, 'gpt-4o');
    assert.equal(line.upstream, 'azure');
  });

  test('a stream cut by the filter: completion lists protected_material_text, finish_reason content_filter', T, async () => {
    const { res, line } = await logged({ ...A, 'x-mock-scenario': 'filtered-stream' }, chatBody('gpt-4o', { stream: true }), { stream: true });
    assert.equal(res.status, 200);
    assert.equal(line.stream, true);
    assert.deepEqual(line.content_filter, { prompt: [], completion: ['protected_material_text'] });
    assert.equal(line.finish_reason, 'content_filter');
    assert.equal(line.upstream_request_id, res.headers['apim-request-id']);
  });

  test('a 429 from the gateway: error rate_limit_exceeded, nothing from an upstream', T, async () => {
    const L = { authorization: `Bearer ${KEY_LIM}` };
    const first = await logged(L, chatBody());
    assert.equal(first.res.status, 200);
    const { res, line } = await logged(L, chatBody());
    assert.equal(res.status, 429);
    assert.equal(line.key, 'team-lim');
    assert.equal(line.error, 'rate_limit_exceeded');
    assert.equal(line.model, 'gpt-4o');
    assert.deepEqual(line.attempts, [], 'refused before the router: no upstream attempt');
    assert.deepEqual(
      [line.upstream_first_byte_ms, line.overhead_us, line.upstream_request_id, line.prompt_tokens, line.completion_tokens, line.total_tokens, line.finish_reason, line.content_filter],
      [null, null, null, null, null, null, null, null],
    );
    assert.equal(line.stream, false);
  });

  test('a 401: key unauthenticated, error invalid_api_key, nothing known about model or upstream', T, async () => {
    const { res, line } = await logged({ authorization: 'Bearer sk-wrong-wrong-wrong' }, chatBody());
    assert.equal(res.status, 401);
    assert.equal(line.key, 'unauthenticated');
    assert.equal(line.error, 'invalid_api_key');
    assert.equal(line.path, '/v1/chat/completions');
    assert.equal(line.method, 'POST');
    assert.deepEqual(
      [line.model, line.upstream, line.deployment, line.upstream_first_byte_ms, line.overhead_us, line.upstream_request_id, line.prompt_tokens, line.finish_reason, line.content_filter],
      [null, null, null, null, null, null, null, null, null],
    );
  });

  test('a 404 (no route): model as sent, upstream and deployment null, error model_not_found', T, async () => {
    const { res, line } = await logged(A, chatBody('mistral-large'));
    assert.equal(res.status, 404);
    assert.equal(line.model, 'mistral-large');
    assert.equal(line.upstream, null);
    assert.equal(line.deployment, null);
    assert.equal(line.error, 'model_not_found');
    assert.equal(line.key, 'team-a');
  });

  test('the model is cut at 256 characters; the path has no query string', T, async () => {
    const model = 'gpt-4o-' + 'm'.repeat(293);
    assert.equal(model.length, 300);
    const { res, line } = await logged(A, chatBody(model), { pathname: '/v1/chat/completions?foo=bar&secret=1' });
    assert.equal(res.status, 200);
    assert.equal(line.model, model.slice(0, 256));
    assert.equal(line.path, '/v1/chat/completions');
  });

  test('an invalid traceparent gives trace_id null', T, async () => {
    for (const tp of ['garbage', `00-${'0'.repeat(32)}-${'1'.repeat(16)}-01`, `00-${'G'.repeat(32)}-${'1'.repeat(16)}-01`]) {
      const { line } = await logged({ ...A, traceparent: tp }, chatBody());
      assert.equal(line.trace_id, null, `traceparent ${tp}`);
    }
  });

  test('GET /v1/models (answered by the gateway): endpoint models, nothing from an upstream', T, async () => {
    const { res, line } = await logged(A, undefined, { pathname: '/v1/models' });
    assert.equal(res.status, 200);
    assert.equal(line.method, 'GET');
    assert.equal(line.path, '/v1/models');
    assert.equal(line.endpoint, 'models');
    assert.equal(line.key, 'team-a');
    assert.deepEqual(
      [line.model, line.upstream, line.deployment, line.upstream_first_byte_ms, line.overhead_us, line.upstream_request_id, line.error, line.content_filter],
      [null, null, null, null, null, null, null, null],
    );
  });

  test('health probes and /metrics produce no access-log line', T, async () => {
    const probeIds = [];
    for (const p of ['/healthz', '/readyz', '/metrics']) {
      const id = uid('probe');
      probeIds.push(id);
      const res = await request(`${gw.url}${p}`, { headers: { 'x-request-id': id } });
      assert.equal(res.status, 200, p);
    }
    // The writer keeps order: once a later request's line is there, a probe's would be too.
    const { line } = await logged(A, chatBody());
    assert.ok(line);
    const lines = jsonLines(gw.stdout);
    for (const id of probeIds) assert.ok(!lines.some((o) => o.request_id === id), `no line for probe ${id}`);
    assert.ok(!lines.some((o) => ['/healthz', '/readyz', '/metrics'].includes(o.path)), 'no probe paths in the access log');
    // stdout carries nothing but access-log lines; diagnostics go to stderr.
    for (const l of gw.stdout) assert.ok(jsonLines([l]).length === 1 && 'request_id' in JSON.parse(l), `stdout line is an access-log line: ${l}`);
    for (const o of gw.logs) assert.ok(!('request_id' in o && 'bytes_out' in o), 'no access-log line on stderr');
  });
});

test('attempts: a GET whose pooled connection was dead is logged with both of its attempts', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
routes:
  - {match: "*", upstream: azure}
`, { t });
  // One keep-alive client connection, so both requests run on one worker and share its pool.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const get = async (headers) => {
    const id = uid('att');
    const res = await request(`${gw.url}/v1/files`, { headers: { 'x-request-id': id, ...headers }, agent });
    const line = await stdoutLine(gw, id);
    assertLineShape(line);
    return { res, line, id };
  };
  const warm = await get({});
  assert.equal(warm.res.status, 200, warm.res.text);
  assert.deepEqual(warm.line.attempts.map((a) => [a.upstream, a.status]), [['azure', 200]]);
  // The mock drops the pooled connection the moment this request arrives on it: a GET is sent
  // once more, on a new connection, and the log shows both attempts.
  const { res, line, id } = await get({ 'x-mock-scenario': 'reset-if-reused' });
  assert.equal(res.status, 200, res.text);
  assert.equal(mock.requests.filter((r) => r.headers['x-request-id'] === id).length, 2, 'the upstream saw two attempts');
  assert.deepEqual(line.attempts.map(({ upstream, status, error }) => ({ upstream, status, error })), [
    { upstream: 'azure', status: undefined, error: 'reset' },
    { upstream: 'azure', status: 200, error: undefined },
  ]);
  assert.equal(line.status, 200);
  assert.equal(line.error, null, 'the request itself succeeded');
});

test('a 413 (body over max_body_bytes) is logged with its method, path and the client\'s request id', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
  max_body_bytes: 1000
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
routes:
  - {match: "gpt-4o*", upstream: azure}
`, { t });
  const problems = [];
  for (const chunked of [false, true]) {
    const how = chunked ? 'chunked body' : 'Content-Length';
    const id = uid('big');
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-request-id': id },
      body: chatBody('gpt-4o', { messages: [{ role: 'user', content: 'x'.repeat(2000) }] }),
      chunked,
    });
    assert.equal(res.status, 413, `${how}: ${res.text}`);
    assert.equal(res.json?.error?.code, 'request_too_large');
    const rid = res.headers['x-gateway-request-id'];
    assert.ok(rid, 'x-gateway-request-id on the 413');
    const line = await stdoutLine(gw, rid);
    assertLineShape(line);
    assert.equal(line.status, 413);
    assert.equal(line.error, 'request_too_large');
    // The README: every response carries the client's own x-request-id as x-gateway-request-id.
    if (rid !== id) problems.push(`${how}: x-gateway-request-id is ${rid}, not the client's x-request-id ${id}`);
    if (line.method !== 'POST') problems.push(`${how}: access-log method ${JSON.stringify(line.method)}, the request was a POST`);
    if (line.path !== '/v1/chat/completions') problems.push(`${how}: access-log path ${JSON.stringify(line.path)}, expected "/v1/chat/completions"`);
  }
  assert.deepEqual(problems, [], `the 413's response and access-log line:\n${problems.join('\n')}`);
});

describe('access log to a file', () => {
  let mock;
  let gw;
  let dir;
  let file;
  before(async () => {
    mock = await startMock();
    dir = tmpDir('llmgw-accesslog-');
    file = path.join(dir, 'access.log');
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
routes:
  - {match: "gpt-4o*", upstream: azure}
logging:
  access_log: "${file}"
  bodies: {enabled: true, max_bytes: 64}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const send = async (body = chatBody(), headers = {}) => {
    const id = uid('f');
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': id, ...headers }, body });
    return { id, res };
  };

  test('lines go to the file, not to stdout', T, async () => {
    const { id, res } = await send();
    assert.equal(res.status, 200);
    const line = await fileLine(file, id);
    assertLineShape(line, { bodies: true });
    assert.equal(line.key, 'anonymous');
    assert.equal(gw.stdout.length, 0, `nothing on stdout: ${gw.stdout.join('\n')}`);
  });

  test('bodies: request_body and response_body, cut at max_bytes', T, async () => {
    const body = chatBody('gpt-4o', { messages: [{ role: 'user', content: 'a fairly long prompt, '.repeat(10) }] });
    const sent = Buffer.from(JSON.stringify(body));
    assert.ok(sent.length > 64);
    const { id, res } = await send(body);
    assert.equal(res.status, 200);
    assert.ok(res.body.length > 64);
    const line = await fileLine(file, id);
    assertLineShape(line, { bodies: true });
    assert.equal(line.request_body, sent.subarray(0, 64).toString('utf8'));
    assert.equal(line.response_body, res.body.subarray(0, 64).toString('utf8'));

    // Short bodies whole; a stream's body is what the client received, cut the same way.
    const s = streamRequest(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': (id + '-s') }, body: chatBody('gpt-4o', { stream: true }) });
    const done = await s.done;
    const sline = await fileLine(file, id + '-s');
    assert.equal(sline.stream, true);
    assert.equal(sline.response_body, done.body.subarray(0, 64).toString('utf8'));
    const small = { model: 'gpt-4o' };
    const r2 = await send(small, { 'x-mock-scenario': 'error', 'x-mock-status': '404' });
    assert.equal(r2.res.status, 404);
    const l2 = await fileLine(file, r2.id);
    assert.equal(l2.request_body, JSON.stringify(small));
    assert.equal(l2.response_body, r2.res.body.subarray(0, 64).toString('utf8'));
  });

  test('SIGUSR1 after the file was renamed: new lines go to a new file at the original path', T, async () => {
    const first = await send();
    await fileLine(file, first.id);
    const rotated = `${file}.1`;
    fs.renameSync(file, rotated);
    gw.proc.kill('SIGUSR1');
    // The gateway says nothing when it reopens: send requests until one's line is in the new file.
    let found = null;
    const sentAfter = [];
    const deadline = Date.now() + 3000;
    while (!found && Date.now() < deadline) {
      const { id } = await send();
      sentAfter.push(id);
      found = await fileLine(file, id, 300).catch(() => null);
    }
    assert.ok(found, `a line appeared in a new ${file} within 3 s after SIGUSR1 (sent ${sentAfter.length} requests)`);
    const later = await send();
    await fileLine(file, later.id);
    const oldLines = jsonLines(readLines(rotated));
    const newLines = jsonLines(readLines(file));
    assert.ok(oldLines.some((o) => o.request_id === first.id), 'the line from before the rotation stays in the rotated file');
    assert.ok(!oldLines.some((o) => o.request_id === later.id || o.request_id === found.request_id), 'nothing after the reopen goes to the rotated file');
    assert.ok(!newLines.some((o) => o.request_id === first.id), 'the new file starts fresh');
    for (const l of readLines(file)) JSON.parse(l);
    gw.proc.kill('SIGUSR1'); // a reopen without a rename keeps appending to the same file
    const again = await send();
    await fileLine(file, again.id);
    assert.ok(readLines(file).length >= 3);
  });

  // Lines must be valid UTF-8 JSON (RFC 8259 §8.1) for log shippers, also when a cut at
  // max_bytes or at 256 characters lands inside a multi-byte character.
  const strictDecode = (buf) => new TextDecoder('utf-8', { fatal: true }).decode(buf);
  const rawLineFor = (id) => {
    const buf = fs.readFileSync(file);
    let start = 0;
    for (;;) {
      const end = buf.indexOf(0x0a, start);
      if (end === -1) return null;
      const line = buf.subarray(start, end);
      if (line.includes(Buffer.from(`"request_id":"${id}"`))) return line;
      start = end + 1;
    }
  };
  const assertValidUtf8Line = async (id) => {
    await fileLine(file, id);
    const raw = rawLineFor(id);
    assert.ok(raw, 'the raw line');
    let decoded;
    assert.doesNotThrow(() => {
      decoded = strictDecode(raw);
    }, `the access-log line is valid UTF-8; bytes around the problem: ${raw.toString('latin1').slice(0, 400)}`);
    return JSON.parse(decoded);
  };

  test('request_body cut at max_bytes inside a multi-byte character: the line stays valid UTF-8', T, async () => {
    let pad = '';
    const prefix = (p) => JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: p + 'ééééééééé' }] });
    while (Buffer.from(prefix(pad)).indexOf(Buffer.from('é')) < 63) pad += 'a';
    const body = JSON.parse(prefix(pad));
    assert.equal(Buffer.from(JSON.stringify(body)).indexOf(Buffer.from('é')), 63, 'a 2-byte character across byte 64');
    const { id, res } = await send(body);
    assert.equal(res.status, 200);
    const line = await assertValidUtf8Line(id);
    assert.ok(line.request_body.length <= 64);
  });

  test('a non-ASCII model is cut at 256 characters: a prefix of the model sent, the line valid UTF-8', T, async () => {
    const model = 'gpt-4o-' + 'é'.repeat(293); // 300 characters, 593 bytes
    const { id, res } = await send(chatBody(model));
    // No Azure deployment can be named so (400 invalid_model); the line still logs the model.
    assert.equal(res.status, 400, res.text);
    const line = await assertValidUtf8Line(id);
    assert.ok(!line.model.includes('\uFFFD'), `the logged model is the client's characters, no U+FFFD from a cut character: ...${line.model.slice(-8)}`);
    assert.ok(model.startsWith(line.model), 'the logged model is a prefix of the model sent');
    assert.equal(line.model, model.slice(0, 256), `cut at 256 characters, as the README says (logged ${[...line.model].length} characters, ${Buffer.byteLength(line.model)} bytes)`);
  });
});

test('logging.access_log off: no access-log line anywhere', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
routes:
  - {match: "*", upstream: azure}
logging:
  access_log: "off"
`, { t });
  for (let i = 0; i < 3; i++) assert.equal((await request(`${gw.url}/v1/chat/completions`, { body: chatBody() })).status, 200);
  await settledMetrics(gw.url, 3);
  await gw.stop();
  assert.deepEqual(gw.stdout, [], 'nothing on stdout');
  assert.ok(!gw.logs.some((o) => 'bytes_out' in o), 'no access-log line on stderr');
});

// ---------------------------------------------------------------------------------------------
// 5. Secrets never appear in any output

describe('secrets: client keys, wrong keys, upstream keys and the admin token appear nowhere', () => {
  const CLIENT_KEY = randomSecret('sk-CLIENTKEY');
  const CLIENT_KEY_LIM = randomSecret('sk-CLIENTLIM');
  const WRONG_KEY = randomSecret('sk-WRONGKEY');
  const UPSTREAM_KEY = randomSecret('UPSTREAMKEY');
  const UPSTREAM_KEY_OA = randomSecret('UPSTREAMOAKEY');
  const ADMIN_TOKEN = randomSecret('ADMINTOKEN');
  const REDIS_PASSWORD = randomSecret('REDISPASSWORD');
  const SECRETS = { CLIENT_KEY, CLIENT_KEY_LIM, WRONG_KEY, UPSTREAM_KEY, UPSTREAM_KEY_OA, ADMIN_TOKEN, REDIS_PASSWORD };
  /** The full values and their random cores (a partial leak counts too). */
  const needles = () =>
    Object.entries(SECRETS).flatMap(([name, v]) => {
      const core = v.slice(v.lastIndexOf('-') + 1);
      return [
        [name, v],
        [`${name} (first half of its random part)`, core.slice(0, 16)],
        [`${name} (second half of its random part)`, core.slice(16)],
      ];
    });
  /** Where each output came from, for the failure message. */
  const outputs = [];
  const collect = (where, text) => outputs.push([where, typeof text === 'string' ? text : Buffer.from(text).toString('latin1')]);
  const collectResponse = (what, res) => {
    collect(`${what}: response headers`, (res.rawHeaders || Object.entries(res.headers || {}).flat()).join('\n'));
    collect(`${what}: response body`, res.body ?? res.text ?? '');
  };

  let mock;
  let gw;
  let dir;
  let accessFile;
  before(async () => {
    mock = await startMock();
    dir = tmpDir('llmgw-secrets-');
    accessFile = path.join(dir, 'access.log');
    const dead = await closedPort();
    gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
  threads: 1
admin:
  listen: "127.0.0.1:0"
  token: "${ADMIN_TOKEN}"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "\${OBS_UPSTREAM_KEY}"
    deployments: {gpt-4o: gpt4o-prod}
  oa:
    provider: openai
    base_url: "${mock.url}"
    api_key: "${UPSTREAM_KEY_OA}"
  down:
    provider: azure
    base_url: "http://127.0.0.1:${dead}"
    api_key: "\${OBS_UPSTREAM_KEY}"
    connect_timeout_ms: 2000
  tlsbad:
    provider: azure
    base_url: "https://127.0.0.1:${mock.port}"
    api_key: "\${OBS_UPSTREAM_KEY}"
    connect_timeout_ms: 2000
  slow:
    provider: azure
    base_url: "${mock.url}"
    api_key: "\${OBS_UPSTREAM_KEY}"
    timeout_ms: 300
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "oa-*", upstream: oa}
  - {match: "down-*", upstream: down}
  - {match: "tls-*", upstream: tlsbad}
  - {match: "slow-*", upstream: slow}
  - {match: "*", upstream: oa}
keys:
  - name: team-a
    key: "${CLIENT_KEY}"
    models: ["gpt-4o*", "oa-*", "down-*", "tls-*", "slow-*"]
  - name: team-lim
    key: "\${OBS_CLIENT_KEY_LIM}"
    rpm: 1
logging:
  access_log: "${accessFile}"
  level: debug
  bodies: {enabled: true, max_bytes: 100000}
`,
      { env: { OBS_UPSTREAM_KEY: UPSTREAM_KEY, OBS_CLIENT_KEY_LIM: CLIENT_KEY_LIM } },
    );
  }, HOOK);
  after(async () => {
    await gw?.stop('SIGKILL');
    await mock?.close();
  });

  test('after successes, upstream failures, rejections and --check-config errors, no output holds a secret', { timeout: 60_000 }, async () => {
    const A = { authorization: `Bearer ${CLIENT_KEY}` };
    const chat = async (what, headers, body = chatBody()) => {
      const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': uid('sec'), ...headers }, body });
      collectResponse(what, res);
      return res;
    };
    const expectStatus = (res, status, what) => assert.equal(res.status, status, `${what}: ${res.status} ${res.text}`);
    let n = 0; // requests the gateway counts

    // Successes: Bearer and api-key, azure and openai, plain and streamed.
    expectStatus(await chat('ok bearer', A), 200, 'ok bearer');
    expectStatus(await chat('ok api-key', { 'api-key': CLIENT_KEY }), 200, 'ok api-key');
    expectStatus(await chat('ok openai', A, chatBody('oa-model')), 200, 'ok openai');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, { headers: A, body: chatBody('gpt-4o', { stream: true }) });
    const sh = await s.response;
    const sd = await s.done;
    collectResponse('stream', { headers: sh.headers, body: sd.body });
    expectStatus(sh, 200, 'stream');
    // A pooled connection reset after the request was written: a POST is not re-sent (502); which
    // of the two lands on a pooled connection depends on the worker each connection gets.
    for (const what of ['reset 1', 'reset 2']) {
      const res = await chat(what, { ...A, 'x-mock-scenario': 'reset-if-reused' });
      assert.ok([200, 502].includes(res.status), `${what}: ${res.status} ${res.text}`);
    }
    // Upstream errors relayed: 401, 500, 429 from the upstream.
    expectStatus(await chat('upstream 401', { ...A, 'x-mock-scenario': 'error', 'x-mock-status': '401' }), 401, 'upstream 401');
    expectStatus(await chat('upstream 500', { ...A, 'x-mock-scenario': 'error' }), 500, 'upstream 500');
    expectStatus(await chat('upstream 429', { ...A, 'x-mock-scenario': 'rate-limited' }), 429, 'upstream 429');
    expectStatus(await chat('content filter', { ...A, 'x-mock-scenario': 'content-filter-400' }), 400, 'content filter');
    n += 10;
    // Upstream failures: closed port, TLS to a plain server, timeout, a stream cut by the timeout.
    expectStatus(await chat('connect failure', A, chatBody('down-1')), 502, 'connect failure');
    expectStatus(await chat('tls failure', A, chatBody('tls-1')), 502, 'tls failure');
    expectStatus(await chat('timeout', { ...A, 'x-mock-scenario': 'hang' }, chatBody('slow-1')), 504, 'timeout');
    const tag = uid('gate');
    const cut = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { ...A, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chatBody('slow-2', { stream: true }),
    });
    const ch = await cut.response;
    const cd = await cut.done;
    collectResponse('cut stream', { headers: ch.headers, body: cd.body });
    mock.release(tag);
    n += 4;
    // Rejections: wrong keys in every form, near misses of the real key, 403, 429.
    for (const [what, headers] of [
      ['wrong key bearer', { authorization: `Bearer ${WRONG_KEY}` }],
      ['wrong key api-key', { 'api-key': WRONG_KEY }],
      ['wrong key without Bearer', { authorization: WRONG_KEY }],
      ['real key + x', { authorization: `Bearer ${CLIENT_KEY}x` }],
      ['real key without Bearer', { authorization: CLIENT_KEY }],
      ['real key as Basic', { authorization: `Basic ${Buffer.from(`user:${CLIENT_KEY}`).toString('base64')}` }],
      ['wrong api-key with a trailing space', { 'api-key': `${WRONG_KEY} ` }],
    ]) {
      expectStatus(await chat(what, headers), 401, what);
      n += 1;
    }
    expectStatus(await chat('403 model not allowed', A, chatBody('forbidden-model')), 403, '403');
    const L = { authorization: `Bearer ${CLIENT_KEY_LIM}` };
    expectStatus(await chat('lim 1', L), 200, 'lim 1');
    expectStatus(await chat('lim 2', L), 429, 'lim 2');
    n += 3;
    // /metrics with wrong tokens (client keys among them), then with the right one.
    for (const [what, headers] of [
      ['metrics without token', {}],
      ['metrics with the client key', { authorization: `Bearer ${CLIENT_KEY}` }],
      ['metrics with a near miss', { authorization: `Bearer ${ADMIN_TOKEN}0` }],
    ]) {
      const res = await request(`${gw.adminUrl}/metrics`, { headers });
      collectResponse(what, res);
      assert.equal(res.status, 401, what);
    }
    const { text: metricsText, res: metricsRes } = await settledMetrics(gw.adminUrl, n, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    collectResponse('metrics', metricsRes);
    const upstreamErrors = metricSum(parseMetrics(metricsText), 'llm_gateway_upstream_errors_total');
    assert.ok(upstreamErrors >= 4, `the failures were counted (${upstreamErrors}):\n${metricsText}`);

    // A gateway whose Redis is a rediss:// URL with an ACL user and password, where the TLS
    // handshake fails (the mock speaks plain HTTP): with debug logging on, the store's failures are
    // logged and answered (deny: 503) without the password.
    const redisGw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}"
    api_key: "\${OBS_UPSTREAM_KEY}"
routes:
  - {match: "*", upstream: azure}
keys:
  - {name: team-r, key: "${CLIENT_KEY}", rpm: 5}
rate_limits:
  store: redis
  redis_url: "rediss://gateway:${REDIS_PASSWORD}@127.0.0.1:${mock.port}/0"
  on_store_error: deny
logging:
  level: debug
`,
      { env: { OBS_UPSTREAM_KEY: UPSTREAM_KEY } },
    );
    try {
      for (const what of ['rediss 1', 'rediss 2']) {
        const res = await request(`${redisGw.url}/v1/chat/completions`, { headers: A, body: chatBody() });
        collectResponse(what, res);
        expectStatus(res, 503, what);
      }
      const line = await redisGw.waitForLog((o) => o.msg === 'rate limit store unavailable');
      assert.match(line.detail, /^TLS handshake with Redis at 127\.0\.0\.1:\d+ failed/);
      const m = await request(`${redisGw.url}/metrics`);
      collectResponse('rediss gateway metrics', m);
    } finally {
      await redisGw.stop('SIGTERM');
    }
    collect('rediss gateway stdout', redisGw.stdout.join('\n'));
    collect('rediss gateway stderr', redisGw.stderr.join('\n'));

    // Everything the gateway wrote: diagnostics first (flushed by the exit).
    await gw.stop('SIGTERM');
    await eventually(() => readLines(accessFile).length >= n, { timeoutMs: 3000, what: `${n} access-log lines` });
    assert.ok(gw.logs.some((o) => o.level === 'debug'), `debug diagnostics were on:\n${gw.stderr.join('\n')}`);
    assert.ok(gw.logs.some((o) => o.msg === 'upstream request failed'), 'the failures were logged');
    collect('gateway stdout', gw.stdout.join('\n'));
    collect('gateway stderr', gw.stderr.join('\n'));
    collect('access log file', fs.readFileSync(accessFile));
    collect('/metrics text', metricsText);
    const lines = jsonLines(readLines(accessFile));
    assert.ok(lines.some((o) => o.error === 'upstream_timeout') && lines.some((o) => o.error === 'invalid_api_key'));

    // --check-config (stdout) and --config (stderr) on files with an error next to a key.
    const bad = {
      'rpm not a number next to the key': `keys:\n  - name: team-a\n    key: "${CLIENT_KEY}"\n    rpm: lots\n`,
      'unknown field next to an upstream key': `upstreams:\n  azure:\n    provider: azure\n    base_url: "https://x.openai.azure.com"\n    api_key: "${UPSTREAM_KEY}"\n    api_kye: "${UPSTREAM_KEY_OA}"\n`,
      'unterminated quote on the key line': `keys:\n  - name: team-a\n    key: "${CLIENT_KEY}\n    rpm: 5\n`,
      'key with a broken variable reference': `keys:\n  - name: team-a\n    key: "${CLIENT_KEY}\${"\n`,
      'plain key given as key_sha256': `keys:\n  - name: team-a\n    key_sha256: "${CLIENT_KEY}"\n`,
      'the same key twice': `keys:\n  - {name: a, key: "${CLIENT_KEY}"}\n  - {name: b, key: "${CLIENT_KEY}"}\n`,
      'key and key_sha256 both': `keys:\n  - {name: a, key: "${CLIENT_KEY}", key_sha256: "${'a'.repeat(64)}"}\n`,
      'api_key as a list': `upstreams:\n  azure:\n    provider: azure\n    base_url: "https://x.openai.azure.com"\n    api_key: ["${UPSTREAM_KEY}"]\n`,
      'admin token as a map': `admin:\n  listen: "127.0.0.1:0"\n  token: {t: "${ADMIN_TOKEN}"}\n`,
      'a mis-indented key': `keys:\n  - name: team-a\n  key: "${CLIENT_KEY}"\n`,
      'a flow mapping left open': `keys: [{name: team-a, key: "${CLIENT_KEY}"\n`,
      'rediss:// with a password next to an unreadable redis_ca_file': `rate_limits:\n  store: redis\n  redis_url: "rediss://gateway:${REDIS_PASSWORD}@127.0.0.1:6380/0"\n  redis_ca_file: /nonexistent/llmgw/redis-ca.pem\n`,
      'rediss:// with a password and a database that is not a number': `rate_limits:\n  store: redis\n  redis_url: "rediss://gateway:${REDIS_PASSWORD}@127.0.0.1:6380/zero"\n`,
      'a password in a URL of an unknown scheme': `rate_limits:\n  store: redis\n  redis_url: "redis+tls://gateway:${REDIS_PASSWORD}@127.0.0.1:6380/0"\n`,
      'redis_ca_file next to a plain redis:// URL with a password': `rate_limits:\n  store: redis\n  redis_url: "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"\n  redis_ca_file: /etc/hostname\n`,
    };
    const base = `server:\n  listen: "127.0.0.1:0"\nroutes:\n  - {match: "*", upstream: azure}\n`;
    for (const [what, yaml] of Object.entries(bad)) {
      const f = writeTemp('bad.yaml', base + yaml);
      const chk = await runGateway(['--check-config', f]);
      assert.equal(chk.code, 1, `${what}: --check-config rejects it\n${chk.stdout}${chk.stderr}`);
      assert.ok(chk.stdout.trim().length > 0, `${what}: a diagnostic was printed`);
      collect(`--check-config (${what}): stdout`, chk.stdout);
      collect(`--check-config (${what}): stderr`, chk.stderr);
      const run = await runGateway(['--config', f]);
      assert.equal(run.code, 1, `${what}: --config refuses it`);
      collect(`--config (${what}): stdout`, run.stdout);
      collect(`--config (${what}): stderr`, run.stderr);
    }

    // The search.
    const leaks = [];
    for (const [where, text] of outputs) {
      for (const [name, needle] of needles()) {
        const at = text.indexOf(needle);
        if (at !== -1) leaks.push(`${name} in ${where}: ...${text.slice(Math.max(0, at - 80), at + needle.length + 40)}...`);
      }
    }
    assert.ok(outputs.length > 50, 'outputs were collected');
    assert.deepEqual(leaks, [], `secrets leaked:\n${leaks.join('\n')}`);
  });
});
