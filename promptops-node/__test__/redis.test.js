'use strict';
// Live delivery over Redis from Node, end to end: a real `promptops serve
// --redis-url …` process publishes into a real Redis (the shared one
// scripts/test.sh starts and names in PROMPTOPS_TEST_REDIS_URL, else a
// redis-server of our own), a client that knows only Redis follows it, and a
// `promptops push` from the CLI shows up in Node. No Redis: the test fails.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { EXAMPLE_PROMPTS, REGISTRY_BIN, tempDir, startRegistry, stopRegistry, startRedis } = require('./helpers.js');
const { Client } = require('..');

const VARS = { user_name: 'Dana', company: 'Acme', order_id: 'A-1' };

async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function cli(args, env) {
  return new Promise((resolve, reject) => {
    execFile(REGISTRY_BIN, args, { timeout: 30000, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      err ? reject(new Error(`promptops ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

test('a Redis-only client follows `promptops serve --redis-url` and sees a CLI push', { timeout: 90000 }, async () => {
  const redis = await startRedis();
  // A prefix of our own: the shared Redis serves other suites too.
  const prefix = `po-node-${process.pid}-${Date.now()}`;
  let reg = null;
  const clients = [];
  try {
    reg = await startRegistry(['--redis-url', redis.url, '--redis-prefix', prefix]);
    const client = await Client.create({ redis: redis.url, redisPrefix: prefix, project: 'demo', startupWait: 5000 });
    clients.push(client);
    assert.equal(client.status, 'valid');
    assert.deepEqual(client.syncStatus().sources, { redis: 'valid' });
    const before = client.get('support/reply', { label: 'staging' });
    assert.equal(before.source, 'memory');
    assert.match(before.render(VARS).messages[0].content, /support agent for Acme/);
    const changes = [];
    client.on('change', (c) => changes.push(...c));

    // Change the prompt in a copy of the example directory and push it with
    // the CLI: a new version, and `staging` (unprotected) follows it.
    const dir = tempDir();
    fs.cpSync(EXAMPLE_PROMPTS, dir, { recursive: true });
    const file = path.join(dir, 'support', 'reply.prompt');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('support agent for {{ company }}', 'Redis-delivered agent for {{ company }}'));
    const out = await cli(['push', dir, '--project', 'demo', '--server', reg.url], { PROMPTOPS_API_KEY: reg.adminKey });
    assert.match(out, /support\/reply/);

    const after = await waitFor(
      () => {
        const p = client.get('support/reply', { label: 'staging' });
        return p.version > before.version && p;
      },
      15000,
      'the pushed version over Redis',
    );
    assert.match(after.render(VARS).messages[0].content, /^You are a friendly Redis-delivered agent for Acme\./);
    await waitFor(() => changes.some((c) => c.prompt === 'support/reply' && c.label === 'staging' && c.new === after.version), 5000, "on('change')");
    // production is protected: push does not move it.
    assert.equal(client.get('support/reply').version, before.version);

    // Another prefix does not see this registry's keys.
    const other = new Client({ redis: redis.url, redisPrefix: `${prefix}-other`, project: 'demo', startupWait: 300 });
    clients.push(other);
    assert.throws(() => other.get('support/reply'), (e) => e.code === 'REGISTRY_UNAVAILABLE');
  } finally {
    for (const c of clients) c.close();
    stopRegistry(reg);
    // Tidy this test's keys out of a shared Redis (best effort).
    await new Promise((resolve) =>
      execFile('redis-cli', ['-u', redis.url, 'DEL', `${prefix}:demo:snapshot`, `${prefix}:demo:revision`], { timeout: 10000 }, () => resolve()),
    );
    redis.stop();
  }
});
