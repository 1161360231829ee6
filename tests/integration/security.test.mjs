// Regression tests for the findings of the adversarial review (README "Security"): each sends the
// crafted request that broke a promise on the earlier gateway, through the real binary, and
// asserts the promise now holds. The upstream is the project's mock; what it records is what an
// upstream would have received with the gateway's credential.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, streamRequest, runGateway, writeTemp, tmpDir, uid, assertGatewayError } from './harness.mjs';
import { rawConnect } from '../faults/raw.mjs';

const T = { timeout: 60_000 };
const UPSTREAM_KEY = 'sk-upstream-secret-0123456789';
const KEY_LIMITED = 'sk-client-limited-0001';
const KEY_TPM = 'sk-client-tpm-0002';
const KEY_RPM = 'sk-client-rpm-0003';

const chat = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });

describe('credential and allow-list: a crafted path never reaches an upstream', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
upstreams:
  azure:
    provider: azure
    base_url: "${mock.url}/prefix"
    api_key: "${UPSTREAM_KEY}"
  oa:
    provider: openai
    base_url: "${mock.url}/oa"
    api_key: "${UPSTREAM_KEY}"
routes:
  - {match: "gpt-4o*", upstream: azure}
  - {match: "oa-*", upstream: oa}
  - {match: "*", upstream: azure}
keys:
  - {name: limited, key: "${KEY_LIMITED}", models: ["gpt-4o*", "oa-*"]}
logging:
  access_log: "off"
`,
    );
  });
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const sent = (id) => mock.requests.filter((r) => r.headers['x-test-id'] === id);

  test('a resource-level path that names a deployment: 400 invalid_path, nothing sent', T, async () => {
    for (const p of [
      '/v1/deployments/secret-deploy/chat/completions',
      '/openai/v1/deployments/secret-deploy/chat/completions',
      '/openai/Deployments/secret-deploy/chat/completions',
      '/openai/deployment%73/secret-deploy/chat/completions',
      '/v1/engines/secret-deploy/completions',
    ]) {
      const id = uid();
      const res = await request(`${gw.url}${p}`, {
        headers: { authorization: `Bearer ${KEY_LIMITED}`, 'x-test-id': id },
        body: chat('gpt-4o'),
      });
      assertGatewayError(res, 400, 'invalid_path', { type: 'invalid_request_error' });
      assert.deepEqual(sent(id), [], p);
    }
  });

  test('dot-segments, encoded ones and encoded slashes: 400 invalid_path, nothing sent', T, async () => {
    for (const p of [
      '/openai/deployments/gpt-4o/../secret-deploy/chat/completions',
      '/v1/files/../deployments/secret-deploy/chat/completions',
      '/v1/../../x',
      '/v1/files/%2e%2e/%2e%2e/x',
      '/openai/deployments/gpt-4o%2f..%2fsecret-deploy/chat/completions',
      '/v1/files//x',
    ]) {
      const id = uid();
      // A raw request: Node's client would normalise some of these targets itself.
      const c = await rawConnect(gw.port);
      const body = JSON.stringify(chat('gpt-4o'));
      await c.write(`POST ${p} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\nx-test-id: ${id}\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      const [res] = await c.responses(1);
      c.destroy();
      assert.equal(res?.status, 400, p);
      assert.equal(res.json.error.code, 'invalid_path', p);
      assert.deepEqual(sent(id), [], p);
    }
  });

  // RFC 9110 §6.5: a trailer cannot add to the header. A chunked request's trailer fields are
  // dropped, not forwarded to the upstream as header fields.
  test('trailer fields of a chunked request never reach the upstream', T, async () => {
    const id = uid();
    const c = await rawConnect(gw.port);
    const body = JSON.stringify(chat('gpt-4o'));
    await c.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\n` +
      `x-test-id: ${id}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n` +
      `${body.length.toString(16)}\r\n${body}\r\n0\r\n` +
      `x-smuggled: 1\r\napi-key: sk-not-the-gateways\r\nopenai-organization: org-smuggled\r\n\r\n`);
    const [res] = await c.responses(1);
    c.destroy();
    assert.equal(res.status, 200);
    const [rec] = sent(id);
    assert.ok(rec, 'the request reached the upstream');
    assert.equal(rec.body.toString(), body);
    assert.equal(rec.headers['x-smuggled'], undefined);
    assert.equal(rec.headers['openai-organization'], undefined);
    assert.equal(rec.headers['api-key'], UPSTREAM_KEY);
  });

  test('on an openai upstream, /v1/files/../../../x is refused, not sent with the upstream key', T, async () => {
    const id = uid();
    const c = await rawConnect(gw.port);
    await c.write(`GET /v1/files/../../../x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\nx-test-id: ${id}\r\n\r\n`);
    const [res] = await c.responses(1);
    c.destroy();
    assert.equal(res.status, 400);
    assert.deepEqual(sent(id), []);
  });

  test('the allow-list applies to the deployment the path addresses, whatever the body says', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/openai/deployments/secret-deploy/chat/completions?api-version=2024-10-21`, {
      headers: { 'api-key': KEY_LIMITED, 'x-test-id': id },
      body: chat('gpt-4o'),
    });
    assertGatewayError(res, 403, 'model_not_allowed');
    assert.deepEqual(sent(id), []);
  });

  test('absolute-form: the path is used, the host ignored; raw 0xFF in the target is 400', T, async () => {
    const id = uid();
    const c = await rawConnect(gw.port);
    const body = JSON.stringify(chat('gpt-4o'));
    await c.write(`POST http://evil.example:9999/v1/chat/completions HTTP/1.1\r\nhost: evil.example:9999\r\n` +
      `authorization: Bearer ${KEY_LIMITED}\r\nx-test-id: ${id}\r\ncontent-type: application/json\r\n` +
      `content-length: ${body.length}\r\n\r\n${body}`);
    const [res] = await c.responses(1);
    c.destroy();
    assert.equal(res.status, 200);
    const [rec] = sent(id);
    assert.equal(rec.path, '/prefix/openai/deployments/gpt-4o/chat/completions');

    const id2 = uid();
    const c2 = await rawConnect(gw.port);
    await c2.write(Buffer.concat([
      Buffer.from('GET /v1/models/'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from(` HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\nx-test-id: ${id2}\r\n\r\n`),
    ]));
    const [res2] = await c2.responses(1);
    c2.destroy();
    assert.equal(res2.status, 400);
    assert.deepEqual(sent(id2), []);
  });

  test('a client api-version in any case does not survive beside the gateway\'s', T, async () => {
    const id = uid();
    const res = await request(`${gw.url}/v1/chat/completions?API-VERSION=2099-01-01&Api-Version=1&x=1`, {
      headers: { authorization: `Bearer ${KEY_LIMITED}`, 'x-test-id': id },
      body: chat('gpt-4o'),
    });
    assert.equal(res.status, 200);
    const [rec] = sent(id);
    assert.equal(new URL(rec.url, 'http://x').search, '?x=1&api-version=2024-10-21');
  });

  test('only the methods an operation uses reach the upstream', T, async () => {
    for (const [method, p, status] of [
      ['PUT', '/v1/chat/completions', 405],
      ['PATCH', '/v1/files/f-1', 405],
      ['GET', '/v1/embeddings', 405],
      ['DELETE', '/v1/batches/b-1', 405],
      ['TRACE', '/v1/chat/completions', 405],
      ['OPTIONS', '/v1/chat/completions', 405],
    ]) {
      const id = uid();
      const c = await rawConnect(gw.port);
      const body = JSON.stringify(chat('gpt-4o'));
      await c.write(`${method} ${p} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\nx-test-id: ${id}\r\n` +
        `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      const [res] = await c.responses(1);
      c.destroy();
      assert.equal(res?.status, status, `${method} ${p}`);
      assert.equal(res.json.error.code, 'method_not_allowed');
      assert.ok(res.headers.allow, 'an Allow header');
      assert.deepEqual(sent(id), [], `${method} ${p}`);
    }
  });
});

describe('TPM limits hold against absurd numbers', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server: {listen: "127.0.0.1:0"}
upstreams:
  azure: {provider: azure, base_url: "${mock.url}", api_key: "${UPSTREAM_KEY}", timeout_ms: 300}
routes: [{match: "*", upstream: azure}]
keys:
  - {name: tpm, key: "${KEY_TPM}", tpm: 2000}
  - {name: rpm, key: "${KEY_RPM}", rpm: 1}
logging: {access_log: "off"}
`);
  });
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  test('max_tokens 2^63-1 is refused and leaves the window intact: 1 of 20 requests of 1500 pass', T, async () => {
    const huge = await request(`${gw.url}/v1/chat/completions`, {
      headers: { authorization: `Bearer ${KEY_TPM}`, 'content-type': 'application/json' },
      body: '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":9223372036854775807}',
    });
    assertGatewayError(huge, 400, 'invalid_value', { param: 'max_tokens' });
    // The upstream never answers (504 at timeout_ms), so each admitted reservation stands: an
    // honest limiter with tpm 2000 admits one request of 1500.
    let admitted = 0;
    for (let i = 0; i < 20; i++) {
      const res = await request(`${gw.url}/v1/chat/completions`, {
        headers: { authorization: `Bearer ${KEY_TPM}`, 'x-mock-scenario': 'hang' },
        body: chat('gpt-4o', { max_tokens: 1500 }),
      });
      if (res.status === 504) admitted++;
      else assert.equal(res.status, 429, res.text);
    }
    assert.equal(admitted, 1);
  });

  test('a 429 never asks for a wait the SDKs ignore (retry-after <= 60 s)', T, async () => {
    const first = await request(`${gw.url}/v1/chat/completions`, { headers: { authorization: `Bearer ${KEY_RPM}` }, body: chat('gpt-4o') });
    assert.equal(first.status, 200);
    const second = await request(`${gw.url}/v1/chat/completions`, { headers: { authorization: `Bearer ${KEY_RPM}` }, body: chat('gpt-4o') });
    assert.equal(second.status, 429);
    const s = Number(second.headers['retry-after']);
    const ms = Number(second.headers['retry-after-ms']);
    assert.ok(s > 0 && s <= 60, `retry-after ${s}`);
    assert.ok(ms > 0 && ms <= 60_000, `retry-after-ms ${ms}`);
  });
});

describe('an unauthenticated client cannot make the gateway hold a body', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
  max_header_bytes: 16384
  body_timeout_ms: 400
  max_buffered_body_bytes: 100000
upstreams:
  azure: {provider: azure, base_url: "${mock.url}", api_key: "${UPSTREAM_KEY}"}
routes: [{match: "*", upstream: azure}]
keys:
  - {name: limited, key: "${KEY_LIMITED}"}
logging: {access_log: "off"}
`);
  });
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  test('401 right after the header block of a 25 MiB body, with no body byte sent', T, async () => {
    const c = await rawConnect(gw.port);
    await c.write('POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n' +
      `content-length: ${25 * 1024 * 1024}\r\nexpect: 100-continue\r\n\r\n`);
    const [res] = await c.responses(1);
    assert.equal(res.status, 401, 'answered without waiting for the body (and no 100 Continue first)');
    assert.equal(res.json.error.code, 'invalid_api_key');
    assert.ok(await c.waitClosed(), 'the connection is closed: the body was never read');
    c.destroy();
  });

  test('a trickled body gets 408 at body_timeout_ms, however often bytes arrive', T, async () => {
    const c = await rawConnect(gw.port);
    await c.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\n` +
      'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{');
    // A byte every 20 ms (pacing the trickle, not waiting for anything): a timer that restarts
    // with every byte would never fire.
    const trickle = setInterval(() => {
      if (!c.closed) c.sock.write(' ');
    }, 20);
    const [res] = await c.responses(1, 5000);
    clearInterval(trickle);
    assert.equal(res.status, 408);
    assert.equal(res.json.error.code, 'request_timeout');
    c.destroy();
  });

  test('bodies over max_buffered_body_bytes together: 503 overloaded with retry-after 1', T, async () => {
    const c = await rawConnect(gw.port);
    await c.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\n` +
      'content-type: application/json\r\ncontent-length: 200000\r\n\r\n');
    const [res] = await c.responses(1);
    c.destroy();
    assert.equal(res.status, 503);
    assert.equal(res.json.error.code, 'overloaded');
    assert.equal(res.headers['retry-after'], '1');
  });

  test('max_header_bytes is exact: 16384 passes, 16385 and 20 KiB get 431', T, async () => {
    const header = (size) => {
      const base = `GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: \r\n\r\n`;
      return base.replace('x-pad: ', `x-pad: ${'a'.repeat(size - base.length)}`);
    };
    for (const [size, status] of [[16384, 200], [16385, 431], [20 * 1024, 431]]) {
      const c = await rawConnect(gw.port);
      const h = header(size);
      assert.equal(h.length, size);
      await c.write(h);
      const [res] = await c.responses(1);
      c.destroy();
      assert.equal(res?.status, status, `header block of ${size} bytes`);
    }
  });

  test('an early answer (413) reaches a client that is still sending its body', T, async () => {
    const c = await rawConnect(gw.port);
    await c.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY_LIMITED}\r\n` +
      `content-type: application/json\r\ncontent-length: ${26 * 1024 * 1024}\r\n\r\n`);
    // Keep sending while the answer arrives; the write may fail once the gateway has closed.
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    for (let i = 0; i < 64 && !c.closed; i++) {
      await c.write(chunk);
      if (c.data().length) break;
    }
    const [res] = await c.responses(1);
    c.destroy();
    assert.equal(res?.status, 413);
  });
});

test('requests cut by the drain deadline are each logged once with cut "drain" and counted', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const logFile = path.join(tmpDir(), 'access.log');
  const gw = await startGateway(`
server: {listen: "127.0.0.1:0", drain_timeout_ms: 200}
upstreams:
  azure: {provider: azure, base_url: "${mock.url}", api_key: "${UPSTREAM_KEY}"}
routes: [{match: "*", upstream: azure}]
logging: {access_log: "${logFile}"}
`);
  const ids = Array.from({ length: 5 }, () => uid('cut'));
  const streams = ids.map((id, i) =>
    streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-request-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': `drain-${id}` },
      body: chat('gpt-4o', { stream: true }),
    }),
  );
  for (const id of ids) await mock.waitGated(`drain-${id}`);
  const exit = await gw.stop('SIGTERM');
  assert.equal(exit.code, 0);
  for (const s of streams) {
    const d = await s.done;
    assert.equal(d.complete, false, 'the stream was cut');
  }
  const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  for (const id of ids) {
    const mine = lines.filter((l) => l.request_id === id);
    assert.equal(mine.length, 1, `one line for ${id}`);
    assert.equal(mine[0].cut, 'drain');
    assert.equal(mine[0].status, 200);
  }
});

test('--check-config --config FILE checks FILE; config errors name the expected type', T, async () => {
  const good = writeTemp('good.yaml', 'upstreams:\n  a: {provider: openai, base_url: "http://127.0.0.1:1"}\nroutes: [{match: "*", upstream: a}]\n');
  const r = await runGateway(['--check-config', '--config', good]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /configuration is valid/);
  const bad = writeTemp('bad.yaml', 'server:\n  max_header_bytes: [1]\nupstreams:\n  a: {provider: openai, base_url: "http://127.0.0.1:1"}\nroutes: [{match: "*", upstream: a}]\n');
  const b = await runGateway(['--check-config', bad]);
  assert.equal(b.code, 1);
  assert.match(b.stdout, /server\.max_header_bytes must be a whole number/);
});
