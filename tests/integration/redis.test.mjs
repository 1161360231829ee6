// Rate limits in Redis (rate_limits.store: redis): the counters are shared by every gateway
// process, and an outage of Redis is handled by on_store_error (allow | deny) and healed by the
// gateway itself (reconnect backoff 100 ms doubling up to 5 s); busy keys are leased (below). The
// test runs its own redis-server.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import {
  startGateway,
  startRedis,
  REDIS_SKIP,
  request,
  streamRequest,
  closedPort,
  eventually,
  uid,
  assertGatewayError,
} from './harness.mjs';

const T = { timeout: 30_000 };
const HOOK = { timeout: 30_000 };

describe('rate limits in Redis', { skip: REDIS_SKIP }, () => {
  let mock;
  let redis;
  before(async () => {
    mock = await startMock();
    redis = await startRedis();
  }, HOOK);
  after(async () => {
    await redis?.stop();
    await mock?.close();
  });

  const newKey = () => `sk-redis-${crypto.randomBytes(10).toString('hex')}`;
  /** A config with one key; names are unique per test so Redis counters never mix. */
  const config = ({ name, rpm, tpm, onStoreError = 'allow', redisUrl = redis.url, lease }) => `
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "redis-upstream"
routes:
  - {match: "*", upstream: az}
keys:
  - name: ${name}
    key: "\${REDIS_TEST_KEY}"${rpm ? `\n    rpm: ${rpm}` : ''}${tpm ? `\n    tpm: ${tpm}` : ''}
rate_limits:
  store: redis
  redis_url: "${redisUrl}"
  on_store_error: ${onStoreError}${lease ? `\n  redis_lease: ${lease}` : ''}
  default_completion_tokens: 1000
`;
  const hi = [{ role: 'user', content: 'hello' }]; // 9 characters -> 3 tokens
  const chat = (gw, key, extra = {}) =>
    request(`${gw.url}/v1/chat/completions`, {
      headers: { 'x-test-id': uid(), authorization: `Bearer ${key}` },
      body: { model: 'gpt-4o', messages: hi, ...extra },
      timeoutMs: 5000,
    });

  test('two gateways share one rpm: 8 requests alternating -> exactly 5 pass, 3 get 429', T, async (t) => {
    const key = newKey();
    const name = `shared-${uid()}`;
    const env = { REDIS_TEST_KEY: key };
    const gws = [await startGateway(config({ name, rpm: 5 }), { env, t }), await startGateway(config({ name, rpm: 5 }), { env, t })];
    const results = [];
    for (let i = 0; i < 8; i++) results.push(await chat(gws[i % 2], key));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 5, `statuses ${statuses}`);
    assert.equal(statuses.filter((s) => s === 429).length, 3, `statuses ${statuses}`);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429], 'the first five pass');
    // One window across both processes: the remaining count goes down across them.
    assert.deepEqual(
      results.slice(0, 5).map((r) => r.headers['x-ratelimit-remaining-requests']),
      ['4', '3', '2', '1', '0'],
    );
    for (const r of results.slice(5)) {
      assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'requests', param: null });
      assert.equal(r.headers['x-gateway-rate-limited'], 'requests');
      assert.ok(Number(r.headers['retry-after']) > 0);
      assert.equal(Number(r.headers['retry-after']), Math.ceil(Number(r.headers['retry-after-ms']) / 1000));
      assert.equal(r.headers['x-ratelimit-limit-requests'], '5');
    }
  });

  test('an ACL user (redis://user:password@host): AUTH user password; a wrong password is a store error, never logged', T, async (t) => {
    const user = `gw${uid().replace(/[^a-z0-9]/gi, '')}`;
    const password = `acl-pw-${crypto.randomBytes(6).toString('hex')}`;
    execFileSync('redis-cli', ['-p', String(redis.port), 'ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '+@all']);
    const key = newKey();
    const name = `acl-${uid()}`;
    const env = { REDIS_TEST_KEY: key };
    const url = `redis://${user}:${password}@127.0.0.1:${redis.port}/0`;
    const gw = await startGateway(config({ name, rpm: 1, onStoreError: 'deny', redisUrl: url }), { env, t });
    assert.equal((await chat(gw, key)).status, 200);
    assert.equal((await chat(gw, key)).status, 429, 'the window is in Redis, reached as the ACL user');
    // The counters were written by that user: they exist in Redis.
    const keys = execFileSync('redis-cli', ['-p', String(redis.port), '--raw', 'KEYS', `llmgw:rl:{${name}}:*`]).toString();
    assert.match(keys, new RegExp(`llmgw:rl:\\{${name}\\}:req`));
    const wrong = await startGateway(config({ name: `${name}-w`, rpm: 1, onStoreError: 'deny', redisUrl: `redis://${user}:nope@127.0.0.1:${redis.port}/0` }), { env, t });
    assert.equal((await chat(wrong, key)).status, 503, 'AUTH refused: deny answers 503');
    for (const l of [...gw.stderr, ...wrong.stderr]) assert.ok(!l.includes(password), `no password in: ${l}`);
  });

  test('two gateways share one tpm, and the correction to the real usage', T, async (t) => {
    const key = newKey();
    const name = `tpm-${uid()}`;
    const env = { REDIS_TEST_KEY: key };
    const TPM = 2000;
    const gws = [await startGateway(config({ name, tpm: TPM }), { env, t }), await startGateway(config({ name, tpm: TPM }), { env, t })];
    const est = 3 + 1000;
    const r1 = await chat(gws[0], key);
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.headers['x-ratelimit-limit-tokens'], String(TPM));
    assert.equal(r1.headers['x-ratelimit-remaining-tokens'], String(TPM - est));
    // With Redis the correction travels to the store after the answer, so it is awaited here, read
    // through a probe that reserves nothing: a request estimated over the tpm is refused (429)
    // with the current remaining tokens in its headers.
    const probe = async (gw) => {
      const r = await chat(gw, key, { max_tokens: TPM + 1 });
      assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'tokens' });
      return Number(r.headers['x-ratelimit-remaining-tokens']);
    };
    await eventually(async () => (await probe(gws[1])) === TPM - 18, {
      timeoutMs: 3000,
      what: 'the other gateway seeing request 1 counted at its usage (18)',
    });
    assert.equal(await probe(gws[0]), TPM - 18, 'probes reserve nothing');
    const r2 = await chat(gws[1], key);
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.headers['x-ratelimit-remaining-tokens'], String(TPM - 18 - est));
    // Over what is left (at most TPM - 36, whether r2 is corrected yet or not), though not over
    // the tpm itself: a plain tokens 429.
    const tooMuch = await chat(gws[0], key, { max_tokens: TPM - 3 - 10 });
    assertGatewayError(tooMuch, 429, 'rate_limit_exceeded', { type: 'tokens' });
    assert.equal(tooMuch.headers['x-gateway-rate-limited'], 'tokens');
  });

  test('max_concurrent stays per gateway process with the redis store', T, async (t) => {
    const key = newKey();
    const name = `conc-${uid()}`;
    const env = { REDIS_TEST_KEY: key };
    const yaml = config({ name, rpm: 100 }).replace('    rpm: 100', '    rpm: 100\n    max_concurrent: 1');
    const gws = [await startGateway(yaml, { env, t }), await startGateway(yaml, { env, t })];
    const tags = [uid('gate'), uid('gate')];
    const streams = gws.map((gw, i) =>
      streamRequest(`${gw.url}/v1/chat/completions`, {
        headers: { authorization: `Bearer ${key}`, 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tags[i] },
        body: { model: 'gpt-4o', stream: true, messages: hi },
      }),
    );
    t.after(() => tags.forEach((tag) => mock.release(tag)));
    const heads = await Promise.all(streams.map((s) => s.response));
    assert.deepEqual(heads.map((h) => h.status), [200, 200], 'one stream in flight on each process');
    await Promise.all(tags.map((tag) => mock.waitGated(tag)));
    for (const gw of gws) {
      const r = await chat(gw, key);
      assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'requests' });
      assert.equal(r.headers['x-gateway-rate-limited'], 'concurrency');
    }
    for (const tag of tags) mock.release(tag);
    for (const s of streams) assert.equal((await s.done).complete, true);
  });

  test('Redis down: allow lets requests through, deny answers 503; both recover by themselves', { timeout: 60_000 }, async (t) => {
    // A Redis of its own, so that stopping it does not disturb the other tests.
    const own = await startRedis();
    t.after(() => own.stop());
    const allowKey = newKey();
    const denyKey = newKey();
    const allow = await startGateway(config({ name: `allow-${uid()}`, rpm: 1000, redisUrl: own.url }), {
      env: { REDIS_TEST_KEY: allowKey },
      t,
    });
    const deny = await startGateway(config({ name: `deny-${uid()}`, rpm: 1000, onStoreError: 'deny', redisUrl: own.url }), {
      env: { REDIS_TEST_KEY: denyKey },
      t,
    });
    const unavailable = (gw) => gw.logs.filter((o) => o.msg === 'rate limit store unavailable');
    const recovered = (gw) => gw.logs.filter((o) => o.msg === 'rate limit store recovered');

    // Up: both count in Redis.
    for (const [gw, key] of [[allow, allowKey], [deny, denyKey]]) {
      const r = await chat(gw, key);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-ratelimit-remaining-requests'], '999');
    }

    await own.stop('SIGKILL');
    for (let i = 0; i < 4; i++) {
      const a = await chat(allow, allowKey);
      assert.equal(a.status, 200, `allow: the request passes while Redis is down (${a.text})`);
      assert.equal(a.headers['x-ratelimit-limit-requests'], undefined, 'no store, no rate-limit headers');
      const d = await chat(deny, denyKey);
      assertGatewayError(d, 503, 'rate_limit_store_unavailable');
    }
    for (const gw of [allow, deny]) {
      const line = await gw.waitForLog((o) => o.msg === 'rate limit store unavailable');
      assert.equal(line.level, 'warn');
      assert.equal(unavailable(gw).length, 1, 'logged once per outage');
      assert.equal(recovered(gw).length, 0);
    }

    // Redis back on the same port (empty: no persistence). Each gateway reconnects by itself;
    // poll with requests (each waits on its answer), bounded at ~15 s.
    const again = await startRedis({ port: own.port });
    t.after(() => again.stop());
    const pollUntilLimited = async (gw, key, expectWhileDown) => {
      const deadline = Date.now() + 15_000;
      for (let n = 0; ; n++) {
        const r = await chat(gw, key);
        if (r.headers['x-ratelimit-limit-requests'] !== undefined) return { r, n };
        assert.equal(r.status, expectWhileDown, `while reconnecting: ${r.status} ${r.text}`);
        if (Date.now() > deadline) assert.fail(`no rate-limited answer within 15 s (${n} requests)`);
      }
    };
    const a = await pollUntilLimited(allow, allowKey, 200);
    assert.equal(a.r.status, 200);
    assert.equal(a.r.headers['x-ratelimit-remaining-requests'], '999', 'counting again, in the new Redis');
    const d = await pollUntilLimited(deny, denyKey, 503);
    t.diagnostic(`recovered after ${a.n} (allow) and ${d.n} (deny) requests answered without the store`);
    assert.equal(d.r.status, 200);
    assert.equal(d.r.headers['x-ratelimit-remaining-requests'], '999');
    for (const gw of [allow, deny]) {
      const line = await gw.waitForLog((o) => o.msg === 'rate limit store recovered');
      assert.equal(line.level, 'info');
      assert.equal(unavailable(gw).length, 1, 'still one "unavailable" line for the one outage');
      assert.equal(recovered(gw).length, 1);
      const iu = gw.logs.findIndex((o) => o.msg === 'rate limit store unavailable');
      const ir = gw.logs.findIndex((o) => o.msg === 'rate limit store recovered');
      assert.ok(iu < ir, '"recovered" comes after "unavailable"');
    }
    // And it limits again: the deny gateway's next answers count down.
    const next = await chat(deny, denyKey);
    assert.equal(next.headers['x-ratelimit-remaining-requests'], '998');
  });

  test('Redis unreachable from the start: deny -> 503, allow -> 200', T, async (t) => {
    const url = `redis://127.0.0.1:${await closedPort()}/0`;
    const key = newKey();
    const env = { REDIS_TEST_KEY: key };
    const deny = await startGateway(config({ name: `nodeny-${uid()}`, rpm: 5, onStoreError: 'deny', redisUrl: url }), { env, t });
    const allow = await startGateway(config({ name: `noallow-${uid()}`, rpm: 5, redisUrl: url }), { env, t });
    const d = await chat(deny, key);
    assertGatewayError(d, 503, 'rate_limit_store_unavailable');
    // More than the rpm: with no store, allow admits them all.
    for (let i = 0; i < 7; i++) assert.equal((await chat(allow, key)).status, 200);
    await deny.waitForLog((o) => o.msg === 'rate limit store unavailable');
    await allow.waitForLog((o) => o.msg === 'rate limit store unavailable');
  });

  // --- Leases (rate_limits.redis_lease): each gateway takes a slice of the rpm/tpm in one script
  // call and spends it in memory. Across gateways the total admitted never passes the limit, a
  // refusal comes only when at least limit - (R-1) x (lease-1) were admitted, Redis sees about
  // one script call per lease instead of one per request, and a lease taken before Redis died is
  // still spent.

  // Runs of the rate-limit script, from INFO commandstats: each calls TIME exactly once (the
  // shared cooldowns' script, which every gateway on Redis runs every 200 ms, never does).
  const scriptCalls = (r) => Number(/^cmdstat_time:calls=(\d+)/m.exec(r.cli('INFO', 'commandstats'))?.[1] ?? 0);
  const assertRefusedByRpm = (r, rpm) => {
    assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'requests' });
    assert.equal(r.headers['x-gateway-rate-limited'], 'requests');
    assert.equal(r.headers['x-ratelimit-limit-requests'], String(rpm));
    const ms = Number(r.headers['retry-after-ms']);
    // Everything admitted is in this minute's window: the wait is for its oldest second to leave.
    assert.ok(ms > 0 && ms <= 60_000, `retry-after-ms ${ms}`);
    assert.equal(Number(r.headers['retry-after']), Math.ceil(ms / 1000));
  };

  test('two gateways, rpm 100, leases of 10: never over 100, refused only after at least 91, and in the end exactly 100', T, async (t) => {
    const RPM = 100;
    const LEASE = 10;
    const R = 2;
    const key = newKey();
    const name = `lease-shared-${uid()}`;
    const env = { REDIS_TEST_KEY: key };
    const yaml = config({ name, rpm: RPM, lease: 0.1 });
    const gws = [await startGateway(yaml, { env, t }), await startGateway(yaml, { env, t })];

    // A burst of 150 at once, half through each gateway: many requests wait on one lease call.
    const burst = await Promise.all(Array.from({ length: 150 }, (_, i) => chat(gws[i % 2], key)));
    const statuses = burst.map((r) => r.status);
    const admitted = statuses.filter((s) => s === 200).length;
    assert.equal(admitted + statuses.filter((s) => s === 429).length, 150, `statuses ${statuses}`);
    t.diagnostic(`burst of 150: ${admitted} admitted`);
    assert.ok(admitted <= RPM, `never over the limit: ${admitted}`);
    assert.ok(admitted >= RPM - (R - 1) * (LEASE - 1), `the stated bound: ${admitted} >= ${RPM - (R - 1) * (LEASE - 1)}`);
    for (const r of burst.filter((x) => x.status === 429)) assertRefusedByRpm(r, RPM);
    for (const r of burst.filter((x) => x.status === 200)) {
      assert.equal(r.headers['x-ratelimit-limit-requests'], String(RPM));
      assert.ok(Number(r.headers['x-ratelimit-remaining-requests']) < RPM);
    }

    // The rest a gateway held goes back to Redis when its lease ends (at the end of the second it
    // was taken in): asking on, the other gateway gets it, and the total reaches the limit exactly.
    // (eventually() retries on an exception, so the answers are checked after it.)
    let total = admitted;
    const refused = [];
    await eventually(
      async () => {
        const round = await Promise.all(gws.map((gw) => chat(gw, key)));
        for (const r of round) {
          if (r.status === 200) total++;
          else refused.push(r);
        }
        return total >= RPM;
      },
      { timeoutMs: 10_000, intervalMs: 50, what: `the total admitted reaching ${RPM}` },
    );
    assert.equal(total, RPM, 'never over the limit');
    for (const r of refused) assertRefusedByRpm(r, RPM);
    // Both gateways refuse now, and keep refusing: no lease is left anywhere.
    for (let i = 0; i < 10; i++) {
      for (const gw of gws) assertRefusedByRpm(await chat(gw, key), RPM);
    }
    assert.equal(total, RPM);
  });

  test('Redis runs about one script call per lease: 200 requests (auto lease, rpm 6000: 60 a lease)', T, async (t) => {
    // A Redis of its own, so that its counts are this test's alone.
    const own = await startRedis();
    t.after(() => own.stop());
    const run = async (lease, concurrency) => {
      const key = newKey();
      const gw = await startGateway(config({ name: `lease-calls-${uid()}`, rpm: 6000, tpm: 6_000_000, lease, redisUrl: own.url }), {
        env: { REDIS_TEST_KEY: key },
        t,
      });
      assert.equal((await chat(gw, key)).status, 200, 'warm-up (loads the script)');
      const before = scriptCalls(own);
      const started = Date.now();
      let next = 0;
      const worker = async () => {
        while (next < 200) {
          next++;
          const r = await chat(gw, key);
          assert.equal(r.status, 200, r.text);
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      const elapsedMs = Date.now() - started;
      // (Counted at once: the flush timer may still send the last corrections and the rest of
      // the last lease, one or two calls more.)
      const calls = scriptCalls(own) - before;
      return { calls, elapsedMs };
    };
    const leased = await run(undefined, 1); // default: auto
    const leasedConcurrent = await run('auto', 10);
    const off = await run('off', 1);
    t.diagnostic(`script calls for 200 requests: auto ${leased.calls} (${leased.elapsedMs} ms), auto with 10 at once ${leasedConcurrent.calls} (${leasedConcurrent.elapsedMs} ms), off ${off.calls} (${off.elapsedMs} ms)`);
    // One call per lease: 60 requests and 60,000 tokens on top of the first request's 1026, so
    // 58 requests of 1026 tokens. A lease also ends with its second, and the flush timer (every
    // 200 ms) sends the collected token corrections: a bound from the time the requests took.
    for (const m of [leased, leasedConcurrent]) {
      const bound = Math.ceil(200 / 58) + Math.ceil(m.elapsedMs / 1000) + 1 + Math.ceil(m.elapsedMs / 200) + 1;
      assert.ok(m.calls <= bound, `${m.calls} script calls for 200 requests (bound ${bound})`);
    }
    assert.ok(off.calls >= 200, `without leases every request is a call: ${off.calls}`);
  });

  test('a lease taken before Redis died is still spent; then deny answers 503', T, async (t) => {
    const own = await startRedis();
    t.after(() => own.stop());
    const key = newKey();
    const gw = await startGateway(config({ name: `lease-dies-${uid()}`, rpm: 1000, lease: 0.1, onStoreError: 'deny', redisUrl: own.url }), {
      env: { REDIS_TEST_KEY: key },
      t,
    });
    assert.equal((await chat(gw, key)).status, 200, 'connects and loads the script');
    // A lease lives until the end of the Redis second it was taken in: take it early in a second,
    // so that the requests after the kill (a few milliseconds later) still fall within it.
    await eventually(() => Number(own.cli('TIME').split('\n')[1]) < 200_000, {
      timeoutMs: 3000,
      intervalMs: 5,
      what: 'the first 200 ms of a Redis second',
    });
    const first = await chat(gw, key);
    assert.equal(first.status, 200, first.text);
    await own.stop('SIGKILL');
    const afterKill = await chat(gw, key);
    assert.equal(afterKill.status, 200, `spent from the lease: ${afterKill.text}`);
    assert.equal(afterKill.headers['x-ratelimit-limit-requests'], '1000');
    assert.equal(
      Number(afterKill.headers['x-ratelimit-remaining-requests']),
      Number(first.headers['x-ratelimit-remaining-requests']) - 1,
      'counted down from the lease',
    );
    // Once the lease is over (within a second) there is no store: deny.
    let spent = 1;
    let refused;
    await eventually(
      async () => {
        const r = await chat(gw, key);
        if (r.status === 200) spent++;
        else refused = r;
        return r.status !== 200;
      },
      { timeoutMs: 5000, intervalMs: 10, what: 'a refusal once the lease is over' },
    );
    assertGatewayError(refused, 503, 'rate_limit_store_unavailable');
    assert.ok(spent <= 100 - 2, `at most the lease's rest is spent without Redis: ${spent}`);
    await gw.waitForLog((o) => o.msg === 'rate limit store unavailable');
  });
});
