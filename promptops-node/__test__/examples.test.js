'use strict';
// examples/quickstart.ts runs (transpiled with the typescript package; `tsc
// --noEmit` type-checks it in scripts/test-node.sh).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');
const ts = require('typescript');
const { PKG, EXAMPLE_PROMPTS, startReceiver } = require('./helpers.js');

test('examples/quickstart.ts runs', async () => {
  // The example exports telemetry to this OTLP receiver (the example runs
  // as a child process, awaited, so this event loop answers it).
  const collector = await startReceiver();
  const src = fs.readFileSync(path.join(PKG, 'examples', 'quickstart.ts'), 'utf8');
  const js = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  }).outputText;
  // Beside the .ts file, so `__dirname` and the package self-reference
  // ('promptops') resolve as they would for the compiled example.
  const file = path.join(PKG, 'examples', '.quickstart.test-build.js');
  fs.writeFileSync(file, js);
  try {
    const { stdout: out } = await promisify(execFile)(process.execPath, [file, EXAMPLE_PROMPTS], {
      encoding: 'utf8',
      timeout: 30000,
      // Without a key the example skips its provider calls (no network in tests).
      env: { ...process.env, OPENAI_API_KEY: '', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url },
    });
    assert.match(out, /== support\/reply v1 \(label production, source disk\)/);
    assert.match(out, /\[user\] Hi, I'm Dana\. Where is my order A-20931\?/);
    assert.match(out, /variant for claude-haiku-4-5: model claude-haiku-4-5/);
    assert.match(out, /VALIDATION_ERROR: question/);
    assert.match(out, /== routed to openai\/gpt-4o-mini \(/);
    assert.match(out, /== support\/escalate \(source fallback\): Escalating ticket for Dana\./);
    assert.match(out, /== telemetry exported: true; 1 span\(s\), 3 events/);
    assert.match(out, /0 models in the catalogue/);
  } finally {
    fs.rmSync(file, { force: true });
    await collector.close();
  }
});
