// Helpers for the llm-gateway integration tests: start the gateway binary with a YAML config,
// plain HTTP requests (whole-body and streaming), SSE parsing, multipart building, a test CA.
// Node built-ins only; runs on Node 18.19+.

import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The binary under test: always named explicitly (scripts/test.sh sets it), never a guess. */
export function gatewayBin() {
  const bin = process.env.LLM_GATEWAY_BIN;
  if (!bin) {
    throw new Error('LLM_GATEWAY_BIN must name the llm-gateway binary to test ' +
      '(scripts/test.sh sets it to the build it just made), e.g. LLM_GATEWAY_BIN=$PWD/build-test/llm-gateway');
  }
  return bin;
}

// Every gateway we spawn, so that none outlives the test process even if a test forgets stop().
const liveProcs = new Set();
process.on('exit', () => {
  for (const p of liveProcs) {
    try {
      p.kill('SIGKILL');
    } catch {}
  }
});

const tmpDirs = [];
process.on('exit', () => {
  for (const d of tmpDirs) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {}
  }
});

/** A fresh temp directory, removed when the test process exits. */
export function tmpDir(prefix = 'llmgw-test-') {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

/** Write text to a new temp file and return its path. */
export function writeTemp(name, text) {
  const file = path.join(tmpDir(), name);
  fs.writeFileSync(file, text);
  return file;
}

/** Split a stream into lines, calling onLine for each complete one. */
function lineSplitter(onLine) {
  let buf = '';
  return (chunk) => {
    buf += chunk.toString('utf8');
    let i;
    while ((i = buf.indexOf('\n')) !== -1) {
      onLine(buf.slice(0, i).replace(/\r$/, ''));
      buf = buf.slice(i + 1);
    }
  };
}

function tryJson(line) {
  if (!line.startsWith('{')) return null;
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}

/**
 * Start the gateway with this YAML config.
 * Waits for the JSON `{"msg":"ready"}` line on stderr; reads the listener ports from the
 * `{"msg":"listening","listener":"main"|"admin","address":"127.0.0.1:PORT"}` lines.
 *
 * @param {string} yamlText
 * @param {{env?: Record<string,string|undefined>, args?: string[], t?: import('node:test').TestContext, readyTimeoutMs?: number}} options
 *   env: merged over process.env (a value of undefined removes the variable);
 *   t: if given, the gateway is stopped when that test (or suite hook context) ends.
 * @returns {Promise<{url: string, adminUrl: string|null, port: number, adminPort: number|null,
 *   proc: import('node:child_process').ChildProcess, stdout: string[], stderr: string[],
 *   logs: object[], configFile: string, exited: Promise<{code: number|null, signal: string|null}>,
 *   stop: (signal?: string) => Promise<{code: number|null, signal: string|null}>,
 *   waitForLog: (pred: (o: object) => boolean, timeoutMs?: number) => Promise<object>}>}
 */
export async function startGateway(yamlText, { env = {}, args = [], t, readyTimeoutMs = 15_000 } = {}) {
  const configFile = writeTemp('gateway.yaml', yamlText);
  const childEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  const proc = spawn(gatewayBin(), ['--config', configFile, ...args], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveProcs.add(proc);

  const stdout = [];
  const stderr = [];
  const logs = []; // parsed JSON lines from stderr
  const logWaiters = new Set();
  const listeners = {};

  // 'close' (not 'exit'): by then stdout/stderr are drained, so error reports are complete.
  const exited = new Promise((resolve) => {
    proc.once('close', (code, signal) => {
      liveProcs.delete(proc);
      resolve({ code, signal });
    });
  });

  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`gateway not ready after ${readyTimeoutMs} ms; stderr:\n${stderr.join('\n')}`));
    }, readyTimeoutMs);
    proc.once('error', (err) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      reject(new Error(`cannot start ${gatewayBin()}: ${err.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited before ready (code ${code}, signal ${signal}); stderr:\n${stderr.join('\n')}`));
    });
    proc.stdout.on('data', lineSplitter((l) => stdout.push(l)));
    proc.stderr.on(
      'data',
      lineSplitter((line) => {
        stderr.push(line);
        const o = tryJson(line);
        if (!o) return;
        logs.push(o);
        for (const w of logWaiters) w(o);
        if (o.msg === 'listening' && o.listener && o.address) listeners[o.listener] = o.address;
        if (o.msg === 'ready') {
          clearTimeout(timer);
          resolve();
        }
      }),
    );
  });
  // Never leave an unhandled rejection behind if `ready` settles late.
  ready.catch(() => {});

  await ready;
  if (!listeners.main) throw new Error(`gateway printed no "listening" line for main; stderr:\n${stderr.join('\n')}`);
  const portOf = (addr) => Number(addr.slice(addr.lastIndexOf(':') + 1));

  const gw = {
    port: portOf(listeners.main),
    adminPort: listeners.admin ? portOf(listeners.admin) : null,
    url: `http://127.0.0.1:${portOf(listeners.main)}`,
    adminUrl: listeners.admin ? `http://127.0.0.1:${portOf(listeners.admin)}` : null,
    proc,
    stdout,
    stderr,
    logs,
    configFile,
    exited,
    /** Stops the gateway and fails when it reported anything to a sanitizer (suite-level gateways too). */
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const result = await exited;
      if (signal !== 'SIGKILL') assertNoSanitizerReport(stderr);
      return result;
    },
    /** First stderr JSON log line (past or future) matching pred. */
    waitForLog(pred, timeoutMs = 5000) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = (o) => {
          if (pred(o)) {
            logWaiters.delete(w);
            clearTimeout(timer);
            resolve(o);
          }
        };
        const timer = setTimeout(() => {
          logWaiters.delete(w);
          reject(new Error(`no matching gateway log line within ${timeoutMs} ms`));
        }, timeoutMs);
        logWaiters.add(w);
      });
    },
  };
  if (t) {
    t.after(async () => {
      // Stop gracefully so that a sanitizer build reports leaks at exit; a request left hanging
      // by the test would hold the drain, so SIGKILL follows after a second.
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const killer = setTimeout(() => proc.kill('SIGKILL'), 1000);
        await exited;
        clearTimeout(killer);
      }
      assertNoSanitizerReport(stderr);
    });
  }
  return gw;
}

/** Fails when a sanitizer (ASan, LSan, UBSan, TSan) reported anything in the gateway's stderr. */
export function assertNoSanitizerReport(stderrLines) {
  const text = stderrLines.join('\n');
  if (/ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:|SUMMARY: \w+Sanitizer/.test(text)) {
    throw new Error(`sanitizer report in the gateway's stderr:\n${text.slice(0, 20000)}`);
  }
}

/**
 * Run the gateway binary to completion (for CLI flags like --check-config, --version).
 * @returns {Promise<{code: number|null, signal: string|null, stdout: string, stderr: string}>}
 */
export function runGateway(args, { env = {}, timeoutMs = 10_000 } = {}) {
  const childEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(gatewayBin(), args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    liveProcs.add(proc);
    const out = [];
    const err = [];
    proc.stdout.on('data', (c) => out.push(c));
    proc.stderr.on('data', (c) => err.push(c));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${gatewayBin()} ${args.join(' ')} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    proc.once('error', (e) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      reject(e);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP client helpers

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Buffer.isBuffer(v) && !(v instanceof Uint8Array);
}

function prepare(url, { method, headers = {}, body, agent, chunked = false, ca } = {}) {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  const hdrs = { ...headers };
  let payload = body;
  if (isPlainObject(body)) {
    payload = Buffer.from(JSON.stringify(body));
    if (!Object.keys(hdrs).some((k) => k.toLowerCase() === 'content-type')) hdrs['content-type'] = 'application/json';
  } else if (typeof body === 'string') payload = Buffer.from(body);
  if (chunked) hdrs['transfer-encoding'] = 'chunked';
  const ownAgent = agent ? null : new mod.Agent({ keepAlive: false });
  const opts = {
    method: method || (payload !== undefined ? 'POST' : 'GET'),
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port,
    path: u.pathname + u.search,
    headers: hdrs,
    agent: agent || ownAgent,
  };
  if (ca) opts.ca = ca;
  return { mod, opts, payload, ownAgent, chunked };
}

function sendBody(req, payload, chunked) {
  if (payload === undefined) return req.end();
  if (chunked) {
    // Several writes, no content-length: the body goes out with chunked transfer encoding.
    const step = 64 * 1024;
    for (let i = 0; i < payload.length; i += step) req.write(payload.subarray(i, i + step));
    return req.end();
  }
  req.end(payload); // a single end(data) makes node send content-length
}

/**
 * One request, whole response buffered.
 * @param {string} url
 * @param {{method?: string, headers?: object, body?: Buffer|string|object, agent?: http.Agent,
 *   chunked?: boolean, timeoutMs?: number, ca?: string}} options
 *   body: an object is sent as JSON; chunked: send without content-length.
 * @returns {Promise<{status: number, headers: object, rawHeaders: string[], body: Buffer, text: string,
 *   json: any, localPort: number}>}
 */
export function request(url, options = {}) {
  const { mod, opts, payload, ownAgent, chunked } = prepare(url, options);
  const timeoutMs = options.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    let responded = false;
    const req = mod.request(opts, (res) => {
      responded = true;
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        ownAgent?.destroy();
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        let json = null;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({
          status: res.statusCode,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body,
          text,
          json,
          localPort: req.socket?.localPort,
        });
      });
      res.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`request ${opts.method} ${url} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => {
      // A server that answers early (413) may reset the upload afterwards: keep the answer.
      if (responded) return;
      clearTimeout(timer);
      ownAgent?.destroy();
      reject(e);
    });
    sendBody(req, payload, chunked);
  });
}

/**
 * A request whose response is consumed as it arrives.
 * @returns {{
 *   response: Promise<{status: number, headers: object}>,  // rejects if the request fails before headers
 *   body(): Buffer, text(): string,                        // what has arrived so far
 *   waitFor(pred: (text: string) => boolean, timeoutMs?: number): Promise<string>,
 *   onData(cb: (chunk: Buffer) => void): void,
 *   [Symbol.asyncIterator](): AsyncIterator<Buffer>,       // chunks as they arrive (from the start)
 *   abort(): void,                                         // destroy the client connection
 *   done: Promise<{complete: boolean, body: Buffer, error: Error|null}>  // never rejects
 * }}
 */
export function streamRequest(url, options = {}) {
  const { mod, opts, payload, ownAgent, chunked } = prepare(url, options);
  const chunks = [];
  const dataWaiters = new Set();
  let finished = false;
  let resolveResponse;
  let rejectResponse;
  const response = new Promise((res, rej) => {
    resolveResponse = res;
    rejectResponse = rej;
  });
  response.catch(() => {});
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const finish = (complete, error) => {
    if (finished) return;
    finished = true;
    ownAgent?.destroy();
    resolveDone({ complete, body: Buffer.concat(chunks), error: error || null });
    for (const w of dataWaiters) w();
  };

  const req = mod.request(opts, (res) => {
    resolveResponse({ status: res.statusCode, headers: res.headers });
    res.on('data', (c) => {
      chunks.push(c);
      for (const w of dataWaiters) w(c);
    });
    res.on('end', () => finish(true));
    res.on('aborted', () => finish(false, new Error('response aborted')));
    res.on('error', (e) => finish(false, e));
    res.on('close', () => finish(res.complete));
  });
  req.on('error', (e) => {
    rejectResponse(e);
    finish(false, e);
  });
  sendBody(req, payload, chunked);

  const text = () => Buffer.concat(chunks).toString('utf8');
  return {
    response,
    done,
    body: () => Buffer.concat(chunks),
    text,
    abort() {
      req.destroy();
      finish(false, new Error('aborted by test'));
    },
    onData(cb) {
      dataWaiters.add((c) => c && cb(c));
    },
    waitFor(pred, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const t = text();
          if (pred(t)) {
            cleanup();
            resolve(t);
            return true;
          }
          if (finished) {
            cleanup();
            reject(new Error(`stream ended before the expected data arrived; got:\n${t}`));
            return true;
          }
          return false;
        };
        const w = () => check();
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`expected stream data did not arrive within ${timeoutMs} ms; got:\n${text()}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          dataWaiters.delete(w);
        };
        if (!check()) dataWaiters.add(w);
      });
    },
    async *[Symbol.asyncIterator]() {
      let i = 0;
      for (;;) {
        if (i < chunks.length) {
          yield chunks[i++];
          continue;
        }
        if (finished) return;
        await new Promise((r) => {
          const w = () => {
            dataWaiters.delete(w);
            r();
          };
          dataWaiters.add(w);
        });
      }
    },
  };
}

/**
 * A request sent all but its last body byte ahead of time, on a connection of its own: fire()
 * sends that byte, so the server can act on it at once (no connect, no header round trip).
 * For "the very next request after X" checks.
 * @returns {{connected: Promise<void>, fire(): Promise<{status: number, headers: object, body: Buffer, text: string, json: any}>}}
 */
export function armedRequest(url, { headers = {}, body, timeoutMs = 15_000 } = {}) {
  const u = new URL(url);
  const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const agent = new http.Agent({ keepAlive: false });
  const req = http.request({
    method: 'POST',
    host: u.hostname,
    port: u.port,
    path: u.pathname + u.search,
    headers: { 'content-type': 'application/json', 'content-length': String(payload.length), ...headers },
    agent,
  });
  const connected = new Promise((resolve, reject) => {
    req.once('socket', (s) => {
      s.setNoDelay(true);
      if (s.connecting) s.once('connect', resolve);
      else resolve();
    });
    req.once('error', reject);
  });
  connected.catch(() => {});
  const response = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        agent.destroy();
        const b = Buffer.concat(chunks);
        let json = null;
        try {
          json = JSON.parse(b.toString('utf8'));
        } catch {}
        resolve({ status: res.statusCode, headers: res.headers, body: b, text: b.toString('utf8'), json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  response.catch(() => {});
  req.write(payload.subarray(0, payload.length - 1));
  return {
    connected,
    fire() {
      const timer = setTimeout(() => req.destroy(new Error(`armed request timed out after ${timeoutMs} ms`)), timeoutMs);
      req.end(payload.subarray(payload.length - 1));
      return response.finally(() => clearTimeout(timer));
    },
  };
}

/** Resolve when a TCP connect to host:port is refused (true) or accepted (false). */
export function tcpConnectRefused(port, host = '127.0.0.1', timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} neither succeeded nor failed in ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(false);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      if (e.code === 'ECONNREFUSED') resolve(true);
      else reject(e);
    });
  });
}

/**
 * A loopback port nothing listens on. Taken below the kernel's ephemeral range: a port the kernel
 * handed out (listen(0)) and this function released could be handed to the next listen(0) of a
 * test file running in parallel, and then "the dead upstream" answers (seen once in a TSan run:
 * a 401 from another suite's mock instead of a 502).
 */
export async function closedPort() {
  let low = 32768;
  try {
    low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {}
  const first = Math.max(1024, low - 12000);
  for (let tries = 0; tries < 100; tries++) {
    const port = first + crypto.randomInt(Math.max(1, low - first));
    const srv = net.createServer();
    const bound = await new Promise((r) => {
      srv.once('error', () => r(false));
      srv.listen(port, '127.0.0.1', () => r(true));
    });
    if (!bound) continue;
    await new Promise((r) => srv.close(r));
    return port;
  }
  throw new Error('no free port below the ephemeral range');
}

/**
 * Re-check an asynchronous condition until it holds. For conditions that no event announces
 * (e.g. "the gateway has begun draining after SIGTERM"); bounded by timeoutMs.
 */
export async function eventually(fn, { timeoutMs = 5000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// ---------------------------------------------------------------------------------------------
// Payload helpers

let idCounter = 0;
/** A unique id, used as x-test-id so each test finds its own request at the mock. */
/** The lines that parse as JSON objects (access-log lines among other output). */
export function jsonLines(lines) {
  const out = [];
  for (const l of lines) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l));
    } catch {}
  }
  return out;
}

/** The value of one metric series in the Prometheus text of gw's /metrics, or undefined. */
export async function metricValue(gw, name, labels = {}) {
  const res = await request(`${gw.url}/metrics`);
  assert.equal(res.status, 200);
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of res.text.split('\n')) {
    if (want.length === 0 && line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const have = inner ? inner.split(',') : [];
    if (have.length === want.length && want.every((w) => have.includes(w))) return Number(line.slice(line.indexOf('}') + 1));
  }
  return undefined;
}

export function uid(prefix = 't') {
  return `${prefix}-${process.pid}-${++idCounter}-${crypto.randomBytes(3).toString('hex')}`;
}

/** Parse an SSE body into events: [{event?: string, data: string}] (data lines joined by \n). */
export function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (!block.trim()) continue;
    const ev = { data: '' };
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      else if (line.startsWith('event:')) ev.event = line.slice(6).trim();
    }
    ev.data = data.join('\n');
    events.push(ev);
  }
  return events;
}

/**
 * Build a multipart/form-data body.
 * @param {Array<{name: string, value: string} | {name: string, filename: string, contentType?: string, data: Buffer|string}>} parts
 * @returns {{body: Buffer, contentType: string}}
 */
export function multipartBody(parts) {
  const boundary = '----llmgwtest' + crypto.randomBytes(8).toString('hex');
  const bufs = [];
  for (const p of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"\r\nContent-Type: ${p.contentType || 'application/octet-stream'}`;
    head += '\r\n\r\n';
    bufs.push(Buffer.from(head), Buffer.from(p.filename !== undefined ? p.data : p.value), Buffer.from('\r\n'));
  }
  bufs.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(bufs), contentType: `multipart/form-data; boundary=${boundary}` };
}

// ---------------------------------------------------------------------------------------------
// Test PKI

/**
 * Create, with the openssl CLI:
 *   ca            trusted test CA
 *   server        cert signed by ca, SAN IP:127.0.0.1, DNS:localhost
 *   wrongName     cert signed by ca, SAN DNS:wrong.example only
 *   untrustedCA   another CA
 *   untrustedServer  cert signed by untrustedCA, SAN IP:127.0.0.1, DNS:localhost
 * Each entry: {certPath, keyPath, cert, key} (PEM strings).
 */
export function makeCA(dir = tmpDir('llmgw-pki-')) {
  fs.mkdirSync(dir, { recursive: true });
  const p = (f) => path.join(dir, f);
  const ossl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const newKey = (name) => ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p(`${name}.key`));

  const makeRoot = (name, cn) => {
    newKey(name);
    ossl('req', '-x509', '-new', '-key', p(`${name}.key`), '-out', p(`${name}.pem`), '-days', '7', '-subj', `/CN=${cn}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  };
  const makeLeaf = (name, caName, cn, san, usage = 'serverAuth') => {
    newKey(name);
    ossl('req', '-new', '-key', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`);
    fs.writeFileSync(
      p(`${name}.ext`),
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=${usage}\nsubjectAltName=${san}\n`,
    );
    ossl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${caName}.pem`), '-CAkey', p(`${caName}.key`),
      '-set_serial', '0x' + crypto.randomBytes(8).toString('hex'), '-days', '7', '-out', p(`${name}.pem`), '-extfile', p(`${name}.ext`));
  };
  const entry = (name) => ({
    certPath: p(`${name}.pem`),
    keyPath: p(`${name}.key`),
    cert: fs.readFileSync(p(`${name}.pem`), 'utf8'),
    key: fs.readFileSync(p(`${name}.key`), 'utf8'),
  });

  makeRoot('ca', 'llm-gateway test CA');
  makeLeaf('server', 'ca', 'localhost', 'IP:127.0.0.1,DNS:localhost');
  makeLeaf('wrongname', 'ca', 'wrong.example', 'DNS:wrong.example');
  makeRoot('untrusted-ca', 'llm-gateway untrusted CA');
  makeLeaf('untrusted-server', 'untrusted-ca', 'localhost', 'IP:127.0.0.1,DNS:localhost');
  makeLeaf('client', 'ca', 'llm-gateway client', 'DNS:client.llm-gateway.test', 'clientAuth');
  makeLeaf('client2', 'ca', 'llm-gateway second client', 'DNS:client2.llm-gateway.test', 'clientAuth');
  makeLeaf('untrusted-client', 'untrusted-ca', 'llm-gateway stranger', 'DNS:stranger.llm-gateway.test', 'clientAuth');

  return {
    dir,
    ca: entry('ca'),
    server: entry('server'),
    wrongName: entry('wrongname'),
    untrustedCA: entry('untrusted-ca'),
    untrustedServer: entry('untrusted-server'),
    client: entry('client'),
    client2: entry('client2'),
    untrustedClient: entry('untrusted-client'),
    /** Makes another leaf signed by the test CA (e.g. a renewed server certificate). */
    leaf(name, cn, san, usage = 'serverAuth') {
      makeLeaf(name, 'ca', cn, san, usage);
      return entry(name);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Assertions shared by the suites (kept here so every file checks the same contract).

/** Assert a gateway-made error: status, JSON shape, code, and x-gateway-request-id. */
export function assertGatewayError(res, status, code, { type, param } = {}) {
  assert.equal(res.status, status, `status; body: ${res.text}`);
  assert.match(String(res.headers['content-type']), /application\/json/, 'error content-type');
  assert.ok(res.json && typeof res.json.error === 'object', `error body is JSON with "error": ${res.text}`);
  const e = res.json.error;
  assert.equal(typeof e.message, 'string', 'error.message is a string');
  assert.ok(e.message.length > 0, 'error.message is not empty');
  assert.equal(typeof e.type, 'string', 'error.type is a string');
  assert.ok(e.param === null || typeof e.param === 'string', 'error.param is string|null');
  assert.ok('param' in e, 'error.param present');
  assert.equal(e.code, code, `error.code; body: ${res.text}`);
  if (type !== undefined) assert.equal(e.type, type, 'error.type');
  if (param !== undefined) assert.equal(e.param, param, 'error.param');
  assert.ok(res.headers['x-gateway-request-id'], 'x-gateway-request-id on gateway errors');
}

/** Upstream response headers that must reach the client unchanged. */
export const RELAYED_HEADERS = [
  'apim-request-id',
  'x-request-id',
  'x-ms-region',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-limit-requests',
  'retry-after',
  'retry-after-ms',
  'content-type',
];

/** Assert the client saw exactly what the mock sent for `rec`: status, relayed headers, body bytes. */
export function assertRelayed(res, rec) {
  assert.equal(res.status, rec.responseStatus, 'status relayed');
  for (const h of RELAYED_HEADERS) {
    const sent = rec.responseHeaders[h];
    if (sent === undefined) continue;
    assert.equal(res.headers[h], String(sent), `header ${h} relayed unchanged`);
  }
  assert.ok(
    res.body.equals(rec.responseBody),
    `body relayed byte for byte (client ${res.body.length} bytes, mock sent ${rec.responseBody.length})\n` +
      `client: ${res.body.subarray(0, 400).toString()}\nmock:   ${rec.responseBody.subarray(0, 400).toString()}`,
  );
  assert.ok(res.headers['x-gateway-request-id'], 'x-gateway-request-id present');
}

// ---------------------------------------------------------------------------------------------
// Stream usage chunks. On chat/completions and completions streams whose client did not ask for
// usage, the gateway asks the upstream for it (stream_options.include_usage: true) and removes the
// usage chunk from what the client receives; every other byte is relayed unchanged.

/**
 * Split raw SSE bytes into events, keeping exact byte ranges: each entry covers the event and the
 * blank line that ends it ("\n\n" or "\r\n\r\n"); a trailing unterminated piece is its own entry.
 * @returns {{start: number, end: number, data: string}[]}  data: the event's data lines, joined by \n
 */
export function sseEventRanges(buf) {
  const text = Buffer.from(buf).toString('latin1'); // one char per byte: offsets are byte offsets
  const out = [];
  let pos = 0;
  while (pos < text.length) {
    const lf = text.indexOf('\n\n', pos);
    const crlf = text.indexOf('\r\n\r\n', pos);
    let end;
    let sepEnd;
    if (lf === -1 && crlf === -1) {
      end = text.length;
      sepEnd = text.length;
    } else if (crlf !== -1 && (lf === -1 || crlf < lf)) {
      end = crlf;
      sepEnd = crlf + 4;
    } else {
      end = lf;
      sepEnd = lf + 2;
    }
    const event = Buffer.from(text.slice(pos, end), 'latin1').toString('utf8');
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''))
      .join('\n');
    out.push({ start: pos, end: sepEnd, data });
    pos = sepEnd;
  }
  return out;
}

/** True for an SSE data payload that is a usage chunk: JSON with `choices: []` and a non-null usage object. */
export function isUsageChunk(data) {
  let o;
  try {
    o = JSON.parse(data);
  } catch {
    return false;
  }
  return (
    o !== null && typeof o === 'object' && Array.isArray(o.choices) && o.choices.length === 0 &&
    o.usage !== null && typeof o.usage === 'object' && !Array.isArray(o.usage)
  );
}

/**
 * `buf` minus its usage chunk: the one SSE event whose JSON has `choices: []` and a non-null
 * `usage` object, with the blank line that ends it. Throws unless there is exactly one such event.
 * @returns {Buffer}
 */
export function withoutUsageChunk(buf) {
  const b = Buffer.from(buf);
  const usage = sseEventRanges(b).filter((e) => isUsageChunk(e.data));
  if (usage.length !== 1) {
    throw new assert.AssertionError({
      message: `expected exactly one usage chunk in the stream, found ${usage.length}:\n${b.toString('utf8')}`,
    });
  }
  const [{ start, end }] = usage;
  return Buffer.concat([b.subarray(0, start), b.subarray(end)]);
}

/** Number of usage chunks (see isUsageChunk) in an SSE body. */
export function countUsageChunks(buf) {
  return sseEventRanges(buf).filter((e) => isUsageChunk(e.data)).length;
}

/**
 * Assert a stream the gateway asked usage for on the client's behalf: the upstream got
 * stream_options.include_usage === true, and `clientBody` is the upstream's bytes minus exactly
 * the usage chunk.
 */
export function assertUsageStripped(clientBody, rec) {
  assert.equal(rec.json?.stream_options?.include_usage, true, `the gateway asks the upstream for usage; upstream body: ${rec.body}`);
  const expected = withoutUsageChunk(rec.responseBody);
  assert.ok(
    Buffer.from(clientBody).equals(expected),
    `client bytes = upstream bytes minus the usage chunk (client ${clientBody.length} bytes, expected ${expected.length})\n` +
      `client:   ${Buffer.from(clientBody).toString()}\nexpected: ${expected.toString()}`,
  );
  assert.equal(countUsageChunks(clientBody), 0, 'no usage chunk reaches the client');
}

/** assertRelayed for such a stream: status and relayed headers as sent, body minus the usage chunk. */
export function assertRelayedWithoutUsage(res, rec) {
  assert.equal(res.status, rec.responseStatus, 'status relayed');
  for (const h of RELAYED_HEADERS) {
    const sent = rec.responseHeaders[h];
    if (sent === undefined) continue;
    assert.equal(res.headers[h], String(sent), `header ${h} relayed unchanged`);
  }
  assertUsageStripped(res.body, rec);
  assert.ok(res.headers['x-gateway-request-id'], 'x-gateway-request-id present');
}

// ---------------------------------------------------------------------------------------------
// Redis (for the shared rate-limit store)

export const REDIS_SERVER_BIN = process.env.REDIS_SERVER_BIN || '/usr/bin/redis-server';

/** True when the redis-server binary is there. */
export function haveRedisServer() {
  try {
    fs.accessSync(REDIS_SERVER_BIN, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The `skip` option of a suite that needs redis-server: false, or why it is skipped. */
export const REDIS_SKIP = haveRedisServer() ? false : `${REDIS_SERVER_BIN} not found (install the redis-server package)`;

/**
 * Start redis-server on 127.0.0.1 (a free port, or `port` to restart on the same one), without
 * persistence. Resolves once it logs "Ready to accept connections".
 * Options:
 *   tls: {cert: {certPath, keyPath}, caPath} (entries of makeCA()) to listen for TLS only
 *     (tls-port; clients need no certificate); url is then rediss://
 *   bind: the addresses it listens on (default ['127.0.0.1']; all must be loopback)
 * cli(...args) runs redis-cli against it (over TLS when it has TLS; `{user, password}` as a last
 * argument to log in as an ACL user) and returns its stdout.
 * @returns {Promise<{port: number, url: string, proc: import('node:child_process').ChildProcess,
 *   output: string[], exited: Promise<{code: number|null, signal: string|null}>,
 *   cli: (...args: any[]) => string,
 *   stop: (signal?: string) => Promise<{code: number|null, signal: string|null}>}>}
 */
export async function startRedis({ port, readyTimeoutMs = 10_000, tls, bind = ['127.0.0.1'] } = {}) {
  port ??= await closedPort();
  const dir = tmpDir('llmgw-redis-');
  const listen = tls
    ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', tls.cert.certPath, '--tls-key-file', tls.cert.keyPath,
      '--tls-ca-cert-file', tls.caPath, '--tls-auth-clients', 'no']
    : ['--port', String(port)];
  const proc = spawn(
    REDIS_SERVER_BIN,
    [...listen, '--bind', ...bind, '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  liveProcs.add(proc);
  const output = [];
  const exited = new Promise((resolve) => {
    proc.once('close', (code, signal) => {
      liveProcs.delete(proc);
      resolve({ code, signal });
    });
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`redis-server not ready after ${readyTimeoutMs} ms:\n${output.join('\n')}`));
    }, readyTimeoutMs);
    proc.once('error', (e) => {
      clearTimeout(timer);
      liveProcs.delete(proc);
      reject(new Error(`cannot start ${REDIS_SERVER_BIN}: ${e.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited before ready (code ${code}, signal ${signal}):\n${output.join('\n')}`));
    });
    const onLine = (l) => {
      output.push(l);
      if (l.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout.on('data', lineSplitter(onLine));
    proc.stderr.on('data', lineSplitter(onLine));
  });
  const cli = (...args) => {
    const last = args.at(-1);
    const login = last && typeof last === 'object' ? args.pop() : null;
    const flags = ['-h', '127.0.0.1', '-p', String(port), ...(tls ? ['--tls', '--cacert', tls.caPath] : [])];
    if (login) flags.push('--user', login.user);
    // The password through the environment, not the command line (redis-cli warns about -a).
    const env = login ? { ...process.env, REDISCLI_AUTH: login.password } : process.env;
    return execFileSync('redis-cli', [...flags, '--raw', ...args.map(String)], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  };
  return {
    port,
    url: `${tls ? 'rediss' : 'redis'}://127.0.0.1:${port}/0`,
    proc,
    output,
    exited,
    cli,
    async stop(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}
