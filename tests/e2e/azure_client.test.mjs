// The official `openai` Node SDK's AzureOpenAI class with its endpoint at the gateway. It sends
// `api-key: <key>` and Azure paths, `/openai/deployments/{deployment}/{op}?api-version=...`; the
// gateway routes on the deployment name and must reach an azure upstream (its own deployment,
// api-version and key) and an openai upstream (`/v1/{op}`, body model = the deployment name, no
// api-version, Bearer key) alike.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { AzureOpenAI, toFile } from 'openai';

import { CONTENT_FILTER_400_BODY, embeddingVector } from '../mock_upstream/mock_upstream.mjs';
import { uid, isUsageChunk } from '../integration/harness.mjs';
import {
  T,
  HOOK,
  AZ_API_VERSION,
  CLIENT_API_VERSION,
  DEPLOYMENTS,
  OA_CHAT_MODEL,
  OA_EMBED_MODEL,
  OA_AUDIO_MODEL,
  AZ_RESPONSES_API_VERSION,
  randomKey,
  startStack,
  reqOpts,
  assertAzureDeploymentRequest,
  assertAzureAuthAndVersion,
  assertOpenAIRequest,
  assembledContent,
  mockChunks,
} from './common.mjs';

const KEY = randomKey('app');
const WRONG_KEY = randomKey('wrong');

// The same client code against the two kinds of upstream: only the deployment name differs, and
// the gateway's routes decide where it goes.
const TARGETS = [
  {
    name: 'azure upstream',
    chat: 'gpt-4o',
    embed: 'text-embedding-3-small',
    audio: 'whisper-1',
    /** What the mock must have received for `op` sent with deployment `dep` and body `sent`. */
    check(rec, dep, op, sent) {
      assertAzureDeploymentRequest(rec, DEPLOYMENTS[dep], op, KEY, WRONG_KEY);
      assert.deepEqual(rec.json, sent, 'body unchanged');
    },
  },
  {
    name: 'openai upstream',
    chat: OA_CHAT_MODEL,
    embed: OA_EMBED_MODEL,
    audio: OA_AUDIO_MODEL,
    check(rec, dep, op, sent) {
      assert.equal(rec.method, 'POST');
      assertOpenAIRequest(rec, op, KEY, WRONG_KEY);
      assert.deepEqual(rec.json, { ...sent, model: dep }, 'body model = the deployment name');
    },
  },
];

describe('AzureOpenAI SDK (endpoint = gateway)', () => {
  let s;
  before(async () => {
    s = await startStack([{ name: 'app', key: KEY }]);
  }, HOOK);
  after(async () => {
    await s?.stop();
  });

  const azure = (deployment, apiKey = KEY) =>
    new AzureOpenAI({
      endpoint: s.gw.url,
      apiKey,
      deployment,
      apiVersion: CLIENT_API_VERSION,
      maxRetries: 0,
      timeout: 15_000,
    });
  const messages = [{ role: 'user', content: 'Hello' }];

  /** The gateway received the SDK's Azure-shaped request and authenticated its api-key. */
  async function assertSdkSentAzurePath(id, path) {
    const line = await s.accessLog(id);
    assert.equal(line.path, path, 'what the SDK sent');
    assert.equal(line.key, 'app', "the SDK's api-key header authenticated the client");
    assert.match(line.user_agent, /^AzureOpenAI\/JS /);
  }

  for (const target of TARGETS) {
    describe(target.name, () => {
      test('chat', T, async () => {
        const id = uid();
        // Routing goes by the deployment in the path; to the openai upstream the body's model
        // ('gpt-4o', not the deployment there) must become the deployment name.
        const body = { model: 'gpt-4o', messages, max_tokens: 20 };
        const chat = await azure(target.chat).chat.completions.create(body, reqOpts(id));
        await assertSdkSentAzurePath(id, `/openai/deployments/${target.chat}/chat/completions`);
        const rec = await s.find(id);
        target.check(rec, target.chat, 'chat/completions', body);
        assert.deepEqual(chat, JSON.parse(rec.responseBody));
        assert.equal(chat.choices[0].message.content, 'Hello world');
      });

      test('streaming: content assembled, no usage chunk, usage asked upstream', T, async () => {
        const id = uid();
        const body = { model: 'gpt-4o', messages, stream: true };
        const stream = await azure(target.chat).chat.completions.create(body, reqOpts(id));
        const chunks = [];
        for await (const c of stream) chunks.push(c);
        await assertSdkSentAzurePath(id, `/openai/deployments/${target.chat}/chat/completions`);
        const rec = await s.find(id);
        target.check(rec, target.chat, 'chat/completions', { ...body, stream_options: { include_usage: true } });
        const upstream = mockChunks(rec);
        assert.deepEqual(chunks, upstream.filter((c) => !isUsageChunk(JSON.stringify(c))));
        assert.equal(assembledContent(chunks), 'Hello world');
        assert.ok(chunks.every((c) => c.usage == null), 'no chunk with usage');
      });

      test('embeddings (SDK default base64, array input)', T, async () => {
        const id = uid();
        const input = ['one', 'two'];
        const res = await azure(target.embed).embeddings.create(
          { model: target.embed, input },
          reqOpts(id, { 'x-mock-scenario': 'per-input-embeddings' }),
        );
        await assertSdkSentAzurePath(id, `/openai/deployments/${target.embed}/embeddings`);
        const rec = await s.find(id);
        target.check(rec, target.embed, 'embeddings', { model: target.embed, input, encoding_format: 'base64' });
        assert.deepEqual(
          res.data.map((d) => d.embedding),
          [embeddingVector(0), embeddingVector(1)],
        );
      });

      test('audio transcriptions (multipart): model field and file part', T, async () => {
        const id = uid();
        const wav = Buffer.concat([Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt '), Buffer.alloc(48, 3)]);
        const res = await azure(target.audio).audio.transcriptions.create(
          { file: await toFile(wav, 'a.wav'), model: 'whisper-1' },
          reqOpts(id),
        );
        await assertSdkSentAzurePath(id, `/openai/deployments/${target.audio}/audio/transcriptions`);
        const rec = await s.find(id);
        assert.equal(rec.method, 'POST');
        assert.match(rec.headers['content-type'], /^multipart\/form-data; boundary=/);
        if (target.name === 'azure upstream') {
          assertAzureDeploymentRequest(rec, DEPLOYMENTS[target.audio], 'audio/transcriptions', KEY, WRONG_KEY);
          assert.equal(rec.multipart.fields.model, 'whisper-1', "the form's model left as it is");
        } else {
          assertOpenAIRequest(rec, 'audio/transcriptions', KEY, WRONG_KEY);
          assert.equal(rec.multipart.fields.model, target.audio, "the form's model = the deployment name");
        }
        const file = rec.multipart.parts.find((p) => p.name === 'file');
        assert.equal(file.filename, 'a.wav');
        assert.ok(file.data.equals(wav), 'file bytes unchanged');
        assert.deepEqual(res, { text: 'hello from mock' });
      });

      test('responses.create (resource path /openai/responses, model from the body)', T, async () => {
        const id = uid();
        const body = { model: target.chat, input: 'Hello' };
        const res = await azure(target.chat).responses.create(body, reqOpts(id));
        await assertSdkSentAzurePath(id, '/openai/responses');
        const rec = await s.find(id);
        assert.equal(rec.method, 'POST');
        if (target.name === 'azure upstream') {
          assert.equal(rec.path, '/openai/responses');
          assertAzureAuthAndVersion(rec, AZ_RESPONSES_API_VERSION, KEY, WRONG_KEY);
          assert.deepEqual(rec.json, { ...body, model: DEPLOYMENTS[target.chat] });
        } else {
          assertOpenAIRequest(rec, 'responses', KEY, WRONG_KEY);
          assert.deepEqual(rec.json, body);
        }
        assert.equal(res.output_text, 'Hello world');
      });

      test('AuthenticationError: wrong api-key -> 401, nothing sent upstream', T, async () => {
        const id = uid();
        await assert.rejects(azure(target.chat, WRONG_KEY).chat.completions.create({ model: 'gpt-4o', messages }, reqOpts(id)), (err) => {
          assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
          assert.equal(err.status, 401);
          assert.equal(err.code, 'invalid_api_key');
          assert.ok(!err.message.includes(WRONG_KEY));
          return true;
        });
        assert.equal(s.all(id).length, 0);
      });

      test("NotFoundError: the upstream's 404 passes through", T, async () => {
        const id = uid();
        let caught;
        await assert.rejects(
          azure(target.chat).chat.completions.create(
            { model: 'gpt-4o', messages },
            reqOpts(id, { 'x-mock-scenario': 'error', 'x-mock-status': '404' }),
          ),
          (err) => {
            caught = err;
            assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
            assert.equal(err.status, 404);
            assert.equal(err.code, 'DeploymentNotFound');
            return true;
          },
        );
        const rec = await s.find(id);
        target.check(rec, target.chat, 'chat/completions', { model: 'gpt-4o', messages });
        assert.deepEqual(caught.error, JSON.parse(rec.responseBody).error, "err.error is the upstream body's error object");
      });

      test('BadRequestError: content_filter 400 with innererror intact', T, async () => {
        const id = uid();
        await assert.rejects(
          azure(target.chat).chat.completions.create({ model: 'gpt-4o', messages }, reqOpts(id, { 'x-mock-scenario': 'content-filter-400' })),
          (err) => {
            assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
            assert.equal(err.code, 'content_filter');
            assert.deepEqual(err.error, CONTENT_FILTER_400_BODY.error);
            assert.equal(err.error.innererror.content_filter_result.self_harm.filtered, true);
            return true;
          },
        );
        target.check(await s.find(id), target.chat, 'chat/completions', { model: 'gpt-4o', messages });
      });
    });
  }

  test('azureADTokenProvider returning the gateway key (Authorization: Bearer) works too', T, async () => {
    const id = uid();
    const client = new AzureOpenAI({
      endpoint: s.gw.url,
      azureADTokenProvider: async () => KEY,
      deployment: 'gpt-4o',
      apiVersion: CLIENT_API_VERSION,
      maxRetries: 0,
      timeout: 15_000,
    });
    const body = { model: 'gpt-4o', messages };
    const chat = await client.chat.completions.create(body, reqOpts(id));
    await assertSdkSentAzurePath(id, '/openai/deployments/gpt-4o/chat/completions');
    const rec = await s.find(id);
    TARGETS[0].check(rec, 'gpt-4o', 'chat/completions', body);
    assert.equal(chat.choices[0].message.content, 'Hello world');
  });

  // Microsoft's and the SDK's advice for Azure's v1 API: the plain OpenAI class with
  // baseURL {endpoint}/openai/v1 (Bearer key, no api-version, model in the body).
  for (const target of TARGETS) {
    test(`OpenAI class with baseURL /openai/v1 (Azure v1 API style), ${target.name}: chat`, T, async () => {
      const id = uid();
      const client = new OpenAI({ baseURL: `${s.gw.url}/openai/v1`, apiKey: KEY, maxRetries: 0, timeout: 15_000 });
      const body = { model: target.chat, messages };
      const chat = await client.chat.completions.create(body, reqOpts(id));
      const line = await s.accessLog(id);
      assert.equal(line.path, '/openai/v1/chat/completions');
      assert.equal(line.key, 'app');
      const rec = await s.find(id);
      target.check(rec, target.chat, 'chat/completions', body);
      assert.deepEqual(chat, JSON.parse(rec.responseBody));
    });
  }

  test('batches.create with `deployment` set: reaches /openai/batches', T, async () => {
    const id = uid();
    const body = { input_file_id: 'file-mock1', endpoint: '/v1/chat/completions', completion_window: '24h' };
    const batch = await azure('gpt-4o').batches.create(body, reqOpts(id));
    // openai 4.104.0 does not put /batches under the deployment (v5 does; see the next test).
    await assertSdkSentAzurePath(id, '/openai/batches');
    const rec = await s.find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/batches');
    assertAzureAuthAndVersion(rec, AZ_API_VERSION, KEY);
    assert.deepEqual(rec.json, body);
    assert.deepEqual(batch, JSON.parse(rec.responseBody));
  });

  test('batches under the deployment (what the v5 SDK sends) reach /openai/batches', T, async () => {
    const id = uid();
    const body = { input_file_id: 'file-mock1', endpoint: '/v1/chat/completions', completion_window: '24h' };
    // The v5 AzureOpenAI puts POST /batches under /deployments/{deployment} when constructed with one:
    // send exactly that request through the same client.
    const batch = await azure('gpt-4o').post('/deployments/gpt-4o/batches', { body, ...reqOpts(id) });
    await assertSdkSentAzurePath(id, '/openai/deployments/gpt-4o/batches');
    const rec = await s.find(id);
    assert.equal(rec.method, 'POST');
    assert.equal(rec.path, '/openai/batches');
    assertAzureAuthAndVersion(rec, AZ_API_VERSION, KEY);
    assert.deepEqual(rec.json, body, 'body unchanged (no model added)');
    assert.deepEqual(batch, JSON.parse(rec.responseBody));
  });

  test('files.create through AzureOpenAI: /openai/files', T, async () => {
    const id = uid();
    const jsonl = Buffer.from('{"custom_id":"r1"}\n');
    const file = await azure('gpt-4o').files.create({ file: await toFile(jsonl, 'in.jsonl'), purpose: 'batch' }, reqOpts(id));
    await assertSdkSentAzurePath(id, '/openai/files');
    const rec = await s.find(id);
    assert.equal(rec.path, '/openai/files');
    assertAzureAuthAndVersion(rec, AZ_API_VERSION, KEY);
    assert.equal(rec.multipart.fields.purpose, 'batch');
    assert.ok(rec.multipart.parts.find((p) => p.name === 'file').data.equals(jsonl));
    assert.equal(file.id, 'file-mock1');
  });
});
