// Raw TCP clients for the fault suites: bytes exactly as written (no Node HTTP client in between,
// which would refuse to send malformed requests), and a small HTTP/1.1 response parser.
import net from 'node:net';

/**
 * Parse the HTTP/1.x responses in `buf`, one after another.
 * @param {Buffer} buf
 * @param {boolean} closed  whether the connection has ended (completes a close-delimited body)
 * @returns {{responses: {status: number, reason: string, headers: Record<string,string>, body: Buffer,
 *   complete: boolean, json: any}[], rest: Buffer}}
 */
export function parseResponses(buf, closed = false) {
  const responses = [];
  let pos = 0;
  while (pos < buf.length) {
    const end = buf.indexOf('\r\n\r\n', pos);
    if (end === -1) break;
    const head = buf.subarray(pos, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(head[0]);
    if (!m) break;
    const headers = {};
    for (const l of head.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) {
        const k = l.slice(0, i).trim().toLowerCase();
        headers[k] = headers[k] === undefined ? l.slice(i + 1).trim() : `${headers[k]}, ${l.slice(i + 1).trim()}`;
      }
    }
    const status = Number(m[1]);
    let p = end + 4;
    let body = Buffer.alloc(0);
    let complete = false;
    if ((status >= 100 && status < 200) || status === 204 || status === 304) {
      complete = true;
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le === -1) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const te = buf.indexOf('\r\n\r\n', le);
          const direct = buf.subarray(le, le + 4).toString('latin1') === '\r\n\r\n';
          if (direct) {
            p = le + 4;
            complete = true;
          } else if (te !== -1) {
            p = te + 4;
            complete = true;
          }
          break;
        }
        if (le + 2 + size + 2 > buf.length) {
          parts.push(buf.subarray(le + 2, Math.min(buf.length, le + 2 + size)));
          p = buf.length;
          break;
        }
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = buf.subarray(p, Math.min(buf.length, p + n));
      complete = body.length === n;
      p += body.length;
    } else {
      body = buf.subarray(p);
      complete = closed;
      p = buf.length;
    }
    let json = null;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {}
    responses.push({ status, reason: m[2], headers, body, complete, json, text: body.toString('utf8') });
    pos = p;
    if (!complete) break;
  }
  return { responses, rest: buf.subarray(pos) };
}

/**
 * A raw client connection.
 * @returns {Promise<RawClient>} once connected
 */
export function rawConnect(port, { host = '127.0.0.1', timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(new RawClient(sock));
    });
  });
}

export class RawClient {
  constructor(sock) {
    this.sock = sock;
    sock.setNoDelay(true);
    this.chunks = [];
    this.closed = false;
    this.error = null;
    this.waiters = new Set();
    sock.on('data', (c) => {
      this.chunks.push(c);
      this.notify();
    });
    sock.on('error', (e) => {
      this.error = e;
    });
    sock.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }
  notify() {
    for (const w of [...this.waiters]) w();
  }
  data() {
    return Buffer.concat(this.chunks);
  }
  parsed() {
    return parseResponses(this.data(), this.closed);
  }
  write(b) {
    return new Promise((resolve) => this.sock.write(b, () => resolve()));
  }
  /** Wait until pred(this) holds; rejects after timeoutMs. */
  until(pred, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let v;
        try {
          v = pred(this);
        } catch (e) {
          cleanup();
          reject(e);
          return;
        }
        if (v) {
          cleanup();
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${what} not within ${timeoutMs} ms; received ${this.data().length} bytes, closed ${this.closed}:\n` +
          this.data().subarray(0, 2000).toString('latin1')));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }
  /** Wait for n complete responses (or the connection's end: then whatever arrived). */
  async responses(n = 1, timeoutMs = 5000) {
    await this.until((c) => c.closed || c.parsed().responses.filter((r) => r.complete).length >= n, timeoutMs, `${n} response(s)`);
    return this.parsed().responses;
  }
  /** Wait for the server to close the connection. Resolves true, or false after timeoutMs. */
  async waitClosed(timeoutMs = 3000) {
    try {
      await this.until((c) => c.closed, timeoutMs, 'close');
      return true;
    } catch {
      return false;
    }
  }
  destroy() {
    this.sock.destroy();
  }
}

/** Open `n` plain TCP connections to port, `batch` at a time; resolves with the sockets. */
export async function openIdleConnections(port, n, { batch = 200 } = {}) {
  const socks = [];
  for (let i = 0; i < n; i += batch) {
    const group = await Promise.allSettled(
      Array.from({ length: Math.min(batch, n - i) }, () =>
        new Promise((resolve, reject) => {
          const s = net.connect({ port, host: '127.0.0.1' });
          s.on('error', () => {}); // a reset later (the gateway closing) must not throw
          s.once('connect', () => resolve(s));
          s.once('close', () => reject(new Error('closed before connect')));
        }),
      ),
    );
    for (const g of group) if (g.status === 'fulfilled') socks.push(g.value);
  }
  return socks;
}

/** Destroy sockets and wait until each has closed. */
export async function closeAll(socks) {
  await Promise.all(
    socks.map(
      (s) =>
        new Promise((resolve) => {
          if (s.destroyed && s.closed) return resolve();
          s.once('close', resolve);
          s.destroy();
        }),
    ),
  );
}
