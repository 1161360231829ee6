// Streaming relay: SSE bodies must reach the client byte for byte and piece by piece, Azure
// annotation chunks included, and a client that goes away must free the upstream request at once.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startMock, FILTERED_STREAM_EVENTS } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, streamRequest, parseSSE, uid, assertRelayed } from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

describe('streaming', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    deployments: {gpt-4o: gpt4o-prod}
  azshort:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    timeout_ms: 700
  oa:
    provider: openai
    base_url: "${mock.url}"
routes:
  - {match: "gpt-4o*", upstream: az}
  - {match: "short-*", upstream: azshort}
  - {match: "*", upstream: oa}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const chat = (extra = {}) => ({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }], ...extra });

  test('Azure default stream is relayed byte for byte (annotations, trailing chunk, [DONE])', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body: chat() });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/deployments/gpt4o-prod/chat/completions');
    assert.equal(rec.json.stream, true);
    assert.equal(rec.headers['api-key'], 'stream-key');
    assertRelayed(res, rec);
    assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
    const events = parseSSE(res.text);
    assert.equal(events.at(-1).data, '[DONE]');
    const first = JSON.parse(events[0].data);
    assert.deepEqual(first.choices, []);
    assert.ok(first.prompt_filter_results, 'prompt annotation chunk kept');
    const trailing = JSON.parse(events.at(-2).data);
    assert.equal(trailing.choices[0].delta, undefined, 'trailing annotation chunk without delta kept');
    assert.ok(events.slice(0, -1).every((e) => !JSON.parse(e.data).usage), 'no usage chunk unless asked for');
  });

  test('stream_options.include_usage is forwarded and the usage chunk relayed', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id },
      body: chat({ stream_options: { include_usage: true } }),
    });
    const rec = await find(id);
    assert.deepEqual(rec.json.stream_options, { include_usage: true });
    assertRelayed(res, rec);
    const events = parseSSE(res.text);
    const usage = JSON.parse(events.at(-2).data);
    assert.deepEqual(usage.choices, []);
    assert.deepEqual(usage.usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
  });

  test('the first event reaches the client before the upstream sends the rest', T, async () => {
    const id = uid();
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chat(),
    });
    const head = await s.response;
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.ok(head.headers['x-gateway-request-id']);
    const firstPart = await s.waitFor((t) => t.includes('\n\n'));
    await mock.waitGated(tag);
    const rec = await find(id);
    assert.equal(rec.finished, false, 'upstream still waiting on the gate');
    assert.match(firstPart, /^data: \{"choices":\[\],"created":0,"id":"","model":""/);
    assert.doesNotMatch(firstPart, /\[DONE\]/);
    mock.release(tag);
    const done = await s.done;
    assert.equal(done.complete, true);
    assert.ok(done.body.equals(rec.responseBody), 'whole stream byte-equal');
    assert.match(done.body.toString(), /data: \[DONE\]\n\n$/);
  });

  test('events are relayed as they arrive (slow upstream)', T, async () => {
    const id = uid();
    const arrivals = [];
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'slow-stream', 'x-mock-delay-ms': '60' },
      body: chat(),
    });
    s.onData((c) => arrivals.push(c.length));
    const done = await s.done;
    const rec = await find(id);
    assert.equal(done.complete, true);
    assert.ok(done.body.equals(rec.responseBody));
    // Seven events 60 ms apart: a relay that buffers the response would deliver them in one or two reads.
    assert.ok(arrivals.length >= 5, `expected the events in separate reads, got ${arrivals.length} reads`);
  });

  test('client abort mid-stream closes the upstream request at once', T, async () => {
    const id = uid();
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: chat(),
    });
    await s.waitFor((t) => t.includes('prompt_filter_results'));
    const rec = await find(id);
    s.abort();
    await mock.waitAborted(rec, 3000);
    assert.equal(rec.aborted, true);
    // The gateway is fine afterwards.
    const id2 = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id2 }, body: chat() });
    assertRelayed(res, await find(id2));
  });

  test('content-filter blocked stream (finish_reason content_filter in an annotation chunk) is byte-equal', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'filtered-stream' },
      body: chat(),
    });
    const rec = await find(id);
    assertRelayed(res, rec);
    assert.deepEqual(parseSSE(res.text).map((e) => e.data), [...FILTERED_STREAM_EVENTS]);
  });

  test('completions stream', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/completions`, { headers: { 'x-test-id': id }, body: { model: 'gpt-4o-instruct', prompt: 'x', stream: true } });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/deployments/gpt-4o-instruct/completions');
    assertRelayed(res, rec);
    assert.equal(parseSSE(res.text).at(-1).data, '[DONE]');
  });

  test('Responses API stream (named events) is byte-equal', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/responses`, { headers: { 'x-test-id': id }, body: { model: 'gpt-4o', input: 'hi', stream: true } });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/responses');
    assert.equal(rec.json.model, 'gpt4o-prod');
    assertRelayed(res, rec);
    const events = parseSSE(res.text);
    assert.equal(events[0].event, 'response.created');
    assert.equal(events.at(-1).event, 'response.completed');
  });

  test('OpenAI passthrough stream, gated: first event before release, then byte-equal', T, async () => {
    const id = uid();
    const tag = uid('gate');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag, authorization: 'Bearer sk-client' },
      body: { model: 'gpt-5', stream: true, messages: [] },
    });
    await s.waitFor((t) => t.includes('\n\n'));
    const rec = await find(id);
    assert.equal(rec.path, '/v1/chat/completions');
    assert.equal(rec.headers.authorization, 'Bearer sk-client');
    assert.equal(rec.finished, false);
    mock.release(tag);
    const done = await s.done;
    assert.equal(done.complete, true);
    assert.ok(done.body.equals(rec.responseBody));
  });

  test('several concurrent streams are kept apart', T, async () => {
    const tags = Array.from({ length: 6 }, () => uid('gate'));
    const ids = tags.map(() => uid());
    const streams = tags.map((tag, i) =>
      streamRequest(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': ids[i], 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
        body: chat(),
      }),
    );
    await Promise.all(streams.map((s) => s.waitFor((t) => t.includes('\n\n'))));
    // release in reverse order
    for (const tag of [...tags].reverse()) mock.release(tag);
    const dones = await Promise.all(streams.map((s) => s.done));
    for (let i = 0; i < ids.length; i++) {
      const rec = await find(ids[i]);
      assert.equal(dones[i].complete, true);
      assert.ok(dones[i].body.equals(rec.responseBody), `stream ${i} byte-equal`);
    }
  });

  test('timeout_ms covers the whole stream: a stalled stream is cut and the upstream closed', T, async () => {
    const id = uid();
    const tag = uid('gate-never');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: { model: 'short-model', stream: true, messages: [] },
    });
    const rec = await find(id);
    await s.waitFor((t) => t.includes('prompt_filter_results'));
    await mock.waitAborted(rec, 5000);
    const done = await s.done;
    assert.doesNotMatch(done.body.toString(), /\[DONE\]/, 'the client never sees a complete stream');
    // A client must be able to tell the stream was cut: the response is not ended cleanly.
    assert.equal(done.complete, false, 'truncated stream is signalled by an aborted response');
  });
});
