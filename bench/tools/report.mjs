#!/usr/bin/env node
// Turns bench/run.sh's raw records (JSON lines) into the Markdown report with ratios and verdicts.
//   node report.mjs META.json RAW.jsonl > report.md
import { readFileSync } from 'node:fs';

const [metaFile, rawFile] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
const records = readFileSync(rawFile, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));

// ------------------------------------------------------------------------------------------------
const median = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const max = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x));
  return v.length ? Math.max(...v) : null;
};
const sum = (xs) => xs.reduce((a, b) => a + (b ?? 0), 0);
const dash = '–';
const fmtInt = (x) => (x === null || x === undefined ? dash : Math.round(x).toLocaleString('en-US'));
const fmtK = (x) => (x === null ? dash : x >= 10000 ? `${(x / 1000).toFixed(1)}k` : fmtInt(x));
const fmtUs = (us) => {
  if (us === null || us === undefined || !Number.isFinite(us)) return dash;
  if (Math.abs(us) < 1000) return `${Math.round(us)} µs`;
  if (Math.abs(us) < 100000) return `${(us / 1000).toFixed(2)} ms`;
  return `${(us / 1000).toFixed(0)} ms`;
};
const fmtMs = (ms) => (ms === null || ms === undefined ? dash : fmtUs(ms * 1000));
const fmtSignedUs = (us) => (us === null || !Number.isFinite(us) ? dash : `${us >= 0 ? '+' : '−'}${fmtUs(Math.abs(us))}`);
const fmtSignedMs = (ms) => (ms === null ? dash : fmtSignedUs(ms * 1000));
const fmtMiB = (kib) => (kib === null || kib === undefined ? dash : `${(kib / 1024).toFixed(1)} MiB`);
const fmtRatio = (x) => (x === null || !Number.isFinite(x) ? dash : `${x.toFixed(2)}×`);
const ratio = (a, b) => (a === null || b === null || !b ? null : a / b);
const verdict = (ok) => (ok === null ? 'n/a' : ok ? '**PASS**' : '**FAIL**');

const out = [];
const p = (s = '') => out.push(s);
const table = (head, rows) => {
  p(`| ${head.join(' | ')} |`);
  p(`|${head.map((h, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
  for (const r of rows) p(`| ${r.join(' | ')} |`);
  p();
};

const LABEL = {
  direct: 'upstream direct',
  nginx: 'nginx reverse proxy',
  gateway: 'llm-gateway (bare)',
  'gateway-threads0': 'llm-gateway (bare, threads: 0 default)',
  'gateway-keys-memory': 'llm-gateway + key + limiter (memory)',
  'gateway-keys-redis': 'llm-gateway + key + limiter (redis)',
  'gateway-all-on': 'llm-gateway, all on (key, limiter, access log, metrics)',
};
const label = (t) => LABEL[t] ?? t;

// ------------------------------------------------------------------------------------------------
// Closed loop
function closedStats(workload) {
  const byTarget = new Map();
  for (const r of records.filter((x) => x.kind === 'closed' && x.workload === workload)) {
    if (!byTarget.has(r.target)) byTarget.set(r.target, []);
    byTarget.get(r.target).push(r);
  }
  const stats = new Map();
  for (const [t, rs] of byTarget) {
    const ok = rs.filter((r) => r.wrk);
    const rps = ok.map((r) => r.wrk.requests / (r.wrk.duration_us / 1e6));
    const perReq = (ticks, r) => (ticks === null ? null : ((ticks / r.clk_tck) * 1e6) / Math.max(1, r.wrk.requests)); // µs of CPU per request
    const errs = ok.map((r) => r.wrk.errors);
    stats.set(t, {
      runs: rs.length,
      rpsRounds: rps,
      rps: median(rps),
      p50: median(ok.map((r) => r.wrk.latency_us.p50)),
      p90: median(ok.map((r) => r.wrk.latency_us.p90)),
      p99: median(ok.map((r) => r.wrk.latency_us.p99)),
      p999: median(ok.map((r) => r.wrk.latency_us.p999)),
      hwm: max(rs.map((r) => r.proxy_hwm_kib)),
      rssEnd: rs.length ? rs[rs.length - 1].proxy_rss_kib : null,
      rssFirst: rs.length ? rs[0].proxy_rss_kib : null,
      cpuUs: median(ok.map((r) => perReq(r.proxy_cpu_ticks, r))),
      upCpuUs: median(ok.map((r) => perReq(r.upstream_cpu_ticks, r))),
      auxCpuUs: median(ok.map((r) => perReq(r.aux_cpu_ticks, r))),
      non2xx: sum(errs.map((e) => e.status)),
      sockErr: sum(errs.map((e) => e.connect + e.read + e.write + e.timeout)),
      failedRuns: rs.length - ok.length,
      requests: sum(ok.map((r) => r.wrk.requests)),
      logLines: rs.map((r) => [r.access_log_lines, r.metrics_requests_delta, r.wrk?.requests ?? null, r.conns]),
    });
  }
  return stats;
}

function closedTable(stats) {
  const rows = [];
  for (const [t, s] of stats) {
    const errors = s.non2xx + s.sockErr + s.failedRuns;
    rows.push([
      label(t),
      `**${fmtInt(s.rps)}**`,
      s.rpsRounds.map(fmtK).join(' · '),
      fmtUs(s.p50),
      fmtUs(s.p99),
      fmtUs(s.p999),
      fmtMiB(s.hwm),
      s.cpuUs === null ? dash : `${(s.cpuUs).toFixed(1)} ms`,
      s.upCpuUs === null ? dash : `${(s.upCpuUs).toFixed(1)} ms`,
      errors ? `**${s.non2xx} non-2xx, ${s.sockErr} socket${s.failedRuns ? `, ${s.failedRuns} failed runs` : ''}**` : '0',
    ]);
  }
  table(
    ['target', 'req/s (median)', 'req/s per round', 'p50', 'p99', 'p99.9', 'proxy peak RSS', 'proxy CPU / 1k req', 'upstream CPU / 1k req', 'errors'],
    rows,
  );
}

function ratioLines(stats) {
  const g = stats.get('gateway');
  const n = stats.get('nginx');
  const d = stats.get('direct');
  if (!g) return;
  const line = (other, name) =>
    other
      ? `gateway / ${name}: throughput ${fmtRatio(ratio(g.rps, other.rps))}, p50 ${fmtRatio(ratio(g.p50, other.p50))}, p99 ${fmtRatio(ratio(g.p99, other.p99))}, p99.9 ${fmtRatio(ratio(g.p999, other.p999))}, CPU per request ${fmtRatio(ratio(g.cpuUs, other.cpuUs))}, peak RSS ${fmtRatio(ratio(g.hwm, other.hwm))}`
      : null;
  const a = line(n, 'nginx');
  const b = d
    ? `gateway / direct: throughput ${fmtRatio(ratio(g.rps, d.rps))}, p50 ${fmtRatio(ratio(g.p50, d.p50))}, p99 ${fmtRatio(ratio(g.p99, d.p99))}, p99.9 ${fmtRatio(ratio(g.p999, d.p999))}`
    : null;
  const c = n && d ? `nginx / direct: throughput ${fmtRatio(ratio(n.rps, d.rps))}, p50 ${fmtRatio(ratio(n.p50, d.p50))}, p99 ${fmtRatio(ratio(n.p99, d.p99))}` : null;
  for (const l of [a, b, c]) if (l) p(`- ${l}`);
  const t0 = stats.get('gateway-threads0');
  if (t0)
    p(
      `- threads: 0 (default; ${meta.gw_threads0_workers} workers on CPUs ${meta.all_cpus}, sharing CPU ${meta.load_cpu} with wrk) / threads: 1: throughput ${fmtRatio(ratio(t0.rps, g.rps))}, p99 ${fmtRatio(ratio(t0.p99, g.p99))}, CPU per request ${fmtRatio(ratio(t0.cpuUs, g.cpuUs))}${n ? `; threads: 0 / nginx (1 worker, CPU ${meta.sut_cpu} only): throughput ${fmtRatio(ratio(t0.rps, n.rps))}, p99 ${fmtRatio(ratio(t0.p99, n.p99))}, CPU per request ${fmtRatio(ratio(t0.cpuUs, n.cpuUs))}` : ''}`,
    );
  p();
}

const chat = closedStats('chat');
const sse = closedStats('sse');

// ------------------------------------------------------------------------------------------------
// Open loop
const openByTarget = new Map();
for (const r of records.filter((x) => x.kind === 'open')) {
  if (!openByTarget.has(r.target)) openByTarget.set(r.target, []);
  openByTarget.get(r.target).push(r);
}
const open = new Map();
for (const [t, rs] of openByTarget) {
  const ok = rs.filter((r) => r.h2load);
  open.set(t, {
    offered: rs[0].rate,
    achieved: median(ok.map((r) => r.h2load.rate)),
    p50: median(ok.map((r) => r.h2load.latency_us.p50)),
    p90: median(ok.map((r) => r.h2load.latency_us.p90)),
    p99: median(ok.map((r) => r.h2load.latency_us.p99)),
    p999: median(ok.map((r) => r.h2load.latency_us.p999)),
    max: max(ok.map((r) => r.h2load.latency_us.max)),
    cpuPct: median(ok.map((r) => (r.proxy_cpu_ticks === null ? null : (100 * r.proxy_cpu_ticks) / r.clk_tck / (r.duration_s + 1)))),
    non2xx: sum(ok.map((r) => r.h2load.non2xx)),
    failed: rs.length - ok.length,
    rounds: rs.length,
  });
}

// ------------------------------------------------------------------------------------------------
// Streams
const streamDirect = records.find((r) => r.kind === 'stream' && r.target === 'direct');
const streamGw = records.find((r) => r.kind === 'stream' && r.target === 'gateway');
const streamAfter = records.find((r) => r.kind === 'stream-after');
const streamNginx = records.find((r) => r.kind === 'stream' && r.target === 'nginx');
const sd = streamDirect?.result ?? null;
const sn = streamNginx?.result ?? null;
const sg = streamGw?.result ?? null;
const addedTtfbP99 = sd && sg && sd.ttfb_ms.p99 !== null && sg.ttfb_ms.p99 !== null ? sg.ttfb_ms.p99 - sd.ttfb_ms.p99 : null;
const addedEventP99 =
  sd && sg && sd.event_latency_ms.p99 !== null && sg.event_latency_ms.p99 !== null ? sg.event_latency_ms.p99 - sd.event_latency_ms.p99 : null;
// Proxy CPU per relayed event over the whole streaming run (connection setup included), µs.
const cpuPerEvent = (x) => (x && x.result && x.cpu_ticks !== null && x.cpu_ticks !== undefined ? ((x.cpu_ticks / x.clk_tck) * 1e6) / Math.max(1, x.result.event_latency_ms.n) : null);
const streamCpuN = cpuPerEvent(streamNginx);
const streamCpuG = cpuPerEvent(streamGw);
const rssOpen = sg ? sg.rss_all_open_kib ?? null : null;
// When not all streams were open at the same moment, the peak RSS while streams were open is the
// (pessimistic) stand-in for the verdict.
const rssForVerdict = rssOpen ?? (sg ? sg.rss_max_kib ?? null : null);

// ------------------------------------------------------------------------------------------------
// Verdicts
const g = chat.get('gateway');
const n = chat.get('nginx');
const all = chat.get('gateway-all-on');
const soak = records.find((r) => r.kind === 'soak');
const checks = records.filter((r) => r.kind === 'check');
const verdicts = [];
const known = (...xs) => xs.every((x) => x !== null && x !== undefined && Number.isFinite(x));
const fmtCpu = (us) => (us === null || us === undefined ? dash : `${us.toFixed(1)} µs`);
verdicts.push([
  'non-streaming throughput ≥ 1.0 × nginx (threads: 1 vs 1 worker)',
  g && n ? `${fmtInt(g.rps)} vs ${fmtInt(n.rps)} req/s = ${fmtRatio(ratio(g.rps, n.rps))}` : dash,
  verdict(g && n && known(g.rps, n.rps) ? g.rps >= n.rps : null),
]);
verdicts.push([
  'non-streaming CPU per request ≤ 1.0 × nginx (threads: 1 vs 1 worker)',
  g && n && known(g.cpuUs, n.cpuUs) ? `${fmtCpu(g.cpuUs)} vs ${fmtCpu(n.cpuUs)} = ${fmtRatio(ratio(g.cpuUs, n.cpuUs))}` : dash,
  verdict(g && n && known(g.cpuUs, n.cpuUs) ? g.cpuUs <= n.cpuUs : null),
]);
verdicts.push([
  'non-streaming p99 ≤ 1.0 × nginx',
  g && n ? `${fmtUs(g.p99)} vs ${fmtUs(n.p99)} = ${fmtRatio(ratio(g.p99, n.p99))}` : dash,
  verdict(g && n && known(g.p99, n.p99) ? g.p99 <= n.p99 : null),
]);
{
  const gS = sse.get('gateway');
  const nS = sse.get('nginx');
  verdicts.push([
    'fixed SSE body (21 events) throughput ≥ 1.0 × nginx',
    gS && nS
      ? `${fmtInt(gS.rps)} vs ${fmtInt(nS.rps)} req/s = ${fmtRatio(ratio(gS.rps, nS.rps))}; CPU per stream ${fmtCpu(gS.cpuUs)} vs ${fmtCpu(nS.cpuUs)} = ${fmtRatio(ratio(gS.cpuUs, nS.cpuUs))}`
      : dash,
    verdict(gS && nS && known(gS.rps, nS.rps) ? gS.rps >= nS.rps : null),
  ]);
}
verdicts.push([
  `streams: proxy CPU per relayed event ≤ nginx's (${meta.streams} paced streams)`,
  known(streamCpuG, streamCpuN) ? `${fmtCpu(streamCpuG)} vs ${fmtCpu(streamCpuN)} = ${fmtRatio(ratio(streamCpuG, streamCpuN))}` : dash,
  verdict(known(streamCpuG, streamCpuN) ? streamCpuG <= streamCpuN : null),
]);
verdicts.push([
  `added time to first byte, p99, ${meta.streams} concurrent streams < 1 ms`,
  addedTtfbP99 === null ? dash : `${fmtMs(sg.ttfb_ms.p99)} vs ${fmtMs(sd.ttfb_ms.p99)} direct = ${fmtSignedMs(addedTtfbP99)}`,
  verdict(addedTtfbP99 === null ? null : addedTtfbP99 < 1 && sg.all_open_reached),
]);
verdicts.push([
  `added delivery latency of every event, p99, ${meta.streams} concurrent streams < 1 ms`,
  addedEventP99 === null ? dash : `${fmtMs(sg.event_latency_ms.p99)} vs ${fmtMs(sd.event_latency_ms.p99)} direct = ${fmtSignedMs(addedEventP99)}`,
  verdict(addedEventP99 === null ? null : addedEventP99 < 1 && sg.all_open_reached),
]);
verdicts.push([
  `gateway RSS with ${meta.streams} streams open < 64 MiB`,
  rssOpen === null
    ? sg
      ? `all ${meta.streams} were never open at once (at most ${sg.max_open}); peak while streaming ${fmtMiB(sg.rss_max_kib)}`
      : dash
    : `${fmtMiB(rssOpen)} (peak during the run ${fmtMiB(sg.rss_max_kib)})`,
  verdict(rssForVerdict === null ? null : rssForVerdict < 64 * 1024),
]);
verdicts.push([
  'everything on (key, limiter, access log, metrics): throughput within 10 % of bare',
  g && all ? `${fmtInt(all.rps)} vs ${fmtInt(g.rps)} req/s = ${fmtRatio(ratio(all.rps, g.rps))}` : dash,
  verdict(g && all && g.rps !== null && all.rps !== null ? all.rps >= 0.9 * g.rps : null),
]);
{
  const gm = chat.get('gateway-keys-memory');
  const gr = chat.get('gateway-keys-redis');
  verdicts.push([
    'redis limiter: throughput within 20 % of the memory limiter',
    gm && gr ? `${fmtInt(gr.rps)} vs ${fmtInt(gm.rps)} req/s = ${fmtRatio(ratio(gr.rps, gm.rps))}` : gm ? 'not run (no redis-server)' : dash,
    verdict(gm && gr && known(gm.rps, gr.rps) ? gr.rps >= 0.8 * gm.rps : null),
  ]);
}
{
  const t0 = chat.get('gateway-threads0');
  if (t0)
    verdicts.push([
      `default configuration, threads: 0 (${meta.gw_threads0_workers} workers on CPUs ${meta.all_cpus}, sharing CPU ${meta.load_cpu} with wrk): information, no target`,
      `${fmtInt(t0.rps)} req/s = ${fmtRatio(ratio(t0.rps, g?.rps ?? null))} threads: 1, ${fmtRatio(ratio(t0.rps, n?.rps ?? null))} nginx (1 worker); CPU per request ${fmtCpu(t0.cpuUs)} = ${fmtRatio(ratio(t0.cpuUs, n?.cpuUs ?? null))} nginx`,
      'info',
    ]);
}
let soakVerdict = null;
let soakText = 'not run (`--soak`)';
if (soak) {
  const samples = soak.rss_samples_kib.filter(([, v]) => v !== null);
  // Reference: the sample at 60 s (after warm-up and allocator growth); for a shorter soak, at a
  // fifth of its length.
  const refAt = Math.min(60, soak.seconds / 5);
  const ref = samples.find(([t]) => t >= refAt) ?? samples[0];
  const later = samples.filter(([t]) => t >= (ref ? ref[0] : 0));
  if (ref && later.length) {
    const hi = Math.max(...later.map(([, v]) => v));
    const lo = Math.min(...later.map(([, v]) => v));
    const end = later[later.length - 1][1];
    soakVerdict = hi <= ref[1] * 1.05 && lo >= ref[1] * 0.95;
    soakText = `RSS at ${ref[0]} s ${fmtMiB(ref[1])}, then ${fmtMiB(lo)}–${fmtMiB(hi)}, at the end ${fmtMiB(end)} (${soak.seconds} s at ${soak.rate} req/s${soak.h2load ? `, ${fmtInt(soak.h2load.requests)} requests, ${soak.h2load.non2xx} non-2xx` : ''})`;
  }
}
verdicts.push(['soak: RSS flat within ±5 % after the first minute', soakText, verdict(soakVerdict)]);
const errorSources = [];
for (const [name, st] of [
  ['closed-loop chat', chat],
  ['closed-loop SSE', sse],
]) {
  for (const [t, s] of st) if (s.non2xx + s.sockErr + s.failedRuns) errorSources.push(`${name} ${t}: ${s.non2xx} non-2xx, ${s.sockErr} socket errors${s.failedRuns ? `, ${s.failedRuns} failed runs` : ''}`);
}
for (const [t, s] of open) if (s.non2xx || s.failed) errorSources.push(`open-loop ${t}: ${s.non2xx} non-2xx${s.failed ? `, ${s.failed} failed runs` : ''}`);
for (const [name, r] of [
  ['streams direct', sd],
  ['streams nginx', sn],
  ['streams gateway', sg],
]) {
  if (!r) errorSources.push(`${name}: no result`);
  else if (Object.keys(r.errors).length) errorSources.push(`${name}: ${JSON.stringify(r.errors)}`);
}
for (const r of records.filter((x) => x.kind === 'body')) {
  if (!r.wrk) errorSources.push(`body ${r.size_mib} MiB ${r.target}: no result`);
  else {
    const e = r.wrk.errors;
    const k = e.status + e.connect + e.read + e.write + e.timeout;
    if (k) errorSources.push(`body ${r.size_mib} MiB ${r.target}: ${e.status} non-2xx, ${k - e.status} socket errors`);
  }
}
const failedChecks = checks.filter((c) => !c.ok);
verdicts.push([
  'no errors: every response 2xx, no socket errors, all checks pass',
  errorSources.length || failedChecks.length ? [...errorSources, ...failedChecks.map((c) => `check: ${c.name}`)].join('; ') : `${checks.length} checks, 0 errors`,
  verdict(!errorSources.length && !failedChecks.length),
]);

// ------------------------------------------------------------------------------------------------
p(`## llm-gateway benchmark${meta.mode === 'quick' ? ' (quick smoke run: indicative only)' : ''}`);
p();
p(
  `${meta.finished_at} · git ${meta.git} · ${meta.cpu}, ${meta.nproc} CPUs, Linux ${meta.kernel} · nginx ${meta.nginx}, wrk ${meta.wrk}, h2load ${meta.h2load}, Node ${meta.node}${meta.redis ? `, redis ${meta.redis}` : ''} · load average before ${meta.load_before}, after ${meta.load_after}`,
);
p();
p(
  `Load generator pinned to CPU ${meta.load_cpu}; upstream nginx, proxy under test (nginx: 1 worker; llm-gateway: \`server.threads: 1\`), paced SSE upstream and redis pinned to CPU ${meta.sut_cpu}.${chat.has('gateway-threads0') ? ` Exception: the "threads: 0" gateway (the default configuration, one worker per CPU: ${meta.gw_threads0_workers} workers) may run on CPUs ${meta.all_cpus}, so it shares CPU ${meta.load_cpu} with the load generator; its numbers are information, not a like-for-like comparison with the 1-worker nginx.` : ''} Loopback only. Closed loop: \`wrk -t1 -c${meta.conns}\`, ${meta.duration} s per run, ${meta.rounds} round(s), targets alternated each round after a ${meta.warmup} s warm-up each; medians over rounds.`,
);
p();
p('### Verdicts');
p();
table(['target', 'measured', 'verdict'], verdicts);

p(`### Non-streaming chat completions, closed loop (2 KB request, 1.4 KB Azure response)`);
p();
closedTable(chat);
ratioLines(chat);
p(
  'Proxy peak RSS is VmHWM of the proxy process (the nginx worker; the gateway process), reset before each run. CPU / 1k requests is utime + stime of that process over the run divided by the requests (ms per 1,000 requests = µs per request). Upstream CPU is the upstream nginx worker.',
);
p();

if (sse.size) {
  p('### Streaming chat completions with a fixed 9.6 KB SSE body (21 events, no pacing), closed loop');
  p();
  closedTable(sse);
  ratioLines(sse);
}

if (open.size) {
  const d = open.get('direct');
  p(`### Fixed request rate (open loop): h2load --h1, ${meta.ol_conns} connections sharing ${open.values().next().value.offered} req/s, ${meta.ol_duration} s, ${meta.ol_rounds} round(s)`);
  p();
  const rows = [];
  for (const [t, s] of open) {
    rows.push([
      label(t),
      fmtInt(s.achieved),
      fmtUs(s.p50),
      fmtUs(s.p90),
      fmtUs(s.p99),
      fmtUs(s.p999),
      fmtUs(s.max),
      d && t !== 'direct' ? `${fmtSignedUs(s.p50 - d.p50)} / ${fmtSignedUs(s.p99 - d.p99)}` : dash,
      s.cpuPct === null ? dash : `${s.cpuPct.toFixed(0)} %`,
      s.non2xx || s.failed ? `**${s.non2xx}${s.failed ? ` (+${s.failed} failed runs)` : ''}**` : '0',
    ]);
  }
  table(['target', 'achieved req/s', 'p50', 'p90', 'p99', 'p99.9', 'max', 'added p50 / p99 vs direct', 'proxy CPU (one core)', 'non-2xx'], rows);
  const gO = open.get('gateway');
  const nO = open.get('nginx');
  if (gO && nO) p(`- gateway / nginx at the fixed rate: p50 ${fmtRatio(ratio(gO.p50, nO.p50))}, p99 ${fmtRatio(ratio(gO.p99, nO.p99))}, CPU ${fmtRatio(ratio(gO.cpuPct, nO.cpuPct))}`);
  p('- Latency is per request from h2load\'s log (µs resolution); each connection sends at its own fixed rate, so a stall delays that connection\'s next request (h2load does not correct for coordinated omission; at this rate the connections are idle >95 % of the time).');
  p();
}

if (sd || sn || sg) {
  p(
    `### ${meta.streams} concurrent SSE streams from a paced upstream (${meta.stream_chunks} events, one every ${meta.stream_interval_ms} ms; streams opened over ${meta.stream_ramp_ms} ms)`,
  );
  p();
  const cols = [sd, sn, sg];
  const row = (name, f) => {
    const v = cols.map((r) => (r ? f(r) : null));
    const add = (x) => (x !== null && x !== undefined && v[0] !== null && v[0] !== undefined ? fmtSignedMs(x - v[0]) : dash);
    return [name, ...v.map(fmtMs), add(v[1]), add(v[2])];
  };
  const status = (r) => (r ? `${r.ok}/${r.streams}${Object.keys(r.errors).length ? ` ${JSON.stringify(r.errors)}` : ''}` : dash);
  const rows = [
    row('time to first byte p50 (request sent → first event)', (r) => r.ttfb_ms.p50),
    row('time to first byte p99', (r) => r.ttfb_ms.p99),
    row('first event delivery p50 (upstream send → client receive)', (r) => r.first_event_latency_ms.p50),
    row('first event delivery p99', (r) => r.first_event_latency_ms.p99),
    row('every event delivery p50', (r) => r.event_latency_ms.p50),
    row('every event delivery p99', (r) => r.event_latency_ms.p99),
    row('every event delivery p99.9', (r) => r.event_latency_ms.p999),
    row(`inter-event gap p50 (paced at ${meta.stream_interval_ms} ms)`, (r) => r.gap_ms.p50),
    row('inter-event gap p99', (r) => r.gap_ms.p99),
    ['streams complete / errors', ...cols.map(status), '', ''],
    ['most streams open at once', ...cols.map((r) => (r ? fmtInt(r.max_open) : dash)), '', ''],
    [
      'proxy RSS: idle / all streams open / peak',
      dash,
      ...[streamNginx, streamGw].map((x) =>
        x && x.result ? `${fmtMiB(x.idle_rss_kib)} / ${fmtMiB(x.result.rss_all_open_kib)} / ${fmtMiB(x.hwm_kib)}` : dash,
      ),
      '',
      '',
    ],
    [
      'proxy CPU per relayed event (connection setup included)',
      dash,
      ...[streamCpuN, streamCpuG].map((c) => (c === null ? dash : `${c.toFixed(1)} µs`)),
      '',
      '',
    ],
  ];
  table(['', 'direct', 'through nginx', 'through llm-gateway', 'added by nginx', 'added by llm-gateway'], rows);
  if (sg) {
    const idle = streamGw.idle_rss_kib;
    const perStream = rssOpen !== null && idle !== null ? ((rssOpen - idle) * 1024) / meta.streams : null;
    p(
      `- llm-gateway RSS: ${fmtMiB(idle)} idle, **${fmtMiB(rssOpen)} with all ${meta.streams} streams open** (≈ ${perStream === null ? dash : `${(perStream / 1024).toFixed(1)} KiB`} per stream, client and upstream connection together), peak ${fmtMiB(streamGw.hwm_kib)}, ${fmtMiB(streamAfter?.gateway_rss_kib ?? null)} 2 s after the streams ended.`,
    );
  }
  p('- Delivery latency compares the receive time with the send time the upstream wrote into each event (CLOCK_MONOTONIC, same machine), so it measures everything between the upstream\'s write and the client\'s read; "added" is the proxied column minus direct. The paced upstream, the proxy and the client share the two CPUs, so a proxy that needs more CPU per event also delays the upstream\'s timers.');
  p();
}
const bodies = records.filter((r) => r.kind === 'body');
if (bodies.length) {
  p(`### Large request bodies to /v1/embeddings (wrk -t1 -c${meta.body_conns}, ${meta.body_duration} s per run)`);
  p();
  const rows = [];
  for (const r of bodies) {
    const w = r.wrk;
    const rps = w ? w.requests / (w.duration_us / 1e6) : null;
    const mbps = rps === null ? null : (rps * r.bytes) / 1e6;
    const grown = r.proxy_hwm_kib !== null && r.proxy_base_rss_kib !== null ? r.proxy_hwm_kib - r.proxy_base_rss_kib : null;
    const copies = grown === null ? null : (grown * 1024) / (r.conns * r.bytes);
    const expect = r.proxy_base_rss_kib === null ? null : r.proxy_base_rss_kib + (r.conns * r.bytes) / 1024;
    const e = w ? w.errors.status + w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout : null;
    rows.push([
      `${r.size_mib} MiB`,
      label(r.target),
      rps === null ? dash : rps.toFixed(1),
      mbps === null ? dash : `${fmtInt(mbps)} MB/s`,
      w ? fmtUs(w.latency_us.p50) : dash,
      w ? fmtUs(w.latency_us.p99) : dash,
      fmtMiB(r.proxy_base_rss_kib),
      fmtMiB(r.proxy_hwm_kib),
      r.target === 'gateway' ? fmtMiB(expect) : dash,
      r.target === 'gateway' && copies !== null ? copies.toFixed(2) : dash,
      e === null ? '**no result**' : e ? `**${e}**` : '0',
    ]);
  }
  table(['body', 'target', 'req/s', 'throughput', 'p50', 'p99', 'proxy RSS before', 'proxy peak RSS', 'expected ≈ base + c × body', 'bodies held per connection', 'errors'], rows);
  p(
    '- Expectation: the gateway reads a request body once into memory (it routes on `model`) and writes it upstream from that buffer, so its peak RSS ≈ base + concurrency × body size, i.e. "bodies held per connection" ≈ 1. Markedly above 1 means the body is copied (or its buffer grown by reallocation) more than needed. nginx (`proxy_request_buffering on`, the default) spools bodies above 16 KiB to a temp file instead, which is why its RSS stays flat; the upstream discards them.',
  );
  p();
}

{
  const gm = chat.get('gateway-keys-memory');
  const gr = chat.get('gateway-keys-redis');
  if (g && (gm || gr || all)) {
    p('### Admission cost of the client key and rate limiter (end to end)');
    p();
    const rows = [];
    for (const [name, s] of [
      ['key + limiter, memory store', gm],
      ['key + limiter, redis store', gr],
      ['everything on (key, memory limiter, access log to a file, metrics scraped)', all],
    ]) {
      if (!s) continue;
      const dRps = s.rps && g.rps ? 1e6 / s.rps - 1e6 / g.rps : null;
      const dCpu = s.cpuUs !== null && g.cpuUs !== null ? s.cpuUs - g.cpuUs : null;
      rows.push([
        name,
        fmtInt(g.rps),
        fmtInt(s.rps),
        fmtRatio(ratio(s.rps, g.rps)),
        dRps === null ? dash : `${dRps.toFixed(2)} µs`,
        dCpu === null ? dash : `${dCpu.toFixed(2)} µs`,
        s.auxCpuUs === null ? dash : `${s.auxCpuUs.toFixed(2)} µs`,
        fmtUs(s.p99),
      ]);
    }
    table(['configuration', 'req/s bare', 'req/s with', 'ratio', 'cost per request from throughput (1e6/rps_with − 1e6/rps_bare)', 'gateway CPU per request, difference', 'redis-server CPU per request', 'p99'], rows);
    p('- The bare gateway has no client keys and no access log; metrics are always on in llm-gateway (there is no switch), so "everything on" adds the key check, the limiter, the access log and a /metrics scrape before and after each run. Both cost columns are differences of medians over rounds, so small values are within noise.');
    if (all) {
      const consistency = all.logLines
        .map(([lines, metrics, requests, conns]) =>
          requests === null ? null : `${fmtInt(requests)} completed (wrk), ${fmtInt(lines)} access-log lines, ${fmtInt(metrics)} counted by llm_gateway_requests_total`,
        )
        .filter(Boolean);
      if (consistency.length) p(`- All-on runs, per round: ${consistency.join('; ')}. wrk stops with up to ${meta.conns} requests in flight, so the gateway may count up to ${meta.conns} more.`);
    }
    p();
  }
}

if (soak) {
  p(`### Soak: ${soak.seconds} s at ${soak.rate} req/s through an all-on gateway`);
  p();
  p(`RSS samples (s → MiB): ${soak.rss_samples_kib.map(([t, v]) => `${t}: ${v === null ? dash : (v / 1024).toFixed(1)}`).join(', ')}`);
  if (soak.h2load) p(`\nh2load: ${fmtInt(soak.h2load.requests)} requests, ${soak.h2load.non2xx} non-2xx, p50 ${fmtUs(soak.h2load.latency_us.p50)}, p99 ${fmtUs(soak.h2load.latency_us.p99)}, max ${fmtUs(soak.h2load.latency_us.max)}`);
  p();
}

if (checks.length) {
  p('### Checks');
  p();
  for (const c of checks) p(`- ${c.ok ? '✓' : '✗ **FAILED**'} ${c.name}${!c.ok && c.detail ? `: \`${c.detail.slice(0, 300)}\`` : ''}`);
  p();
}

p(
  'Method: `bench/run.sh` (see bench/README.md). Loopback on a shared 2-CPU VM: compare rows of the same run, not numbers across machines; p99 and above on a VM are noisy, repeat before drawing conclusions from the tails.',
);
process.stdout.write(out.join('\n') + '\n');
