// Error classes of the official `openai` Node SDK (v4) through the gateway: the gateway's own
// errors (401, 403, 404, 429) and the upstream's (400 content_filter, 429) must each surface as
// the matching exception class with its body intact; the SDK's retries must wait as the
// upstream's `retry-after-ms` says.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { CONTENT_FILTER_400_BODY, RATE_LIMIT_429_BODY } from '../mock_upstream/mock_upstream.mjs';
import { uid } from '../integration/harness.mjs';
import {
  T,
  HOOK,
  OA_CHAT_MODEL,
  randomKey,
  startStack,
  reqOpts,
  assertAzureDeploymentRequest,
  assertNoClientCredential,
} from './common.mjs';

const KEY = randomKey('app');
const LIMITED_KEY = randomKey('limited');
const RESTRICTED_KEY = randomKey('restricted');
const WRONG_KEY = randomKey('wrong');
const ALL_KEYS = [KEY, LIMITED_KEY, RESTRICTED_KEY, WRONG_KEY];

describe('SDK error classes', () => {
  let s;
  const client = (apiKey = KEY, opts = {}) =>
    new OpenAI({ baseURL: `${s.gw.url}/v1`, apiKey, maxRetries: 0, timeout: 15_000, ...opts });
  const messages = [{ role: 'user', content: 'Hello' }];
  const chat = (c, id, model = 'gpt-4o', headers = {}) =>
    c.chat.completions.create({ model, messages }, reqOpts(id, headers));

  before(async () => {
    // No `*` route: a model outside the routes gets 404 model_not_found.
    s = await startStack(
      [
        { name: 'app', key: KEY },
        { name: 'limited', key: LIMITED_KEY, rpm: 1 },
        { name: 'restricted', key: RESTRICTED_KEY, models: ['gpt-4o*'] },
      ],
      { withDefaultRoute: false },
    );
  }, HOOK);
  after(async () => {
    await s?.stop();
  });

  /** A gateway-made error as the SDK exposes it: `err.error` is the body's `error` object. */
  function assertGatewayError(err, cls, status, code, { type = 'invalid_request_error', param = null } = {}) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err}`);
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, status);
    assert.equal(err.code, code);
    assert.equal(err.error.code, code);
    assert.equal(err.type, type);
    assert.equal(err.param, param);
    assert.equal(typeof err.error.message, 'string');
    assert.ok(err.error.message.length > 0);
    assert.ok(err.headers['x-gateway-request-id'], 'x-gateway-request-id on gateway errors');
    for (const k of ALL_KEYS) assert.ok(!err.message.includes(k), 'no key echoed in the error');
    return true;
  }

  test('AuthenticationError: wrong key -> 401 invalid_api_key, nothing sent upstream', T, async () => {
    const id = uid();
    await assert.rejects(chat(client(WRONG_KEY), id), (err) =>
      assertGatewayError(err, OpenAI.AuthenticationError, 401, 'invalid_api_key'),
    );
    assert.equal(s.all(id).length, 0);
  });

  test('PermissionDeniedError: model outside the allow-list -> 403 model_not_allowed', T, async () => {
    const id = uid();
    await assert.rejects(chat(client(RESTRICTED_KEY), id, OA_CHAT_MODEL), (err) =>
      assertGatewayError(err, OpenAI.PermissionDeniedError, 403, 'model_not_allowed', { param: 'model' }),
    );
    assert.equal(s.all(id).length, 0);
    // The same key may use a model on its list.
    const ok = await chat(client(RESTRICTED_KEY), uid());
    assert.equal(ok.choices[0].message.content, 'Hello world');
  });

  test('NotFoundError: a model no route matches -> 404 model_not_found', T, async () => {
    const id = uid();
    await assert.rejects(chat(client(), id, 'no-such-model'), (err) =>
      assertGatewayError(err, OpenAI.NotFoundError, 404, 'model_not_found', { param: 'model' }),
    );
    assert.equal(s.all(id).length, 0);
    await assert.rejects(client().models.retrieve('no-such-model'), (err) =>
      assertGatewayError(err, OpenAI.NotFoundError, 404, 'model_not_found', { param: 'model' }),
    );
  });

  test("BadRequestError: Azure's content_filter 400 with innererror intact", T, async () => {
    const id = uid();
    await assert.rejects(chat(client(), id, 'gpt-4o', { 'x-mock-scenario': 'content-filter-400' }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.code, 'content_filter');
      assert.equal(err.param, 'prompt');
      assert.equal(err.type, null);
      assert.deepEqual(err.error, CONTENT_FILTER_400_BODY.error, 'the whole error object, innererror included');
      assert.equal(err.error.innererror.code, 'ResponsibleAIPolicyViolation');
      assert.deepEqual(err.error.innererror.content_filter_result.self_harm, { filtered: true, severity: 'medium' });
      assert.deepEqual(err.error.innererror.content_filter_result.jailbreak, { filtered: false, detected: false });
      assert.equal(err.headers['x-gateway-rate-limited'], undefined);
      return true;
    });
    const rec = await s.find(id);
    assertAzureDeploymentRequest(rec, 'gpt4o-prod', 'chat/completions', ...ALL_KEYS);
    assert.equal(rec.responseStatus, 400);
  });

  test("RateLimitError from the gateway's own 429 (rpm 1, second call)", T, async () => {
    const c = client(LIMITED_KEY);
    const first = await chat(c, uid());
    assert.equal(first.choices[0].message.content, 'Hello world');
    const id = uid();
    await assert.rejects(chat(c, id), (err) => {
      assertGatewayError(err, OpenAI.RateLimitError, 429, 'rate_limit_exceeded', { type: 'requests' });
      assert.match(err.error.message, /limited/, "the key's name is in the message");
      assert.equal(err.headers['x-gateway-rate-limited'], 'requests');
      assert.match(err.headers['retry-after'], /^[1-9]\d*$/);
      const ms = Number(err.headers['retry-after-ms']);
      assert.ok(Number.isInteger(ms) && ms > 0 && ms <= 61_000, `retry-after-ms ${err.headers['retry-after-ms']}`);
      assert.equal(Math.ceil(ms / 1000), Number(err.headers['retry-after']), 'retry-after = retry-after-ms rounded up');
      return true;
    });
    assert.equal(s.all(id).length, 0, 'the limited request did not reach the upstream');
  });

  test("RateLimitError from the upstream's 429: body and retry headers pass through", T, async () => {
    const id = uid();
    await assert.rejects(chat(client(), id, 'gpt-4o', { 'x-mock-scenario': 'rate-limited' }), (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 429);
      assert.deepEqual(err.error, RATE_LIMIT_429_BODY.error);
      assert.equal(err.headers['retry-after-ms'], '1000');
      assert.equal(err.headers['retry-after'], '1');
      assert.equal(err.headers['x-gateway-rate-limited'], undefined, 'not the gateway’s own 429');
      return true;
    });
    assert.equal(s.all(id).length, 1, 'maxRetries 0: one attempt');
  });

  test("the SDK's retries wait as the upstream's retry-after-ms says", { timeout: 30_000 }, async () => {
    // 1200 ms: above the SDK's own backoff for the first two retries (at most 500 and 1000 ms), so
    // only obeying retry-after-ms makes the gaps long enough.
    const N = 1200;
    const K = 2;
    const id = uid();
    const c = client(KEY, { maxRetries: 2 });
    const res = await chat(c, id, 'gpt-4o', {
      'x-mock-scenario': 'retry-after-ms',
      'x-mock-fail-times': String(K),
      'x-mock-retry-after-ms': String(N),
    });
    assert.equal(res.choices[0].message.content, 'Hello world');

    const attempts = s.all(id);
    assert.equal(attempts.length, K + 1, 'K failed attempts, then the one that succeeded');
    assert.deepEqual(attempts.map((r) => r.responseStatus), [429, 429, 200]);
    assert.deepEqual(attempts.map((r) => r.responseHeaders['retry-after-ms']), [String(N), String(N), undefined]);
    assert.deepEqual(attempts.map((r) => r.headers['x-stainless-retry-count']), ['0', '1', '2']);
    for (const r of attempts) {
      assertAzureDeploymentRequest(r, 'gpt4o-prod', 'chat/completions', ...ALL_KEYS);
      assertNoClientCredential(r, KEY);
    }
    for (let i = 1; i < attempts.length; i++) {
      const gap = attempts[i].receivedAt - attempts[i - 1].receivedAt;
      assert.ok(gap >= N, `attempt ${i + 1} came ${gap.toFixed(1)} ms after the previous one; retry-after-ms said ${N}`);
      assert.ok(gap < N + 2000, `attempt ${i + 1} came ${gap.toFixed(1)} ms after the previous one (> ${N} + 2000)`);
    }
  });
});
