'use strict';
// Routing and telemetry through the Node API: the shared vectors in
// tests/vectors/routing.json with the expectations of the Rust runner
// (tests/routing.rs: sticky buckets and targets, invalid policies,
// snapshot-wide checks), `route` + `record`, and the Prometheus export.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, validatePolicy, routeBucket, setJsRender, PolicyError, NoRouteError, ConfigError } = require('..');
const { loadVector } = require('./helpers.js');

const doc = loadVector('routing.json');

function snapshot(prompts) {
  return { format: 'promptops.snapshot/1', project: 'p', revision: 1, prompts };
}

function clientWith(prompts, options) {
  const client = new Client({ project: 'p', ...options });
  client.apply(snapshot(prompts));
  return client;
}

// One prompt with every version and variant the sticky policies pin.
function stickyPrompt(name, policy) {
  const variants = {
    friendly: { config: { temperature: 0.9 } },
    formal: { config: { temperature: 0.1 } },
    claude: { config: { provider: 'anthropic', model: 'claude-haiku-4-5' } },
  };
  return [
    {
      name,
      versions: [6, 7].map((v) => ({
        version: v,
        type: 'text',
        template: `v${v}: hi {{ name }}`,
        config: { provider: 'openai', model: 'gpt-4o-mini' },
        variants,
      })),
      labels: { production: 6 },
      policy,
    },
  ];
}

test('vector buckets: the sticky hash', () => {
  assert.equal(doc.hash.buckets, 10000);
  for (const c of doc.buckets) {
    assert.equal(routeBucket(c.policy_id, c.experiment, c.key), c.bucket, JSON.stringify(c));
  }
});

test('vector sticky targets through client.route', () => {
  let n = 0;
  for (const c of doc.sticky) {
    const client = clientWith(stickyPrompt(c.prompt, c.policy));
    for (const k of c.cases) {
      const d = client.route(c.prompt, { name: 'Dana' }, { routeKey: k.key });
      assert.equal(d.bucket, k.bucket, `${c.name}: key ${JSON.stringify(k.key)}`);
      assert.equal(d.target.id, k.target, `${c.name}: key ${JSON.stringify(k.key)}`);
      // Sticky: the same key again gets the same target.
      const again = client.route(c.prompt, { name: 'Dana' }, { routeKey: k.key });
      assert.equal(again.target.id, d.target.id);
      // The prompt is rendered for the chosen target.
      const version = d.target.version ?? 6;
      assert.equal(d.version, version);
      assert.equal(d.text, `v${version}: hi Dana`);
      n += 1;
    }
    client.close();
  }
  assert.ok(n >= 60);
});

test('vector invalid policies: validatePolicy throws POLICY_ERROR with the field', () => {
  for (const c of doc.invalid) {
    let err;
    try {
      validatePolicy(c.policy, { prompt: c.prompt });
    } catch (e) {
      err = e;
    }
    assert.ok(err, `${c.name}: no error`);
    assert.equal(err.code, c.error, `${c.name}: ${err}`);
    assert.ok(err instanceof PolicyError, c.name);
    assert.equal(err.field, c.field, `${c.name}: ${err}`);
    assert.equal(err.details.field, c.field, `${c.name}: ${err}`);
    assert.equal(err.details.prompt, c.prompt, `${c.name}: ${err}`);
    // The message names the field too.
    assert.ok(err.message.includes(c.field), err.message);
  }
});

test('vector snapshot checks: diagnostics and route report the policy error', () => {
  for (const c of doc.snapshot) {
    const client = clientWith(c.prompts);
    for (const e of c.errors) {
      assert.ok(
        client.diagnostics.some((d) => d.prompt === e.prompt && d.code === 'POLICY_ERROR' && d.details.field === e.field),
        `${c.name}: no diagnostic for ${e.prompt}: ${JSON.stringify(client.diagnostics)}`,
      );
      assert.throws(() => client.route(e.prompt, { name: 'x' }), { code: 'POLICY_ERROR' }, c.name);
    }
    client.close();
  }
});

test('validatePolicy returns the parsed policy and accepts JSON text', () => {
  const policy = doc.sticky[0].policy;
  const p = validatePolicy(JSON.stringify(policy), { prompt: 'support/reply' });
  assert.deepEqual(p, { id: 'support/reply', strategy: 'weighted', targets: ['a', 'b', 'c'] });
  assert.throws(() => validatePolicy('{not json'), { code: 'POLICY_ERROR', field: 'policy' });
});

test('route without a policy uses the config model; without a model it is NO_ROUTE', () => {
  const client = clientWith([
    {
      name: 'demo/plain',
      versions: [{ version: 1, type: 'chat', messages: [{ role: 'user', content: 'Hi {{ name }}' }], config: { model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
    },
    {
      name: 'demo/nomodel',
      versions: [{ version: 1, type: 'text', template: 'x', config: {} }],
      labels: { production: 1 },
    },
  ]);
  const d = client.route('demo/plain', { name: 'Dana' });
  assert.deepEqual({ ...d.target }, { id: d.target.id, provider: 'openai', model: 'gpt-4o-mini', variant: null, version: null });
  assert.equal(d.bucket, null);
  assert.equal(typeof d.reason, 'string');
  assert.deepEqual(d.messages.map((m) => ({ role: m.role, content: m.content })), [{ role: 'user', content: 'Hi Dana' }]);
  assert.equal(d.text, null);
  assert.equal(d.prompt, 'demo/plain');
  assert.equal(d.version, 1);
  assert.ok(Object.isFrozen(d));
  assert.throws(() => client.route('demo/nomodel', {}), NoRouteError);
  client.close();
});

test('record validates outcomes and decisions', () => {
  const client = clientWith(stickyPrompt('support/reply', doc.sticky[0].policy));
  const d = client.route('support/reply', { name: 'Dana' }, { routeKey: 'user-1' });
  client.record(d, { latencyMs: 100, inputTokens: 10, outputTokens: 20 });
  client.record(d, { ok: false, status: 503, latencyMs: 50 });
  client.record(d, { errorType: 'rate_limited', status: 429, retryAfterS: 2 });
  client.recordTarget(d, 'a', { ok: true, latencyMs: 80 }, 2);
  client.recordQuality(d, 0.8);
  assert.throws(() => client.record(d, { errorType: 'nope' }), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.record(d, { ok: false }), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.record(d, { ok: true, errorType: 'timeout' }), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.record(d, { latencyMs: -1 }), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.recordTarget(d, 'zzz', {}), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.recordQuality(d, 2), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.record({ target: d.target }, {}), TypeError);
  assert.equal(client.metricsText(), null);
  client.close();
});

test('telemetry: a render and a route + record show up with the GenAI metric names', () => {
  const client = clientWith(
    [
      {
        name: 'support/reply',
        versions: [{ version: 3, type: 'text', template: 'Hi {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
        labels: { production: 3 },
      },
    ],
    { telemetry: true },
  );
  client.get('support/reply').render({ name: 'Dana' });
  const d = client.route('support/reply', { name: 'Dana' }, { routeKey: 'u1' });
  client.record(d, { latencyMs: 420, ttftMs: 150, inputTokens: 12, outputTokens: 300 });
  client.record(d, { errorType: 'timeout', latencyMs: 30000 });
  const text = client.metricsText();
  const l =
    'gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",promptops_prompt_name="support/reply",promptops_prompt_version="3",promptops_prompt_variant=""';
  for (const line of [
    '# TYPE gen_ai_client_token_usage histogram',
    `gen_ai_client_token_usage_bucket{${l},gen_ai_token_type="input",le="16"} 1`,
    `gen_ai_client_token_usage_sum{${l},gen_ai_token_type="output"} 300`,
    '# TYPE gen_ai_client_operation_duration_seconds histogram',
    `gen_ai_client_operation_duration_seconds_bucket{${l},le="0.64"} 1`,
    `gen_ai_client_operation_duration_seconds_count{${l},error_type="timeout"} 1`,
    `gen_ai_client_operation_time_to_first_chunk_seconds_bucket{${l},le="0.16"} 1`,
  ]) {
    assert.ok(text.includes(line), `missing ${line}\n${text}`);
  }
  assert.match(text, /promptops_renders_total\{[^}]*promptops_prompt_name="support\/reply"[^}]*\} 2/);
  assert.match(text, /promptops_route_decisions_total\{[^}]*\} 1/);
  const opts = new Client({ telemetry: { keepEvents: false, maskPii: true, capacity: 16 } });
  assert.equal(typeof opts.metricsText(), 'string');
  assert.throws(() => new Client({ telemetry: { capacity: 0 } }), { code: 'CONFIG_ERROR' });
  opts.close();
  client.close();
});

// `client.route` decides natively and renders the target's prompt in JS from
// its plan (with JS rendering off, or without a plan, natively): both ways
// give the same decision object.
function routeBothWays(client, name, vars, options) {
  const js = client.route(name, vars, options);
  const was = setJsRender(false);
  let native;
  try {
    native = client.route(name, vars, options);
  } finally {
    setJsRender(was);
  }
  return [js, native];
}

function assertDeepFrozen(v, where) {
  if (v === null || typeof v !== 'object') return;
  assert.ok(Object.isFrozen(v), `${where} is not frozen`);
  for (const [k, x] of Object.entries(v)) assertDeepFrozen(x, `${where}.${k}`);
}

function assertDecisionShape(d) {
  assert.deepEqual(Object.keys(d), [
    'target', 'reason', 'bucket', 'strategy', 'policyId', 'fallbacks', 'estimate', 'skipped',
    'prompt', 'version', 'label', 'variant', 'text', 'messages', 'config',
  ]);
  assert.equal(Object.getPrototypeOf(d), Object.prototype);
  assert.deepEqual(Object.getOwnPropertySymbols(d), []);
  assertDeepFrozen(d, 'decision');
  // A plain object: a copy is equal, JSON round-trips.
  assert.deepStrictEqual({ ...d }, d);
  assert.deepStrictEqual(JSON.parse(JSON.stringify(d)), JSON.parse(JSON.stringify({ ...d })));
}

const CHAT = {
  name: 'support/chat',
  versions: [
    {
      version: 2,
      type: 'chat',
      messages: [
        { role: 'system', content: 'You help {{ company }}.' },
        { role: 'user', content: 'Hi, I am {{ name }}.', name: 'customer' },
      ],
      config: { provider: 'openai', model: 'gpt-4o-mini', temperature: 0.2, max_tokens: 64 },
      variants: {
        claude: { model: 'claude-haiku-4-5', config: { provider: 'anthropic', model: 'claude-haiku-4-5' }, messages: [{ role: 'user', content: 'Claude, greet {{ name }}' }] },
        short: { template: undefined, config: { max_tokens: 16 } },
      },
    },
  ],
  labels: { production: 2, staging: 2 },
  policy: {
    strategy: 'weighted',
    targets: [
      { id: 'mini', provider: 'openai', model: 'gpt-4o-mini', weight: 50 },
      { id: 'haiku', provider: 'anthropic', model: 'claude-haiku-4-5', weight: 30 },
      { id: 'short', provider: 'openai', model: 'gpt-4o-mini', variant: 'short', weight: 20 },
    ],
  },
};

test('route: the JS render path gives the native path\'s decisions (vectors, chat, variants, no policy, labels)', () => {
  const prompts = [
    CHAT,
    {
      name: 'demo/plain',
      versions: [{ version: 1, type: 'text', template: 'Hello {{ name }}', config: { model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
    },
    {
      name: 'demo/failover',
      versions: [{ version: 4, type: 'text', template: 'F {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
      labels: { production: 4 },
      policy: { strategy: 'failover', targets: [{ provider: 'openai', model: 'gpt-4o-mini' }, { provider: 'anthropic', model: 'claude-haiku-4-5' }, { provider: 'openai', model: 'gpt-4o' }] },
    },
    {
      name: 'demo/cheap',
      versions: [{ version: 1, type: 'text', template: 'C {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
      policy: { strategy: 'cheapest', targets: [{ provider: 'openai', model: 'gpt-4o' }, { provider: 'openai', model: 'gpt-4o-mini' }] },
    },
  ];
  const vars = { name: 'Dana', company: 'Acme' };
  let n = 0;
  let client;
  const check = (name, options) => {
    const [js, native] = routeBothWays(client, name, vars, options);
    assert.deepStrictEqual(js, native, `${name} ${JSON.stringify(options)}`);
    assertDecisionShape(js);
    assertDecisionShape(native);
    n += 1;
    return js;
  };
  for (const c of doc.sticky) {
    client = clientWith(stickyPrompt(c.prompt, c.policy));
    for (const k of c.cases) {
      const d = check(c.prompt, { routeKey: k.key });
      assert.equal(d.target.id, k.target);
      assert.equal(d.bucket, k.bucket);
      assert.equal(d.text, `v${d.version}: hi Dana`);
    }
    client.close();
  }
  client = clientWith(prompts);
  const seen = new Set();
  for (let u = 0; u < 40; u++) {
    const d = check('support/chat', { routeKey: `user-${u}` });
    seen.add(d.target.id);
    assert.equal(d.text, null);
    if (d.target.id === 'haiku') {
      // The variant meant for the target's model is rendered.
      assert.equal(d.variant, 'claude');
      assert.deepEqual(d.messages, [{ role: 'user', content: 'Claude, greet Dana' }]);
      assert.equal(d.config.provider, 'anthropic');
    } else {
      assert.deepEqual(d.messages, [
        { role: 'system', content: 'You help Acme.' },
        { role: 'user', content: 'Hi, I am Dana.', name: 'customer' },
      ]);
    }
    if (d.target.id === 'short') assert.equal(d.config.max_tokens, 16);
  }
  assert.deepEqual([...seen].sort(), ['haiku', 'mini', 'short']);
  check('support/chat', { routeKey: 'u', label: 'staging' });
  assert.equal(check('support/chat', { routeKey: 'u', label: 'staging' }).label, 'staging');
  const plain = check('demo/plain', {});
  assert.deepEqual(plain.target, { id: 'openai/gpt-4o-mini', provider: 'openai', model: 'gpt-4o-mini', variant: null, version: null });
  assert.equal(plain.text, 'Hello Dana');
  assert.equal(check('demo/plain', { label: 'latest' }).label, 'latest');
  const f = check('demo/failover', { routeKey: 'x' });
  assert.deepEqual(f.fallbacks.map((t) => t.model), ['claude-haiku-4-5', 'gpt-4o']);
  const cheap = check('demo/cheap', {});
  assert.equal(cheap.target.model, 'gpt-4o-mini');
  assert.ok(cheap.estimate !== null && cheap.estimate.inputTokens > 0);
  assert.ok(n > 100);
  // Variables the JS render gives up on render natively, with the core's errors.
  assert.throws(() => client.route('demo/plain', {}), { code: 'VARIABLE_ERROR' });
  assert.equal(client.route('demo/plain', { name: 2.5 }).text, 'Hello 2.5');
  assert.equal(client.route('demo/plain', { name: 1n }).text, 'Hello 1');
  assert.throws(() => client.route('nope/missing', vars), { code: 'PROMPT_NOT_FOUND' });
  client.close();
  assert.throws(() => client.route('demo/plain', vars), ConfigError);
});

test('route: record, recordTarget and recordQuality take decisions of the JS path (the breaker opens)', () => {
  const client = clientWith([
    {
      name: 'demo/failover',
      versions: [{ version: 1, type: 'text', template: 'Hi {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
      policy: { strategy: 'failover', targets: [{ provider: 'openai', model: 'gpt-4o-mini' }, { provider: 'anthropic', model: 'claude-haiku-4-5' }] },
    },
  ]);
  const first = client.route('demo/failover', { name: 'Dana' });
  assert.equal(first.target.provider, 'openai');
  assert.deepEqual(first.skipped, []);
  for (let i = 0; i < 5; i++) {
    const d = client.route('demo/failover', { name: 'Dana' });
    client.record(d, { ok: false, errorType: 'server_error', status: 503, latencyMs: 20 });
  }
  client.recordTarget(first, 'anthropic/claude-haiku-4-5', { ok: true, latencyMs: 30 }, 2);
  client.recordQuality(first, 0.5);
  assert.throws(() => client.recordTarget(first, 'nope', {}), { code: 'CONFIG_ERROR' });
  assert.throws(() => client.record({ ...first }, {}), TypeError);
  // openai's circuit is open now: the decision skips it (the uncommon shape, from JSON).
  const [js, native] = routeBothWays(client, 'demo/failover', { name: 'Dana' });
  assert.deepStrictEqual(js, native);
  assertDecisionShape(js);
  assert.equal(js.target.provider, 'anthropic');
  assert.equal(js.skipped.length, 1);
  assert.equal(js.skipped[0].target, 'openai/gpt-4o-mini');
  assert.match(js.reason, /first healthy target/);
  client.record(js, { ok: true, latencyMs: 10 });
  client.close();
});

test('route: a failover order too long for the numbers array comes as JSON, the same', () => {
  const targets = Array.from({ length: 60 }, (_, i) => ({ id: `t${i}`, provider: 'openai', model: i % 2 ? 'gpt-4o' : 'gpt-4o-mini' }));
  const client = clientWith([
    {
      name: 'demo/many',
      versions: [{ version: 1, type: 'text', template: 'Hi {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
      policy: { strategy: 'failover', targets },
    },
  ]);
  const [js, native] = routeBothWays(client, 'demo/many', { name: 'Dana' });
  assert.deepStrictEqual(js, native);
  assertDecisionShape(js);
  assert.equal(js.target.id, 't0');
  assert.deepEqual(js.fallbacks.map((t) => t.id), targets.slice(1).map((t) => t.id));
  assert.equal(js.text, 'Hi Dana');
  client.record(js, { ok: true, latencyMs: 5 });
  client.recordTarget(js, 't59', { ok: true, latencyMs: 5 }, 2);
  client.close();
});

test('route: a getter of the variables may route again', () => {
  const client = clientWith([
    ...stickyPrompt('support/reply', doc.sticky[0].policy),
    {
      name: 'demo/inner',
      versions: [{ version: 1, type: 'text', template: 'inner {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }],
      labels: { production: 1 },
    },
  ]);
  const inner = [];
  const vars = {
    get name() {
      const d = client.route('demo/inner', { name: 'Ines' }, { routeKey: 'k' });
      inner.push(d);
      return 'Dana';
    },
  };
  const expected = client.route('support/reply', { name: 'Dana' }, { routeKey: 'user-7' });
  const d = client.route('support/reply', vars, { routeKey: 'user-7' });
  assert.deepStrictEqual(d, expected);
  assert.ok(inner.length > 0);
  for (const x of inner) {
    assert.equal(x.text, 'inner Ines');
    client.record(x, { ok: true, latencyMs: 5 });
  }
  client.record(d, { ok: true, latencyMs: 5 });
  // The JS render gives up on a float after the getter routed: the native
  // render must still get the outer decision.
  const floaty = {
    get name() {
      inner.push(client.route('demo/inner', { name: 'Ines' }, { routeKey: 'k' }));
      return 2.5;
    },
  };
  const f = client.route('support/reply', floaty, { routeKey: 'user-7' });
  assert.deepStrictEqual(f, client.route('support/reply', { name: 2.5 }, { routeKey: 'user-7' }));
  assert.equal(f.text, `v${f.version}: hi 2.5`);
  client.record(f, { ok: true, latencyMs: 5 });
  client.close();
});

test('route: with telemetry, a route started by a getter records its own events', () => {
  const prompt = (name, template) => ({
    name,
    versions: [{ version: 1, type: 'text', template, config: { provider: 'openai', model: 'gpt-4o-mini' } }],
    labels: { production: 1 },
  });
  const client = clientWith([prompt('demo/outer', 'Hello {{ name }}'), prompt('demo/inner', 'Q {{ name }}')], { telemetry: true });
  const vars = {
    get name() {
      client.route('demo/inner', { name: 'i' });
      return 'x';
    },
  };
  const d = client.route('demo/outer', vars);
  assert.equal(d.text, 'Hello x');
  assert.equal(d.prompt, 'demo/outer');
  client.record(d, { ok: true, latencyMs: 5 });
  const text = client.metricsText();
  const count = (metric, name) => {
    const m = text.match(new RegExp(`^${metric}\\{promptops_prompt_name="${name.replace('/', '\\/')}"[^}]*\\} (\\d+)$`, 'm'));
    return m === null ? 0 : Number(m[1]);
  };
  // The plan path reads the getter twice (the walk, then the render).
  assert.equal(count('promptops_renders_total', 'demo/outer'), 1, text);
  assert.equal(count('promptops_route_decisions_total', 'demo/outer'), 1, text);
  assert.equal(count('promptops_renders_total', 'demo/inner'), 2, text);
  assert.equal(count('promptops_route_decisions_total', 'demo/inner'), 2, text);
  assert.equal(client.telemetryStats().recorded, 7);
  client.close();
});

test('route: sticky keys of any length and script keep the shared bucket', () => {
  const c = doc.sticky[0];
  const client = clientWith(stickyPrompt(c.prompt, c.policy));
  const policyId = c.policy.id ?? c.prompt;
  const experiment = c.policy.experiment ?? 'default';
  for (const n of [0, 1, 200, 250, 251, 252, 253, 254, 255, 256, 300, 1000]) {
    for (const unit of ['k', 'é', '€', '😀']) {
      const key = unit.repeat(n);
      const d = client.route(c.prompt, { name: 'Dana' }, { routeKey: key });
      assert.equal(d.bucket, routeBucket(policyId, experiment, key), `${n} × ${unit}`);
      // Shifted by one byte, so that every split point near the end occurs.
      const key2 = `a${key}`;
      assert.equal(client.route(c.prompt, { name: 'Dana' }, { routeKey: key2 }).bucket, routeBucket(policyId, experiment, key2));
    }
  }
  client.close();
});

test('route: a new snapshot with the same version number renders the new template', () => {
  const client = clientWith([
    { name: 'demo/p', versions: [{ version: 1, type: 'text', template: 'old {{ name }}', config: { provider: 'openai', model: 'gpt-4o-mini' } }], labels: { production: 1 } },
  ]);
  assert.equal(client.route('demo/p', { name: 'Dana' }).text, 'old Dana');
  client.apply({
    format: 'promptops.snapshot/1',
    project: 'p',
    revision: 2,
    prompts: [{ name: 'demo/p', versions: [{ version: 1, type: 'text', template: 'new {{ name }}', config: { provider: 'anthropic', model: 'claude-haiku-4-5' } }], labels: { production: 1 } }],
  });
  const d = client.route('demo/p', { name: 'Dana' });
  assert.equal(d.text, 'new Dana');
  assert.equal(d.target.provider, 'anthropic');
  assert.equal(d.config.model, 'claude-haiku-4-5');
  client.close();
});
