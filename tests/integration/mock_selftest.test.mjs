// Self-test of the mock upstream, no gateway involved:
//   node --test tests/integration/mock_selftest.test.mjs
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import path from 'node:path';
import crypto from 'node:crypto';

import {
  startMock,
  parseUpstreamPath,
  parseMultipart,
  speechBytes,
  CONTENT_FILTER_400_BODY,
  FILTERED_STREAM_EVENTS,
} from '../mock_upstream/mock_upstream.mjs';
import { request, streamRequest, parseSSE, multipartBody, makeCA, uid, REPO_ROOT } from './harness.mjs';

const T = { timeout: 20_000 };

describe('mock upstream', () => {
  let mock;
  before(async () => {
    mock = await startMock();
  });
  after(() => mock.close());

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);

  test('parseUpstreamPath understands every layout', T, () => {
    assert.deepEqual(parseUpstreamPath('/openai/deployments/gpt4o/chat/completions'), {
      style: 'deployments',
      deployment: 'gpt4o',
      op: 'chat/completions',
    });
    assert.deepEqual(parseUpstreamPath('/pre/fix/openai/deployments/my%20model%2Fx/embeddings'), {
      style: 'deployments',
      deployment: 'my model/x',
      op: 'embeddings',
    });
    assert.deepEqual(parseUpstreamPath('/openai/v1/responses'), { style: 'azure-v1', deployment: null, op: 'responses' });
    assert.deepEqual(parseUpstreamPath('/openai/files/f1/content'), { style: 'azure', deployment: null, op: 'files/f1/content' });
    assert.deepEqual(parseUpstreamPath('/v1/audio/speech'), { style: 'openai', deployment: null, op: 'audio/speech' });
  });

  test('default chat completion (Azure shape) and request recording', T, async () => {
    const id = uid();
    const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    const res = await request(`${mock.url}/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21&x=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-test-id': id, 'api-key': 'k1' },
      body,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.match(res.headers['apim-request-id'], /^[0-9a-f-]{36}$/);
    assert.match(res.headers['x-request-id'], /^upstream-\d+$/);
    assert.equal(res.headers['x-ms-region'], 'Sweden Central');
    assert.equal(res.headers['x-ratelimit-remaining-requests'], '99');
    assert.equal(res.headers['x-ratelimit-remaining-tokens'], '9990');
    assert.equal(res.json.object, 'chat.completion');
    assert.deepEqual(res.json.usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
    assert.equal(res.json.prompt_filter_results[0].prompt_index, 0);
    assert.ok(res.json.choices[0].content_filter_results.hate);

    const rec = await find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/deployments/gpt4o/chat/completions');
    assert.deepEqual(rec.query, { 'api-version': '2024-10-21', x: '1' });
    assert.equal(rec.url, '/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21&x=1');
    assert.equal(rec.headers['api-key'], 'k1');
    assert.equal(rec.body.toString(), body);
    assert.equal(rec.json.model, 'gpt-4o');
    assert.equal(rec.route.deployment, 'gpt4o');
    assert.equal(rec.scenario, 'default');
    assert.equal(rec.socketRequestIndex, 1);
    assert.equal(typeof rec.socketId, 'number');
    assert.equal(rec.aborted, false);
    assert.ok(rec.responseBody.equals(res.body));
    assert.equal(rec.responseHeaders['x-request-id'], res.headers['x-request-id']);
  });

  test('default stream: Azure event sequence, chunked, usage only on request', T, async () => {
    for (const includeUsage of [false, true]) {
      const id = uid();
      const body = { model: 'gpt-4o', stream: true, messages: [] };
      if (includeUsage) body.stream_options = { include_usage: true };
      const res = await request(`${mock.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
      assert.equal(res.headers['content-length'], undefined);
      assert.equal(res.headers['transfer-encoding'], 'chunked');
      const events = parseSSE(res.text);
      assert.equal(events.at(-1).data, '[DONE]');
      const js = events.slice(0, -1).map((e) => JSON.parse(e.data));
      // first: prompt annotations, empty choices, empty id/model
      assert.deepEqual(js[0].choices, []);
      assert.equal(js[0].id, '');
      assert.equal(js[0].model, '');
      assert.equal(js[0].created, 0);
      assert.ok(js[0].prompt_filter_results);
      assert.equal(js[1].choices[0].delta.role, 'assistant');
      assert.equal(js[2].choices[0].delta.content, 'Hello');
      assert.equal(js[3].choices[0].delta.content, ' world');
      assert.ok(js[2].choices[0].content_filter_results.hate);
      assert.equal(js[4].choices[0].finish_reason, 'stop');
      // trailing annotation chunk after the finish chunk, without delta
      assert.equal(js[5].choices[0].delta, undefined);
      assert.ok(js[5].choices[0].content_filter_results);
      if (includeUsage) {
        assert.equal(js.length, 7);
        assert.deepEqual(js[6].choices, []);
        assert.deepEqual(js[6].usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
      } else {
        assert.equal(js.length, 6);
        assert.ok(js.every((c) => !c.usage));
      }
      const rec = await find(id);
      assert.ok(rec.responseBody.equals(res.body));
    }
  });

  test('scenario selection: header, then deployment, then model', T, async () => {
    const a = await request(`${mock.url}/openai/deployments/echo/chat/completions`, {
      headers: { 'x-mock-scenario': 'rate-limited' },
      body: { model: 'content-filter-400' },
    });
    assert.equal(a.status, 429);
    const b = await request(`${mock.url}/openai/deployments/echo/chat/completions`, { body: { model: 'content-filter-400' } });
    assert.equal(b.status, 200);
    assert.equal(b.json.method, 'POST');
    const c = await request(`${mock.url}/v1/chat/completions`, { body: { model: 'content-filter-400' } });
    assert.equal(c.status, 400);
    const d = await request(`${mock.url}/v1/chat/completions`, { body: { model: 'gpt-4o' } });
    assert.equal(d.status, 200);
    assert.equal(d.json.object, 'chat.completion');
  });

  test('error scenarios: content filter 400, 429, error status, echo', T, async () => {
    const cf = await request(`${mock.url}/v1/chat/completions`, { headers: { 'x-mock-scenario': 'content-filter-400' }, body: { model: 'm' } });
    assert.equal(cf.status, 400);
    assert.deepEqual(cf.json, CONTENT_FILTER_400_BODY);
    assert.equal(cf.json.error.innererror.content_filter_result.self_harm.filtered, true);

    const rl = await request(`${mock.url}/v1/chat/completions`, { headers: { 'x-mock-scenario': 'rate-limited' }, body: { model: 'm' } });
    assert.equal(rl.status, 429);
    assert.equal(rl.headers['retry-after'], '1');
    assert.equal(rl.headers['retry-after-ms'], '1000');
    assert.equal(rl.headers['x-ratelimit-limit-requests'], '8');
    assert.equal(rl.text, '{"error":{"code":"429","message":"Rate limit is exceeded. Try again in 1 seconds."}}');

    const e500 = await request(`${mock.url}/v1/chat/completions`, { headers: { 'x-mock-scenario': 'error' }, body: { model: 'm' } });
    assert.equal(e500.status, 500);
    assert.equal(e500.json.error.code, '500');
    const e503 = await request(`${mock.url}/v1/chat/completions`, {
      headers: { 'x-mock-scenario': 'error', 'x-mock-status': '503' },
      body: { model: 'm' },
    });
    assert.equal(e503.status, 503);

    const echo = await request(`${mock.url}/some/where?q=1`, { headers: { 'x-mock-scenario': 'echo', 'x-foo': 'bar' }, body: 'abc' });
    assert.equal(echo.status, 200);
    assert.equal(echo.json.method, 'POST');
    assert.equal(echo.json.url, '/some/where?q=1');
    assert.equal(echo.json.headers['x-foo'], 'bar');
    assert.equal(echo.json.bodyLength, 3);
  });

  test('filtered-stream is the documented blocked stream', T, async () => {
    const res = await request(`${mock.url}/v1/chat/completions`, { headers: { 'x-mock-scenario': 'filtered-stream' }, body: { model: 'm', stream: true } });
    assert.equal(res.status, 200);
    assert.deepEqual(parseSSE(res.text).map((e) => e.data), [...FILTERED_STREAM_EVENTS]);
    const last = JSON.parse(FILTERED_STREAM_EVENTS.at(-2));
    assert.equal(last.choices[0].finish_reason, 'content_filter');
  });

  test('keep-alive: socketId per connection, socketRequestIndex per request', T, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ids = [uid(), uid()];
      for (const id of ids) {
        const r = await request(`${mock.url}/v1/models`, { headers: { 'x-test-id': id }, agent });
        assert.equal(r.status, 200);
        assert.equal(r.json.object, 'list');
      }
      const [a, b] = await Promise.all(ids.map(find));
      assert.equal(a.socketId, b.socketId);
      assert.equal(a.socketRequestIndex, 1);
      assert.equal(b.socketRequestIndex, 2);
      const other = uid();
      await request(`${mock.url}/v1/models`, { headers: { 'x-test-id': other } }); // own agent, new socket
      assert.notEqual((await find(other)).socketId, a.socketId);
    } finally {
      agent.destroy();
    }
  });

  test('reset-if-reused: destroys a reused socket, answers a fresh one', T, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const hdr = { 'x-mock-scenario': 'reset-if-reused' };
      const first = await request(`${mock.url}/v1/chat/completions`, { headers: hdr, body: { model: 'm' }, agent });
      assert.equal(first.status, 200);
      const id = uid();
      await assert.rejects(
        request(`${mock.url}/v1/chat/completions`, { headers: { ...hdr, 'x-test-id': id }, body: { model: 'm' }, agent }),
        /socket hang up|ECONNRESET/,
      );
      const rec = await find(id);
      assert.equal(rec.socketRequestIndex, 2);
      assert.equal(rec.resetByMock, true);
      assert.equal(rec.aborted, false);
    } finally {
      agent.destroy();
    }
  });

  test('close: answers with connection: close and ends the socket', T, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ids = [uid(), uid()];
      for (const id of ids) {
        const r = await request(`${mock.url}/v1/chat/completions`, {
          headers: { 'x-mock-scenario': 'close', 'x-test-id': id },
          body: { model: 'm' },
          agent,
        });
        assert.equal(r.status, 200);
        assert.equal(r.headers.connection, 'close');
        assert.equal(r.json.object, 'chat.completion');
      }
      const [a, b] = await Promise.all(ids.map(find));
      assert.notEqual(a.socketId, b.socketId);
    } finally {
      agent.destroy();
    }
  });

  test('hang: never answers; waitAborted resolves when the client leaves', T, async () => {
    const id = uid();
    const s = streamRequest(`${mock.url}/v1/chat/completions`, {
      headers: { 'x-mock-scenario': 'hang', 'x-test-id': id },
      body: { model: 'm' },
    });
    const rec = await find(id);
    assert.equal(rec.aborted, false);
    await assert.rejects(mock.waitAborted(rec, 100), /timed out/);
    s.abort();
    await mock.waitAborted(rec);
    assert.equal(rec.aborted, true);
  });

  test('gated-stream: first event, then nothing until release', T, async () => {
    const tag = uid('gate');
    const id = uid();
    const s = streamRequest(`${mock.url}/openai/deployments/d/chat/completions`, {
      headers: { 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag, 'x-test-id': id },
      body: { model: 'm', stream: true },
    });
    const first = await s.waitFor((t) => t.includes('\n\n'));
    await mock.waitGated(tag);
    assert.match(first, /prompt_filter_results/);
    assert.doesNotMatch(first, /\[DONE\]/);
    const rec = await find(id);
    assert.equal(rec.finished, false);
    mock.release(tag);
    const done = await s.done;
    assert.equal(done.complete, true);
    assert.match(done.body.toString(), /data: \[DONE\]\n\n$/);
    assert.ok(done.body.equals(rec.responseBody));
    assert.equal(rec.finished, true);
  });

  test('gated-stream abort is recorded', T, async () => {
    const tag = uid('gate');
    const id = uid();
    const s = streamRequest(`${mock.url}/v1/chat/completions`, {
      headers: { 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag, 'x-test-id': id },
      body: { model: 'm', stream: true },
    });
    await s.waitFor((t) => t.includes('\n\n'));
    const rec = await find(id);
    s.abort();
    await mock.waitAborted(rec);
    mock.release(tag); // writing after the abort must not break the mock
    const ok = await request(`${mock.url}/v1/models`);
    assert.equal(ok.status, 200);
  });

  test('slow-stream delays events but delivers the default stream', T, async () => {
    const t0 = Date.now();
    const res = await request(`${mock.url}/v1/chat/completions`, {
      headers: { 'x-mock-scenario': 'slow-stream', 'x-mock-delay-ms': '10' },
      body: { model: 'm', stream: true },
    });
    assert.equal(res.status, 200);
    const events = parseSSE(res.text);
    assert.equal(events.length, 7);
    assert.ok(Date.now() - t0 >= 60, 'six pauses of 10 ms');
  });

  test('completions stream: usage chunk (choices []) only with include_usage', T, async () => {
    for (const includeUsage of [false, true]) {
      const body = { model: 'm', prompt: 'x', stream: true };
      if (includeUsage) body.stream_options = { include_usage: true };
      const res = await request(`${mock.url}/openai/deployments/d/completions`, { body });
      assert.equal(res.status, 200);
      const events = parseSSE(res.text);
      assert.equal(events.at(-1).data, '[DONE]');
      const js = events.slice(0, -1).map((e) => JSON.parse(e.data));
      assert.equal(js[2].choices[0].finish_reason, 'stop');
      if (includeUsage) {
        assert.equal(js.length, 4);
        assert.deepEqual(js[3].choices, []);
        assert.equal(js[3].object, 'text_completion');
        assert.deepEqual(js[3].usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
      } else {
        assert.equal(js.length, 3);
        assert.ok(js.every((c) => !c.usage));
      }
    }
  });

  test('x-mock-split-ms: every event arrives in two pieces, same bytes as unsplit', T, async () => {
    const body = { model: 'm', stream: true, stream_options: { include_usage: true } };
    const plain = await request(`${mock.url}/v1/chat/completions`, { body });
    const s = streamRequest(`${mock.url}/v1/chat/completions`, { headers: { 'x-mock-split-ms': '15' }, body });
    const reads = [];
    s.onData((c) => reads.push(c.toString()));
    const done = await s.done;
    assert.equal(done.complete, true);
    // Bodies differ only in the ids (a per-request counter): compare with the ids normalised.
    const norm = (t) => t.replace(/chatcmpl-mock\d+/g, 'ID');
    assert.equal(norm(done.body.toString()), norm(plain.text));
    const events = parseSSE(plain.text).length;
    assert.ok(reads.length >= 2 * events - 2, `expected about ${2 * events} reads, got ${reads.length}`);
    assert.ok(reads.some((r) => r.startsWith('data: {') && !r.includes('\n\n')), 'an event cut in its JSON');
  });

  test('streamRequest: async iteration and onData see the same bytes', T, async () => {
    const s = streamRequest(`${mock.url}/v1/chat/completions`, {
      headers: { 'x-mock-scenario': 'slow-stream', 'x-mock-delay-ms': '5' },
      body: { model: 'm', stream: true },
    });
    const seen = [];
    s.onData((c) => seen.push(c));
    const iterated = [];
    for await (const c of s) iterated.push(c);
    const done = await s.done;
    assert.equal(done.complete, true);
    assert.ok(Buffer.concat(iterated).equals(done.body));
    assert.ok(Buffer.concat(seen).equals(done.body));
    assert.equal(parseSSE(done.body.toString()).at(-1).data, '[DONE]');
  });

  test('every operation has a plausible default answer', T, async () => {
    const u = mock.url;
    let r = await request(`${u}/openai/deployments/d/completions`, { body: { model: 'm', prompt: 'x' } });
    assert.equal(r.json.object, 'text_completion');

    r = await request(`${u}/openai/deployments/d/embeddings`, { body: { model: 'm', input: 'x' } });
    assert.deepEqual(r.json.data[0].embedding, [0.1, 0.2, 0.3]);
    assert.equal(r.json.object, 'list');
    assert.ok(r.json.usage);
    r = await request(`${u}/v1/embeddings`, { body: { model: 'm', input: 'x', encoding_format: 'base64' } });
    const f = new Float32Array(new Uint8Array(Buffer.from(r.json.data[0].embedding, 'base64')).buffer);
    assert.deepEqual([...f].map((v) => Math.round(v * 10) / 10), [0.1, 0.2, 0.3]);

    const mp = multipartBody([
      { name: 'model', value: 'whisper-1' },
      { name: 'file', filename: 'a.wav', contentType: 'audio/wav', data: Buffer.from('RIFFxxxx') },
    ]);
    for (const op of ['audio/transcriptions', 'audio/translations']) {
      const id = uid();
      r = await request(`${u}/openai/v1/${op}`, { headers: { 'content-type': mp.contentType, 'x-test-id': id }, body: mp.body });
      assert.deepEqual(r.json, { text: 'hello from mock' });
      const rec = await find(id);
      assert.equal(rec.multipart.fields.model, 'whisper-1');
      assert.equal(rec.multipart.parts[1].filename, 'a.wav');
      assert.equal(rec.multipart.parts[1].data.toString(), 'RIFFxxxx');
    }

    r = await request(`${u}/v1/audio/speech`, { body: { model: 'tts-1', input: 'x', voice: 'alloy' } });
    assert.equal(r.headers['content-type'], 'audio/mpeg');
    assert.equal(r.body.length, 1000);
    assert.ok(r.body.equals(speechBytes()));

    r = await request(`${u}/v1/images/generations`, { body: { model: 'dall-e-3', prompt: 'x' } });
    assert.equal(r.json.data[0].url, 'https://example/img.png');
    assert.ok(r.json.data[0].content_filter_results && r.json.data[0].prompt_filter_results);
    r = await request(`${u}/v1/images/edits`, { headers: { 'content-type': mp.contentType }, body: mp.body });
    assert.equal(typeof r.json.data[0].b64_json, 'string');

    r = await request(`${u}/openai/responses?api-version=2025-04-01-preview`, { body: { model: 'dep', input: 'hi' } });
    assert.equal(r.json.object, 'response');
    assert.equal(r.json.model, 'dep');
    assert.equal(r.json.usage.total_tokens, 18);
    r = await request(`${u}/openai/v1/responses`, { body: { model: 'dep', input: 'hi', stream: true } });
    const evs = parseSSE(r.text);
    assert.equal(evs[0].event, 'response.created');
    assert.equal(evs.at(-1).event, 'response.completed');
    assert.equal(JSON.parse(evs.at(-1).data).response.usage.total_tokens, 18);
    r = await request(`${u}/v1/responses/resp_1`);
    assert.equal(r.json.id, 'resp_1');

    const fileMp = multipartBody([
      { name: 'purpose', value: 'batch' },
      { name: 'file', filename: 'b.jsonl', data: '{}\n' },
    ]);
    r = await request(`${u}/openai/files`, { headers: { 'content-type': fileMp.contentType }, body: fileMp.body });
    assert.equal(r.status, 200);
    assert.deepEqual([r.json.id, r.json.object, r.json.purpose], ['file-mock1', 'file', 'batch']);
    r = await request(`${u}/v1/files/file-1/content`);
    assert.equal(r.status, 200);

    r = await request(`${u}/openai/batches`, { body: { input_file_id: 'file-1', endpoint: '/chat/completions', completion_window: '24h' } });
    assert.deepEqual([r.json.id, r.json.object], ['batch_mock1', 'batch']);

    r = await request(`${u}/openai/models`);
    assert.equal(r.json.object, 'list');
    r = await request(`${u}/openai/fine_tuning/jobs`, { body: { model: 'gpt-4o-mini', training_file: 'file-1' } });
    assert.equal(r.json.object, 'fine_tuning.job');
    r = await request(`${u}/openai/threads`, { body: {} });
    assert.deepEqual(r.json, { object: 'mock', path: '/openai/threads' });
  });

  test('20 MiB request body is read in full', T, async () => {
    const big = crypto.randomBytes(20 * 1024 * 1024);
    const id = uid();
    const r = await request(`${mock.url}/v1/files`, {
      headers: { 'content-type': 'application/octet-stream', 'x-test-id': id, 'x-mock-scenario': 'echo' },
      body: big,
    });
    assert.equal(r.json.bodyLength, big.length);
    const rec = await find(id);
    assert.ok(rec.body.equals(big));
  });

  test('clear() empties the log', T, async () => {
    await request(`${mock.url}/v1/models`);
    mock.clear();
    assert.equal(mock.requests.length, 0);
  });
});

test('mock over TLS with a cert from makeCA', T, async () => {
  const pki = makeCA();
  const mock = await startMock({ tls: { key: pki.server.key, cert: pki.server.cert } });
  try {
    assert.match(mock.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const r = await request(`${mock.url}/v1/models`, { ca: pki.ca.cert });
    assert.equal(r.status, 200);
    const r2 = await request(`https://localhost:${mock.port}/v1/models`, { ca: pki.ca.cert }).catch((e) => e);
    // localhost may resolve to ::1 first, where the mock does not listen; only a TLS failure is a bug.
    if (!(r2 instanceof Error)) assert.equal(r2.status, 200);
    else assert.doesNotMatch(r2.message, /certificate|altname/i);
    await assert.rejects(request(`${mock.url}/v1/models`), /self[- ]signed|unable to (get|verify)|certificate/i);
    await assert.rejects(request(`${mock.url}/v1/models`, { ca: pki.untrustedCA.cert }), /certificate|unable/i);
  } finally {
    await mock.close();
  }
});

test('standalone: node mock_upstream.mjs --port 0 prints "listening <port>"', T, async (t) => {
  const script = path.join(REPO_ROOT, 'tests', 'mock_upstream', 'mock_upstream.mjs');
  const proc = spawn(process.execPath, [script, '--port', '0', '--host', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => proc.kill('SIGKILL'));
  const port = await new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (c) => {
      out += c;
      const m = /^listening (\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`mock exited early with ${code}: ${out}`)));
  });
  const r = await request(`http://127.0.0.1:${port}/openai/deployments/d/chat/completions?api-version=2024-10-21`, {
    body: { model: 'x', messages: [] },
  });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'chat.completion');
  proc.kill('SIGTERM');
  const code = await new Promise((r2) => proc.once('exit', (c) => r2(c)));
  assert.equal(code, 0);
});

test('parseMultipart round-trips multipartBody', T, () => {
  const mp = multipartBody([
    { name: 'model', value: 'm1' },
    { name: 'file', filename: 'x.bin', contentType: 'application/octet-stream', data: Buffer.from([0, 1, 2, 13, 10, 45, 45]) },
  ]);
  const p = parseMultipart(mp.body, mp.contentType);
  assert.deepEqual(p.fields, { model: 'm1' });
  assert.deepEqual([...p.parts[1].data], [0, 1, 2, 13, 10, 45, 45]);
});
