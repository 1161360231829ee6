// A client certificate presented to an upstream that demands one (APIM, Front Door, internal
// gateways with mutual TLS): without it the handshake fails (502 upstream_tls_error), with it
// the request goes through and the upstream sees the certificate.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, makeCA } from './harness.mjs';

test('client_cert_file / client_key_file: mutual TLS with the upstream', { timeout: 60_000 }, async (t) => {
  const pki = makeCA();
  const mock = await startMock({
    tls: { key: pki.server.key, cert: pki.server.cert, ca: pki.ca.cert, requestCert: true, rejectUnauthorized: true },
  });
  t.after(() => mock.close());
  const config = (extra) => `server: {listen: "127.0.0.1:0"}
upstreams:
  apim:
    provider: azure
    base_url: "https://localhost:${mock.port}"
    api_key: "k"
    ca_file: "${pki.ca.certPath}"
${extra}routes: [{match: "*", upstream: apim}]
`;
  const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] };

  const without = await startGateway(config(''), { t });
  const refused = await request(`${without.url}/v1/chat/completions`, { body });
  assert.equal(refused.status, 502, refused.text);
  assert.equal(refused.json.error.code, 'upstream_tls_error');

  const withCert = await startGateway(
    config(`    client_cert_file: "${pki.client.certPath}"\n    client_key_file: "${pki.client.keyPath}"\n`),
    { t },
  );
  const res = await request(`${withCert.url}/v1/chat/completions`, { body });
  assert.equal(res.status, 200, res.text);
  assert.equal(mock.requests.length, 1);
});
