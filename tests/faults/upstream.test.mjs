// Fault injection, upstream side: the mock upstream misbehaves on the wire (tests/mock_upstream
// fault scenarios) and the gateway must answer the client promptly with an OpenAI-format error, or
// cut the stream visibly, log it, and stay healthy (checkInvariants after every case).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { streamRequest, request, parseSSE, uid, assertGatewayError } from '../integration/harness.mjs';
import { startFaultGateway, checkInvariants, chatBody, gatewayLogs } from './invariants.mjs';
import { rawConnect } from './raw.mjs';

const T = { timeout: 60_000 };

/** Reject after ms: bounds a wait on something the gateway should do. */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]);
}

/** The gateway's warn line about this request: "upstream response cut" or "upstream request failed". */
function upstreamFailureLog(gw, id, timeoutMs = 3000) {
  return gw.waitForLog(
    (o) => (o.msg === 'upstream response cut' || o.msg === 'upstream request failed') && o.request_id === id,
    timeoutMs,
  );
}

/** A stream request for a fault scenario, logged under a tracked id. */
function faultStream(fg, scenario, headers = {}, body = chatBody({ stream: true })) {
  const id = fg.tracker.id(scenario);
  const s = streamRequest(`${fg.gw.url}/v1/chat/completions`, {
    headers: { 'x-request-id': id, 'x-mock-scenario': scenario, ...headers },
    body,
  });
  return { id, s };
}

test('upstream resets the connection mid-stream (after 2 SSE events): the client sees the cut, the gateway logs it', T, async (t) => {
  const fg = await startFaultGateway(t);
  const tag = uid('reset');
  const { id, s } = faultStream(fg, 'reset-mid-stream', { 'x-mock-tag': tag });
  const head = await within(s.response, 5000, 'response head');
  assert.equal(head.status, 200);
  await s.waitFor((text) => parseSSE(text).length >= 2, 5000);
  await fg.mock.waitGated(tag);
  fg.mock.release(tag); // now the mock sends RST
  const done = await within(s.done, 5000, 'the client connection ending after the upstream reset');
  assert.equal(done.complete, false, 'the client must see an incomplete response (no final chunk), not a clean end');
  assert.doesNotMatch(done.body.toString(), /\[DONE\]/);
  const line = await upstreamFailureLog(fg.gw, id);
  assert.equal(line.msg, 'upstream response cut');
  assert.equal(line.kind, 'reset', `kind: ${JSON.stringify(line)}`);
  await checkInvariants(t, fg);
});

test('upstream stalls after sending its headers: timeout_ms cuts it (504 or a cut stream) and logs it', T, async (t) => {
  const TIMEOUT = 1500;
  const fg = await startFaultGateway(t, { timeoutMs: TIMEOUT });
  const t0 = Date.now();
  const { id, s } = faultStream(fg, 'stall-after-headers');
  const head = await within(s.response, TIMEOUT + 3000, 'response head');
  const done = await within(s.done, TIMEOUT + 3000, 'the response ending after timeout_ms');
  const elapsed = Date.now() - t0;
  if (head.status === 504) {
    const json = JSON.parse(done.body.toString());
    assertGatewayError({ status: 504, headers: head.headers, json, text: done.body.toString() }, 504, 'upstream_timeout');
  } else {
    assert.equal(head.status, 200, `504 or a 200 stream that is then cut; got ${head.status}`);
    assert.equal(done.complete, false, 'the cut stream must not look complete to the client');
  }
  assert.ok(elapsed >= TIMEOUT - 100, `not cut before timeout_ms (${elapsed} ms)`);
  const line = await upstreamFailureLog(fg.gw, id);
  assert.equal(line.kind, 'timeout', JSON.stringify(line));
  t.diagnostic(`status ${head.status}, ended after ${elapsed} ms`);
  await checkInvariants(t, fg);
});

/** A chat request the mock answers with `scenario`: a prompt 502 upstream_protocol_error (no hang). */
async function expectPromptProtocolError(fg, tag, scenario) {
  const id = fg.tracker.id(tag);
  const t0 = Date.now();
  const res = await request(`${fg.gw.url}/v1/chat/completions`, {
    headers: { 'x-request-id': id, 'x-mock-scenario': scenario },
    body: chatBody(),
    timeoutMs: 4000,
  });
  assertGatewayError(res, 502, 'upstream_protocol_error', { type: 'api_error' });
  assert.ok(Date.now() - t0 < 2000, `answered within 2 s, not left hanging (${Date.now() - t0} ms)`);
  return id;
}

test('upstream sends garbage instead of HTTP: 502 upstream_protocol_error, promptly', T, async (t) => {
  const fg = await startFaultGateway(t);
  const id = await expectPromptProtocolError(fg, 'garbage', 'garbage-response');
  assert.equal((await upstreamFailureLog(fg.gw, id)).kind, 'protocol');
  await checkInvariants(t, fg);
});

test('upstream sends a response header block over 64 KiB: 502 upstream_protocol_error, promptly, upstream connection dropped', T, async (t) => {
  const fg = await startFaultGateway(t);
  const id = await expectPromptProtocolError(fg, 'bighead', 'oversized-headers');
  const rec = await fg.mock.waitForRequest((r) => r.headers['x-request-id'] === id);
  await fg.mock.waitAborted(rec, 3000); // the gateway closed the connection it cannot use
  assert.equal((await upstreamFailureLog(fg.gw, id)).kind, 'protocol');
  await checkInvariants(t, fg);
});

test('upstream sends an invalid chunk-size mid-stream: the stream is cut (or 502), logged as a protocol error', T, async (t) => {
  const fg = await startFaultGateway(t);
  const { id, s } = faultStream(fg, 'bad-chunk');
  const head = await within(s.response, 3000, 'response head');
  const done = await within(s.done, 3000, 'the response ending');
  if (head.status === 502) {
    const text = done.body.toString();
    assertGatewayError({ status: 502, headers: head.headers, json: JSON.parse(text), text }, 502, 'upstream_protocol_error');
  } else {
    assert.equal(head.status, 200, `a cut 200 stream or a 502; got ${head.status}`);
    assert.equal(done.complete, false, 'the client must see the stream cut, not a clean end');
    assert.doesNotMatch(done.body.toString(), /zz-not-hex/, 'the invalid framing is not relayed');
  }
  const rec = await fg.mock.waitForRequest((r) => r.headers['x-request-id'] === id);
  await fg.mock.waitAborted(rec, 3000);
  assert.equal((await upstreamFailureLog(fg.gw, id)).kind, 'protocol');
  await checkInvariants(t, fg);
});

test('upstream closes before its announced Content-Length: the client sees a cut response (or 502), logged', T, async (t) => {
  const fg = await startFaultGateway(t);
  const { id, s } = faultStream(fg, 'short-content-length', {}, chatBody());
  const head = await within(s.response, 3000, 'response head');
  const done = await within(s.done, 3000, 'the response ending');
  if (head.status === 502) {
    const text = done.body.toString();
    assertGatewayError({ status: 502, headers: head.headers, json: JSON.parse(text), text }, 502, 'upstream_protocol_error');
  } else {
    assert.equal(head.status, 200, `a cut 200 or a 502; got ${head.status}`);
    assert.equal(done.complete, false, `the short body must not look complete (got ${done.body.length} bytes, content-length ${head.headers['content-length']})`);
  }
  await upstreamFailureLog(fg.gw, id);
  await checkInvariants(t, fg);
});

test('upstream answers 101 Switching Protocols: 502 upstream_protocol_error in OpenAI format, promptly (no hang)', T, async (t) => {
  const fg = await startFaultGateway(t);
  const id = fg.tracker.id('switch');
  const body = JSON.stringify(chatBody());
  const c = await rawConnect(fg.gw.port);
  t.after(() => c.destroy());
  const t0 = Date.now();
  await c.write(
    `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `x-request-id: ${id}\r\nx-mock-scenario: switching-protocols\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  const [res] = await c.responses(1, 3000);
  assert.ok(res, `a response within 3 s; got ${c.data().length} bytes, closed ${c.closed}`);
  assert.notEqual(res.status, 101, 'the 101 must not reach the client');
  assertGatewayError(res, 502, 'upstream_protocol_error', { type: 'api_error' });
  assert.ok(Date.now() - t0 < 2000, `answered within 2 s (${Date.now() - t0} ms)`);
  const rec = await fg.mock.waitForRequest((r) => r.headers['x-request-id'] === id);
  await fg.mock.waitAborted(rec, 3000);
  c.destroy();
  await checkInvariants(t, fg);
});

test('upstream dies after its header but before any body byte reached the client: an OpenAI-format 502, never a silent close', T, async (t) => {
  const fg = await startFaultGateway(t);
  const id = fg.tracker.id('partial');
  const res = await request(`${fg.gw.url}/v1/chat/completions`, {
    headers: { 'x-request-id': id, 'x-mock-scenario': 'partial-chunk-reset' },
    body: chatBody(),
    timeoutMs: 4000,
  });
  assert.equal(res.status, 502, res.text);
  assert.ok(res.json?.error?.code?.startsWith('upstream_'), `OpenAI error shape: ${res.text}`);
  await checkInvariants(t, fg);
});
