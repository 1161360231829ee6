// The official `openai` Node SDK (v4, the OpenAI class) with its base URL at the gateway:
// every operation an application uses, checked on both sides — what the SDK returns, and what the
// upstream (the mock) received: path, api-version, the upstream's own key and never the client's.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';

import { speechBytes, embeddingVector, sampleFromSchema, FILTERED_STREAM_EVENTS } from '../mock_upstream/mock_upstream.mjs';
import { uid, isUsageChunk } from '../integration/harness.mjs';
import {
  T,
  HOOK,
  AZ_API_VERSION,
  AZ_RESPONSES_API_VERSION,
  DEPLOYMENTS,
  OA_CHAT_MODEL,
  OA_EMBED_MODEL,
  OA_AUDIO_MODEL,
  randomKey,
  startStack,
  reqOpts,
  assertAzureDeploymentRequest,
  assertAzureAuthAndVersion,
  assertOpenAIRequest,
  sseData,
  assembledContent,
  mockChunks,
  decodeBase64Embedding,
} from './common.mjs';

const KEY = randomKey('app');

describe('OpenAI SDK (baseURL = gateway /v1)', () => {
  let s;
  let client;
  before(async () => {
    s = await startStack([{ name: 'app', key: KEY }]);
    client = new OpenAI({ baseURL: `${s.gw.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 15_000 });
  }, HOOK);
  after(async () => {
    await s?.stop();
  });

  const messages = [{ role: 'user', content: 'Hello' }];

  // ---------------------------------------------------------------------------------------------
  // chat

  test('chat: plain completion, Azure annotations and headers intact', T, async () => {
    const id = uid();
    const body = { model: 'gpt-4o', messages, temperature: 0.2, max_tokens: 50 };
    const { data: chat, response } = await client.chat.completions.create(body, reqOpts(id)).withResponse();

    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(rec.json, body, 'body forwarded unchanged');
    // The client's x-request-id is the request id, on the response and upstream.
    assert.equal(response.headers.get('x-gateway-request-id'), id);
    assert.equal(rec.headers['x-request-id'], id);
    assert.equal(rec.headers['x-ms-client-request-id'], id);
    assert.equal(response.headers.get('apim-request-id'), rec.responseHeaders['apim-request-id']);
    assert.match(rec.headers['user-agent'], /^OpenAI\/JS 4\./, 'SDK headers pass through');
    assert.equal(rec.headers['x-stainless-lang'], 'js');

    assert.deepEqual(chat, JSON.parse(rec.responseBody), 'the SDK returns what the upstream sent');
    assert.equal(chat.choices[0].message.content, 'Hello world');
    assert.equal(chat.prompt_filter_results[0].content_filter_results.jailbreak.detected, false);
    assert.equal(chat._request_id, rec.responseHeaders['x-request-id'], "upstream's x-request-id relayed");
  });

  test('chat to the openai upstream: /v1/chat/completions, Bearer upstream key, body unchanged', T, async () => {
    const id = uid();
    const body = { model: OA_CHAT_MODEL, messages };
    const chat = await client.chat.completions.create(body, reqOpts(id));
    const rec = await s.find(id);
    assertOpenAIRequest(rec, 'chat/completions', KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(chat, JSON.parse(rec.responseBody));
  });

  const weatherTool = {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
      strict: true,
    },
  };
  const expectedArgs = { city: 'mock', unit: 'celsius' };

  test('chat with tools: the SDK returns the tool call; the tool result goes back unchanged', T, async () => {
    const id = uid();
    const body = { model: 'gpt-4o', messages, tools: [weatherTool], tool_choice: 'auto' };
    const chat = await client.chat.completions.create(body, reqOpts(id, { 'x-mock-scenario': 'tool-call' }));
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(rec.json, body);

    const choice = chat.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), expectedArgs);
    assert.deepEqual(chat, JSON.parse(rec.responseBody));

    // Second turn: the assistant's tool call and the tool's answer.
    const id2 = uid();
    const body2 = {
      model: 'gpt-4o',
      messages: [...messages, choice.message, { role: 'tool', tool_call_id: call.id, content: '{"temp_c": 21}' }],
      tools: [weatherTool],
    };
    const chat2 = await client.chat.completions.create(body2, reqOpts(id2));
    const rec2 = await s.find(id2);
    assert.deepEqual(rec2.json, JSON.parse(JSON.stringify(body2)));
    assert.equal(chat2.choices[0].message.content, 'Hello world');
  });

  test('chat with tools, streamed through the stream() helper: tool call assembled', T, async () => {
    const id = uid();
    const stream = client.beta.chat.completions.stream(
      { model: 'gpt-4o', messages, tools: [weatherTool] },
      reqOpts(id, { 'x-mock-scenario': 'tool-call' }),
    );
    const final = await stream.finalChatCompletion();
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.equal(rec.json.stream, true);
    const call = final.choices[0].message.tool_calls[0];
    assert.equal(final.choices[0].finish_reason, 'tool_calls');
    assert.equal(call.function.name, 'get_weather');
    assert.equal(call.id, 'call_mock1');
    assert.deepEqual(JSON.parse(call.function.arguments), expectedArgs);
    assert.deepEqual(call.function.parsed_arguments, expectedArgs, 'strict tool: the SDK parsed the arguments');
  });

  test('chat with response_format json_schema: the SDK parses the JSON content', T, async () => {
    const id = uid();
    const schema = {
      type: 'object',
      properties: {
        city: { type: 'string' },
        temperature_c: { type: 'number' },
        sunny: { type: 'boolean' },
        tags: { type: 'array', items: { type: 'string' } },
      },
      required: ['city', 'temperature_c', 'sunny', 'tags'],
      additionalProperties: false,
    };
    const response_format = { type: 'json_schema', json_schema: { name: 'weather', strict: true, schema } };
    const body = { model: 'gpt-4o', messages, response_format };
    const completion = await client.beta.chat.completions.parse(body, reqOpts(id, { 'x-mock-scenario': 'json-schema' }));

    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(rec.json, body, 'response_format forwarded unchanged');
    const expected = { city: 'mock', temperature_c: 1.5, sunny: true, tags: ['mock'] };
    assert.deepEqual(sampleFromSchema(schema), expected);
    const sentContent = JSON.parse(rec.responseBody).choices[0].message.content;
    assert.equal(completion.choices[0].message.content, sentContent);
    assert.deepEqual(completion.choices[0].message.parsed, expected);
  });

  test('chat.completions.stream() helper: finalChatCompletion() assembles the message', T, async () => {
    const id = uid();
    // Azure's default filter mode: no annotation chunk without `delta` after the finish chunk
    // (the v4 helper cannot take those; see the report / openai-node#1015).
    const stream = client.beta.chat.completions.stream(
      { model: 'gpt-4o', messages },
      reqOpts(id, { 'x-mock-no-trailing-annotation': '1' }),
    );
    const deltas = [];
    stream.on('content', (delta) => deltas.push(delta));
    const final = await stream.finalChatCompletion();
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.equal(rec.headers['x-stainless-helper-method'], 'stream');
    assert.equal(rec.json.stream, true);
    assert.deepEqual(rec.json.stream_options, { include_usage: true }, 'the gateway asked for usage');

    const upstreamText = assembledContent(mockChunks(rec));
    assert.equal(upstreamText, 'Hello world');
    assert.equal(final.choices[0].message.content, upstreamText);
    assert.equal(final.choices[0].message.role, 'assistant');
    assert.equal(final.choices[0].finish_reason, 'stop');
    assert.equal(deltas.join(''), upstreamText);
    assert.equal(await stream.finalContent(), upstreamText);
    assert.equal(final.usage, undefined, 'the usage chunk the gateway asked for does not reach the SDK');
  });

  test('stream: true async iterator: chunks = upstream chunks minus the usage chunk', T, async () => {
    const id = uid();
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true }, reqOpts(id));
    const chunks = [];
    for await (const c of stream) chunks.push(c);

    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(rec.json, { model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } });
    const upstream = mockChunks(rec);
    assert.equal(upstream.filter((c) => isUsageChunk(JSON.stringify(c))).length, 1, 'the upstream sent usage');
    assert.deepEqual(chunks, upstream.filter((c) => !isUsageChunk(JSON.stringify(c))));
    assert.equal(assembledContent(chunks), assembledContent(upstream));
    assert.equal(assembledContent(chunks), 'Hello world');
    assert.ok(chunks.every((c) => c.usage == null), 'no chunk with usage');
    // Azure's annotations reach the SDK: the prompt-filter first chunk and the trailing annotation.
    assert.ok(chunks[0].prompt_filter_results, 'first chunk carries prompt_filter_results');
    assert.ok(chunks.at(-1).choices[0].content_filter_offsets, 'trailing annotation chunk kept');
  });

  test("Azure's filtered stream (finish_reason content_filter) reaches the SDK's iterator unchanged", T, async () => {
    const id = uid();
    const stream = await client.chat.completions.create(
      { model: 'gpt-4o', messages, stream: true },
      reqOpts(id, { 'x-mock-scenario': 'filtered-stream' }),
    );
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(chunks, FILTERED_STREAM_EVENTS.filter((e) => e !== '[DONE]').map((e) => JSON.parse(e)));
    const last = chunks.at(-1).choices[0];
    assert.equal(last.finish_reason, 'content_filter');
    assert.deepEqual(last.content_filter_results.protected_material_text, { detected: true, filtered: true });
  });

  test('stream_options.include_usage: the SDK sees the usage chunk; body forwarded unchanged', T, async () => {
    const id = uid();
    const body = { model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } };
    const stream = await client.chat.completions.create(body, reqOpts(id));
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(chunks, mockChunks(rec), 'every chunk reaches the SDK');
    const usage = chunks.filter((c) => c.usage);
    assert.equal(usage.length, 1);
    assert.deepEqual(usage[0].choices, []);
    assert.deepEqual(usage[0].usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
    assert.equal(assembledContent(chunks), 'Hello world');
  });

  test('stream to the openai upstream: usage asked for and stripped there too', T, async () => {
    const id = uid();
    const stream = await client.chat.completions.create({ model: OA_CHAT_MODEL, messages, stream: true }, reqOpts(id));
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const rec = await s.find(id);
    assertOpenAIRequest(rec, 'chat/completions', KEY);
    assert.deepEqual(rec.json.stream_options, { include_usage: true });
    assert.ok(chunks.every((c) => c.usage == null), 'no chunk with usage');
    assert.equal(assembledContent(chunks), 'Hello world');
  });

  // ---------------------------------------------------------------------------------------------
  // completions, embeddings

  test('legacy completions', T, async () => {
    const id = uid();
    const body = { model: 'gpt-35-turbo-instruct', prompt: 'Say hello', max_tokens: 5 };
    const res = await client.completions.create(body, reqOpts(id));
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, DEPLOYMENTS['gpt-35-turbo-instruct'], 'completions', KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(res, JSON.parse(rec.responseBody));
    assert.equal(res.choices[0].text, 'Hello world');
  });

  test('legacy completions, streamed: text assembled, no usage chunk', T, async () => {
    const id = uid();
    const stream = await client.completions.create(
      { model: 'gpt-35-turbo-instruct', prompt: 'Say hello', stream: true },
      reqOpts(id),
    );
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, DEPLOYMENTS['gpt-35-turbo-instruct'], 'completions', KEY);
    assert.deepEqual(rec.json.stream_options, { include_usage: true });
    assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), 'Hello world');
    assert.ok(chunks.every((c) => c.usage == null), 'no chunk with usage');
  });

  test('embeddings: single string, encoding_format float', T, async () => {
    const id = uid();
    const body = { model: 'text-embedding-3-small', input: 'The quick brown fox', encoding_format: 'float' };
    const res = await client.embeddings.create(body, reqOpts(id));
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'embed-small', 'embeddings', KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(res, JSON.parse(rec.responseBody));
    assert.deepEqual(res.data[0].embedding, [0.1, 0.2, 0.3]);
  });

  test('embeddings: array input, SDK default (base64) decoded per input', T, async () => {
    const id = uid();
    const input = ['first', 'second', 'third'];
    const res = await client.embeddings.create(
      { model: 'text-embedding-3-small', input },
      reqOpts(id, { 'x-mock-scenario': 'per-input-embeddings' }),
    );
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'embed-small', 'embeddings', KEY);
    assert.deepEqual(rec.json, { model: 'text-embedding-3-small', input, encoding_format: 'base64' });
    const sent = JSON.parse(rec.responseBody);
    assert.equal(res.data.length, 3);
    for (let i = 0; i < 3; i++) {
      assert.equal(res.data[i].index, i);
      assert.deepEqual(res.data[i].embedding, decodeBase64Embedding(sent.data[i].embedding));
      assert.deepEqual(res.data[i].embedding, embeddingVector(i));
    }
  });

  test("embeddings: the SDK's default sends encoding_format base64 and decodes what the mock encoded", T, async () => {
    const id = uid();
    const res = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'hello' }, reqOpts(id));
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'embed-small', 'embeddings', KEY);
    assert.equal(rec.json.encoding_format, 'base64', 'v4 asks for base64 by default');
    const sent = JSON.parse(rec.responseBody).data[0].embedding;
    assert.equal(typeof sent, 'string', 'the mock answered base64');
    const decoded = decodeBase64Embedding(sent);
    assert.deepEqual(res.data[0].embedding, decoded);
    assert.deepEqual(decoded, Array.from(new Float32Array([0.1, 0.2, 0.3])));
    assert.deepEqual(res.usage, { prompt_tokens: 3, total_tokens: 3 });
  });

  // ---------------------------------------------------------------------------------------------
  // audio, images

  test('audio transcriptions: multipart with model and file at the deployment path', T, async () => {
    const id = uid();
    const wav = Buffer.concat([Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt '), Buffer.alloc(64, 7)]);
    const res = await client.audio.transcriptions.create(
      { file: await toFile(wav, 'a.wav'), model: 'whisper-1', language: 'en' },
      reqOpts(id),
    );
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'whisper-prod', 'audio/transcriptions', KEY);
    assert.match(rec.headers['content-type'], /^multipart\/form-data; boundary=/);
    assert.ok(rec.multipart, 'the mock parsed a multipart body');
    assert.equal(rec.multipart.fields.model, 'whisper-1');
    assert.equal(rec.multipart.fields.language, 'en');
    const file = rec.multipart.parts.find((p) => p.name === 'file');
    assert.ok(file, 'file part present');
    assert.equal(file.filename, 'a.wav');
    assert.ok(file.data.equals(wav), 'file bytes unchanged');
    assert.deepEqual(res, { text: 'hello from mock' });
  });

  test('audio speech: binary body, bytes equal what the mock sent', T, async () => {
    const id = uid();
    const body = { model: 'tts-1', voice: 'alloy', input: 'Hello there' };
    const res = await client.audio.speech.create(body, reqOpts(id));
    const bytes = Buffer.from(await res.arrayBuffer());
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'tts-prod', 'audio/speech', KEY);
    assert.deepEqual(rec.json, body);
    assert.equal(res.headers.get('content-type'), 'audio/mpeg');
    assert.ok(bytes.equals(rec.responseBody), 'audio bytes relayed unchanged');
    assert.ok(bytes.equals(speechBytes()));
  });

  test('images.generate', T, async () => {
    const id = uid();
    const body = { model: 'dall-e-3', prompt: 'A lighthouse at dawn', n: 1, size: '1024x1024' };
    const res = await client.images.generate(body, reqOpts(id));
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'dalle3-prod', 'images/generations', KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(res, JSON.parse(rec.responseBody));
    assert.equal(res.data[0].url, 'https://example/img.png');
    assert.equal(res.data[0].content_filter_results.hate.severity, 'safe', 'per-image filter results kept');
  });

  // ---------------------------------------------------------------------------------------------
  // responses

  test('responses.create: /openai/responses with the deployment as model', T, async () => {
    const id = uid();
    const res = await client.responses.create({ model: 'gpt-4o', input: 'Hello', instructions: 'Be brief' }, reqOpts(id));
    const rec = await s.find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/responses');
    assertAzureAuthAndVersion(rec, AZ_RESPONSES_API_VERSION, KEY);
    assert.deepEqual(rec.json, { model: 'gpt4o-prod', input: 'Hello', instructions: 'Be brief' });
    const sent = JSON.parse(rec.responseBody);
    assert.equal(res.id, sent.id);
    assert.equal(res.status, 'completed');
    assert.deepEqual(res.output, sent.output);
    assert.equal(res.output_text, 'Hello world');
  });

  test('responses.create stream: events in order, final event response.completed', T, async () => {
    const id = uid();
    const stream = await client.responses.create({ model: 'gpt-4o', input: 'Hello', stream: true }, reqOpts(id));
    const events = [];
    for await (const ev of stream) events.push(ev);
    const rec = await s.find(id);
    assert.equal(rec.path, '/openai/responses');
    assertAzureAuthAndVersion(rec, AZ_RESPONSES_API_VERSION, KEY);
    assert.deepEqual(rec.json, { model: 'gpt4o-prod', input: 'Hello', stream: true });
    assert.deepEqual(
      events,
      sseData(rec.responseBody).map((d) => JSON.parse(d)),
      'every event the upstream sent, unchanged',
    );
    assert.equal(events[0].type, 'response.created');
    assert.equal(events.at(-1).type, 'response.completed');
    assert.equal(events.at(-1).response.status, 'completed');
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(text, 'Hello world');
  });

  // ---------------------------------------------------------------------------------------------
  // models, files, batches

  test("models.list(): the gateway's own list, nothing sent upstream", T, async () => {
    const id = uid();
    const before = s.mock.requests.length;
    const page = await client.models.list(reqOpts(id));
    const ids = page.data.map((m) => m.id);
    // Config order: the azure upstream's deployments keys (all routed there), then the route
    // matches without wildcards (the openai upstream's three), de-duplicated.
    assert.deepEqual(ids, [...Object.keys(DEPLOYMENTS), OA_AUDIO_MODEL, OA_EMBED_MODEL, OA_CHAT_MODEL]);
    for (const m of page.data) {
      assert.equal(m.object, 'model');
      assert.equal(m.owned_by, 'llm-gateway');
    }
    const one = await client.models.retrieve('gpt-4o', reqOpts(uid()));
    assert.equal(one.id, 'gpt-4o');
    assert.equal(s.mock.requests.length, before, 'answered by the gateway itself');
    assert.equal(s.all(id).length, 0);
  });

  test("files.create: multipart to /openai/files with the upstream's api-version", T, async () => {
    const id = uid();
    const jsonl = Buffer.from('{"custom_id":"r1","method":"POST","url":"/chat/completions","body":{}}\n');
    const file = await client.files.create({ file: await toFile(jsonl, 'batch.jsonl'), purpose: 'batch' }, reqOpts(id));
    const rec = await s.find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/files');
    assertAzureAuthAndVersion(rec, AZ_API_VERSION, KEY);
    assert.match(rec.headers['content-type'], /^multipart\/form-data; boundary=/);
    assert.equal(rec.multipart.fields.purpose, 'batch');
    const part = rec.multipart.parts.find((p) => p.name === 'file');
    assert.equal(part.filename, 'batch.jsonl');
    assert.ok(part.data.equals(jsonl), 'file bytes unchanged');
    assert.deepEqual(file, JSON.parse(rec.responseBody));
    assert.equal(file.id, 'file-mock1');
    assert.equal(file.purpose, 'batch');
  });

  test('batches.create: /openai/batches, body unchanged', T, async () => {
    const id = uid();
    const body = { input_file_id: 'file-mock1', endpoint: '/v1/chat/completions', completion_window: '24h' };
    const batch = await client.batches.create(body, reqOpts(id));
    const rec = await s.find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/batches');
    assertAzureAuthAndVersion(rec, AZ_API_VERSION, KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(batch, JSON.parse(rec.responseBody));
    assert.equal(batch.input_file_id, 'file-mock1');
    assert.equal(batch.endpoint, '/v1/chat/completions');
  });
});
