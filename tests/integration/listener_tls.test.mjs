// TLS and mutual TLS on the gateway's own listeners (server.tls, admin.tls): handshakes with a
// test CA made by openssl, ALPN, minimum version, client certificates (optional / required), keys
// matched by certificate fingerprint, certificate renewal by SIGHUP, and broken handshakes
// (garbage, plain HTTP, half a ClientHello, silence) that must neither stop other clients nor
// outlive the 10 s handshake deadline.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  runGateway,
  writeTemp,
  request,
  streamRequest,
  makeCA,
  uid,
  eventually,
  jsonLines,
  assertRelayed,
  assertGatewayError,
} from './harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };

const fingerprint = (pem) => new crypto.X509Certificate(pem).fingerprint256; // "AB:CD:..."
const chat = () => ({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });

/** The counter llm_gateway_tls_handshake_errors_total{listener,reason} from a /metrics text. */
function handshakeErrors(metricsText, listener, reason) {
  const re = new RegExp(`^llm_gateway_tls_handshake_errors_total\\{listener="${listener}",reason="${reason}"\\} (\\S+)$`, 'm');
  const m = metricsText.match(re);
  assert.ok(m, `no handshake-error series for ${listener}/${reason}`);
  return Number(m[1]);
}

/** A TLS connection to the gateway; resolves with the socket once the handshake is done. */
function tlsConnect(port, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves with the error (or 'closed') that ends a TLS client's first exchange. */
function tlsFailure(port, opts = {}) {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts });
    // A TLS 1.3 server refuses a client certificate after the client's handshake completed: the
    // client learns it from the alert on its first read, so it sends a request.
    s.once('secureConnect', () => s.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'));
    s.once('data', (d) => resolve({ data: d.toString() }));
    s.once('error', (e) => resolve({ error: e }));
    s.once('close', () => resolve({ closed: true }));
  });
}

/** A raw TCP client that writes `bytes` and resolves when the gateway closes the connection. */
function rawUntilClosed(port, bytes) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      if (bytes) s.write(bytes);
    });
    let got = Buffer.alloc(0);
    s.on('data', (d) => (got = Buffer.concat([got, d])));
    s.once('error', () => {}); // a reset is a close too
    s.once('close', () => resolve(got));
    s.setTimeout(30_000, () => reject(new Error('the gateway never closed the connection')));
  });
}

describe('TLS on the listener, mutual TLS optional', () => {
  let pki;
  let mock;
  let gw;
  let base;
  const SECRET = `sk-gw-${crypto.randomBytes(8).toString('hex')}`;

  before(async () => {
    pki = makeCA();
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
  tls:
    cert_file: "${pki.server.certPath}"
    key_file: "${pki.server.keyPath}"
    client_ca_file: "${pki.ca.certPath}"
    client_auth: optional
admin:
  listen: "127.0.0.1:0"
upstreams:
  mock:
    provider: openai
    base_url: "${mock.url}"
    api_key: "sk-upstream"
routes:
  - {match: "*", upstream: mock}
keys:
  - {name: by-secret, key: "${SECRET}"}
  - {name: team-a, client_cert_sha256: "${fingerprint(pki.client.cert)}"}
  - {name: team-lower, client_cert_sha256: "${fingerprint(pki.client2.cert).replace(/:/g, '').toLowerCase()}"}
`);
    base = `https://127.0.0.1:${gw.port}`;
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });
  const find = (id) => mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  const metrics = async () => (await request(`${gw.adminUrl}/metrics`)).text;
  const logLine = (id) => eventually(() => jsonLines(gw.stdout).find((l) => l.request_id === id), { what: `log line ${id}` });

  test('a request over TLS with the test CA is relayed byte for byte', T, async () => {
    const id = uid();
    const res = await request(`${base}/v1/chat/completions`, {
      ca: pki.ca.cert,
      headers: { 'x-test-id': id, 'x-request-id': id, authorization: `Bearer ${SECRET}` },
      body: chat(),
    });
    assertRelayed(res, await find(id));
    assert.equal((await logLine(id)).key, 'by-secret');
  });

  test('a client that does not trust the certificate fails its handshake', T, async () => {
    await assert.rejects(request(`${base}/healthz`, { ca: pki.untrustedCA.cert }), /self[- ]signed|unable to verify|certificate/i);
  });

  test('ALPN: http/1.1 is chosen; a client offering only h2 is refused', T, async () => {
    const s = await tlsConnect(gw.port, { ca: pki.ca.cert, ALPNProtocols: ['h2', 'http/1.1'] });
    assert.equal(s.alpnProtocol, 'http/1.1');
    assert.ok(['TLSv1.2', 'TLSv1.3'].includes(s.getProtocol()));
    s.destroy();
    const failure = await tlsFailure(gw.port, { ca: pki.ca.cert, ALPNProtocols: ['h2'] });
    assert.ok(failure.error, `expected a handshake error, got ${JSON.stringify(failure)}`);
    assert.match(String(failure.error.code || failure.error.message), /ALPN|NO_APPLICATION_PROTOCOL|alert/i);
  });

  test('TLS 1.1 and older are refused (counted as version)', T, async () => {
    const before_ = handshakeErrors(await metrics(), 'main', 'version');
    // Node's own OpenSSL may refuse to offer TLS 1.1 at all; either way no connection results.
    const failure = await tlsFailure(gw.port, { ca: pki.ca.cert, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
    assert.ok(failure.error || failure.closed, `expected a failure, got ${JSON.stringify(failure)}`);
    if (failure.error?.code === 'ERR_SSL_NO_PROTOCOLS_AVAILABLE') return; // never reached the gateway
    await eventually(async () => handshakeErrors(await metrics(), 'main', 'version') === before_ + 1, { what: 'version counted' });
  });

  test('a client certificate from the CA names its key (no API key sent); hex in either case matches', T, async () => {
    for (const [leaf, name] of [
      [pki.client, 'team-a'],
      [pki.client2, 'team-lower'],
    ]) {
      const id = uid();
      const agent = new https.Agent({ ca: pki.ca.cert, cert: leaf.cert, key: leaf.key, keepAlive: false });
      const res = await request(`${base}/v1/chat/completions`, { agent, headers: { 'x-test-id': id, 'x-request-id': id }, body: chat() });
      assertRelayed(res, await find(id));
      assert.equal((await logLine(id)).key, name);
      agent.destroy();
    }
  });

  test('without a certificate or a key: 401; a wrong key is not rescued by a good certificate', T, async () => {
    const res = await request(`${base}/v1/chat/completions`, { ca: pki.ca.cert, body: chat() });
    assertGatewayError(res, 401, 'invalid_api_key');
    const agent = new https.Agent({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, keepAlive: false });
    const wrong = await request(`${base}/v1/chat/completions`, { agent, headers: { authorization: 'Bearer sk-not-a-key-at-all' }, body: chat() });
    assertGatewayError(wrong, 401, 'invalid_api_key');
    agent.destroy();
  });

  test('a certificate from a CA the gateway does not trust fails the handshake (counted as client_certificate)', T, async () => {
    const before_ = handshakeErrors(await metrics(), 'main', 'client_certificate');
    const failure = await tlsFailure(gw.port, { ca: pki.ca.cert, cert: pki.untrustedClient.cert, key: pki.untrustedClient.key });
    assert.ok(failure.error || failure.closed, `expected a refused handshake, got ${JSON.stringify(failure)}`);
    assert.equal(failure.data, undefined);
    await eventually(async () => handshakeErrors(await metrics(), 'main', 'client_certificate') === before_ + 1, {
      what: 'client_certificate counted',
    });
  });

  test('a stream over TLS is relayed as it arrives; a TLS client that leaves mid-stream closes the upstream request', T, async () => {
    const id = uid();
    const tag = uid('gate');
    const s = streamRequest(`${base}/v1/chat/completions`, {
      ca: pki.ca.cert,
      headers: { 'x-test-id': id, 'x-request-id': id, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag, authorization: `Bearer ${SECRET}` },
      body: { ...chat(), stream: true },
    });
    await s.waitFor((text) => text.includes('prompt_filter_results'));
    const rec = await find(id);
    s.abort();
    await mock.waitAborted(rec, 3000);
    assert.equal(rec.aborted, true);
    assert.equal((await logLine(id)).status, 200);
  });

  test('a TLS client that closes with close_notify (end) mid-stream is noticed too', T, async () => {
    const id = uid();
    const tag = uid('gate');
    const body = JSON.stringify({ ...chat(), stream: true });
    const s = await tlsConnect(gw.port, { ca: pki.ca.cert });
    s.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n` +
        `authorization: Bearer ${SECRET}\r\nx-test-id: ${id}\r\nx-mock-scenario: gated-stream\r\nx-mock-tag: ${tag}\r\n\r\n${body}`,
    );
    await new Promise((resolve) => {
      let text = '';
      s.on('data', (d) => {
        text += d;
        if (text.includes('prompt_filter_results')) resolve();
      });
    });
    const rec = await find(id);
    s.end(); // close_notify, then FIN
    await mock.waitAborted(rec, 3000);
    assert.equal(rec.aborted, true);
  });

  test('garbage, plain HTTP, half a ClientHello and silence do not stop other clients; each is counted', { timeout: 45_000 }, async () => {
    const m0 = await metrics();
    const plain0 = handshakeErrors(m0, 'main', 'plain_http');
    const protocol0 = handshakeErrors(m0, 'main', 'protocol');
    const timeout0 = handshakeErrors(m0, 'main', 'timeout');
    // A real ClientHello's first 40 bytes, then nothing more.
    const hello = await new Promise((resolve) => {
      const srv = net.createServer((sock) => sock.once('data', (d) => { resolve(d); sock.destroy(); srv.close(); }));
      srv.listen(0, '127.0.0.1', () => {
        const c = tls.connect({ port: srv.address().port, host: '127.0.0.1', rejectUnauthorized: false });
        c.on('error', () => {});
      });
    });
    const started = Date.now();
    const half = rawUntilClosed(gw.port, hello.subarray(0, 40));
    const silent = rawUntilClosed(gw.port, null);
    const garbage = rawUntilClosed(gw.port, Buffer.from('\x16\x03\x01\x00\x05garbagegarbage'));
    const plain = rawUntilClosed(gw.port, 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
    // Meanwhile real clients are served at once.
    for (let i = 0; i < 3; i++) {
      const id = uid();
      const res = await request(`${base}/v1/chat/completions`, {
        ca: pki.ca.cert,
        headers: { 'x-test-id': id, authorization: `Bearer ${SECRET}` },
        body: chat(),
      });
      assertRelayed(res, await find(id));
    }
    await garbage;
    const plainAnswer = await plain;
    assert.ok(!plainAnswer.toString().includes('200'), 'a plain-HTTP request on the TLS port gets no HTTP answer');
    await Promise.all([half, silent]);
    const held = Date.now() - started;
    // Not before the 10 s deadline, and not long after it (the bound leaves room for a loaded
    // machine or a sanitizer build).
    assert.ok(held >= 9_000 && held < 25_000, `the half handshakes were dropped after ${held} ms (deadline 10 s)`);
    const m1 = await metrics();
    assert.equal(handshakeErrors(m1, 'main', 'plain_http'), plain0 + 1);
    assert.ok(handshakeErrors(m1, 'main', 'protocol') >= protocol0 + 1, 'garbage counted as protocol');
    assert.equal(handshakeErrors(m1, 'main', 'timeout'), timeout0 + 2);
  });
});

describe('mutual TLS required, and on the admin listener', () => {
  let pki;
  let mock;
  let gw;

  before(async () => {
    pki = makeCA();
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
  tls:
    cert_file: "${pki.server.certPath}"
    key_file: "${pki.server.keyPath}"
    client_ca_file: "${pki.ca.certPath}"
    client_auth: required
    min_version: "1.3"
admin:
  listen: "127.0.0.1:0"
  tls:
    cert_file: "${pki.server.certPath}"
    key_file: "${pki.server.keyPath}"
    client_ca_file: "${pki.ca.certPath}"
    client_auth: required
upstreams:
  mock:
    provider: openai
    base_url: "${mock.url}"
    api_key: "sk-upstream"
routes:
  - {match: "*", upstream: mock}
keys:
  - {name: team-a, client_cert_sha256: "${fingerprint(pki.client.cert)}"}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });
  const adminAgent = () => new https.Agent({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, keepAlive: false });
  const metrics = async () => (await request(`https://127.0.0.1:${gw.adminPort}/metrics`, { agent: adminAgent() })).text;

  test('with the client certificate: served, and the key is the certificate\'s', T, async () => {
    const id = uid();
    const agent = new https.Agent({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, keepAlive: false });
    const res = await request(`https://127.0.0.1:${gw.port}/v1/chat/completions`, { agent, headers: { 'x-test-id': id }, body: chat() });
    assertRelayed(res, await mock.waitForRequest((r) => r.headers['x-test-id'] === id));
  });

  test('without a client certificate the handshake is refused (main and admin), counted per listener', T, async () => {
    const main0 = handshakeErrors(await metrics(), 'main', 'client_certificate');
    const admin0 = handshakeErrors(await metrics(), 'admin', 'client_certificate');
    for (const port of [gw.port, gw.adminPort]) {
      const failure = await tlsFailure(port, { ca: pki.ca.cert });
      assert.equal(failure.data, undefined, `port ${port} answered without a client certificate`);
    }
    await eventually(
      async () => {
        const m = await metrics();
        return handshakeErrors(m, 'main', 'client_certificate') === main0 + 1 && handshakeErrors(m, 'admin', 'client_certificate') === admin0 + 1;
      },
      { what: 'both refusals counted' },
    );
  });

  test('min_version 1.3: a TLS 1.2 client is refused', T, async () => {
    const agent = new https.Agent({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, maxVersion: 'TLSv1.2', keepAlive: false });
    await assert.rejects(request(`https://127.0.0.1:${gw.port}/healthz`, { agent }), /version|protocol|alert/i);
    const ok = await request(`https://127.0.0.1:${gw.port}/healthz`, { agent: adminAgent() });
    assert.equal(ok.status, 200);
  });
});

describe('listener certificate renewal on SIGHUP', () => {
  test('a renewed certificate is served after SIGHUP; a bad new pair keeps the previous one and says why', { timeout: 30_000 }, async (t) => {
    const pki = makeCA();
    const mock = await startMock();
    t.after(() => mock.close());
    const dir = fs.mkdtempSync(path.join(pki.dir, 'live-'));
    const certFile = path.join(dir, 'server.pem');
    const keyFile = path.join(dir, 'server.key');
    fs.writeFileSync(certFile, pki.server.cert);
    fs.writeFileSync(keyFile, pki.server.key);
    const gw = await startGateway(
      `
server:
  listen: "127.0.0.1:0"
  tls: {cert_file: "${certFile}", key_file: "${keyFile}"}
upstreams:
  mock: {provider: openai, base_url: "${mock.url}"}
routes:
  - {match: "*", upstream: mock}
`,
      { t },
    );
    const served = async () => {
      const s = await tlsConnect(gw.port, { ca: pki.ca.cert });
      const fp = s.getPeerX509Certificate().fingerprint256;
      s.destroy();
      return fp;
    };
    assert.equal(await served(), fingerprint(pki.server.cert));

    const renewed = pki.leaf('renewed', 'localhost', 'IP:127.0.0.1,DNS:localhost');
    fs.writeFileSync(certFile, renewed.cert);
    fs.writeFileSync(keyFile, renewed.key);
    const reloads = () => gw.logs.filter((l) => l.msg === 'configuration reloaded').length;
    const r0 = reloads();
    gw.proc.kill('SIGHUP');
    await eventually(() => reloads() === r0 + 1, { what: 'reload' });
    assert.equal(await served(), fingerprint(renewed.cert));

    // A key that does not belong to the certificate: the renewed pair stays in service.
    fs.writeFileSync(keyFile, pki.client.key);
    gw.proc.kill('SIGHUP');
    const complaint = await gw.waitForLog((l) => /previous ones stay in use/.test(l.msg ?? ''));
    assert.equal(complaint.setting, 'server.tls');
    assert.match(complaint.detail, /does not belong to the certificate/);
    assert.ok(!JSON.stringify(gw.logs).includes('PRIVATE KEY'), 'no key material in the logs');
    assert.equal(await served(), fingerprint(renewed.cert));
    const res = await request(`https://127.0.0.1:${gw.port}/healthz`, { ca: pki.ca.cert });
    assert.equal(res.status, 200);
  });
});

describe('listener TLS configuration is checked', () => {
  const pki = makeCA();
  const base = (server, keys = '') => `
server:
  listen: "127.0.0.1:0"
${server}
upstreams:
  mock: {provider: openai, base_url: "http://127.0.0.1:9", api_key: "sk-x"}
routes:
  - {match: "*", upstream: mock}
${keys}`;
  const check = (yaml) => runGateway(['--check-config', writeTemp('check.yaml', yaml)]);

  test('a key that does not belong to the certificate fails --check-config and start, naming key_file only', T, async () => {
    const yaml = base(`  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.client.keyPath}"}`);
    const r = await check(yaml);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /server\.tls\.key_file '.*client\.key': the key does not belong to the certificate/);
    assert.ok(!r.stdout.includes('PRIVATE KEY') && !r.stderr.includes('PRIVATE KEY'));
    const started = await runGateway(['--config', writeTemp('start.yaml', yaml)]);
    assert.notEqual(started.code, 0);
    assert.match(started.stderr, /does not belong to the certificate/);
  });

  test('client_auth without client_ca_file, a CA without client_auth, bad values, certificate keys without mTLS', T, async () => {
    const cases = [
      [`  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.server.keyPath}", client_auth: required}`, '', /client_auth required needs client_ca_file/],
      [`  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.server.keyPath}", client_ca_file: "${pki.ca.certPath}"}`, '', /client_auth is none/],
      [`  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.server.keyPath}", min_version: "1.1"}`, '', /min_version must be "1.2" or "1.3"/],
      [`  tls: {cert_file: "/nonexistent/server.pem", key_file: "${pki.server.keyPath}"}`, '', /cert_file '\/nonexistent\/server.pem' cannot be read/],
      [`  tls: {key_file: "${pki.server.keyPath}"}`, '', /cert_file is required/],
      ['', `keys:\n  - {name: a, client_cert_sha256: "${fingerprint(pki.client.cert)}"}`, /client_cert_sha256, which needs server.tls/],
      [
        `  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.server.keyPath}", client_ca_file: "${pki.ca.certPath}", client_auth: optional}`,
        `keys:\n  - {name: a, client_cert_sha256: "abc"}`,
        /64 hexadecimal characters/,
      ],
    ];
    for (const [server, keys, expected] of cases) {
      const r = await check(base(server, keys));
      assert.equal(r.code, 1, `${server} ${keys}: ${r.stdout}`);
      assert.match(r.stdout, expected);
    }
    const ok = await check(
      base(
        `  tls: {cert_file: "${pki.server.certPath}", key_file: "${pki.server.keyPath}", client_ca_file: "${pki.ca.certPath}", client_auth: optional}`,
        `keys:\n  - {name: a, client_cert_sha256: "${fingerprint(pki.client.cert)}"}\n  - {name: b, key: "sk-abcdefgh", client_cert_sha256: "${fingerprint(pki.client2.cert)}"}`,
      ),
    );
    assert.equal(ok.code, 0, ok.stdout);
  });
});
