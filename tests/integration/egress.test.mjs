// Egress through a corporate proxy: HTTPS upstreams through a CONNECT tunnel (TLS with the real
// host inside it), plain-HTTP upstreams with absolute-form requests, proxy credentials from the
// URL, NO_PROXY and the per-upstream override, and the proxy's own failures as 502
// upstream_proxy_error. The proxy is the test harness's (egress_proxy.mjs); the TLS upstream's
// certificate comes from a CA the test makes with openssl.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startProxy } from './egress_proxy.mjs';
import { startGateway, request, makeCA, closedPort, eventually } from './harness.mjs';

const T = { timeout: 60_000 };
const chatBody = (model = 'gpt-4o') => ({ model, messages: [{ role: 'user', content: 'hi' }] });
let pki;
const ca = () => (pki ??= makeCA());

async function tlsMock(t) {
  const mock = await startMock({ tls: { key: ca().server.key, cert: ca().server.cert } });
  t.after(() => mock.close());
  return mock;
}

async function proxyFor(t, opts) {
  const proxy = await startProxy(opts);
  t.after(() => proxy.close());
  return proxy;
}

function upstream(name, url, extra = '') {
  return `  ${name}:
    provider: azure
    base_url: "${url}"
    api_key: "k"
    ca_file: "${ca().ca.certPath}"
${extra}`;
}

async function gateway(t, upstreams, routes, env) {
  const base = { HTTPS_PROXY: undefined, https_proxy: undefined, HTTP_PROXY: undefined, http_proxy: undefined, NO_PROXY: undefined, no_proxy: undefined };
  return startGateway(`server: {listen: "127.0.0.1:0"}\nupstreams:\n${upstreams.join('')}routes:\n${routes}\n`, { t, env: { ...base, ...env } });
}

const chat = (gw, model = 'gpt-4o', agent) => request(`${gw.url}/v1/chat/completions`, { body: chatBody(model), agent });

test('HTTPS upstream through HTTPS_PROXY: CONNECT to the real host, TLS (SNI, verification) inside, tunnels reused', T, async (t) => {
  const mock = await tlsMock(t);
  const proxy = await proxyFor(t);
  const gw = await gateway(t, [upstream('az', `https://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', { HTTPS_PROXY: proxy.url });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  for (let i = 0; i < 3; i++) assert.equal((await chat(gw, 'gpt-4o', agent)).status, 200);
  assert.equal(proxy.connects.length, 1, 'one tunnel, pooled and reused');
  assert.equal(proxy.connects[0].target, `localhost:${mock.port}`);
  assert.equal(proxy.connects[0].authorization, undefined);
  assert.equal(mock.requests.length, 3);
  assert.equal(mock.requests[0].tlsServername, 'localhost', 'SNI names the real host, not the proxy');
});

test('proxy credentials from the URL go as Proxy-Authorization: Basic; a 407 is 502 upstream_proxy_error without them', T, async (t) => {
  const mock = await tlsMock(t);
  const proxy = await proxyFor(t, { auth: 'corp-user:s3cret pass' });
  const good = await gateway(t, [upstream('az', `https://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', {
    HTTPS_PROXY: `http://corp-user:s3cret%20pass@127.0.0.1:${proxy.port}`,
  });
  assert.equal((await chat(good)).status, 200);
  assert.equal(proxy.connects[0].authorization, `Basic ${Buffer.from('corp-user:s3cret pass').toString('base64')}`);

  const bad = await gateway(t, [upstream('az', `https://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', {
    https_proxy: `http://corp-user:wrong-pass@127.0.0.1:${proxy.port}`,
  });
  const res = await chat(bad);
  assert.equal(res.status, 502, res.text);
  assert.equal(res.json.error.code, 'upstream_proxy_error');
  assert.match(res.json.error.message, /407 Proxy Authentication Required/);
  assert.match(res.json.error.message, new RegExp(`127\\.0\\.0\\.1:${proxy.port}`));
  // A request is counted when it completes, just after its reply is written: the scrape waits
  // for it (a single scrape raced the count under TSan).
  const proxyError = /llm_gateway_upstream_errors_total\{[^}]*kind="proxy"[^}]*\} 1/;
  await eventually(async () => proxyError.test((await request(`${bad.url}/metrics`)).text), {
    what: 'the proxy error counted in llm_gateway_upstream_errors_total',
  });
  for (const gw of [good, bad]) {
    for (const l of [...gw.stderr, res.text]) {
      assert.ok(!l.includes('s3cret') && !l.includes('wrong-pass') && !l.includes('corp-user'), `no proxy credential in: ${l}`);
    }
  }
});

test('NO_PROXY (host:port, domains) and the per-upstream proxy setting', T, async (t) => {
  const mock = await tlsMock(t);
  const proxy = await proxyFor(t);
  // Another port of localhost and an unrelated domain are excluded: this upstream still goes through.
  const a = await gateway(
    t,
    [upstream('via', `https://localhost:${mock.port}`), upstream('direct', `https://localhost:${mock.port}`, '    proxy: none\n')],
    '  - {match: "via-*", upstream: via}\n  - {match: "*", upstream: direct}',
    { HTTPS_PROXY: proxy.url, NO_PROXY: 'localhost:1, .example.com,10.0.0.0/8' },
  );
  assert.equal((await chat(a, 'via-1')).status, 200);
  assert.equal(proxy.connects.length, 1, 'proxied: no NO_PROXY entry matches localhost on this port');
  assert.equal((await chat(a, 'other')).status, 200);
  assert.equal(proxy.connects.length, 1, 'proxy: none goes direct');
  // NO_PROXY naming the host (lowercase spelling wins over uppercase), and an explicit proxy
  // that ignores NO_PROXY.
  const b = await gateway(
    t,
    [upstream('excluded', `https://localhost:${mock.port}`), upstream('forced', `https://localhost:${mock.port}`, `    proxy: "${proxy.url}"\n`)],
    '  - {match: "forced-*", upstream: forced}\n  - {match: "*", upstream: excluded}',
    { HTTPS_PROXY: proxy.url, no_proxy: 'LOCALHOST', NO_PROXY: 'nothing.example' },
  );
  assert.equal((await chat(b, 'gpt-4o')).status, 200);
  assert.equal(proxy.connects.length, 1, 'no_proxy excluded localhost');
  assert.equal((await chat(b, 'forced-1')).status, 200);
  assert.equal(proxy.connects.length, 2, 'an upstream\'s own proxy wins over NO_PROXY');
});

test('a plain-HTTP upstream through HTTP_PROXY: absolute-form requests with the credential', T, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const proxy = await proxyFor(t, { auth: 'u:p' });
  const gw = await gateway(t, [upstream('az', `http://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', { HTTP_PROXY: `http://u:p@127.0.0.1:${proxy.port}` });
  assert.equal((await chat(gw)).status, 200);
  assert.equal(proxy.requests.length, 1);
  assert.match(proxy.requests[0].url, new RegExp(`^http://localhost:${mock.port}/openai/deployments/gpt-4o/chat/completions\\?api-version=`));
  assert.equal(proxy.requests[0].authorization, `Basic ${Buffer.from('u:p').toString('base64')}`);
  assert.equal(mock.requests[0].headers['proxy-authorization'], undefined, 'the proxy credential stops at the proxy');
});

test('the proxy down, or refusing the tunnel: 502 upstream_proxy_error naming the proxy', T, async (t) => {
  const mock = await tlsMock(t);
  const dead = await closedPort();
  const gw = await gateway(t, [upstream('az', `https://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', { HTTPS_PROXY: `http://127.0.0.1:${dead}` });
  const res = await chat(gw);
  assert.equal(res.status, 502);
  assert.equal(res.json.error.code, 'upstream_proxy_error');
  assert.match(res.json.error.message, new RegExp(`egress proxy http://127\\.0\\.0\\.1:${dead}`));

  const proxy = await proxyFor(t);
  proxy.refuse = 403;
  const gw2 = await gateway(t, [upstream('az', `https://localhost:${mock.port}`)], '  - {match: "*", upstream: az}', { HTTPS_PROXY: proxy.url });
  const res2 = await chat(gw2);
  assert.equal(res2.status, 502);
  assert.equal(res2.json.error.code, 'upstream_proxy_error');
  assert.match(res2.json.error.message, /refused the tunnel to localhost:\d+: 403/);
  assert.equal(mock.requests.length, 0);
});

test('an https:// proxy: TLS to the proxy (verified with the upstream\'s CA), the upstream\'s TLS inside it', T, async (t) => {
  const mock = await tlsMock(t);
  const plain = await startMock();
  t.after(() => plain.close());
  const proxy = await proxyFor(t, { tls: { key: ca().server.key, cert: ca().server.cert }, auth: 'u:p' });
  const authUrl = `https://u:p@localhost:${proxy.port}`;
  const gw = await gateway(
    t,
    [upstream('secure', `https://localhost:${mock.port}`, `    proxy: "${authUrl}"\n`), upstream('plain', `http://localhost:${plain.port}`, `    proxy: "${authUrl}"\n`)],
    '  - {match: "plain-*", upstream: plain}\n  - {match: "*", upstream: secure}',
    {},
  );
  assert.equal((await chat(gw)).status, 200);
  assert.equal(proxy.connects.length, 1);
  assert.equal(proxy.connects[0].target, `localhost:${mock.port}`);
  assert.equal(mock.requests[0].tlsServername, 'localhost');
  assert.equal((await chat(gw, 'plain-1')).status, 200);
  assert.equal(proxy.requests.length, 1, 'absolute-form over TLS to the proxy');
  assert.match(proxy.requests[0].url, new RegExp(`^http://localhost:${plain.port}/`));
});

test('a proxy that accepts CONNECT but never answers: the connect timeout ends it (504), other requests are unaffected', T, async (t) => {
  const mock = await tlsMock(t);
  const proxy = await proxyFor(t);
  proxy.stall = true;
  const gw = await gateway(
    t,
    [upstream('az', `https://localhost:${mock.port}`, '    connect_timeout_ms: 300\n'), upstream('direct', `https://localhost:${mock.port}`, '    proxy: none\n')],
    '  - {match: "direct-*", upstream: direct}\n  - {match: "*", upstream: az}',
    { HTTPS_PROXY: proxy.url },
  );
  const t0 = Date.now();
  const [stalled, direct] = await Promise.all([chat(gw), chat(gw, 'direct-1')]);
  assert.equal(direct.status, 200, 'a stalled tunnel holds nothing else up');
  assert.equal(stalled.status, 504, stalled.text);
  assert.equal(stalled.json.error.code, 'upstream_timeout');
  assert.match(stalled.json.error.message, /egress proxy http:\/\/localhost:\d+ did not open a tunnel/);
  assert.ok(Date.now() - t0 < 5000, 'bounded by connect_timeout_ms');
});
