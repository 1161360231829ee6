// The README's curl examples, run against a real gateway so that they never rot: every command
// starting with `curl ` in a ```sh block of the "### With curl" section (up to the next heading),
// with http://127.0.0.1:8080 replaced by the gateway's address. Each must exit 0 and answer what
// its request asks for. AzureOpenAI-style lines (api-key header, /openai/deployments/...) added to
// that section later are run the same way.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';

import { startMock } from '../mock_upstream/mock_upstream.mjs';
import { startGateway, REPO_ROOT } from '../integration/harness.mjs';

const T = { timeout: 20_000 };
const HOOK = { timeout: 30_000 };
const README_BASE = 'http://127.0.0.1:8080';

/**
 * The curl commands of the markdown section whose heading is `heading`: every line of a ```sh
 * (or bash/shell) block that starts with `curl `, joined with the lines it continues onto with a
 * trailing backslash. The section ends at the next heading (lines starting with # inside code
 * blocks are comments, not headings).
 */
export function curlCommands(markdown, heading = '### With curl') {
  const lines = markdown.split(/\r?\n/);
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start === -1) throw new Error(`no "${heading}" heading`);
  const commands = [];
  let fence = null; // the info string of the open code block, or null outside one
  let current = null;
  for (const line of lines.slice(start + 1)) {
    if (current !== null) {
      current.push(line);
      if (!/\\\s*$/.test(line)) {
        commands.push(current.join('\n'));
        current = null;
      }
      continue;
    }
    const f = /^\s*```+\s*([\w-]*)/.exec(line);
    if (f) {
      fence = fence === null ? f[1].toLowerCase() : null;
      continue;
    }
    if (fence === null && /^#{1,6}\s/.test(line)) break;
    if (fence !== null && ['sh', 'bash', 'shell'].includes(fence) && line.startsWith('curl ')) {
      if (/\\\s*$/.test(line)) current = [line];
      else commands.push(line);
    }
  }
  if (current !== null) commands.push(current.join('\n'));
  return commands;
}

/** Run a shell command; resolves with its exit code and output (never rejects on a non-zero exit). */
function sh(cmd, timeoutMs = 10_000) {
  return new Promise((resolve) => {
    execFile(
      'sh',
      ['-c', cmd],
      {
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        // A proxy from the environment must not take loopback requests.
        env: { ...process.env, NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' },
      },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, error, stdout, stderr });
      },
    );
  });
}

/** Data payloads of an SSE text. */
function sseData(text) {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim())
    .map((b) =>
      b
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n'),
    );
}

/**
 * Assert that `out` is a plausible successful answer to `cmd`: an SSE stream ending in [DONE] for
 * streaming requests, else a JSON body without `error` that fits the path (a model list, a chat
 * completion, ...).
 */
function assertPlausible(cmd, out) {
  const where = `\ncommand:\n${cmd}\noutput:\n${out.slice(0, 2000)}`;
  assert.ok(out.trim().length > 0, `empty output${where}`);
  const url = /https?:\/\/[^\s'"]+/.exec(cmd)?.[0] ?? '';
  const urlPath = url ? new URL(url).pathname : '';
  if (/"stream"\s*:\s*true/.test(cmd)) {
    assert.ok(out.includes('data: [DONE]'), `stream ends with data: [DONE]${where}`);
    const data = sseData(out).filter((d) => d !== '[DONE]');
    assert.ok(data.length > 0, `stream has events${where}`);
    const chunks = data.map((d) => JSON.parse(d));
    assert.ok(chunks.every((c) => !c.error), `no error event${where}`);
    if (urlPath.endsWith('/chat/completions')) {
      const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
      assert.ok(text.length > 0, `the stream carries content${where}`);
    }
    return;
  }
  let json;
  try {
    json = JSON.parse(out);
  } catch {
    assert.fail(`output is not JSON${where}`);
  }
  assert.equal(json.error, undefined, `an error answer${where}`);
  if (/\/models$/.test(urlPath)) {
    assert.equal(json.object, 'list', `a model list${where}`);
    assert.ok(Array.isArray(json.data) && json.data.some((m) => m.id === 'gpt-4o'), `gpt-4o listed${where}`);
  } else if (/\/models\/[^/]+$/.test(urlPath)) {
    assert.equal(json.object, 'model', `a model${where}`);
  } else if (urlPath.endsWith('/chat/completions')) {
    assert.ok(Array.isArray(json.choices) && json.choices.length > 0, `choices${where}`);
    assert.equal(typeof json.choices[0].message?.content, 'string', `a message${where}`);
  } else if (urlPath.endsWith('/embeddings')) {
    assert.ok(Array.isArray(json.data) && json.data.length > 0, `embeddings${where}`);
  }
}

describe('README "With curl" examples', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(`
server:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "${mock.url}"
    api_key: "readme-upstream-key"
    deployments: {gpt-4o: gpt4o-prod}
routes:
  - {match: "gpt-4o*", upstream: az}
`);
  }, HOOK);
  after(async () => {
    await gw?.stop();
    await mock?.close();
  });

  const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const commands = curlCommands(readme);

  test('the section has curl examples, all aimed at the default address', T, () => {
    assert.ok(commands.length >= 1, 'no curl command found in "### With curl"');
    for (const cmd of commands) assert.ok(cmd.includes(README_BASE), `not aimed at ${README_BASE}:\n${cmd}`);
  });

  for (const [i, cmd] of commands.entries()) {
    test(`curl #${i + 1}: ${cmd.split('\n')[0].replace(/\s*\\$/, '').slice(0, 100)}`, T, async () => {
      const run = cmd.split(README_BASE).join(gw.url);
      const before = mock.requests.length;
      const res = await sh(run);
      assert.equal(res.code, 0, `exit code ${res.code}\ncommand:\n${run}\nstderr:\n${res.stderr}\nstdout:\n${res.stdout}`);
      assertPlausible(run, res.stdout);
      const upstream = mock.requests.slice(before);
      const urlPath = new URL(/https?:\/\/[^\s'"]+/.exec(run)[0]).pathname;
      if (/\/models(\/|$)/.test(urlPath) && !urlPath.includes('/deployments/')) {
        assert.equal(upstream.length, 0, 'the model list is answered by the gateway');
      } else {
        assert.ok(upstream.length >= 1, 'the request reached the upstream');
        assert.ok(upstream.every((r) => r.headers['api-key'] === 'readme-upstream-key'));
      }
    });
  }

  // The extraction itself, on a section that also has AzureOpenAI-style commands, a # comment in
  // a code block and a non-sh block; the Azure-style commands it finds are run too.
  const SAMPLE = [
    '## Using it',
    '```sh',
    'curl -s http://127.0.0.1:8080/not-this-section',
    '```',
    '### With curl',
    '',
    '```sh',
    '# a comment, not a heading',
    `curl -s ${README_BASE}/v1/models`,
    '',
    `curl -s "${README_BASE}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \\`,
    '  -H "api-key: $AZURE_OPENAI_API_KEY" \\',
    "  -H 'content-type: application/json' \\",
    `  -d '{"messages":[{"role":"user","content":"Hello"}]}'`,
    '',
    `curl -sN "${README_BASE}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \\`,
    "  -H 'api-key: x' -H 'content-type: application/json' \\",
    `  -d '{"stream":true,"messages":[{"role":"user","content":"Hello"}]}'`,
    '```',
    '```json',
    'curl -s http://127.0.0.1:8080/not-sh',
    '```',
    '### Next',
    '```sh',
    'curl -s http://127.0.0.1:8080/next-section',
    '```',
  ].join('\n');

  test('extraction: only the section, only sh blocks, continuation lines joined', T, () => {
    const found = curlCommands(SAMPLE);
    assert.equal(found.length, 3);
    assert.equal(found[0], `curl -s ${README_BASE}/v1/models`);
    assert.equal(found[1].split('\n').length, 4);
    assert.match(found[1], /-d '\{"messages":/);
    assert.match(found[2], /"stream":true/);
  });

  test('AzureOpenAI-style curl lines in that section would work too', T, async () => {
    for (const cmd of curlCommands(SAMPLE).slice(1)) {
      const run = cmd.split(README_BASE).join(gw.url);
      const before = mock.requests.length;
      const res = await sh(run);
      assert.equal(res.code, 0, `exit code ${res.code}\n${run}\n${res.stderr}`);
      assertPlausible(run, res.stdout);
      const rec = mock.requests.slice(before).at(-1);
      assert.equal(rec.path, '/openai/deployments/gpt4o-prod/chat/completions');
      assert.equal(rec.query['api-version'], '2024-10-21');
      assert.equal(rec.headers['api-key'], 'readme-upstream-key');
    }
  });
});
