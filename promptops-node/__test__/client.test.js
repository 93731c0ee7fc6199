'use strict';
// The client API: lookups, rendering, tokens and cost, status, diagnostics,
// change events, close, the async constructor, ESM, process exit.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Client, Prompt, Rendered, countTokens, estimateCost } = require('..');
const { PKG, EXAMPLE_PROMPTS, loadVector, renderVectorBundle } = require('./helpers.js');

const doc = loadVector('render.json');
const bundle = renderVectorBundle(doc);

test('a prompt from a bundle', () => {
  const client = new Client({ bundle });
  assert.equal(client.status, 'valid');
  assert.equal(client.project, 'vectors');
  const p = client.get('v/hello');
  assert.ok(p instanceof Prompt);
  assert.equal(p.name, 'v/hello');
  assert.equal(p.version, 1);
  assert.equal(p.label, 'production');
  assert.equal(p.source, 'bundle');
  assert.equal(p.kind, 'text');
  assert.deepEqual(p.config, { provider: 'openai', model: 'gpt-4o-mini' });
  assert.ok(Object.isFrozen(p.config));
  assert.deepEqual(p.variants, []);
  // Repeated lookups hand back the same immutable prompt.
  assert.equal(client.get('v/hello'), p);
  assert.equal(client.get('v/labels', { label: 'staging' }).version, 3);
  assert.equal(client.get('v/labels', { version: 1 }).label, null);
  assert.equal(client.get('v/labels', { label: 'latest' }).version, 3);
});

test('render: text, config, lazy tokens and cost', () => {
  const client = new Client({ bundle });
  const r = client.get('v/hello').render({ name: 'Dana' });
  assert.ok(r instanceof Rendered);
  assert.equal(r.text, 'Hello Dana!');
  assert.equal(r.messages, null);
  assert.equal(r.model, 'gpt-4o-mini');
  assert.equal(r.config.provider, 'openai');
  assert.equal(r.inputTokens, countTokens('Hello Dana!', { model: 'gpt-4o-mini' }));
  assert.equal(r.tokensExact, true);
  assert.equal(r.tokenEncoding, 'o200k_base');
  assert.ok(Math.abs(r.estimatedCostUsd - estimateCost('gpt-4o-mini', r.inputTokens, 0)) < 1e-15);
  assert.equal(String(r), 'Hello Dana!');
  const json = JSON.parse(JSON.stringify(r));
  assert.equal(json.inputTokens, r.inputTokens);
  assert.equal(json.model, 'gpt-4o-mini');
  // No model in the config: an o200k_base estimate, no price.
  const loop = client.get('v/loop').render({ items: ['a'] });
  assert.equal(loop.model, null);
  assert.equal(loop.tokensExact, false);
  assert.equal(loop.estimatedCostUsd, null);
});

test('render: chat messages ready for the OpenAI and Anthropic SDKs', () => {
  const client = new Client({ bundle });
  const r = client.get('v/chat').render({ company: 'Acme', question: 'Where?' });
  assert.equal(r.text, null);
  assert.deepEqual(r.messages, [
    { role: 'system', content: 'You help Acme customers.' },
    { role: 'user', content: 'Where?' },
  ]);
  assert.equal(r.inputTokens, countTokens(r.messages, { model: 'gpt-4o' }));
  assert.equal(String(r), 'system: You help Acme customers.\nuser: Where?');
});

test('variables follow JSON.stringify semantics', () => {
  const client = new Client({ bundle });
  const fb = (t) => client.get('v/none', { fallback: t });
  const when = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
  const tmpl = '{{ d }}|{{ n }}|{{ f }}|{{ b }}|{{ big }}|{{ nested.list }}|{{ u is defined }}|{{ nan }}|{{ s }}';
  const vars = {
    d: when,
    n: 42,
    f: 2.5,
    b: true,
    big: 12n,
    nested: { list: [1, undefined, () => 1, 'x'] },
    u: undefined,
    nan: NaN,
    s: new String('boxed'),
  };
  const r = fb(tmpl).render(vars);
  // The same as rendering what JSON.stringify makes of the variables.
  const viaJson = JSON.parse(JSON.stringify({ ...vars, big: 12 }));
  assert.equal(r.text, fb(tmpl).render(viaJson).text);
  assert.ok(r.text.startsWith(`${when.toISOString()}|42|2.5|`), r.text);
  assert.ok(r.text.endsWith('|false|none|boxed') || r.text.endsWith('|False|None|boxed'), r.text);
  // Key order is kept, unicode survives both ways.
  const order = fb('{% for k, v in m | items %}{{ k }}={{ v }};{% endfor %}').render({
    m: { zeta: 1, alpha: 'Zoë — “ok” 😀', mid: '中文' },
  });
  assert.equal(order.text, 'zeta=1;alpha=Zoë — “ok” 😀;mid=中文;');
  // Large objects and arrays.
  const many = {};
  for (let i = 0; i < 200; i++) many[`k${i}`] = i;
  const big = fb('{{ m.k0 }} {{ m.k199 }} {{ m | length }} {{ xs | sum }}').render({
    m: many,
    xs: Array.from({ length: 5000 }, (_, i) => i),
  });
  assert.equal(big.text, `0 199 200 ${(4999 * 5000) / 2}`);
  // Text larger than the addon's scratch space, ASCII and not.
  const huge = fb('{{ a | length }} {{ b | length }} {{ b[:3] }}').render({ a: 'x'.repeat(100000), b: 'ž€😀'.repeat(30000) });
  assert.equal(huge.text, `100000 ${3 * 30000} ž€😀`);
  // A cycle is refused like JSON.stringify refuses it.
  const cyclic = { name: 'x' };
  cyclic.self = cyclic;
  assert.throws(() => client.get('v/hello').render(cyclic), TypeError);
  // The shared encoder recovers after a failure, and nested renders work.
  assert.equal(client.get('v/hello').render({ name: 'ok' }).text, 'Hello ok!');
  const nested = {
    toJSON() {
      return client.get('v/hello').render({ name: 'inner' }).text;
    },
  };
  assert.equal(client.get('v/hello').render({ name: nested }).text, 'Hello Hello inner!!');
});

test('encoded variables render exactly like the same variables parsed from JSON', () => {
  // The render path decodes variables into a tree of views (maps and lists
  // are not copied into values); this compares it with the serde path on
  // templates that use maps and lists in every way minijinja allows.
  const client = new Client({ bundle });
  const native = (p) => p[Object.getOwnPropertySymbols(p)[0]];
  const wide = {};
  for (let i = 0; i < 20; i++) wide[`w${i}`] = { i, tags: [`t${i}`, i % 2 === 0] };
  const cases = [
    { a: 'x', s: { k: 'v', 'k é': 'latin1 key', n2: { deep: [1, 2, { z: null }] } }, n: [3, 'two', [1], {}, []], e: {}, l: [] },
    { s: { 'ключ': 'значение', '😀': 'emoji key', k: 'v' }, n: ['ä', 'ö', '中文'], a: 'two-byte text', e: { x: 1 }, l: [0] },
    { a: 'wide', s: wide, n: Array.from({ length: 40 }, (_, i) => ({ i, s: `item ${i}` })), e: {}, l: [[[]]] },
  ];
  const tmpl = [
    '{{ a }}|{{ s|length }}|{{ n|length }}|{{ n[-1] }}|{{ n[1:3] }}|{{ s|tojson }}|{{ n|tojson }}',
    '{% for k, v in s|items %}{{ k }}={{ v }};{% endfor %}|{% for x in n %}{{ loop.index }}:{{ x }},{% endfor %}',
    "{{ 'k' in s }}|{{ e is mapping }}|{{ l is sequence }}|{% if e %}E{% endif %}{% if l %}L{% endif %}|{{ s|dictsort|first }}",
    "{{ n|reverse|list|length }}|{{ s.missing is undefined }}|{{ n[0] }}|{{ s.n2.deep[2].z if s.n2 is defined else 'none' }}|{{ l }}|{{ e }}",
    "{{ (s.w3.tags if s.w3 is defined else []) | join(',') }}|{{ n|selectattr('i', 'defined')|list|length }}|{{ s|list|sort|first }}",
  ].join('\n');
  for (const vars of cases) {
    const p = client.get('v/none', { fallback: tmpl });
    const encoded = p.render(vars).text;
    assert.equal(encoded, native(p).__renderJson(JSON.stringify(vars)), JSON.stringify(vars).slice(0, 80));
  }
});

test('fallbacks: text and chat', () => {
  const client = new Client({ bundle });
  const t = client.get('v/missing', { fallback: 'Hi {{ name }}' });
  assert.equal(t.source, 'fallback');
  assert.equal(t.version, 0);
  assert.equal(t.label, 'production');
  assert.equal(t.render({ name: 'Dana' }).text, 'Hi Dana');
  const c = client.get('v/missing', {
    fallback: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: '{{ q }}' },
    ],
  });
  assert.equal(c.kind, 'chat');
  assert.deepEqual(c.render({ q: 'hi' }).messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'hi' },
  ]);
  // A fallback is not used when the prompt exists.
  assert.equal(client.get('v/hello', { fallback: 'unused' }).source, 'bundle');
});

test('variants and forModel', () => {
  const client = new Client({ bundle });
  const p = client.get('v/variant');
  assert.deepEqual([...p.variants], ['claude']);
  const v = p.variant('claude');
  assert.equal(v.variantName, 'claude');
  assert.equal(v.render({ q: 'hi' }).model, 'claude-haiku-4-5');
  assert.equal(p.forModel('claude-haiku-4-5').variantName, 'claude');
  assert.equal(p.forModel('gpt-4o-mini').variantName, null);
  const claude = v.render({ q: 'hi' });
  assert.equal(claude.tokensExact, false);
});

test('a prompt directory (examples/prompts)', () => {
  const client = new Client({ promptsDir: EXAMPLE_PROMPTS, project: 'demo' });
  assert.equal(client.project, 'demo');
  const reply = client.get('support/reply');
  assert.equal(reply.source, 'disk');
  assert.equal(reply.kind, 'chat');
  const out = reply.render({ user_name: 'Dana', company: 'Acme Tools', order_id: 'A-20931' });
  assert.equal(out.messages[0].role, 'system');
  assert.match(out.messages[0].content, /friendly support agent for Acme Tools/);
  assert.match(out.messages[0].content, /Kind regards, the support team/);
  assert.equal(out.messages[1].content, "Hi, I'm Dana. Where is my order A-20931?");
  assert.ok(out.inputTokens > 20);
  assert.ok(Array.isArray(client.diagnostics));
  const rag = client.get('rag/answer');
  assert.ok(rag.schema && rag.schema.required.includes('question'));
});

test('render limits: fuel and maxOutputBytes', () => {
  const small = new Client({ bundle, maxOutputBytes: 10 });
  assert.throws(() => small.get('v/big').render({ n: 11 }), { code: 'OUTPUT_LIMIT' });
  assert.equal(small.get('v/big').render({ n: 10 }).text, 'x'.repeat(10));
  const unlimited = new Client({ bundle, fuel: 0 });
  assert.equal(unlimited.get('v/hello').render({ name: 'x' }).text, 'Hello x!');
  const tight = new Client({ bundle, fuel: 50 });
  assert.throws(() => tight.get('v/loop').render({ items: Array.from({ length: 100 }, (_, i) => i) }), { code: 'FUEL_EXHAUSTED' });
  assert.throws(() => new Client({ fuel: -1 }), { code: 'CONFIG_ERROR' });
  assert.throws(() => new Client({ maxOutputBytes: 1.5 }), { code: 'CONFIG_ERROR' });
});

test('status is off without data', () => {
  const client = new Client();
  assert.equal(client.status, 'off');
  assert.throws(() => client.get('a/b'), { code: 'PROMPT_NOT_FOUND' });
  assert.equal(client.get('a/b', { fallback: 'fb' }).render().text, 'fb');
});

test('Client.create reads sources off the event loop', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const client = await Client.create({ bundle });
  clearInterval(timer);
  assert.ok(client instanceof Client);
  assert.equal(client.get('v/hello').render({ name: 'A' }).text, 'Hello A!');
  await assert.rejects(Client.create({ server: 'https://x.example' }), { code: 'CONFIG_ERROR' });
});

function withLabels(snapshot, prompt, labels, revision) {
  const s = structuredClone(snapshot);
  s.revision = revision;
  s.hash = '';
  s.prompts.find((p) => p.name === prompt).labels = labels;
  return s;
}

test("change events: client.on('change', fn)", async () => {
  const client = new Client({ bundle });
  const before = client.get('v/labels');
  assert.equal(before.version, 2);
  const events = [];
  const got = new Promise((resolve) => client.on('change', (changes) => {
    events.push(changes);
    resolve();
  }));
  const out = client.apply(withLabels(doc.snapshot, 'v/labels', { production: 3, staging: 3 }, 2));
  assert.equal(out.applied, true);
  assert.equal(out.revision, 2);
  assert.deepEqual(out.changes, [{ prompt: 'v/labels', label: 'production', old: 2, new: 3 }]);
  // Lookups see the new data at once; the prompt handed out before keeps its version.
  assert.equal(client.get('v/labels').version, 3);
  assert.equal(before.render().text, 'two');
  assert.equal(client.get('v/labels').source, 'memory');
  await got;
  assert.deepEqual(events, [[{ prompt: 'v/labels', label: 'production', old: 2, new: 3 }]]);
  // An older revision is ignored.
  assert.equal(client.apply(withLabels(doc.snapshot, 'v/labels', { production: 1 }, 1)).applied, false);
});

test('applyAsync compiles off the event loop; changes arrive from the pool thread', async () => {
  const client = new Client({ bundle });
  const p = client.get('v/labels');
  const event = new Promise((resolve) => client.once('change', resolve));
  const out = await client.applyAsync(withLabels(doc.snapshot, 'v/labels', { production: 1, staging: 3 }, 5));
  assert.equal(out.applied, true);
  assert.deepEqual(out.changes, [{ prompt: 'v/labels', label: 'production', old: 2, new: 1 }]);
  // The lookup sees the new data at once (the change counter is shared).
  assert.equal(client.get('v/labels').version, 1);
  assert.notEqual(client.get('v/labels'), p);
  assert.deepEqual(await event, [{ prompt: 'v/labels', label: 'production', old: 2, new: 1 }]);
  await assert.rejects(client.applyAsync('{"format": "nope"}'), { code: 'SNAPSHOT_ERROR' });
});

test('close stops change events and lookups', async () => {
  const client = new Client({ bundle });
  let calls = 0;
  client.on('change', () => calls++);
  client.close();
  client.close();
  assert.equal(client.status, 'off');
  assert.throws(() => client.get('v/hello'), { code: 'CONFIG_ERROR', message: /closed/ });
  assert.throws(() => client.apply(doc.snapshot), { code: 'CONFIG_ERROR' });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 0);
});

test('many concurrent renders', async () => {
  const client = new Client({ bundle });
  const jobs = [];
  for (let i = 0; i < 2000; i++) {
    jobs.push(
      (async () => {
        await null;
        const name = `user-${i}-${'é'.repeat(i % 7)}`;
        const r = client.get(i % 2 ? 'v/hello' : 'v/chat').render(
          i % 2 ? { name } : { company: name, question: `q${i}` },
        );
        if (i % 2) assert.equal(r.text, `Hello ${name}!`);
        else assert.equal(r.messages[1].content, `q${i}`);
        if (i % 100 === 0) assert.ok(r.inputTokens > 0);
      })(),
    );
  }
  await Promise.all(jobs);
});

test('a client keeps no handle that stops the process from exiting', () => {
  const script = `
    const { Client } = require(${JSON.stringify(PKG)});
    const c = new Client({ bundle: ${JSON.stringify(bundle)} });
    c.on('change', () => {});
    Client.create({ bundle: ${JSON.stringify(bundle)} }).then((c2) => {
      c2.on('change', () => {});
      console.log(c.get('v/hello').render({ name: 'exit' }).text);
    });
  `;
  const t0 = Date.now();
  const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
  assert.equal(out.trim(), 'Hello exit!');
  assert.ok(Date.now() - t0 < 5000);
});

test('ES module entry point', () => {
  const script = `
    import promptops, { Client, countTokens, VariableError } from ${JSON.stringify(path.join(PKG, 'index.mjs'))};
    const c = new Client({ bundle: ${JSON.stringify(bundle)} });
    let code = null;
    try { c.get('v/hello').render({}); } catch (e) { code = e instanceof VariableError && e.code; }
    console.log(c.get('v/hello').render({ name: 'esm' }).text, countTokens('hello world'), code, typeof promptops.Client);
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(out.trim(), 'Hello esm! 2 VARIABLE_ERROR function');
});

test('countTokens and estimateCost', () => {
  assert.equal(countTokens('hello world'), 2);
  assert.equal(countTokens('hello world', { model: 'claude-3-5-haiku' }), 3);
  assert.equal(countTokens('hello world', 'gpt-4'), 2);
  assert.equal(countTokens(''), 0);
  assert.throws(() => countTokens('x', { encoding: 'p50k_base' }), { code: 'CONFIG_ERROR' });
  assert.equal(estimateCost('gpt-4o', 1_000_000), 2.5);
  assert.equal(estimateCost('nope', 1, 1), null);
  assert.equal(new Client().estimateCost('gpt-4o', 1_000_000, 1_000_000), 12.5);
});
