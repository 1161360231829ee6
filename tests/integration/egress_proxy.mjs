// A forward proxy for the tests (Node built-ins): HTTP CONNECT tunnels and absolute-form plain
// HTTP requests, every one recorded. Knobs (mutable): `auth` ("user:password": demand
// Proxy-Authorization Basic, else 407), `refuse` (a status, e.g. 403, answered to every CONNECT),
// `stall` (accept CONNECT requests but never answer). startProxy({tls: {key, cert}}) makes an
// https:// proxy (TLS to the proxy itself).
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

export async function startProxy({ auth = null, tls = null } = {}) {
  const connects = []; // {target, authorization}
  const requests = []; // absolute-form: {method, url, authorization}
  const sockets = new Set();
  const proxy = { auth, refuse: null, stall: false, connects, requests };
  const allowed = (req) => !proxy.auth || req.headers['proxy-authorization'] === `Basic ${Buffer.from(proxy.auth).toString('base64')}`;

  const server = (tls ? https.createServer.bind(null, tls) : http.createServer)((req, res) => {
    requests.push({ method: req.method, url: req.url, authorization: req.headers['proxy-authorization'] });
    if (!allowed(req)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="corp"' });
      return res.end();
    }
    const target = new URL(req.url);
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers }, (ures) => {
      res.writeHead(ures.statusCode, ures.headers);
      ures.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req, client, head) => {
    connects.push({ target: req.url, authorization: req.headers['proxy-authorization'] });
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (proxy.stall) return;
    if (proxy.refuse) {
      client.end(`HTTP/1.1 ${proxy.refuse} Forbidden\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    if (!allowed(req)) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm="corp"\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const [host, port] = [req.url.slice(0, req.url.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(req.url.slice(req.url.lastIndexOf(':') + 1))];
    const upstream = net.connect(port, host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => {
      sockets.delete(upstream);
      client.destroy();
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  server.on(tls ? 'secureConnection' : 'connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = server.address().port;
  proxy.url = `${tls ? 'https' : 'http'}://localhost:${proxy.port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return proxy;
}
