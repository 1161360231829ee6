// --healthcheck URL: the container health check that needs no shell or curl (Dockerfile
// HEALTHCHECK, compose). Exit 0 on a 2xx, else exit 1 with one line; nothing printed on success.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';

import { closedPort, makeCA, runGateway, startGateway } from './harness.mjs';

const T = { timeout: 20_000 };

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

function assertUnhealthy(r, pattern) {
  assert.equal(r.code, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on failure, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

test('a running gateway is healthy on both listeners; once stopped it is not', T, async (t) => {
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token: "admin-secret"}
upstreams: {oa: {provider: openai, base_url: "http://127.0.0.1:9"}}
routes: [{match: "*", upstream: oa}]
`,
    { t },
  );
  for (const url of [`${gw.url}/healthz`, `${gw.adminUrl}/healthz`, `${gw.adminUrl}/readyz`]) {
    const r = await runGateway(['--healthcheck', url]);
    assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 0, stdout: '', stderr: '' }, url);
  }
  // /metrics needs the admin token, which the health check never has: a 401 is unhealthy.
  assertUnhealthy(await runGateway(['--healthcheck', `${gw.adminUrl}/metrics`]), /HTTP 401/);
  await gw.stop();
  assertUnhealthy(await runGateway(['--healthcheck', `${gw.url}/healthz`]), /refused/i);
});

test('a 500, an unreachable port, TLS to a plain port and a non-http URL are unhealthy', T, async (t) => {
  const server = http.createServer((req, res) => {
    res.writeHead(500);
    res.end('broken');
  });
  const port = await listen(server);
  t.after(() => server.close());
  assertUnhealthy(await runGateway(['--healthcheck', `http://127.0.0.1:${port}/healthz`]), /HTTP 500/);
  assertUnhealthy(await runGateway(['--healthcheck', `http://127.0.0.1:${await closedPort()}/healthz`]), /refused/i);
  assertUnhealthy(await runGateway(['--healthcheck', `https://127.0.0.1:${port}/healthz`]), /wrong version|packet length|SSL|TLS/i);
  assertUnhealthy(await runGateway(['--healthcheck', `ftp://127.0.0.1:${port}/healthz`]), /http:\/\//);
});

test('a server that accepts but never answers is unhealthy after about 3 s', T, async (t) => {
  const sockets = new Set();
  const server = net.createServer((s) => sockets.add(s));
  const port = await listen(server);
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const started = Date.now();
  const r = await runGateway(['--healthcheck', `http://127.0.0.1:${port}/healthz`]);
  const took = Date.now() - started;
  assertUnhealthy(r, /no answer within 3000 ms/);
  assert.ok(took >= 2900 && took < 6000, `took ${took} ms`);
});

test('only the status line and headers are read: an endless 200 body is still healthy at once', T, async (t) => {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('x'.repeat(64 * 1024)); // and never ends
  });
  const port = await listen(server);
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const started = Date.now();
  const r = await runGateway(['--healthcheck', `http://127.0.0.1:${port}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Date.now() - started < 2500, 'did not wait for the body');
});

test('a TLS listener is checked over https:// (its certificate names another host: not verified)', T, async (t) => {
  const pki = makeCA();
  const gw = await startGateway(
    `server:
  listen: "127.0.0.1:0"
  tls: {cert_file: "${pki.wrongName.certPath}", key_file: "${pki.wrongName.keyPath}"}
upstreams: {oa: {provider: openai, base_url: "http://127.0.0.1:9"}}
routes: [{match: "*", upstream: oa}]
`,
    { t },
  );
  const r = await runGateway(['--healthcheck', `https://127.0.0.1:${gw.port}/healthz`]);
  assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 0, stdout: '', stderr: '' });
  // Plain HTTP to the TLS port gets no HTTP answer.
  assertUnhealthy(await runGateway(['--healthcheck', `http://127.0.0.1:${gw.port}/healthz`]), /.+/);
});
