// deploy/: the Prometheus alert rules and the Grafana dashboard must only use metric families the
// gateway really exports, so they cannot silently rot when a metric is renamed. When promtool is
// installed (Debian package prometheus), the rule and scrape files are validated with it too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

import { REPO_ROOT, closedPort, request, startGateway } from './harness.mjs';
import { startMock } from '../mock_upstream/mock_upstream.mjs';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const ALERTS = path.join(DEPLOY, 'prometheus', 'alerts.yml');
const SCRAPE = path.join(DEPLOY, 'prometheus', 'prometheus.yml');
const DASHBOARD = path.join(DEPLOY, 'grafana', 'llm-gateway-dashboard.json');

// Family names referenced in PromQL text (histogram series map to their family).
function referencedFamilies(text) {
  const names = new Set();
  for (const m of text.matchAll(/\bllm_gateway_[a-z_]+/g)) {
    names.add(m[0].replace(/_(bucket|count|sum)$/, ''));
  }
  return names;
}

function exportedFamilies(metricsText) {
  const names = new Set();
  for (const line of metricsText.split('\n')) {
    const m = /^# TYPE (\S+) /.exec(line);
    if (m) names.add(m[1]);
  }
  return names;
}

function havePromtool() {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('alert rules and dashboard use only metric families the gateway exports', { timeout: 20_000 }, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const dead = await closedPort();
  const gw = await startGateway(
    `server: {listen: "127.0.0.1:0"}
upstreams:
  az: {provider: azure, base_url: "${mock.url}", api_key: "k", deployments: {gpt-4o: gpt4o-prod, pair-gpt: pair-prod}}
  dead: {provider: azure, base_url: "http://127.0.0.1:${dead}", api_key: "k"}
routes:
  - {match: "dead*", upstream: dead}
  - {match: "pair*", backends: [{upstream: dead}, {upstream: az}]}
  - {match: "*", upstream: az}
keys: [{name: team, key: "deploy-test-key-1", rpm: 3}, {name: free, key: "deploy-test-key-2"}]
logging: {access_log: "off"}
`,
    { t },
  );
  // A family is exported once it has a series: make traffic that gives every family one.
  const auth = { authorization: 'Bearer deploy-test-key-1' };
  const chat = (model, headers = {}) =>
    request(`${gw.url}/v1/chat/completions`, { headers: { ...auth, ...headers }, body: { model, messages: [] } });
  assert.equal((await chat('gpt-4o')).status, 200);
  assert.equal((await chat('gpt-4o', { 'x-mock-scenario': 'content-filter-400' })).status, 400);
  assert.equal((await chat('dead-model')).status, 502);
  // A failover route: a retry, attempts by outcome, backend state and Azure's quota report.
  const failover = await request(`${gw.url}/v1/chat/completions`, {
    headers: { authorization: 'Bearer deploy-test-key-2' },
    body: { model: 'pair-gpt', messages: [] },
  });
  assert.equal(failover.status, 200);
  assert.equal((await chat('gpt-4o')).status, 429);
  const res = await request(`${gw.url}/metrics`);
  assert.equal(res.status, 200);
  const exported = exportedFamilies(res.text);
  assert.ok(exported.has('llm_gateway_requests_total'), 'the exporter answers with families');

  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
  const exprs = dashboard.panels.flatMap((p) => (p.targets || []).map((target) => target.expr));
  assert.ok(exprs.length > 0, 'the dashboard has queries');
  for (const [file, text] of [
    [ALERTS, fs.readFileSync(ALERTS, 'utf8')],
    [DASHBOARD, exprs.join('\n')],
  ]) {
    const used = referencedFamilies(text);
    assert.ok(used.size > 0, `${file} references gateway metrics`);
    for (const name of used) assert.ok(exported.has(name), `${path.basename(file)} uses ${name}, which /metrics does not export`);
  }
});

test('promtool accepts the alert rules and the scrape config', { timeout: 20_000, skip: !havePromtool() && 'promtool not installed (Debian package prometheus)' }, () => {
  execFileSync('promtool', ['check', 'rules', ALERTS], { stdio: 'pipe' });
  execFileSync('promtool', ['check', 'config', SCRAPE], { stdio: 'pipe', cwd: path.dirname(SCRAPE) });
});
