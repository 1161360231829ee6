// Fault injection, the gateway's own dependencies: the Redis rate-limit store dies and comes back
// under load; the access log's disk fills up. After each case checkInvariants.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startRedis, haveRedisServer, REDIS_SERVER_BIN, eventually, tmpDir, uid, assertGatewayError } from '../integration/harness.mjs';
import { startFaultGateway, checkInvariants, readAccessLog, chatBody } from './invariants.mjs';

// ---------------------------------------------------------------------------------------------
// Redis

const NO_REDIS = haveRedisServer() ? false : `${REDIS_SERVER_BIN} not found (install the redis-server package)`;

test('Redis killed and restarted under load: on_store_error allow/deny while it is down, limits work again after', { timeout: 90_000, skip: NO_REDIS }, async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const mock = await startMock();
  t.after(() => mock.close());

  const gateway = async (policy) => {
    const loadKey = `sk-load-${crypto.randomBytes(8).toString('hex')}`;
    const smallKey = `sk-small-${crypto.randomBytes(8).toString('hex')}`;
    const tagName = uid(policy).replace(/[^a-zA-Z0-9-]/g, '');
    const keys = `
keys:
  - name: load-${tagName}
    key: "${loadKey}"
    rpm: 1000000
  - name: small-${tagName}
    key: "${smallKey}"
    rpm: 3
`;
    const rateLimits = `
rate_limits:
  store: redis
  redis_url: "${redis.url}"
  on_store_error: ${policy}
  default_completion_tokens: 100
`;
    const fg = await startFaultGateway(t, { mock, keys, rateLimits, clientKey: loadKey });
    return { fg, policy, smallKey, results: [] };
  };
  const gws = [await gateway('allow'), await gateway('deny')];

  // Load: two clients per gateway, one request after the other, until told to stop.
  let stop = false;
  const loops = [];
  for (const g of gws) {
    for (let i = 0; i < 2; i++) {
      loops.push(
        (async () => {
          while (!stop) {
            const at = Date.now();
            const r = await g.fg.chat({ timeoutMs: 5000 }).catch((e) => ({ status: 0, error: e }));
            g.results.push({ at, status: r.status, code: r.json?.error?.code, limited: r.headers?.['x-ratelimit-limit-requests'] !== undefined, r });
          }
        })(),
      );
    }
  }
  const stopLoad = async () => {
    stop = true;
    await Promise.all(loops);
  };
  t.after(stopLoad);
  const after = (g, ts, pred = () => true) => g.results.filter((x) => x.at >= ts && pred(x));

  // Up: counted in Redis.
  await eventually(() => gws.every((g) => after(g, 0, (x) => x.limited).length >= 10), { timeoutMs: 10_000, what: 'load running, limited by Redis' });

  // Down.
  await redis.stop('SIGKILL');
  const killedAt = Date.now();
  for (const g of gws) await g.fg.gw.waitForLog((o) => o.msg === 'rate limit store unavailable', 10_000);
  const deny = gws.find((g) => g.policy === 'deny');
  const allow = gws.find((g) => g.policy === 'allow');
  await eventually(() => after(deny, killedAt, (x) => x.status === 503).length >= 5 && after(allow, killedAt, (x) => !x.limited).length >= 5, {
    timeoutMs: 10_000,
    what: 'requests answered per on_store_error while Redis is down',
  });

  // Back on the same port (empty). Each gateway reconnects by itself (backoff up to 5 s).
  const again = await startRedis({ port: redis.port });
  t.after(() => again.stop());
  const restartedAt = Date.now();
  await eventually(() => gws.every((g) => after(g, restartedAt, (x) => x.limited && x.status === 200).length >= 5), {
    timeoutMs: 20_000,
    what: 'both gateways limiting through Redis again',
  });
  for (const g of gws) await g.fg.gw.waitForLog((o) => o.msg === 'rate limit store recovered', 5000);
  await stopLoad();

  for (const g of gws) {
    const statuses = {};
    for (const x of g.results) statuses[x.status] = (statuses[x.status] ?? 0) + 1;
    t.diagnostic(`${g.policy}: ${g.results.length} requests under load, statuses ${JSON.stringify(statuses)}`);
    const failed = g.results.filter((x) => x.status === 0);
    assert.deepEqual(failed.map((x) => x.error.message), [], `${g.policy}: no request failed at the connection level`);
    if (g.policy === 'allow') {
      assert.deepEqual(Object.keys(statuses), ['200'], 'allow: every request passes, also while Redis is down');
    } else {
      for (const x of g.results.filter((y) => y.status !== 200)) assertGatewayError(x.r, 503, 'rate_limit_store_unavailable');
    }
  }

  // The limits work again: rpm 3 on a key never used before (the new Redis is empty anyway).
  for (const g of gws) {
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      const r = await g.fg.chat({ headers: { authorization: `Bearer ${g.smallKey}` } });
      statuses.push(r.status);
      if (i === 3) assertGatewayError(r, 429, 'rate_limit_exceeded', { type: 'requests' });
    }
    assert.deepEqual(statuses, [200, 200, 200, 429], `${g.policy}: rpm 3 enforced after the restart`);
  }
  for (const g of gws) await checkInvariants(t, g.fg);
});

// ---------------------------------------------------------------------------------------------
// Disk full

test('the access log disk fills up (64 KiB tmpfs): every request is served, lost lines are counted, logging resumes', { timeout: 60_000 }, async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('not root: cannot mount a tmpfs for the access log');
    return;
  }
  const dir = tmpDir('llmgw-faults-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    t.skip(`mount -t tmpfs failed (${String(e.stderr || e.message).trim()})`);
    return;
  }
  let mounted = true;
  const unmount = () => {
    if (!mounted) return;
    mounted = false;
    try {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    } catch {
      execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    }
  };
  t.after(unmount);
  // A filler takes most of the space, so that the log fills up fast and can be given room later.
  const filler = path.join(dir, 'filler');
  fs.writeFileSync(filler, Buffer.alloc(40 * 1024, 'f'));

  const fg = await startFaultGateway(t, { logFile: path.join(dir, 'access.log') });
  t.after(async () => {
    await fg.gw.stop();
    unmount();
  });

  const N = 120;
  const statuses = [];
  for (let i = 0; i < N; i += 4) {
    const rs = await Promise.all(Array.from({ length: 4 }, () => fg.chat()));
    statuses.push(...rs.map((r) => r.status));
  }
  assert.deepEqual(statuses.filter((s) => s !== 200), [], 'every request is answered 200 while the log cannot be written');
  const { bavail, bsize } = fs.statfsSync(dir);
  const size = fs.statSync(fg.logFile).size;
  t.diagnostic(`access.log ${size} bytes, ${bavail * bsize} bytes free, ${readAccessLog(fg.logFile).lines.length} complete lines for ${fg.tracker.expected} requests`);
  assert.ok(readAccessLog(fg.logFile).lines.length < fg.tracker.expected, 'the disk really filled up (fewer lines than requests)');

  // lines in the file + llm_gateway_access_log_dropped_total = requests made
  await checkInvariants(t, fg, { droppedLinesMetric: true });

  // Room again: the log resumes with whole lines.
  fs.rmSync(filler);
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await fg.chat()).id);
  try {
    await eventually(
      () => {
        const { lines } = readAccessLog(fg.logFile);
        return ids.every((id) => lines.some((l) => l.request_id === id));
      },
      { timeoutMs: 5000, what: 'whole access-log lines written again once the disk has room' },
    );
  } catch (e) {
    const text = fs.readFileSync(fg.logFile, 'utf8');
    const { lines } = readAccessLog(fg.logFile);
    const missing = ids.filter((id) => !lines.some((l) => l.request_id === id));
    const glued = missing.filter((id) => text.includes(id));
    e.message += `; missing ${missing.length} of ${ids.length}` +
      (glued.length ? `, ${glued.length} of them present but glued to a line the full disk cut short:\n` +
        text.split('\n').filter((l) => glued.some((id) => l.includes(id))).map((l) => l.slice(0, 300)).join('\n') : '');
    throw e;
  }
  t.diagnostic(`lines that are not whole JSON (cut by the full disk): ${readAccessLog(fg.logFile).torn}`);
  await checkInvariants(t, fg, { droppedLinesMetric: true });
});
