'use strict';
// The addon loads and renders in worker threads, in parallel.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const { PKG, loadVector, renderVectorBundle } = require('./helpers.js');

const bundle = renderVectorBundle(loadVector('render.json'));

const WORKER = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { Client, VariableError, countTokens } = require(workerData.pkg);
  const client = new Client({ bundle: workerData.bundle });
  let ok = 0;
  for (let i = 0; i < workerData.n; i++) {
    const name = 'w' + workerData.id + '-' + i;
    const r = client.get('v/hello').render({ name });
    if (r.text === 'Hello ' + name + '!') ok++;
  }
  let errorClass = false;
  try { client.get('v/hello').render({}); } catch (e) { errorClass = e instanceof VariableError && e.code === 'VARIABLE_ERROR'; }
  client.on('change', (changes) => {
    parentPort.postMessage({ ok, errorClass, tokens: countTokens('hello world'), changes });
  });
  const snap = JSON.parse(require('node:fs').readFileSync(workerData.bundle, 'utf8'));
  snap.revision = 99;
  snap.prompts.find((p) => p.name === 'v/labels').labels.production = 1;
  client.apply(snap);
`;

function run(id, n) {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { pkg: PKG, bundle, id, n } });
    w.once('message', (m) => {
      resolve(m);
      w.terminate();
    });
    w.once('error', reject);
  });
}

test('workers load the addon and render in parallel', async () => {
  const results = await Promise.all([0, 1, 2, 3].map((id) => run(id, 5000)));
  for (const r of results) {
    assert.equal(r.ok, 5000);
    assert.equal(r.errorClass, true);
    assert.equal(r.tokens, 2);
    assert.deepEqual(r.changes, [{ prompt: 'v/labels', label: 'production', old: 2, new: 1 }]);
  }
});

test('a worker can exit and be replaced while its client is alive', async () => {
  for (let i = 0; i < 3; i++) {
    const r = await run(10 + i, 10);
    assert.equal(r.ok, 10);
  }
});
