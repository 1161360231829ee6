// The probe repros: requests crafted to slip past the gateway's parsing (smuggling, trailers,
// methods it does not implement). Raw bytes over TCP, since Node's HTTP client refuses to send
// most of them. (The upstream answering 101 is in upstream.test.mjs.) After each case
// checkInvariants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';

import { assertGatewayError } from '../integration/harness.mjs';
import { startFaultGateway, checkInvariants, chatBody, readAccessLog, metricSum } from './invariants.mjs';
import { rawConnect } from './raw.mjs';

const T = { timeout: 30_000 };

/** OpenAI's error shape, with one of `statuses`. */
function assertErrorShape(res, statuses, what) {
  assert.ok(res, `${what}: a response`);
  assert.ok(statuses.includes(res.status), `${what}: status ${res.status}, expected one of ${statuses}; body ${res.text}`);
  assert.match(String(res.headers['content-type']), /application\/json/, `${what}: JSON error`);
  const e = res.json?.error;
  assert.ok(e && typeof e === 'object', `${what}: {"error": {...}} body, got ${res.text}`);
  assert.equal(typeof e.message, 'string', `${what}: error.message`);
  assert.equal(typeof e.type, 'string', `${what}: error.type`);
  assert.ok('param' in e && (e.param === null || typeof e.param === 'string'), `${what}: error.param`);
  assert.equal(typeof e.code, 'string', `${what}: error.code`);
}

const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;

test('Transfer-Encoding "chunked, identity" with a smuggled GET /v1/models: 400/501, connection closed, the smuggled request never answered', T, async (t) => {
  const fg = await startFaultGateway(t);
  const id = fg.tracker.id('te');
  const smuggled = fg.tracker.forbid('smuggled');
  const seen = fg.mock.requests.length;
  const c = await rawConnect(fg.gw.port);
  t.after(() => c.destroy());
  await c.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${id}\r\n` +
      `Transfer-Encoding: chunked, identity\r\n\r\n` +
      chunk(JSON.stringify(chatBody())) + '0\r\n\r\n' +
      `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nx-request-id: ${smuggled}\r\n\r\n`,
  );
  const closed = await c.waitClosed(5000);
  const { responses } = c.parsed();
  assert.ok(responses.length >= 1, `an answer; got ${c.data().toString('latin1')}`);
  assertErrorShape(responses[0], [400, 501], 'the ambiguous framing');
  assert.equal(responses.length, 1, `exactly one response, the smuggled request is not answered; got ${responses.map((r) => `${r.status} ${r.text.slice(0, 80)}`).join(' | ')}`);
  assert.ok(closed, 'the connection is closed after the error');
  assert.equal(fg.mock.requests.length, seen, 'nothing reached the upstream');
  await checkInvariants(t, fg);
});

test('a chunked request whose trailer carries a valid Authorization is not authenticated (401); trailers never reach the upstream', T, async (t) => {
  const key = `sk-trailer-${crypto.randomBytes(8).toString('hex')}`;
  const fg = await startFaultGateway(t, {
    keys: `\nkeys:\n  - name: trailer-team\n    key: "${key}"\n`,
    clientKey: key,
  });
  const seen = fg.mock.requests.length;
  const body = JSON.stringify(chatBody());

  // 1. The credential only in the trailer.
  const id1 = fg.tracker.id('trailer-auth');
  const c1 = await rawConnect(fg.gw.port);
  t.after(() => c1.destroy());
  await c1.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${id1}\r\n` +
      `Transfer-Encoding: chunked\r\nTrailer: authorization\r\n\r\n` +
      chunk(body) + `0\r\nauthorization: Bearer ${key}\r\n\r\n`,
  );
  const [r1] = await c1.responses(1, 5000);
  assertGatewayError(r1, 401, 'invalid_api_key');
  assert.equal(fg.mock.requests.length, seen, 'the unauthenticated request did not reach the upstream');
  c1.destroy();

  // 2. Authenticated in the header; the trailer's fields must not be forwarded.
  const id2 = fg.tracker.id('trailer-fwd');
  const c2 = await rawConnect(fg.gw.port);
  t.after(() => c2.destroy());
  await c2.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${id2}\r\n` +
      `authorization: Bearer ${key}\r\nTransfer-Encoding: chunked\r\n\r\n` +
      chunk(body) + `0\r\nx-trailer-probe: smuggled\r\nx-mock-scenario: echo\r\n\r\n`,
  );
  const [r2] = await c2.responses(1, 5000);
  assert.equal(r2?.status, 200, `the authenticated chunked request is answered: ${r2?.status} ${r2?.text}`);
  const rec = await fg.mock.waitForRequest((r) => r.headers['x-request-id'] === id2);
  assert.equal(rec.headers['x-trailer-probe'], undefined, 'a trailer field did not become an upstream header');
  assert.equal(rec.scenario, 'default', 'a trailer field did not select a mock scenario (x-mock-scenario)');
  assert.deepEqual(rec.rawTrailers, [], 'no trailer went upstream');
  assert.equal(rec.body.toString(), body, 'the body arrived whole');
  c2.destroy();
  await checkInvariants(t, fg);
});

test('methods "post" (lowercase) and "FOO": 405 or 501 in OpenAI shape, one access-log line each, nothing reserved or forwarded', T, async (t) => {
  const keyA = `sk-a-${crypto.randomBytes(8).toString('hex')}`;
  const keyB = `sk-b-${crypto.randomBytes(8).toString('hex')}`;
  const keyW = `sk-w-${crypto.randomBytes(8).toString('hex')}`; // warm-up and invariant checks
  const fg = await startFaultGateway(t, {
    keys: `
keys:
  - {name: team-a, key: "${keyA}", rpm: 1000, tpm: 100000}
  - {name: team-b, key: "${keyB}", rpm: 1000, tpm: 100000}
  - {name: team-w, key: "${keyW}"}
`,
    rateLimits: `
rate_limits:
  store: memory
  default_completion_tokens: 1000
`,
    clientKey: keyW,
  });
  const seen = fg.mock.requests.length;
  const big = JSON.stringify(chatBody({ max_tokens: 50_000 }));
  const ids = {};
  for (const method of ['post', 'FOO']) {
    const id = fg.tracker.id(`method-${method}`);
    ids[method] = id;
    const c = await rawConnect(fg.gw.port);
    t.after(() => c.destroy());
    await c.write(
      `${method} /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${id}\r\n` +
        `authorization: Bearer ${keyA}\r\nContent-Length: ${Buffer.byteLength(big)}\r\n\r\n${big}`,
    );
    const [res] = await c.responses(1, 5000);
    assertErrorShape(res, [405, 501], `method ${method}`);
    c.destroy();
  }
  assert.equal(fg.mock.requests.length, seen, 'neither reached the upstream');

  // Nothing was reserved for key A: the same request for A and for B (untouched, same limits)
  // leaves the same remaining budget at admission.
  const a = await fg.chat({ headers: { authorization: `Bearer ${keyA}` } });
  const b = await fg.chat({ headers: { authorization: `Bearer ${keyB}` } });
  assert.equal(a.status, 200);
  assert.equal(b.status, 200);
  assert.equal(a.headers['x-ratelimit-remaining-tokens'], b.headers['x-ratelimit-remaining-tokens'], 'no tokens reserved by the refused methods');
  assert.equal(a.headers['x-ratelimit-remaining-requests'], b.headers['x-ratelimit-remaining-requests'], 'no requests counted by the refused methods');
  const { samples } = await fg.metrics();
  for (const m of ['llm_gateway_rate_limited_total']) assert.ok(!(metricSum(samples, m) > 0), `${m} stays 0`);
  await checkInvariants(t, fg);
  // One line each (checkInvariants checked the count; here their content).
  const lines = readAccessLog(fg.logFile).lines;
  for (const [method, id] of Object.entries(ids)) {
    const l = lines.find((x) => x.request_id === id);
    assert.ok([405, 501].includes(l?.status), `the ${method} line has the status sent: ${JSON.stringify(l)}`);
  }
});

test('CONNECT and TRACE never reach the upstream', T, async (t) => {
  const fg = await startFaultGateway(t);
  const seen = fg.mock.requests.length;
  const probes = {
    CONNECT: `CONNECT 127.0.0.1:${fg.mock.port} HTTP/1.1\r\nHost: 127.0.0.1:${fg.mock.port}\r\n`,
    TRACE: `TRACE /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-mock-scenario: echo\r\n`,
  };
  for (const [method, start] of Object.entries(probes)) {
    const id = fg.tracker.id(`method-${method}`);
    const c = await rawConnect(fg.gw.port);
    t.after(() => c.destroy());
    await c.write(`${start}x-request-id: ${id}\r\n\r\n`);
    const [res] = await c.responses(1, 5000);
    assert.ok(res, `${method}: an answer; got ${c.data().toString('latin1')}`);
    assert.ok(res.status >= 400, `${method} is refused, not served: ${res.status} ${res.text}`);
    assertErrorShape(res, [400, 403, 405, 501], method);
    c.destroy();
  }
  assert.equal(fg.mock.requests.length, seen, `nothing reached the upstream: ${fg.mock.requests.slice(seen).map((r) => `${r.method} ${r.url}`).join(', ')}`);
  await checkInvariants(t, fg);
});

test('health probes and /metrics are neither logged nor counted as requests (README)', T, async (t) => {
  const fg = await startFaultGateway(t);
  const { samples: before } = await fg.metrics();
  const countedBefore = metricSum(before, 'llm_gateway_requests_total') ?? 0;
  for (const base of [fg.gw.url, fg.gw.adminUrl]) {
    await fg.health(base);
  }
  await fg.metrics();
  const { samples } = await fg.metrics();
  const { lines } = readAccessLog(fg.logFile);
  const probeLines = lines.filter((l) => ['/healthz', '/readyz', '/metrics'].includes(l.path));
  assert.deepEqual(probeLines.map((l) => `${l.method} ${l.path}`), [], 'no access-log line for probes or /metrics');
  assert.equal(countedBefore, fg.tracker.expected, 'llm_gateway_requests_total counts only the proxied requests');
  assert.equal(metricSum(samples, 'llm_gateway_requests_total'), countedBefore, 'probes and /metrics change no request counter');
});
