'use strict';
// Template variables -> one string + one Float64Array of opcodes, decoded by
// the native addon (see `Decoder` in src/lib.rs). Walking the object here,
// in JIT-compiled JS, and crossing the N-API boundary with two values costs a
// fixed handful of N-API calls per render; walking it from Rust costs several
// calls per value (see BENCHMARKS-node.md).
//
// Semantics are JSON.stringify's: own enumerable string keys in property
// order; `toJSON()` is honoured (Dates become ISO strings); `undefined`,
// functions and symbols are left out of objects and become null in arrays;
// NaN and ±Infinity become null; boxed primitives are unboxed. BigInts become
// numbers. Nesting deeper than MAX_DEPTH (a cycle, most likely) throws a
// TypeError, as JSON.stringify does on a cycle.

const OP_NULL = 0;
const OP_TRUE = 1;
const OP_FALSE = 2;
const OP_NUMBER = 3;
const OP_STRING = 4;
const OP_ARRAY = 5;
const OP_OBJECT = 6;
const MAX_DEPTH = 128;

class Encoder {
  constructor() {
    this.ops = new Float64Array(256);
    this.n = 0;
    this.text = '';
    this.busy = false;
  }

  reserve(k) {
    if (this.n + k > this.ops.length) {
      let size = this.ops.length * 2;
      while (size < this.n + k) size *= 2;
      const next = new Float64Array(size);
      next.set(this.ops.subarray(0, this.n));
      this.ops = next;
    }
  }

  // Returns false when the value is to be left out (undefined, function,
  // symbol), true when it was written.
  value(v, key, depth) {
    this.reserve(2);
    switch (typeof v) {
      case 'string':
        this.ops[this.n++] = OP_STRING;
        this.ops[this.n++] = v.length;
        this.text += v;
        return true;
      case 'number':
        if (Number.isFinite(v)) {
          this.ops[this.n++] = OP_NUMBER;
          this.ops[this.n++] = v;
        } else {
          this.ops[this.n++] = OP_NULL;
        }
        return true;
      case 'boolean':
        this.ops[this.n++] = v ? OP_TRUE : OP_FALSE;
        return true;
      case 'object':
        if (v === null) {
          this.ops[this.n++] = OP_NULL;
          return true;
        }
        return this.object(v, key, depth);
      case 'bigint':
        if (typeof v.toJSON === 'function') return this.value(v.toJSON(key), key, depth);
        this.ops[this.n++] = OP_NUMBER;
        this.ops[this.n++] = Number(v);
        return true;
      default:
        return false;
    }
  }

  object(v, key, depth) {
    if (typeof v.toJSON === 'function') return this.value(v.toJSON(key), key, depth);
    if (v instanceof String || v instanceof Number || v instanceof Boolean) {
      return this.value(v.valueOf(), key, depth);
    }
    if (depth >= MAX_DEPTH) {
      throw new TypeError(
        `promptops: variables nest deeper than ${MAX_DEPTH} levels (a circular structure?)`,
      );
    }
    if (Array.isArray(v)) {
      const len = v.length;
      this.ops[this.n++] = OP_ARRAY;
      this.ops[this.n++] = len;
      for (let i = 0; i < len; i++) {
        if (!this.value(v[i], String(i), depth + 1)) {
          this.reserve(1);
          this.ops[this.n++] = OP_NULL;
        }
      }
      return true;
    }
    const keys = Object.keys(v);
    this.ops[this.n++] = OP_OBJECT;
    const countAt = this.n++;
    let count = 0;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      this.reserve(1);
      const mark = this.n;
      const textMark = this.text;
      this.ops[this.n++] = k.length;
      this.text += k;
      if (this.value(v[k], k, depth + 1)) {
        count++;
      } else {
        this.n = mark;
        this.text = textMark;
      }
    }
    this.ops[countAt] = count;
    return true;
  }

  // Encode `vars` (the top level of a render); returns the opcode count.
  // The text is in `this.text`, the opcodes in `this.ops`.
  encode(vars) {
    this.n = 0;
    this.text = '';
    if (vars === undefined || vars === null) {
      this.ops[this.n++] = OP_OBJECT;
      this.ops[this.n++] = 0;
    } else if (!this.value(vars, '', 0)) {
      this.ops[this.n++] = OP_NULL;
    }
    return this.n;
  }
}

const shared = new Encoder();

// The encoder for one render: the shared one, or a fresh one for a nested
// render (a toJSON() that renders). Give it back with `release`.
function acquire() {
  if (shared.busy) return new Encoder();
  shared.busy = true;
  return shared;
}

function release(enc) {
  enc.busy = false;
  enc.text = '';
}

module.exports = { Encoder, acquire, release };
