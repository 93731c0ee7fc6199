'use strict';
// The shared vectors in tests/vectors/*.json through the Node API, with
// exactly the expectations of the Rust runner, tests/vectors.rs.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Tiktoken } = require('js-tiktoken/lite');
const cl100kRanks = require('js-tiktoken/ranks/cl100k_base');
const o200kRanks = require('js-tiktoken/ranks/o200k_base');
const { Client, countTokens, countTokensDetailed, tokenizerForModel, estimateCost, PromptOpsError } = require('..');
const { loadVector, renderVectorBundle } = require('./helpers.js');

// tests/vectors.rs `get`: label, version and a text fallback, then variant,
// then for_model.
function get(client, c) {
  const g = c.get ?? {};
  const opts = {
    label: typeof g.label === 'string' ? g.label : undefined,
    version: Number.isInteger(g.version) ? g.version : undefined,
    fallback: typeof g.fallback === 'string' ? g.fallback : undefined,
  };
  let p = client.get(c.prompt, opts);
  if (typeof g.variant === 'string') p = p.variant(g.variant);
  if (typeof g.for_model === 'string') p = p.forModel(g.for_model);
  return p;
}

test('render vectors', () => {
  const doc = loadVector('render.json');
  const client = new Client({ bundle: renderVectorBundle(doc) });
  const cases = doc.cases;
  assert.ok(cases.length >= 30);
  for (const c of cases) {
    const name = c.name;
    const expect = c.expect;
    const vars = c.vars ?? {};
    let result;
    let error;
    try {
      const p = get(client, c);
      result = [p, p.render(vars)];
    } catch (e) {
      error = e;
    }
    if ('error' in expect) {
      assert.ok(error, `${name}: expected ${expect.error}, rendered ${result && JSON.stringify(result[1])}`);
      assert.ok(error instanceof PromptOpsError, `${name}: ${error}`);
      assert.equal(error.code, expect.error, `${name}: ${error.message}`);
      for (const [k, v] of Object.entries(expect)) {
        if (k !== 'error') assert.deepEqual(error.details[k], v, `${name}: detail ${k} of ${error.message}`);
      }
    } else {
      if (error) assert.fail(`${name}: unexpected error ${error.message}`);
      const [p, r] = result;
      for (const [k, v] of Object.entries(expect)) {
        let actual;
        switch (k) {
          case 'text': actual = r.text; break;
          case 'messages': actual = r.messages; break;
          case 'version': actual = p.version; break;
          case 'label': actual = p.label; break;
          case 'source': actual = p.source; break;
          case 'model': actual = r.model; break;
          default: assert.fail(`${name}: unknown expectation ${k}`);
        }
        assert.deepEqual(actual, v, `${name}: ${k}`);
      }
    }
  }
});

test('token vectors', () => {
  const doc = loadVector('tokens.json');
  // The counter we ship agrees with js-tiktoken, an independent port (the
  // Rust runner checks tiktoken-rs the same way).
  const cl = new Tiktoken(cl100kRanks);
  const o2 = new Tiktoken(o200kRanks);
  for (const t of doc.texts) {
    const label = JSON.stringify(t.text.slice(0, 40));
    assert.equal(countTokens(t.text, { encoding: 'cl100k_base' }), t.cl100k_base, `cl100k ${label}`);
    assert.equal(countTokens(t.text, { encoding: 'o200k_base' }), t.o200k_base, `o200k ${label}`);
    assert.equal(cl.encode(t.text, [], []).length, t.cl100k_base, `js-tiktoken cl100k ${label}`);
    assert.equal(o2.encode(t.text, [], []).length, t.o200k_base, `js-tiktoken o200k ${label}`);
  }
  for (const c of doc.chat) {
    const n = countTokensDetailed(c.messages, { model: c.model });
    assert.equal(n.count, c.count, `chat ${c.model}`);
    assert.equal(n.exact, c.exact);
    assert.equal(n.encoding, c.encoding);
  }
  for (const m of doc.models) {
    const t = tokenizerForModel(m.model);
    assert.equal(t.encoding, m.encoding, m.model);
    assert.equal(t.exact, m.exact, m.model);
    if (typeof m.factor === 'number') assert.equal(t.factor, m.factor);
  }
  for (const c of doc.text_model) {
    const n = countTokensDetailed(c.text, { model: c.model });
    assert.equal(n.count, c.count);
    assert.equal(n.exact, c.exact);
  }
});

test('pricing vectors', () => {
  const doc = loadVector('pricing.json');
  for (const c of doc.cases) {
    const got = estimateCost(c.model, c.input_tokens, c.output_tokens);
    if (typeof c.cost === 'number') {
      assert.notEqual(got, null, `${c.model} unpriced`);
      assert.ok(Math.abs(got - c.cost) < 1e-9, `${c.model}: ${got} != ${c.cost}`);
    } else {
      assert.equal(got, null, `${c.model} should be unknown`);
    }
  }
});
