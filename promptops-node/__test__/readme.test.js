'use strict';
// Every JS and TS code block of README.md runs: each in a fresh process, in a
// directory holding ./prompts (a copy of examples/prompts) and a
// node_modules/promptops link to this package. TypeScript blocks are
// transpiled with the typescript package first; blocks with `import` or a
// top-level `await` run as ES modules. Blocks that read PROMPTOPS_SERVER get
// a live registry (`promptops serve --demo`) through PROMPTOPS_SERVER and
// PROMPTOPS_SDK_KEY. Blocks that read OPENAI_BASE_URL call the mock provider
// (tests/mock_provider) through OPENAI_BASE_URL and OPENAI_API_KEY; the
// first 503 it answers is scripted for the first `maxAttempts: 1` call.
// Blocks that read OTEL_EXPORTER_OTLP_ENDPOINT export to a local OTLP
// receiver (in this process: blocks run as awaited child processes).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');
const ts = require('typescript');
const { PKG, EXAMPLE_PROMPTS, tempDir, REGISTRY_BIN_SKIP, startRegistry, stopRegistry, startMockProvider, startReceiver } = require('./helpers.js');

function codeBlocks(markdown) {
  const blocks = [];
  const re = /^```(\w+)\n([\s\S]*?)^```/gm;
  let m;
  while ((m = re.exec(markdown)) !== null) {
    const line = markdown.slice(0, m.index).split('\n').length;
    blocks.push({ lang: m[1], code: m[2], line });
  }
  return blocks;
}

const readme = fs.readFileSync(path.join(PKG, 'README.md'), 'utf8');
const blocks = codeBlocks(readme).filter((b) => ['js', 'javascript', 'ts', 'typescript', 'mjs'].includes(b.lang));

function workspace() {
  const dir = tempDir();
  fs.cpSync(EXAMPLE_PROMPTS, path.join(dir, 'prompts'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(PKG, path.join(dir, 'node_modules', 'promptops'), 'dir');
  return dir;
}

test('README has JS and TS examples', () => {
  assert.ok(blocks.some((b) => b.lang === 'js'));
  assert.ok(blocks.some((b) => b.lang === 'ts'));
});

let registry = null;
let mock = null;
test.after(() => {
  stopRegistry(registry);
  mock?.stop();
});

for (const b of blocks) {
  const live = b.code.includes('PROMPTOPS_SERVER');
  test(`README.md line ${b.line} (${b.lang}) runs`, { skip: live && REGISTRY_BIN_SKIP }, async () => {
    const env = { ...process.env };
    if (live) {
      registry ??= await startRegistry();
      env.PROMPTOPS_SERVER = registry.url;
      env.PROMPTOPS_SDK_KEY = registry.sdkKey;
    }
    const otlp = b.code.includes('OTEL_EXPORTER_OTLP_ENDPOINT') ? await startReceiver() : null;
    if (otlp) env.OTEL_EXPORTER_OTLP_ENDPOINT = otlp.url;
    const calls = b.code.includes('OPENAI_BASE_URL');
    if (calls) {
      mock ??= await startMockProvider();
      env.OPENAI_BASE_URL = mock.url;
      env.OPENAI_API_KEY = 'sk-readme-test';
      // Two calls succeed (complete, stream), the third meets a 503.
      await mock.script('gpt-4o-mini', [
        { kind: 'ok', text: 'Your order A-1042 ships today.' },
        { kind: 'ok', text: 'Your order A-1042 ships today.', chunk_delay_ms: 2 },
        { kind: 'status', code: 503 },
      ]);
    }
    const dir = workspace();
    let code = b.code;
    const isTs = b.lang === 'ts' || b.lang === 'typescript';
    if (isTs) {
      const out = ts.transpileModule(code, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      });
      code = out.outputText;
    }
    const esm = isTs || b.lang === 'mjs' || /^\s*import\s/m.test(code);
    const file = path.join(dir, esm ? 'snippet.mjs' : 'snippet.js');
    fs.writeFileSync(file, code);
    let stdout;
    try {
      ({ stdout } = await promisify(execFile)(process.execPath, [file], { cwd: dir, encoding: 'utf8', timeout: 30000, env }));
    } catch (e) {
      assert.fail(`README.md line ${b.line} failed:\n${e.stderr || e.message}`);
    } finally {
      await otlp?.close();
    }
    assert.ok(stdout.length > 0, 'prints something');
    if (calls) {
      assert.match(stdout, /^gpt-4o-mini Your order A-1042 ships today\.$/m);
      assert.match(stdout, /^PROVIDER_ERROR server_error 503 1$/m);
      const sent = await mock.received();
      assert.ok(sent.every((r) => r.authorization === 'Bearer sk-readme-test'));
    }
    if (otlp) {
      assert.match(stdout, /^true\n3 0 1\n\[\]$/m);
      assert.deepEqual([...new Set(otlp.requests.map((r) => r.path))].sort(), ['/v1/metrics', '/v1/traces']);
      assert.ok(otlp.requests.every((r) => r.headers.authorization === 'Bearer collector-token'));
      assert.ok(!otlp.raw().includes('dana@example.com'));
    }
    if (process.env.PROMPTOPS_SHOW_README_OUTPUT) console.log(`--- line ${b.line}\n${stdout}`);
  });
}
