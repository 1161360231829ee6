// HTTPS upstreams: certificate chain and host name verification, ca_file, SNI.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, request, makeCA, uid, assertRelayed, assertGatewayError, metricValue } from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

describe('TLS to the upstream', () => {
  let pki;
  let good; // cert for 127.0.0.1 + localhost, signed by pki.ca
  let wrongName; // cert for wrong.example, signed by pki.ca
  let untrusted; // cert for 127.0.0.1 + localhost, signed by another CA
  let gw;
  before(async () => {
    pki = makeCA();
    good = await startMock({ tls: { key: pki.server.key, cert: pki.server.cert } });
    wrongName = await startMock({ tls: { key: pki.wrongName.key, cert: pki.wrongName.cert } });
    untrusted = await startMock({ tls: { key: pki.untrustedServer.key, cert: pki.untrustedServer.cert } });
    const az = (name, baseUrl, caFile) => `
  ${name}:
    provider: azure
    base_url: "${baseUrl}"
    api_key: "tls-key"${caFile ? `\n    ca_file: "${caFile}"` : ''}
    deployments: {${name}: ${name}-dep}`;
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:${az('tls-ok', good.url, pki.ca.certPath)}${az('tls-noca', good.url)}${az('tls-localhost', `https://localhost:${good.port}`, pki.ca.certPath)}${az('tls-wrongname', wrongName.url, pki.ca.certPath)}${az('tls-untrusted', untrusted.url, pki.ca.certPath)}
routes:
  - {match: "tls-ok", upstream: tls-ok}
  - {match: "tls-noca", upstream: tls-noca}
  - {match: "tls-localhost", upstream: tls-localhost}
  - {match: "tls-wrongname", upstream: tls-wrongname}
  - {match: "tls-untrusted", upstream: tls-untrusted}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await Promise.all([good, wrongName, untrusted].map((m) => m?.close()));
  });

  const chat = (model, id, agent) =>
    request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': id, authorization: 'Bearer sk-client' },
      body: { model, messages: [{ role: 'user', content: 'hi' }] },
      agent,
    });

  test('https://127.0.0.1 with ca_file -> 200, request translated', T, async () => {
    const id = uid();
    const res = await chat('tls-ok', id);
    const rec = await good.waitForRequest((r) => r.headers['x-test-id'] === id);
    assert.equal(rec.path, '/openai/deployments/tls-ok-dep/chat/completions');
    assert.equal(rec.headers['api-key'], 'tls-key');
    assert.equal(rec.headers.authorization, undefined);
    assert.equal(rec.headers.host, `127.0.0.1:${good.port}`);
    assert.ok(!rec.tlsServername, `no SNI for an IP address (RFC 6066 §3), got ${rec.tlsServername}`);
    assertRelayed(res, rec);
  });

  test('https://localhost with ca_file -> 200 (host name check, SNI)', T, async () => {
    const id = uid();
    const res = await chat('tls-localhost', id);
    const rec = await good.waitForRequest((r) => r.headers['x-test-id'] === id);
    assert.equal(rec.headers.host, `localhost:${good.port}`);
    assert.equal(rec.tlsServername, 'localhost', 'SNI carries the host name');
    assert.equal(rec.path, '/openai/deployments/tls-localhost-dep/chat/completions');
    assertRelayed(res, rec);
  });

  test('keep-alive over TLS: two requests share one upstream connection', T, async () => {
    // One keep-alive client connection: it stays on one gateway worker, whose pool is reused.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const drainAware = () => metricValue(gw, 'llm_gateway_upstream_drain_aware_exchanges_total');
    try {
      const before = await drainAware();
      const ids = [uid(), uid()];
      for (const id of ids) assert.equal((await chat('tls-ok', id, agent)).status, 200);
      const [a, b] = await Promise.all(ids.map((id) => good.waitForRequest((r) => r.headers['x-test-id'] === id)));
      assert.equal(a.socketId, b.socketId);
      // Under TLS too, the connection's TCP layer reads drain-aware during each exchange.
      assert.equal(await drainAware(), before + 2);
    } finally {
      agent.destroy();
    }
  });

  test('without ca_file the test CA is not trusted -> 502 upstream_tls_error', T, async () => {
    const id = uid();
    const res = await chat('tls-noca', id);
    assertGatewayError(res, 502, 'upstream_tls_error');
    assert.equal(good.requests.some((r) => r.headers['x-test-id'] === id), false, 'no request reached the upstream');
  });

  test('certificate for another name -> 502 upstream_tls_error', T, async () => {
    const id = uid();
    const res = await chat('tls-wrongname', id);
    assertGatewayError(res, 502, 'upstream_tls_error');
    assert.equal(wrongName.requests.length, 0, 'no request reached the upstream');
  });

  test('certificate from an untrusted CA -> 502 upstream_tls_error', T, async () => {
    const id = uid();
    const res = await chat('tls-untrusted', id);
    assertGatewayError(res, 502, 'upstream_tls_error');
    assert.equal(untrusted.requests.length, 0, 'no request reached the upstream');
  });
});
