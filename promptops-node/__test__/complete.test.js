'use strict';
// client.complete / client.stream against the repository's mock provider
// (tests/mock_provider, run as the `promptops-mock-provider` process): both
// protocols, failover on 5xx / 429 (Retry-After) / broken streams, errors
// with stable codes, streaming as an async iterator, cancellation, the event
// loop kept free, and close() ending calls in flight.
const test = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');
const { execFile } = require('node:child_process');
const { PKG, startMockProvider } = require('./helpers.js');
const { Client, ProviderError, ConfigError, CompletionStream } = require('..');

const MINI = 'gpt-4o-mini';
const HAIKU = 'claude-haiku-4-5';
const VARS = { company: 'Acme', order: 'A-1' };
const OPENAI_KEY = 'sk-test-openai-5f2a9c';
const ANTHROPIC_KEY = 'sk-test-anthropic-77d1';

function target(model) {
  return model === HAIKU ? { provider: 'anthropic', model } : { provider: 'openai', model };
}

function snapshot(policy) {
  return {
    format: 'promptops.snapshot/1',
    project: 'p',
    revision: 1,
    hash: '',
    prompts: [
      {
        name: 'support/reply',
        versions: [
          {
            version: 1,
            type: 'chat',
            messages: [
              { role: 'system', content: 'You are a support agent for {{ company }}.' },
              { role: 'user', content: 'Where is order {{ order }}?' },
            ],
            config: { provider: 'openai', model: MINI, temperature: 0.2, max_tokens: 100 },
          },
        ],
        labels: { production: 1 },
        policy,
      },
      {
        name: 'support/basic',
        versions: [
          { version: 1, type: 'text', template: 'Order {{ order }} status?', config: { provider: 'anthropic', model: HAIKU } },
        ],
        labels: { production: 1 },
      },
    ],
  };
}

function failover(first, second) {
  return { strategy: 'failover', targets: [target(first), target(second)] };
}

function client(mock, policy, call) {
  const c = new Client({
    project: 'p',
    providers: {
      openai: { baseUrl: mock.url, apiKey: OPENAI_KEY },
      anthropic: { baseUrl: mock.url, apiKey: ANTHROPIC_KEY },
    },
    call,
  });
  c.apply(snapshot(policy));
  return c;
}

let mock;
test.before(async () => {
  mock = await startMockProvider();
});
test.after(() => mock?.stop());

// Each test uses its own models' scripts; counts are read as deltas.
test('complete: OpenAI, usage, cost, target, attempts, the key sent', async () => {
  const c = client(mock, failover(MINI, HAIKU));
  try {
    const before = (await mock.received()).length;
    const out = await c.complete('support/reply', VARS, { routeKey: 'user-1' });
    assert.equal(out.text, `Hello from ${MINI}`);
    assert.equal(out.target.model, MINI);
    assert.equal(out.target.provider, 'openai');
    assert.equal(out.attempts.length, 1);
    assert.equal(out.attempts[0].ok, true);
    // The mock counts words: 7 + 4 in, 3 out.
    assert.deepEqual(out.usage, { inputTokens: 11, outputTokens: 3, cachedInputTokens: 0, reported: true });
    assert.equal(out.costUsd, c.estimateCost(MINI, 11, 3));
    assert.ok(out.costUsd > 0);
    assert.equal(out.ttftMs, null);
    assert.equal(out.finishReason, 'stop');
    assert.ok(out.latencyMs > 0);
    assert.equal(out.prompt, 'support/reply');
    assert.equal(out.version, 1);
    assert.equal(out.decision.strategy, 'failover');
    assert.equal(typeof out.decision.reason, 'string');
    const req = (await mock.received())[before];
    assert.equal(req.path, '/v1/chat/completions');
    assert.equal(req.authorization, `Bearer ${OPENAI_KEY}`);
    assert.equal(req.body.messages[1].content, 'Where is order A-1?');
    assert.equal(req.body.temperature, 0.2);
    assert.equal(req.stream, false);
  } finally {
    c.close();
  }
});

test('complete: Anthropic for a text prompt, key from the environment', async () => {
  const env = 'PROMPTOPS_TEST_ANTHROPIC_KEY';
  process.env[env] = 'sk-from-env-31';
  const c = new Client({ project: 'p', providers: { anthropic: { baseUrl: mock.url, apiKeyEnv: env } } });
  try {
    c.apply(snapshot(failover(MINI, HAIKU)));
    const before = (await mock.received()).length;
    const out = await c.complete('support/basic', VARS);
    assert.equal(out.text, `Hello from ${HAIKU}`);
    assert.equal(out.target.provider, 'anthropic');
    const req = (await mock.received())[before];
    assert.equal(req.path, '/v1/messages');
    assert.equal(req.api_key, 'sk-from-env-31');
    assert.deepEqual(req.body.messages, [{ role: 'user', content: 'Order A-1 status?' }]);
  } finally {
    delete process.env[env];
    c.close();
  }
});

test('failover on 5xx and 429; Retry-After keeps the target out', async () => {
  const a = 'gpt-4.1-mini';
  await mock.script(a, [{ kind: 'status', code: 503 }, { kind: 'status', code: 429, retry_after: '30' }]);
  const c = client(mock, failover(a, HAIKU));
  try {
    let out = await c.complete('support/reply', VARS);
    assert.equal(out.target.model, HAIKU);
    assert.equal(out.attempts.length, 2);
    assert.equal(out.attempts[0].status, 503);
    assert.equal(out.attempts[0].errorType, 'server_error');
    assert.equal(out.attempts[0].ok, false);
    assert.equal(out.attempts[1].ok, true);
    out = await c.complete('support/reply', VARS);
    assert.equal(out.target.model, HAIKU);
    assert.equal(out.attempts[0].status, 429);
    assert.equal(out.attempts[0].retryAfterMs, 30000);
    // Retry-After: the target is not even tried now.
    const before = await mock.count(a);
    out = await c.complete('support/reply', VARS);
    assert.equal(out.target.model, HAIKU);
    assert.equal(out.attempts.length, 1);
    assert.equal(await mock.count(a), before);
    assert.ok(out.decision.skipped.some((s) => s.target === `openai/${a}`), JSON.stringify(out.decision.skipped));
  } finally {
    c.close();
  }
});

test('every target failing: ProviderError with code, status and attempts; no key in it', async () => {
  const a = 'gpt-4.1';
  const b = 'gpt-4.1-nano';
  await mock.script(a, [{ kind: 'status', code: 500 }]);
  await mock.script(b, [{ kind: 'status', code: 502 }]);
  const c = client(mock, failover(a, b));
  try {
    await assert.rejects(c.complete('support/reply', VARS), (e) => {
      assert.ok(e instanceof ProviderError, String(e));
      assert.equal(e.code, 'PROVIDER_ERROR');
      assert.equal(e.status, 502);
      assert.equal(e.errorType, 'server_error');
      assert.equal(e.attempts, 2);
      assert.equal(e.model, b);
      assert.equal(e.provider, 'openai');
      const all = `${e.message} ${JSON.stringify(e.details)} ${util.inspect(e)}`;
      assert.ok(!all.includes(OPENAI_KEY), 'the API key never appears in errors');
      return true;
    });
    // A 4xx is not failed over by default.
    await mock.script(a, [{ kind: 'status', code: 400 }]);
    await assert.rejects(c.complete('support/reply', VARS), (e) => e.code === 'PROVIDER_ERROR' && e.status === 400 && e.attempts === 1);
    // Nor is it when the caller narrows failoverOn.
    await mock.script(a, [{ kind: 'status', code: 503 }]);
    await assert.rejects(
      c.complete('support/reply', VARS, { failoverOn: ['connect'] }),
      (e) => e.code === 'PROVIDER_ERROR' && e.status === 503 && e.attempts === 1,
    );
    assert.ok(!util.inspect(c, { showHidden: true, depth: 5 }).includes(OPENAI_KEY));
  } finally {
    c.close();
  }
});

test('bad options and unknown prompts fail with typed errors', async () => {
  const c = client(mock, failover(MINI, HAIKU));
  try {
    await assert.rejects(c.complete('nope/none', VARS), (e) => e.code === 'PROMPT_NOT_FOUND');
    await assert.rejects(c.complete('support/reply', { company: 'Acme' }), (e) => e.code === 'VARIABLE_ERROR');
    assert.throws(() => c.stream('support/reply', VARS, { failoverOn: ['sometimes'] }), (e) => e instanceof ConfigError);
    await assert.rejects(c.complete('support/reply', VARS, { timeoutMs: -1 }), (e) => e.code === 'CONFIG_ERROR');
    assert.throws(
      () => new Client({ providers: { local: { protocol: 'openai' } } }),
      (e) => e.code === 'CONFIG_ERROR' && /baseUrl/.test(e.message),
    );
  } finally {
    c.close();
  }
});

test('stream: an async iterator of chunks, then the completion', async () => {
  await mock.script(HAIKU, [{ kind: 'ok', text: 'Your order ships today', chunk_delay_ms: 5 }]);
  const c = client(mock, failover(HAIKU, MINI));
  try {
    const s = c.stream('support/reply', VARS, { routeKey: 'u' });
    assert.ok(s instanceof CompletionStream);
    const chunks = [];
    for await (const chunk of s) chunks.push(chunk);
    const out = await s.completion;
    assert.deepEqual(chunks, ['Your', ' order', ' ships', ' today']);
    assert.equal(chunks.join(''), out.text);
    assert.equal(out.target.model, HAIKU);
    assert.ok(out.ttftMs !== null && out.ttftMs <= out.latencyMs);
    assert.deepEqual([out.usage.inputTokens, out.usage.outputTokens], [11, 4]);
    assert.equal(out.finishReason, 'end_turn');
    // complete() with onChunk streams too.
    const seen = [];
    const out2 = await c.complete('support/reply', VARS, { onChunk: (t) => seen.push(t) });
    assert.equal(seen.join(''), out2.text);
    assert.ok(seen.length > 1);
  } finally {
    c.close();
  }
});

test('stream: failing before the first token fails over; after it, the error surfaces', async () => {
  const a = 'gpt-4o';
  await mock.script(a, [{ kind: 'reset', tokens: 0 }, { kind: 'malformed', tokens: 0 }, { kind: 'reset', tokens: 2 }]);
  const c = client(mock, failover(a, HAIKU));
  try {
    for (const why of ['reset', 'malformed']) {
      const s = c.stream('support/reply', VARS);
      const chunks = [];
      for await (const chunk of s) chunks.push(chunk);
      const out = await s.completion;
      assert.equal(out.target.model, HAIKU, why);
      assert.equal(chunks.join(''), `Hello from ${HAIKU}`, `${why}: only the answering target's chunks`);
      assert.equal(out.attempts.length, 2);
      assert.equal(out.attempts[0].ok, false);
    }
    // Two tokens, then a reset: the tokens arrive, then the error; no failover.
    const s = c.stream('support/reply', VARS);
    const chunks = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of s) chunks.push(chunk);
      })(),
      (e) => e instanceof ProviderError && e.attempts === 1,
    );
    assert.deepEqual(chunks, [' tok0', ' tok1']);
    await assert.rejects(s.completion, (e) => e.code === 'PROVIDER_ERROR');
  } finally {
    c.close();
  }
});

test('calls never block the event loop; break and AbortSignal cancel', async () => {
  const slow = 'gpt-5-mini';
  await mock.setDefault(slow, { kind: 'ok', text: 'slow answer here', delay_ms: 400 });
  const c = client(mock, { strategy: 'failover', targets: [target(slow)] });
  try {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const t0 = Date.now();
    const outs = await Promise.all([1, 2, 3, 4].map(() => c.complete('support/reply', VARS)));
    clearInterval(timer);
    assert.ok(outs.every((o) => o.text === 'slow answer here'));
    assert.ok(Date.now() - t0 < 3000, 'four concurrent calls overlap');
    assert.ok(ticks >= 20, `the event loop kept running (${ticks} ticks)`);

    const ac = new AbortController();
    const p = c.complete('support/reply', VARS, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (e) => e.name === 'AbortError');

    await mock.script(slow, [{ kind: 'ok', text: 'a b c d e f g h', chunk_delay_ms: 100 }]);
    const s = c.stream('support/reply', VARS);
    const got = [];
    const t1 = Date.now();
    for await (const chunk of s) {
      got.push(chunk);
      if (got.length === 2) break;
    }
    assert.deepEqual(got, ['a', ' b']);
    await assert.rejects(s.completion, (e) => e.code === 'CONFIG_ERROR' && /cancelled/.test(e.message));
    assert.ok(Date.now() - t1 < 1500, 'break ended the call');
  } finally {
    c.close();
  }
});

test('close() ends calls in flight, and a pending stream does not keep the process alive', async () => {
  const stall = 'o4-mini';
  await mock.setDefault(stall, { kind: 'stall', ms: 60000, text: 'never' });
  const c = client(mock, { strategy: 'failover', targets: [target(stall)] });
  const s = c.stream('support/reply', VARS);
  const p = c.complete('support/reply', VARS);
  setTimeout(() => c.close(), 100);
  await assert.rejects(p, (e) => e.code === 'CONFIG_ERROR' && /closed/.test(e.message));
  await assert.rejects(s.completion, (e) => e.code === 'CONFIG_ERROR');
  await assert.rejects(c.complete('support/reply', VARS), (e) => e.code === 'CONFIG_ERROR');

  // In a child process: a stream stalls for a minute, the app closes the
  // client and returns; the process must exit at once.
  const script = `
    const { Client } = require(${JSON.stringify(PKG)});
    const c = new Client({ project: 'p', providers: { openai: { baseUrl: ${JSON.stringify(mock.url)}, apiKey: 'k' } } });
    c.apply(${JSON.stringify(snapshot({ strategy: 'failover', targets: [target(stall)] }))});
    const s = c.stream('support/reply', { company: 'A', order: '1' });
    s.completion.catch((e) => console.log('ended:', e.code));
    (async () => { for await (const _ of s) {} })().catch(() => {});
    setTimeout(() => c.close(), 200);
  `;
  const t0 = Date.now();
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { timeout: 20000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
  assert.equal(out.trim(), 'ended: CONFIG_ERROR');
  assert.ok(Date.now() - t0 < 10000, `exited promptly (${Date.now() - t0} ms)`);
});

test('complete from worker threads: each worker has its own client, calls run at once', async () => {
  const { Worker } = require('node:worker_threads');
  const model = 'gpt-4.1-nano';
  await mock.setDefault(model, { kind: 'ok', text: 'from the mock', delay_ms: 500 });
  const worker = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { Client } = require(workerData.pkg);
    const c = new Client({ project: 'p', providers: { openai: { baseUrl: workerData.url, apiKey: 'k' } } });
    c.apply(workerData.snapshot);
    Promise.all([0, 1, 2].map((i) => c.complete('support/reply', { company: 'W' + workerData.id, order: String(i) })))
      .then((rs) => { c.close(); parentPort.postMessage({ texts: rs.map((r) => r.text), models: rs.map((r) => r.target.model) }); })
      .catch((e) => { c.close(); parentPort.postMessage({ error: e.code + ': ' + e.message }); });
  `;
  const snap = snapshot({ strategy: 'failover', targets: [target(model)] });
  const before = await mock.count(model);
  const t0 = Date.now();
  const results = await Promise.all(
    [0, 1, 2, 3].map(
      (id) =>
        new Promise((resolve, reject) => {
          const w = new Worker(worker, { eval: true, workerData: { pkg: PKG, url: mock.url, snapshot: snap, id } });
          w.once('message', (m) => {
            resolve(m);
            w.terminate();
          });
          w.once('error', reject);
        }),
    ),
  );
  const elapsed = Date.now() - t0;
  for (const r of results) {
    assert.equal(r.error, undefined);
    assert.deepEqual(r.texts, ['from the mock', 'from the mock', 'from the mock']);
    assert.deepEqual(r.models, [model, model, model]);
  }
  // 12 calls of 500 ms each: concurrently, not one after another (6 s).
  assert.ok(elapsed < 4000, `calls overlapped (${elapsed} ms)`);
  assert.equal((await mock.count(model)) - before, 12);
});
