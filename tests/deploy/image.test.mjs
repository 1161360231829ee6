// The runtime image (Dockerfile), built by scripts/test-image.sh with buildah, which names it in
// LLMGW_IMAGE: its configuration (numeric non-root user, health check, OCI labels), its root
// filesystem (no shell, no package manager, nothing but the binary, its libraries, the CA bundle,
// passwd/group and the configuration; under 30 MB), and the binary served from it against the
// mock upstream: once through `buildah run` with the image's own user and environment, once as
// PID 1 of its own PID namespace on a read-only bind of the image, where SIGTERM must drain an
// in-flight stream and exit 0.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';

import { REPO_ROOT, closedPort, eventually, parseSSE, request, streamRequest, tcpConnectRefused, tmpDir, uid } from '../integration/harness.mjs';
import { startMock } from '../mock_upstream/mock_upstream.mjs';

const IMAGE = process.env.LLMGW_IMAGE;
const ENV = process.env;
const haveBuildah = spawnSync('buildah', ['--version'], { env: ENV }).status === 0;
const SKIP = !IMAGE
  ? 'LLMGW_IMAGE is not set: scripts/test-image.sh builds the image and runs this test'
  : !haveBuildah
    ? 'buildah not installed (scripts/test-image.sh installs it with apt-get)'
    : false;
const LIMIT_BYTES = 30_000_000;
const BIN = '/usr/local/bin/llm-gateway';

const buildah = (...args) => execFileSync('buildah', args, { env: ENV, encoding: 'utf8' }).trim();

// Two working containers of the image: `ctr` for `buildah run` (which adds /etc/hosts and
// /etc/resolv.conf to it), and `pristine`, never run, whose mount `mnt` is the image's filesystem.
let ctr;
let pristine;
let mnt;
let config;
before(() => {
  if (SKIP) return;
  ctr = buildah('from', '--pull=never', IMAGE);
  pristine = buildah('from', '--pull=never', IMAGE);
  mnt = buildah('mount', pristine);
  const inspect = JSON.parse(buildah('inspect', '--type', 'image', IMAGE));
  config = inspect.Docker.config;
});
after(() => {
  if (!ctr) return;
  buildah('umount', pristine);
  buildah('rm', pristine, ctr);
});

/** Every process below `root` (by /proc's parent links). */
function descendants(root) {
  const children = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(d));
    } catch {} // gone meanwhile
  }
  const out = [];
  const queue = [root];
  while (queue.length) for (const c of children.get(queue.shift()) || []) out.push(c), queue.push(c);
  return out;
}

/** The gateway process started under `root`, once it runs (not while buildah or chroot set up). */
async function gatewayUnder(root) {
  let pid;
  await eventually(
    () => {
      pid = descendants(root).find((p) => {
        try {
          return fs.readlinkSync(`/proc/${p}/exe`).endsWith('/llm-gateway');
        } catch {
          return false;
        }
      });
      return pid !== undefined;
    },
    { timeoutMs: 10_000, what: 'the gateway process' },
  );
  return pid;
}

const statusField = (pid, name) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1].split(/\s+/);

function collect(proc) {
  const out = { stdout: '', stderr: '' };
  proc.stdout.on('data', (c) => (out.stdout += c));
  proc.stderr.on('data', (c) => (out.stderr += c));
  out.exited = new Promise((resolve) => proc.once('close', (code, signal) => resolve({ code, signal })));
  return out;
}

const chat = (url, headers = {}) =>
  request(`${url}/v1/chat/completions`, { headers, body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] } });

test('image config: numeric non-root user, health check, entrypoint, OCI labels', { skip: SKIP }, () => {
  const [uidS, gidS] = config.User.split(':');
  assert.match(config.User, /^\d+:\d+$/, 'numeric user:group, so runAsNonRoot can verify it');
  assert.notEqual(Number(uidS), 0);
  const passwd = fs.readFileSync(path.join(mnt, 'etc/passwd'), 'utf8');
  assert.ok(passwd.split('\n').some((l) => l.split(':')[2] === uidS && l.split(':')[3] === gidS), 'the user has a passwd line');
  assert.deepEqual(config.Entrypoint, [BIN]);
  const listen = config.Env.find((e) => e.startsWith('LLM_GATEWAY_LISTEN=')).split('=')[1];
  assert.equal(listen, '0.0.0.0:8080');
  assert.deepEqual(config.Healthcheck.Test, ['CMD', BIN, '--healthcheck', 'http://127.0.0.1:8080/healthz']);
  const labels = config.Labels;
  const version = /project\(llm_gateway VERSION ([0-9.]+)/.exec(fs.readFileSync(path.join(REPO_ROOT, 'CMakeLists.txt'), 'utf8'))[1];
  assert.equal(labels['org.opencontainers.image.version'], version);
  assert.equal(labels['org.opencontainers.image.revision'], process.env.LLMGW_IMAGE_REVISION ?? labels['org.opencontainers.image.revision']);
  assert.match(labels['org.opencontainers.image.revision'], /^[0-9a-f]{40}$/);
  assert.ok(labels['org.opencontainers.image.source']);
  const r = spawnSync('buildah', ['run', '--isolation', 'chroot', ctr, '--', BIN, '--version'], { env: ENV, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), `llm-gateway ${version}`);
});

test('root filesystem: no shell or package manager, only what the binary needs, under 30 MB', { skip: SKIP }, (t) => {
  const files = [];
  let bytes = 0;
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else {
        files.push(`/${path.relative(mnt, p)}`);
        if (e.isFile()) bytes += fs.statSync(p).size;
      }
    }
  };
  walk(mnt);
  for (const f of ['/bin/sh', '/usr/bin/sh', '/bin/bash', '/bin/busybox', '/usr/bin/apt', '/usr/bin/apt-get', '/usr/bin/dpkg', '/var/lib/dpkg/status']) {
    assert.ok(!fs.existsSync(path.join(mnt, f)), `${f} is in the image`);
  }
  const allowed = [
    BIN,
    /^\/(usr\/)?lib(64)?\/[^/]+\.so[.0-9]*$/,
    /^\/(usr\/)?lib\/x86_64-linux-gnu\/[^/]+\.so[.0-9]*$/,
    /^\/(usr\/)?lib\/aarch64-linux-gnu\/[^/]+\.so[.0-9]*$/,
    '/etc/passwd',
    '/etc/group',
    '/etc/nsswitch.conf',
    '/etc/ssl/certs/ca-certificates.crt',
    /^\/etc\/llm-gateway\/[^/]+\.yaml$/,
  ];
  const unexpected = files.filter((f) => !allowed.some((a) => (typeof a === 'string' ? a === f : a.test(f))));
  assert.deepEqual(unexpected, [], 'files beyond the binary, its libraries, the CA bundle, passwd/group and the configuration');
  t.diagnostic(`image root filesystem: ${files.length} files, ${bytes} bytes (${(bytes / 1e6).toFixed(1)} MB)`);
  assert.ok(bytes < LIMIT_BYTES, `${bytes} bytes, over ${LIMIT_BYTES}`);
});

test('served from the image: /healthz, a proxied chat completion, --healthcheck inside, the image user', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const port = await closedPort();
  const url = `http://127.0.0.1:${port}`;
  // chroot isolation shares the host's network namespace: the gateway binds loopback here.
  const proc = spawn(
    'buildah',
    ['run', '--isolation', 'chroot', '--env', `LLM_GATEWAY_LISTEN=127.0.0.1:${port}`, '--env', `AZURE_OPENAI_ENDPOINT=${mock.url}`,
      '--env', 'AZURE_OPENAI_API_KEY=image-test-key', ctr, '--', BIN],
    { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const out = collect(proc);
  t.after(() => proc.exitCode === null && proc.kill('SIGKILL'));
  const pid = await gatewayUnder(proc.pid);
  // A failed assertion must not leave the gateway behind: killing buildah would not end it.
  t.after(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {} // already gone
  });
  await eventually(async () => (await request(`${url}/healthz`, { timeoutMs: 1000 }).catch(() => null))?.status === 200, {
    timeoutMs: 15_000,
    what: `/healthz from the image; stderr: ${out.stderr}`,
  });
  const health = await request(`${url}/healthz`);
  assert.deepEqual(health.json, { status: 'ok' });

  const id = uid();
  const res = await chat(url, { 'x-test-id': id });
  assert.equal(res.status, 200, res.text);
  const rec = await mock.waitForRequest((r) => r.headers['x-test-id'] === id);
  assert.match(rec.path, /^\/openai\/deployments\/gpt-4o\/chat\/completions/);
  assert.equal(rec.headers['api-key'], 'image-test-key');

  // The image's user, not root: all of real, effective, saved and filesystem ids.
  const [uidS, gidS] = config.User.split(':');
  assert.deepEqual(statusField(pid, 'Uid'), [uidS, uidS, uidS, uidS]);
  assert.deepEqual(statusField(pid, 'Gid'), [gidS, gidS, gidS, gidS]);

  // The HEALTHCHECK's command, run inside the image.
  const hc = (u) => spawnSync('buildah', ['run', '--isolation', 'chroot', ctr, '--', BIN, '--healthcheck', u], { env: ENV, encoding: 'utf8' });
  const healthy = hc(`${url}/healthz`);
  assert.equal(healthy.status, 0, healthy.stderr);
  const dead = hc(`http://127.0.0.1:${await closedPort()}/healthz`);
  assert.equal(dead.status, 1);
  assert.match(dead.stderr, /healthcheck .*refused/i);

  process.kill(pid, 'SIGTERM');
  const { code } = await out.exited;
  assert.equal(code, 0, out.stderr);
});

test('as PID 1 on a read-only root: SIGTERM drains an in-flight stream, then exit 0', {
  skip: SKIP || (process.getuid() !== 0 && 'needs root (mount and PID namespaces)'),
  timeout: 60_000,
}, async (t) => {
  const mock = await startMock();
  t.after(() => mock.close());
  const port = await closedPort();
  const url = `http://127.0.0.1:${port}`;
  const root = tmpDir('llmgw-image-ro-');
  const [uidS, gidS] = config.User.split(':');
  const env = config.Env.filter((e) => !e.startsWith('LLM_GATEWAY_LISTEN=')).concat([
    `LLM_GATEWAY_LISTEN=127.0.0.1:${port}`,
    `AZURE_OPENAI_ENDPOINT=${mock.url}`,
    'AZURE_OPENAI_API_KEY=image-test-key',
  ]);
  // A private mount namespace: the image read-only at `root`, /proc of the new PID namespace and
  // the host's /dev inside it (a container runtime provides both); then the gateway replaces the
  // shell as PID 1, as the image's user with exactly the image's environment.
  const script = [
    'set -e',
    `mount --bind "${mnt}" "${root}"`,
    `mount -o remount,bind,ro "${root}"`,
    `mount -t proc proc "${root}/proc"`,
    `mount --rbind /dev "${root}/dev"`,
    `exec env -i ${env.map((e) => `'${e}'`).join(' ')} chroot --userspec=${uidS}:${gidS} "${root}" ${BIN}`,
  ].join('\n');
  const proc = spawn('unshare', ['--pid', '--fork', '--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = collect(proc);
  t.after(() => proc.exitCode === null && proc.kill('SIGKILL'));
  const pid = await gatewayUnder(proc.pid);
  // Killing PID 1 ends its namespace; unshare then exits too.
  t.after(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {} // already gone
  });
  assert.equal(statusField(pid, 'NSpid').at(-1), '1', 'the gateway is PID 1 of its namespace');
  await eventually(async () => (await request(`${url}/healthz`, { timeoutMs: 1000 }).catch(() => null))?.status === 200, {
    timeoutMs: 15_000,
    what: `/healthz as PID 1; stderr: ${out.stderr}`,
  });
  assert.ok(fs.readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').some((l) => / \/ \/ ro[ ,]/.test(l)), 'its root is mounted read-only');

  const tag = uid('drain');
  const s = streamRequest(`${url}/v1/chat/completions`, {
    headers: { 'x-mock-scenario': 'gated-stream', 'x-mock-tag': tag },
    body: { model: 'gpt-4o', stream: true, messages: [] },
  });
  await s.waitFor((text) => text.includes('\n\n'));
  await mock.waitGated(tag);
  process.kill(pid, 'SIGTERM');
  await eventually(() => tcpConnectRefused(port), { timeoutMs: 5000, what: 'the listener closed by SIGTERM' });
  assert.equal(proc.exitCode, null, 'still draining while the stream is open');
  mock.release(tag);
  const done = await s.done;
  assert.equal(done.complete, true, 'the in-flight stream completes');
  assert.equal(parseSSE(done.body.toString()).at(-1).data, '[DONE]');
  const { code } = await out.exited;
  assert.equal(code, 0, `exit status of PID 1; stderr: ${out.stderr}`);
});
