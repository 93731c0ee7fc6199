'use strict';
// Render prompts in JS from the portable plan the core exports
// (`Prompt::portable_plan`, promptops-core/src/plan.rs): crossing into the
// addon for a render (encode the variables in JS, decode them in Rust,
// render, the output back as a JS string) costs several times what
// rendering a small template costs, so templates in the plan's subset are
// rendered here, by a function generated once per plan.
//
// Same output, or none. The generated code reproduces the core's render
// (minijinja in strict mode, as the variables look after JSON.stringify
// semantics, see encode.js) on the values it is sure about, and otherwise
// ABANDONS: the render function returns ABANDONED and index.js renders the
// same variables through the addon, whose output or error is
// authoritative. It abandons on:
//
// - variables that are not a plain object (or undefined/null, which the
//   encoder turns into {}); anywhere in them, whether the template reads
//   it or not: an object that is not a plain object (prototype
//   Object.prototype or null) or an array (Array.prototype) — class
//   instances, Dates, Maps, boxed primitives, typed arrays, … —, an object
//   with a toJSON method, a BigInt, nesting 128 deep;
// - an undefined value used in any way but `is defined`/`is undefined` or
//   `default` (strict mode raises), a lookup on undefined, an attribute of
//   a list, an item of anything but a list (`[0]`) or a map (`["k"]`);
// - printing anything but a string, a safe integer (in decimal), a boolean
//   (`True`, `False`) or null (`None`), or a string with an unpaired
//   surrogate (the encoder makes it U+FFFD);
//   `==`/`!=` on operands of different kinds, or on anything but strings,
//   safe integers, booleans and null;
// - `for` over anything but an array;
// - output over the client's maxOutputBytes (counted in UTF-8 bytes), and
//   a fuel estimate reaching the plan's budget: the core's fast path
//   estimate, over-counted (every branch condition and every expression
//   node is charged, output as 3 units per UTF-16 unit until the exact
//   UTF-8 count is needed), so a render that could run out of fuel is the
//   core's;
// - any exception (a throwing getter, say): the addon then renders, and
//   throws what it throws.
//
// Values follow JSON.stringify: own enumerable string-keyed properties;
// undefined, functions and symbols are left out of objects and are null in
// arrays; NaN and ±Infinity are null. Before rendering, the whole of the
// variables is walked as the encoder walks it (without copying anything),
// and the render abandons when the encoder could fail or see something
// else: an object with toJSON, a non-plain object, a BigInt, nesting 128
// deep (a cycle), a getter that throws, an object with a non-enumerable
// own property. So the addon's path throws exactly where it would have
// thrown had the JS path not been there. The variables are read, not
// copied: getters are called more than once and are assumed pure, as the
// core assumes of the objects it is given.
//
// Why a plain `o[key]` is then an own enumerable property: every object
// reached was walked and has only enumerable own string keys; its
// prototype is Object.prototype or null; and each render first checks
// that Object.prototype has no enumerable property and does not have any
// of the keys the template looks up (keys Object.prototype has anyway,
// such as `constructor`, are looked up with an explicit check instead).

const ABANDONED = Symbol('promptops.abandoned');
// What a template sees as undefined.
const U = Symbol('promptops.undefined');
// A `set` slot not set yet.
const NS = Symbol('promptops.unset');
// Thrown to abandon (any exception abandons; this one says why: nothing).
const A = Object.freeze({ abandon: true });

const OBJ = Object.prototype;
const ARR = Array.prototype;
const getProto = Object.getPrototypeOf;
const isArray = Array.isArray;
const pe = OBJ.propertyIsEnumerable;
const ownNames = Object.getOwnPropertyNames;
const LONE_SURROGATE = /\p{Cs}/u;
const wellFormed =
  typeof String.prototype.isWellFormed === 'function' ? (s) => s.isWellFormed() : (s) => !LONE_SURROGATE.test(s);
const isSafeInteger = Number.isSafeInteger;

function abandon() {
  throw A;
}

const MAX_DEPTH = 128; // encode.js's

/**
 * Walk everything the encoder would (`v`: a non-null object at `depth`),
 * abandoning where it could throw or see anything but plain objects,
 * arrays and primitives. Only objects checked here reach the templates.
 */
function walk(v, depth) {
  if (depth >= MAX_DEPTH) throw A;
  const p = getProto(v);
  if (typeof v.toJSON === 'function') throw A;
  if (p === ARR) {
    if (!isArray(v)) throw A;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x === 'object') {
        if (x !== null) walk(x, depth + 1);
      } else if (typeof x === 'bigint') throw A;
    }
  } else {
    if (p !== OBJ && p !== null) throw A;
    // Object.prototype has no enumerable property (checked first), so
    // for-in visits exactly the own enumerable keys, as Object.keys would.
    let n = 0;
    for (const k in v) {
      n++;
      const x = v[k];
      if (typeof x === 'object') {
        if (x !== null) walk(x, depth + 1);
      } else if (typeof x === 'bigint') throw A;
    }
    // A non-enumerable own property would be read by `o[key]`, never by
    // the encoder.
    if (ownNames(v).length !== n) throw A;
  }
}

/** A property value as the encoder sees it (left-out kinds: undefined). */
function val(v) {
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'object': // null, or a plain object or array (walked)
      return v;
    case 'number':
      return v - v === 0 ? v : null; // NaN and ±Infinity: null
    case 'undefined':
    case 'function':
    case 'symbol':
      return U;
    default:
      throw A; // bigint (not after the walk)
  }
}

/** An array item as the encoder sees it (left-out kinds: null). */
function item(v) {
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'object':
      return v;
    case 'number':
      return v - v === 0 ? v : null;
    case 'undefined':
    case 'function':
    case 'symbol':
      return null;
    default:
      throw A;
  }
}

/** `.name` / `["name"]` on something that is not a map. */
function notMap(o, attr) {
  // Undefined: strict mode raises; a list's attributes are not data;
  // `["x"]` on a non-map is the core's to decide.
  if (o === U || (o !== null && typeof o === 'object') || !attr) throw A;
  // `.x` of a string, number, boolean or none: undefined.
  return U;
}

/** `[i]` */
function index(o, i) {
  if (isArray(o)) return i < o.length ? item(o[i]) : U;
  throw A;
}

/** Whether a plain object has an entry the encoder keeps (walked: no toJSON, no BigInt). */
function hasEntries(o) {
  const keys = Object.keys(o);
  for (let i = 0; i < keys.length; i++) {
    const t = typeof o[keys[i]];
    if (t !== 'undefined' && t !== 'function' && t !== 'symbol') return true;
  }
  return false;
}

/** Truthiness: false, none, 0, "", [] and {} are false; undefined raises. */
function truthy(v) {
  switch (typeof v) {
    case 'boolean':
      return v;
    case 'string':
      return v.length !== 0;
    case 'number':
      return v !== 0;
    case 'object':
      if (v === null) return false;
      return isArray(v) ? v.length !== 0 : hasEntries(v);
    default:
      throw A;
  }
}

/** A value printed as the core prints it. */
function str(v) {
  switch (typeof v) {
    case 'string':
      if (wellFormed(v)) return v;
      throw A;
    case 'number':
      if (isSafeInteger(v)) return '' + v;
      throw A;
    case 'boolean':
      return v ? 'True' : 'False'; // minijinja prints Python's spellings
    case 'object':
      if (v === null) return 'None';
      throw A;
    default:
      throw A;
  }
}

/** `a == b` on two strings, two safe integers, two booleans or two nulls. */
function eq(a, b) {
  const t = typeof a;
  if (t !== typeof b) throw A;
  switch (t) {
    case 'string':
      if (wellFormed(a) && wellFormed(b)) return a === b;
      throw A;
    case 'number':
      if (isSafeInteger(a) && isSafeInteger(b)) return a === b;
      throw A;
    case 'boolean':
      return a === b;
    case 'object':
      if (a === null && b === null) return true;
      throw A;
    default:
      throw A;
  }
}

function isNone(v) {
  if (v === U) throw A;
  return v === null;
}

function seq(v) {
  if (isArray(v)) return v;
  throw A;
}

const utf8Length = typeof Buffer === 'function' ? (s) => Buffer.byteLength(s, 'utf8') : (s) => new TextEncoder().encode(s).length;

/**
 * Called when the cheap bound (3 bytes per UTF-16 unit) says the output may
 * be over a limit: abandons if the exact UTF-8 count is.
 */
function over(o, f, budget, max) {
  const n = utf8Length(o);
  if (f + n >= budget || n > max) throw A;
}

const HELPERS = { U, NS, A, OBJ, pe, val, item, notMap, index, truthy, str, eq, isNone, seq, over, abandon };
const HELPER_NAMES = Object.keys(HELPERS);
const HELPER_VALUES = HELPER_NAMES.map((k) => HELPERS[k]);

// ---------------------------------------------------------------------------
// Code generation

const lit = (v) => JSON.stringify(v);

/** A slot or loop number of the plan (they become parts of identifiers). */
function num(x) {
  if (!isSafeInteger(x) || x < 0) throw new Error('promptops: bad plan number');
  return x;
}

class Gen {
  constructor(template, step, budget, max) {
    this.step = step;
    this.budget = budget;
    this.max = max;
    this.temps = 0;
    this.slots = num(template.slots);
    this.loops = num(template.loops);
    // Keys looked up without a per-lookup check: not on Object.prototype
    // (checked again on every render).
    this.guarded = new Set();
  }

  /** A lookup of `k` on object `o` (both JS expressions; `o` evaluated once): its value or U. */
  get(o, k) {
    const v = this.temp();
    const K = lit(k);
    if (!(k in OBJ)) {
      this.guarded.add(k);
      return `((${v} = ${o}[${K}]) === undefined ? U : val(${v}))`;
    }
    return `((${v} = ${o}[${K}]) === undefined || !pe.call(${o}, ${K}) ? U : val(${v}))`;
  }

  temp() {
    return `t${this.temps++}`;
  }

  /** Fuel units of evaluating `e`: one step per expression node. */
  exprCost(e) {
    switch (e.t) {
      case 'const':
      case 'path':
      case 'loop':
        return 1;
      case 'not':
      case 'test':
      case 'default':
        return 1 + this.exprCost(e.expr);
      case 'and':
      case 'or':
      case 'eq':
      case 'ne':
        return 1 + this.exprCost(e.left) + this.exprCost(e.right);
      case 'cond':
        return 1 + this.exprCost(e.cond) + this.exprCost(e.then) + this.exprCost(e.otherwise);
      default:
        throw new Error(`promptops: unknown plan expression ${e.t}`);
    }
  }

  /** Steps a block charges on entry: its nodes, conditions, and expressions (not nested bodies). */
  blockCost(nodes) {
    let n = 0;
    for (const node of nodes) {
      n += 1;
      switch (node.t) {
        case 'text':
          break;
        case 'emit':
        case 'set':
          n += this.exprCost(node.expr);
          break;
        case 'if':
          for (const b of node.branches) n += 1 + this.exprCost(b.cond);
          break;
        case 'for':
          n += this.exprCost(node.iter);
          break;
        default:
          throw new Error(`promptops: unknown plan node ${node.t}`);
      }
    }
    return n * this.step;
  }

  constValue(v) {
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return lit(v);
    if (typeof v === 'number' && isSafeInteger(v)) return lit(v);
    throw new Error('promptops: bad plan constant');
  }

  /** A map lookup `[k]` on the value of JS expression `x`. */
  lookup(x, k, attr) {
    const o = this.temp();
    return `(${o} = ${x}, typeof ${o} === 'object' && ${o} !== null && !Array.isArray(${o}) ? ${this.get(o, k)} : notMap(${o}, ${attr}))`;
  }

  path(e) {
    const b = e.base;
    let x;
    if (typeof b.root === 'string') {
      // The root is a plain object (checked on entry).
      x = this.get('r', b.root);
    } else if (b.set !== undefined) {
      const slot = num(b.set.slot);
      x = `(s${slot} !== NS ? s${slot} : ${this.get('r', b.set.name)})`;
    } else if (typeof b.local === 'number') {
      x = `l${num(b.local)}`;
    } else {
      throw new Error('promptops: bad plan path');
    }
    for (const s of e.steps) {
      if (typeof s.attr === 'string') x = this.lookup(x, s.attr, true);
      else if (typeof s.key === 'string') x = this.lookup(x, s.key, false);
      else if (typeof s.index === 'number') x = `index(${x}, ${lit(s.index)})`;
      else throw new Error('promptops: bad plan step');
    }
    return x;
  }

  expr(e) {
    switch (e.t) {
      case 'const':
        return this.constValue(e.value);
      case 'path':
        return this.path(e);
      case 'loop': {
        const i = `i${num(e.id)}`;
        const n = `n${num(e.id)}`;
        switch (e.field) {
          case 'index':
            return `(${i} + 1)`;
          case 'index0':
            return i;
          case 'revindex':
            return `(${n} - ${i})`;
          case 'revindex0':
            return `(${n} - ${i} - 1)`;
          case 'first':
            return `(${i} === 0)`;
          case 'last':
            return `(${i} === ${n} - 1)`;
          case 'length':
            return n;
          default:
            throw new Error('promptops: bad loop field');
        }
      }
      case 'not':
        return `!truthy(${this.expr(e.expr)})`;
      case 'and': {
        const t = this.temp();
        return `(truthy(${t} = ${this.expr(e.left)}) ? ${this.expr(e.right)} : ${t})`;
      }
      case 'or': {
        const t = this.temp();
        return `(truthy(${t} = ${this.expr(e.left)}) ? ${t} : ${this.expr(e.right)})`;
      }
      case 'eq':
        return `eq(${this.expr(e.left)}, ${this.expr(e.right)})`;
      case 'ne':
        return `!eq(${this.expr(e.left)}, ${this.expr(e.right)})`;
      case 'cond':
        return `(truthy(${this.expr(e.cond)}) ? ${this.expr(e.then)} : ${this.expr(e.otherwise)})`;
      case 'test': {
        const x = this.expr(e.expr);
        if (e.test === 'defined') return `(${x} !== U)`;
        if (e.test === 'undefined') return `(${x} === U)`;
        if (e.test === 'none') return `isNone(${x})`;
        throw new Error('promptops: bad test');
      }
      case 'default': {
        const t = this.temp();
        const c = this.constValue(e.value);
        return e.lax
          ? `((${t} = ${this.expr(e.expr)}) === U || !truthy(${t}) ? ${c} : ${t})`
          : `((${t} = ${this.expr(e.expr)}) === U ? ${c} : ${t})`;
      }
      default:
        throw new Error(`promptops: unknown plan expression ${e.t}`);
    }
  }

  /** Statements of a block; `cost` steps are charged on entry. */
  block(nodes, out, charge) {
    const cost = this.blockCost(nodes);
    if (charge && cost > 0) out.push(`f += ${cost};`);
    for (const node of nodes) {
      switch (node.t) {
        case 'text':
          if (node.text.length > 0) out.push(`o += ${lit(node.text)};`);
          break;
        case 'emit':
          out.push(`o += str(${this.expr(node.expr)});`);
          break;
        case 'set':
          out.push(`s${num(node.slot)} = ${this.expr(node.expr)};`);
          break;
        case 'if': {
          node.branches.forEach((b, i) => {
            out.push(`${i === 0 ? 'if' : '} else if'} (truthy(${this.expr(b.cond)})) {`);
            this.block(b.body, out, true);
          });
          if (node.otherwise.length > 0) {
            out.push('} else {');
            this.block(node.otherwise, out, true);
          }
          out.push('}');
          break;
        }
        case 'for': {
          const id = num(node.id);
          out.push(`{ const a${id} = seq(${this.expr(node.iter)}); const n${id} = a${id}.length;`);
          if (node.otherwise.length > 0) {
            out.push(`if (n${id} === 0) {`);
            this.block(node.otherwise, out, true);
            out.push('}');
          }
          out.push(`for (let i${id} = 0; i${id} < n${id}; i${id}++) {`);
          out.push(`const l${num(node.slot)} = item(a${id}[i${id}]);`);
          out.push(`f += ${2 * this.step};`);
          out.push(`if (f + o.length * 3 >= B || o.length > M) over(o, f, B, M);`);
          this.block(node.body, out, true);
          out.push('} }');
          break;
        }
        default:
          throw new Error(`promptops: unknown plan node ${node.t}`);
      }
    }
  }

  /** The source of `function (r) -> string` rendering the template. */
  source(template) {
    const body = [];
    this.block(template.nodes, body, false);
    const head = [];
    if (this.guarded.size > 0) head.push(`if (${[...this.guarded].map((k) => `${lit(k)} in OBJ`).join(' || ')}) throw A;`);
    head.push(`let o = '';`, `let f = ${this.blockCost(template.nodes)};`);
    for (let s = 0; s < this.slots; s++) head.push(`let s${s} = NS;`);
    if (this.temps > 0) head.push(`let ${Array.from({ length: this.temps }, (_, i) => `t${i}`).join(', ')};`);
    const tail = [`if (f + o.length * 3 >= B) over(o, f, B, Infinity);`, 'return o;'];
    return `'use strict';\nconst B = ${this.budget}, M = ${this.max};\nreturn function render(r) {\n${[...head, ...body, ...tail].join('\n')}\n};`;
  }
}

/** `function (root) -> string` for one template of a plan. */
function compileTemplate(template, plan) {
  const budget = plan.fuel_budget === null || plan.fuel_budget === undefined ? Infinity : Number(plan.fuel_budget);
  const step = Number(plan.fuel_step);
  const max = Number(plan.max_output_bytes);
  // NaN would turn every limit check off.
  if (!(budget >= 0) || !(step >= 0) || !(max >= 0)) throw new Error('promptops: bad plan limits');
  const g = new Gen(template, step, budget, max);
  const src = g.source(template);
  // The generated code sees only the helpers above; the plan's strings
  // enter it as JSON literals.
  return new Function(...HELPER_NAMES, src)(...HELPER_VALUES);
}

const EMPTY = Object.freeze(Object.create(null));

/** The variables' root, walked: a plain object (undefined/null: empty). */
function root(vars) {
  for (const k in OBJ) throw A; // Object.prototype has an enumerable property
  if (vars === undefined || vars === null) return EMPTY;
  if (typeof vars !== 'object' || isArray(vars)) throw A;
  walk(vars, 0);
  return vars;
}

/**
 * Build the renderer of a plan (its JSON text): `(vars) => string |
 * messages | ABANDONED`, or null when the plan cannot be used here (an
 * unknown format, or code generation is not allowed in this process).
 */
function build(planJson) {
  let plan;
  try {
    plan = JSON.parse(planJson);
    if (plan.format !== 1) return null;
    const max = Number(plan.max_output_bytes);
    const over3 = Math.floor(max / 3);
    if (plan.body.kind === 'text') {
      const fn = compileTemplate(plan.body.template, plan);
      return (vars) => {
        try {
          const o = fn(root(vars));
          if (o.length > over3 && utf8Length(o) > max) return ABANDONED;
          return o;
        } catch {
          return ABANDONED;
        }
      };
    }
    if (plan.body.kind === 'chat') {
      const msgs = plan.body.messages.map((m) => ({
        role: String(m.role),
        name: m.name === null || m.name === undefined ? null : String(m.name),
        fn: compileTemplate(m.template, plan),
      }));
      return (vars) => {
        try {
          const r = root(vars);
          const out = new Array(msgs.length);
          let units = 0;
          for (let i = 0; i < msgs.length; i++) {
            const m = msgs[i];
            const content = m.fn(r);
            units += content.length;
            out[i] = m.name === null ? { role: m.role, content } : { role: m.role, content, name: m.name };
          }
          if (units > over3) {
            let bytes = 0;
            for (const m of out) bytes += utf8Length(m.content);
            if (bytes > max) return ABANDONED;
          }
          return out;
        } catch {
          return ABANDONED;
        }
      };
    }
    return null;
  } catch {
    return null; // no code generation here (--disallow-code-generation-from-strings), or a bad plan
  }
}

// Renderers by plan text: a prompt fetched again (after an unrelated
// change, or through another client) reuses the generated code.
const MAX_CACHED = 256;
const cache = new Map();

/** The renderer for a plan's JSON text (cached), or null. */
function renderer(planJson) {
  let r = cache.get(planJson);
  if (r === undefined) {
    r = build(planJson);
    if (cache.size >= MAX_CACHED) cache.clear();
    cache.set(planJson, r);
  }
  return r;
}

// `__walk`: for the benchmark's phase profile.
module.exports = { renderer, ABANDONED, build, __walk: root };
