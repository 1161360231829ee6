// The official `openai` SDK with retries off (maxRetries: 0) in front of a route with two Azure
// regions, one of which answers 429 to every request: the application never sees an error,
// streams included, and every answer comes from the region that has quota.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway } from '../integration/harness.mjs';
import { T, HOOK } from './common.mjs';

test('maxRetries 0: no error while one of two regions answers 429 to everything', { timeout: HOOK.timeout + T.timeout }, async (t) => {
  const throttled = await startMock({ defaults: { 'x-mock-scenario': 'rate-limited' } });
  const healthy = await startMock();
  t.after(() => throttled.close());
  t.after(() => healthy.close());
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
upstreams:
  eastus:
    provider: azure
    base_url: "${throttled.url}"
    api_key: "east-secret"
    deployments: {gpt-4o: gpt-4o-east}
  swedencentral:
    provider: azure
    base_url: "${healthy.url}"
    api_key: "sweden-secret"
    deployments: {gpt-4o: gpt-4o-sweden}
routes:
  - match: "gpt-4o"
    backends:
      - {upstream: eastus, weight: 3}
      - {upstream: swedencentral, weight: 1}
`,
    { t },
  );
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 15_000 });
  const messages = [{ role: 'user', content: 'Hello' }];
  for (let i = 0; i < 10; i++) {
    const { data, response } = await client.chat.completions.create({ model: 'gpt-4o', messages }).withResponse();
    assert.equal(typeof data.choices[0].message.content, 'string');
    assert.equal(response.headers.get('x-gateway-upstream'), 'swedencentral');
  }
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.length > 0, 'the stream carried content');
  // eastus was asked once, then left alone for its retry-after (1 s); everything else went to
  // the region with quota.
  assert.ok(throttled.requests.length >= 1 && throttled.requests.length <= 2, `eastus got ${throttled.requests.length}`);
  assert.equal(healthy.requests.length, 11);
  assert.ok(healthy.requests.every((r) => r.route.deployment === 'gpt-4o-sweden'));
});
