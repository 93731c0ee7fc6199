'use strict';
// Telemetry export and the model catalogue from Node, end to end: a real
// registry (`promptops serve`) receives the uploaded events of renders,
// routed calls and `complete` (its `/metrics` and `GET
// /v1/projects/{p}/telemetry` show them per prompt, version and model); a
// local HTTP receiver stands in for a telemetry gateway (to see exactly what
// leaves the process: masked) and for an OTLP collector (OTLP/HTTP JSON with
// the GenAI names); the catalogue published with the CLI (`promptops models
// set`) reaches `client.models()` and the client's prices. Bad option values
// throw ConfigError / TypeError.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { REGISTRY_BIN, REGISTRY_BIN_SKIP: skip, startRegistry, stopRegistry, startMockProvider, startReceiver, loadVector } = require('./helpers.js');
const { Client, ConfigError, UnknownModelError, estimateCost, setJsRender } = require('..');

const MINI = 'gpt-4o-mini';
const EMAIL = 'dana.k@example.com';
const PHONE = '+65 9123 4567';
const VARS = { name: 'Dana', email: EMAIL, phone: PHONE };
const ATTRS = { user_email: EMAIL, phone: PHONE, tier: 'gold' };
// close() runs a last export round and waits for it, blocking, at most
// telemetryFlushTimeoutMs. The receivers here run on this event loop, so
// that round can only be answered after close() returned: keep the wait
// short (OTLP re-sends its cumulative metrics every round).
const SHORT_CLOSE = 100;

function snapshot(models) {
  const snap = {
    format: 'promptops.snapshot/1',
    project: 'shop',
    revision: 1,
    hash: '',
    prompts: [
      {
        name: 'support/reply',
        versions: [
          {
            version: 3,
            type: 'text',
            template: 'Hi {{ name }}, we will write to {{ email }} or call {{ phone }}.',
            config: { provider: 'openai', model: MINI },
          },
        ],
        labels: { production: 3 },
      },
    ],
  };
  if (models !== undefined) snap.models = models;
  return snap;
}

function localClient(options) {
  const c = new Client({ project: 'shop', ...options });
  assert.ok(c.apply(snapshot()).applied);
  return c;
}

/** A render, then a routed call the caller records: four events (render; the route's decision and render; the call). */
function routedCall(c) {
  c.get('support/reply').render(VARS);
  const d = c.route('support/reply', VARS, { routeKey: 'user-1', attributes: ATTRS });
  c.record(d, { latencyMs: 120, inputTokens: 40, outputTokens: 10 });
}

async function admin(reg, method, path, body) {
  const res = await fetch(`${reg.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${reg.adminKey}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

test('upload to a real registry; the catalogue set with the CLI reaches models()', { skip, timeout: 90000 }, async () => {
  const reg = await startRegistry();
  const mock = await startMockProvider();
  try {
    await admin(reg, 'POST', '/v1/projects/demo/prompts', {
      name: 'shop/answer',
      type: 'text',
      template: 'Hi {{ name }}, we will write to {{ email }} or call {{ phone }}.',
      config: { provider: 'openai', model: MINI },
      labels: ['staging'], // `production` is protected in the demo project
    });
    execFileSync(REGISTRY_BIN, [
      'models', 'set', MINI, '--provider', 'openai', '--input-per-mtok', '1.5', '--output-per-mtok', '6',
      '--context-window', '64000', '--server', reg.url, '--api-key', reg.adminKey, '--project', 'demo',
    ], { stdio: 'pipe', timeout: 60000 });
    await mock.script(MINI, [{ kind: 'ok', text: 'It ships today' }]);
    const c = await Client.create({
      server: reg.url,
      apiKey: reg.sdkKey,
      project: 'demo',
      startupWait: 10000,
      defaultLabel: 'staging',
      telemetry: true,
      telemetryIntervalMs: 3_600_000, // only flushTelemetry uploads here
      providers: { openai: { baseUrl: mock.url, apiKey: 'sk-test' } },
    });
    const models = c.models();
    assert.deepEqual(models.map((m) => m.model), [MINI]);
    assert.deepEqual(models[0], {
      model: MINI,
      provider: 'openai',
      contextWindow: 64000,
      maxOutputTokens: null,
      inputPerMtok: 1.5,
      outputPerMtok: 6,
      cachedInputPerMtok: null,
      enabled: true,
      baseUrl: null,
      health: { status: 'unknown', checkedAt: null, error: null },
    });
    // The client prices with the catalogue; the module-level table is the built-in one.
    assert.equal(c.modelPrice(MINI).inputPerMtok, 1.5);
    assert.equal(c.estimateCost(MINI, 1_000_000, 1_000_000), 7.5);
    assert.notEqual(estimateCost(MINI, 1_000_000, 1_000_000), 7.5);

    const p = c.get('shop/answer');
    p.render(VARS);
    const d = c.route('shop/answer', VARS, { routeKey: 'user-1', attributes: ATTRS });
    c.record(d, { latencyMs: 120, inputTokens: 40, outputTokens: 10 });
    const out = await c.complete('shop/answer', VARS, { routeKey: 'user-2', attributes: ATTRS });
    assert.equal(out.text, 'It ships today');
    assert.equal(await c.flushTelemetry({ timeoutMs: 10000 }), true);
    const stats = c.telemetryStats();
    assert.ok(stats.recorded >= 5 && stats.pending === 0, JSON.stringify(stats));
    assert.equal(stats.droppedUploadFailed, 0);
    assert.equal(stats.otlp, null);

    const report = await admin(reg, 'GET', '/v1/projects/demo/telemetry?group_by=prompt,version,model');
    const groups = report.groups.filter((g) => g.prompt === 'shop/answer');
    assert.equal(groups.length, 1, JSON.stringify(report));
    const g = groups[0];
    assert.deepEqual([g.version, g.model, g.requests, g.errors], [p.version, MINI, 2, 0]);
    assert.ok(g.input_tokens >= 40 && g.cost_usd > 0, JSON.stringify(g));

    const metrics = await (await fetch(`${reg.url}/metrics`)).text();
    const series = metrics
      .split('\n')
      .filter((l) => l.startsWith('promptops_llm_requests_total{') && l.includes('prompt="shop/answer"'));
    assert.equal(series.length, 1, metrics);
    assert.ok(series[0].includes(`version="${p.version}"`) && series[0].includes(`model="${MINI}"`));
    assert.equal(Number(series[0].split(' ').pop()), 2);
    c.close();
  } finally {
    stopRegistry(reg);
    mock.stop();
  }
});

test('events leave the process masked by default; maskPii: false sends them as recorded', async () => {
  const r = await startReceiver();
  try {
    // A gateway URL instead of a registry: uploading needs no `server`.
    const c = localClient({ telemetry: true, telemetryUploadUrl: r.url, telemetryIntervalMs: 3_600_000 });
    routedCall(c);
    assert.equal(await c.flushTelemetry(), true);
    const batches = r.bodies('/v1/telemetry');
    assert.ok(batches.length > 0 && batches.every((b) => b.schema === 'promptops.telemetry.v1'));
    const kinds = new Set(batches.flatMap((b) => b.events.map((e) => e.kind)));
    assert.deepEqual([...new Set(batches.map((b) => b.sdk.name))], ['promptops-node']);
    assert.deepEqual([...kinds].sort(), ['call', 'decision', 'render']);
    const raw = r.raw();
    for (const secret of [EMAIL, PHONE, '9123']) assert.ok(!raw.includes(secret), raw);
    assert.ok(raw.includes('<email>') && raw.includes('<number>') && raw.includes('gold'), raw);
    c.close();

    r.requests.length = 0;
    const plain = localClient({ telemetry: { maskPii: false }, telemetryUploadUrl: r.url, telemetryIntervalMs: 3_600_000 });
    routedCall(plain);
    assert.equal(await plain.flushTelemetry(), true);
    assert.ok(r.raw().includes(EMAIL));
    plain.close();
  } finally {
    await r.close();
  }
});

test('telemetryUpload: false, batch size, and the last round on close()', async () => {
  const r = await startReceiver();
  try {
    const off = localClient({ telemetry: true, telemetryUpload: false, telemetryUploadUrl: r.url });
    routedCall(off);
    assert.equal(await off.flushTelemetry(), false); // nothing to export to
    off.close();
    assert.equal(r.requests.length, 0);
    const on = localClient({
      telemetry: true,
      telemetryUploadUrl: r.url,
      telemetryIntervalMs: 3_600_000,
      telemetryMaxBatch: 1,
      telemetryFlushTimeoutMs: SHORT_CLOSE,
    });
    routedCall(on);
    const t0 = Date.now();
    on.close();
    assert.ok(Date.now() - t0 < 2000, `close() took ${Date.now() - t0} ms`);
    const deadline = Date.now() + 10000;
    while (r.bodies('/v1/telemetry').length < 4 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    const batches = r.bodies('/v1/telemetry');
    assert.equal(batches.length, 4);
    assert.ok(batches.every((b) => b.events.length === 1));
  } finally {
    await r.close();
  }
});

test('failed uploads are counted', async () => {
  const r = await startReceiver({ status: 503 });
  try {
    const c = localClient({ telemetry: true, telemetryUploadUrl: r.url, telemetryIntervalMs: 3_600_000 });
    routedCall(c);
    assert.equal(await c.flushTelemetry(), true); // the round finished; its upload failed
    assert.equal(c.telemetryStats().droppedUploadFailed, 4);
    assert.ok(c.metricsText().includes('promptops_telemetry_dropped_total{reason="upload_failed"} 4'));
    c.close();
  } finally {
    await r.close();
  }
});

function attrsOf(x) {
  return Object.fromEntries(x.attributes.map((a) => [a.key, Object.values(a.value)[0]]));
}

test('OTLP: metrics and spans with the GenAI names, headers, service name, counters', async () => {
  const r = await startReceiver();
  try {
    const c = localClient({
      telemetry: true,
      otlp: { endpoint: r.url, headers: { Authorization: 'Bearer otlp-secret' }, serviceName: 'checkout' },
      telemetryIntervalMs: 3_600_000,
      telemetryFlushTimeoutMs: SHORT_CLOSE,
    });
    routedCall(c);
    assert.equal(await c.flushTelemetry({ timeoutMs: 10000 }), true);
    assert.deepEqual([...new Set(r.requests.map((q) => q.path))].sort(), ['/v1/metrics', '/v1/traces']);
    for (const q of r.requests) {
      assert.equal(q.headers.authorization, 'Bearer otlp-secret');
      assert.equal(q.headers['content-type'], 'application/json');
    }
    const [m] = r.bodies('/v1/metrics');
    const rm = m.resourceMetrics[0];
    assert.equal(attrsOf(rm.resource)['service.name'], 'checkout');
    assert.equal(attrsOf(rm.resource)['telemetry.sdk.language'], 'nodejs');
    const metrics = Object.fromEntries(rm.scopeMetrics[0].metrics.map((x) => [x.name, x]));
    assert.ok(metrics['gen_ai.client.token.usage'] && metrics['gen_ai.client.operation.duration']);
    const a = attrsOf(metrics['gen_ai.client.operation.duration'].histogram.dataPoints[0]);
    assert.equal(a['promptops.prompt.name'], 'support/reply');
    assert.equal(a['promptops.prompt.version'], '3');
    assert.deepEqual([a['gen_ai.request.model'], a['gen_ai.provider.name'], a['gen_ai.operation.name']], [MINI, 'openai', 'chat']);
    const [t] = r.bodies('/v1/traces');
    const spans = t.resourceSpans[0].scopeSpans[0].spans;
    assert.equal(spans.length, 1);
    assert.equal(spans[0].name, `chat ${MINI}`);
    assert.equal(attrsOf(spans[0])['promptops.prompt.name'], 'support/reply');
    assert.ok(!r.raw().includes(EMAIL));
    const s = c.telemetryStats().otlp;
    assert.deepEqual([s.spansExported, s.metricExports, s.spansFailed], [1, 1, 0]);
    c.close();
  } finally {
    await r.close();
  }
});

test('OTLP: the URL shorthand, and failed exports counted', async () => {
  const r = await startReceiver({ status: 500 });
  try {
    const c = localClient({ telemetry: true, otlp: new URL(r.url), telemetryIntervalMs: 3_600_000, telemetryFlushTimeoutMs: SHORT_CLOSE });
    routedCall(c);
    assert.equal(await c.flushTelemetry(), true);
    const s = c.telemetryStats().otlp;
    assert.deepEqual([s.metricExportsFailed, s.spansFailed], [1, 1]);
    c.close();
  } finally {
    await r.close();
  }
});

test('flushTelemetry never blocks the event loop', async () => {
  const r = await startReceiver({ delayMs: 400 });
  try {
    const c = localClient({
      telemetry: true,
      otlp: { endpoint: r.url, traces: false },
      telemetryIntervalMs: 3_600_000,
      telemetryFlushTimeoutMs: SHORT_CLOSE,
    });
    routedCall(c);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const flushed = await c.flushTelemetry({ timeoutMs: 5000 });
    clearInterval(timer);
    assert.equal(flushed, true);
    assert.ok(ticks >= 10, `only ${ticks} ticks during a 0.4 s export`);
    assert.deepEqual(r.requests.map((q) => q.path), ['/v1/metrics']);
    c.close();
  } finally {
    await r.close();
  }
});

test('route records the same events when it renders in JS as when it renders natively', async () => {
  const doc = loadVector('routing.json');
  const variants = {
    friendly: { config: { temperature: 0.9 } },
    formal: { config: { temperature: 0.1 } },
    claude: { config: { provider: 'anthropic', model: 'claude-haiku-4-5' } },
  };
  // The vectors' canary (pinned versions) and ab (variants) policies, each on its own prompt.
  const prompts = [2, 3].map((i) => ({
    name: `vec/p${i}`,
    versions: [6, 7].map((v) => ({ version: v, type: 'text', template: `v${v}: hi {{ name }}`, config: { provider: 'openai', model: MINI }, variants })),
    labels: { production: 6 },
    policy: { ...doc.sticky[i].policy, id: `p${i}` },
  }));
  const r = await startReceiver();
  const events = async (js) => {
    const was = setJsRender(js);
    try {
      r.requests.length = 0;
      const c = localClient({ telemetry: { maskPii: false }, telemetryUploadUrl: r.url, telemetryIntervalMs: 3_600_000 });
      c.apply({ format: 'promptops.snapshot/1', project: 'shop', revision: 2, prompts: [...snapshot().prompts, ...prompts] });
      routedCall(c);
      for (const p of ['vec/p2', 'vec/p3']) {
        for (let u = 0; u < 30; u++) {
          const d = c.route(p, VARS, { routeKey: `user-${u}`, attributes: { n: String(u) } });
          c.record(d, { ok: true, latencyMs: 10 + u });
        }
      }
      // A render that fails records its error and no decision.
      assert.throws(() => c.route('support/reply', {}, { routeKey: 'x' }), { code: 'VARIABLE_ERROR' });
      assert.equal(await c.flushTelemetry(), true);
      await c.closeAsync();
      // Leave out what differs between any two runs: times.
      return r.bodies('/v1/telemetry').flatMap((b) => b.events.map(({ ts_ms, latency_ms, ...e }) => (e.kind === 'render' ? e : { ...e, latency_ms })));
    } finally {
      setJsRender(was);
    }
  };
  try {
    const js = await events(true);
    const native = await events(false);
    assert.equal(js.length, 4 + 60 * 3 + 1);
    assert.deepEqual(js, native);
    assert.deepEqual(js.slice(0, 4).map((e) => e.kind), ['render', 'render', 'decision', 'call']);
    assert.equal(js.at(-1).kind, 'render');
    assert.equal(js.at(-1).error_type, 'VARIABLE_ERROR');
    // Pinned versions and variants show up in the render and decision events.
    assert.ok(js.some((e) => e.kind === 'render' && e.version === 7 && e.label === null));
    assert.ok(js.some((e) => e.kind === 'decision' && e.variant === 'claude' && e.model === 'claude-haiku-4-5'));
  } finally {
    await r.close();
  }
});

test('closeAsync: the last export round runs off the event loop', async () => {
  const r = await startReceiver({ delayMs: 400 });
  try {
    const c = localClient({ telemetry: true, telemetryUploadUrl: r.url, telemetryIntervalMs: 3_600_000, telemetryFlushTimeoutMs: 10_000 });
    routedCall(c);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const done = c.closeAsync();
    // Closed at once: lookups are refused before the promise settles.
    assert.throws(() => c.get('support/reply'), ConfigError);
    assert.equal(c.status, 'off');
    await done;
    clearInterval(timer);
    assert.ok(ticks >= 10, `only ${ticks} ticks during a 0.4 s export`);
    // The receiver, on this event loop, could answer: the round completed.
    const batches = r.bodies('/v1/telemetry');
    assert.equal(batches.flatMap((b) => b.events).length, 4);
    await c.closeAsync(); // idempotent
    c.close();
  } finally {
    await r.close();
  }
});

test('without an exporter: flushTelemetry resolves false; telemetryStats null without telemetry', async () => {
  const c = localClient({ telemetry: true });
  routedCall(c);
  assert.equal(await c.flushTelemetry(), false);
  assert.equal(c.telemetryStats().recorded, 4);
  const none = new Client();
  assert.equal(none.telemetryStats(), null);
  assert.equal(await none.flushTelemetry(), false);
  await assert.rejects(c.flushTelemetry({ timeoutMs: -1 }), { code: 'CONFIG_ERROR', message: /timeoutMs must be a finite number of milliseconds > 0/ });
  c.close();
  none.close();
});

test('models() from a snapshot price the client', () => {
  const c = new Client({ project: 'shop' });
  assert.deepEqual(c.models(), []);
  c.apply(
    snapshot([
      { model: MINI, provider: 'openai', input_per_mtok: 1.0, output_per_mtok: 2.0 },
      {
        model: 'llama-70b',
        provider: 'vllm',
        input_per_mtok: 0.1,
        output_per_mtok: 0.2,
        context_window: 8192,
        enabled: false,
        base_url: 'http://gpu:8000/v1',
        health: { status: 'unavailable', checked_at: '2026-01-01T00:00:00Z', error: 'HTTP 502' },
      },
    ]),
  );
  const llama = c.models().find((m) => m.model === 'llama-70b');
  assert.deepEqual(llama, {
    model: 'llama-70b',
    provider: 'vllm',
    contextWindow: 8192,
    maxOutputTokens: null,
    inputPerMtok: 0.1,
    outputPerMtok: 0.2,
    cachedInputPerMtok: null,
    enabled: false,
    baseUrl: 'http://gpu:8000/v1',
    health: { status: 'unavailable', checkedAt: '2026-01-01T00:00:00Z', error: 'HTTP 502' },
  });
  assert.equal(c.estimateCost(MINI, 1_000_000, 1_000_000), 3);
  assert.equal(c.modelPrice('llama-70b').contextWindow, 8192);
  assert.throws(() => c.modelPrice('no-such-model'), UnknownModelError);
  assert.equal(c.estimateCost('no-such-model', 1, 1), null);
  c.close();
});

test('bad option values throw ConfigError naming the option', () => {
  const cases = [
    [{ telemetryIntervalMs: 0 }, 'telemetryIntervalMs must be a finite number of milliseconds > 0, got 0'],
    [{ telemetryIntervalMs: -5 }, 'telemetryIntervalMs must be a finite number of milliseconds > 0'],
    [{ telemetryIntervalMs: 'soon' }, 'telemetryIntervalMs must be a finite number of milliseconds > 0, got NaN'],
    [{ telemetryFlushTimeoutMs: 0 }, 'telemetryFlushTimeoutMs must be'],
    [{ telemetryMaxBatch: 0 }, 'telemetryMaxBatch must be a whole number >= 1, got 0'],
    [{ telemetryMaxBatch: 1.5 }, 'telemetryMaxBatch must be a whole number >= 1, got 1.5'],
    [{ telemetryUploadUrl: 'localhost:8700' }, 'upload_url: `localhost:8700` must start with http://'],
    [{ telemetryUploadUrl: 'http://u:pw@host' }, 'must not carry credentials'],
    [{ otlp: 'collector:4318' }, 'otlp endpoint: `collector:4318` must start with http://'],
    [{ otlp: { headers: { a: 'b' } } }, 'otlp needs an endpoint'],
    [{ otlp: { endpoint: 'http://h', bogus: 1 } }, 'unknown otlp option `bogus`'],
    [{ otlp: { endpoint: 'http://h', headers: { 'bad header': 'v' } } }, '`bad header` is not a valid HTTP header name'],
    [{ otlp: { endpoint: 'http://h', serviceName: '' } }, 'otlp service_name must not be empty'],
    [{ otlp: { endpoint: 'http://h', maxSpans: 0 } }, 'otlp.maxSpans must be a whole number >= 1'],
    [{ otlp: { endpoint: 'http://h', metrics: false, traces: false } }, 'exports nothing'],
  ];
  for (const [opts, message] of cases) {
    assert.throws(
      () => new Client({ telemetry: true, ...opts }),
      (e) => e instanceof ConfigError && e.code === 'CONFIG_ERROR' && e.message.includes(message),
      `${JSON.stringify(opts)} should throw ConfigError with ${message}`,
    );
  }
  // Header values are secrets: never in errors.
  assert.throws(
    () => new Client({ telemetry: true, otlp: { endpoint: 'http://h', headers: { 'x-key': 's3cret\n' } } }),
    (e) => e instanceof ConfigError && e.message.includes('`x-key`') && !e.message.includes('s3cret'),
  );
  assert.throws(() => new Client({ telemetry: true, otlp: 4318 }), TypeError);
  // Export options need telemetry on.
  for (const [opts, name] of [
    [{ otlp: 'http://127.0.0.1:4318' }, 'otlp'],
    [{ telemetry: false, telemetryUploadUrl: 'http://h' }, 'telemetryUploadUrl'],
    [{ telemetryIntervalMs: 1000 }, 'telemetryIntervalMs'],
  ]) {
    assert.throws(
      () => new Client(opts),
      (e) => e instanceof ConfigError && e.message.includes(`${name} needs telemetry on: pass telemetry: true`),
    );
  }
});

test('prices override the built-in table; bad entries throw ConfigError naming the field', () => {
  const price = { provider: 'acme', model: 'acme-small', inputPerMtok: 1, outputPerMtok: 2, contextWindow: 8192 };
  const c = new Client({ prices: [price] });
  try {
    assert.deepEqual(c.modelPrice('acme-small'), { ...price, cachedInputPerMtok: null });
    assert.equal(c.estimateCost('acme-small', 1_000_000, 500_000), 2);
  } finally {
    c.close();
  }
  const bad = [
    [[{ model: 'm', inputPerMtok: 1, outputPerMtok: 1 }], 'prices[0].provider is required'],
    [[{ ...price, inputPerMtok: -1 }], 'prices[0].inputPerMtok must be a price >= 0'],
    [[{ ...price, contextWindow: 1.5 }], 'prices[0].contextWindow must be a whole number >= 1'],
    [[{ ...price, colour: 'red' }], 'prices[0].colour: unknown field'],
  ];
  for (const [prices, message] of bad) {
    assert.throws(
      () => new Client({ prices }),
      (e) => e instanceof ConfigError && e.code === 'CONFIG_ERROR' && e.message.includes(message),
      message,
    );
  }
  assert.throws(() => new Client({ prices: price }), TypeError);
});
