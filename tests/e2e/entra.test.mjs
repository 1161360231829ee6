// The official `openai` SDK through an upstream that accepts only Microsoft Entra ID: the app
// holds no credential at all; the gateway gets a token (client-credentials grant, mock token
// service) and the upstream sees `Authorization: Bearer <token>`, streams included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startTokenMock } from '../mock_upstream/mock_token.mjs';
import { startGateway, request, eventually } from '../integration/harness.mjs';
import { T, HOOK } from './common.mjs';

test('SDK through an Entra-only upstream: chat and a stream', { timeout: HOOK.timeout + T.timeout }, async (t) => {
  const upstream = await startMock();
  const tokens = await startTokenMock();
  t.after(() => upstream.close());
  t.after(() => tokens.close());
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
upstreams:
  az:
    provider: azure
    base_url: "${upstream.url}"
    deployments: {gpt-4o: gpt4o-prod}
    auth:
      type: entra
      mode: client_secret
      tenant_id: contoso
      client_id: gateway-app
      client_secret: "sdk-test-secret"
      authority_host: "${tokens.url}"
routes: [{match: "*", upstream: az}]
`,
    { t },
  );
  await eventually(async () => (await request(`${gw.url}/readyz`)).status === 200, { timeoutMs: 10_000, what: 'a token' });
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'not-a-real-key', maxRetries: 0 });
  const messages = [{ role: 'user', content: 'Hello' }];
  const done = await client.chat.completions.create({ model: 'gpt-4o', messages });
  assert.equal(typeof done.choices[0].message.content, 'string');
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.length > 0);
  assert.equal(upstream.requests.length, 2);
  for (const r of upstream.requests) {
    assert.equal(r.headers.authorization, 'Bearer tok-1');
    assert.equal(r.headers['api-key'], undefined);
    assert.equal(r.route.deployment, 'gpt4o-prod');
  }
  assert.equal(tokens.requests.length, 1);
});
