// Helpers shared by the deploy/ tests: YAML loading, `llm-gateway --check-config` with exactly a
// given environment, and a strict field check for Kubernetes objects.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import YAML from 'yaml';

import { REPO_ROOT, gatewayBin, writeTemp } from '../integration/harness.mjs';

export { REPO_ROOT };
export const DEPLOY = path.join(REPO_ROOT, 'deploy');
const require = createRequire(import.meta.url);

export function readYaml(file) {
  return YAML.parse(fs.readFileSync(file, 'utf8'));
}

export function parseYamlDocs(text) {
  return YAML.parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors.join('\n'));
    return d.toJS();
  });
}

/** KEY=VALUE lines (comments and blank lines skipped), as compose's env_file reads them. */
export function readEnvFile(file) {
  const env = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2];
  }
  return env;
}

/**
 * `llm-gateway --check-config` on `text` with exactly `env` (nothing inherited), so a ${VAR} the
 * deployment does not provide fails here as it would in the container.
 */
export function checkConfig(text, env, name = 'gateway.yaml') {
  const file = writeTemp(name, text);
  try {
    const stdout = execFileSync(gatewayBin(), ['--check-config', file], { env, encoding: 'utf8', timeout: 10_000 });
    return { ok: true, output: stdout };
  } catch (e) {
    return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}${e.stdout === undefined ? e.message : ''}` };
  }
}

/** Port of an "IP:PORT" listen address. */
export function portOf(listen) {
  return Number(String(listen).slice(String(listen).lastIndexOf(':') + 1));
}

// Strict fields: kubernetes-models validates types, enums and required fields, but the Kubernetes
// schemas allow unknown properties, which `kubectl apply` (strict field validation) rejects. The
// models' type declarations list every field of every object, so they serve as the field list.
const K8S_MODELS = path.dirname(require.resolve('kubernetes-models/package.json'));
const interfaces = new Map(); // d.ts file -> {props: Map(name -> {ref, container})} | null

// "@scope/pkg/a/b" -> its .d.ts in the nearest node_modules above kubernetes-models (package
// exports hide .d.ts files from require.resolve).
function packageFile(spec) {
  const parts = spec.split('/');
  const pkgLen = spec.startsWith('@') ? 2 : 1;
  for (let dir = K8S_MODELS; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const root = path.join(dir, 'node_modules', ...parts.slice(0, pkgLen));
    if (fs.existsSync(root)) return path.join(root, ...parts.slice(pkgLen)) + '.d.ts';
  }
  throw new Error(`cannot find ${spec}`);
}

function parseDts(file) {
  if (interfaces.has(file)) return interfaces.get(file);
  const text = fs.readFileSync(file, 'utf8');
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    const target = m[2].startsWith('.') ? path.resolve(path.dirname(file), `${m[2]}.d.ts`) : packageFile(m[2]);
    for (const name of m[1].split(',')) imports.set(name.trim(), target);
  }
  const body = /^export interface \w+(?: extends \w+)? \{\n([\s\S]*?)^\}/m.exec(text);
  if (!body) {
    interfaces.set(file, null); // a type alias (Quantity, IntOrString, Time): a leaf
    return null;
  }
  const props = new Map();
  const lines = body[1].split('\n').filter((l) => !/^\s*(\/\*\*|\*)/.test(l));
  for (let i = 0; i < lines.length; i++) {
    const m = /^ {4}"([^"]+)"\??: (.*)$/.exec(lines[i]);
    if (!m) continue;
    let type = m[2];
    while (!type.trimEnd().endsWith(';') && i + 1 < lines.length) type += lines[++i].trim();
    const id = /\b(I\w+)\b/.exec(type.replace(/\[\s*key: string\s*\]/, ''));
    const ref = id && imports.get(id[1]);
    const container = type.startsWith('Array<') ? 'array' : type.startsWith('{') ? 'map' : 'one';
    props.set(m[1], { ref: ref || null, container });
  }
  const parsed = { props };
  interfaces.set(file, parsed);
  return parsed;
}

/** The kubernetes-models class file for an object, or null when the package has no such kind. */
export function modelPath(apiVersion, kind) {
  const dir = apiVersion.includes('/') ? apiVersion : `v1`;
  const file = path.join(K8S_MODELS, dir, `${kind}.d.ts`);
  return fs.existsSync(file) ? file : null;
}

/** Every field of `obj` that its Kubernetes type does not have, as "path: unknown field". */
export function unknownFields(obj) {
  const problems = [];
  const walk = (value, file, where) => {
    const iface = file && parseDts(file);
    if (!iface || value === null || typeof value !== 'object') return;
    for (const [key, v] of Object.entries(value)) {
      const prop = iface.props.get(key);
      if (!prop) {
        problems.push(`${where}.${key}: unknown field`);
        continue;
      }
      if (!prop.ref || v === null) continue;
      if (prop.container === 'array') v.forEach((el, i) => walk(el, prop.ref, `${where}.${key}[${i}]`));
      else if (prop.container === 'map') for (const [k, el] of Object.entries(v)) walk(el, prop.ref, `${where}.${key}.${k}`);
      else walk(v, prop.ref, `${where}.${key}`);
    }
  };
  walk(obj, modelPath(obj.apiVersion, obj.kind), `${obj.kind}/${obj.metadata?.name}`);
  return problems;
}
