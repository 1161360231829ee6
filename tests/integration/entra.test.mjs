// Microsoft Entra ID for azure upstreams, against the mock token service: each mode's token
// request, the Bearer token upstream (never an api-key), refresh at half the lifetime, failures
// and recovery (503 upstream_auth_unavailable meanwhile, /readyz 503 naming the upstream), the
// old token kept while a refresh fails, the federated token file re-read at every refresh, and
// no secret anywhere in the output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startTokenMock } from '../mock_upstream/mock_token.mjs';
import { startGateway, request, eventually, writeTemp, runGateway } from './harness.mjs';

const T = { timeout: 60_000 };
const SECRET = 'entra-client-secret-Zq8~x';
const chatBody = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };

async function stack(t, auth, { lifetime = 3600, env = {}, fail = null, hang = false } = {}) {
  const upstream = await startMock();
  const tokens = await startTokenMock({ lifetime });
  tokens.fail = fail;
  tokens.hang = hang;
  t.after(() => upstream.close());
  t.after(() => tokens.close());
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
upstreams:
  az:
    provider: azure
    base_url: "${upstream.url}"
    auth:
${auth(tokens.url)}
routes: [{match: "*", upstream: az}]
`,
    { t, env: typeof env === 'function' ? env(tokens.url) : env },
  );
  return { upstream, tokens, gw };
}

const clientSecret = (url) => `      type: entra
      mode: client_secret
      tenant_id: contoso
      client_id: app-123
      client_secret: "${SECRET}"
      authority_host: "${url}/"`;

const chat = (gw) => request(`${gw.url}/v1/chat/completions`, { body: chatBody });

async function ready(gw) {
  await eventually(async () => (await request(`${gw.url}/readyz`)).status === 200, { timeoutMs: 10_000, what: 'ready with a token' });
}

test('client_secret: the client-credentials grant, then Bearer <token> upstream and no api-key', T, async (t) => {
  const { upstream, tokens, gw } = await stack(t, clientSecret);
  await ready(gw);
  const res = await chat(gw);
  assert.equal(res.status, 200, res.text);
  const rec = upstream.requests.at(-1);
  assert.equal(rec.headers.authorization, 'Bearer tok-1');
  assert.equal(rec.headers['api-key'], undefined);
  const tr = tokens.requests[0];
  assert.equal(tr.method, 'POST');
  assert.equal(tr.path, '/contoso/oauth2/v2.0/token', 'authority_host with a trailing slash gives the same URL');
  assert.deepEqual(tr.form, {
    grant_type: 'client_credentials',
    client_id: 'app-123',
    scope: 'https://cognitiveservices.azure.com/.default',
    client_secret: SECRET,
  });
  assert.equal(tr.headers['content-type'], 'application/x-www-form-urlencoded');
  for (const l of gw.stderr) assert.ok(!l.includes(SECRET) && !l.includes('tok-1'), `no secret or token in the log: ${l}`);
  assert.ok(!gw.logs.some((o) => /plain http/.test(o.msg)), 'a loopback token service is no warning');

  // A reload that keeps the identity keeps its token: no new token request.
  fs.writeFileSync(gw.configFile, fs.readFileSync(gw.configFile, 'utf8').replace('routes: [{match: "*", upstream: az}]', 'routes: [{match: "gpt-*", upstream: az}, {match: "*", upstream: az}]'));
  gw.proc.kill('SIGHUP');
  await gw.waitForLog((o) => o.msg === 'configuration reloaded');
  assert.equal((await chat(gw)).status, 200);
  assert.equal(upstream.requests.at(-1).headers.authorization, 'Bearer tok-1');
  assert.equal(tokens.requests.length, 1, 'the token cache survived the reload');
});

test('a token endpoint that never answers: the request times out, is retried, and the gateway recovers', T, async (t) => {
  const { tokens, gw } = await stack(t, clientSecret, { hang: true });
  await eventually(() => tokens.requests.length >= 1, { what: 'a token request' });
  assert.equal((await request(`${gw.url}/readyz`)).status, 503);
  const res = await chat(gw);
  assert.equal(res.status, 503);
  assert.equal(res.json.error.code, 'upstream_auth_unavailable');
  tokens.hang = false;
  // The hung request times out (10 s), the retry after 1 s gets a token.
  const failed = await gw.waitForLog((o) => o.msg === 'entra token request failed', 15_000);
  assert.match(failed.detail, /timeout|timed out/i);
  await ready(gw);
  assert.equal((await chat(gw)).status, 200);
});

test('refresh at half the lifetime; 100 concurrent requests make no token request of their own', T, async (t) => {
  const { upstream, tokens, gw } = await stack(t, clientSecret, { lifetime: 4 });
  await ready(gw);
  // Half of 4 s: a second token within about 2 s, without any request asking for it.
  await eventually(() => tokens.requests.length >= 2, { timeoutMs: 6000, what: 'a refresh' });
  const before = tokens.requests.length;
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: 100 }, () => chat(gw)));
  assert.ok(results.every((r) => r.status === 200));
  // Only the scheduled refreshes (one per 2 s) may happen meanwhile: the requests ask for none.
  const scheduled = 1 + Math.floor((Date.now() - t0) / 2000);
  assert.ok(tokens.requests.length - before <= scheduled, `the burst caused ${tokens.requests.length - before} token requests`);
  assert.ok(upstream.requests.every((r) => /^Bearer tok-\d+$/.test(r.headers.authorization)));
  const metrics = (await request(`${gw.url}/metrics`)).text;
  assert.match(metrics, /llm_gateway_token_refresh_total\{[^}]*outcome="success"[^}]*upstream="az"[^}]*\} [2-9]|llm_gateway_token_refresh_total\{[^}]*upstream="az"[^}]*outcome="success"[^}]*\} [2-9]/);
  const expiry = Number(/llm_gateway_token_expiry_seconds\{upstream="az"\} ([0-9.e+-]+)/.exec(metrics)?.[1]);
  assert.ok(expiry > 0 && expiry <= 4, `expiry ${expiry}`);
});

test('a failing token endpoint: the gateway starts, /readyz and requests say why (without the secret), and it recovers', T, async (t) => {
  const fail = { status: 400, body: { error: 'invalid_client', error_description: `AADSTS7000215: Invalid client secret provided. secret=${SECRET}`, error_codes: [7000215] } };
  const { tokens, gw } = await stack(t, clientSecret, { fail });
  await eventually(() => tokens.requests.length >= 1, { what: 'a token request' });
  const readyz = await request(`${gw.url}/readyz`);
  assert.equal(readyz.status, 503);
  assert.deepEqual(readyz.json, { status: 'not ready', upstreams_without_token: ['az'] });
  const res = await chat(gw);
  assert.equal(res.status, 503);
  assert.equal(res.json.error.code, 'upstream_auth_unavailable');
  assert.match(res.json.error.message, /'az'/);
  assert.match(res.json.error.message, /invalid_client/);
  assert.match(res.json.error.message, /AADSTS7000215/);
  assert.match(res.json.error.message, /oauth2\/v2\.0\/token/);
  assert.ok(!res.text.includes(SECRET), 'the secret is not in the error');
  // Recovery: the next attempt (backoff 1 s, 2 s, ...) gets a token.
  tokens.fail = null;
  await ready(gw);
  assert.equal((await chat(gw)).status, 200);
  for (const l of gw.stderr) assert.ok(!l.includes(SECRET), `no secret in the log: ${l}`);
});

// The token goes into the Authorization field of every upstream request: a token endpoint that
// answers one with a CR LF in it must not get a field of its choosing into them.
test('a token that is not a bearer token (CR LF inside) is refused: nothing reaches the upstream', T, async (t) => {
  const fail = { status: 200, body: { token_type: 'Bearer', expires_in: 3600, access_token: 'tok\r\nx-injected: yes' } };
  const { upstream, tokens, gw } = await stack(t, clientSecret, { fail });
  await eventually(() => tokens.requests.length >= 1, { what: 'a token request' });
  const res = await chat(gw);
  assert.equal(res.status, 503, res.text);
  assert.equal(res.json.error.code, 'upstream_auth_unavailable');
  assert.match(res.json.error.message, /b64token/);
  assert.ok(!res.text.includes('injected'), 'the answer is not quoted');
  assert.equal(upstream.requests.length, 0, 'nothing was sent upstream');
  tokens.fail = null;
  await ready(gw);
  assert.equal((await chat(gw)).status, 200);
  const rec = upstream.requests.at(-1);
  assert.match(rec.headers.authorization, /^Bearer tok-\d+$/);
  assert.equal(rec.headers['x-injected'], undefined);
});

test('while a refresh fails, the old token is used until it really expires', T, async (t) => {
  const { upstream, tokens, gw } = await stack(t, clientSecret, { lifetime: 3 });
  await ready(gw);
  const issuedAt = tokens.requests[0].at; // the token is valid for 3 s from (no earlier than) here
  tokens.fail = { status: 500, body: {} };
  // The refresh at 1.5 s fails; requests keep tok-1 until it expires, then get 503.
  await eventually(() => tokens.requests.length >= 2, { timeoutMs: 5000, what: 'a failed refresh' });
  const sent = Date.now();
  const res = await chat(gw);
  if (sent - issuedAt < 2500) {
    assert.equal(res.status, 200);
    assert.equal(upstream.requests.at(-1).headers.authorization, 'Bearer tok-1');
  }
  await eventually(async () => (await chat(gw)).status === 503, { timeoutMs: 6000, what: 'the token expired' });
  assert.ok(Date.now() - issuedAt >= 2950, `not before the token expired (${Date.now() - issuedAt} ms)`);
});

test('workload identity: AKS variables, the federated token file re-read at every refresh', T, async (t) => {
  const file = writeTemp('azure-identity-token', 'jwt-one\n');
  const { tokens, upstream, gw } = await stack(t, () => '      type: entra\n      mode: workload_identity', {
    lifetime: 2,
    env: (url) => ({
      AZURE_FEDERATED_TOKEN_FILE: file,
      AZURE_CLIENT_ID: 'wi-client',
      AZURE_TENANT_ID: 'wi-tenant',
      AZURE_AUTHORITY_HOST: `${url}/`,
    }),
  });
  await ready(gw);
  const first = tokens.requests[0];
  assert.equal(first.path, '/wi-tenant/oauth2/v2.0/token');
  assert.deepEqual(first.form, {
    grant_type: 'client_credentials',
    client_id: 'wi-client',
    scope: 'https://cognitiveservices.azure.com/.default',
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: 'jwt-one',
  });
  // The kubelet rotates the file: the next refresh sends the new content.
  fs.writeFileSync(file, 'jwt-two\n');
  await eventually(() => tokens.requests.some((r) => r.form.client_assertion === 'jwt-two'), { timeoutMs: 5000, what: 'the rotated assertion' });
  assert.equal((await chat(gw)).status, 200);
  assert.match(upstream.requests.at(-1).headers.authorization, /^Bearer tok-\d+$/);
});

test('managed identity through IMDS (Metadata: true, resource without /.default, a user-assigned client_id)', T, async (t) => {
  const { tokens, upstream, gw } = await stack(t, (url) => `      type: entra
      mode: managed_identity
      client_id: user-assigned-1
      endpoint: "${url}"`);
  await ready(gw);
  const tr = tokens.requests[0];
  assert.equal(tr.method, 'GET');
  assert.equal(tr.path, '/metadata/identity/oauth2/token');
  assert.deepEqual(tr.query, { 'api-version': '2018-02-01', resource: 'https://cognitiveservices.azure.com', client_id: 'user-assigned-1' });
  assert.equal(tr.headers.metadata, 'true');
  assert.equal((await chat(gw)).status, 200);
  assert.equal(upstream.requests.at(-1).headers.authorization, 'Bearer tok-1');
});

test('managed identity on App Service / Container Apps: IDENTITY_ENDPOINT and IDENTITY_HEADER', T, async (t) => {
  const { tokens, gw } = await stack(t, () => '      type: entra\n      mode: managed_identity', {
    env: (url) => ({ IDENTITY_ENDPOINT: `${url}/msi/token`, IDENTITY_HEADER: 'identity-header-secret' }),
  });
  await ready(gw);
  const tr = tokens.requests[0];
  assert.equal(tr.path, '/msi/token');
  assert.deepEqual(tr.query, { 'api-version': '2019-08-01', resource: 'https://cognitiveservices.azure.com' });
  assert.equal(tr.headers['x-identity-header'], 'identity-header-secret');
  assert.equal((await chat(gw)).status, 200);
  for (const l of gw.stderr) assert.ok(!l.includes('identity-header-secret'), `no secret in the log: ${l}`);
});

test('configuration: entra with an api_key is an error; --check-config never prints the secret', T, async () => {
  const file = writeTemp('entra.yaml', `upstreams:
  az:
    provider: azure
    base_url: "https://contoso.openai.azure.com"
    api_key: "also-a-key"
    auth: {type: entra, mode: client_secret, tenant_id: t, client_id: c, client_secret: "${SECRET}"}
routes: [{match: "*", upstream: az}]
`);
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr + r.stdout, /auth\.type entra and an api_key/);
  assert.ok(!(r.stderr + r.stdout).includes(SECRET));
  const ok = writeTemp('entra-ok.yaml', fs.readFileSync(file, 'utf8').replace('    api_key: "also-a-key"\n', ''));
  const r2 = await runGateway(['--check-config', ok]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.ok(!(r2.stderr + r2.stdout).includes(SECRET));
});

test('a plain-http token endpoint that is not on loopback is logged as a warning', T, async (t) => {
  const upstream = await startMock();
  t.after(() => upstream.close());
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
upstreams:
  az:
    provider: azure
    base_url: "${upstream.url}"
    auth:
${clientSecret('http://192.0.2.1:8080')}
routes: [{match: "*", upstream: az}]
`,
    { t },
  );
  const warning = await gw.waitForLog((o) => /plain http on a non-loopback/.test(o.msg));
  assert.equal(warning.url, 'http://192.0.2.1:8080');
  assert.equal(warning.upstream, 'az');
});
