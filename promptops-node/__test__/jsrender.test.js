'use strict';
// Rendering in JS from the core's portable plan (plan.js) against the
// addon's render: every render must give the same text or messages, or the
// same error, both ways. The JS path gives up on anything it is not sure
// about and lets the addon render, so errors always come from the addon;
// what these tests catch is a JS render that differs from the addon's, or
// that succeeds where the addon fails.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client, setJsRender, PromptOpsError } = require('..');
const { loadVector, renderVectorBundle, tempDir } = require('./helpers.js');

const WORKLOAD = process.env.PROMPTOPS_WORKLOAD || path.resolve(__dirname, '..', '..', '..', 'shared', 'bench-workload');

function outcome(fn) {
  try {
    const r = fn();
    return { ok: true, text: r.text, messages: r.messages, path: r.renderPath };
  } catch (e) {
    return { ok: false, cls: e?.constructor?.name, code: e?.code, message: String(e?.message ?? e) };
  }
}

const show = (v) => {
  try {
    return typeof v === 'bigint' ? `${v}n` : JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
};

/** Render `vars` both ways; returns the JS-enabled render's path (null for an error). */
function both(p, vars, what) {
  setJsRender(true);
  const js = outcome(() => p.render(vars));
  setJsRender(false);
  const nat = outcome(() => p.render(vars));
  setJsRender(true);
  if (nat.ok) assert.equal(nat.path, 'native', what);
  const strip = (o) => (o.ok ? { ok: true, text: o.text, messages: o.messages } : o);
  assert.deepEqual(strip(js), strip(nat), `${what}: JS and native renders differ for vars ${show(vars)}`);
  return js.ok ? js.path : null;
}

function bundleOf(templates) {
  const prompts = Object.entries(templates).map(([name, t]) => ({
    name,
    versions: [
      typeof t === 'string'
        ? { version: 1, type: 'text', template: t, config: { model: 'gpt-4o-mini' } }
        : { version: 1, type: 'chat', messages: t, config: { model: 'gpt-4o-mini' } },
    ],
    labels: { production: 1 },
  }));
  const file = path.join(tempDir(), 'bundle.json');
  fs.writeFileSync(file, JSON.stringify({ format: 'promptops.snapshot/1', project: 'js', revision: 1, hash: '', prompts }));
  return file;
}

function clientOf(templates, options = {}) {
  return new Client({ bundle: bundleOf(templates), ...options });
}

test('render vectors: same results with and without the JS path', () => {
  const doc = loadVector('render.json');
  const client = new Client({ bundle: renderVectorBundle(doc) });
  let js = 0;
  for (const c of doc.cases) {
    const g = c.get ?? {};
    let p;
    try {
      p = client.get(c.prompt, {
        label: typeof g.label === 'string' ? g.label : undefined,
        version: Number.isInteger(g.version) ? g.version : undefined,
        fallback: typeof g.fallback === 'string' ? g.fallback : undefined,
      });
      if (typeof g.variant === 'string') p = p.variant(g.variant);
      if (typeof g.for_model === 'string') p = p.forModel(g.for_model);
    } catch {
      continue;
    }
    if (both(p, c.vars ?? {}, c.name) === 'js') js += 1;
  }
  // Text, chat, loops, variants, fallbacks and the output limit's under
  // case render in JS; schemas, includes and errors in the addon.
  assert.ok(js >= 10, `only ${js} vector renders took the JS path`);
});

test('the workload renders in JS (T1, T2) with the expected output', () => {
  const read = (f) => fs.readFileSync(path.join(WORKLOAD, f), 'utf8');
  const client = clientOf({ 'bench/t1': read('t1.txt'), 'bench/t2': read('t2.jinja') });
  for (const [name, vars, expected] of [
    ['bench/t1', 't1_vars.json', 't1_expected.txt'],
    ['bench/t2', 't2_vars.json', 't2_expected.txt'],
  ]) {
    const p = client.get(name);
    const v = JSON.parse(read(vars));
    const r = p.render(v);
    // This is the benchmark's path: it must not silently fall back.
    assert.equal(r.renderPath, 'js', name);
    assert.equal(r.text, read(expected), name);
    assert.equal(both(p, v, name), 'js');
    // The same object shape either way; tokens are counted natively.
    setJsRender(false);
    const n = p.render(v);
    setJsRender(true);
    assert.deepEqual(Object.keys(r), Object.keys(n));
    assert.equal(r.inputTokens, n.inputTokens);
    assert.equal(r.estimatedCostUsd, n.estimatedCostUsd);
    assert.deepEqual(r.toJSON(), n.toJSON());
    assert.equal(String(r), String(n));
  }
});

class Point {
  constructor() {
    this.x = 1;
  }
}

// Values of every kind the encoder treats specially.
function tricky() {
  const withGetter = {};
  Object.defineProperty(withGetter, 'y', { get: () => 'got', enumerable: true });
  const hidden = { shown: 'a' };
  Object.defineProperty(hidden, 'y', { value: 'hidden', enumerable: false });
  const nullProto = Object.create(null);
  nullProto.y = 'np';
  const inherited = Object.create({ y: 'inherited' });
  const sparse = [];
  sparse[2] = 'c';
  return {
    'empty string': '',
    string: 'plain',
    unicode: 'Zoë 🌍 — 中文',
    'lone surrogate': 'a\uD800b',
    'surrogate halves': ['\uD83C', '\uDF0D'],
    int: 42,
    zero: 0,
    'negative zero': -0,
    negative: -7,
    float: 1.5,
    'float integral': 3.0,
    'max safe': Number.MAX_SAFE_INTEGER,
    'past safe': 2 ** 53,
    huge: 1e21,
    NaN: NaN,
    Infinity: Infinity,
    true: true,
    false: false,
    null: null,
    undefined: undefined,
    bigint: 5n,
    'empty list': [],
    list: [1, 'a', null, true],
    'list with holes': sparse,
    'list of undefined': [undefined, () => 1, Symbol('s')],
    'nested list': [[1, 2], [], [[3]]],
    'empty object': {},
    object: { y: 'why', z: 0 },
    'object of undefined': { y: undefined, f() {} },
    'object with toJSON': { y: 1, toJSON: () => ({ y: 'json' }) },
    'toJSON undefined': { toJSON: () => undefined },
    Date: new Date(0),
    'boxed string': new String('boxed'),
    'boxed number': new Number(3),
    'class instance': new Point(),
    'getter': withGetter,
    'non-enumerable': hidden,
    'null prototype': nullProto,
    'inherited': inherited,
    Map: new Map([['y', 1]]),
    'typed array': new Uint8Array([1, 2]),
    function: () => 1,
    symbol: Symbol('s'),
  };
}

const TRICKY_TEMPLATES = {
  't/emit': '[{{ x }}]',
  't/attr': '[{{ x.y }}]',
  't/key': '[{{ x["y"] }}]',
  't/index': '[{{ x[0] }}][{{ x[2] }}]',
  't/defined': '{{ x is defined }} {{ x is undefined }} {{ x.y is defined }}',
  't/item_defined': '{{ x[0] is defined }}',
  't/item_none': '{{ x[0] is none }}',
  't/for_defined': '{% for i in x %}{{ i is defined }}{% endfor %}',
  't/none': '{{ x is none }}',
  't/if': '{% if x %}T{% else %}F{% endif %}',
  't/not': '{{ not x }}',
  't/andor': '{{ x and "A" }}|{{ x or "O" }}|{{ "c" if x else "d" }}',
  't/eq': '{{ x == "plain" }} {{ x != 42 }} {{ x == true }} {{ x == none }}',
  't/default': '{{ x | default("d") }}|{{ x | default("lax", true) }}',
  't/for':
    '{% for i in x %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}' +
    '{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %}:{{ i }}|{% else %}empty{% endfor %}',
  't/nested':
    '{% for a in x %}{% for b in a %}{{ loop.index }}.{{ b }}{% if loop.last %};{% endif %}{% else %}-{% endfor %}{% endfor %}',
  't/set': '{{ y | default("unset") }}{% set y = x %}|{{ y }}',
  't/surrogates': '{{ x[0] }}{{ x[1] }}',
};

test('tricky values: every kind through every construct, same results', () => {
  const client = clientOf(TRICKY_TEMPLATES);
  const values = tricky();
  let js = 0;
  let total = 0;
  for (const name of Object.keys(TRICKY_TEMPLATES)) {
    const p = client.get(name);
    for (const [kind, x] of Object.entries(values)) {
      total += 1;
      if (both(p, { x, y: undefined }, `${name} with ${kind}`) === 'js') js += 1;
    }
    // Missing altogether.
    both(p, {}, `${name} with no x`);
  }
  assert.ok(js > total / 4, `only ${js} of ${total} renders took the JS path`);
});

test('specific outcomes of the JS path', () => {
  const client = clientOf(TRICKY_TEMPLATES);
  const render = (name, vars) => client.get(name).render(vars);
  const r = (name, vars, text) => {
    const out = render(name, vars);
    assert.equal(out.text, text, `${name} ${show(vars)}`);
    assert.equal(out.renderPath, 'js', `${name} ${show(vars)}`);
  };
  const native = (name, vars) => assert.equal(render(name, vars).renderPath, 'native', `${name} ${show(vars)}`);
  r('t/emit', { x: 'Zoë 🌍' }, '[Zoë 🌍]');
  r('t/emit', { x: -0 }, '[0]');
  r('t/emit', { x: null }, '[None]');
  r('t/emit', { x: false }, '[False]');
  r('t/emit', { x: NaN }, '[None]'); // JSON: null
  r('t/if', { x: [] }, 'F'); // empty lists and maps are false, as in Jinja
  r('t/if', { x: {} }, 'F');
  r('t/if', { x: { y: undefined } }, 'F');
  r('t/if', { x: [undefined] }, 'T'); // [null]
  r('t/attr', { x: { y: 'own' } }, '[own]');
  r('t/for', { x: ['a', 'b'] }, '1/0/2/1/2F:a|2/1/1/0/2L:b|');
  r('t/for', { x: [] }, 'empty');
  r('t/defined', { x: 's' }, 'True False False');
  // Left to the addon: floats, undefined, non-plain objects, lone surrogates.
  native('t/emit', { x: 1.5 });
  native('t/emit', { x: new Date(0) });
  native('t/emit', { x: 'a\uD800' });
  native('t/attr', { x: { y: 1, toJSON: () => ({ y: 2 }) } });
  native('t/for', { x: { a: 1 } });
  native('t/eq', { x: 1 }); // 1 == "plain": different kinds
  assert.throws(() => render('t/emit', {}), (e) => e instanceof PromptOpsError && e.code === 'VARIABLE_ERROR');
});

test('variables that are not a plain object', () => {
  const client = clientOf({ 't/const': 'constant', 't/x': '{{ x | default("none") }}' });
  for (const name of ['t/const', 't/x']) {
    const p = client.get(name);
    for (const vars of [undefined, null, 'str', 5, [1], [], () => 1, new Point(), new Date(0), { toJSON: () => ({ x: 1 }) }, Object.create(null)]) {
      both(p, vars, `${name} with vars ${show(vars)}`);
    }
  }
  assert.equal(client.get('t/const').render().renderPath, 'js');
  assert.equal(client.get('t/x').render({ toJSON: () => ({ x: 'j' }) }).text, 'j');
});

test('Object.prototype: its own keys and added ones are not read as data', () => {
  const client = clientOf({
    't/p': '{{ polluted is defined }}|{{ x.polluted is defined }}',
    't/name': '{{ x.name | default("no name") }}',
    't/builtin': '{{ x.constructor is defined }}|{{ x.toString is defined }}|{{ x.__proto__ is defined }}|{{ x.hasOwnProperty is defined }}',
    't/builtin_emit': '{{ x.constructor }}|{{ x["__proto__"] }}',
    't/y': '{{ x.shown }}{{ x.y | default("-") }}',
  });
  const p = client.get('t/p');
  // Plans are compiled on a prompt's first render: before the pollution.
  assert.equal(client.get('t/name').render({ x: {} }).renderPath, 'js');
  assert.equal(p.render({ x: {} }).renderPath, 'js');
  for (const enumerable of [true, false]) {
    Object.defineProperty(Object.prototype, 'polluted', { value: 'p', enumerable, configurable: true, writable: true });
    try {
      assert.equal(p.render({ x: {} }).text, 'False|False');
      both(p, { x: {} }, `polluted, enumerable: ${enumerable}`);
      // As many own non-enumerable properties as inherited enumerable ones.
      const hidden = { shown: 'a' };
      Object.defineProperty(hidden, 'y', { value: 'hidden', enumerable: false });
      const vars = { x: hidden };
      Object.defineProperty(vars, 'zz', { value: 1, enumerable: false });
      both(client.get('t/y'), vars, `hidden y, polluted, enumerable: ${enumerable}`);
      // A key the template reads, added after the plan was compiled.
      Object.defineProperty(Object.prototype, 'name', { value: 'proto', enumerable, configurable: true, writable: true });
      try {
        both(client.get('t/name'), { x: {} }, 'name on the prototype');
        both(client.get('t/name'), { x: { name: 'own' } }, 'own name');
      } finally {
        delete Object.prototype.name;
      }
    } finally {
      delete Object.prototype.polluted;
    }
  }
  // Keys Object.prototype has: checked one by one.
  const b = client.get('t/builtin');
  assert.equal(b.render({ x: {} }).text, 'False|False|False|False');
  assert.equal(b.render({ x: {} }).renderPath, 'js');
  for (const x of [{}, JSON.parse('{"__proto__": "own", "constructor": "c"}'), { constructor: 'c', toString: 's', hasOwnProperty: 'h' }, Object.create(null)]) {
    both(b, { x }, `builtin keys of ${show(x)}`);
    both(client.get('t/builtin_emit'), { x }, `builtin keys printed, ${show(x)}`);
  }
  assert.equal(client.get('t/builtin_emit').render({ x: JSON.parse('{"__proto__": "own", "constructor": "c"}') }).text, 'c|own');
});

test('own properties that are not enumerable send the render to the addon', () => {
  const client = clientOf({ 't/y': '{{ x.shown }}{{ x.y | default("-") }}', 't/z': '{{ x.shown }}' });
  const hidden = { shown: 'a' };
  Object.defineProperty(hidden, 'y', { value: 'hidden', enumerable: false });
  for (const name of ['t/y', 't/z']) {
    const p = client.get(name);
    assert.equal(p.render({ x: hidden }).renderPath, 'native');
    both(p, { x: hidden }, name);
    both(p, { x: [hidden] }, `${name}, nested`);
  }
  assert.equal(client.get('t/y').render({ x: hidden }).text, 'a-');
});

test('output limit: same outcome on both sides of the limit', () => {
  const limit = 64;
  const client = clientOf(
    {
      't/out': '{{ x }}',
      't/loop': '{% for i in xs %}{{ i }}{% endfor %}',
      't/chat': [
        { role: 'system', content: 'S:{{ a }}' },
        { role: 'user', content: 'U:{{ b }}', name: 'dana' },
      ],
    },
    { maxOutputBytes: limit },
  );
  const seen = new Set();
  for (const ch of ['x', 'é', '中', '🌍']) {
    for (let n = 1; n <= limit + 2; n++) {
      const s = ch.repeat(n);
      seen.add(both(client.get('t/out'), { x: s }, `${n} × ${ch}`));
      seen.add(both(client.get('t/loop'), { xs: Array.from(s) }, `loop ${n} × ${ch}`));
      seen.add(both(client.get('t/chat'), { a: s, b: ch.repeat(Math.max(0, limit - n)) }, `chat ${n} × ${ch}`));
    }
  }
  assert.ok(seen.has('js') && seen.has(null), 'both renders and OUTPUT_LIMIT errors were expected');
  assert.throws(() => client.get('t/out').render({ x: 'x'.repeat(limit + 1) }), (e) => e.code === 'OUTPUT_LIMIT');
});

test('fuel limit: a render that could run out of fuel is the addon\'s', () => {
  for (const fuel of [50, 200, 1000, 5000]) {
    const client = clientOf(
      {
        't/loop': '{% for i in xs %}{{ loop.index }}:{{ i.v }}{% if i.v == "b" %}!{% endif %},{% endfor %}',
        't/nested': '{% for a in xs %}{% for b in xs %}{{ b.v }}{% endfor %}{% endfor %}',
      },
      { fuel },
    );
    const paths = new Set();
    for (let n = 0; n <= 60; n += 3) {
      const xs = Array.from({ length: n }, (_, i) => ({ v: i % 2 ? 'b' : 'a' }));
      paths.add(both(client.get('t/loop'), { xs }, `fuel ${fuel}, ${n} items`));
      paths.add(both(client.get('t/nested'), { xs }, `fuel ${fuel}, ${n} items nested`));
    }
    if (fuel === 1000) assert.ok(paths.has('js') && paths.has(null), `fuel ${fuel}: ${[...paths]}`);
  }
});

test('chat prompts render in JS with the same messages', () => {
  const client = clientOf({
    't/chat': [
      { role: 'system', content: 'You help {{ company }}.' },
      { role: 'user', content: '{% for q in qs %}{{ loop.index }}. {{ q }}\n{% endfor %}', name: 'dana' },
    ],
    't/mixed': [
      { role: 'system', content: 'Plain {{ company }}' },
      { role: 'user', content: '{{ company | upper }}' },
    ],
  });
  const p = client.get('t/chat');
  const out = p.render({ company: 'Acme', qs: ['Where?', 'When?'] });
  assert.equal(out.renderPath, 'js');
  assert.deepEqual(out.messages, [
    { role: 'system', content: 'You help Acme.' },
    { role: 'user', content: '1. Where?\n2. When?\n', name: 'dana' },
  ]);
  both(p, { company: 'Acme', qs: ['Where?', 'When?'] }, 'chat');
  both(p, { company: 'Acme', qs: [] }, 'chat, no questions');
  both(p, { company: 'Acme' }, 'chat, qs missing');
  // One message outside the portable subset: the whole prompt is the addon's.
  const m = client.get('t/mixed');
  assert.equal(m.render({ company: 'Acme' }).renderPath, 'native');
  both(m, { company: 'Acme' }, 'mixed');
});

test('telemetry: renders in JS are recorded as renders', () => {
  const client = clientOf({ 't/hi': 'Hi {{ name }}' }, { telemetry: true });
  const p = client.get('t/hi');
  assert.equal(p.render({ name: 'a' }).renderPath, 'js');
  assert.equal(p.render({ name: 'b' }).renderPath, 'js');
  assert.throws(() => p.render({}));
  const m = client.metricsText();
  assert.match(m, /promptops_renders_total\{promptops_prompt_name="t\/hi",[^}]*promptops_prompt_variant=""\} 2/);
  assert.match(m, /promptops_renders_total\{promptops_prompt_name="t\/hi",[^}]*error_type="VARIABLE_ERROR"\} 1/);
});

test('whatever the template reads, the variables fail where the encoder fails', () => {
  const client = clientOf({ 't/hi': 'Hi {{ name }}' });
  const p = client.get('t/hi');
  const cyclic = { name: 'Dana' };
  cyclic.self = cyclic;
  const deep = { name: 'Dana' };
  let at = deep;
  for (let i = 0; i < 200; i++) at = at.next = {};
  const throwing = { name: 'Dana' };
  Object.defineProperty(throwing, 'boom', { enumerable: true, get: () => { throw new RangeError('boom'); } });
  const throwingToJSON = { name: 'Dana', x: { toJSON: () => { throw new RangeError('json'); } } };
  for (const [what, vars, err] of [
    ['a cycle', cyclic, TypeError],
    ['200 levels', deep, TypeError],
    ['a throwing getter', throwing, RangeError],
    ['a throwing toJSON', throwingToJSON, RangeError],
  ]) {
    assert.throws(() => p.render(vars), err, what);
    both(p, vars, what);
  }
  // Unread but harmless: a BigInt, a Date, a class instance.
  for (const extra of [5n, new Date(0), new Point(), [1n]]) {
    both(p, { name: 'Dana', extra }, `extra ${show(extra)}`);
  }
  assert.equal(p.render({ name: 'Dana', extra: [1, { a: [] }] }).renderPath, 'js');
});

// ---------------------------------------------------------------------------
// Generated templates × contexts (deterministic)

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function generator(seed) {
  const r = rng(seed);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const VARS = ['a', 'b', 's', 'n', 'xs', 'm', 'u', 'e'];
  const path = (locals) => {
    let p = locals.length > 0 && r() < 0.5 ? pick(locals) : pick(VARS);
    const steps = r() < 0.5 ? 0 : r() < 0.7 ? 1 : 2;
    for (let i = 0; i < steps; i++) p += pick(['.x', '.y', '.name', '[0]', '[1]', '["x"]']);
    return p;
  };
  const atom = (locals, loops) => {
    const k = r();
    if (k < 0.55) return path(locals);
    if (k < 0.7) return pick(['"x"', '"plain"', '""', '0', '1', '42', 'true', 'false', 'none']);
    if (loops > 0 && k < 0.85) return `loop.${pick(['index', 'index0', 'revindex', 'revindex0', 'first', 'last', 'length'])}`;
    return path(locals);
  };
  const expr = (locals, loops, depth = 0) => {
    const k = r();
    if (depth > 2 || k < 0.45) return atom(locals, loops);
    if (k < 0.55) return `(not ${atom(locals, loops)})`;
    if (k < 0.63) return `(${expr(locals, loops, depth + 1)} and ${expr(locals, loops, depth + 1)})`;
    if (k < 0.71) return `(${expr(locals, loops, depth + 1)} or ${expr(locals, loops, depth + 1)})`;
    if (k < 0.79) return `(${atom(locals, loops)} ${pick(['==', '!='])} ${atom(locals, loops)})`;
    if (k < 0.85) return `(${expr(locals, loops, depth + 1)} if ${expr(locals, loops, depth + 1)} else ${expr(locals, loops, depth + 1)})`;
    if (k < 0.93) return `(${path(locals)} is ${pick(['defined', 'undefined', 'none'])})`;
    if (k < 0.98) return `(${path(locals)} | default(${pick(['"d"', '0', 'none'])}${r() < 0.3 ? ', true' : ''}))`;
    return `(${path(locals)} | ${pick(['upper', 'length', 'trim'])})`; // outside the portable subset
  };
  const stmts = (locals, loops, depth) => {
    let out = '';
    const n = 1 + Math.floor(r() * 3);
    for (let i = 0; i < n; i++) {
      const k = r();
      if (k < 0.3) out += pick(['text ', 'é ', '\n', '- ']);
      else if (k < 0.6 || depth > 2) out += `{{ ${expr(locals, loops)} }}`;
      else if (k < 0.8) {
        out += `{% if ${expr(locals, loops)} %}${stmts(locals, loops, depth + 1)}`;
        if (r() < 0.4) out += `{% elif ${expr(locals, loops)} %}${stmts(locals, loops, depth + 1)}`;
        if (r() < 0.5) out += `{% else %}${stmts(locals, loops, depth + 1)}`;
        out += '{% endif %}';
      } else if (k < 0.95) {
        const v = `v${depth}`;
        out += `{% for ${v} in ${path(locals)} %}${stmts([...locals, v], loops + 1, depth + 1)}`;
        if (r() < 0.4) out += `{% else %}${stmts(locals, loops, depth + 1)}`;
        out += '{% endfor %}';
      } else if (depth === 0) {
        out += `{% set ${pick(['a', 'k'])} = ${expr(locals, loops)} %}`;
      }
    }
    return out;
  };
  const scalar = () =>
    pick(['', 'x', 'plain', 'Zoë', '🌍', 'a\uD800', 0, 1, 42, -3, 1.5, 2 ** 53, NaN, true, false, null, undefined]);
  // Values the JS path leaves to the addon wherever they are (in one
  // context in eight).
  const exotic = () => pick([new Date(0), new Point(), { toJSON: () => 'j' }, new Map(), 7n]);
  const value = (depth, odd) => {
    const k = r();
    if (depth > 2 || k < 0.5) return scalar();
    if (k < 0.7) return Array.from({ length: Math.floor(r() * 4) }, () => value(depth + 1, odd));
    if (k < 0.85 || !odd) {
      const o = r() < 0.2 ? Object.create(null) : {};
      for (const key of ['x', 'y', 'name']) if (r() < 0.6) o[key] = value(depth + 1, odd);
      return o;
    }
    return exotic();
  };
  const context = () => {
    const c = {};
    const odd = r() < 0.125;
    for (const v of VARS) if (v !== 'u' && r() < 0.85) c[v] = value(0, odd);
    if (r() < 0.3) c.e = [];
    return c;
  };
  return { template: () => stmts([], 0, 0), context };
}

test('generated templates × contexts: same results', () => {
  const g = generator(20261124);
  const templates = {};
  for (let i = 0; i < 300; i++) templates[`g/t${i}`] = g.template();
  const client = clientOf(templates);
  let js = 0;
  let total = 0;
  for (const name of Object.keys(templates)) {
    const p = client.get(name);
    for (let j = 0; j < 12; j++) {
      total += 1;
      if (both(p, g.context(), `${name}: ${templates[name]}`) === 'js') js += 1;
    }
  }
  assert.ok(js > total / 10, `only ${js} of ${total} generated renders took the JS path`);
});

test('plans the renderer cannot use are refused, not half-used', () => {
  const { build } = require('../plan.js');
  const text = (template, extra = {}) =>
    JSON.stringify({ format: 1, body: { kind: 'text', template }, fuel_budget: 1000, fuel_step: 256, max_output_bytes: 100, ...extra });
  const ok = { nodes: [{ t: 'text', text: 'hi' }], slots: 0, loops: 0 };
  assert.equal(build(text(ok))({}), 'hi');
  assert.equal(build(text(ok, { format: 2 })), null);
  assert.equal(build(text(ok, { max_output_bytes: 'lots' })), null);
  assert.equal(build(text({ ...ok, slots: '0; throw 1' })), null);
  assert.equal(build(text({ nodes: [{ t: 'set', slot: '1; x', expr: { t: 'const', value: 1 } }], slots: 1, loops: 0 })), null);
  assert.equal(build(text({ nodes: [{ t: 'macro' }], slots: 0, loops: 0 })), null);
  assert.equal(build('not json'), null);
});
