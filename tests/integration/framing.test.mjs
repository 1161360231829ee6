// Response framing: the client gets its answer framed for its own HTTP version and connection
// wishes, whatever framing the upstream used (Content-Length, chunked, or a body that ends when
// the upstream closes), and the body byte for byte. Raw sockets on both sides: Node's HTTP client
// and server would hide the framing this checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { startGateway } from './harness.mjs';
import { rawConnect } from '../faults/raw.mjs';

const T = { timeout: 30_000 };
const BODY = JSON.stringify({ id: 'chatcmpl-f', object: 'chat.completion', choices: [], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } });

// An upstream that answers each request in the framing its model names: "length", "chunked"
// (three chunks) or "close" (no length: the body ends with the connection).
async function framingUpstream(t) {
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end).toString('latin1');
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = buf.subarray(end + 4, end + 4 + length).toString();
        buf = buf.subarray(end + 4 + length);
        const framing = JSON.parse(body).model;
        const start = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\napim-request-id: apim-framing\r\n';
        if (framing === 'length') {
          sock.write(`${start}Content-Length: ${Buffer.byteLength(BODY)}\r\n\r\n${BODY}`);
        } else if (framing === 'chunked') {
          const parts = [BODY.slice(0, 10), BODY.slice(10, 40), BODY.slice(40)];
          sock.write(`${start}Transfer-Encoding: chunked\r\n\r\n` +
            parts.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('') + '0\r\n\r\n');
        } else {
          sock.end(`${start}Connection: close\r\n\r\n${BODY}`);
        }
      }
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  return server.address().port;
}

function requestBytes(version, framing, connection) {
  const body = JSON.stringify({ model: framing, messages: [] });
  return `POST /v1/chat/completions HTTP/${version}\r\nHost: gw\r\nContent-Type: application/json\r\n` +
    (connection ? `Connection: ${connection}\r\n` : '') +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

test('response framing follows the client, whatever the upstream used; the body is relayed byte for byte', T, async (t) => {
  const port = await framingUpstream(t);
  const gw = await startGateway(`server: {listen: "127.0.0.1:0"}
upstreams:
  edge: {provider: azure, base_url: "http://127.0.0.1:${port}", api_key: k}
routes: [{match: "*", upstream: edge}]
`, { t });
  const gwPort = Number(new URL(gw.url).port);

  const cases = [
    // [client version, Connection, upstream framing, expected framing header, client kept open]
    ['1.1', null, 'length', 'content-length', true],
    ['1.1', null, 'chunked', 'chunked', true],
    ['1.1', null, 'close', 'chunked', true],  // re-framed: the client's connection survives
    ['1.1', 'close', 'length', 'content-length', false],
    ['1.1', 'close', 'chunked', 'chunked', false],
    ['1.0', null, 'length', 'content-length', false],
    ['1.0', null, 'chunked', 'none', false],  // HTTP/1.0 has no chunks: the close ends the body
    ['1.0', null, 'close', 'none', false],
    ['1.0', 'keep-alive', 'length', 'content-length', true],
    ['1.0', 'keep-alive', 'chunked', 'none', false],
    // A body the close ends cannot keep the connection: no "keep-alive" is promised (the
    // gateway used to echo the client's keep-alive here, then close).
    ['1.0', 'keep-alive', 'close', 'none', false],
  ];
  for (const [version, connection, framing, expected, keptOpen] of cases) {
    const what = `HTTP/${version}${connection ? ` (Connection: ${connection})` : ''}, upstream ${framing}`;
    const c = await rawConnect(gwPort);
    try {
      await c.write(requestBytes(version, framing, connection));
      const [res] = await c.responses(1);
      assert.ok(res && res.complete, `${what}: a complete response`);
      assert.equal(res.status, 200, what);
      assert.equal(res.text, BODY, `${what}: the body byte for byte`);
      assert.equal(res.headers['apim-request-id'], 'apim-framing', what);
      const te = res.headers['transfer-encoding'];
      const cl = res.headers['content-length'];
      if (expected === 'chunked') {
        assert.equal(te, 'chunked', what);
        assert.equal(cl, undefined, what);
      } else if (expected === 'content-length') {
        assert.equal(cl, String(Buffer.byteLength(BODY)), what);
        assert.equal(te, undefined, what);
      } else {
        assert.equal(te, undefined, what);
        assert.equal(cl, undefined, what);
      }
      // The Connection field says what happens next, in the client's version's terms.
      const conn = res.headers.connection;
      if (version === '1.1') assert.equal(conn, keptOpen ? undefined : 'close', `${what}: connection`);
      else assert.equal(conn, keptOpen ? 'keep-alive' : undefined, `${what}: connection`);
      if (keptOpen) {
        // A second request on the same connection is answered.
        await c.write(requestBytes(version, 'length', connection));
        const both = await c.responses(2);
        assert.equal(both.length, 2, `${what}: a second response on the same connection`);
        assert.equal(both[1].text, BODY, what);
      } else {
        assert.equal(await c.waitClosed(5000), true, `${what}: the gateway closes the connection`);
      }
    } finally {
      c.destroy();
    }
  }
});
