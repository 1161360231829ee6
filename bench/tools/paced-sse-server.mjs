#!/usr/bin/env node
// A slow SSE upstream for the streaming benchmark (Node, no dependencies). Every POST is answered
// with an Azure-shaped chat stream: one event at once, then one every --interval-ms, --chunks
// events in all, then `data: [DONE]`. Each event carries "t": the send time in milliseconds of
// the system-wide monotonic clock (CLOCK_MONOTONIC, the clock process.hrtime reads), taken just
// before the write, so a client on the same machine computes delivery latency = receive - send.
//   node paced-sse-server.mjs --port 0 --chunks 100 --interval-ms 50
// Prints `listening PORT` on stdout once it accepts connections; SIGTERM/SIGINT stop it.
import http from 'node:http';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port ?? 0);
const chunks = Math.max(2, Number(args.chunks ?? 20));
const interval = Number(args['interval-ms'] ?? 50);

const now = () => Number(process.hrtime.bigint()) / 1e6;
const safe = '{"filtered":false,"severity":"safe"}';
const CF = `{"hate":${safe},"self_harm":${safe},"sexual":${safe},"violence":${safe}}`;
const ID = 'chatcmpl-AYzK3pQvT8wq2mN1xR7uD5fL0eHcB';
const HEAD = `"created":1732791284,"id":"${ID}","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"`;
const WORDS = ['Move', ' the', ' dashboards', ' to', ' the', ' first', ' replica', ' and', ' keep', ' the', ' second', ' for', ' failover', '.'];

function event(i, t) {
  const ts = t.toFixed(3);
  if (i === 0) {
    return `data: {"t":${ts},"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":${safe},"jailbreak":{"filtered":false,"detected":false},"self_harm":${safe},"sexual":${safe},"violence":${safe}}}]}\n\n`;
  }
  if (i === chunks - 1) {
    return `data: {"t":${ts},"choices":[],${HEAD},"usage":{"completion_tokens":${chunks - 2},"prompt_tokens":431,"total_tokens":${429 + chunks}}}\n\n`;
  }
  const word = JSON.stringify(WORDS[(i - 1) % WORDS.length]);
  return `data: {"t":${ts},"choices":[{"content_filter_results":${CF},"delta":{"content":${word}},"finish_reason":null,"index":0,"logprobs":null}],${HEAD},"usage":null}\n\n`;
}

const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'apim-request-id': '6a1f4a1e-3c5b-4f0e-9d2a-0c7e5b8a9f14',
      'x-accel-buffering': 'no',
    });
    const start = now();
    let i = 0;
    let timer = null;
    const send = () => {
      timer = null;
      if (res.destroyed) return;
      res.write(event(i, now()));
      i += 1;
      if (i >= chunks) {
        res.end('data: [DONE]\n\n');
        return;
      }
      // Paced against the stream's start, so timer lateness does not accumulate.
      timer = setTimeout(send, Math.max(0, start + i * interval - now()));
    };
    res.on('close', () => timer && clearTimeout(timer));
    send();
  });
});
server.keepAliveTimeout = 120000;
server.headersTimeout = 130000;
server.requestTimeout = 0;
server.maxConnections = 100000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
const stop = () => {
  server.close();
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 200).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
