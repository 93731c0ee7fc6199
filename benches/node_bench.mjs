#!/usr/bin/env node
// promptops (Node addon) side by side with handlebars, nunjucks, mustache,
// gpt-tokenizer and js-tiktoken on the shared workload
// (../shared/bench-workload beside the clone, or $PROMPTOPS_WORKLOAD).
//
//   node benches/node_bench.mjs            # builds the addon in release mode first
//   PROMPTOPS_NODE_ADDON=/path/x.node node benches/node_bench.mjs   # use a built addon
//   BENCH_ONLY=R node benches/node_bench.mjs   # only some case groups (comma-separated:
//                                              # T1, T2, B, K, R = routing); no cold starts
//                                              # unless BENCH_COLD_RUNS is set
//
// Methodology follows the workload's BASELINE.md: every throughput case is
// timed in 5 batches of about 0.5 s, each after a 0.2 s warm-up, in several
// fresh processes (ROUNDS); the table gives the median batch, the slowest and
// fastest, and mean µs per op of the median batch, plus the process's CPU over
// wall time in that batch. Outputs and token counts are checked against the
// workload's expected files before anything is timed. Cold starts: COLD_RUNS
// fresh processes per case, median [min – max]. Prints a Markdown report.

import { spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const PKG = path.join(ROOT, 'promptops-node');
const PEERS = path.join(HERE, 'node');
const WORKLOAD = process.env.PROMPTOPS_WORKLOAD || path.resolve(ROOT, '..', 'shared', 'bench-workload');
const ROUNDS = Number(process.env.BENCH_ROUNDS || 3);
const BATCHES = Number(process.env.BENCH_BATCHES || 5);
const BATCH_S = Number(process.env.BENCH_BATCH_S || 0.5);
const WARMUP_S = 0.2;
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((g) => g.trim())) : null;
const COLD_RUNS = Number(process.env.BENCH_COLD_RUNS || (ONLY ? 0 : 10));

const read = (f) => fs.readFileSync(path.join(WORKLOAD, f), 'utf8');

// ---------------------------------------------------------------------------
// Cases (run inside a worker process)

function setup() {
  const require = createRequire(path.join(PEERS, 'package.json'));
  const promptops = createRequire(import.meta.url)(PKG);
  const native = createRequire(import.meta.url)(path.join(PKG, 'binding.js'));
  const Handlebars = require('handlebars');
  const nunjucks = require('nunjucks');
  const Mustache = require('mustache');
  const gptCl = require('gpt-tokenizer/cjs/encoding/cl100k_base');
  const gptO2 = require('gpt-tokenizer/cjs/encoding/o200k_base');
  const { Tiktoken } = require('js-tiktoken/lite');
  const clRanks = require('js-tiktoken/ranks/cl100k_base');
  const o2Ranks = require('js-tiktoken/ranks/o200k_base');

  const t1 = read('t1.txt');
  const t1v = JSON.parse(read('t1_vars.json'));
  const t1e = read('t1_expected.txt');
  const t2 = read('t2.jinja');
  const t2v = JSON.parse(read('t2_vars.json'));
  const t2e = read('t2_expected.txt');
  const corpus = read('corpus.txt');
  const expectedTokens = JSON.parse(read('expected_tokens.json'));

  // promptops: the two templates as a snapshot bundle.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'promptops-node-bench-'));
  const bundle = path.join(dir, 'bundle.json');
  const version = (template) => [{ version: 1, type: 'text', template, config: { provider: 'openai', model: 'gpt-4o-mini' } }];
  fs.writeFileSync(
    bundle,
    JSON.stringify({
      format: 'promptops.snapshot/1',
      project: 'bench',
      revision: 1,
      hash: '',
      prompts: [
        { name: 'bench/t1', versions: version(t1), labels: { production: 1 } },
        { name: 'bench/t2', versions: version(t2), labels: { production: 1 } },
        {
          // T1 with a routing policy (issue 7: decision overhead), as in python_bench.py.
          name: 'bench/t1_routed',
          versions: version(t1),
          labels: { production: 1 },
          policy: {
            strategy: 'weighted',
            targets: [
              { id: 'a', provider: 'openai', model: 'gpt-4o-mini', weight: 70 },
              { id: 'b', provider: 'anthropic', model: 'claude-haiku-4-5', weight: 30 },
            ],
          },
        },
      ],
    }),
  );
  const client = new promptops.Client({ bundle });
  const routeOpts = { routeKey: 'user-42' };
  const p2 = client.get('bench/t2');
  const n2 = p2[Object.getOwnPropertySymbols(p2)[0]]; // the native prompt
  // T1 and T2 are in the portable subset: they must render in JS (plan.js),
  // else the figures below would silently be the addon's.
  for (const [name, vars] of [['bench/t1', t1v], ['bench/t2', t2v]]) {
    const path = client.get(name).render(vars).renderPath;
    if (path !== 'js') throw new Error(`${name} rendered on the ${path} path, expected js`);
  }
  const plans = createRequire(import.meta.url)(path.join(PKG, 'plan.js'));
  const nativeRoute = () => {
    promptops.setJsRender(false);
    try {
      return client.route('bench/t1_routed', t1v, routeOpts);
    } finally {
      promptops.setJsRender(true);
    }
  };
  const native2 = (vars) => {
    promptops.setJsRender(false);
    try {
      return p2.render(vars);
    } finally {
      promptops.setJsRender(true);
    }
  };

  // Peers, compiled once (as in BASELINE.md); HTML escaping off, as prompts need.
  const hb1 = Handlebars.compile(t1, { noEscape: true });
  const hb2 = Handlebars.compile(read('t2.hbs'), { noEscape: true });
  const nj = new nunjucks.Environment(null, { autoescape: false, trimBlocks: true, lstripBlocks: true });
  const nj1 = nunjucks.compile(t1, nj);
  const nj2 = nunjucks.compile(t2, nj);
  const mu1 = t1;
  const mu2 = read('t2.mustache');
  const muOpts = { escape: (s) => String(s) };
  Mustache.parse(mu1);
  Mustache.parse(mu2);
  const noCache = (enc, text) => {
    let off = false;
    return () => {
      if (!off) {
        enc.setMergeCacheSize(0);
        enc.clearMergeCache();
        off = true;
      }
      return enc.countTokens(text);
    };
  };
  const jtCl = new Tiktoken(clRanks);
  const jtO2 = new Tiktoken(o2Ranks);

  const cases = [
    // [group, library, version, case, fn, check]
    ['T1', 'promptops', 'addon', 'T1 get+render', () => client.get('bench/t1').render(t1v).text, t1e],
    ['T1', 'handlebars', '4.7.10', 'T1 render', () => hb1(t1v), t1e],
    ['T1', 'nunjucks', '3.2.4', 'T1 render', () => nj1.render(t1v), t1e],
    ['T1', 'mustache', '4.2.0', 'T1 render', () => Mustache.render(mu1, t1v, undefined, muOpts), t1e],
    ['T2', 'promptops', 'addon', 'T2 get+render', () => client.get('bench/t2').render(t2v).text, t2e],
    ['T2', 'handlebars', '4.7.10', 'T2 render', () => hb2(t2v), t2e],
    ['T2', 'nunjucks', '3.2.4', 'T2 render', () => nj2.render(t2v), t2e],
    ['T2', 'mustache', '4.2.0', 'T2 render', () => Mustache.render(mu2, t2v, undefined, muOpts), t2e],
    // Where the time goes at the boundary (promptops only).
    ['B', 'promptops', 'addon', 'get only (T2)', () => client.get('bench/t2'), null],
    ['B', 'promptops', 'addon', 'render only, in JS from the plan (T2, the default)', () => p2.render(t2v).text, t2e],
    ['B', 'promptops', 'addon', 'render only, native: vars encoded in JS (T2, PROMPTOPS_JS_RENDER=0)', () => native2(t2v).text, t2e],
    ['B', 'promptops', 'addon', 'render, vars walked from Rust via N-API (T2)', () => n2.__renderWalk(t2v), t2e],
    ['B', 'promptops', 'addon', 'render, vars as JSON.stringify text (T2)', () => n2.__renderJson(JSON.stringify(t2v)), t2e],
    ['B', 'promptops', 'addon', 'render + inputTokens (T2)', () => p2.render(t2v).inputTokens, null],
    // Tokens
    ['K', 'promptops', 'addon', 'cl100k_base countTokens', () => promptops.countTokens(corpus, { encoding: 'cl100k_base' }), expectedTokens.cl100k_base],
    ['K', 'gpt-tokenizer', '4.0.0', 'cl100k_base countTokens', () => gptCl.countTokens(corpus), expectedTokens.cl100k_base],
    ['K', 'js-tiktoken', '1.0.21', 'cl100k_base encode', () => jtCl.encode(corpus, [], []).length, expectedTokens.cl100k_base],
    ['K', 'promptops', 'addon', 'o200k_base countTokens', () => promptops.countTokens(corpus, { encoding: 'o200k_base' }), expectedTokens.o200k_base],
    ['K', 'gpt-tokenizer', '4.0.0', 'o200k_base countTokens', () => gptO2.countTokens(corpus), expectedTokens.o200k_base],
    ['K', 'js-tiktoken', '1.0.21', 'o200k_base encode', () => jtO2.encode(corpus, [], []).length, expectedTokens.o200k_base],
    // gpt-tokenizer with its merge cache off: the cost on text it has not
    // seen (these run last: the cache size is per encoding module).
    ['K', 'gpt-tokenizer', '4.0.0', 'cl100k_base countTokens, no merge cache', noCache(gptCl, corpus), expectedTokens.cl100k_base],
    ['K', 'gpt-tokenizer', '4.0.0', 'o200k_base countTokens, no merge cache', noCache(gptO2, corpus), expectedTokens.o200k_base],
    // Routing: the decision object (frozen, with the rendered text) of a
    // 2-target weighted policy on T1, sticky by key.
    ['R', 'promptops', 'addon', 'route (decision + T1 render)', () => client.route('bench/t1_routed', t1v, routeOpts).text, t1e],
    // The same with the target rendered by the addon (variables encoded).
    ['R', 'promptops', 'addon', 'route, native render (PROMPTOPS_JS_RENDER=0)', () => nativeRoute().text, t1e],
    // A prompt without a policy: one target from its config.
    ['R', 'promptops', 'addon', 'route, no policy (T1, the config\'s model)', () => client.route('bench/t1', t1v, routeOpts).text, t1e],
  ];
  const profile = () => {
    // The JS path's phases: the walk over the variables (plan.js checks
    // every value the encoder would read), then the generated render.
    // Wall time, as the tables (process.cpuUsage would add the GC's and
    // the compiler's threads).
    const js = plans.renderer(n2.plan());
    const wallNs = (fn, n) => {
      for (let i = 0; i < n / 5; i++) fn();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) fn();
      return Number(process.hrtime.bigint() - t0) / n;
    };
    const walkNs = wallNs(() => plans.__walk(t2v), 200000);
    const jsRenderNs = wallNs(() => js(t2v), 200000);
    // Phases of the T2 render inside the addon (the native path): [decode vars, core render, JS string].
    const enc = new (createRequire(import.meta.url)(path.join(PKG, 'encode.js')).Encoder)();
    const n = enc.encode(t2v);
    const oneByte = !/[^\u0000-\u00ff]/.test(enc.text);
    n2.__profileRender(enc.text, enc.ops, n, oneByte, 20000);
    // The phases are wall-clock means; on a shared machine they include
    // time the process was not running. Scale them by the run's CPU share.
    const cpu0 = process.cpuUsage();
    const w0 = process.hrtime.bigint();
    const phases = n2.__profileRender(enc.text, enc.ops, n, oneByte, 100000);
    const wall = Number(process.hrtime.bigint() - w0) / 1e3;
    const cpu = process.cpuUsage(cpu0);
    const share = Math.min(1, (cpu.user + cpu.system) / wall);
    // CPU time, like the scaled phases above.
    const c0 = process.cpuUsage();
    for (let i = 0; i < 100000; i++) enc.encode(t2v);
    const c1 = process.cpuUsage(c0);
    const encodeNs = ((c1.user + c1.system) * 1000) / 100000;
    return { walkNs, jsRenderNs, encodeNs, decodeNs: phases[0] * share, renderNs: phases[1] * share, toJsNs: phases[2] * share, share };
  };
  return { cases, profile };
}

function timeBatch(fn, seconds) {
  // Grow the iteration count until one chunk takes ~1/20 of the batch.
  let chunk = 1;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < chunk; i++) fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    if (dt > seconds / 20 || chunk > 1e7) break;
    chunk *= 2;
  }
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let ops = 0;
  let el = 0;
  while (el < seconds) {
    for (let i = 0; i < chunk; i++) fn();
    ops += chunk;
    el = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  const cpu = process.cpuUsage(cpu0);
  return { ops, seconds: el, cpu: (cpu.user + cpu.system) / 1e6 / el };
}

function worker() {
  const { cases, profile } = setup();
  const out = { batches: {}, checks: {}, profile: null };
  for (const [group, lib, ver, name, fn, expect] of cases) {
    if (ONLY && !ONLY.has(group)) continue;
    const key = `${group}|${lib}|${ver}|${name}`;
    const got = fn();
    out.checks[key] = expect === null ? 'n/a' : got === expect ? 'ok' : `MISMATCH`;
    timeBatch(fn, WARMUP_S);
    out.batches[key] = [];
    for (let b = 0; b < BATCHES; b++) out.batches[key].push(timeBatch(fn, BATCH_S));
  }
  if (!ONLY || ONLY.has('B')) out.profile = profile();
  process.stdout.write(JSON.stringify(out));
}

// ---------------------------------------------------------------------------
// Cold start (each in a fresh process)

const COLD = {
  'baseline (node, no require)': `t1 = t0;`,
  promptops: `
    const { Client } = require(${JSON.stringify(PKG)});
    t1 = performance.now();
    const c = new Client({ bundle: process.env.BENCH_BUNDLE });
    const out = c.get('bench/t2').render(JSON.parse(fs.readFileSync(process.env.BENCH_T2_VARS, 'utf8'))).text;
    if (out.length !== 7841) throw new Error('bad render');`,
  'promptops + first countTokens (o200k_base)': `
    const { Client, countTokens } = require(${JSON.stringify(PKG)});
    t1 = performance.now();
    const c = new Client({ bundle: process.env.BENCH_BUNDLE });
    c.get('bench/t2').render(JSON.parse(fs.readFileSync(process.env.BENCH_T2_VARS, 'utf8'))).text;
    if (countTokens('hello world', { encoding: 'o200k_base' }) !== 2) throw new Error('bad count');`,
  handlebars: `
    const H = r('handlebars');
    t1 = performance.now();
    H.compile(fs.readFileSync(process.env.BENCH_T2_HBS, 'utf8'), { noEscape: true })(JSON.parse(fs.readFileSync(process.env.BENCH_T2_VARS, 'utf8')));`,
  'js-tiktoken cl100k_base': `
    const { Tiktoken } = r('js-tiktoken/lite'); const ranks = r('js-tiktoken/ranks/cl100k_base');
    t1 = performance.now();
    if (new Tiktoken(ranks).encode('hello world').length !== 2) throw new Error('bad');`,
  'js-tiktoken o200k_base': `
    const { Tiktoken } = r('js-tiktoken/lite'); const ranks = r('js-tiktoken/ranks/o200k_base');
    t1 = performance.now();
    if (new Tiktoken(ranks).encode('hello world').length !== 2) throw new Error('bad');`,
  'gpt-tokenizer cl100k_base': `
    const g = r('gpt-tokenizer/cjs/encoding/cl100k_base');
    t1 = performance.now();
    if (g.countTokens('hello world') !== 2) throw new Error('bad');`,
  'gpt-tokenizer o200k_base': `
    const g = r('gpt-tokenizer/cjs/encoding/o200k_base');
    t1 = performance.now();
    if (g.countTokens('hello world') !== 2) throw new Error('bad');`,
};

function coldScript(body) {
  return `
    const t0 = performance.now();
    let t1;
    const fs = require('node:fs');
    const r = require('node:module').createRequire(${JSON.stringify(path.join(PEERS, 'package.json'))});
    ${body}
    const t2 = performance.now();
    process.stdout.write(JSON.stringify({ req: t1 - t0, first: t2 - t0 }));`;
}

// ---------------------------------------------------------------------------
// Orchestration and report

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (x, d = 2) => {
  if (x >= 1000) return Math.round(x).toLocaleString('en-US');
  if (x >= 100) return x.toFixed(Math.max(0, d - 2));
  if (x >= 10) return x.toFixed(Math.max(1, d - 1));
  return x.toFixed(d);
};

function buildAddon() {
  if (process.env.PROMPTOPS_NODE_ADDON) return process.env.PROMPTOPS_NODE_ADDON;
  const target = process.env.CARGO_TARGET_DIR || '/var/tmp/promptops-target';
  // The whole workspace, as every other script builds it: building one
  // package alone unifies features differently and recompiles dependencies.
  process.stderr.write('building the addon (cargo build --release --workspace)…\n');
  execFileSync('cargo', ['build', '--release', '--workspace'], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: target },
  });
  const lib = process.platform === 'darwin' ? 'libpromptops_node.dylib' : 'libpromptops_node.so';
  const dst = path.join(PEERS, 'promptops.release.node');
  fs.copyFileSync(path.join(target, 'release', lib), dst);
  return dst;
}

function main() {
  if (!fs.existsSync(path.join(PEERS, 'node_modules'))) {
    process.stderr.write('installing the peers (npm ci in benches/node)…\n');
    execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: PEERS, stdio: 'inherit' });
  }
  const addon = buildAddon();
  const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: addon };
  const started = new Date();
  const load0 = os.loadavg();

  const runs = [];
  for (let r = 0; r < ROUNDS; r++) {
    process.stderr.write(`throughput round ${r + 1}/${ROUNDS}…\n`);
    const res = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--worker'], { env, encoding: 'utf8', maxBuffer: 1 << 26 });
    if (res.status !== 0) throw new Error(`worker failed:\n${res.stderr}`);
    runs.push(JSON.parse(res.stdout));
  }

  // Cold starts, cases taking turns.
  const bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), 'promptops-node-cold-'));
  const bundle = path.join(bundleDir, 'bundle.json');
  fs.writeFileSync(
    bundle,
    JSON.stringify({
      format: 'promptops.snapshot/1',
      project: 'bench',
      revision: 1,
      hash: '',
      prompts: [{ name: 'bench/t2', versions: [{ version: 1, type: 'text', template: read('t2.jinja'), config: { model: 'gpt-4o-mini' } }], labels: { production: 1 } }],
    }),
  );
  const coldEnv = { ...env, BENCH_BUNDLE: bundle, BENCH_T2_VARS: path.join(WORKLOAD, 't2_vars.json'), BENCH_T2_HBS: path.join(WORKLOAD, 't2.hbs') };
  const cold = {};
  for (const name of Object.keys(COLD)) cold[name] = { req: [], first: [], whole: [] };
  process.stderr.write(`cold starts (${COLD_RUNS} per case)…\n`);
  for (let i = 0; i < COLD_RUNS; i++) {
    for (const [name, body] of Object.entries(COLD)) {
      const t0 = process.hrtime.bigint();
      const res = spawnSync(process.execPath, ['-e', coldScript(body)], { env: coldEnv, encoding: 'utf8' });
      const whole = Number(process.hrtime.bigint() - t0) / 1e6;
      if (res.status !== 0) throw new Error(`cold ${name} failed:\n${res.stderr}`);
      const m = JSON.parse(res.stdout);
      cold[name].req.push(m.req);
      cold[name].first.push(m.first);
      cold[name].whole.push(whole);
    }
  }
  const load1 = os.loadavg();

  // Aggregate throughput: median batch over every batch of every round.
  const rows = [];
  for (const key of Object.keys(runs[0].batches)) {
    const [group, lib, ver, name] = key.split('|');
    const batches = runs.flatMap((r) => r.batches[key]).map((b) => ({ ...b, rate: b.ops / b.seconds }));
    batches.sort((a, b) => a.rate - b.rate);
    const med = batches[Math.floor(batches.length / 2)];
    const checks = [...new Set(runs.map((r) => r.checks[key]))].join(',');
    rows.push({ group, lib, ver, name, med, min: batches[0].rate, max: batches[batches.length - 1].rate, us: 1e6 / med.rate, check: checks });
  }
  const byName = (g, lib) => rows.find((r) => r.group === g && r.lib === lib);
  const prof = runs[0].profile && {
    walkNs: median(runs.map((r) => r.profile.walkNs)),
    jsRenderNs: median(runs.map((r) => r.profile.jsRenderNs)),
    encodeNs: median(runs.map((r) => r.profile.encodeNs)),
    decodeNs: median(runs.map((r) => r.profile.decodeNs)),
    renderNs: median(runs.map((r) => r.profile.renderNs)),
    toJsNs: median(runs.map((r) => r.profile.toJsNs)),
    share: median(runs.map((r) => r.profile.share)),
  };

  const L = [];
  const cmd = `${ONLY ? `BENCH_ONLY=${[...ONLY].join(',')} ` : ''}node benches/node_bench.mjs${process.env.PROMPTOPS_NODE_ADDON ? ' (PROMPTOPS_NODE_ADDON set)' : ''}`;
  L.push(`Command: \`${cmd}\` (BENCH_ROUNDS=${ROUNDS}, ${BATCHES} batches × ${BATCH_S} s after ${WARMUP_S} s warm-up per case and round; ${COLD_RUNS} cold starts per case).`);
  L.push(`Run started ${started.toISOString().replace('T', ' ').slice(0, 16)} UTC; node ${process.version}; ${os.cpus().length} CPUs (${os.cpus()[0].model}); load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')}.`);
  L.push('');
  const table = (group, title, extra) => {
    if (!rows.some((r) => r.group === group)) return;
    L.push(`### ${title}`);
    L.push('');
    L.push(`| library | version | case | ops/s median | ops/s min – max | mean µs/op | cpu/wall | check |${extra ? ' vs promptops |' : ''}`);
    L.push(`|---|---|---|---:|---:|---:|---:|---|${extra ? '---:|' : ''}`);
    const ours = rows.find((r) => r.group === group && r.lib === 'promptops');
    for (const r of rows.filter((x) => x.group === group)) {
      const ratio = extra && ours ? (r.lib === 'promptops' ? '1.00×' : `${(r.med.rate / ours.med.rate).toFixed(2)}×`) : '';
      L.push(`| ${r.lib} | ${r.ver} | ${r.name} | ${fmt(r.med.rate, 0)} | ${fmt(r.min, 0)} – ${fmt(r.max, 0)} | ${fmt(r.us)} | ${r.med.cpu.toFixed(2)} | ${r.check} |${extra ? ` ${ratio} |` : ''}`);
    }
    L.push('');
  };
  table('T1', 'T1 (simple: 59-word text, 3 variables)', true);
  table('T2', 'T2 (rag: 427-word template, 10 chunks, if/else; 7,841 chars out)', true);
  table('B', 'Where the time goes (promptops, T2)', false);
  if (prof) {
    L.push(`Inside one T2 render on the JS path (the default; wall time, means over 200,000 calls, median of the rounds): the plan's renderer takes ${fmt(prof.jsRenderNs / 1000)} µs, of which the walk over the variables (every value the encoder would read, checked for what only the addon handles) ${fmt(prof.walkNs / 1000)} µs and the generated function with its limit checks the rest. The rest of \`get + render\` is the \`get\` map lookup and the \`Rendered\` object.`);
    L.push('');
    L.push(`Inside one T2 render on the native path (\`PROMPTOPS_JS_RENDER=0\`; means over 100,000 renders, median of the rounds; the Rust phases scaled by the profile run's CPU share, ${fmt(prof.share)}): encode the variables in JS ${fmt(prof.encodeNs / 1000)} µs; decode them in Rust (one copy of the text, Latin-1 here, one typed array, strings built, maps and lists as views into one tree) ${fmt(prof.decodeNs / 1000)} µs; core render (the core's fast path, fuel and output limits on) ${fmt(prof.renderNs / 1000)} µs; the output back as a JS string ${fmt(prof.toJsNs / 1000)} µs. The rest is the N-API call itself and the \`Rendered\` object.`);
    L.push('');
  }
  table('R', 'Routing (issue 7: decision overhead; `client.route(name, vars, { routeKey })` on T1, 2-target weighted policy)', false);
  if (rows.some((r) => r.group === 'K')) tokenTable();
  if (COLD_RUNS > 0) coldTable();
  summary();
  process.stdout.write(`${L.join('\n')}\n`);

  function tokenTable() {
    L.push('### Token counting (corpus.txt, 20,253 bytes)');
    L.push('');
    L.push('| library | version | case | ops/s median | ops/s min – max | mean µs/op | cpu/wall | M tokens/s | check | promptops vs this |');
    L.push('|---|---|---|---:|---:|---:|---:|---:|---|---:|');
    for (const r of rows.filter((x) => x.group === 'K')) {
      const enc = r.name.split(' ')[0];
      const tokens = enc === 'cl100k_base' ? 4692 : 4681;
      const ours = rows.find((x) => x.group === 'K' && x.lib === 'promptops' && x.name.startsWith(enc));
      const ratio = r.lib === 'promptops' ? '—' : `${(ours.med.rate / r.med.rate).toFixed(2)}×`;
      L.push(`| ${r.lib} | ${r.ver} | ${r.name} | ${fmt(r.med.rate, 0)} | ${fmt(r.min, 0)} – ${fmt(r.max, 0)} | ${fmt(r.us)} | ${r.med.cpu.toFixed(2)} | ${((r.med.rate * tokens) / 1e6).toFixed(2)} | ${r.check} | ${ratio} |`);
    }
    L.push('');
  }

  function coldTable() {
    L.push(`### Cold start (fresh process each, ${COLD_RUNS} runs per case, median [min – max] ms)`);
    L.push('');
    L.push('| case | require ms | require + init + first op ms | whole process ms |');
    L.push('|---|---:|---:|---:|');
    for (const [name, c] of Object.entries(cold)) {
      const cell = (xs) => `${fmt(median(xs))} [${fmt(Math.min(...xs))} – ${fmt(Math.max(...xs))}]`;
      L.push(`| ${name} | ${cell(c.req)} | ${cell(c.first)} | ${cell(c.whole)} |`);
    }
    L.push('');
    L.push("'first op': promptops: `new Client({ bundle })` + `get` + render T2 (+ the first `countTokens`, which loads the o200k_base tables, in the second row); handlebars: compile + render T2; tokenizers: build the encoder + count \"hello world\".");
    L.push('');
  }

  function summary() {
    const t2p = byName('T2', 'promptops');
    const t2h = byName('T2', 'handlebars');
    const t1p = byName('T1', 'promptops');
    const rp = byName('R', 'promptops');
    const parts = [];
    if (t2p && t2h) parts.push(`T2 get+render ${fmt(t2p.us)} µs vs handlebars ${fmt(t2h.us)} µs (${(t2h.us / t2p.us).toFixed(2)}× handlebars' speed)`);
    if (t1p) parts.push(`T1 get+render ${fmt(t1p.us)} µs`);
    if (rp) parts.push(`route (decision + T1 render) ${fmt(rp.us)} µs`);
    L.push(`Summary: ${parts.join('; ')}.`);
  }
}

if (process.argv[2] === '--worker') worker();
else main();
