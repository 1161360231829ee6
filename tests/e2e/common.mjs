// Shared setup for the end-to-end suite: the official `openai` npm SDK (pinned in package.json)
// talks to the real gateway binary, which talks to tests/mock_upstream. Every test checks both
// sides: what the SDK returns, and what the mock received.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, eventually } from '../integration/harness.mjs';

export const T = { timeout: 20_000 };
export const HOOK = { timeout: 30_000 };

// The api-version the azure upstream is configured with: different from what the AzureOpenAI
// client sends (CLIENT_API_VERSION), so the replacement shows.
export const AZ_API_VERSION = '2025-01-01-preview';
export const CLIENT_API_VERSION = '2024-10-21';
// responses has no GA dated version: without api_versions.responses the gateway uses this one.
export const AZ_RESPONSES_API_VERSION = '2025-04-01-preview';
export const AZ_UPSTREAM_KEY = 'upstream-secret';
export const OA_UPSTREAM_KEY = 'openai-upstream-secret';

// model -> Azure deployment of the azure upstream.
export const DEPLOYMENTS = {
  'gpt-4o': 'gpt4o-prod',
  'text-embedding-3-small': 'embed-small',
  'whisper-1': 'whisper-prod',
  'tts-1': 'tts-prod',
  'dall-e-3': 'dalle3-prod',
  'gpt-35-turbo-instruct': 'instruct-prod',
};
// Models routed to the openai upstream.
export const OA_CHAT_MODEL = 'gpt-4.1-mini';
export const OA_EMBED_MODEL = 'text-embedding-3-large';
export const OA_AUDIO_MODEL = 'gpt-4o-mini-transcribe';

/** Random per run, so that finding one in what the mock received cannot be a coincidence. */
export function randomKey(name) {
  return `sk-${name}-${crypto.randomBytes(12).toString('hex')}`;
}

/**
 * The gateway config: an azure upstream (deployments style) and an openai upstream, both the mock,
 * each with its own key. `withDefaultRoute`: a final `*` route to the azure upstream (files and
 * batches name no model and go there); without it a model outside the routes gets 404.
 */
export function gatewayConfig(mockUrl, keys, { withDefaultRoute = true } = {}) {
  const deployments = Object.entries(DEPLOYMENTS)
    .map(([m, d]) => `${m}: ${d}`)
    .join(', ');
  return `
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mockUrl}"
    api_version: "${AZ_API_VERSION}"
    api_key: "${AZ_UPSTREAM_KEY}"
    deployments: {${deployments}}
  oa:
    provider: openai
    base_url: "${mockUrl}"
    api_key: "${OA_UPSTREAM_KEY}"
routes:
  - {match: "${OA_AUDIO_MODEL}", upstream: oa}
  - {match: "gpt-4o*", upstream: az}
  - {match: "${OA_EMBED_MODEL}", upstream: oa}
  - {match: "text-embedding-*", upstream: az}
  - {match: "${OA_CHAT_MODEL}", upstream: oa}
  - {match: "whisper-1", upstream: az}
  - {match: "tts-1", upstream: az}
  - {match: "dall-e-3", upstream: az}
  - {match: "gpt-35-turbo-instruct", upstream: az}
${withDefaultRoute ? '  - {match: "*", upstream: az}\n' : ''}keys:
${keys
  .map(
    (k) =>
      `  - name: ${k.name}\n    key: "${k.key}"\n` +
      (k.rpm ? `    rpm: ${k.rpm}\n` : '') +
      (k.models ? `    models: ${JSON.stringify(k.models)}\n` : ''),
  )
  .join('')}`;
}

/**
 * Start a mock and a gateway in front of it.
 * @param {{name: string, key: string, rpm?: number, models?: string[]}[]} keys
 */
export async function startStack(keys, opts = {}) {
  const mock = await startMock();
  let gw;
  try {
    gw = await startGateway(gatewayConfig(mock.url, keys, opts));
  } catch (e) {
    await mock.close();
    throw e;
  }
  return {
    mock,
    gw,
    async stop() {
      await gw.stop();
      await mock.close();
    },
    /** The mock's record of the request sent with header x-test-id: id. */
    find: (id, timeoutMs = 5000) => mock.waitForRequest((r) => r.headers['x-test-id'] === id, timeoutMs),
    /** Every recorded request with that x-test-id. */
    all: (id) => mock.requests.filter((r) => r.headers['x-test-id'] === id),
    /** The gateway's access-log line for the request with x-request-id: id (what the SDK sent). */
    accessLog: (id, timeoutMs = 5000) => waitForAccessLog(gw, id, timeoutMs),
  };
}

/**
 * The access log goes to the gateway's stdout, one JSON object per line, written by a thread of
 * its own after the response: nothing announces it, so look again until it is there.
 */
function waitForAccessLog(gw, id, timeoutMs) {
  const find = () => {
    for (const line of gw.stdout) {
      if (!line.includes(id)) continue;
      try {
        const o = JSON.parse(line);
        if (o.request_id === id) return o;
      } catch {}
    }
    return null;
  };
  return eventually(find, { timeoutMs, intervalMs: 10, what: `access-log line with request_id ${id}` });
}

/**
 * Per-request SDK options: x-test-id finds the request at the mock, x-request-id its access-log
 * line (the gateway takes the client's x-request-id as its request id).
 */
export function reqOpts(id, headers = {}) {
  return { headers: { 'x-test-id': id, 'x-request-id': id, ...headers } };
}

/**
 * Nothing the mock received carries a client credential: not in any header name or value, not in
 * the URL, not in the body.
 */
export function assertNoClientCredential(rec, ...clientKeys) {
  const raw = rec.rawHeaders.join('\n');
  for (const k of clientKeys) {
    assert.ok(!raw.includes(k), `client key forwarded in the upstream headers:\n${raw}`);
    assert.ok(!rec.url.includes(k), `client key in the upstream URL ${rec.url}`);
    assert.ok(!rec.body.toString('latin1').includes(k), 'client key in the upstream body');
  }
}

/** The request reached the azure upstream at `/openai/deployments/{deployment}/{op}` with its key. */
export function assertAzureDeploymentRequest(rec, deployment, op, ...clientKeys) {
  assert.equal(rec.method, 'POST');
  assert.equal(rec.path, `/openai/deployments/${deployment}/${op}`);
  assertAzureAuthAndVersion(rec, AZ_API_VERSION, ...clientKeys);
}

/** azure upstream: api-key = the upstream's key, no Authorization, exactly one api-version = `version`. */
export function assertAzureAuthAndVersion(rec, version, ...clientKeys) {
  assert.deepEqual(rec.query, { 'api-version': version }, `query of ${rec.url}`);
  assert.equal(rec.url.split('api-version=').length - 1, 1, `exactly one api-version in ${rec.url}`);
  assert.equal(rec.headers['api-key'], AZ_UPSTREAM_KEY, 'the azure upstream gets its own api-key');
  assert.equal(rec.headers.authorization, undefined, 'no Authorization header to Azure');
  assertNoClientCredential(rec, ...clientKeys);
}

/** openai upstream: `/v1/{op}`, no query, Authorization: Bearer <upstream key>, no api-key. */
export function assertOpenAIRequest(rec, op, ...clientKeys) {
  assert.equal(rec.path, `/v1/${op}`);
  assert.deepEqual(rec.query, {}, `no query (no api-version) to an openai upstream: ${rec.url}`);
  assert.equal(rec.headers.authorization, `Bearer ${OA_UPSTREAM_KEY}`);
  assert.equal(rec.headers['api-key'], undefined, 'no api-key header to an openai upstream');
  assertNoClientCredential(rec, ...clientKeys);
}

/** Parse an SSE body into its data payloads (strings), in order. */
export function sseData(buf) {
  return Buffer.from(buf)
    .toString('utf8')
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim())
    .map((b) =>
      b
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n'),
    );
}

/** Concatenated delta.content of a chat stream's chunks (objects) as the upstream sent them. */
export function assembledContent(chunks) {
  return chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
}

/** The JSON chunks (not [DONE]) of an SSE chat stream the mock sent. */
export function mockChunks(rec) {
  return sseData(rec.responseBody)
    .filter((d) => d !== '[DONE]')
    .map((d) => JSON.parse(d));
}

/** Decode an OpenAI base64 embedding (little-endian float32) into plain numbers. */
export function decodeBase64Embedding(b64) {
  const buf = Buffer.from(b64, 'base64');
  return Array.from(new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)));
}
