// Command line: --version, --check-config diagnostics (FILE:LINE:COL: message), bad --config.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { runGateway, startGateway, writeTemp } from './harness.mjs';

const T = { timeout: 20_000 };

const VALID = `server:
  listen: "127.0.0.1:0"
upstreams:
  oa:
    provider: openai
    base_url: "http://127.0.0.1:9"
routes:
  - match: "*"
    upstream: oa
`;

/** Lines of `text` that are FILE:LINE:COL: diagnostics for `file`. */
function diagnostics(text, file) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${file}:`)) continue;
    const m = /^(\d+):(\d+): (.+)$/.exec(line.slice(file.length + 1));
    if (m) out.push({ line: Number(m[1]), col: Number(m[2]), message: m[3] });
  }
  return out;
}

test('--version prints a version and exits 0', T, async () => {
  const r = await runGateway(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /\d+\.\d+/);
});

test('--check-config accepts a valid file (exit 0)', T, async () => {
  const file = writeTemp('valid.yaml', VALID);
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.deepEqual(diagnostics(r.stdout, file), []);
});

test('--check-config accepts every documented key', T, async () => {
  const file = writeTemp(
    'full.yaml',
    `server:
  listen: "127.0.0.1:0"
  max_body_bytes: 26214400
  max_header_bytes: 16384
  threads: 0
  drain_timeout_ms: 30000
admin:
  listen: "127.0.0.1:0"
upstreams:
  az:
    provider: azure
    base_url: "https://example.openai.azure.com/prefix"
    api_style: deployments
    api_version: "2024-10-21"
    api_versions: {responses: "2025-04-01-preview", chat_completions: "2024-10-21", audio_speech: "2025-04-01-preview"}
    api_key: "\${LLMGW_CLI_KEY:-dflt}"
    deployments: {gpt-4o: gpt4o-prod}
    strip_dots: false
    connect_timeout_ms: 5000
    timeout_ms: 600000
  az1:
    provider: azure
    base_url: "http://127.0.0.1:1"
    api_style: v1
  oa: {provider: openai, base_url: "http://127.0.0.1:2"}
routes:
  - {match: "gpt-4o*", upstream: az}
  - {match: "v1-*", upstream: az1}
  - {match: "*", upstream: oa}
`,
  );
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
});

test('--check-config: unknown key -> FILE:1:1, exit 1', T, async () => {
  const file = writeTemp('typo.yaml', VALID.replace(/^server:/, 'sevrer:'));
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 1);
  const d = diagnostics(r.stdout, file);
  assert.ok(d.length >= 1, `a FILE:LINE:COL line on stdout; got:\n${r.stdout}`);
  assert.deepEqual([d[0].line, d[0].col], [1, 1]);
  assert.match(d[0].message, /sevrer/);
});

test('--check-config: unknown nested key points at its line', T, async () => {
  const file = writeTemp('nested.yaml', VALID.replace('    base_url:', '    base_ulr: "x"\n    base_url:'));
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 1);
  const d = diagnostics(r.stdout, file);
  assert.ok(d.some((x) => x.line === 6 && x.col === 5 && /base_ulr/.test(x.message)), `got:\n${r.stdout}`);
});

test('--check-config: route to an undefined upstream', T, async () => {
  const file = writeTemp('route.yaml', VALID.replace('upstream: oa', 'upstream: nowhere'));
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 1);
  const d = diagnostics(r.stdout, file);
  // line 8 is the route, line 9 its `upstream:` value; either is a fair place to point
  assert.ok(d.some((x) => (x.line === 8 || x.line === 9) && x.col >= 1 && /nowhere/.test(x.message)), `got:\n${r.stdout}`);
});

test('--check-config: unset ${VAR} is named', T, async () => {
  const file = writeTemp(
    'env.yaml',
    VALID.replace('    base_url: "http://127.0.0.1:9"', '    base_url: "http://127.0.0.1:9"\n    api_key: "${NOPE_UNSET}"'),
  );
  const r = await runGateway(['--check-config', file], { env: { NOPE_UNSET: undefined } });
  assert.equal(r.code, 1);
  const d = diagnostics(r.stdout, file);
  assert.ok(d.some((x) => x.line === 7 && /NOPE_UNSET/.test(x.message)), `got:\n${r.stdout}`);
});

test('--check-config: ${VAR:-default} with the variable unset is fine', T, async () => {
  const file = writeTemp(
    'envdef.yaml',
    VALID.replace('    base_url: "http://127.0.0.1:9"', '    base_url: "http://127.0.0.1:9"\n    api_key: "${NOPE_UNSET:-fallback}"'),
  );
  const r = await runGateway(['--check-config', file], { env: { NOPE_UNSET: undefined } });
  assert.equal(r.code, 0, r.stdout);
});

test('--check-config: bad values are reported', T, async () => {
  const cases = [
    ['provider', VALID.replace('provider: openai', 'provider: bedrock'), 5],
    ['api_style', VALID.replace('provider: openai', 'provider: azure\n    api_style: v2'), 6],
    ['max_body_bytes', VALID.replace('  listen: "127.0.0.1:0"', '  listen: "127.0.0.1:0"\n  max_body_bytes: lots'), 3],
  ];
  for (const [what, yaml, line] of cases) {
    const file = writeTemp(`bad-${what}.yaml`, yaml);
    const r = await runGateway(['--check-config', file]);
    assert.equal(r.code, 1, `${what}: exit 1`);
    const d = diagnostics(r.stdout, file);
    assert.ok(d.some((x) => x.line === line), `${what}: a diagnostic on line ${line}; got:\n${r.stdout}`);
  }
});

test('--check-config: YAML syntax error', T, async () => {
  const file = writeTemp('syntax.yaml', 'server:\n  listen: "127.0.0.1:0\nroutes: [\n');
  const r = await runGateway(['--check-config', file]);
  assert.equal(r.code, 1);
  assert.ok(diagnostics(r.stdout, file).length >= 1, `got:\n${r.stdout}`);
});

test('--config with a bad file: the same diagnostics on stderr, exit 1', T, async () => {
  const file = writeTemp('bad-run.yaml', VALID.replace(/^server:/, 'sevrer:'));
  const r = await runGateway(['--config', file]);
  assert.equal(r.code, 1);
  const d = diagnostics(r.stderr, file);
  assert.ok(d.some((x) => x.line === 1 && x.col === 1 && /sevrer/.test(x.message)), `stderr:\n${r.stderr}`);
});

test('startGateway rejects with the diagnostics when the config is bad', T, async () => {
  await assert.rejects(startGateway(VALID.replace(/^server:/, 'sevrer:')), (err) => {
    assert.match(err.message, /exited before ready \(code 1/);
    assert.match(err.message, /:1:1: .*sevrer/);
    return true;
  });
});
