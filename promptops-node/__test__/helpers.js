'use strict';
// Shared by the test files: paths, the shared vectors, a client over the
// render vectors' snapshot (loaded as a bundle file, as the Rust runner does).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

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

module.exports = { PKG, ROOT, VECTORS, EXAMPLE_PROMPTS, loadVector, tempDir, renderVectorBundle };
