// Configuration reload: SIGHUP and a changed file (polled; replaced by rename as Kubernetes does)
// load the new configuration for new requests while running ones finish on theirs; a broken file
// is logged and counted and the old configuration keeps serving; limiter windows carry over;
// settings that need a restart are named and kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, streamRequest, eventually, uid } from './harness.mjs';

const T = { timeout: 60_000 };
const chatBody = (model = 'gpt-4o', extra = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });

function config(mockUrl, { keys = [], routes = '  - {match: "gpt-4o*", upstream: azure}', poll = 0, listen = '127.0.0.1:0', extra = '' } = {}) {
  const keyLines = keys.map((k) => `  - {name: ${k.name}, key: "${k.key}"${k.rpm ? `, rpm: ${k.rpm}` : ''}}`).join('\n');
  return `server:
  listen: "${listen}"
upstreams:
  azure:
    provider: azure
    base_url: "${mockUrl}"
    api_key: "upstream-key"
routes:
${routes}
${keys.length ? `keys:\n${keyLines}\n` : ''}reload:
  poll_ms: ${poll}
logging:
  access_log: "off"
${extra}`;
}

/** Replaces the file the way Kubernetes updates a mounted ConfigMap: a new file renamed over it. */
function replaceFile(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Sends SIGHUP and waits for the reload's outcome in the log (the n-th reload line). */
async function hangup(gw) {
  const before = gw.logs.filter((o) => o.msg === 'configuration reloaded' || o.msg === 'configuration reload failed').length;
  gw.proc.kill('SIGHUP');
  await eventually(
    () => gw.logs.filter((o) => o.msg === 'configuration reloaded' || o.msg === 'configuration reload failed').length > before,
    { what: 'a reload outcome in the log' },
  );
}

async function metricsText(gw) {
  const res = await request(`${gw.url}/metrics`);
  assert.equal(res.status, 200);
  return res.text;
}

const chat = (gw, key, model = 'gpt-4o', agent) =>
  request(`${gw.url}/v1/chat/completions`, { headers: key ? { authorization: `Bearer ${key}` } : {}, body: chatBody(model), agent });

test('SIGHUP: a rotated client key applies to new requests, also on a keep-alive connection', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const OLD = `sk-old-${uid()}`;
  const NEW = `sk-new-${uid()}`;
  const gw = await startGateway(config(mock.url, { keys: [{ name: 'team', key: OLD }] }), { t });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  // (A 401 closes its connection — its body is never read — so the keep-alive part below uses
  // 200s only.)
  const first = await chat(gw, OLD, 'gpt-4o', agent);
  assert.equal(first.status, 200);
  assert.equal((await chat(gw, NEW)).status, 401, 'not yet valid');

  fs.writeFileSync(gw.configFile, config(mock.url, { keys: [{ name: 'team', key: NEW }] }));
  await hangup(gw);
  assert.ok(gw.logs.some((o) => o.msg === 'configuration reloaded'), 'reloaded');
  // The connection that sat idle through the reload: its next request runs on the new
  // configuration (the old code took the snapshot when the connection went idle: 401 here).
  const next = await chat(gw, NEW, 'gpt-4o', agent);
  assert.equal(next.status, 200, 'the new key works on the idle keep-alive connection');
  assert.equal(next.localPort, first.localPort, 'the same client connection');
  // The upstream's settings did not change: its pooled connection (same worker, same pool) is
  // still the one in use.
  const [before, after] = [mock.requests.at(-2), mock.requests.at(-1)];
  assert.equal(after.socketId, before.socketId, 'the upstream connection pool survived the reload');
  assert.equal((await chat(gw, OLD)).status, 401, 'the old key is gone');
  const text = await metricsText(gw);
  assert.match(text, /llm_gateway_config_reloads_total\{outcome="success"\} 1\b/);
  for (const l of gw.stderr) assert.ok(!l.includes(OLD) && !l.includes(NEW), `no key in the log: ${l}`);
});

test('a file replaced by rename is picked up by polling: a new route works', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(config(mock.url, { poll: 100 }), { t });
  assert.equal((await chat(gw, null, 'o3-mini')).status, 404);
  const hashBefore = /llm_gateway_config_hash\{hash="([0-9a-f]+)"\} 1/.exec(await metricsText(gw))?.[1];
  assert.ok(hashBefore, 'the hash of the starting configuration');

  replaceFile(gw.configFile, config(mock.url, { poll: 100, routes: '  - {match: "gpt-4o*", upstream: azure}\n  - {match: "o3-*", upstream: azure}' }));
  await gw.waitForLog((o) => o.msg === 'configuration reloaded', 5000);
  assert.equal((await chat(gw, null, 'o3-mini')).status, 200);
  const text = await metricsText(gw);
  const hashes = [...text.matchAll(/llm_gateway_config_hash\{hash="([0-9a-f]+)"\} 1/g)].map((m) => m[1]);
  assert.equal(hashes.length, 1, 'one hash series: the configuration in use');
  assert.notEqual(hashes[0], hashBefore);
  assert.match(text, /llm_gateway_config_last_reload_success_timestamp_seconds \d/);
});

test('a broken file: errors logged with their position and counted; the old configuration keeps serving', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(config(mock.url), { t });
  fs.writeFileSync(gw.configFile, config(mock.url).replace('provider: azure', 'provider: azzure'));
  await hangup(gw);
  const failed = gw.logs.find((o) => o.msg === 'configuration reload failed');
  assert.ok(failed, 'the failure is logged');
  assert.match(failed.detail, /gateway\.yaml:\d+:\d+: .*azzure/);
  assert.equal((await chat(gw, null)).status, 200, 'still serving on the old configuration');
  const text = await metricsText(gw);
  assert.match(text, /llm_gateway_config_reloads_total\{outcome="error"\} 1\b/);
  assert.match(text, /llm_gateway_config_reloads_total\{outcome="success"\} 0\b/);
});

test('a reload during 50 open streams cuts none of them', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const gw = await startGateway(config(mock.url), { t });
  const tag = uid('gate');
  const streams = [];
  for (let i = 0; i < 50; i++) {
    streams.push(
      streamRequest(`${gw.url}/v1/chat/completions`, {
        headers: { 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
        body: chatBody('gpt-4o', { stream: true }),
      }),
    );
  }
  for (const s of streams) assert.equal((await s.response).status, 200);
  await eventually(() => mock.requests.filter((r) => r.headers['x-mock-tag'] === tag).length === 50, { what: '50 streams upstream' });
  // A new configuration that drops the route the streams use: they still finish on theirs.
  fs.writeFileSync(gw.configFile, config(mock.url, { routes: '  - {match: "other-*", upstream: azure}' }));
  await hangup(gw);
  assert.equal((await chat(gw, null)).status, 404, 'new requests see the new routes');
  mock.release(tag);
  for (const s of streams) {
    const done = await s.done;
    assert.equal(done.complete, true, 'stream completed');
    assert.ok(done.body.toString().includes('data: [DONE]'), 'to its end');
  }
});

test('limiter windows carry over: a key at its rpm stays limited after a reload; restart-only settings are named and kept', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const KEY = `sk-lim-${uid()}`;
  const gw = await startGateway(config(mock.url, { keys: [{ name: 'lim', key: KEY, rpm: 2 }] }), { t });
  assert.equal((await chat(gw, KEY)).status, 200);
  assert.equal((await chat(gw, KEY)).status, 200);
  assert.equal((await chat(gw, KEY)).status, 429);
  // Same key, a new route, and a new listen address (which cannot change live).
  fs.writeFileSync(
    gw.configFile,
    config(mock.url, { keys: [{ name: 'lim', key: KEY, rpm: 2 }], listen: '127.0.0.1:1', routes: '  - {match: "gpt-4o*", upstream: azure}\n  - {match: "o3-*", upstream: azure}' }),
  );
  await hangup(gw);
  assert.ok(gw.logs.some((o) => o.msg === 'configuration reloaded'));
  const warned = gw.logs.find((o) => o.setting === 'server.listen');
  assert.ok(warned && /restart/.test(warned.msg), 'the listen change is named');
  const res = await chat(gw, KEY);
  assert.equal(res.status, 429, 'still limited: the window carried over');
  assert.equal(res.headers['x-gateway-rate-limited'], 'requests');
  // The listener stayed where it was (the request above reached it).
  assert.equal(mock.requests.length, 2);
});
