// Mock Azure OpenAI / OpenAI upstream for the llm-gateway integration tests.
//
// Pure Node built-ins. Use it in-process:
//
//   import { startMock } from '../mock_upstream/mock_upstream.mjs';
//   const mock = await startMock();            // http://127.0.0.1:<random port>
//   const mock = await startMock({ tls: { key, cert } });  // https
//
// or standalone:
//
//   node tests/mock_upstream/mock_upstream.mjs --port 9001 [--host 127.0.0.1] [--tls-key F --tls-cert F]
//
// It records every request (see `record` in handle()) BEFORE answering, and keeps the exact bytes it
// sent back per request (`req.responseBody`), so tests can prove the gateway relays bytes unchanged.
//
// Scenario selection, first match wins:
//   1. request header `x-mock-scenario`
//   2. the Azure deployment name in `/openai/deployments/{name}/...` if it is a scenario name
//   3. the JSON body `model` if it is a scenario name
//   4. `default`
// Knobs (headers): x-mock-delay-ms (pause between stream events), x-mock-tag (gate tag for
// gated-stream, default "gate"), x-mock-status (status for scenario `error`, default 500),
// x-mock-split-ms (write every stream event in two pieces, cut inside its JSON, this many ms apart),
// x-mock-pad-bytes (non-streaming chat: this many 'x' appended to the answer's content),
// x-mock-remaining-tokens / x-mock-remaining-requests (the x-ratelimit-remaining-* values every
// answer carries; default 9990 / 99).
// Per instance: startMock({defaults: {...}}) or `mock.defaults = {...}` (mutable) — knob headers
// applied to every request that does not carry them itself, so that several mock instances behind
// one gateway can each behave differently (one region throttled, one failing, ...).
//
// Scenarios for the SDK end-to-end tests (tests/e2e/):
//   tool-call             chat with a non-empty `tools`: the model calls the first function tool, with
//                         arguments = sampleFromSchema(its parameters) (streams too); else as default
//   json-schema           chat with response_format json_schema: the content is
//                         JSON.stringify(sampleFromSchema(schema)) (streams too); else as default
//   retry-after-ms        the first K attempts (per x-test-id) get 429 with `retry-after-ms: N` and no
//                         `retry-after`; later attempts are answered as default. Knobs:
//                         x-mock-fail-times (K, default 1), x-mock-retry-after-ms (N, default 400)
//   per-input-embeddings  embeddings: one vector per input, vector i = embeddingVector(i)
// Knob x-mock-no-trailing-annotation: 1 — chat streams leave out the annotation chunk without
// `delta` after the finish chunk (Azure's default filter mode sends none; the asynchronous filter does).
// Each record also has `receivedAt` (performance.now() when the request was recorded).
//
// Fault scenarios for tests/faults/ (the upstream misbehaving on the wire; select them with
// x-mock-scenario). Raw bytes written past Node's HTTP layer are kept in `responseBody` too:
//   reset-mid-stream      SSE headers and the first 2 events of a chat stream, then waits for
//                         release(x-mock-tag) (waitGated(tag) tells when it got there) and resets
//                         the connection (RST)
//   stall-after-headers   200 with SSE headers, then nothing, ever
//   garbage-response      bytes that are not HTTP, then FIN
//   oversized-headers     a 200 whose header block is over 64 KiB (x-mock-header-bytes, default
//                         80 KiB); the connection stays open
//   bad-chunk             200 chunked SSE: one valid chunk, then an invalid chunk-size line; stays open
//   short-content-length  200 with content-length 1000 but only 100 body bytes, then FIN
//   switching-protocols   101 Switching Protocols (upgrade: websocket); the connection stays open
//   partial-chunk-reset   200 chunked: the header and half a chunk-size line in one write, then FIN
//   big-stream            a 200 SSE chat stream of x-mock-stream-bytes (default 16 MiB) in ~1 KiB
//                         events, written with backpressure (the record's `streamedBytes` counts
//                         what the socket took); bytes not kept in responseBody
// Each record also has `rawTrailers` (the request's chunked trailer fields, as Node read them).

import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { EventEmitter } from 'node:events';
import { pathToFileURL } from 'node:url';

export const SCENARIOS = Object.freeze([
  'default',
  'content-filter-400',
  'filtered-stream',
  'rate-limited',
  'error',
  'hang',
  'slow-stream',
  'gated-stream',
  'reset-if-reused',
  'close',
  'echo',
  'tool-call',
  'json-schema',
  'retry-after-ms',
  'per-input-embeddings',
  'reset-mid-stream',
  'stall-after-headers',
  'garbage-response',
  'oversized-headers',
  'bad-chunk',
  'short-content-length',
  'switching-protocols',
  'big-stream',
]);
const SCENARIO_SET = new Set(SCENARIOS);

// ---------------------------------------------------------------------------------------------
// Wire samples. Shapes follow shared/research/azure-api.md §3.2, §3.3, §3.5, §3.6, §4.2.
// Keys are in Azure's (alphabetical) order where the research shows it.

const SAFE4 = {
  hate: { filtered: false, severity: 'safe' },
  self_harm: { filtered: false, severity: 'safe' },
  sexual: { filtered: false, severity: 'safe' },
  violence: { filtered: false, severity: 'safe' },
};

// §3.2 prompt_filter_results (non-streaming chat).
const PROMPT_FILTER_RESULTS = [
  {
    prompt_index: 0,
    content_filter_results: {
      custom_blocklists: { filtered: false },
      hate: { filtered: false, severity: 'safe' },
      jailbreak: { filtered: false, detected: false },
      self_harm: { filtered: false, severity: 'safe' },
      sexual: { filtered: false, severity: 'safe' },
      violence: { filtered: false, severity: 'safe' },
    },
  },
];

// §3.2 per-choice content_filter_results.
const CHOICE_FILTER_RESULTS = {
  hate: { filtered: false, severity: 'safe' },
  protected_material_code: { filtered: false, detected: false },
  protected_material_text: { filtered: false, detected: false },
  self_harm: { filtered: false, severity: 'safe' },
  sexual: { filtered: false, severity: 'safe' },
  violence: { filtered: false, severity: 'safe' },
};

// §3.6: the exact 400 body Azure returns when the prompt is filtered.
export const CONTENT_FILTER_400_BODY = {
  error: {
    message:
      "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
    type: null,
    param: 'prompt',
    code: 'content_filter',
    status: 400,
    innererror: {
      code: 'ResponsibleAIPolicyViolation',
      content_filter_result: {
        hate: { filtered: false, severity: 'safe' },
        jailbreak: { filtered: false, detected: false },
        self_harm: { filtered: true, severity: 'medium' },
        sexual: { filtered: false, severity: 'safe' },
        violence: { filtered: false, severity: 'safe' },
      },
    },
  },
};

// §4.2
export const RATE_LIMIT_429_BODY = {
  error: { code: '429', message: 'Rate limit is exceeded. Try again in 1 seconds.' },
};

// §3.3: the first event of an Azure chat stream, verbatim.
const STREAM_FIRST_EVENT =
  '{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}';

// §3.5: the documented blocked stream (Asynchronous Filter), verbatim except that the "..." lines
// of the documentation are left out.
export const FILTERED_STREAM_EVENTS = Object.freeze([
  '{"id":"","object":"","created":0,"model":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}],"choices":[],"usage":null}',
  '{"id":"chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2","object":"chat.completion.chunk","created":1699587397,"model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"role":"assistant"}}],"usage":null}',
  '{"id":"chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2","object":"chat.completion.chunk","created":1699587397,"model":"gpt-35-turbo","choices":[{"index":0,"finish_reason":null,"delta":{"content":"Hey"}}],"usage":null}',
  '{"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"content_filter_offsets":{"check_offset":65,"start_offset":65,"end_offset":1056}}],"usage":null}',
  '{"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":"content_filter","content_filter_results":{"protected_material_text":{"detected":true,"filtered":true}},"content_filter_offsets":{"check_offset":65,"start_offset":65,"end_offset":1056}}],"usage":null}',
  '[DONE]',
]);

const CREATED = 1728073417; // fixed so bodies are deterministic
const UPSTREAM_MODEL = 'gpt-4o-2024-08-06'; // Azure answers with the model version, not the deployment
const USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 };

/** 1000 deterministic bytes served as audio/mpeg by audio/speech. */
export function speechBytes() {
  const b = Buffer.alloc(1000);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data parsing (used by the mock to read `model`/`purpose`, and by tests).

/**
 * Parse a multipart/form-data body.
 * @returns {{parts: {name, filename, contentType, headers, data: Buffer}[], fields: Record<string,string>} | null}
 *   `fields` holds the non-file parts as strings. null when the content-type has no boundary.
 */
export function parseMultipart(body, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType || '');
  if (!m) return null;
  const delim = Buffer.from('--' + (m[1] || m[2]));
  const parts = [];
  let pos = body.indexOf(delim);
  while (pos !== -1) {
    let start = pos + delim.length;
    if (body[start] === 0x2d && body[start + 1] === 0x2d) break; // closing "--boundary--"
    if (body[start] === 0x0d && body[start + 1] === 0x0a) start += 2;
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delim]), start);
    if (next === -1) break;
    const part = body.subarray(start, next);
    const hdrEnd = part.indexOf('\r\n\r\n');
    const headers = {};
    for (const line of part.subarray(0, hdrEnd < 0 ? 0 : hdrEnd).toString('latin1').split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const disp = headers['content-disposition'] || '';
    const name = /\bname="([^"]*)"/i.exec(disp)?.[1];
    const filename = /\bfilename="([^"]*)"/i.exec(disp)?.[1];
    parts.push({
      name,
      filename,
      contentType: headers['content-type'],
      headers,
      data: hdrEnd < 0 ? Buffer.alloc(0) : part.subarray(hdrEnd + 4),
    });
    pos = next + 2;
  }
  const fields = {};
  for (const p of parts) if (p.filename === undefined && p.name !== undefined) fields[p.name] = p.data.toString('utf8');
  return { parts, fields };
}

// ---------------------------------------------------------------------------------------------
// Path parsing: accepts Azure deployments, Azure resource, Azure v1 and OpenAI layouts, with any
// base-path prefix in front (the gateway's base_url may carry one).

/** @returns {{style: 'deployments'|'azure'|'azure-v1'|'openai'|'unknown', deployment: string|null, op: string}} */
export function parseUpstreamPath(pathname) {
  let i = pathname.indexOf('/openai/');
  if (i !== -1) {
    const rest = pathname.slice(i + '/openai/'.length);
    const dm = /^deployments\/([^/]+)\/(.*)$/.exec(rest);
    if (dm) return { style: 'deployments', deployment: safeDecode(dm[1]), op: dm[2] };
    if (rest.startsWith('v1/')) return { style: 'azure-v1', deployment: null, op: rest.slice(3) };
    return { style: 'azure', deployment: null, op: rest };
  }
  i = pathname.indexOf('/v1/');
  if (i !== -1) return { style: 'openai', deployment: null, op: pathname.slice(i + 4) };
  return { style: 'unknown', deployment: null, op: pathname.replace(/^\/+/, '') };
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Start a mock upstream.
 * @param {{port?: number, host?: string, tls?: {key: string, cert: string}}} opts
 */
export async function startMock(opts = {}) {
  const host = opts.host ?? '127.0.0.1';
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  const requests = [];
  const sockets = new Set(); // raw TCP sockets, destroyed by close()
  const socketInfo = new WeakMap(); // req.socket -> {id, count}
  const timers = new Set();
  const releasedTags = new Set();
  const gatedTags = new Set();
  const retryAttempts = new Map(); // x-test-id -> attempts seen (scenario retry-after-ms)
  let nextSocketId = 0;
  let upstreamRequestCounter = 0;
  let closed = false;

  const handler = (req, res) => {
    handle(req, res).catch((err) => {
      // A bug in the mock must be loud, not a silent hang.
      process.stderr.write(`mock_upstream: handler error: ${err && err.stack}\n`);
      if (!res.headersSent) {
        res.writeHead(599, { 'content-type': 'text/plain' });
        res.end(String(err));
      } else res.destroy();
    });
  };

  const serverOpts = { maxHeaderSize: 256 * 1024 };
  const server = opts.tls
    ? https.createServer({ ...serverOpts, ...opts.tls }, handler) // key, cert; ca + requestCert for mTLS
    : http.createServer(serverOpts, handler);
  server.keepAliveTimeout = 30_000;
  server.headersTimeout = 60_000;
  server.requestTimeout = 0; // allow slow 20 MiB uploads and `hang`

  server.on('connection', (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  // Garbage from a client must not crash the mock.
  server.on('clientError', (err, sock) => sock.destroy());
  server.on('tlsClientError', () => {});

  function sleep(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  }

  function waitRelease(tag) {
    if (releasedTags.has(tag) || closed) return Promise.resolve();
    return new Promise((resolve) => {
      const on = (t) => {
        if (t === tag || t === null) {
          emitter.off('release', on);
          resolve();
        }
      };
      emitter.on('release', on);
    });
  }

  async function readBody(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return Buffer.concat(chunks);
  }

  async function handle(req, res) {
    for (const [k, v] of Object.entries(mock.defaults ?? {})) {
      if (req.headers[k] === undefined) req.headers[k] = String(v);
    }
    const sock = req.socket;
    let si = socketInfo.get(sock);
    if (!si) {
      si = { id: ++nextSocketId, count: 0 };
      socketInfo.set(sock, si);
    }
    si.count += 1;
    const socketRequestIndex = si.count;

    const target = req.url;
    const qi = target.indexOf('?');
    const path = qi === -1 ? target : target.slice(0, qi);
    const search = qi === -1 ? '' : target.slice(qi + 1);
    const query = Object.fromEntries(new URLSearchParams(search));

    let body;
    let uploadFailed = false;
    try {
      body = await readBody(req);
    } catch {
      body = Buffer.alloc(0); // client went away while uploading
      uploadFailed = true;
    }
    let json = null;
    if (body.length && /json/i.test(req.headers['content-type'] || '')) {
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        json = null;
      }
    } else if (body.length && (body[0] === 0x7b || body[0] === 0x5b)) {
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        json = null;
      }
    }
    const multipart = /multipart\/form-data/i.test(req.headers['content-type'] || '')
      ? parseMultipart(body, req.headers['content-type'])
      : null;
    const route = parseUpstreamPath(path);

    const bodyModel = json && typeof json.model === 'string' ? json.model : multipart?.fields.model;
    let scenario = 'default';
    const hdrScenario = req.headers['x-mock-scenario'];
    if (hdrScenario) scenario = hdrScenario;
    else if (route.deployment && SCENARIO_SET.has(route.deployment)) scenario = route.deployment;
    else if (bodyModel && SCENARIO_SET.has(bodyModel)) scenario = bodyModel;

    const responseChunks = [];
    const record = {
      method: req.method,
      path,
      query,
      url: target,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
      json,
      multipart,
      route, // {style, deployment, op}
      scenario,
      socketId: si.id,
      socketRequestIndex,
      // TLS only: the SNI host name the client sent (false when it sent none), else undefined.
      tlsServername: sock.encrypted ? sock.servername : undefined,
      receivedAt: performance.now(),
      rawTrailers: req.rawTrailers,
      aborted: false,
      resetByMock: false, // true when the mock itself destroyed the socket (reset-if-reused)
      finished: false, // true once the mock ended the response
      responseStatus: null,
      responseHeaders: null,
      get responseBody() {
        return Buffer.concat(responseChunks);
      },
    };
    requests.push(record);

    res.on('error', () => {});
    // The connection may already be gone (client closed while we were reading the body).
    if (uploadFailed || res.destroyed || sock.destroyed) record.aborted = true;
    res.on('close', () => {
      if (!res.writableFinished && !record.resetByMock && !record.aborted) {
        record.aborted = true;
        emitter.emit('aborted', record);
      }
    });
    res.on('finish', () => {
      record.finished = true;
    });

    emitter.emit('request', record);
    if (record.aborted) {
      emitter.emit('aborted', record);
      return;
    }

    // ---- response helpers: everything written goes through these so responseBody is exact.
    const n = ++upstreamRequestCounter;
    const baseHeaders = {
      'apim-request-id': crypto.randomUUID(),
      'x-request-id': `upstream-${n}`,
      'x-ms-region': 'Sweden Central',
      'x-ratelimit-remaining-requests': req.headers['x-mock-remaining-requests'] ?? '99',
      'x-ratelimit-remaining-tokens': req.headers['x-mock-remaining-tokens'] ?? '9990',
    };
    const alive = () => !res.destroyed && !res.writableEnded;
    const writeHead = (status, headers) => {
      // setHeader() + writeHead(status) so that getHeaders() reflects what was sent.
      for (const [k, v] of Object.entries({ ...baseHeaders, ...headers })) res.setHeader(k, v);
      res.writeHead(status);
      record.responseStatus = status;
      record.responseHeaders = res.getHeaders();
    };
    const sendBuffer = (status, buf, contentType, extra = {}) => {
      writeHead(status, { 'content-type': contentType, 'content-length': String(buf.length), ...extra });
      responseChunks.push(buf);
      res.end(buf);
    };
    const sendJson = (status, obj, extra = {}) =>
      sendBuffer(status, Buffer.from(JSON.stringify(obj)), 'application/json', extra);
    // Bytes past Node's HTTP layer, straight onto the socket (fault scenarios).
    const rawWrite = (s) => {
      const buf = Buffer.from(s, 'latin1');
      responseChunks.push(buf);
      if (!sock.destroyed) sock.write(buf);
    };
    const write = (s) => {
      if (!alive()) return false;
      const buf = Buffer.from(s);
      responseChunks.push(buf);
      res.write(buf);
      return true;
    };
    const delayHeader = Number(req.headers['x-mock-delay-ms']);
    const delayMs = Number.isFinite(delayHeader) && delayHeader >= 0 ? delayHeader : scenario === 'slow-stream' ? 50 : 0;
    const tag = req.headers['x-mock-tag'] || 'gate';
    const splitHeader = Number(req.headers['x-mock-split-ms']);
    const splitMs = req.headers['x-mock-split-ms'] !== undefined && Number.isFinite(splitHeader) && splitHeader >= 0 ? splitHeader : null;
    // One event, as one write or (x-mock-split-ms) as two writes cut in the middle of the event.
    const writeEvent = async (e) => {
      if (splitMs === null || e.length < 2) return write(e);
      const cut = Math.floor(e.length / 2);
      if (!write(e.slice(0, cut))) return false;
      await sleep(splitMs);
      return write(e.slice(cut));
    };

    // Streams: chunked transfer encoding (no content-length), one write per SSE event.
    const sendStream = async (events, { gated = false } = {}) => {
      writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-accel-buffering': 'no',
      });
      for (let i = 0; i < events.length; i++) {
        if (i > 0 && delayMs > 0) await sleep(delayMs);
        if (!(await writeEvent(events[i]))) return;
        if (i === 0 && gated) {
          gatedTags.add(tag);
          emitter.emit('gated', tag);
          await waitRelease(tag);
        }
      }
      if (alive()) res.end();
    };

    // ---- scenarios that do not depend on the operation
    switch (scenario) {
      case 'hang':
        return; // never answer; res 'close' marks the record aborted when the client gives up
      case 'reset-if-reused':
        if (socketRequestIndex > 1) {
          record.resetByMock = true;
          req.socket.destroy();
          return;
        }
        break;
      case 'content-filter-400':
        return sendJson(400, CONTENT_FILTER_400_BODY);
      case 'rate-limited':
        return sendJson(429, RATE_LIMIT_429_BODY, {
          'retry-after': '1',
          'retry-after-ms': '1000',
          'x-ratelimit-limit-requests': '8',
        });
      case 'error': {
        const status = Number(req.headers['x-mock-status']) || 500;
        return sendJson(status, azureErrorBody(status));
      }
      case 'echo':
        return sendJson(200, { method: req.method, url: target, headers: req.headers, bodyLength: body.length });
      case 'filtered-stream':
        return sendStream(FILTERED_STREAM_EVENTS.map((e) => `data: ${e}\n\n`));
      case 'retry-after-ms': {
        const key = String(req.headers['x-test-id'] ?? '');
        const attempt = (retryAttempts.get(key) ?? 0) + 1;
        retryAttempts.set(key, attempt);
        const failHeader = Number(req.headers['x-mock-fail-times']);
        const failTimes = Number.isFinite(failHeader) && failHeader >= 0 ? failHeader : 1;
        if (attempt <= failTimes) {
          const msHeader = Number(req.headers['x-mock-retry-after-ms']);
          const ms = Number.isFinite(msHeader) && msHeader >= 0 ? msHeader : 400;
          return sendJson(
            429,
            { error: { code: '429', message: `Rate limit is exceeded. Try again in ${Math.ceil(ms / 1000)} seconds.` } },
            { 'retry-after-ms': String(ms) },
          );
        }
        break; // answered like `default`
      }
      // ---- fault scenarios (tests/faults/)
      case 'reset-mid-stream': {
        writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        const events = chatStreamEvents(n, false);
        for (const e of events.slice(0, 2)) if (!write(e)) return;
        gatedTags.add(tag);
        emitter.emit('gated', tag);
        await waitRelease(tag);
        if (sock.destroyed) return;
        record.resetByMock = true;
        sock.resetAndDestroy();
        return;
      }
      case 'stall-after-headers':
        writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        res.flushHeaders();
        return; // never a body byte; res 'close' marks the record aborted when the client gives up
      case 'garbage-response':
        record.resetByMock = true;
        rawWrite('SSH-2.0-OpenSSH_9.6 this is not HTTP\r\n\u0000\u0001\u0002\u00ff garbage\r\n\r\n');
        sock.end();
        return;
      case 'oversized-headers': {
        const want = Number(req.headers['x-mock-header-bytes']) || 80 * 1024;
        let head = 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n';
        for (let i = 0; head.length < want; i++) head += `x-pad-${i}: ${'a'.repeat(1000)}\r\n`;
        const body = JSON.stringify(chatCompletion(n));
        rawWrite(`${head}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        record.responseStatus = 200;
        return; // the connection stays open
      }
      case 'bad-chunk': {
        const ev = chatStreamEvents(n, false)[0];
        rawWrite(
          'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n' +
            `${Buffer.byteLength(ev).toString(16)}\r\n${ev}\r\nzz-not-hex\r\nxx\r\n`,
        );
        record.responseStatus = 200;
        return; // the connection stays open
      }
      case 'short-content-length': {
        record.resetByMock = true;
        rawWrite(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"id":"chatcmpl-short","object":"chat.completion","choices":[${' '.repeat(38)}`);
        record.responseStatus = 200;
        sock.end();
        return;
      }
      case 'partial-chunk-reset': {
        // The header and half a chunk-size line in one write, then the end of the connection: a
        // proxy that holds the header back for the first body piece has sent nothing yet.
        record.resetByMock = true;
        record.responseStatus = 200;
        rawWrite('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n4');
        sock.end();
        return;
      }
      case 'switching-protocols':
        rawWrite('HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n');
        record.responseStatus = 101;
        return; // the connection stays open, as an upgraded one would
      case 'big-stream': {
        const total = Number(req.headers['x-mock-stream-bytes']) || 16 * 1024 * 1024;
        writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
        record.streamedBytes = 0;
        const piece = chatStreamEvents(n, false, 'y'.repeat(1800))[2]; // one content event, ~1 KiB+
        while (record.streamedBytes < total) {
          if (!alive()) return;
          const ok = res.write(piece);
          record.streamedBytes += piece.length;
          if (!ok) {
            await new Promise((resolve) => {
              const done = () => {
                res.off('drain', done);
                res.off('close', done);
                resolve();
              };
              res.on('drain', done);
              res.on('close', done);
            });
          }
        }
        if (alive()) res.end('data: [DONE]\n\n');
        return;
      }
      default:
        break;
    }

    const extra = scenario === 'close' ? { connection: 'close' } : {};
    const gated = scenario === 'gated-stream';
    const op = route.op.replace(/\/+$/, '');
    const method = req.method;
    const model = bodyModel ?? route.deployment ?? 'unknown';
    const stream = json?.stream === true || gated || scenario === 'slow-stream';

    // ---- per-operation default bodies
    if (op === 'chat/completions') {
      const includeUsage = json?.stream_options?.include_usage === true;
      const toolCall = scenario === 'tool-call' ? mockToolCall(json?.tools) : null;
      const content =
        scenario === 'json-schema' && json?.response_format?.type === 'json_schema'
          ? JSON.stringify(sampleFromSchema(json.response_format.json_schema?.schema))
          : undefined;
      if (stream) {
        if (toolCall) return sendStream(toolCallStreamEvents(n, toolCall, includeUsage), { gated });
        const events = chatStreamEvents(n, includeUsage, content, req.headers['x-mock-no-trailing-annotation'] !== '1');
        return sendStream(events, { gated });
      }
      if (toolCall) return sendJson(200, toolCallCompletion(n, toolCall), extra);
      const pad = Math.min(Math.max(Number(req.headers['x-mock-pad-bytes']) || 0, 0), 64 * 1024 * 1024);
      return sendJson(200, chatCompletion(n, pad, content), extra);
    }
    if (op === 'completions') {
      if (stream) return sendStream(completionStreamEvents(n, json?.stream_options?.include_usage === true), { gated });
      return sendJson(200, textCompletion(n), extra);
    }
    if (op === 'embeddings') {
      const b64 = json?.encoding_format === 'base64';
      const encode = (vec) => (b64 ? Buffer.from(new Float32Array(vec).buffer).toString('base64') : vec);
      const vec = [0.1, 0.2, 0.3];
      const embedding = encode(vec);
      let data = [{ object: 'embedding', index: 0, embedding }];
      if (scenario === 'per-input-embeddings') {
        const input = json?.input;
        // A string, or an array of token ids, is one input; any other array is one input per element.
        const count = Array.isArray(input) && !input.every((x) => typeof x === 'number') ? input.length : 1;
        data = Array.from({ length: count }, (_, i) => ({ object: 'embedding', index: i, embedding: encode(embeddingVector(i)) }));
      }
      return sendJson(
        200,
        {
          object: 'list',
          data,
          model: 'text-embedding-3-small',
          usage: { prompt_tokens: 3, total_tokens: 3 },
        },
        extra,
      );
    }
    if (op === 'audio/transcriptions' || op === 'audio/translations') {
      return sendJson(200, { text: 'hello from mock' }, extra);
    }
    if (op === 'audio/speech') return sendBuffer(200, speechBytes(), 'audio/mpeg', extra);
    if (op === 'images/generations' || op === 'images/edits') {
      const img =
        op === 'images/generations'
          ? { url: 'https://example/img.png' }
          : { b64_json: Buffer.from('mock-png-bytes').toString('base64') };
      return sendJson(
        200,
        {
          created: CREATED,
          data: [
            {
              ...img,
              revised_prompt: 'A mock picture of what you asked for.',
              content_filter_results: { ...SAFE4 },
              prompt_filter_results: {
                hate: { filtered: false, severity: 'safe' },
                profanity: { detected: false, filtered: false },
                self_harm: { filtered: false, severity: 'safe' },
                sexual: { filtered: false, severity: 'safe' },
                violence: { filtered: false, severity: 'safe' },
              },
            },
          ],
        },
        extra,
      );
    }
    if (op === 'responses' || op.startsWith('responses/')) {
      if (method === 'POST' && op === 'responses') {
        if (stream) return sendStream(responsesStreamEvents(n, model), { gated });
        return sendJson(200, responseObject(`resp_mock${n}`, model, 'completed'), extra);
      }
      const id = op.split('/')[1];
      if (method === 'DELETE') return sendJson(200, { id, object: 'response', deleted: true }, extra);
      if (op.split('/').length === 2) return sendJson(200, responseObject(id, model, 'completed'), extra);
      return sendJson(200, { object: 'list', data: [], path }, extra);
    }
    if (op === 'files' || op.startsWith('files/')) {
      const fid = op.split('/')[1];
      if (method === 'POST' && op === 'files') {
        return sendJson(200, fileObject('file-mock1', multipart?.fields.purpose ?? json?.purpose ?? null), extra);
      }
      if (op === 'files') return sendJson(200, { object: 'list', data: [fileObject('file-mock1', 'batch')] }, extra);
      if (op.endsWith('/content')) return sendBuffer(200, Buffer.from('{"mock":"file content"}\n'), 'application/octet-stream', extra);
      if (method === 'DELETE') return sendJson(200, { id: fid, object: 'file', deleted: true }, extra);
      return sendJson(200, fileObject(fid, 'batch'), extra);
    }
    if (op === 'batches' || op.startsWith('batches/')) {
      if (op === 'batches' && method === 'GET') return sendJson(200, { object: 'list', data: [batchObject('batch_mock1', json)] }, extra);
      return sendJson(200, batchObject(op.split('/')[1] ?? 'batch_mock1', json), extra);
    }
    if (op === 'models') {
      return sendJson(
        200,
        {
          object: 'list',
          data: [
            { id: 'gpt-4o-2024-08-06', object: 'model', created_at: CREATED, status: 'succeeded' },
            { id: 'text-embedding-3-small', object: 'model', created_at: CREATED, status: 'succeeded' },
          ],
        },
        extra,
      );
    }
    if (op.startsWith('models/')) {
      return sendJson(200, { id: safeDecode(op.slice('models/'.length)), object: 'model', created_at: CREATED }, extra);
    }
    if (op === 'fine_tuning/jobs' && method === 'POST') {
      return sendJson(200, { id: 'ftjob-mock1', object: 'fine_tuning.job', model, status: 'pending' }, extra);
    }
    return sendJson(200, { object: 'mock', path }, extra);
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = server.address().port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  const mock = {
    port,
    url: `${opts.tls ? 'https' : 'http'}://${urlHost}:${port}`,
    server,
    requests,
    defaults: { ...(opts.defaults ?? {}) },

    /** Forget recorded requests, released gates and retry-after-ms attempt counts. */
    clear() {
      requests.length = 0;
      retryAttempts.clear();
      releasedTags.clear();
      gatedTags.clear();
    },

    /** First recorded request (past or future) matching pred. */
    waitForRequest(pred = () => true, timeoutMs = 5000) {
      const found = requests.find(pred);
      if (found) return Promise.resolve(found);
      return withTimeout(
        (resolve) => {
          const on = (r) => {
            if (pred(r)) {
              emitter.off('request', on);
              resolve(r);
            }
          };
          emitter.on('request', on);
          return () => emitter.off('request', on);
        },
        timeoutMs,
        'waitForRequest',
      );
    },

    /** Resolves when the client closed `req`'s connection before the mock finished answering it. */
    waitAborted(req, timeoutMs = 5000) {
      if (req.aborted) return Promise.resolve(req);
      return withTimeout(
        (resolve) => {
          const on = (r) => {
            if (r === req) {
              emitter.off('aborted', on);
              resolve(r);
            }
          };
          emitter.on('aborted', on);
          return () => emitter.off('aborted', on);
        },
        timeoutMs,
        'waitAborted',
      );
    },

    /** Let gated streams with this tag go on. Stays released (later streams pass) until clear(). */
    release(tag = 'gate') {
      releasedTags.add(tag);
      emitter.emit('release', tag);
    },

    /** Resolves when a gated stream with this tag has sent its first event (past or future). */
    waitGated(tag = 'gate', timeoutMs = 5000) {
      if (gatedTags.has(tag)) return Promise.resolve();
      return withTimeout(
        (resolve) => {
          const on = (t) => {
            if (t === tag) {
              emitter.off('gated', on);
              resolve();
            }
          };
          emitter.on('gated', on);
          return () => emitter.off('gated', on);
        },
        timeoutMs,
        'waitGated',
      );
    },

    /** Destroy every connection and stop listening. */
    async close() {
      if (closed) return;
      closed = true;
      emitter.emit('release', null); // unblock gated handlers so they can finish
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return mock;
}

function withTimeout(setup, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    let cleanup = () => {};
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`mock_upstream: ${what} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    cleanup = setup((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

function azureErrorBody(status) {
  // §4.3 shapes: code is a string, often the numeric status; no type/param.
  const messages = {
    400: 'Bad request.',
    401: 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.',
    404: 'Resource not found',
    500: 'The server had an error while processing your request. Sorry about that!',
    503: 'The service is temporarily unable to process your request. Please try again later.',
  };
  if (status === 404) return { error: { code: 'DeploymentNotFound', message: 'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.' } };
  return { error: { code: String(status), message: messages[status] ?? `Mock upstream error ${status}.` } };
}

function chatCompletion(n, pad = 0, content = 'Hello world') {
  return {
    choices: [
      {
        content_filter_results: CHOICE_FILTER_RESULTS,
        finish_reason: 'stop',
        index: 0,
        logprobs: null,
        message: { content: content + 'x'.repeat(pad), refusal: null, role: 'assistant' },
      },
    ],
    created: CREATED,
    id: `chatcmpl-mock${n}`,
    model: UPSTREAM_MODEL,
    object: 'chat.completion',
    prompt_filter_results: PROMPT_FILTER_RESULTS,
    system_fingerprint: 'fp_mock',
    usage: USAGE,
  };
}

/** Default Azure chat stream (§3.3 + trailing §3.5 annotation + optional §8 usage chunk). */
function chatStreamEvents(n, includeUsage, text = undefined, trailingAnnotation = true) {
  const id = `chatcmpl-mock${n}`;
  const chunk = (choices, more = {}) =>
    JSON.stringify({
      choices,
      created: CREATED,
      id,
      model: UPSTREAM_MODEL,
      object: 'chat.completion.chunk',
      system_fingerprint: null,
      ...more,
    });
  const content = (text) =>
    chunk([{ content_filter_results: SAFE4, delta: { content: text }, finish_reason: null, index: 0, logprobs: null }]);
  const events = [
    STREAM_FIRST_EVENT,
    chunk([{ content_filter_results: {}, delta: { content: '', role: 'assistant' }, finish_reason: null, index: 0, logprobs: null }]),
    // The answer in two pieces: "Hello", " world" by default, else `text` cut in the middle.
    ...(text === undefined ? ['Hello', ' world'] : [text.slice(0, text.length >> 1), text.slice(text.length >> 1)]).map(content),
    chunk([{ content_filter_results: {}, delta: {}, finish_reason: 'stop', index: 0, logprobs: null }]),
  ];
  // Trailing annotation chunk after the finish chunk: no `delta`, empty id/model (§3.5).
  if (trailingAnnotation) {
    events.push(JSON.stringify({
      id: '',
      object: '',
      created: 0,
      model: '',
      choices: [
        {
          index: 0,
          finish_reason: null,
          content_filter_results: SAFE4,
          content_filter_offsets: { check_offset: 11, start_offset: 0, end_offset: 11 },
        },
      ],
      usage: null,
    }));
  }
  if (includeUsage) events.push(chunk([], { usage: USAGE }));
  events.push('[DONE]');
  return events.map((e) => `data: ${e}\n\n`);
}

/**
 * A value that satisfies a (simple) JSON schema, deterministically: objects get every property in
 * order, arrays one item, strings their first enum value or "mock", integers 42, numbers 1.5,
 * booleans true; anyOf/oneOf/allOf take the first branch.
 */
export function sampleFromSchema(schema) {
  if (!schema || typeof schema !== 'object') return null;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if ('const' in schema) return schema.const;
  for (const k of ['anyOf', 'oneOf', 'allOf']) if (Array.isArray(schema[k]) && schema[k].length) return sampleFromSchema(schema[k][0]);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') ?? 'null' : schema.type;
  switch (type ?? (schema.properties ? 'object' : undefined)) {
    case 'object':
      return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, v]) => [k, sampleFromSchema(v)]));
    case 'array':
      return [sampleFromSchema(schema.items)];
    case 'string':
      return 'mock';
    case 'integer':
      return 42;
    case 'number':
      return 1.5;
    case 'boolean':
      return true;
    default:
      return null;
  }
}

/** Scenario per-input-embeddings: the vector for input i (exact in float32, so base64 round-trips). */
export function embeddingVector(i) {
  return [i + 0.5, -0.25 * (i + 1), 0.125, 2 ** -(i + 3)];
}

/** Scenario tool-call: a call of the first function tool in `tools`, or null when there is none. */
function mockToolCall(tools) {
  const tool = Array.isArray(tools) ? tools.find((t) => t?.type === 'function' && t.function?.name) : undefined;
  if (!tool) return null;
  return {
    id: 'call_mock1',
    type: 'function',
    function: { name: tool.function.name, arguments: JSON.stringify(sampleFromSchema(tool.function.parameters)) },
  };
}

function toolCallCompletion(n, toolCall) {
  const c = chatCompletion(n);
  c.choices[0].finish_reason = 'tool_calls';
  c.choices[0].message = { content: null, refusal: null, role: 'assistant', tool_calls: [toolCall] };
  return c;
}

/** A chat stream whose answer is the tool call (arguments in two pieces), finish_reason tool_calls. */
function toolCallStreamEvents(n, toolCall, includeUsage) {
  const chunk = (choices, more = {}) =>
    JSON.stringify({
      choices,
      created: CREATED,
      id: `chatcmpl-mock${n}`,
      model: UPSTREAM_MODEL,
      object: 'chat.completion.chunk',
      system_fingerprint: null,
      ...more,
    });
  const delta = (d, finish = null) => chunk([{ content_filter_results: {}, delta: d, finish_reason: finish, index: 0, logprobs: null }]);
  const args = toolCall.function.arguments;
  const cut = args.length >> 1;
  const events = [
    STREAM_FIRST_EVENT,
    delta({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: toolCall.id, type: 'function', function: { name: toolCall.function.name, arguments: '' } }] }),
    delta({ tool_calls: [{ index: 0, function: { arguments: args.slice(0, cut) } }] }),
    delta({ tool_calls: [{ index: 0, function: { arguments: args.slice(cut) } }] }),
    delta({}, 'tool_calls'),
  ];
  if (includeUsage) events.push(chunk([], { usage: USAGE }));
  events.push('[DONE]');
  return events.map((e) => `data: ${e}\n\n`);
}

function textCompletion(n) {
  return {
    choices: [
      { content_filter_results: SAFE4, finish_reason: 'stop', index: 0, logprobs: null, text: 'Hello world' },
    ],
    created: CREATED,
    id: `cmpl-mock${n}`,
    model: UPSTREAM_MODEL,
    object: 'text_completion',
    prompt_filter_results: [{ prompt_index: 0, content_filter_results: SAFE4 }],
    usage: USAGE,
  };
}

/** Completions stream; with include_usage a final `choices: []` chunk carries the usage (as OpenAI sends it). */
function completionStreamEvents(n, includeUsage) {
  const base = { created: CREATED, id: `cmpl-mock${n}`, model: UPSTREAM_MODEL, object: 'text_completion' };
  const c = (text, finish) =>
    JSON.stringify({
      choices: [{ content_filter_results: SAFE4, finish_reason: finish, index: 0, logprobs: null, text }],
      ...base,
    });
  const events = [c('Hello', null), c(' world', null), c('', 'stop')];
  if (includeUsage) events.push(JSON.stringify({ choices: [], ...base, usage: USAGE }));
  events.push('[DONE]');
  return events.map((e) => `data: ${e}\n\n`);
}

function responseObject(id, model, status) {
  return {
    id,
    object: 'response',
    created_at: CREATED,
    status,
    model,
    output:
      status === 'completed'
        ? [
            {
              id: 'msg_mock1',
              type: 'message',
              status: 'completed',
              role: 'assistant',
              content: [{ type: 'output_text', text: 'Hello world', annotations: [] }],
            },
          ]
        : [],
    usage: status === 'completed' ? { input_tokens: 11, output_tokens: 7, total_tokens: 18 } : null,
  };
}

function responsesStreamEvents(n, model) {
  const id = `resp_mock${n}`;
  let seq = 0;
  const ev = (type, payload) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...payload })}\n\n`;
  const item = { id: 'msg_mock1', type: 'message', status: 'in_progress', role: 'assistant', content: [] };
  return [
    ev('response.created', { response: responseObject(id, model, 'in_progress') }),
    ev('response.in_progress', { response: responseObject(id, model, 'in_progress') }),
    ev('response.output_item.added', { output_index: 0, item }),
    ev('response.content_part.added', { item_id: 'msg_mock1', output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }),
    ev('response.output_text.delta', { item_id: 'msg_mock1', output_index: 0, content_index: 0, delta: 'Hello' }),
    ev('response.output_text.delta', { item_id: 'msg_mock1', output_index: 0, content_index: 0, delta: ' world' }),
    ev('response.output_text.done', { item_id: 'msg_mock1', output_index: 0, content_index: 0, text: 'Hello world' }),
    ev('response.completed', { response: responseObject(id, model, 'completed') }),
  ];
}

function fileObject(id, purpose) {
  return { id, object: 'file', bytes: 42, created_at: CREATED, filename: 'mock.jsonl', purpose, status: 'processed' };
}

function batchObject(id, json) {
  return {
    id,
    object: 'batch',
    endpoint: json?.endpoint ?? '/chat/completions',
    input_file_id: json?.input_file_id ?? 'file-mock1',
    completion_window: json?.completion_window ?? '24h',
    status: 'validating',
    created_at: CREATED,
  };
}

// ---------------------------------------------------------------------------------------------
// Standalone mode.

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const key = a.slice(2);
    const val = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : 'true';
    out[key] = val;
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  const tls =
    args['tls-key'] && args['tls-cert']
      ? { key: fs.readFileSync(args['tls-key'], 'utf8'), cert: fs.readFileSync(args['tls-cert'], 'utf8') }
      : undefined;
  const mock = await startMock({ port: Number(args.port ?? 0), host: args.host ?? '127.0.0.1', tls });
  process.stdout.write(`listening ${mock.port}\n`);
  const stop = () => mock.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
