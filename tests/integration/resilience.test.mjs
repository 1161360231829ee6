// Routes with several backends: failover on 429/5xx/connection failures, cooldowns that honour
// Azure's retry-after, weights, priorities, quota awareness, ejection, queueing, what is never
// retried, and the Redis-shared cooldown between two gateway processes. Each test starts its own
// mock upstreams (one instance per region, each told how to behave through its `defaults`) and
// its own gateway, so backend state never leaks between tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { performance } from 'node:perf_hooks';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  request,
  streamRequest,
  closedPort,
  eventually,
  uid,
  haveRedisServer,
  startRedis,
  jsonLines,
  metricValue,
} from './harness.mjs';

const T = { timeout: 60_000 };

const chatBody = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });

function azure(name, url, extra = '') {
  return `  ${name}:
    provider: azure
    base_url: "${url}"
    api_key: "key-${name}"
${extra}`;
}

/** A gateway on loopback with these upstreams (YAML lines) and routes; access log on stdout. */
async function gateway(t, upstreams, routes, extra = '') {
  return startGateway(
    `server:
  listen: "127.0.0.1:0"
  threads: 2
upstreams:
${upstreams.join('')}
routes:
${routes}
${extra}`,
    { t },
  );
}

async function mocks(t, ...defaults) {
  const out = [];
  for (const d of defaults) {
    const m = await startMock({ defaults: d });
    t.after(() => m.close());
    out.push(m);
  }
  return out;
}

const logLine = (gw, id) =>
  eventually(() => jsonLines(gw.stdout).find((o) => o.request_id === id), { what: `access-log line for ${id}` });

/** A chat completion through the gateway; resolves with the response and its access-log line. */
async function chat(gw, model, { headers = {}, body, agent } = {}) {
  const id = uid('res');
  const res = await request(`${gw.url}/v1/chat/completions`, {
    headers: { 'x-request-id': id, ...headers },
    body: body ?? chatBody(model),
    agent,
  });
  return { res, line: await logLine(gw, id), id };
}

const attemptsOf = (line) => line.attempts.map((a) => [a.upstream, a.status ?? a.error]);

test('a 429 with retry-after-ms moves the request to the other region at once; that deployment gets nothing until the cooldown ends', T, async (t) => {
  // east answers its first request with 429 retry-after-ms 800, then 200.
  const [east, west] = await mocks(t, { 'x-mock-scenario': 'retry-after-ms', 'x-mock-retry-after-ms': '800', 'x-mock-fail-times': '1' }, {});
  const gw = await gateway(
    t,
    [azure('east', east.url, '    deployments: {gpt-4o: east-4o}\n'), azure('west', west.url, '    deployments: {gpt-4o: west-4o}\n')],
    `  - match: "gpt-4o"
    backends: [{upstream: east}, {upstream: west}]`,
  );
  // Equal weights: the first request goes to the first backend.
  const first = await chat(gw, 'gpt-4o');
  assert.equal(first.res.status, 200, first.res.text);
  assert.equal(first.res.headers['x-gateway-upstream'], 'west');
  assert.deepEqual(attemptsOf(first.line), [['east', 429], ['west', 200]]);
  assert.equal(first.line.upstream, 'west');
  assert.equal(first.line.deployment, 'west-4o');
  assert.equal(east.requests.length, 1);
  assert.equal(east.requests[0].route.deployment, 'east-4o');
  assert.equal(west.requests[0].route.deployment, 'west-4o', 'each backend gets its own deployment');
  const cooledAt = east.requests[0].receivedAt;

  // While east cools down, everything goes to west; once it is over, east is used again — and
  // not one request reached it before the 800 ms Azure asked for.
  await eventually(
    async () => {
      const r = await chat(gw, 'gpt-4o');
      assert.equal(r.res.status, 200);
      return east.requests.length > 1;
    },
    { timeoutMs: 10_000, intervalMs: 25, what: 'east used again' },
  );
  const gap = east.requests[1].receivedAt - cooledAt;
  assert.ok(gap >= 800, `east got its next request ${gap.toFixed(0)} ms after the 429 (cooldown 800 ms)`);
  assert.ok(west.requests.length >= 2, 'west carried the traffic meanwhile');
});

test('connection refused, then 503, then an answer: the client sees only the answer', T, async (t) => {
  const dead = await closedPort();
  const [bad, good] = await mocks(t, { 'x-mock-scenario': 'error', 'x-mock-status': '503' }, {});
  const gw = await gateway(
    t,
    [azure('dead', `http://127.0.0.1:${dead}`), azure('bad', bad.url), azure('good', good.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: dead}, {upstream: bad}, {upstream: good}]`,
  );
  const { res, line } = await chat(gw, 'gpt-4o');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers['x-gateway-upstream'], 'good');
  assert.deepEqual(attemptsOf(line), [['dead', 'connect'], ['bad', 503], ['good', 200]]);
  assert.equal(bad.requests.length, 1);
  assert.equal(good.requests.length, 1);
  assert.equal(await metricValue(gw, 'llm_gateway_retries_total', { endpoint: 'chat_completions' }), 2);
  assert.equal(await metricValue(gw, 'llm_gateway_upstream_attempts_total', { upstream: 'dead', outcome: 'connect' }), 1);
  assert.equal(await metricValue(gw, 'llm_gateway_upstream_attempts_total', { upstream: 'bad', outcome: 'status_5xx' }), 1);
  assert.equal(await metricValue(gw, 'llm_gateway_upstream_attempts_total', { upstream: 'good', outcome: 'success' }), 1);
});

test('a backend that hangs past its timeout_ms: the next backend answers', T, async (t) => {
  const [hang, good] = await mocks(t, { 'x-mock-scenario': 'hang' }, {});
  const gw = await gateway(
    t,
    [azure('hang', hang.url, '    timeout_ms: 300\n'), azure('good', good.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: hang}, {upstream: good}]`,
  );
  const { res, line } = await chat(gw, 'gpt-4o');
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(attemptsOf(line), [['hang', 'timeout'], ['good', 200]]);
  assert.ok(line.attempts[0].duration_ms >= 300, `the first attempt ran its 300 ms: ${line.attempts[0].duration_ms}`);
});

test('weights hold over 1,000 requests (3:1), and the lower priority gets none while the first has a backend', T, async (t) => {
  const [a, b, c] = await mocks(t, {}, {}, {});
  const gw = await gateway(
    t,
    [azure('a', a.url), azure('b', b.url), azure('c', c.url)],
    `  - match: "gpt-4o"
    backends:
      - {upstream: a, weight: 3}
      - {upstream: b, weight: 1}
      - {upstream: c, priority: 1}`,
    'logging:\n  access_log: "off"\n',
  );
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  t.after(() => agent.destroy());
  const body = chatBody('gpt-4o');
  let next = 0;
  const worker = async () => {
    while (next < 1000) {
      next += 1;
      const res = await request(`${gw.url}/v1/chat/completions`, { body, agent });
      assert.equal(res.status, 200);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  const [na, nb] = [a.requests.length, b.requests.length];
  assert.equal(na + nb, 1000);
  assert.equal(c.requests.length, 0, 'priority 1 unused');
  assert.ok(Math.abs(na - 750) <= 20 && Math.abs(nb - 250) <= 20, `a ${na}, b ${nb} (expected 750/250)`);
});

test('never retried: a stream cut after its first event, and a 400 content_filter', T, async (t) => {
  const [cut, good] = await mocks(t, { 'x-mock-scenario': 'reset-mid-stream' }, {});
  const [filter, good2] = await mocks(t, { 'x-mock-scenario': 'content-filter-400' }, {});
  const gw = await gateway(
    t,
    [azure('cut', cut.url), azure('good', good.url), azure('filter', filter.url), azure('good2', good2.url)],
    `  - match: "stream-*"
    backends: [{upstream: cut}, {upstream: good}]
  - match: "filtered-*"
    backends: [{upstream: filter}, {upstream: good2}]`,
  );
  const s = streamRequest(`${gw.url}/v1/chat/completions`, { body: chatBody('stream-4o', { stream: true }) });
  const head = await s.response;
  assert.equal(head.status, 200);
  await cut.waitGated('gate');
  cut.release('gate');  // the mock resets the connection after its first two events
  const done = await s.done;
  assert.equal(done.complete, false, 'the stream was cut');
  assert.ok(done.body.includes('data: '), 'after its first events');
  assert.equal(cut.requests.length, 1);
  assert.equal(good.requests.length, 0, 'a stream that reached the client is never sent elsewhere');

  const { res, line } = await chat(gw, 'filtered-4o');
  assert.equal(res.status, 400);
  assert.equal(res.json.error.code, 'content_filter');
  assert.equal(good2.requests.length, 0, 'a content-filter 400 is the answer');
  assert.deepEqual(attemptsOf(line), [['filter', 400]]);
});

test('the body replayed to the next backend is byte for byte the client\'s', T, async (t) => {
  const [bad, good] = await mocks(t, { 'x-mock-scenario': 'error', 'x-mock-status': '500' }, {});
  const gw = await gateway(
    t,
    [azure('bad', bad.url), azure('good', good.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: bad}, {upstream: good}]`,
  );
  // Odd spacing, key order and escapes: any re-serialisation would show.
  const raw = Buffer.from('{ "messages" : [ {"role":"user","content":"h\\u00e9 \\"x\\""} ],\n  "model":"gpt-4o" ,"temperature":0.50}');
  const res = await request(`${gw.url}/v1/chat/completions`, { body: raw, headers: { 'content-type': 'application/json' } });
  assert.equal(res.status, 200, res.text);
  assert.equal(bad.requests.length, 1);
  assert.equal(good.requests.length, 1);
  assert.ok(bad.requests[0].body.equals(raw), 'first backend: the client\'s bytes');
  assert.ok(good.requests[0].body.equals(raw), 'second backend: the same bytes again');
});

test('quota awareness: a deployment reporting 100 tokens left gets no large request while another has room', T, async (t) => {
  const [low, roomy] = await mocks(t, { 'x-mock-remaining-tokens': '100' }, {});
  const gw = await gateway(
    t,
    [azure('low', low.url), azure('roomy', roomy.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: low}, {upstream: roomy}]`,
  );
  // The first request goes to `low` (first backend) and learns its report.
  const first = await chat(gw, 'gpt-4o');
  assert.deepEqual(attemptsOf(first.line), [['low', 200]]);
  for (let i = 0; i < 4; i++) {
    const { res, line } = await chat(gw, 'gpt-4o', { body: chatBody('gpt-4o', { max_tokens: 4000 }) });
    assert.equal(res.status, 200);
    assert.deepEqual(attemptsOf(line), [['roomy', 200]], 'the large request skips the deployment without room');
  }
  assert.equal(low.requests.length, 1);
  assert.equal(await metricValue(gw, 'llm_gateway_upstream_remaining', { upstream: 'low', deployment: 'gpt-4o', kind: 'tokens' }), 100);
});

test('every backend cooling down: the gateway answers 429 for them, with the shortest cooldown; single-backend routes pass 429s through', T, async (t) => {
  const [a, b, solo] = await mocks(t, { 'x-mock-scenario': 'rate-limited' }, { 'x-mock-scenario': 'rate-limited' }, { 'x-mock-scenario': 'rate-limited' });
  const gw = await gateway(
    t,
    [azure('a', a.url), azure('b', b.url), azure('solo', solo.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: a}, {upstream: b}]
  - {match: "solo-*", upstream: solo}`,
  );
  const { res, line } = await chat(gw, 'gpt-4o');
  assert.equal(res.status, 429, res.text);
  assert.equal(res.headers['x-gateway-rate-limited'], 'upstream');
  assert.equal(res.json.error.code, 'rate_limit_exceeded');
  assert.equal(res.json.error.type, 'requests');
  const ms = Number(res.headers['retry-after-ms']);
  assert.ok(ms > 0 && ms <= 1000, `retry-after-ms ${ms} (the mock asked for 1000)`);
  assert.equal(res.headers['retry-after'], '1');
  assert.deepEqual(attemptsOf(line), [['a', 429], ['b', 429]]);
  // A request meanwhile is answered without reaching either.
  const again = await chat(gw, 'gpt-4o');
  assert.equal(again.res.status, 429);
  assert.deepEqual(again.line.attempts, []);
  assert.equal(a.requests.length + b.requests.length, 2);
  assert.equal(await metricValue(gw, 'llm_gateway_backend_state', { upstream: 'a', deployment: 'gpt-4o', state: 'cooldown' }), 1);

  // One backend: the upstream's own 429, unchanged, and the next request still goes there.
  for (let i = 0; i < 2; i++) {
    const r = await chat(gw, 'solo-4o');
    assert.equal(r.res.status, 429);
    assert.equal(r.res.headers['x-gateway-rate-limited'], undefined, 'the upstream\'s 429');
    assert.equal(r.res.headers['retry-after-ms'], '1000');
  }
  assert.equal(solo.requests.length, 2);
});

test('max_queue_ms: a request waits for the first backend to come back instead of failing', T, async (t) => {
  const opts = { 'x-mock-scenario': 'retry-after-ms', 'x-mock-retry-after-ms': '300', 'x-mock-fail-times': '1' };
  const [a, b] = await mocks(t, opts, opts);
  const gw = await gateway(
    t,
    [azure('a', a.url), azure('b', b.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: a}, {upstream: b}]
    max_queue_ms: 3000`,
  );
  const t0 = performance.now();
  const { res, line } = await chat(gw, 'gpt-4o');
  const elapsed = performance.now() - t0;
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(attemptsOf(line).slice(0, 2), [['a', 429], ['b', 429]]);
  assert.equal(line.attempts.length, 3);
  assert.equal(line.attempts[2].status, 200);
  assert.ok(elapsed >= 300, `waited for the cooldown (${elapsed.toFixed(0)} ms)`);
});

test('consecutive failures eject a backend (503 no_healthy_upstream once all are out); files are sent once', T, async (t) => {
  const [a, b] = await mocks(t, { 'x-mock-scenario': 'error', 'x-mock-status': '500' }, { 'x-mock-scenario': 'error', 'x-mock-status': '502' });
  const gw = await gateway(
    t,
    [azure('a', a.url), azure('b', b.url)],
    `  - match: "*"
    backends: [{upstream: a}, {upstream: b}]
    retry: {eject_after: 2}`,
  );
  // Two requests: each tries both (a then b, then b then a), so each fails twice: ejected.
  for (const [first, last] of [['a', 502], ['b', 500]]) {
    const { res, line } = await chat(gw, 'gpt-4o');
    assert.equal(res.status, last, 'the last backend\'s own answer');
    assert.equal(line.attempts[0].upstream, first);
  }
  assert.equal(a.requests.length + b.requests.length, 4);
  const { res, line } = await chat(gw, 'gpt-4o');
  assert.equal(res.status, 503, res.text);
  assert.equal(res.json.error.code, 'no_healthy_upstream');
  assert.deepEqual(line.attempts, []);
  assert.equal(a.requests.length + b.requests.length, 4, 'nothing sent to ejected backends');
  assert.equal(await metricValue(gw, 'llm_gateway_backend_state', { upstream: 'a', deployment: 'gpt-4o', state: 'ejected' }), undefined, 'only configured deployments get a series');

  // Files (stateful): one backend, once, whatever it answers.
  const [c, d] = await mocks(t, { 'x-mock-scenario': 'error', 'x-mock-status': '503' }, {});
  const gw2 = await gateway(
    t,
    [azure('c', c.url), azure('d', d.url)],
    `  - match: "*"
    backends: [{upstream: c}, {upstream: d}]`,
  );
  const files = await request(`${gw2.url}/v1/files`);
  assert.equal(files.status, 503);
  assert.equal(c.requests.length, 1);
  assert.equal(d.requests.length, 0);
});

test('with the Redis store, a 429 seen by one gateway keeps the other gateway off that deployment', { ...T, skip: !haveRedisServer() && 'redis-server is not installed' }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const [east, west] = await mocks(t, { 'x-mock-scenario': 'retry-after-ms', 'x-mock-retry-after-ms': '20000', 'x-mock-fail-times': '1' }, {});
  const config = [
    [azure('east', east.url, '    deployments: {gpt-4o: east-4o}\n'), azure('west', west.url, '    deployments: {gpt-4o: west-4o}\n')],
    `  - match: "gpt-4o"
    backends: [{upstream: east}, {upstream: west}]`,
    `rate_limits:
  store: redis
  redis_url: "${redis.url}"
`,
  ];
  const one = await gateway(t, ...config);
  const two = await gateway(t, ...config);
  const first = await chat(one, 'gpt-4o');
  assert.deepEqual(attemptsOf(first.line), [['east', 429], ['west', 200]]);
  // The other process learns the cooldown from Redis (within 250 ms), without a request of its own.
  await eventually(
    async () => (await metricValue(two, 'llm_gateway_backend_state', { upstream: 'east', deployment: 'east-4o', state: 'cooldown' })) === 1,
    { timeoutMs: 3000, what: 'the second gateway sees east cooling down' },
  );
  for (let i = 0; i < 4; i++) {
    const { res, line } = await chat(two, 'gpt-4o');
    assert.equal(res.status, 200);
    assert.deepEqual(attemptsOf(line), [['west', 200]]);
  }
  assert.equal(east.requests.length, 1, 'only the first gateway ever reached east');
});

test('max_queue_ms: a client that leaves while its request waits ends the wait at once (one log line, 499)', T, async (t) => {
  const [a, b] = await mocks(t, { 'x-mock-scenario': 'rate-limited' }, { 'x-mock-scenario': 'rate-limited' });
  const gw = await gateway(
    t,
    [azure('a', a.url), azure('b', b.url)],
    `  - match: "gpt-4o"
    backends: [{upstream: a}, {upstream: b}]
    max_queue_ms: 5000`,
  );
  // Both answer 429 with retry-after-ms 1000: the request waits for the first to come back. The
  // client gives up after 300 ms.
  const id = uid('queue');
  await assert.rejects(
    request(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': id }, body: chatBody('gpt-4o'), timeoutMs: 300 }),
  );
  const line = await logLine(gw, id);
  assert.equal(line.status, 499);
  assert.deepEqual(attemptsOf(line), [['a', 429], ['b', 429]]);
  assert.ok(line.duration_ms < 900, `the wait ended with the client, not the cooldown (${line.duration_ms} ms)`);
  assert.equal(jsonLines(gw.stdout).filter((o) => o.request_id === id).length, 1, 'exactly one line');
  assert.equal(a.requests.length + b.requests.length, 2, 'no attempt after the client left');
});
