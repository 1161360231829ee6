// A mock Microsoft Entra ID token service for the tests, speaking the three shapes the gateway
// uses (see ../../README.md "Microsoft Entra ID"):
//   POST /{tenant}/oauth2/v2.0/token         client credentials (secret or federated assertion);
//                                            answers {token_type, expires_in (number), access_token}
//   GET  /metadata/identity/oauth2/token     IMDS; needs `Metadata: true`; numbers as strings
//   GET  /msi/token                          App Service / Container Apps; needs X-IDENTITY-HEADER;
//                                            answers expires_on (epoch seconds, a string)
// Tokens are "tok-1", "tok-2", ... in order. Knobs (mutable): `lifetime` (seconds, default 3600),
// `fail` ({status, body} answered instead of a token; null: succeed), `hang` (never answer).
// Every request is recorded: {method, path, query, headers, form, at (Date.now())}.
import http from 'node:http';

export async function startTokenMock({ lifetime = 3600 } = {}) {
  const requests = [];
  const sockets = new Set();
  let issued = 0;
  const mock = {
    lifetime,
    fail: null,
    hang: false,
    requests,
    get issued() {
      return issued;
    },
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://mock');
      const body = Buffer.concat(chunks).toString('utf8');
      const form = Object.fromEntries(new URLSearchParams(body));
      const record = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers, form, at: Date.now() };
      requests.push(record);
      if (mock.hang) return;
      const send = (status, obj) => {
        const b = JSON.stringify(obj);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b) });
        res.end(b);
      };
      if (mock.fail) return send(mock.fail.status, mock.fail.body ?? {});
      const token = `tok-${++issued}`;
      record.issued = token;
      const now = Math.floor(Date.now() / 1000);
      if (req.method === 'POST' && /^\/[^/]+\/oauth2\/v2\.0\/token$/.test(url.pathname)) {
        return send(200, { token_type: 'Bearer', expires_in: mock.lifetime, ext_expires_in: mock.lifetime, access_token: token });
      }
      if (req.method === 'GET' && url.pathname === '/metadata/identity/oauth2/token') {
        if (req.headers.metadata !== 'true') return send(400, { error: 'invalid_request', error_description: 'Required metadata header not specified' });
        return send(200, {
          access_token: token,
          refresh_token: '',
          expires_in: String(mock.lifetime),
          expires_on: String(now + mock.lifetime),
          not_before: String(now),
          resource: url.searchParams.get('resource'),
          token_type: 'Bearer',
        });
      }
      if (req.method === 'GET' && url.pathname === '/msi/token') {
        if (!req.headers['x-identity-header']) return send(401, { error: 'unauthorized' });
        return send(200, { access_token: token, expires_on: String(now + mock.lifetime), resource: url.searchParams.get('resource'), token_type: 'Bearer' });
      }
      return send(404, { error: 'not_found' });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  mock.port = server.address().port;
  mock.url = `http://127.0.0.1:${mock.port}`;
  mock.close = () =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return mock;
}
