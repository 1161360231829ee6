// The official `openai` SDK talking TLS to the gateway (server.tls), trusting the test CA through
// the SDK's own agent option, with and without a client certificate (mutual TLS optional, a key
// matched by the certificate's fingerprint). Chat, a stream and embeddings arrive byte for byte
// as the mock upstream sent them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import https from 'node:https';
import OpenAI from 'openai';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, makeCA, jsonLines, eventually } from '../integration/harness.mjs';
import { T, HOOK } from './common.mjs';

test('SDK over TLS with a custom CA; a client certificate names its key', { timeout: HOOK.timeout + T.timeout }, async (t) => {
  const pki = makeCA();
  const upstream = await startMock();
  t.after(() => upstream.close());
  const secret = `sk-e2e-${crypto.randomBytes(8).toString('hex')}`;
  const gw = await startGateway(
    `server:
  listen: "127.0.0.1:0"
  tls:
    cert_file: "${pki.server.certPath}"
    key_file: "${pki.server.keyPath}"
    client_ca_file: "${pki.ca.certPath}"
    client_auth: optional
upstreams:
  oa: {provider: openai, base_url: "${upstream.url}", api_key: "sk-upstream"}
routes: [{match: "*", upstream: oa}]
keys:
  - {name: by-secret, key: "${secret}"}
  - {name: by-cert, client_cert_sha256: "${new crypto.X509Certificate(pki.client.cert).fingerprint256}"}
`,
    { t },
  );
  const baseURL = `https://localhost:${gw.port}/v1`;
  const messages = [{ role: 'user', content: 'Hello' }];

  // A key, and the CA through the SDK's httpAgent.
  const withKey = new OpenAI({ baseURL, apiKey: secret, maxRetries: 0, httpAgent: new https.Agent({ ca: pki.ca.cert, keepAlive: true }) });
  const done = await withKey.chat.completions.create({ model: 'gpt-4o', messages });
  assert.equal(typeof done.choices[0].message.content, 'string');
  const stream = await withKey.chat.completions.create({ model: 'gpt-4o', messages, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  assert.ok(text.length > 0);
  const emb = await withKey.embeddings.create({ model: 'text-embedding-3-small', input: 'hello' });
  assert.ok(emb.data[0].embedding.length > 0);

  // No key at all: the client certificate is the credential (the SDK insists on some apiKey
  // string; the gateway ignores an empty bearer).
  const certAgent = new https.Agent({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, keepAlive: true });
  const byCert = new OpenAI({ baseURL, apiKey: '', maxRetries: 0, httpAgent: certAgent, defaultHeaders: { authorization: null } });
  const certDone = await byCert.chat.completions.create({ model: 'gpt-4o', messages });
  assert.equal(typeof certDone.choices[0].message.content, 'string');

  // Without the CA the SDK refuses the gateway's certificate.
  const untrusting = new OpenAI({ baseURL, apiKey: secret, maxRetries: 0 });
  await assert.rejects(untrusting.models.list(), /Connection error|certificate/i);

  assert.equal(upstream.requests.length, 4);
  for (const r of upstream.requests) assert.equal(r.headers.authorization, 'Bearer sk-upstream');
  const lines = await eventually(() => {
    const l = jsonLines(gw.stdout);
    return l.length >= 4 ? l : null;
  }, { what: 'four access-log lines' });
  assert.deepEqual(
    lines.map((l) => l.key),
    ['by-secret', 'by-secret', 'by-secret', 'by-cert'],
  );
});
