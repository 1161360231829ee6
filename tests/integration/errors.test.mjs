// Errors: the gateway's own JSON errors (400/404/413/431/502/504), upstream errors relayed
// unchanged, body size limits, and robustness against bytes that are not HTTP.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';

import { startMock, CONTENT_FILTER_400_BODY } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, uid, assertRelayed, assertGatewayError, closedPort } from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

describe('gateway errors and upstream errors (only route: gpt-*)', () => {
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
    api_key: "err-key"
routes:
  - {match: "gpt-*", upstream: az}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const sentUpstream = (id) => mock.requests.some((r) => r.headers['x-test-id'] === id);

  test('400 invalid_json', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'content-type': 'application/json', 'x-test-id': id },
      body: '{"model": "gpt-4o", "messages": [',
    });
    assertGatewayError(res, 400, 'invalid_json', { type: 'invalid_request_error' });
    assert.equal(sentUpstream(id), false);
  });

  test('400 missing_model', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body: { messages: [] } });
    assertGatewayError(res, 400, 'missing_model', { type: 'invalid_request_error', param: 'model' });
    assert.equal(sentUpstream(id), false);
  });

  test('404 model_not_found when no route matches', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-request-id': 'err-req-1' },
      body: { model: 'llama', messages: [] },
    });
    assertGatewayError(res, 404, 'model_not_found', { param: 'model' });
    assert.equal(res.headers['x-gateway-request-id'], 'err-req-1', 'errors carry the request id too');
    assert.equal(sentUpstream(id), false);
  });

  test('404 no_default_route for a resource-level request without a "*" route', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/files`, { headers: { 'x-test-id': id } });
    assertGatewayError(res, 404, 'no_default_route');
    assert.equal(sentUpstream(id), false);
  });

  test('431 request_header_fields_too_large (default max_header_bytes 16384)', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-big': 'a'.repeat(20_000) },
      body: { model: 'gpt-4o', messages: [] },
    });
    assertGatewayError(res, 431, 'request_header_fields_too_large');
    assert.equal(sentUpstream(id), false);
    // Headers just under the limit are fine.
    const id2 = uid();
    const ok = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id2, 'x-big': 'a'.repeat(12_000) },
      body: { model: 'gpt-4o', messages: [] },
    });
    assert.equal(ok.status, 200);
    assert.equal((await find(id2)).headers['x-big'].length, 12_000);
  });

  test('20 MiB body passes through intact under the default limit', T, async () => {
    const id = uid();
    const filler = crypto.randomBytes(15 * 1024 * 1024).toString('base64'); // 20 MiB of text
    const body = Buffer.from(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: filler }] }));
    assert.ok(body.length > 20 * 1024 * 1024);
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'content-type': 'application/json' },
      body,
      timeoutMs: 18_000,
    });
    const rec = await find(id);
    assert.equal(rec.body.length, body.length);
    assert.equal(crypto.createHash('sha256').update(rec.body).digest('hex'), crypto.createHash('sha256').update(body).digest('hex'));
    assertRelayed(res, rec);
  });

  describe('upstream errors are relayed unchanged', () => {
    test('400 content_filter (Azure body, innererror) byte-equal', T, async () => {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': id, 'x-mock-scenario': 'content-filter-400' },
        body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'bad' }] },
      });
      const rec = await find(id);
      assertRelayed(res, rec);
      assert.equal(res.status, 400);
      assert.deepEqual(res.json, CONTENT_FILTER_400_BODY);
    });

    test('429 with retry-after, retry-after-ms and x-ratelimit-* headers', T, async () => {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': id, 'x-mock-scenario': 'rate-limited' },
        body: { model: 'gpt-4o', messages: [] },
      });
      const rec = await find(id);
      assertRelayed(res, rec);
      assert.equal(res.status, 429);
      assert.equal(res.headers['retry-after'], '1');
      assert.equal(res.headers['retry-after-ms'], '1000');
      assert.equal(res.headers['x-ratelimit-limit-requests'], '8');
      assert.equal(res.headers['x-ratelimit-remaining-requests'], '99');
      assert.equal(res.headers['x-ms-region'], 'Sweden Central');
      assert.equal(mock.requests.filter((r) => r.headers['x-test-id'] === id).length, 1, 'a 429 is not retried by the gateway');
    });

    for (const status of [500, 503, 401, 404]) {
      test(`upstream ${status} relayed`, T, async () => {
        const id = uid();
        const res = await request(`${gw.url}/v1/chat/completions`, {
          headers: { 'x-test-id': id, 'x-mock-scenario': 'error', 'x-mock-status': String(status) },
          body: { model: 'gpt-4o', messages: [] },
        });
        const rec = await find(id);
        assert.equal(res.status, status);
        assertRelayed(res, rec);
      });
    }
  });

  test('bytes that are not HTTP: 400 or close, and the gateway keeps serving', T, async () => {
    const junk = [
      Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' + 'x'.repeat(64), 'latin1'), // a TLS ClientHello
      Buffer.from('GARBAGE GARBAGE GARBAGE\r\n\r\n'),
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n'),
      Buffer.from('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'),
    ];
    for (const bytes of junk) {
      const reply = await new Promise((resolve, reject) => {
        const s = net.connect(gw.port, '127.0.0.1');
        let got = '';
        const timer = setTimeout(() => {
          s.destroy();
          reject(new Error(`gateway neither answered nor closed within 5 s; got: ${JSON.stringify(got)}`));
        }, 5000);
        s.on('data', (d) => {
          got += d.toString('latin1');
          // An answer is enough; the gateway may also keep the connection open after it.
          if (/\r\n\r\n/.test(got)) {
            clearTimeout(timer);
            s.destroy();
            resolve(got);
          }
        });
        s.on('error', () => {});
        s.on('close', () => {
          clearTimeout(timer);
          resolve(got);
        });
        s.write(bytes);
      });
      assert.ok(reply === '' || /^HTTP\/1\.[01] 4\d\d /.test(reply), `400-class answer or a close, got ${JSON.stringify(reply.slice(0, 80))}`);
      assert.equal(gw.proc.exitCode, null, 'gateway still running');
      const id = uid();
      const ok = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-test-id': id }, body: { model: 'gpt-4o', messages: [] } });
      assert.equal(ok.status, 200);
      assertRelayed(ok, await find(id));
    }
  });
});

describe('body size limit (max_body_bytes: 4096)', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
  max_body_bytes: 4096
upstreams:
  oa:
    provider: openai
    base_url: "${mock.url}"
routes:
  - {match: "*", upstream: oa}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });
  const sentUpstream = (id) => mock.requests.some((r) => r.headers['x-test-id'] === id);

  // A JSON body of exactly n bytes.
  const bodyOf = (n) => {
    const base = JSON.stringify({ model: 'gpt-4o', messages: [], pad: '' });
    return Buffer.from(base.replace('"pad":""', `"pad":"${'p'.repeat(n - base.length)}"`));
  };

  for (const chunked of [false, true]) {
    const how = chunked ? 'chunked' : 'content-length';
    test(`exactly max_body_bytes passes (${how})`, T, async () => {
      const id = uid();
      const body = bodyOf(4096);
      assert.equal(body.length, 4096);
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': id, 'content-type': 'application/json' },
        body,
        chunked,
      });
      assert.equal(res.status, 200);
      const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
      assert.ok(rec.body.equals(body));
    });

    test(`one byte over -> 413 request_too_large (${how})`, T, async () => {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': id, 'content-type': 'application/json' },
        body: bodyOf(4097),
        chunked,
      });
      assertGatewayError(res, 413, 'request_too_large');
      assert.equal(sentUpstream(id), false);
    });

    test(`far over -> 413 request_too_large (${how}, 1 MiB)`, T, async () => {
      const id = uid();
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': id, 'content-type': 'application/json' },
        body: bodyOf(1024 * 1024),
        chunked,
      });
      assertGatewayError(res, 413, 'request_too_large');
      assert.equal(sentUpstream(id), false);
    });
  }
});

describe('upstream failures', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    const deadPort = await closedPort();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  dead:
    provider: azure
    base_url: "http://127.0.0.1:${deadPort}"
    api_key: "k"
    connect_timeout_ms: 2000
  slow:
    provider: azure
    base_url: "${mock.url}"
    api_key: "k"
    timeout_ms: 500
  deadoa:
    provider: openai
    base_url: "http://127.0.0.1:${deadPort}"
routes:
  - {match: "dead-oa", upstream: deadoa}
  - {match: "dead-*", upstream: dead}
  - {match: "slow-*", upstream: slow}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  test('502 upstream_unreachable (closed port)', T, async () => {
    for (const model of ['dead-model', 'dead-oa']) {
      const res = await request(`${gw.url}/v1/chat/completions`, { headers: { 'x-request-id': `dead-${model}` }, body: { model, messages: [] } });
      assertGatewayError(res, 502, 'upstream_unreachable', { type: 'api_error' });
      assert.equal(res.headers['x-gateway-request-id'], `dead-${model}`);
    }
  });

  test('504 upstream_timeout (upstream never answers, timeout_ms 500), upstream request closed', T, async () => {
    const id = uid();
    const t0 = Date.now();
    const res = await request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'hang' },
      body: { model: 'slow-model', messages: [] },
    });
    assertGatewayError(res, 504, 'upstream_timeout');
    assert.ok(Date.now() - t0 < 5000, 'timed out near timeout_ms, not much later');
    const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
    await mock.waitAborted(rec, 3000);
  });
});
