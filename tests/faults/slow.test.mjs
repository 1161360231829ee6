// Fault injection that waits for the gateway's own client-side timeouts (README, Operations: 30 s
// for a request header, 60 s while a body arrives, 60 s for a client that stops reading), which
// have no configuration key to shorten them. About 75 s, so only with FAULTS_SLOW=1
// (scripts/test.sh sets it). The four clients run at once against one gateway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';

import { eventually } from '../integration/harness.mjs';
import { startFaultGateway, checkInvariants, chatBody, SLOW } from './invariants.mjs';
import { rawConnect } from './raw.mjs';

const SKIP = SLOW ? false : 'set FAULTS_SLOW=1 to run the cases that wait for the 30-60 s client timeouts (~75 s)';

test('slow clients are dropped by the built-in timeouts: a header trickled forever (30 s), a stalled body (60 s), a stream never read (60 s)', { timeout: 150_000, skip: SKIP }, async (t) => {
  const fg = await startFaultGateway(t, { timeoutMs: 600_000 });
  const port = fg.gw.port;
  const results = {};

  // 1. Slowloris: one header byte a second, never the end of the header.
  const slowloris = (async () => {
    const c = await rawConnect(port);
    t.after(() => c.destroy());
    const t0 = Date.now();
    const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nx-slowloris: ' + 'a'.repeat(200);
    for (let i = 0; !c.closed && Date.now() - t0 < 50_000; i = (i + 1) % head.length) {
      c.sock.write(head[i]);
      await Promise.race([delay(1000), c.until((cl) => cl.closed, 1000, 'close').catch(() => {})]); // the trickle's pace
    }
    results.slowloris = { closed: c.closed, after: Date.now() - t0, answer: c.parsed().responses[0] };
  })();

  // 2. A body that stops arriving half way.
  const bodyId = fg.tracker.maybe('stalled-body'); // the gateway may log its 408
  const stalledBody = (async () => {
    const c = await rawConnect(port);
    t.after(() => c.destroy());
    const body = JSON.stringify(chatBody());
    await c.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${bodyId}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
    );
    const t0 = Date.now();
    const closed = await c.waitClosed(75_000);
    results.stalledBody = { closed, after: Date.now() - t0, answer: c.parsed().responses[0] };
  })();

  // 3. A stream whose client never reads (timeout_ms is 10 minutes: only the write stall can end it).
  const noReadId = fg.tracker.id('noread');
  const neverRead = (async () => {
    const c = await rawConnect(port);
    t.after(() => c.destroy());
    c.sock.pause();
    const body = JSON.stringify(chatBody({ stream: true }));
    await c.write(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nx-request-id: ${noReadId}\r\n` +
        `x-mock-scenario: big-stream\r\nx-mock-stream-bytes: ${512 * 1024 * 1024}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    const rec = await fg.mock.waitForRequest((r) => r.headers['x-request-id'] === noReadId);
    await eventually(() => rec.streamedBytes > 1024 * 1024, { timeoutMs: 5000, what: 'the stream flowing' });
    const t0 = Date.now();
    try {
      await fg.mock.waitAborted(rec, 80_000);
      results.neverRead = { dropped: true, after: Date.now() - t0, streamed: rec.streamedBytes };
    } catch {
      results.neverRead = { dropped: false, after: Date.now() - t0, streamed: rec.streamedBytes };
    }
    c.destroy();
  })();

  // 4. Slowloris on a kept-alive connection: one request answered, then the next header trickled.
  // The 75 s keep-alive idle time covers only the wait for its first byte; the header then has
  // the same 30 s as on a new connection.
  const keptAlive = (async () => {
    const c = await rawConnect(port);
    t.after(() => c.destroy());
    await c.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await c.responses(1);
    const t0 = Date.now();
    const head = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nx-slowloris: ' + 'a'.repeat(200);
    for (let i = 0; !c.closed && Date.now() - t0 < 50_000; i = (i + 1) % head.length) {
      c.sock.write(head[i]);
      await Promise.race([delay(1000), c.until((cl) => cl.closed, 1000, 'close').catch(() => {})]); // the trickle's pace
    }
    results.keptAlive = { closed: c.closed, after: Date.now() - t0 };
  })();

  // Meanwhile the gateway serves everyone else.
  const h = await fg.health();
  assert.equal(h.status, 200);
  assert.equal((await fg.chat()).status, 200);

  await Promise.all([slowloris, stalledBody, neverRead, keptAlive]);
  t.diagnostic(JSON.stringify({
    slowloris: { ...results.slowloris, answer: results.slowloris.answer?.status },
    stalledBody: { ...results.stalledBody, answer: results.stalledBody.answer?.status },
    neverRead: results.neverRead,
    keptAlive: results.keptAlive,
  }));
  assert.ok(results.slowloris.closed, `a header trickled forever is cut (README: 30 s); still open after ${results.slowloris.after} ms`);
  assert.ok(results.slowloris.after <= 40_000, `header cut within 30 s + slack: ${results.slowloris.after} ms`);
  assert.ok(results.keptAlive.closed && results.keptAlive.after <= 40_000,
    `a next header trickled on a kept-alive connection is cut at 30 s, not the 75 s idle time: ${JSON.stringify(results.keptAlive)}`);
  assert.ok(results.stalledBody.closed, `a stalled body is cut (README: 60 s); still open after ${results.stalledBody.after} ms`);
  assert.ok(results.stalledBody.after <= 70_000, `body cut within 60 s + slack: ${results.stalledBody.after} ms`);
  const ans = results.stalledBody.answer;
  if (ans) assert.ok(ans.status === 408 && ans.json?.error, `an answer to the stalled body is a 408 in OpenAI shape: ${ans.status} ${ans.text}`);
  assert.ok(results.neverRead.dropped, `a client that never reads is dropped (README: 60 s); the upstream is still open after ${results.neverRead.after} ms`);
  assert.ok(results.neverRead.after <= 80_000, `dropped within 60 s + slack: ${results.neverRead.after} ms`);
  await checkInvariants(t, fg);
});
