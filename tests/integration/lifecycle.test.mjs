// Connection handling and process lifecycle: keep-alive on both sides, the retry of a request
// that failed on a reused idle upstream connection (GET only: a POST is never sent twice), health endpoints, graceful drain on SIGTERM.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  request,
  streamRequest,
  parseSSE,
  uid,
  assertRelayed,
  assertUsageStripped,
  tcpConnectRefused,
} from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

const config = (mockUrl, extraServer = '') => `
server:
  listen: "127.0.0.1:0"${extraServer}
admin:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mockUrl}"
    api_key: "life-key"
    deployments: {gpt-4o: gpt4o-prod}
routes:
  - {match: "*", upstream: az}
`;

describe('connections', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(config(mock.url));
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const chat = (id, extraHeaders = {}, opts = {}) =>
    request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, ...extraHeaders },
      body: { model: 'gpt-4o', messages: [] },
      ...opts,
    });

  test('health endpoints on the admin and on the main listener', T, async () => {
    assert.ok(gw.adminUrl, 'admin listener reported');
    assert.notEqual(gw.adminPort, gw.port);
    for (const base of [gw.adminUrl, gw.url]) {
      for (const p of ['/healthz', '/readyz']) {
        const res = await request(`${base}${p}`);
        assert.equal(res.status, 200, `${base}${p}`);
      }
    }
    assert.equal(mock.requests.length, 0, 'health checks never reach the upstream');
  });

  // The gateway keeps its idle upstream connections per worker thread, and a client connection
  // stays on one worker. So pool reuse is tested over one keep-alive client connection; requests
  // on different client connections may land on different workers (and pools).
  const withClientConnection = async (fn) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      return await fn(agent);
    } finally {
      agent.destroy();
    }
  };

  test('sequential requests reuse one upstream connection', T, async () => {
    await withClientConnection(async (agent) => {
      const ids = [uid(), uid(), uid()];
      for (const id of ids) assertRelayed(await chat(id, {}, { agent }), await find(id));
      const recs = await Promise.all(ids.map(find));
      assert.equal(recs[1].socketId, recs[0].socketId);
      assert.equal(recs[2].socketId, recs[0].socketId);
      assert.equal(recs[2].socketRequestIndex, recs[0].socketRequestIndex + 2);
    });
  });

  test('client keep-alive: several requests on one client connection', T, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const ports = [];
      for (let i = 0; i < 3; i++) {
        const id = uid();
        const res = await chat(id, {}, { agent });
        assertRelayed(res, await find(id));
        ports.push(res.localPort);
      }
      assert.equal(new Set(ports).size, 1, 'same client socket for all requests');
    } finally {
      agent.destroy();
    }
  });

  test('a GET that fails on a reused idle connection is retried once on a fresh one', T, async () => {
    await withClientConnection(async (agent) => {
      // Warm the pool: this request leaves an idle upstream connection behind.
      const warm = uid();
      assertRelayed(await chat(warm, {}, { agent }), await find(warm));

      // reset-if-reused: the mock drops the connection if this is not its first request.
      const id = uid();
      const res = await request(`${gw.url}/v1/files`, {
        headers: { 'x-test-id': id, 'x-mock-scenario': 'reset-if-reused' },
        agent,
      });
      assert.equal(res.status, 200, `client gets the answer; body ${res.text}`);
      const attempts = mock.requests.filter((r) => r.headers['x-test-id'] === id);
      assert.equal(attempts.length, 2, 'one attempt on the reused connection, one retry');
      assert.ok(attempts[0].socketRequestIndex > 1, 'first attempt on a pooled connection');
      assert.equal(attempts[0].resetByMock, true);
      assert.notEqual(attempts[1].socketId, attempts[0].socketId, 'retry on another connection');
      assert.equal(attempts[1].socketRequestIndex, 1, 'retry on a fresh connection');
    });
  });

  test('a POST written whole on a reused connection is never sent twice: 502, one attempt', T, async () => {
    // The upstream read the whole completion request before the connection died: it may have
    // run (and billed) it, so re-sending could bill it twice.
    await withClientConnection(async (agent) => {
      const warm = uid();
      assertRelayed(await chat(warm, {}, { agent }), await find(warm));
      const id = uid();
      const res = await chat(id, { 'x-mock-scenario': 'reset-if-reused' }, { agent });
      assert.equal(res.status, 502, res.text);
      assert.equal(res.json.error.code, 'upstream_unreachable');
      const attempts = mock.requests.filter((r) => r.headers['x-test-id'] === id);
      assert.equal(attempts.length, 1, 'not re-sent');
    });
  });

  test('an upstream that answers "connection: close" is not reused', T, async () => {
    await withClientConnection(async (agent) => {
      const a = uid();
      const b = uid();
      const resA = await chat(a, { 'x-mock-scenario': 'close' }, { agent });
      assert.equal(resA.status, 200);
      assert.equal(resA.json.object, 'chat.completion');
      const resB = await chat(b, {}, { agent });
      assert.equal(resB.status, 200);
      assert.equal(resB.localPort, resA.localPort, "the upstream's connection: close does not close the client connection");
      const [recA, recB] = await Promise.all([find(a), find(b)]);
      assert.notEqual(recB.socketId, recA.socketId, 'the closed upstream connection is not reused');
    });
  });

  test('concurrent requests each get their own answer', T, async () => {
    const ids = Array.from({ length: 16 }, () => uid());
    const results = await Promise.all(ids.map((id) => chat(id)));
    for (let i = 0; i < ids.length; i++) {
      const rec = await find(ids[i]);
      assertRelayed(results[i], rec);
      assert.equal(results[i].headers['x-request-id'], rec.responseHeaders['x-request-id']);
    }
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM: listeners close, readyz 503, in-flight stream finishes, exit 0', { timeout: 30_000 }, async (t) => {
    const mock = await startMock();
    t.after(() => mock.close());
    const gw = await startGateway(config(mock.url, '\n  drain_timeout_ms: 20000'), { t });

    const id = uid();
    const tag = uid('drain');
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
      body: { model: 'gpt-4o', stream: true, messages: [] },
    });
    await s.waitFor((text) => text.includes('\n\n'));
    await mock.waitGated(tag);

    gw.proc.kill('SIGTERM');
    // The gateway logs "draining" once the main listener is closed and readiness is off.
    await gw.waitForLog((o) => o.msg === 'draining');
    assert.equal((await request(`${gw.adminUrl}/readyz`, { timeoutMs: 2000 })).status, 503,
      'admin /readyz answers 503 while draining');
    assert.ok(await tcpConnectRefused(gw.port), 'main listener closed');
    assert.equal(gw.proc.exitCode, null, 'still running while a stream is in flight');

    mock.release(tag);
    const done = await s.done;
    assert.equal(done.complete, true, 'the in-flight stream completes');
    const events = parseSSE(done.body.toString());
    assert.equal(events.at(-1).data, '[DONE]');
    const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
    // The gateway asked for usage on the client's behalf: all bytes but the usage chunk.
    assertUsageStripped(done.body, rec);

    const { code, signal } = await gw.exited;
    assert.equal(signal, null);
    assert.equal(code, 0);
  });

  test('SIGTERM with nothing in flight exits 0 promptly', T, async (t) => {
    const mock = await startMock();
    t.after(() => mock.close());
    const gw = await startGateway(config(mock.url), { t });
    const res = await request(`${gw.url}/v1/chat/completions`, { body: { model: 'gpt-4o', messages: [] } });
    assert.equal(res.status, 200);
    const { code } = await gw.stop('SIGTERM');
    assert.equal(code, 0);
  });

  test('drain_timeout_ms bounds the wait for a stream that never ends', T, async (t) => {
    const mock = await startMock();
    t.after(() => mock.close());
    const gw = await startGateway(config(mock.url, '\n  drain_timeout_ms: 500'), { t });
    const id = uid();
    const s = streamRequest(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': uid('never') },
      body: { model: 'gpt-4o', stream: true, messages: [] },
    });
    await s.waitFor((text) => text.includes('\n\n'));
    const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
    const t0 = Date.now();
    gw.proc.kill('SIGTERM');
    const exit = await gw.exited;
    assert.ok(Date.now() - t0 < 10_000, 'exited within the drain timeout (plus slack)');
    assert.equal(exit.signal, null, 'exited by itself, not killed');
    const done = await s.done;
    assert.doesNotMatch(done.body.toString(), /\[DONE\]/);
    await mock.waitAborted(rec);
  });
});

test('every worker accepts: one SO_REUSEPORT listener per I/O thread, all serving', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(config(mock.url, '\n  threads: 3'), { t });
  const listening = gw.logs.find((o) => o.msg === 'listening' && o.listener === 'main');
  assert.equal(listening.acceptors, '3', 'a listener for each of the 3 workers');
  // Many short connections: whichever listener the kernel picks, each is answered.
  const results = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      request(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-test-id': uid(), connection: 'close' },
        body: { model: 'gpt-4o', messages: [{ role: 'user', content: `n${i}` }] },
      }),
    ),
  );
  assert.deepEqual(results.map((r) => r.status), Array(30).fill(200));
});
