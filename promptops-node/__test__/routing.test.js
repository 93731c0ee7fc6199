'use strict';
// Routing and telemetry through the Node API: the shared vectors in
// tests/vectors/routing.json with the expectations of the Rust runner
// (tests/routing.rs: sticky buckets and targets, invalid policies,
// snapshot-wide checks), `route` + `record`, and the Prometheus export.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client, validatePolicy, routeBucket, PolicyError, NoRouteError } = require('..');
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
