'use strict';
// Live delivery against a real registry: the `promptops` binary (built by
// `cargo build --workspace`; scripts/test-node.sh passes its path in
// PROMPTOPS_SERVER_BIN) started as `promptops serve --demo`. Every wait is
// bounded. Skipped when PROMPTOPS_SERVER_BIN is not set and the binary is
// not at its default place.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { PKG, tempDir, REGISTRY_BIN_SKIP: skip, startRegistry, stopRegistry } = require('./helpers.js');
const { Client, RegistryUnavailableError } = require('..');

const VARS = { user_name: 'Dana', company: 'Acme', order_id: 'A-1' };

/** Poll `check` until it returns truthy, at most `ms`. */
async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    let v;
    try {
      v = check();
    } catch {
      v = undefined;
    }
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function publish(reg, body) {
  const res = await fetch(`${reg.url}/v1/projects/demo/prompts/support%2Freply/versions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${reg.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  assert.ok(res.ok, `publish failed: ${res.status} ${text}`);
  return text;
}

test('live from a registry: render, updates, interruption, disk cache', { skip, timeout: 90000 }, async () => {
  const reg = await startRegistry();
  const cacheDir = tempDir();
  const clients = [];
  try {
    const client = await Client.create({
      server: reg.url,
      apiKey: reg.sdkKey,
      project: 'demo',
      cacheDir,
      startupWait: 5000,
    });
    clients.push(client);
    assert.equal(client.status, 'valid');
    const st = client.syncStatus();
    assert.equal(st.status, 'valid');
    assert.equal(st.sources.http, 'valid');
    assert.equal(typeof st.dataAgeMs, 'number');

    const p = client.get('support/reply');
    assert.equal(p.source, 'memory');
    assert.equal(p.kind, 'chat');
    const r = p.render(VARS);
    assert.equal(r.messages[0].role, 'system');
    assert.match(r.messages[0].content, /Acme/);
    assert.match(r.messages[1].content, /Dana/);
    const before = client.get('support/reply', { label: 'staging' });
    // Cached: the same object until something changes.
    assert.equal(client.get('support/reply', { label: 'staging' }), before);

    // Publish a new version under `staging` (production needs a review).
    const changes = [];
    client.on('change', (c) => changes.push(...c));
    const statuses = [];
    client.on('status', (s) => statuses.push(s.status));
    await publish(reg, {
      type: 'chat',
      messages: [
        { role: 'system', content: 'v2 {{ company }}' },
        { role: 'user', content: '{{ user_name }} {{ order_id }}' },
      ],
      labels: ['staging'],
    });
    const v2 = await waitFor(
      () => {
        const q = client.get('support/reply', { label: 'staging' });
        return q.version > before.version && q;
      },
      10000,
      'the new version',
    );
    assert.equal(v2.source, 'memory');
    assert.equal(v2.render(VARS).messages[0].content, 'v2 Acme');
    assert.equal(v2.render(VARS).messages[1].content, 'Dana A-1');
    await waitFor(() => changes.some((c) => c.prompt === 'support/reply' && c.label === 'staging'), 5000, "on('change')");
    // production is unchanged.
    assert.equal(client.get('support/reply').version, p.version);

    // The registry dies: reads keep succeeding from memory.
    reg.proc.kill('SIGKILL');
    await waitFor(() => client.status === 'interrupted', 15000, "status 'interrupted'");
    await waitFor(() => statuses.includes('interrupted'), 5000, "on('status') with 'interrupted'");
    const st2 = client.syncStatus();
    assert.equal(st2.status, 'interrupted');
    assert.equal(typeof st2.lastError, 'string');
    assert.equal(client.get('support/reply', { label: 'staging' }).render(VARS).messages[0].content, 'v2 Acme');

    // A second client while the registry is down serves the disk cache.
    const c2 = new Client({ server: reg.url, apiKey: reg.sdkKey, project: 'demo', cacheDir });
    clients.push(c2);
    const d = c2.get('support/reply', { label: 'staging' });
    assert.equal(d.source, 'disk');
    assert.equal(d.render(VARS).messages[0].content, 'v2 Acme');
    assert.notEqual(c2.status, 'valid');

    client.close();
    assert.equal(client.status, 'off');
    assert.equal(client.syncStatus().status, 'off');
  } finally {
    for (const c of clients) c.close();
    stopRegistry(reg);
  }
});

test('nothing listening: REGISTRY_UNAVAILABLE, or the fallback', { timeout: 30000 }, async () => {
  // A port that was free a moment ago.
  const net = require('node:net');
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = s.address();
      s.close(() => resolve(p));
    });
  });
  const opts = { server: `http://127.0.0.1:${port}`, apiKey: 'po_nope', project: 'demo', startupWait: 300 };
  for (const c of [new Client(opts), await Client.create(opts)]) {
    try {
      assert.notEqual(c.status, 'valid');
      assert.throws(
        () => c.get('support/reply'),
        (e) => e instanceof RegistryUnavailableError && e.code === 'REGISTRY_UNAVAILABLE',
      );
      const f = c.get('support/reply', { fallback: 'Hello {{ user_name }}' });
      assert.equal(f.source, 'fallback');
      assert.equal(f.render(VARS).text, 'Hello Dana');
    } finally {
      c.close();
    }
  }
});

test('a live client does not keep the process alive', { skip, timeout: 60000 }, async () => {
  const reg = await startRegistry();
  try {
    for (const closeIt of [true, false]) {
      const script = `
        const { Client } = require(${JSON.stringify(PKG)});
        Client.create({ server: ${JSON.stringify(reg.url)}, apiKey: ${JSON.stringify(reg.sdkKey)},
                        project: 'demo', startupWait: 5000 }).then((c) => {
          c.on('change', () => {});
          c.on('status', () => {});
          const c2 = new Client({ server: ${JSON.stringify(reg.url)}, apiKey: ${JSON.stringify(reg.sdkKey)}, project: 'demo' });
          c2.on('change', () => {});
          console.log(c.status, c.get('support/reply').source);
          ${closeIt ? 'c.close(); c2.close();' : ''}
        });
      `;
      const t0 = Date.now();
      const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 15000 });
      assert.equal(out.trim(), 'valid memory', `close: ${closeIt}`);
      assert.ok(Date.now() - t0 < 10000, `exited promptly (close: ${closeIt})`);
    }
  } finally {
    stopRegistry(reg);
  }
});
