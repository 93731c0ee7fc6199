'use strict';
// Shared by the test files: paths, the shared vectors, a client over the
// render vectors' snapshot (loaded as a bundle file, as the Rust runner does).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');

const PKG = path.resolve(__dirname, '..');
const ROOT = path.resolve(PKG, '..');
const VECTORS = path.join(ROOT, 'tests', 'vectors');
const EXAMPLE_PROMPTS = path.join(ROOT, 'examples', 'prompts');

function loadVector(name) {
  return JSON.parse(fs.readFileSync(path.join(VECTORS, name), 'utf8'));
}

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'promptops-node-test-'));
}

/** `tests/vectors/render.json`'s snapshot written as a bundle file. */
function renderVectorBundle(doc) {
  const file = path.join(tempDir(), 'bundle.json');
  fs.writeFileSync(file, JSON.stringify(doc.snapshot));
  return file;
}

// The `promptops` registry binary (`cargo build --workspace` builds it;
// scripts/test-node.sh passes its path in PROMPTOPS_SERVER_BIN). Tests that
// need it fail (they are never skipped) when the binary is missing.
const REGISTRY_BIN =
  process.env.PROMPTOPS_SERVER_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'promptops');
const REGISTRY_BIN_SKIP = false;

const registries = new Set();
process.on('exit', () => {
  for (const p of registries) p.kill('SIGKILL');
});

/**
 * Start `promptops serve --demo` on a free port (SQLite in a temp dir);
 * resolves to `{ url, adminKey, sdkKey, proc }` once its stdout named them.
 * Its stdout is read for its whole life; it is killed when this process exits.
 */
function startRegistry(extraArgs = []) {
  if (!fs.existsSync(REGISTRY_BIN)) {
    return Promise.reject(new Error(`the registry binary is not built (${REGISTRY_BIN}): run scripts/test-node.sh or set PROMPTOPS_SERVER_BIN`));
  }
  const proc = spawn(REGISTRY_BIN, ['serve', '--demo', '--addr', '127.0.0.1:0', ...extraArgs], {
    cwd: tempDir(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  registries.add(proc);
  proc.on('exit', () => registries.delete(proc));
  proc.stderr.resume(); // logs; keep the pipe drained
  const info = {};
  return new Promise((resolve, reject) => {
    const onExit = (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the registry exited early (${code ?? signal})`));
    };
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`the registry did not start within 20 s: ${JSON.stringify(info)}`));
    }, 20000);
    proc.once('error', onExit);
    proc.once('exit', onExit);
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      let m;
      if ((m = /^promptops registry on (http:\/\/\S+)/.exec(line))) info.url = m[1];
      else if ((m = /^\s+admin key:\s*(\S+)/.exec(line))) info.adminKey = m[1];
      else if ((m = /^\s+SDK key:\s*(\S+)/.exec(line))) info.sdkKey = m[1];
      if (info.url && info.adminKey && info.sdkKey && !info.done) {
        info.done = true;
        clearTimeout(timer);
        proc.off('exit', onExit);
        proc.off('error', onExit);
        resolve({ url: info.url, adminKey: info.adminKey, sdkKey: info.sdkKey, proc });
      }
    });
  });
}

// The mock LLM provider of the Rust tests (tests/mock_provider), as the
// process `promptops-mock-provider` that `cargo build --workspace` builds
// beside the registry binary (scripts/test-node.sh passes its path in
// PROMPTOPS_MOCK_PROVIDER_BIN). Missing, the tests that need it fail.
const MOCK_PROVIDER_BIN =
  process.env.PROMPTOPS_MOCK_PROVIDER_BIN || path.join(path.dirname(REGISTRY_BIN), 'promptops-mock-provider');

/**
 * Start the mock provider; resolves to `{ url, root, script(model, behaviors),
 * setDefault(model, behavior), received(), count(model), stop() }`.
 * Behaviours: `{ kind: 'ok', text, delay_ms, chunk_delay_ms }`, `{ kind:
 * 'status', code, retry_after }`, `{ kind: 'reset', tokens }`, `{ kind:
 * 'malformed', tokens }`, `{ kind: 'stall', ms, text }`.
 */
function startMockProvider() {
  if (!fs.existsSync(MOCK_PROVIDER_BIN)) {
    return Promise.reject(
      new Error(`the mock provider is not built (${MOCK_PROVIDER_BIN}): run scripts/test-node.sh or set PROMPTOPS_MOCK_PROVIDER_BIN`),
    );
  }
  const proc = spawn(MOCK_PROVIDER_BIN, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  registries.add(proc);
  proc.on('exit', () => registries.delete(proc));
  const waiting = [];
  let hello;
  const ready = new Promise((resolve, reject) => {
    hello = { resolve, reject };
    proc.once('error', reject);
    proc.once('exit', (code, signal) => {
      reject(new Error(`the mock provider exited (${code ?? signal})`));
      for (const w of waiting.splice(0)) w.reject(new Error('the mock provider exited'));
    });
  });
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    const msg = JSON.parse(line);
    if (hello !== null) {
      const h = hello;
      hello = null;
      h.resolve(msg);
      return;
    }
    const w = waiting.shift();
    if (msg.ok) w.resolve(msg);
    else w.reject(new Error(`mock provider: ${msg.error}`));
  });
  const send = (cmd) =>
    new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    });
  return ready.then(({ url, root }) => ({
    url,
    root,
    proc,
    script: (model, behaviors) => send({ cmd: 'script', model, behaviors }),
    setDefault: (model, behavior) => send({ cmd: 'default', model, behavior }),
    received: () => send({ cmd: 'received' }).then((m) => m.received),
    count: (model) => send({ cmd: 'count', model }).then((m) => m.count),
    stop: () => {
      proc.stdin.end();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  }));
}

/**
 * A Redis for the live tests: the shared one scripts/test.sh starts (it
 * exports PROMPTOPS_TEST_REDIS_URL), which must answer, else a
 * `redis-server` of our own on a free loopback port (killed with this
 * process). Never skips: no Redis fails the test. Resolves to `{ url, stop }`.
 */
async function startRedis() {
  const net = require('node:net');
  const answers = (port, host) =>
    new Promise((resolve) => {
      const s = net.connect({ port, host }, () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  const shared = process.env.PROMPTOPS_TEST_REDIS_URL;
  if (shared) {
    const u = new URL(shared);
    if (!(await answers(Number(u.port || 6379), u.hostname))) {
      throw new Error(`PROMPTOPS_TEST_REDIS_URL=${shared} names a Redis that does not answer (scripts/services.sh start)`);
    }
    return { url: shared, stop() {} };
  }
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: p } = s.address();
      s.close(() => resolve(p));
    });
  });
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tempDir()],
    { stdio: 'ignore' },
  );
  registries.add(proc);
  proc.on('exit', () => registries.delete(proc));
  const failed = new Promise((_, reject) =>
    proc.once('error', (e) =>
      reject(new Error(`cannot start redis-server (${e.message}); apt-get install -y redis-server (scripts/services.sh does)`)),
    ),
  );
  const deadline = Date.now() + 10000;
  for (;;) {
    if (await Promise.race([answers(port, '127.0.0.1'), failed])) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error('redis-server did not start within 10 s');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: `redis://127.0.0.1:${port}/`, stop: () => proc.kill('SIGKILL') };
}

/**
 * A local HTTP receiver standing in for a telemetry gateway or an OTLP/HTTP
 * collector: records every POST (`{ path, headers, body }`) and answers
 * `status` after `delayMs`. Resolves to `{ url, requests, bodies(path),
 * raw(), close() }`.
 */
function startReceiver({ status = 200, delayMs = 0 } = {}) {
  const http = require('node:http');
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      requests.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      setTimeout(() => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end('{}');
      }, delayMs);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        requests,
        bodies: (path) => requests.filter((r) => r.path === path).map((r) => JSON.parse(r.body)),
        raw: () => requests.map((r) => r.body).join('\n'),
        close: () => new Promise((r) => {
          server.closeAllConnections?.();
          server.close(() => r());
        }),
      });
    });
  });
}

function stopRegistry(reg) {
  if (reg && reg.proc.exitCode === null && reg.proc.signalCode === null) reg.proc.kill('SIGKILL');
}

module.exports = {
  PKG,
  ROOT,
  VECTORS,
  EXAMPLE_PROMPTS,
  loadVector,
  tempDir,
  renderVectorBundle,
  REGISTRY_BIN,
  REGISTRY_BIN_SKIP,
  startRegistry,
  stopRegistry,
  MOCK_PROVIDER_BIN,
  startMockProvider,
  startRedis,
  startReceiver,
};
