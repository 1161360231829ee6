// Redis over TLS (rediss://) with an ACL user, through the real binary and a real redis-server
// listening for TLS only, with a CA and server certificate made by the test (makeCA). The default
// Redis user is switched off, so nothing works unless the gateway logs in as the ACL user.
// Checked: the shared limit and the shared cooldowns work over TLS; the certificate is verified
// (CA, host name or IP literal) and SNI is sent for names only; a wrong CA or password ends in
// on_store_error with a log line saying why, never a crash or a hang; a Redis restart is healed;
// and the password appears in no output of any gateway.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import tls from 'node:tls';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  startRedis,
  REDIS_SKIP,
  makeCA,
  request,
  eventually,
  uid,
  assertGatewayError,
} from './harness.mjs';

const T = { timeout: 30_000 };
const HOOK = { timeout: 30_000 };

describe('Redis over TLS (rediss://) with an ACL user', { skip: REDIS_SKIP }, () => {
  const USER = 'gwtls';
  // Random per run, so that a leak cannot be a coincidence.
  const PASSWORD = `tls-pw-${crypto.randomBytes(12).toString('hex')}`;
  const WRONG_PASSWORD = `wrong-pw-${crypto.randomBytes(12).toString('hex')}`;
  const login = { user: USER, password: PASSWORD };
  let mock;
  let pki;
  let redis;
  /** Every gateway the suite started: the last test searches their output for the passwords. */
  const gateways = [];

  /** A TLS-only Redis with the ACL user, and the default user switched off. */
  const tlsRedis = async (options = {}) => {
    const r = await startRedis({ tls: { cert: pki.server, caPath: pki.ca.certPath }, ...options });
    r.cli('ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~llmgw:*', '~{llmgw:cd}:*', '+@all');
    r.cli('ACL', 'SETUSER', 'default', 'off');
    return r;
  };

  before(async () => {
    mock = await startMock();
    pki = makeCA();
    // 127.0.0.2 too: a loopback address the server certificate does not name.
    redis = await tlsRedis({ bind: ['127.0.0.1', '127.0.0.2'] });
  }, HOOK);
  after(async () => {
    await redis?.stop();
    await mock?.close();
  });

  const url = ({ host = '127.0.0.1', port = redis.port, password = PASSWORD } = {}) =>
    `rediss://${USER}:${password}@${host}:${port}/0`;
  const newKey = () => `sk-redis-tls-${crypto.randomBytes(10).toString('hex')}`;
  /** One key (names unique per test, so counters never mix); the URL comes from the environment. */
  const config = ({ name, rpm, onStoreError = 'deny', caFile = pki.ca.certPath, upstreams, routes }) => `
server:
  listen: "127.0.0.1:0"
upstreams:
${upstreams ?? `  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "redis-tls-upstream"`}
routes:
${routes ?? '  - {match: "*", upstream: az}'}
${name ? `keys:\n  - name: ${name}\n    key: "\${REDIS_TLS_TEST_KEY}"\n    rpm: ${rpm}\n` : ''}
rate_limits:
  store: redis
  redis_url: "\${REDIS_TLS_URL}"${caFile ? `\n  redis_ca_file: "${caFile}"` : ''}
  on_store_error: ${onStoreError}
logging:
  level: debug
`;
  const start = async (yaml, env, t) => {
    const gw = await startGateway(yaml, { env, t });
    gateways.push(gw);
    return gw;
  };
  const hi = [{ role: 'user', content: 'hello' }];
  const chat = (gw, key, headers = {}) =>
    request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-request-id': uid('tls'), ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
      body: { model: 'gpt-4o', messages: hi },
      timeoutMs: 5000,
    });
  const unavailable = (gw) => gw.waitForLog((o) => o.msg === 'rate limit store unavailable', 5000);

  test('two gateways share one rpm over rediss:// as the ACL user: 5 requests alternating -> 3 pass, 2 get 429', T, async (t) => {
    const key = newKey();
    const name = `tls-shared-${uid()}`;
    const env = { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url() };
    const gws = [await start(config({ name, rpm: 3 }), env, t), await start(config({ name, rpm: 3 }), env, t)];
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await chat(gws[i % 2], key));
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 429, 429], results.map((r) => r.text).join('\n'));
    assert.deepEqual(results.slice(0, 3).map((r) => r.headers['x-ratelimit-remaining-requests']), ['2', '1', '0'], 'one window across both');
    for (const r of results.slice(3)) assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'requests' });
    // The window is in this Redis, written by the ACL user (the only one that can log in).
    assert.match(redis.cli('KEYS', `llmgw:rl:{${name}}:*`, login), new RegExp(`llmgw:rl:\\{${name}\\}:req`));
    // Both clients of each gateway (the limiter and the cooldown sharing) are logged in as it.
    await eventually(
      () => redis.cli('CLIENT', 'LIST', login).split('\n').filter((l) => l.includes(` user=${USER} `) && !l.includes('cmd=client|list')).length >= 4,
      { timeoutMs: 5000, what: 'four TLS connections of the ACL user' },
    );
    for (const gw of gws) assert.equal(gw.logs.filter((o) => o.msg === 'rate limit store unavailable').length, 0, gw.stderr.join('\n'));
  });

  test('the certificate is checked for the URL\'s host: localhost (a name) passes, 127.0.0.2 (an IP it does not list) fails', T, async (t) => {
    const key = newKey();
    const byName = await start(config({ name: `tls-name-${uid()}`, rpm: 1 }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ host: 'localhost' }) }, t);
    assert.equal((await chat(byName, key)).status, 200);
    assert.equal((await chat(byName, key)).status, 429, 'limited through Redis, reached as localhost');
    const byOtherIp = await start(config({ name: `tls-ip-${uid()}`, rpm: 1 }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ host: '127.0.0.2' }) }, t);
    assertGatewayError(await chat(byOtherIp, key), 503, 'rate_limit_store_unavailable');
    const line = await unavailable(byOtherIp);
    assert.match(line.detail, /^TLS handshake with Redis at 127\.0\.0\.2:\d+ failed: certificate verify failed .*\(IP address mismatch\)$/, JSON.stringify(line));
  });

  test('a certificate for another name (wrong.example) is refused for localhost: "hostname mismatch"', T, async (t) => {
    const server = tls.createServer({ key: pki.wrongName.key, cert: pki.wrongName.cert }, (socket) => socket.destroy());
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise((resolve) => server.close(resolve)));
    const key = newKey();
    const gw = await start(config({ name: `tls-wrongname-${uid()}`, rpm: 1 }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ host: 'localhost', port: server.address().port }) }, t);
    assertGatewayError(await chat(gw, key), 503, 'rate_limit_store_unavailable');
    const line = await unavailable(gw);
    assert.match(line.detail, /^TLS handshake with Redis at localhost:\d+ failed: certificate verify failed .*\(hostname mismatch\)$/, JSON.stringify(line));
  });

  test('SNI carries the URL\'s host name, and no name for an IP literal; TLS 1.2 or later', T, async (t) => {
    // A TLS server standing in for Redis: it records each handshake and closes the connection.
    const seen = [];
    const server = tls.createServer({ key: pki.server.key, cert: pki.server.cert }, (socket) => {
      seen.push({ servername: socket.servername, protocol: socket.getProtocol() });
      socket.destroy();
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise((resolve) => server.close(resolve)));
    const { port } = server.address();
    for (const [host, servername] of [['localhost', 'localhost'], ['127.0.0.1', false]]) {
      const key = newKey();
      const gw = await start(config({ name: `tls-sni-${uid()}`, rpm: 5, onStoreError: 'allow' }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ host, port }) }, t);
      const before = seen.length;
      assert.equal((await chat(gw, key)).status, 200, 'allow: the request passes without the store');
      await eventually(() => seen.length > before, { what: `a handshake from the gateway that names ${host}` });
      assert.equal(seen.at(-1).servername, servername, JSON.stringify(seen));
      assert.match(seen.at(-1).protocol, /^TLSv1\.[23]$/);
      await gw.stop();
    }
  });

  test('a CA that did not sign Redis\' certificate (or none besides the system\'s): on_store_error answers, the log says why, the gateway stays up', T, async (t) => {
    const key = newKey();
    const wrongCa = await start(config({ name: `tls-ca-${uid()}`, rpm: 1, caFile: pki.untrustedCA.certPath }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url() }, t);
    const systemOnly = await start(config({ name: `tls-sys-${uid()}`, rpm: 1, caFile: null, onStoreError: 'allow' }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url() }, t);
    for (let i = 0; i < 3; i++) {
      assertGatewayError(await chat(wrongCa, key), 503, 'rate_limit_store_unavailable');
      const r = await chat(systemOnly, key);
      assert.equal(r.status, 200, 'allow: over the rpm, since there is no store');
      assert.equal(r.headers['x-ratelimit-limit-requests'], undefined);
    }
    for (const gw of [wrongCa, systemOnly]) {
      const line = await unavailable(gw);
      assert.equal(line.level, 'warn');
      assert.match(line.detail, /^TLS handshake with Redis at 127\.0\.0\.1:\d+ failed: certificate verify failed .*\((unable to get local issuer certificate|self-signed certificate in certificate chain)\)$/, JSON.stringify(line));
      assert.equal((await request(`${gw.url}/healthz`)).status, 200, 'still serving');
      assert.equal(gw.proc.exitCode, null);
    }
  });

  test('a wrong password: on_store_error answers and the log says Redis refused AUTH for the user, without the password', T, async (t) => {
    const key = newKey();
    const gw = await start(config({ name: `tls-pw-${uid()}`, rpm: 1 }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ password: WRONG_PASSWORD }) }, t);
    assertGatewayError(await chat(gw, key), 503, 'rate_limit_store_unavailable');
    const line = await unavailable(gw);
    assert.match(line.detail, new RegExp(`^Redis at 127\\.0\\.0\\.1:\\d+ refused AUTH for user '${USER}': WRONGPASS`), JSON.stringify(line));
  });

  test('a 429\'s cooldown is shared over TLS: the other gateway keeps off that deployment', T, async (t) => {
    const east = await startMock({ defaults: { 'x-mock-scenario': 'retry-after-ms', 'x-mock-retry-after-ms': '20000', 'x-mock-fail-times': '1' } });
    const west = await startMock();
    t.after(() => Promise.all([east.close(), west.close()]));
    const upstream = (name, m) => `  ${name}:\n    provider: azure\n    base_url: "${m.url}"\n    api_key: "k-${name}"\n    deployments: {gpt-4o: ${name}-4o}`;
    const yaml = config({
      upstreams: `${upstream('east', east)}\n${upstream('west', west)}`,
      routes: '  - match: "gpt-4o"\n    backends: [{upstream: east}, {upstream: west}]',
    });
    const env = { REDIS_TLS_URL: url() };
    const one = await start(yaml, env, t);
    const two = await start(yaml, env, t);
    const first = await chat(one, null);
    assert.equal(first.status, 200, first.text);
    assert.equal(east.requests.length, 1, 'east answered 429 once');
    const cooling = async () => {
      const res = await request(`${two.url}/metrics`);
      return res.text.split('\n').some((l) => /^llm_gateway_backend_state\{/.test(l) && l.includes('upstream="east"') && l.includes('state="cooldown"') && / 1$/.test(l));
    };
    await eventually(cooling, { timeoutMs: 5000, what: 'the second gateway sees east cooling down' });
    for (let i = 0; i < 3; i++) assert.equal((await chat(two, null)).status, 200);
    assert.equal(east.requests.length, 1, 'the second gateway never tried east');
    assert.equal(west.requests.length, 4);
  });

  test('Redis over TLS killed under load and started again: on_store_error meanwhile, then TLS anew and counting again', { timeout: 60_000 }, async (t) => {
    const own = await tlsRedis();
    t.after(() => own.stop());
    const key = newKey();
    const gw = await start(config({ name: `tls-restart-${uid()}`, rpm: 1000, onStoreError: 'allow' }), { REDIS_TLS_TEST_KEY: key, REDIS_TLS_URL: url({ port: own.port }) }, t);
    const first = await chat(gw, key);
    assert.equal(first.headers['x-ratelimit-remaining-requests'], '999', first.text);
    // Requests in flight on the TLS connection while Redis dies.
    const load = Array.from({ length: 20 }, () => chat(gw, key));
    await own.stop('SIGKILL');
    for (const r of await Promise.all(load)) assert.equal(r.status, 200, r.text);
    await gw.waitForLog((o) => o.msg === 'redis connection closed', 5000);
    const down = await chat(gw, key);
    assert.equal(down.status, 200);
    const again = await tlsRedis({ port: own.port });
    t.after(() => again.stop());
    // Each request asks the store; the gateway reconnects by itself within its backoff (<= 5 s).
    const limited = await eventually(
      async () => {
        const r = await chat(gw, key);
        assert.equal(r.status, 200, r.text);
        return r.headers['x-ratelimit-limit-requests'] !== undefined && r;
      },
      { timeoutMs: 15_000, intervalMs: 50, what: 'counting in the new Redis' },
    );
    assert.equal(limited.headers['x-ratelimit-remaining-requests'], '999', 'the new Redis is empty');
    await gw.waitForLog((o) => o.msg === 'rate limit store recovered', 5000);
    assert.equal(gw.proc.exitCode, null);
  });

  test('no output of any gateway above holds the password or the wrong one', T, async () => {
    assert.ok(gateways.length >= 8, `the tests above ran (${gateways.length} gateways)`);
    for (const gw of gateways) await gw.stop();
    const needles = [PASSWORD, WRONG_PASSWORD].flatMap((p) => [p, p.slice(-24, -12), p.slice(-12)]);
    for (const gw of gateways) {
      for (const line of [...gw.stdout, ...gw.stderr]) {
        for (const n of needles) assert.ok(!line.includes(n), `a password in the gateway's output: ${line}`);
      }
    }
    assert.ok(gateways.some((gw) => gw.stderr.some((l) => l.includes('refused AUTH'))), 'the wrong password was logged about');
  });
});
