// Request translation: OpenAI-format requests in, Azure (deployments and v1 styles) or OpenAI out.
// Every test checks both ends: what the mock upstream received (path, query, headers, body) and
// what the client got back (status, relayed headers, body bytes).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startMock, parseMultipart } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, multipartBody, uid, assertRelayed, assertGatewayError } from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };
const AZ_KEY = `az-secret-${uid('k')}`;

// Headers an OpenAI SDK sends; what must happen to each is asserted in checkUpstreamHeaders().
function clientHeaders(testId, extra = {}) {
  return {
    authorization: 'Bearer sk-client-secret',
    'api-key': 'client-api-key',
    'openai-organization': 'org-client',
    'openai-project': 'proj-client',
    'user-agent': 'OpenAI/JS 5.23.0',
    accept: 'application/json',
    'x-stainless-lang': 'js',
    'x-stainless-retry-count': '0',
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    tracestate: 'congo=t61rcWkgMzE',
    'x-test-id': testId,
    ...extra,
  };
}

/** Header rules common to all upstreams. provider: 'azure' | 'openai' | 'openai-keyed'. */
function checkUpstreamHeaders(rec, mock, provider) {
  const h = rec.headers;
  assert.equal(h.host, `127.0.0.1:${mock.port}`, 'Host is the upstream host');
  if (provider === 'azure') {
    assert.equal(h['api-key'], AZ_KEY, 'azure: api-key is the upstream key');
    assert.equal(h.authorization, undefined, "azure: the client's Authorization is removed");
    assert.equal(h['openai-organization'], undefined, 'azure: OpenAI-Organization removed');
    assert.equal(h['openai-project'], undefined, 'azure: OpenAI-Project removed');
    assert.ok(h['x-ms-client-request-id'], 'azure: x-ms-client-request-id sent');
    assert.equal(h['x-ms-client-request-id'], h['x-request-id'], 'x-ms-client-request-id = x-request-id');
  } else {
    assert.equal(h['api-key'], undefined, "openai: the client's api-key is removed");
    assert.equal(h['openai-organization'], 'org-client', 'openai: OpenAI-Organization kept');
    assert.equal(h['openai-project'], 'proj-client', 'openai: OpenAI-Project kept');
    if (provider === 'openai-keyed') assert.equal(h.authorization, 'Bearer sk-upstream-key', 'openai with api_key: its own bearer');
    else assert.equal(h.authorization, 'Bearer sk-client-secret', "openai without api_key: client's Authorization unchanged");
  }
  const count = (name) => rec.rawHeaders.filter((v, i) => i % 2 === 0 && v.toLowerCase() === name).length;
  assert.ok(count('api-key') <= 1 && count('authorization') <= 1, 'no duplicated credential headers');
  assert.equal(h['user-agent'], 'OpenAI/JS 5.23.0', 'user-agent kept');
  assert.equal(h['x-stainless-lang'], 'js', 'x-stainless-* kept');
  assert.equal(h['x-stainless-retry-count'], '0', 'x-stainless-* kept');
  assert.equal(h.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'traceparent kept');
  assert.equal(h.tracestate, 'congo=t61rcWkgMzE', 'tracestate kept');
  assert.equal(h.accept, 'application/json', 'accept kept');
  assert.ok(h['x-request-id'], 'x-request-id sent upstream');
}

/** Client side: relayed response and request id. */
function checkClient(res, rec) {
  assertRelayed(res, rec);
  assert.equal(res.headers['x-gateway-request-id'], rec.headers['x-request-id'], 'x-gateway-request-id = id sent upstream');
}

// Payloads per operation. `kind` decides how v1 style must rewrite the model.
const mpAudio = (model) =>
  multipartBody([
    { name: 'file', filename: 'hello.wav', contentType: 'audio/wav', data: Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt fake audio') },
    { name: 'model', value: model },
    { name: 'response_format', value: 'json' },
  ]);
const mpImage = (model) =>
  multipartBody([
    { name: 'image', filename: 'in.png', contentType: 'image/png', data: Buffer.from([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10, 0, 1, 2]) },
    { name: 'prompt', value: 'add a hat' },
    { name: 'model', value: model },
  ]);

const DEPLOYMENT_OPS = [
  { op: 'chat/completions', model: 'gpt-4o', dep: 'gpt4o-prod', json: (m) => ({ model: m, messages: [{ role: 'user', content: 'hi' }], temperature: 0.2 }) },
  { op: 'completions', model: 'gpt-4o-instruct', dep: 'gpt-4o-instruct', json: (m) => ({ model: m, prompt: 'Say hi', max_tokens: 5 }) },
  { op: 'embeddings', model: 'text-embedding-3-small', dep: 'emb-prod', json: (m) => ({ model: m, input: ['a', 'b'] }), depApiVersion: '2024-06-01' },
  { op: 'audio/transcriptions', model: 'whisper-1', dep: 'whisper-prod', multipart: mpAudio },
  { op: 'audio/translations', model: 'whisper-1', dep: 'whisper-prod', multipart: mpAudio },
  { op: 'audio/speech', model: 'tts-1', dep: 'tts-prod', json: (m) => ({ model: m, input: 'hello', voice: 'alloy' }), v1ApiVersion: 'preview' },
  { op: 'images/generations', model: 'dall-e-3', dep: 'dalle-prod', json: (m) => ({ model: m, prompt: 'a cat', n: 1, size: '1024x1024' }) },
  { op: 'images/edits', model: 'gpt-image-1', dep: 'img-prod', multipart: mpImage },
];

function payload(spec, model) {
  if (spec.multipart) {
    const mp = spec.multipart(model);
    return { body: mp.body, contentType: mp.contentType };
  }
  return { body: Buffer.from(JSON.stringify(spec.json(model))), contentType: 'application/json' };
}

const AZ_DEPLOYMENTS = `
    deployments:
      gpt-4o: gpt4o-prod
      text-embedding-3-small: emb-prod
      whisper-1: whisper-prod
      tts-1: tts-prod
      dall-e-3: dalle-prod
      gpt-image-1: img-prod`;
const AZ_ROUTES = `
  - {match: "gpt-4o*", upstream: az}
  - {match: "text-embedding-*", upstream: az}
  - {match: "whisper-1", upstream: az}
  - {match: "tts-1", upstream: az}
  - {match: "dall-e-3", upstream: az}
  - {match: "gpt-image-1", upstream: az}`;

// ---------------------------------------------------------------------------------------------
describe('azure, deployments style', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "\${AZ_KEY}"${AZ_DEPLOYMENTS}
    api_versions:
      embeddings: "2024-06-01"
      batches: "2024-07-01-preview"
  azdots:
    provider: azure
    base_url: "${mock.url}/prefix"
    api_style: deployments
    api_version: "2024-06-01"
    api_versions:
      responses: "2025-03-01-preview"
    api_key: "\${LLMGW_TEST_SURELY_UNSET:-fallback-key}"
    strip_dots: true
    deployments:
      gpt-4.1: gpt-4.1-dep
routes:${AZ_ROUTES}
  - {match: "my *", upstream: az}
  - {match: "gpt-3.5-turbo", upstream: azdots}
  - {match: "gpt-4.1", upstream: azdots}
  - {match: "dots-?.?", upstream: azdots}
  - {match: "*", upstream: az}
`,
      { env: { AZ_KEY, LLMGW_TEST_SURELY_UNSET: undefined } },
    );
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);

  for (const spec of DEPLOYMENT_OPS) {
    for (const prefix of ['/v1', '']) {
      test(`POST ${prefix}/${spec.op} -> /openai/deployments/${spec.dep}/${spec.op}`, T, async () => {
        const id = uid();
        const { body, contentType } = payload(spec, spec.model);
        const res = await request(`${gw.url}${prefix}/${spec.op}?api-version=1999-01-01&keep=me`, {
          method: 'POST',
          headers: clientHeaders(id, { 'content-type': contentType }),
          body,
        });
        const rec = await find(id);
        assert.equal(rec.method, 'POST');
        assert.equal(rec.path, `/openai/deployments/${spec.dep}/${spec.op}`);
        assert.deepEqual(rec.query, { 'api-version': spec.depApiVersion ?? '2024-10-21', keep: 'me' });
        assert.equal(rec.headers['content-type'], contentType);
        assert.ok(rec.body.equals(body), 'deployments style: body unchanged');
        checkUpstreamHeaders(rec, mock, 'azure');
        assert.equal(res.status, 200);
        checkClient(res, rec);
      });
    }
  }

  // Resource-level operations: {base}/openai/{path}?api-version=...
  const RESOURCE_CASES = [
    { name: 'GET /v1/responses/{id}', method: 'GET', path: '/v1/responses/resp_abc?include=x', upPath: '/openai/responses/resp_abc', query: { 'api-version': '2025-04-01-preview', include: 'x' } },
    { name: 'DELETE /v1/responses/{id}', method: 'DELETE', path: '/v1/responses/resp_abc', upPath: '/openai/responses/resp_abc', query: { 'api-version': '2025-04-01-preview' } },
    {
      name: 'POST /v1/files (multipart)',
      method: 'POST',
      path: '/v1/files',
      multipart: () => multipartBody([{ name: 'purpose', value: 'batch' }, { name: 'file', filename: 'in.jsonl', data: '{"custom_id":"1"}\n' }]),
      upPath: '/openai/files',
      query: { 'api-version': '2024-10-21' },
    },
    { name: 'GET /files (no /v1)', method: 'GET', path: '/files?purpose=batch', upPath: '/openai/files', query: { 'api-version': '2024-10-21', purpose: 'batch' } },
    { name: 'GET /v1/files/{id}/content', method: 'GET', path: '/v1/files/file-abc/content', upPath: '/openai/files/file-abc/content', query: { 'api-version': '2024-10-21' } },
    { name: 'DELETE /v1/files/{id}', method: 'DELETE', path: '/v1/files/file-abc', upPath: '/openai/files/file-abc', query: { 'api-version': '2024-10-21' } },
    {
      name: 'POST /v1/batches',
      method: 'POST',
      path: '/v1/batches',
      json: { input_file_id: 'file-abc', endpoint: '/chat/completions', completion_window: '24h' },
      upPath: '/openai/batches',
      query: { 'api-version': '2024-07-01-preview' },
    },
    { name: 'POST /v1/batches/{id}/cancel', method: 'POST', path: '/v1/batches/batch_1/cancel', upPath: '/openai/batches/batch_1/cancel', query: { 'api-version': '2024-07-01-preview' } },
    { name: 'GET /v1/fine_tuning/jobs', method: 'GET', path: '/v1/fine_tuning/jobs?limit=2', upPath: '/openai/fine_tuning/jobs', query: { 'api-version': '2024-10-21', limit: '2' } },
    {
      // The base model is not in deployments, so the body is the same whatever the gateway does with `model`.
      name: 'POST /v1/fine_tuning/jobs',
      method: 'POST',
      path: '/v1/fine_tuning/jobs',
      json: { model: 'gpt-4o-mini-2024-07-18', training_file: 'file-abc' },
      upPath: '/openai/fine_tuning/jobs',
      query: { 'api-version': '2024-10-21' },
    },
    { name: 'POST /v1/assistants', method: 'POST', path: '/v1/assistants', json: { model: 'gpt-4o-mini', name: 'helper' }, upPath: '/openai/assistants', query: { 'api-version': '2024-10-21' } },
    { name: 'POST /v1/threads', method: 'POST', path: '/v1/threads', json: {}, upPath: '/openai/threads', query: { 'api-version': '2024-10-21' } },
    { name: 'GET /v1/threads/{id}/runs', method: 'GET', path: '/v1/threads/thread_1/runs', upPath: '/openai/threads/thread_1/runs', query: { 'api-version': '2024-10-21' } },
    { name: 'GET /v1/vector_stores', method: 'GET', path: '/v1/vector_stores', upPath: '/openai/vector_stores', query: { 'api-version': '2024-10-21' } },
    { name: 'GET anything else', method: 'GET', path: '/v1/some/other/thing?x=1&api-version=1999-01-01', upPath: '/openai/some/other/thing', query: { 'api-version': '2024-10-21', x: '1' } },
  ];
  for (const c of RESOURCE_CASES) {
    test(`${c.name} -> ${c.upPath}`, T, async () => {
      const id = uid();
      let body;
      const extra = {};
      if (c.multipart) {
        const mp = c.multipart();
        body = mp.body;
        extra['content-type'] = mp.contentType;
      } else if (c.json) {
        body = Buffer.from(JSON.stringify(c.json));
        extra['content-type'] = 'application/json';
      }
      const res = await request(`${gw.url}${c.path}`, { method: c.method, headers: clientHeaders(id, extra), body });
      const rec = await find(id);
      assert.equal(rec.method, c.method);
      assert.equal(rec.path, c.upPath);
      assert.deepEqual(rec.query, c.query);
      if (body) assert.ok(rec.body.equals(body), 'body unchanged');
      else assert.equal(rec.body.length, 0);
      checkUpstreamHeaders(rec, mock, 'azure');
      assert.equal(res.status, 200);
      checkClient(res, rec);
    });
  }

  test('POST /v1/responses -> /openai/responses, model replaced by the deployment', T, async () => {
    const id = uid();
    const sent = { model: 'gpt-4o', input: 'hello', instructions: 'be brief', store: false };
    const res = await request(`${gw.url}/v1/responses?api-version=1999-01-01`, { method: 'POST', headers: clientHeaders(id), body: sent });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/responses');
    assert.deepEqual(rec.query, { 'api-version': '2025-04-01-preview' });
    assert.deepEqual(rec.json, { ...sent, model: 'gpt4o-prod' });
    checkUpstreamHeaders(rec, mock, 'azure');
    assert.equal(res.status, 200);
    assert.equal(res.json.object, 'response');
    checkClient(res, rec);
  });

  test('api_versions.responses overrides, strip_dots, base_url prefix, ${VAR:-default} key', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/responses`, { headers: clientHeaders(id), body: { model: 'gpt-3.5-turbo', input: 'x' } });
    const rec = await find(id);
    assert.equal(rec.path, '/prefix/openai/responses');
    assert.deepEqual(rec.query, { 'api-version': '2025-03-01-preview' });
    assert.equal(rec.json.model, 'gpt-35-turbo');
    assert.equal(rec.headers['api-key'], 'fallback-key');
    assert.equal(res.status, 200);
    checkClient(res, rec);
  });

  test('strip_dots removes dots from unmapped names only; api_version applies', T, async () => {
    const cases = [
      ['gpt-3.5-turbo', '/prefix/openai/deployments/gpt-35-turbo/chat/completions'],
      ['gpt-4.1', '/prefix/openai/deployments/gpt-4.1-dep/chat/completions'], // mapped: kept as configured
      ['dots-1.5', '/prefix/openai/deployments/dots-15/chat/completions'], // ? matches one char
      ['dots-10.5', '/openai/deployments/dots-10.5/chat/completions'], // ? does not match two: falls to "*" (az)
    ];
    for (const [model, upPath] of cases) {
      const id = uid();
      const body = JSON.stringify({ model, messages: [] });
      const res = await request(`${gw.url}/v1/chat/completions`, { headers: clientHeaders(id, { 'content-type': 'application/json' }), body });
      const rec = await find(id);
      assert.equal(rec.path, upPath, `model ${model}`);
      const prefixed = upPath.startsWith('/prefix');
      assert.deepEqual(rec.query, { 'api-version': prefixed ? '2024-06-01' : '2024-10-21' });
      assert.equal(rec.headers['api-key'], prefixed ? 'fallback-key' : AZ_KEY);
      assert.equal(rec.body.toString(), body, 'body unchanged in deployments style');
      assert.equal(res.status, 200);
      checkClient(res, rec);
    }
  });

  test('a model that cannot be a deployment name never reaches the path: 400 invalid_model', T, async () => {
    // Security: the deployment goes into the upstream path; '/', '%', '..' and the like must not
    // (an upstream that decodes %2F would see another path). "*" still matches the model.
    for (const model of ['my model/x', '../secret-deploy', 'a%2fb', 'gpt-4o/../../x', '..']) {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, { headers: clientHeaders(id), body: { model, messages: [] } });
      assertGatewayError(res, 400, 'invalid_model', { param: 'model', type: 'invalid_request_error' });
      assert.equal(mock.requests.filter((r) => r.headers['x-test-id'] === id).length, 0, model);
    }
  });

  test('unmapped model on the catch-all route keeps its name as deployment', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/embeddings`, { headers: clientHeaders(id), body: { model: 'llama-3-embed', input: 'x' } });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/deployments/llama-3-embed/embeddings');
    assert.equal(res.status, 200);
    checkClient(res, rec);
  });

  test('deployment-scoped operation without model -> 400 missing_model, nothing sent upstream', T, async () => {
    const id = uid();
    const mp = multipartBody([{ name: 'file', filename: 'a.wav', data: 'RIFF' }]);
    const res = await request(`${gw.url}/v1/audio/transcriptions`, { headers: clientHeaders(id, { 'content-type': mp.contentType }), body: mp.body });
    assertGatewayError(res, 400, 'missing_model', { param: 'model', type: 'invalid_request_error' });
    assert.equal(mock.requests.filter((r) => r.headers['x-test-id'] === id).length, 0);
  });

  describe('request id', () => {
    test('a valid client x-request-id is used upstream and returned', T, async () => {
      for (const rid of ['client-req-1', 'x'.repeat(128), 'A~!#$%&*+-.^_`|0123 with spaces']) {
        const id = uid();
        const res = await request(`${gw.url}/v1/chat/completions`, { headers: clientHeaders(id, { 'x-request-id': rid }), body: { model: 'gpt-4o', messages: [] } });
        const rec = await find(id);
        assert.equal(rec.headers['x-request-id'], rid);
        assert.equal(rec.headers['x-ms-client-request-id'], rid);
        assert.equal(res.headers['x-gateway-request-id'], rid);
        assert.equal(res.headers['x-request-id'], rec.responseHeaders['x-request-id'], "the upstream's x-request-id reaches the client");
        assert.match(res.headers['x-request-id'], /^upstream-\d+$/);
      }
    });

    test('an invalid or missing client x-request-id is replaced by a generated one', T, async () => {
      const seen = new Set();
      for (const rid of ['y'.repeat(129), '', undefined]) {
        const id = uid();
        const extra = rid === undefined ? {} : { 'x-request-id': rid };
        const res = await request(`${gw.url}/v1/chat/completions`, { headers: clientHeaders(id, extra), body: { model: 'gpt-4o', messages: [] } });
        const rec = await find(id);
        const gen = rec.headers['x-request-id'];
        assert.ok(gen && gen !== rid, `generated id for ${JSON.stringify(rid)}`);
        assert.match(gen, /^[\x21-\x7e][\x20-\x7e]{0,127}$/, 'printable, 1..128 chars');
        assert.match(gen, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a version-4 UUID');
        assert.equal(res.headers['x-gateway-request-id'], gen);
        assert.equal(rec.headers['x-ms-client-request-id'], gen);
        assert.ok(!seen.has(gen), 'generated ids are unique');
        seen.add(gen);
      }
    });
  });

  test('hop-by-hop headers are not forwarded; end-to-end headers are', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: clientHeaders(id, {
        connection: 'keep-alive, x-hop-custom',
        'keep-alive': 'timeout=5',
        'x-hop-custom': 'drop me',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        'x-end-to-end': 'keep me',
      }),
      body: { model: 'gpt-4o', messages: [] },
    });
    const rec = await find(id);
    assert.equal(rec.headers['keep-alive'], undefined, 'keep-alive');
    assert.equal(rec.headers['proxy-authorization'], undefined, 'proxy-authorization');
    assert.equal(rec.headers['x-hop-custom'], undefined, 'header named in Connection');
    assert.equal(rec.headers['x-end-to-end'], 'keep me');
    assert.equal(res.status, 200);
    checkClient(res, rec);
  });
});

// ---------------------------------------------------------------------------------------------
describe('azure, v1 style', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_style: v1
    api_key: "\${AZ_KEY}"${AZ_DEPLOYMENTS}
    api_versions:
      audio_speech: preview
routes:${AZ_ROUTES}
  - {match: "*", upstream: az}
`,
      { env: { AZ_KEY } },
    );
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });
  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);

  for (const spec of DEPLOYMENT_OPS) {
    test(`POST /v1/${spec.op} -> /openai/v1/${spec.op} with model=${spec.dep}`, T, async () => {
      const id = uid();
      const { body, contentType } = payload(spec, spec.model);
      const res = await request(`${gw.url}/v1/${spec.op}?keep=me`, {
        method: 'POST',
        headers: clientHeaders(id, { 'content-type': contentType }),
        body,
      });
      const rec = await find(id);
      assert.equal(rec.path, `/openai/v1/${spec.op}`);
      const expectQuery = { keep: 'me' };
      if (spec.v1ApiVersion) expectQuery['api-version'] = spec.v1ApiVersion;
      assert.deepEqual(rec.query, expectQuery, 'v1: api-version only when configured');
      if (spec.multipart) {
        assert.match(rec.headers['content-type'], /^multipart\/form-data; boundary=/);
        const sentParts = payload(spec, spec.model);
        assert.ok(rec.multipart, 'upstream body is multipart');
        assert.equal(rec.multipart.fields.model, spec.dep, 'multipart model replaced by the deployment');
        // every other part unchanged
        const expected = parseMultipart(sentParts.body, sentParts.contentType);
        const strip = (p) => p.parts.filter((x) => x.name !== 'model').map((x) => [x.name, x.filename, x.contentType, x.data.toString('base64')]);
        assert.deepEqual(strip(rec.multipart), strip(expected));
      } else {
        assert.deepEqual(rec.json, { ...spec.json(spec.model), model: spec.dep }, 'JSON model replaced by the deployment');
      }
      checkUpstreamHeaders(rec, mock, 'azure');
      assert.equal(res.status, 200);
      checkClient(res, rec);
    });
  }

  test('POST /responses (no /v1) -> /openai/v1/responses with the deployment as model', T, async () => {
    const id = uid();
    const sent = { model: 'gpt-4o', input: 'hello' };
    const res = await request(`${gw.url}/responses`, { headers: clientHeaders(id), body: sent });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/v1/responses');
    assert.deepEqual(rec.query, {});
    assert.deepEqual(rec.json, { ...sent, model: 'gpt4o-prod' });
    checkUpstreamHeaders(rec, mock, 'azure');
    checkClient(res, rec);
  });

  const V1_RESOURCE = [
    ['GET', '/v1/responses/resp_1', '/openai/v1/responses/resp_1', {}],
    ['GET', '/v1/files?purpose=batch', '/openai/v1/files', { purpose: 'batch' }],
    ['POST', '/v1/batches', '/openai/v1/batches', {}, { input_file_id: 'file-1', endpoint: '/v1/chat/completions', completion_window: '24h' }],
    ['GET', '/v1/fine_tuning/jobs/ftjob-1/events', '/openai/v1/fine_tuning/jobs/ftjob-1/events', {}],
    ['GET', '/v1/assistants', '/openai/v1/assistants', {}],
    ['POST', '/v1/threads', '/openai/v1/threads', {}, {}],
    ['GET', '/v1/vector_stores/vs_1', '/openai/v1/vector_stores/vs_1', {}],
    ['GET', '/v1/something/else', '/openai/v1/something/else', {}],
  ];
  for (const [method, path, upPath, query, json] of V1_RESOURCE) {
    test(`${method} ${path} -> ${upPath}`, T, async () => {
      const id = uid();
      const body = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
      const res = await request(`${gw.url}${path}`, {
        method,
        headers: clientHeaders(id, body ? { 'content-type': 'application/json' } : {}),
        body,
      });
      const rec = await find(id);
      assert.equal(rec.method, method);
      assert.equal(rec.path, upPath);
      assert.deepEqual(rec.query, query);
      if (body) assert.ok(rec.body.equals(body));
      checkUpstreamHeaders(rec, mock, 'azure');
      assert.equal(res.status, 200);
      checkClient(res, rec);
    });
  }

  test('POST /v1/files (multipart) -> /openai/v1/files, body unchanged', T, async () => {
    const id = uid();
    const mp = multipartBody([{ name: 'purpose', value: 'fine-tune' }, { name: 'file', filename: 'train.jsonl', data: '{"messages":[]}\n' }]);
    const res = await request(`${gw.url}/v1/files`, { headers: clientHeaders(id, { 'content-type': mp.contentType }), body: mp.body });
    const rec = await find(id);
    assert.equal(rec.path, '/openai/v1/files');
    assert.ok(rec.body.equals(mp.body));
    assert.equal(res.json.purpose, 'fine-tune');
    checkClient(res, rec);
  });
});

// ---------------------------------------------------------------------------------------------
describe('openai passthrough', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  oa:
    provider: openai
    base_url: "${mock.url}"
  oakey:
    provider: openai
    base_url: "${mock.url}"
    api_key: "sk-upstream-key"
routes:
  - {match: "keyed-*", upstream: oakey}
  - {match: "*", upstream: oa}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });
  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);

  for (const spec of DEPLOYMENT_OPS) {
    for (const prefix of ['/v1', '']) {
      test(`POST ${prefix}/${spec.op} -> /v1/${spec.op} unchanged`, T, async () => {
        const id = uid();
        const { body, contentType } = payload(spec, spec.model);
        const res = await request(`${gw.url}${prefix}/${spec.op}?api-version=2024-10-21&keep=me`, {
          method: 'POST',
          headers: clientHeaders(id, { 'content-type': contentType }),
          body,
        });
        const rec = await find(id);
        assert.equal(rec.path, `/v1/${spec.op}`);
        assert.equal(rec.url, `/v1/${spec.op}?api-version=2024-10-21&keep=me`, 'query unchanged');
        assert.ok(rec.body.equals(body), 'body unchanged');
        assert.equal(rec.headers['content-type'], contentType);
        checkUpstreamHeaders(rec, mock, 'openai');
        assert.equal(res.status, 200);
        checkClient(res, rec);
      });
    }
  }

  const OA_RESOURCE = [
    ['POST', '/v1/responses', { model: 'gpt-5', input: 'x' }],
    ['GET', '/v1/responses/resp_1?include=x'],
    ['GET', '/v1/files'],
    ['DELETE', '/v1/files/file-1'],
    ['POST', '/v1/batches', { input_file_id: 'file-1', endpoint: '/v1/chat/completions', completion_window: '24h' }],
    ['GET', '/v1/fine_tuning/jobs?limit=1'],
    ['POST', '/v1/assistants', { model: 'gpt-4o', name: 'a' }],
    ['POST', '/v1/threads/thread_1/runs', { assistant_id: 'asst_1' }],
    ['GET', '/v1/vector_stores'],
    ['GET', '/v1/whatever/else?z=9'],
  ];
  for (const [method, path, json] of OA_RESOURCE) {
    test(`${method} ${path} passes through`, T, async () => {
      const id = uid();
      const body = json === undefined ? undefined : Buffer.from(JSON.stringify(json));
      const res = await request(`${gw.url}${path}`, {
        method,
        headers: clientHeaders(id, body ? { 'content-type': 'application/json' } : {}),
        body,
      });
      const rec = await find(id);
      assert.equal(rec.method, method);
      assert.equal(rec.url, path);
      if (body) assert.ok(rec.body.equals(body));
      checkUpstreamHeaders(rec, mock, 'openai');
      assert.equal(res.status, 200);
      checkClient(res, rec);
    });
  }

  test('openai upstream with api_key uses its own bearer token', T, async () => {
    const id = uid();
    const body = Buffer.from(JSON.stringify({ model: 'keyed-model', messages: [] }));
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: clientHeaders(id, { 'content-type': 'application/json' }),
      body,
    });
    const rec = await find(id);
    assert.equal(rec.path, '/v1/chat/completions');
    assert.ok(rec.body.equals(body));
    checkUpstreamHeaders(rec, mock, 'openai-keyed');
    checkClient(res, rec);
  });

  test('client x-request-id goes upstream as x-request-id', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: clientHeaders(id, { 'x-request-id': 'oa-req-7' }),
      body: { model: 'gpt-4o', messages: [] },
    });
    const rec = await find(id);
    assert.equal(rec.headers['x-request-id'], 'oa-req-7');
    assert.equal(res.headers['x-gateway-request-id'], 'oa-req-7');
    checkClient(res, rec);
  });
});

// ---------------------------------------------------------------------------------------------
describe('GET /v1/models is answered by the gateway', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    // The listed ids are the same whether the gateway walks upstreams first or routes first:
    // gpt-4o, gpt-4o-mini (deployments routed to az), o1, o3-mini (literal routes).
    // llama-3 is a deployment key of az, but routing sends "llama-3" to oa: not listed.
    // "gpt-4o" is both a deployment key and a literal route: listed once.
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
    deployments:
      gpt-4o: d1
      gpt-4o-mini: d2
      llama-3: d3
  oa:
    provider: openai
    base_url: "${mock.url}"
routes:
  - {match: "gpt-4o", upstream: az}
  - {match: "gpt-4o*", upstream: az}
  - {match: "o1", upstream: oa}
  - {match: "o3-mini", upstream: az}
  - {match: "o?-*", upstream: oa}
  - {match: "*", upstream: oa}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const model = (id) => ({ id, object: 'model', created: 0, owned_by: 'llm-gateway' });

  test('list', T, async () => {
    for (const path of ['/v1/models', '/models']) {
      const res = await request(`${gw.url}${path}`, { headers: { authorization: 'Bearer sk-x' } });
      assert.equal(res.status, 200, path);
      assert.match(res.headers['content-type'], /application\/json/);
      assert.ok(res.headers['x-gateway-request-id']);
      assert.deepEqual(res.json, { object: 'list', data: ['gpt-4o', 'gpt-4o-mini', 'o1', 'o3-mini'].map(model) });
    }
    assert.equal(mock.requests.length, 0, 'nothing sent upstream');
  });

  test('single model and unknown model', T, async () => {
    const res = await request(`${gw.url}/v1/models/gpt-4o-mini`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, model('gpt-4o-mini'));
    const res2 = await request(`${gw.url}/v1/models/o1`);
    assert.deepEqual(res2.json, model('o1'));
    assertGatewayError(await request(`${gw.url}/v1/models/llama-3`), 404, 'model_not_found');
    assertGatewayError(await request(`${gw.url}/v1/models/nope`), 404, 'model_not_found');
    assert.equal(mock.requests.length, 0, 'nothing sent upstream');
  });
});

// The response side of the hop-by-hop rule, and the gateway's own fields: an upstream's
// connection-specific fields (and those its Connection line names) never reach the client, its
// end-to-end fields do, and it cannot speak for the gateway (x-gateway-* are the gateway's).
test('response: the upstream\'s hop-by-hop fields are dropped, its x-gateway-* replaced, the rest relayed', T, async (t) => {
  const http = await import('node:http');
  const body = JSON.stringify({ id: 'x', object: 'chat.completion', choices: [] });
  const upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, [
        ['Content-Type', 'application/json'],
        ['Content-Length', String(Buffer.byteLength(body))],
        ['Connection', 'keep-alive, X-Upstream-Hop'],
        ['Keep-Alive', 'timeout=5'],
        ['X-Upstream-Hop', 'drop me'],
        ['Proxy-Authenticate', 'Basic realm="up"'],
        ['X-Gateway-Request-Id', 'spoofed-id'],
        ['x-gateway-upstream', 'spoofed-upstream'],
        ['X-End-To-End', 'kept'],
        ['apim-request-id', 'apim-1'],
      ]);
      res.end(body);
    });
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  t.after(() => upstream.close());
  const gw = await startGateway(`server: {listen: "127.0.0.1:0"}
upstreams:
  edge:
    provider: azure
    base_url: "http://127.0.0.1:${upstream.address().port}"
    api_key: k
routes: [{match: "*", upstream: edge}]
`, { t });
  const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': 'rid-hop-1' }, body: { model: 'gpt-4o', messages: [] } });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.text, body);
  for (const name of ['x-upstream-hop', 'keep-alive', 'proxy-authenticate'])
    assert.equal(res.headers[name], undefined, name);
  assert.equal(res.headers['x-gateway-request-id'], 'rid-hop-1');
  assert.equal(res.headers['x-gateway-upstream'], 'edge');
  assert.equal(res.headers['x-end-to-end'], 'kept');
  assert.equal(res.headers['apim-request-id'], 'apim-1');
  assert.equal(res.headers['content-length'], String(Buffer.byteLength(body)));
});
