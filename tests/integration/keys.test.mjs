// Client keys: the gateway authenticates clients with its own keys (Authorization: Bearer K or
// api-key: K), enforces per-key model allow-lists, and never forwards the client's credential:
// with keys configured every upstream must carry its own api_key.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  runGateway,
  writeTemp,
  request,
  streamRequest,
  uid,
  assertRelayed,
  assertGatewayError,
  assertUsageStripped,
} from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

const sha256hex = (s) => crypto.createHash('sha256').update(s).digest('hex');

/** Assert a 401 invalid_api_key error of the documented shape. */
function assert401(res) {
  assertGatewayError(res, 401, 'invalid_api_key', { type: 'invalid_request_error', param: null });
}

describe('client keys', () => {
  // Random per run, so that a leak cannot be a coincidence.
  const KEY_A = `sk-team-a-${crypto.randomBytes(12).toString('hex')}`;
  const KEY_B = `sk-team-b-${crypto.randomBytes(12).toString('hex')}`;
  const WRONG = `sk-wrong-${crypto.randomBytes(12).toString('hex')}`;
  const AZ_UPSTREAM_KEY = 'az-upstream-secret';
  const OA_UPSTREAM_KEY = 'oa-upstream-secret';
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
    api_key: "${AZ_UPSTREAM_KEY}"
    deployments: {gpt-4o: gpt4o-prod, text-embedding-3-small: embed-small}
  oa:
    provider: openai
    base_url: "${mock.url}"
    api_key: "${OA_UPSTREAM_KEY}"
routes:
  - {match: "gpt-4o*", upstream: az}
  - {match: "text-embedding-*", upstream: az}
  - {match: "o1", upstream: oa}
  - {match: "*", upstream: oa}
keys:
  - name: team-a
    key: "\${TEAM_A_KEY}"
    models: ["gpt-4o*", "text-embedding-*"]
  - name: team-b
    key_sha256: "${sha256hex(KEY_B)}"
`,
      { env: { TEAM_A_KEY: KEY_A } },
    );
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const sentUpstream = (id) => mock.requests.some((r) => r.headers['x-test-id'] === id);
  const chat = (headers, model = 'gpt-4o', extra = {}) => {
    const id = uid();
    return request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, ...headers },
      body: { model, messages: [{ role: 'user', content: 'hi' }], ...extra },
    }).then((res) => ({ res, id }));
  };
  /** No header name or value, nor the body, of what the mock received contains the client keys. */
  const assertNoClientKeyUpstream = (rec) => {
    const raw = rec.rawHeaders.join('\n');
    for (const k of [KEY_A, KEY_B]) {
      assert.ok(!raw.includes(k), `client key forwarded in the upstream headers:\n${raw}`);
      assert.ok(!rec.body.toString('latin1').includes(k), 'client key in the upstream body');
      assert.ok(!rec.url.includes(k), 'client key in the upstream URL');
    }
  };

  test('no credential: 401 invalid_api_key, nothing sent upstream', T, async () => {
    const { res, id } = await chat({});
    assert401(res);
    assert.equal(sentUpstream(id), false);
  });

  test('authentication comes first: no key + a bad body, no model, or an unknown route -> 401', T, async () => {
    const bad = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'content-type': 'application/json' },
      body: '{"model": "gpt-4o", "messages": [',
    });
    assert401(bad);
    assert401(await request(`${gw.url}/v1/chat/completions`, { body: { messages: [] } }));
    assert401(await request(`${gw.url}/v1/files`));
    assert401(await request(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21`, { body: { messages: [] } }));
  });

  test('wrong key (Bearer or api-key): 401, nothing sent upstream', T, async () => {
    for (const headers of [
      { authorization: `Bearer ${WRONG}` },
      { 'api-key': WRONG },
      { authorization: 'Bearer ' },
      { authorization: KEY_A }, // not "Bearer <key>"
      { authorization: `Bearer ${KEY_A}x` },
      { authorization: `Bearer ${KEY_A.slice(0, -1)}` },
      { 'api-key': KEY_A.toUpperCase() },
    ]) {
      const { res, id } = await chat(headers);
      assert401(res);
      assert.equal(sentUpstream(id), false, `nothing sent upstream for ${JSON.stringify(headers)}`);
      assert.ok(!res.text.includes(WRONG) && !res.text.includes(KEY_A), 'the presented credential is not echoed');
    }
  });

  test('Bearer key to an azure upstream: the mock sees the upstream api-key, never the client key', T, async () => {
    const { res, id } = await chat({ authorization: `Bearer ${KEY_A}` });
    const rec = await find(id);
    assertRelayed(res, rec);
    assert.equal(rec.path, '/openai/deployments/gpt4o-prod/chat/completions');
    assert.equal(rec.headers['api-key'], AZ_UPSTREAM_KEY);
    assert.equal(rec.headers.authorization, undefined, 'no Authorization header upstream');
    assertNoClientKeyUpstream(rec);
  });

  test('api-key header to an azure upstream: same', T, async () => {
    const { res, id } = await chat({ 'api-key': KEY_A });
    const rec = await find(id);
    assertRelayed(res, rec);
    assert.equal(rec.headers['api-key'], AZ_UPSTREAM_KEY);
    assert.equal(rec.headers.authorization, undefined);
    assertNoClientKeyUpstream(rec);
  });

  test('Azure-shaped inbound path with api-key: authenticated, upstream key replaces it', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21`, {
      headers: { 'x-test-id': id, 'api-key': KEY_A },
      body: { messages: [] },
    });
    const rec = await find(id);
    assertRelayed(res, rec);
    assert.equal(rec.headers['api-key'], AZ_UPSTREAM_KEY);
    assertNoClientKeyUpstream(rec);
  });

  test('key given as key_sha256, to an openai upstream: Bearer upstream key, never the client key', T, async () => {
    for (const headers of [{ authorization: `Bearer ${KEY_B}` }, { 'api-key': KEY_B }]) {
      const { res, id } = await chat(headers, 'o1');
      const rec = await find(id);
      assertRelayed(res, rec);
      assert.equal(rec.path, '/v1/chat/completions');
      assert.equal(rec.headers.authorization, `Bearer ${OA_UPSTREAM_KEY}`);
      assert.equal(rec.headers['api-key'], undefined, 'no api-key header to an openai upstream');
      assertNoClientKeyUpstream(rec);
    }
  });

  test('a stream: the client credential is not forwarded either', T, async () => {
    const id = uid();
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, authorization: `Bearer ${KEY_B}` },
      body: { model: 'gpt-5', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    });
    const done = await s.done;
    assert.equal(done.complete, true);
    const rec = await find(id);
    assert.equal(rec.headers.authorization, `Bearer ${OA_UPSTREAM_KEY}`);
    assertNoClientKeyUpstream(rec);
    assertUsageStripped(done.body, rec);
  });

  test('model outside the allow-list: 403 model_not_allowed (param "model"), nothing sent upstream', T, async () => {
    for (const model of ['gpt-5', 'o1', 'gpt-4', 'text-embedding']) {
      const { res, id } = await chat({ authorization: `Bearer ${KEY_A}` }, model);
      assertGatewayError(res, 403, 'model_not_allowed', { type: 'invalid_request_error', param: 'model' });
      assert.ok(!res.text.includes(KEY_A), 'the key is not echoed');
      assert.equal(sentUpstream(id), false, `${model} not sent upstream`);
    }
    // The same models are fine for a key without an allow-list.
    const { res } = await chat({ authorization: `Bearer ${KEY_B}` }, 'o1');
    assert.equal(res.status, 200);
  });

  test('allow-list globs admit what they match (chat and embeddings)', T, async () => {
    const { res } = await chat({ 'api-key': KEY_A }, 'gpt-4o-mini');
    assert.equal(res.status, 200, res.text);
    const id = uid();
    const emb = await request(`${gw.url}/v1/embeddings`, {
      headers: { 'x-test-id': id, authorization: `Bearer ${KEY_A}` },
      body: { model: 'text-embedding-3-small', input: 'abc' },
    });
    const rec = await find(id);
    assertRelayed(emb, rec);
    assert.equal(rec.path, '/openai/deployments/embed-small/embeddings');
  });

  test('GET /v1/models: only the allowed models for a key with an allow-list, all for one without', T, async () => {
    const all = await request(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY_B}` } });
    assert.equal(all.status, 200, all.text);
    const allIds = all.json.data.map((m) => m.id).sort();
    assert.deepEqual(allIds, ['gpt-4o', 'o1', 'text-embedding-3-small']);

    const a = await request(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${KEY_A}` } });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.object, 'list');
    assert.deepEqual(a.json.data.map((m) => m.id).sort(), ['gpt-4o', 'text-embedding-3-small']);

    const one = await request(`${gw.url}/v1/models/gpt-4o`, { headers: { 'api-key': KEY_A } });
    assert.equal(one.status, 200);
    assert.equal(one.json.id, 'gpt-4o');
    const hidden = await request(`${gw.url}/v1/models/o1`, { headers: { 'api-key': KEY_A } });
    assert.notEqual(hidden.status, 200, 'a model outside the allow-list is not shown');
    assert.ok(['model_not_found', 'model_not_allowed'].includes(hidden.json?.error?.code), hidden.text);
    assert.equal(mock.requests.filter((r) => r.route.op.startsWith('models')).length, 0, 'answered by the gateway');
  });

  test('GET /v1/models needs a key too', T, async () => {
    assert401(await request(`${gw.url}/v1/models`));
    assert401(await request(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${WRONG}` } }));
  });

  test('/healthz and /readyz need no key', T, async () => {
    assert.equal((await request(`${gw.url}/healthz`)).status, 200);
    assert.equal((await request(`${gw.url}/readyz`)).status, 200);
  });

  test('the keys never appear in the gateway output', T, async () => {
    // Traffic that could tempt a logger: a good key, a wrong key, a forbidden model.
    await chat({ authorization: `Bearer ${KEY_A}` });
    await chat({ 'api-key': KEY_B }, 'o1');
    await chat({ authorization: `Bearer ${KEY_A}` }, 'gpt-5');
    await chat({ authorization: `Bearer ${WRONG}` });
    const out = [...gw.stdout, ...gw.stderr].join('\n');
    assert.ok(out.length > 0, 'the gateway logged something');
    for (const [name, k] of [['team-a key', KEY_A], ['team-b key', KEY_B], ['wrong key', WRONG]]) {
      assert.ok(!out.includes(k), `${name} appears in the gateway output`);
    }
    assert.ok(!out.includes(sha256hex(KEY_A)), 'not even the digest of a key');
  });
});

describe('client keys: configuration checks', () => {
  const base = (upstreams, keys) => `server:
  listen: "127.0.0.1:0"
upstreams:
${upstreams}
routes:
  - {match: "*", upstream: up1}
keys:
${keys}
`;
  const KEYS = `  - name: k1
    key: "sk-config-test-key-1"
`;

  test('--check-config: with keys, an upstream without api_key is rejected, and named', T, async () => {
    const file = writeTemp(
      'keys-nokey.yaml',
      base(
        `  up1:
    provider: azure
    base_url: "http://127.0.0.1:9"
    api_key: "upstream-one"
  up2:
    provider: openai
    base_url: "http://127.0.0.1:9"`,
        KEYS,
      ),
    );
    const r = await runGateway(['--check-config', file]);
    assert.equal(r.code, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const out = r.stdout + r.stderr;
    const line = out.split('\n').find((l) => l.startsWith(`${file}:`) && /api_key/.test(l));
    assert.ok(line, `a FILE:LINE:COL diagnostic mentioning api_key; got:\n${out}`);
    assert.match(line, /up2/, 'the upstream without a key is named');
    assert.doesNotMatch(out, /'up1'/, 'the upstream with a key is not blamed');
  });

  test('--check-config: the same config with every upstream keyed is accepted', T, async () => {
    const file = writeTemp(
      'keys-ok.yaml',
      base(
        `  up1:
    provider: azure
    base_url: "http://127.0.0.1:9"
    api_key: "upstream-one"
  up2:
    provider: openai
    base_url: "http://127.0.0.1:9"
    api_key: "upstream-two"`,
        `${KEYS}  - name: k2
    key_sha256: "${sha256hex('sk-config-test-key-2')}"
    rpm: 600
    tpm: 200000
    max_concurrent: 20
    models: ["gpt-4o*", "text-embedding-*"]
rate_limits:
  store: memory
  on_store_error: allow
  default_completion_tokens: 1024
`,
      ),
    );
    const r = await runGateway(['--check-config', file]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  });

  test('--check-config: key_sha256 must be 64 hex characters', T, async () => {
    for (const bad of [sha256hex('x').slice(0, 63), `${sha256hex('x').slice(0, 63)}g`]) {
      const file = writeTemp(
        'keys-badsha.yaml',
        base(
          `  up1:
    provider: openai
    base_url: "http://127.0.0.1:9"
    api_key: "upstream-one"`,
          `  - name: k1
    key_sha256: "${bad}"
`,
        ),
      );
      const r = await runGateway(['--check-config', file]);
      assert.equal(r.code, 1, `${bad}: stdout: ${r.stdout}`);
      assert.match(r.stdout + r.stderr, /key_sha256/);
    }
  });

  test('starting with keys and a keyless upstream fails with the same message', T, async () => {
    await assert.rejects(
      startGateway(
        base(
          `  up1:
    provider: openai
    base_url: "http://127.0.0.1:9"`,
          KEYS,
        ),
      ),
      /api_key/,
    );
  });
});
