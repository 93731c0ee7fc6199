'use strict';
// Error classes, codes and details; panics never end the process.
const test = require('node:test');
const assert = require('node:assert/strict');
const promptops = require('..');
const { Client } = promptops;
const { loadVector, renderVectorBundle, tempDir } = require('./helpers.js');

const doc = loadVector('render.json');
const client = new Client({ bundle: renderVectorBundle(doc) });

function thrown(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error');
}

const CODES = {
  PromptNotFoundError: 'PROMPT_NOT_FOUND',
  TemplateError: 'TEMPLATE_ERROR',
  VariableError: 'VARIABLE_ERROR',
  ValidationError: 'VALIDATION_ERROR',
  IncludeCycleError: 'INCLUDE_CYCLE',
  ParseError: 'PARSE_ERROR',
  SnapshotError: 'SNAPSHOT_ERROR',
  UnknownModelError: 'UNKNOWN_MODEL',
  OutputLimitError: 'OUTPUT_LIMIT',
  FuelExhaustedError: 'FUEL_EXHAUSTED',
  ConfigError: 'CONFIG_ERROR',
  RegistryUnavailableError: 'REGISTRY_UNAVAILABLE',
  IoError: 'IO_ERROR',
  PolicyError: 'POLICY_ERROR',
  NoRouteError: 'NO_ROUTE',
  ProviderError: 'PROVIDER_ERROR',
};

test('every core error kind has a class with a stable code', () => {
  for (const [name, code] of Object.entries(CODES)) {
    const cls = promptops[name];
    assert.equal(typeof cls, 'function', name);
    assert.equal(cls.code, code);
    const e = new cls('m', { kind: code, message: 'm' });
    assert.ok(e instanceof promptops.PromptOpsError);
    assert.ok(e instanceof Error);
    assert.equal(e.code, code);
    assert.equal(e.name, name);
  }
});

test('the fields of the routing and provider errors', () => {
  const p = new promptops.ProviderError('m', {
    kind: 'PROVIDER_ERROR',
    message: 'm',
    provider: 'openai',
    model: 'gpt-4o',
    error_type: 'rate_limited',
    status: 429,
    attempts: 2,
  });
  assert.deepEqual([p.provider, p.model, p.errorType, p.status, p.attempts], ['openai', 'gpt-4o', 'rate_limited', 429, 2]);
  const pol = new promptops.PolicyError('m', { kind: 'POLICY_ERROR', message: 'm', field: 'strategy' });
  assert.equal(pol.field, 'strategy');
});

test('PROMPT_NOT_FOUND', () => {
  const e = thrown(() => client.get('v/nope'));
  assert.ok(e instanceof promptops.PromptNotFoundError);
  assert.equal(e.code, 'PROMPT_NOT_FOUND');
  assert.equal(e.details.kind, 'PROMPT_NOT_FOUND');
  assert.equal(e.details.prompt, 'v/nope');
  assert.equal(e.prompt, 'v/nope');
  assert.match(e.message, /prompt not found: v\/nope/);
  assert.match(e.stack, /errors\.test\.js/);
});

test('TEMPLATE_ERROR has line and column', () => {
  const e = thrown(() => client.get('v/broken'));
  assert.ok(e instanceof promptops.TemplateError);
  assert.equal(e.code, 'TEMPLATE_ERROR');
  assert.equal(e.line, 2);
  assert.equal(e.line, e.details.line);
  assert.equal(typeof e.column, 'number');
  assert.equal(e.details.prompt, 'v/broken');
});

test('VARIABLE_ERROR has the variable', () => {
  const e = thrown(() => client.get('v/hello').render({}));
  assert.ok(e instanceof promptops.VariableError);
  assert.equal(e.variable, 'name');
  assert.equal(e.line, 1);
  assert.deepEqual(
    { ...e.details },
    {
      kind: 'VARIABLE_ERROR',
      message: e.message,
      prompt: 'v/hello',
      version: 1,
      variable: 'name',
      line: 1,
    },
  );
});

test('VALIDATION_ERROR has the field', () => {
  const e = thrown(() => client.get('v/schema').render({ name: 'Ana', age: 'old' }));
  assert.ok(e instanceof promptops.ValidationError);
  assert.equal(e.field, 'age');
  assert.equal(e.details.field, 'age');
  const notObject = thrown(() => client.get('v/hello').render(['Dana']));
  assert.ok(notObject instanceof promptops.ValidationError);
  assert.equal(notObject.field, 'vars');
});

test('INCLUDE_CYCLE, OUTPUT_LIMIT, FUEL_EXHAUSTED', () => {
  const cyc = thrown(() => client.get('v/cyc_a').render({}));
  assert.ok(cyc instanceof promptops.IncludeCycleError);
  assert.ok(Array.isArray(cyc.details.cycle));
  const big = thrown(() => client.get('v/big').render({ n: 2000000 }));
  assert.ok(big instanceof promptops.OutputLimitError);
  assert.equal(big.limit, big.details.limit);
  const fuel = thrown(() => client.get('v/fuel').render({}));
  assert.ok(fuel instanceof promptops.FuelExhaustedError);
  assert.equal(fuel.code, 'FUEL_EXHAUSTED');
});

test('CONFIG_ERROR: live delivery needs a project; bad options', () => {
  for (const opts of [{ server: 'https://promptops.example', apiKey: 'k' }, { redis: 'redis://127.0.0.1:6379' }]) {
    const e = thrown(() => new Client(opts));
    assert.ok(e instanceof promptops.ConfigError);
    assert.equal(e.code, 'CONFIG_ERROR');
    assert.match(e.message, /project is required/);
  }
  const wait = thrown(() => new Client({ startupWait: -1 }));
  assert.equal(wait.code, 'CONFIG_ERROR');
  const label = thrown(() => new Client({ defaultLabel: 'no spaces allowed' }));
  assert.equal(label.code, 'CONFIG_ERROR');
});

test('IO_ERROR, SNAPSHOT_ERROR and PARSE_ERROR', async () => {
  const io = thrown(() => new Client({ bundle: '/nonexistent/bundle.json' }));
  assert.ok(io instanceof promptops.IoError);
  assert.equal(io.file, '/nonexistent/bundle.json');
  await assert.rejects(Client.create({ bundle: '/nonexistent/bundle.json' }), (e) => {
    assert.ok(e instanceof promptops.IoError);
    return true;
  });
  const snap = thrown(() => client.apply('{"not": "a snapshot"}'));
  assert.ok(snap instanceof promptops.SnapshotError);
  const dir = tempDir();
  require('node:fs').mkdirSync(`${dir}/m`);
  require('node:fs').writeFileSync(`${dir}/m/bad.prompt`, '---\nmodel: [unclosed\n---\nHi');
  const strict = thrown(() => new Client({ promptsDir: dir, strict: true }));
  assert.ok(strict instanceof promptops.ParseError, strict.message);
  assert.equal(strict.code, 'PARSE_ERROR');
  const lenient = new Client({ promptsDir: dir });
  assert.equal(lenient.diagnostics[0].code, 'PARSE_ERROR');
  assert.equal(lenient.diagnostics[0].details.kind, 'PARSE_ERROR');
});

test('a Rust panic surfaces as an exception and the process goes on', () => {
  const native = require('../binding.js');
  assert.throws(() => native.__panicForTests(), /deliberate panic/);
  assert.throws(() => native.__panicForTests(), /deliberate panic/);
  assert.equal(client.get('v/hello').render({ name: 'still alive' }).text, 'Hello still alive!');
});
