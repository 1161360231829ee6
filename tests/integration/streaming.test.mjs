// Streaming relay: SSE bodies must reach the client byte for byte and piece by piece, Azure
// annotation chunks included, and a client that goes away must free the upstream request at once.
// On chat/completions and completions streams whose client did not ask for usage, the gateway asks
// the upstream for it (when the upstream accepts stream_options) and removes the usage chunk from
// what the client receives: the client then gets the upstream's bytes minus exactly that event.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startMock, FILTERED_STREAM_EVENTS } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  request,
  streamRequest,
  parseSSE,
  uid,
  assertRelayed,
  assertRelayedWithoutUsage,
  assertUsageStripped,
  countUsageChunks,
  metricValue,
} from './harness.mjs';

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
  azold:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    api_version: "2024-06-01"
  az0801:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    api_version: "2024-08-01-preview"
  az0901:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    api_version: "2024-09-01-preview"
  azmix:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    api_version: "2024-06-01"
    api_versions: {chat_completions: "2024-10-21"}
  azv1:
    provider: azure
    base_url: "${mock.url}"
    api_key: "stream-key"
    api_style: v1
  oa:
    provider: openai
    base_url: "${mock.url}"
routes:
  - {match: "gpt-4o*", upstream: az}
  - {match: "short-*", upstream: azshort}
  - {match: "old-*", upstream: azold}
  - {match: "aug-*", upstream: az0801}
  - {match: "sep-*", upstream: az0901}
  - {match: "mix-*", upstream: azmix}
  - {match: "v1-*", upstream: azv1}
  - {match: "*", upstream: oa}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const chat = (extra = {}) => ({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }], ...extra });

  test('Azure default stream: relayed byte for byte except the usage chunk the gateway asked for', T, async () => {
    const id = uid();
    const sent = chat();
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body: sent });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/deployments/gpt4o-prod/chat/completions');
    assert.equal(rec.query['api-version'], '2024-10-21');
    assert.equal(rec.json.stream, true);
    assert.equal(rec.headers['api-key'], 'stream-key');
    // The upstream body is the client's plus stream_options; nothing else changes.
    assert.deepEqual(rec.json, { ...sent, stream_options: { include_usage: true } });
    assert.equal(countUsageChunks(rec.responseBody), 1, 'the upstream sent a usage chunk');
    assertRelayedWithoutUsage(res, rec);
    assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
    const events = parseSSE(res.text);
    assert.equal(events.length, 7);
    assert.equal(events.at(-1).data, '[DONE]');
    // Azure's first chunk also has `choices: []`, but no usage: it must still reach the client.
    const first = JSON.parse(events[0].data);
    assert.deepEqual(first.choices, []);
    assert.ok(first.prompt_filter_results, 'prompt annotation chunk kept');
    assert.equal(first.usage, undefined);
    const trailing = JSON.parse(events.at(-2).data);
    assert.equal(trailing.choices[0].delta, undefined, 'trailing annotation chunk without delta kept');
    assert.equal(trailing.usage, null, 'trailing annotation chunk ("usage": null) kept');
    assert.ok(events.slice(0, -1).every((e) => !JSON.parse(e.data).usage), 'no usage at the client');
  });

  test('upstream reads are drain-aware: every exchange is counted in llm_gateway_upstream_drain_aware_exchanges_total', T, async () => {
    // The relay's reads skip Asio's speculative recv (src/net/drain_aware_read.hpp). Nothing else
    // shows it from outside (the bytes are the same either way), so a build or platform that fell
    // back to ordinary reads would pass every other test: this one fails then.
    const name = 'llm_gateway_upstream_drain_aware_exchanges_total';
    const before = await metricValue(gw, name);
    assert.equal(typeof before, 'number', `${name} is exported`);
    for (let i = 0; i < 3; i++) {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body: chat() });
      assertRelayedWithoutUsage(res, await find(id));
    }
    assert.equal(await metricValue(gw, name), before + 3);
  });

  test('client asked for include_usage: body forwarded unchanged, usage chunk relayed byte-equal', T, async () => {
    const id = uid();
    const raw = JSON.stringify(chat({ stream_options: { include_usage: true } }));
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'content-type': 'application/json' },
      body: raw,
    });
    const rec = await find(id);
    assert.deepEqual(rec.json.stream_options, { include_usage: true });
    assert.equal(rec.body.toString(), raw, 'request body forwarded as sent');
    assert.equal(countUsageChunks(rec.responseBody), 1);
    assertRelayed(res, rec);
    assert.equal(countUsageChunks(res.body), 1, 'the client gets its usage chunk');
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
    assertUsageStripped(done.body, rec);
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
    assertUsageStripped(done.body, rec);
    // Eight events 60 ms apart: a relay that buffers the response would deliver them in one or two reads.
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
    assertRelayedWithoutUsage(res, await find(id2));
  });

  test('content-filter blocked stream (finish_reason content_filter in an annotation chunk) is byte-equal', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'filtered-stream' },
      body: chat(),
    });
    const rec = await find(id);
    // The gateway asked for usage; this upstream sent no usage chunk (its first chunk has
    // `choices: []` with "usage": null, which is not one): everything is relayed.
    assert.equal(rec.json.stream_options?.include_usage, true);
    assert.equal(countUsageChunks(rec.responseBody), 0);
    assertRelayed(res, rec);
    assert.deepEqual(parseSSE(res.text).map((e) => e.data), [...FILTERED_STREAM_EVENTS]);
  });

  test('completions stream: usage asked for upstream, usage chunk removed', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/completions`, { headers: { 'x-test-id': id }, body: { model: 'gpt-4o-instruct', prompt: 'x', stream: true } });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/deployments/gpt-4o-instruct/completions');
    assert.equal(countUsageChunks(rec.responseBody), 1);
    assertRelayedWithoutUsage(res, rec);
    const events = parseSSE(res.text);
    assert.equal(events.length, 4);
    assert.equal(events.at(-1).data, '[DONE]');
  });

  test('completions stream whose client asked for usage: byte-equal, usage chunk included', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/completions`, {
      headers: { 'x-test-id': id },
      body: { model: 'gpt-4o-instruct', prompt: 'x', stream: true, stream_options: { include_usage: true } },
    });
    const rec = await find(id);
    assertRelayed(res, rec);
    assert.equal(countUsageChunks(res.body), 1);
  });

  test('Responses API stream (named events) is byte-equal', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/responses`, { headers: { 'x-test-id': id }, body: { model: 'gpt-4o', input: 'hi', stream: true } });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/responses');
    assert.equal(rec.json.model, 'gpt4o-prod');
    assert.equal(rec.json.stream_options, undefined, 'nothing is added to a Responses request');
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
    assert.deepEqual(rec.json, { model: 'gpt-5', stream: true, messages: [], stream_options: { include_usage: true } });
    mock.release(tag);
    const done = await s.done;
    assert.equal(done.complete, true);
    assertUsageStripped(done.body, rec);
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
      assert.equal(dones[i].complete, true, `stream ${i} complete`);
      assertUsageStripped(dones[i].body, rec);
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
  describe('stream usage: what the gateway asks the upstream for', () => {
    /** POST a raw JSON body; returns the client's response and the mock's record. */
    const send = async (path, raw, headers = {}) => {
      const id = uid();
      const res = await request(`${gw.url}${path}`, {
        headers: { 'x-test-id': id, 'content-type': 'application/json', ...headers },
        body: raw,
      });
      return { res, rec: await find(id) };
    };
    const messages = [{ role: 'user', content: 'hi' }];

    for (const [label, streamOptions, expectedUpstream] of [
      ['stream_options: {}', {}, { include_usage: true }],
      ['stream_options: {include_usage: false}', { include_usage: false }, { include_usage: true }],
      ['stream_options: null', null, { include_usage: true }],
      [
        'stream_options with another member and include_usage false',
        { include_obfuscation: false, include_usage: false },
        { include_obfuscation: false, include_usage: true },
      ],
      ['stream_options with another member only', { include_obfuscation: false }, { include_obfuscation: false, include_usage: true }],
    ]) {
      test(`client sent ${label}: include_usage true upstream, no usage chunk at the client`, T, async () => {
        const body = { model: 'gpt-4o', stream: true, messages, stream_options: streamOptions };
        const { res, rec } = await send('/v1/chat/completions', JSON.stringify(body));
        assert.equal(res.status, 200, res.text);
        assert.deepEqual(rec.json, { ...body, stream_options: expectedUpstream });
        assertRelayedWithoutUsage(res, rec);
      });
    }

    test('pretty-printed body (whitespace everywhere): still valid JSON upstream, usage stripped', T, async () => {
      const raw =
        '\n{\n  "model" : "gpt-4o",\n  "stream" : true ,\n  "messages" : [ { "role" : "user", "content" : "hi" } ],\n' +
        '  "stream_options" : { "include_usage" : false }\n}\n';
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(res.status, 200, res.text);
      assert.ok(rec.json, `upstream body is valid JSON: ${rec.body}`);
      assert.deepEqual(rec.json, { model: 'gpt-4o', stream: true, messages, stream_options: { include_usage: true } });
      assertRelayedWithoutUsage(res, rec);

      const raw2 = '{ "model": "gpt-4o", "stream": true, "messages": [], "stream_options": { } }  ';
      const second = await send('/v1/chat/completions', raw2);
      assert.ok(second.rec.json, `upstream body is valid JSON: ${second.rec.body}`);
      assert.deepEqual(second.rec.json.stream_options, { include_usage: true });
      assertRelayedWithoutUsage(second.res, second.rec);
    });

    test('Azure api_version 2024-06-01: nothing added, stream byte-equal', T, async () => {
      const raw = JSON.stringify({ model: 'old-gpt', stream: true, messages });
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(rec.path, '/openai/deployments/old-gpt/chat/completions');
      assert.equal(rec.query['api-version'], '2024-06-01');
      assert.equal(rec.body.toString(), raw, 'request body forwarded as sent');
      assert.equal(rec.json.stream_options, undefined);
      assertRelayed(res, rec);
      assert.equal(countUsageChunks(res.body), 0);
      assert.equal(parseSSE(res.text).at(-1).data, '[DONE]');
    });

    test('Azure api_version 2024-06-01, client sent include_usage false: forwarded as sent', T, async () => {
      const raw = JSON.stringify({ model: 'old-gpt', stream: true, messages, stream_options: { include_usage: false } });
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(rec.body.toString(), raw);
      assertRelayed(res, rec);
    });

    test('Azure api_version 2024-06-01, client asked for usage: forwarded, usage chunk relayed', T, async () => {
      const raw = JSON.stringify({ model: 'old-gpt', stream: true, messages, stream_options: { include_usage: true } });
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(rec.body.toString(), raw);
      assertRelayed(res, rec);
      assert.equal(countUsageChunks(res.body), 1);
    });

    test('Azure completions on api_version 2024-06-01: nothing added', T, async () => {
      const raw = JSON.stringify({ model: 'old-instruct', prompt: 'x', stream: true });
      const { res, rec } = await send('/v1/completions', raw);
      assert.equal(rec.path, '/openai/deployments/old-instruct/completions');
      assert.equal(rec.body.toString(), raw);
      assertRelayed(res, rec);
    });

    test('Azure api_version 2024-08-01-preview: nothing added', T, async () => {
      const raw = JSON.stringify({ model: 'aug-gpt', stream: true, messages });
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(rec.query['api-version'], '2024-08-01-preview');
      assert.equal(rec.body.toString(), raw);
      assertRelayed(res, rec);
    });

    test('Azure api_version 2024-09-01-preview: usage asked for and stripped', T, async () => {
      const { res, rec } = await send('/v1/chat/completions', JSON.stringify({ model: 'sep-gpt', stream: true, messages }));
      assert.equal(rec.query['api-version'], '2024-09-01-preview');
      assertRelayedWithoutUsage(res, rec);
    });

    test('api_versions override: chat on 2024-10-21 gets usage, completions on 2024-06-01 does not', T, async () => {
      const chatRes = await send('/v1/chat/completions', JSON.stringify({ model: 'mix-gpt', stream: true, messages }));
      assert.equal(chatRes.rec.query['api-version'], '2024-10-21');
      assertRelayedWithoutUsage(chatRes.res, chatRes.rec);
      const raw = JSON.stringify({ model: 'mix-instruct', prompt: 'x', stream: true });
      const cmpl = await send('/v1/completions', raw);
      assert.equal(cmpl.rec.query['api-version'], '2024-06-01');
      assert.equal(cmpl.rec.body.toString(), raw);
      assertRelayed(cmpl.res, cmpl.rec);
    });

    test('Azure api_style v1: usage asked for and stripped', T, async () => {
      const { res, rec } = await send('/v1/chat/completions', JSON.stringify({ model: 'v1-gpt', stream: true, messages }));
      assert.equal(rec.path, '/openai/v1/chat/completions');
      assert.equal(rec.json.model, 'v1-gpt');
      assertRelayedWithoutUsage(res, rec);
    });

    test('Azure-shaped inbound path with an old api-version: the upstream gets the configured one, and usage', T, async () => {
      const { res, rec } = await send(
        '/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01',
        JSON.stringify({ stream: true, messages }),
      );
      assert.equal(res.status, 200, res.text);
      assert.equal(rec.path, '/openai/deployments/gpt4o-prod/chat/completions');
      assert.equal(rec.query['api-version'], '2024-10-21');
      assertRelayedWithoutUsage(res, rec);
    });

    test('non-streaming requests are left alone', T, async () => {
      const raw = JSON.stringify({ model: 'gpt-4o', messages });
      const { res, rec } = await send('/v1/chat/completions', raw);
      assert.equal(rec.body.toString(), raw);
      assertRelayed(res, rec);
      const raw2 = JSON.stringify({ model: 'gpt-4o', stream: false, messages, stream_options: { include_usage: false } });
      const second = await send('/v1/chat/completions', raw2);
      assert.equal(second.rec.body.toString(), raw2);
      assertRelayed(second.res, second.rec);
    });

    test('usage chunk cut across several upstream writes is still removed exactly', T, async () => {
      const { res, rec } = await send('/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', stream: true, messages }), {
        'x-mock-split-ms': '20',
      });
      assertRelayedWithoutUsage(res, rec);
      assert.equal(parseSSE(res.text).length, 7);
    });

    test('completions usage chunk cut across writes (OpenAI upstream) is removed exactly', T, async () => {
      const { res, rec } = await send('/v1/completions', JSON.stringify({ model: 'davinci-x', prompt: 'x', stream: true }), {
        'x-mock-split-ms': '20',
      });
      assert.equal(rec.path, '/v1/completions');
      assertRelayedWithoutUsage(res, rec);
    });

    test('an upstream error answer to a stream request is relayed unchanged', T, async () => {
      const { res, rec } = await send('/v1/chat/completions', JSON.stringify({ model: 'gpt-4o', stream: true, messages }), {
        'x-mock-scenario': 'error',
        'x-mock-status': '503',
      });
      assert.equal(rec.json.stream_options.include_usage, true);
      assertRelayed(res, rec);
      assert.equal(res.status, 503);
    });
  });
});
