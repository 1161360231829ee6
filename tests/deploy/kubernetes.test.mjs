// deploy/kubernetes: every kustomization (base, overlays, examples) renders with `kubectl
// kustomize`; every rendered object validates against the Kubernetes OpenAPI schemas
// (kubernetes-models, pinned) and has no field its type lacks; the configuration each ConfigMap
// carries passes `llm-gateway --check-config` with exactly the variables its container gets; and
// the objects fit together (probes on the admin port, grace period over the drain, selectors).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import YAML from 'yaml';

import { DEPLOY, checkConfig, modelPath, parseYamlDocs, portOf, unknownFields } from './lib.mjs';

const K8S = path.join(DEPLOY, 'kubernetes');

function kustomizations() {
  const out = [];
  const walk = (dir) => {
    if (fs.existsSync(path.join(dir, 'kustomization.yaml'))) out.push(path.relative(K8S, dir));
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  walk(K8S);
  return out.sort();
}

// kubectl's built-in kustomize must be v4 or newer (kubectl 1.21+) for `labels`, `patches` and
// directories in `resources`; Debian 12's kubernetes-client (1.20, kustomize v2) is too old.
function kubectlProblem() {
  let out;
  try {
    out = execFileSync('kubectl', ['version', '--client'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return 'kubectl not installed (needed for `kubectl kustomize`; any kubectl 1.21 or newer)';
  }
  const m = /Kustomize Version: v(\d+)/.exec(out);
  if (!m || Number(m[1]) < 4) return `kubectl's kustomize is older than v4 (${out.trim().split('\n').join('; ')})`;
  return null;
}
const SKIP = kubectlProblem();

const render = (rel) => parseYamlDocs(execFileSync('kubectl', ['kustomize', path.join(K8S, rel)], { encoding: 'utf8' }));
const isGateway = (c) => /(^|\/)llm-gateway(:|@|$)/.test(c.image);
const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

async function modelClass(obj) {
  const file = modelPath(obj.apiVersion, obj.kind);
  assert.ok(file, `${obj.apiVersion} ${obj.kind}: no such kind in kubernetes-models`);
  const mod = await import(file.replace(/\.d\.ts$/, '.mjs'));
  return mod[obj.kind];
}

/** The env a container gets: literal values, ConfigMap keys, a stand-in for each Secret key. */
function containerEnv(container, objects, pod) {
  const env = { PATH: process.env.PATH };
  for (const src of container.envFrom || []) {
    assert.ok(src.configMapRef, 'envFrom only from ConfigMaps: Secrets are referenced key by key');
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === src.configMapRef.name);
    assert.ok(cm, `envFrom ConfigMap ${src.configMapRef.name} is not rendered`);
    Object.assign(env, cm.data);
  }
  for (const e of container.env || []) {
    if (e.valueFrom?.secretKeyRef) env[e.name] = `secret-${e.valueFrom.secretKeyRef.key}`;
    else env[e.name] = e.value;
  }
  if (pod.metadata.labels?.['azure.workload.identity/use'] === 'true') {
    // What the Azure Workload ID webhook injects into every container of such a pod.
    Object.assign(env, {
      AZURE_CLIENT_ID: '00000000-0000-0000-0000-000000000001',
      AZURE_TENANT_ID: '00000000-0000-0000-0000-000000000002',
      AZURE_AUTHORITY_HOST: 'https://login.microsoftonline.com/',
      AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/tokens/azure-identity-token',
    });
  }
  return env;
}

/** The gateway's configuration as mounted from a ConfigMap at the --config path. */
function mountedConfig(container, podSpec, objects) {
  const args = [...(container.command || []), ...(container.args || [])];
  const i = args.indexOf('--config');
  assert.ok(i >= 0, `${container.name}: runs with --config FILE`);
  const file = args[i + 1];
  const mount = container.volumeMounts.find((m) => file.startsWith(`${m.mountPath}/`));
  assert.ok(mount, `${file} is on no volume mount`);
  assert.equal(mount.readOnly, true);
  const volume = podSpec.volumes.find((v) => v.name === mount.name);
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === volume.configMap?.name);
  assert.ok(cm, `the volume of ${file} is no rendered ConfigMap`);
  const text = cm.data[path.posix.relative(mount.mountPath, file)];
  assert.ok(text, `ConfigMap ${cm.metadata.name} has no ${path.posix.basename(file)}`);
  return { text, cm };
}

const probePort = (probe, container) => {
  if (probe.httpGet) {
    const p = probe.httpGet.port;
    return typeof p === 'number' ? p : container.ports.find((x) => x.name === p)?.containerPort;
  }
  const cmd = probe.exec.command;
  assert.equal(cmd[1], '--healthcheck', 'exec probes use the image\'s own health check');
  return Number(new URL(cmd[2]).port);
};

/** Checks every gateway container of every workload in `objects`; returns their configs. */
function checkGateways(objects) {
  const configs = [];
  for (const d of objects.filter((o) => o.kind === 'Deployment')) {
    const pod = d.spec.template;
    const spec = pod.spec;
    assert.ok(matches(d.spec.selector.matchLabels, pod.metadata.labels), `${d.metadata.name}: selector matches its pods`);
    const all = [...(spec.initContainers || []), ...spec.containers];
    for (const c of all.filter(isGateway)) {
      const where = `${d.metadata.name}/${c.name}`;
      const { text } = mountedConfig(c, spec, objects);
      const env = containerEnv(c, objects, pod);
      const r = checkConfig(text, env);
      assert.ok(r.ok, `${where}: the ConfigMap's configuration fails --check-config with the container's env:\n${r.output}`);
      const cfg = YAML.parse(text);
      configs.push({ deployment: d, container: c, cfg, env });

      // Hardened: non-root numeric user, read-only root, no privilege escalation, no capabilities,
      // the runtime's seccomp profile.
      const sc = { ...spec.securityContext, ...c.securityContext };
      assert.equal(sc.runAsNonRoot, true, `${where}: runAsNonRoot`);
      assert.ok(Number.isInteger(sc.runAsUser) && sc.runAsUser > 0, `${where}: numeric non-root runAsUser`);
      assert.equal(c.securityContext.readOnlyRootFilesystem, true, `${where}: read-only root`);
      assert.equal(c.securityContext.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
      assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], `${where}: all capabilities dropped`);
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${where}: seccomp RuntimeDefault`);
      assert.ok(c.resources?.requests?.memory && c.resources?.limits?.memory && c.resources?.requests?.cpu, `${where}: resources`);

      // Probes reach the listener that stays up while draining; the grace period outlasts the
      // preStop sleep plus the drain.
      const healthPort = portOf(cfg.admin?.listen ?? cfg.server.listen);
      const probes = ['readinessProbe', 'livenessProbe', 'startupProbe'].filter((p) => c[p]);
      assert.ok(probes.length >= 2, `${where}: probes`);
      for (const p of probes) assert.equal(probePort(c[p], c), healthPort, `${where}: ${p} port`);
      const drainS = (cfg.server.drain_timeout_ms ?? 30000) / 1000;
      const preStopS = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
      assert.ok(spec.terminationGracePeriodSeconds > drainS + preStopS,
        `${where}: terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} <= drain ${drainS} + preStop ${preStopS}`);
    }
  }
  return configs;
}

test('deploy/kubernetes holds the expected kustomizations', () => {
  assert.deepEqual(kustomizations(), [
    'base',
    'examples/egress-networkpolicy',
    'examples/sidecar',
    'overlays/with-redis',
    'overlays/workload-identity',
  ]);
});

for (const rel of kustomizations()) {
  test(`${rel}: renders; every object passes the Kubernetes schemas with no unknown field`, { skip: SKIP || false }, async () => {
    const objects = render(rel);
    assert.ok(objects.length > 0);
    for (const obj of objects) {
      const Model = await modelClass(obj);
      try {
        new Model(obj).validate();
      } catch (e) {
        assert.fail(`${rel}: ${obj.kind}/${obj.metadata?.name}: ${e.message}`);
      }
      assert.deepEqual(unknownFields(obj), [], `${rel}: fields kubectl's strict validation would reject`);
      assert.ok(!(obj.kind === 'Secret'), `${rel}: no Secret objects (secrets are created outside git)`);
    }
    checkGateways(objects);
  });
}

test('base: a shared gateway with 2 replicas, a Service, a PodDisruptionBudget, an HPA and scrape annotations', { skip: SKIP || false }, () => {
  const objects = render('base');
  const [g] = checkGateways(objects);
  const d = g.deployment;
  const podLabels = d.spec.template.metadata.labels;
  assert.equal(d.spec.replicas, 2);
  const svc = objects.find((o) => o.kind === 'Service');
  assert.ok(matches(svc.spec.selector, podLabels));
  for (const p of svc.spec.ports) assert.ok(g.container.ports.some((cp) => cp.name === p.targetPort), `Service port ${p.name}`);
  const mainPort = g.container.ports.find((cp) => cp.name === 'http').containerPort;
  assert.equal(portOf(g.cfg.server.listen), mainPort);
  const pdb = objects.find((o) => o.kind === 'PodDisruptionBudget');
  assert.ok(pdb.spec.selector && matches(pdb.spec.selector.matchLabels, podLabels), 'the PDB selects the gateway pods (an empty selector would select every pod)');
  const hpa = objects.find((o) => o.kind === 'HorizontalPodAutoscaler');
  assert.equal(hpa.spec.scaleTargetRef.name, d.metadata.name);
  assert.equal(hpa.spec.metrics[0].resource.name, 'cpu');
  assert.ok(hpa.spec.minReplicas >= 2);
  const ann = d.spec.template.metadata.annotations;
  assert.equal(ann['prometheus.io/scrape'], 'true');
  assert.equal(Number(ann['prometheus.io/port']), portOf(g.cfg.admin.listen));
  assert.ok(g.cfg.admin.token, 'metrics behind the admin token');
  assert.equal(g.cfg.rate_limits?.store ?? 'memory', 'memory');
});

test('overlays/with-redis: limits in Redis, reachable at the Service redis_url names, and only from the gateway', { skip: SKIP || false }, () => {
  const objects = render('overlays/with-redis');
  const [g] = checkGateways(objects);
  assert.equal(g.cfg.rate_limits.store, 'redis');
  const url = new URL(g.cfg.rate_limits.redis_url);
  const svc = objects.find((o) => o.kind === 'Service' && o.metadata.name === url.hostname);
  assert.ok(svc, `redis_url names ${url.hostname}, which is no Service here`);
  assert.equal(svc.spec.ports[0].port, Number(url.port));
  const redis = objects.find((o) => o.kind === 'Deployment' && matches(svc.spec.selector, o.spec.template.metadata.labels));
  assert.ok(redis, 'a Deployment behind the Redis Service');
  const np = objects.find((o) => o.kind === 'NetworkPolicy' && matches(o.spec.podSelector.matchLabels, redis.spec.template.metadata.labels));
  assert.ok(np, 'a NetworkPolicy guards Redis');
  assert.ok(matches(np.spec.ingress[0].from[0].podSelector.matchLabels, g.deployment.spec.template.metadata.labels));
});

test('overlays/workload-identity: a ServiceAccount with the client id, the pod label, Entra tokens and no key', { skip: SKIP || false }, () => {
  const objects = render('overlays/workload-identity');
  const [g] = checkGateways(objects);
  const pod = g.deployment.spec.template;
  assert.equal(pod.metadata.labels['azure.workload.identity/use'], 'true');
  const sa = objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === pod.spec.serviceAccountName);
  assert.ok(sa, 'the pods run as a rendered ServiceAccount');
  assert.match(sa.metadata.annotations['azure.workload.identity/client-id'], /^[0-9a-f-]{36}$/);
  const auths = Object.values(g.cfg.upstreams).map((u) => u.auth);
  assert.ok(auths.every((a) => a?.type === 'entra' && a.mode === 'workload_identity'));
  assert.ok(!('AZURE_OPENAI_API_KEY' in g.env), 'no Azure key in the container');
});

test('examples/sidecar: the gateway is a native sidecar on loopback, the app points its SDK at it', { skip: SKIP || false }, () => {
  const objects = render('examples/sidecar');
  const [g] = checkGateways(objects);
  const spec = g.deployment.spec.template.spec;
  assert.ok(spec.initContainers.includes(g.container), 'an init container');
  assert.equal(g.container.restartPolicy, 'Always', 'native sidecar');
  assert.ok(g.container.startupProbe, 'the app starts once the gateway is ready');
  assert.match(g.cfg.server.listen, /^127\.0\.0\.1:/);
  const app = spec.containers[0];
  const base = app.env.find((e) => e.name === 'OPENAI_BASE_URL').value;
  assert.equal(new URL(base).host, g.cfg.server.listen);
});

test('examples/egress-networkpolicy: only the gateway may leave the namespace', { skip: SKIP || false }, () => {
  const objects = render('examples/egress-networkpolicy');
  const gwLabels = render('base').find((o) => o.kind === 'Deployment').spec.template.metadata.labels;
  const all = objects.find((o) => Object.keys(o.spec.podSelector).length === 0);
  assert.ok(all && all.spec.policyTypes.includes('Egress'), 'a policy for every pod');
  for (const rule of all.spec.egress) {
    assert.ok(rule.to?.length, 'every egress rule of the namespace-wide policy names its peers');
    for (const peer of rule.to) assert.ok(!peer.ipBlock, 'no address outside the cluster for other pods');
  }
  assert.ok(all.spec.egress.some((r) => r.to.some((p) => p.podSelector && matches(p.podSelector.matchLabels, gwLabels))), 'other pods may reach the gateway');
  const gw = objects.find((o) => o.spec.policyTypes.includes('Egress') && o.spec.podSelector.matchLabels && matches(o.spec.podSelector.matchLabels, gwLabels));
  assert.ok(gw && gw.spec.egress.some((r) => !r.to && r.ports.some((p) => p.port === 443)), 'the gateway may reach HTTPS anywhere');
});
