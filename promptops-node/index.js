'use strict';
// promptops for Node.js: the idiomatic surface over the native addon
// (binding.js, built from src/lib.rs). Behaviour lives in promptops-core;
// this file shapes it for JS: error subclasses, an EventEmitter client,
// lazily computed token counts, and the variable encoder (encode.js).

const { EventEmitter } = require('node:events');
const native = require('./binding.js');
const encoder = require('./encode.js');
const plans = require('./plan.js');

// Render in JS from the core's portable plan where a prompt has one (see
// plan.js); PROMPTOPS_JS_RENDER=0 (or off/false/no) renders every prompt in
// the addon. PROMPTOPS_FAST_RENDER=0 turns both this and the core's fast
// path off (no plans are made then).
let jsRender = !['0', 'off', 'false', 'no'].includes(String(process.env.PROMPTOPS_JS_RENDER ?? '').trim().toLowerCase());

/**
 * Turn rendering in JS from portable plans on or off for the whole process
 * (a safety valve and for A/B measurements); overrides PROMPTOPS_JS_RENDER.
 * Returns the previous setting.
 */
function setJsRender(enabled) {
  const was = jsRender;
  jsRender = Boolean(enabled);
  return was;
}

// ---------------------------------------------------------------------------
// Errors. The addon throws instances of these classes (registered below), so
// the mapping from the core's error kinds lives in one place: `js_error` in
// src/lib.rs picks the class by `code`; the constructor copies the fields.

class PromptOpsError extends Error {
  constructor(message, details) {
    super(message);
    const d = details && typeof details === 'object' ? details : {};
    /** The core's error kind, e.g. `PROMPT_NOT_FOUND`. */
    this.code = d.kind || this.constructor.code || 'PROMPTOPS_ERROR';
    /** Every field of the error (`kind`, `message`, `prompt`, `line`, …). */
    this.details = d;
    if (d.prompt !== undefined) this.prompt = d.prompt;
  }

  get name() {
    return this.constructor.name;
  }
}

function errorClass(name, code, fields) {
  const cls = {
    [name]: class extends PromptOpsError {
      constructor(message, details) {
        super(message, details);
        for (const f of fields) {
          // `jsName:detailKey` when the names differ (`errorType:error_type`).
          const [js, key = js] = f.split(':');
          this[js] = this.details[key] ?? null;
        }
      }
    },
  }[name];
  Object.defineProperty(cls, 'code', { value: code });
  return cls;
}

const PromptNotFoundError = errorClass('PromptNotFoundError', 'PROMPT_NOT_FOUND', ['selector']);
const TemplateError = errorClass('TemplateError', 'TEMPLATE_ERROR', ['line', 'column', 'part']);
const VariableError = errorClass('VariableError', 'VARIABLE_ERROR', ['variable', 'line']);
const ValidationError = errorClass('ValidationError', 'VALIDATION_ERROR', ['field']);
const IncludeCycleError = errorClass('IncludeCycleError', 'INCLUDE_CYCLE', ['label', 'cycle']);
const ParseError = errorClass('ParseError', 'PARSE_ERROR', ['file', 'line', 'column']);
const SnapshotError = errorClass('SnapshotError', 'SNAPSHOT_ERROR', []);
const UnknownModelError = errorClass('UnknownModelError', 'UNKNOWN_MODEL', ['model']);
const OutputLimitError = errorClass('OutputLimitError', 'OUTPUT_LIMIT', ['limit']);
const FuelExhaustedError = errorClass('FuelExhaustedError', 'FUEL_EXHAUSTED', ['limit']);
const ConfigError = errorClass('ConfigError', 'CONFIG_ERROR', []);
const RegistryUnavailableError = errorClass('RegistryUnavailableError', 'REGISTRY_UNAVAILABLE', []);
const IoError = errorClass('IoError', 'IO_ERROR', ['file']);
const PolicyError = errorClass('PolicyError', 'POLICY_ERROR', ['field']);
const NoRouteError = errorClass('NoRouteError', 'NO_ROUTE', []);
const ProviderError = errorClass('ProviderError', 'PROVIDER_ERROR', [
  'provider',
  'model',
  'errorType:error_type',
  'status',
  'attempts',
]);

const errors = {
  PromptOpsError,
  PromptNotFoundError,
  TemplateError,
  VariableError,
  ValidationError,
  IncludeCycleError,
  ParseError,
  SnapshotError,
  UnknownModelError,
  OutputLimitError,
  FuelExhaustedError,
  ConfigError,
  RegistryUnavailableError,
  IoError,
  PolicyError,
  NoRouteError,
  ProviderError,
};

const ERROR_CLASSES = {};
for (const cls of Object.values(errors)) if (cls.code) ERROR_CLASSES[cls.code] = cls;
native.registerErrorClasses(ERROR_CLASSES);

// ---------------------------------------------------------------------------
// Rendered output

/**
 * The result of `prompt.render(vars)`: `text` (text prompts) or `messages`
 * (chat prompts), the model `config`, and, computed on first access and
 * then kept, `inputTokens`, `tokensExact`, `tokenEncoding` and
 * `estimatedCostUsd`.
 */
class Rendered {
  #prompt;
  #tokens = null;
  #path;

  constructor(prompt, out, path) {
    if (typeof out === 'string') {
      this.text = out;
      this.messages = null;
    } else {
      this.text = null;
      this.messages = out;
    }
    this.#prompt = prompt;
    this.#path = path;
  }

  /**
   * Where this was rendered: `js` (from the prompt's portable plan, in this
   * process's JS) or `native` (in the addon). The output is the same.
   */
  get renderPath() {
    return this.#path;
  }

  /** The model config (frozen; shared by every rendering of the prompt). */
  get config() {
    return this.#prompt.config;
  }

  /** The model tokens are counted and priced for (`config.model`). */
  get model() {
    return this.#prompt.config.model ?? null;
  }

  #count() {
    if (this.#tokens === null) {
      this.#tokens = this.#prompt[NATIVE].inputTokens(this.text ?? this.messages);
    }
    return this.#tokens;
  }

  /** Input tokens of the text or messages for `model` (counted once, lazily). */
  get inputTokens() {
    return this.#count().count;
  }

  /** `false` when `inputTokens` is an estimate (non-OpenAI model, or none). */
  get tokensExact() {
    return this.#count().exact;
  }

  /** The encoding counted with: `o200k_base` or `cl100k_base`. */
  get tokenEncoding() {
    return this.#count().encoding;
  }

  /** Estimated input cost in USD; `null` when the model has no price. */
  get estimatedCostUsd() {
    return this.#count().estimatedCostUsd ?? null;
  }

  /** The text, or the messages as `role: content` lines. */
  toString() {
    if (this.text !== null) return this.text;
    return this.messages.map((m) => `${m.role}: ${m.content}`).join('\n');
  }

  toJSON() {
    return {
      text: this.text,
      messages: this.messages,
      config: this.config,
      model: this.model,
      inputTokens: this.inputTokens,
      tokensExact: this.tokensExact,
      estimatedCostUsd: this.estimatedCostUsd,
    };
  }
}

// ---------------------------------------------------------------------------
// Prompt

const NATIVE = Symbol('promptops.native');
const NOT_LATIN1 = /[^\u0000-\u00ff]/;

function deepFreeze(v) {
  if (v && typeof v === 'object') {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze(v[k]);
  }
  return v;
}

/** One version of one prompt, ready to render. Immutable. */
class Prompt {
  #config = undefined;
  #variants = null;
  #handle = null; // for native.renderFast, made on the first render
  #js = undefined; // the plan's renderer (plan.js); null: none; undefined: not looked up
  #telemetry = false;

  constructor(n) {
    this[NATIVE] = n;
    /** `module/name` */
    this.name = n.name;
    /** The version number (0 for an inline fallback). */
    this.version = n.version;
    /** The label it was looked up by (`null` for a pinned version). */
    this.label = n.label;
    /** `memory`, `disk`, `bundle` or `fallback`. */
    this.source = n.source;
    /** `text` or `chat`. */
    this.kind = n.kind;
    /** The selected variant (`null` for the version itself). */
    this.variantName = n.variantName;
    Object.defineProperty(this, NATIVE, { enumerable: false });
  }

  /** The model config rendering returns (frozen). */
  get config() {
    if (this.#config === undefined) this.#config = deepFreeze(this[NATIVE].config);
    return this.#config;
  }

  /** Names of the version's variants. */
  get variants() {
    if (this.#variants === null) this.#variants = Object.freeze(this[NATIVE].variants);
    return this.#variants;
  }

  get description() {
    return this[NATIVE].description;
  }

  get tags() {
    return this[NATIVE].tags;
  }

  /** The input schema (JSON Schema), or `null`. */
  get schema() {
    return this[NATIVE].schema;
  }

  /** The same prompt with variant `name` selected (PromptNotFoundError if none). */
  variant(name) {
    return new Prompt(this[NATIVE].variant(name));
  }

  /** The variant meant for `model`, else the version itself. */
  forModel(model) {
    return new Prompt(this[NATIVE].forModel(model));
  }

  /**
   * Render with `vars` (a plain object; JSON.stringify semantics). Synchronous:
   * rendering is CPU work measured in microseconds.
   */
  render(vars) {
    if (jsRender) {
      const js = this.#js === undefined ? this.#jsRenderer() : this.#js;
      if (js !== null) {
        if (!this.#telemetry) {
          const out = js(vars);
          if (out !== plans.ABANDONED) return new Rendered(this, out, 'js');
        } else {
          const t0 = process.hrtime.bigint();
          const out = js(vars);
          if (out !== plans.ABANDONED) {
            native.recordRender(this.#handle, Number(process.hrtime.bigint() - t0));
            return new Rendered(this, out, 'js');
          }
        }
      }
    }
    return this.#renderNative(vars);
  }

  /** The renderer of the prompt's portable plan (null when it has none); looked up once. */
  #jsRenderer() {
    const n = this[NATIVE];
    const plan = n.plan();
    const js = plan === null ? null : plans.renderer(plan);
    if (js !== null && n.telemetryEnabled) {
      this.#telemetry = true;
      this.#handle ??= n.handle();
    }
    this.#js = js;
    return js;
  }

  #renderNative(vars) {
    const enc = encoder.acquire();
    let out;
    try {
      const n = enc.encode(vars);
      const text = enc.text;
      // One-byte (Latin-1) text crosses as a plain copy; V8 answers this
      // test in constant time for such strings.
      out = native.renderFast(
        this.#handle ?? (this.#handle = this[NATIVE].handle()),
        text,
        enc.ops,
        n,
        !NOT_LATIN1.test(text),
      );
    } finally {
      encoder.release(enc);
    }
    return new Rendered(this, out, 'native');
  }
}

// ---------------------------------------------------------------------------
// Client

const OPTION_KEYS = [
  'server',
  'apiKey',
  'project',
  'redis',
  'redisPrefix',
  'cacheDir',
  'bundle',
  'promptsDir',
  'startupWait',
  'defaultLabel',
  'strict',
  'fuel',
  'maxOutputBytes',
  'telemetry',
  'telemetryUpload',
  'telemetryUploadUrl',
  'telemetryIntervalMs',
  'telemetryMaxBatch',
  'telemetryFlushTimeoutMs',
  'otlp',
  'prices',
  'providers',
  'call',
];

const NUMBER_OPTIONS = new Set(['startupWait', 'fuel', 'maxOutputBytes', 'telemetryIntervalMs', 'telemetryMaxBatch', 'telemetryFlushTimeoutMs']);

const CALL_NUMBERS = ['timeoutMs', 'ttftTimeoutMs', 'connectTimeoutMs', 'maxAttempts'];

/** `{ stream, timeoutMs, ttftTimeoutMs, connectTimeoutMs, failoverOn, maxAttempts }`, normalised. */
function callSettings(c) {
  if (typeof c !== 'object' || c === null) throw new TypeError('promptops: call settings must be an object');
  const out = {};
  if (c.stream !== undefined && c.stream !== null) out.stream = Boolean(c.stream);
  for (const k of CALL_NUMBERS) if (c[k] !== undefined && c[k] !== null) out[k] = Number(c[k]);
  if (c.failoverOn !== undefined && c.failoverOn !== null) {
    if (!Array.isArray(c.failoverOn)) throw new TypeError('promptops: failoverOn must be an array of failure classes');
    out.failoverOn = c.failoverOn.map(String);
  }
  return out;
}

/** `{ name: { protocol, baseUrl, apiKey, apiKeyEnv, headers } }`, normalised. */
function providersOptions(p) {
  if (typeof p !== 'object' || p === null) throw new TypeError('promptops: providers must be an object keyed by provider name');
  const out = {};
  for (const [name, e] of Object.entries(p)) {
    if (typeof e !== 'object' || e === null) throw new TypeError(`promptops: providers.${name} must be an object`);
    const o = {};
    for (const k of ['protocol', 'baseUrl', 'apiKey', 'apiKeyEnv']) {
      const v = e[k];
      if (v !== undefined && v !== null) o[k] = v instanceof URL ? v.href : String(v);
    }
    if (e.headers !== undefined && e.headers !== null) {
      o.headers = {};
      for (const [h, v] of Object.entries(e.headers)) o.headers[h] = String(v);
    }
    out[name] = o;
  }
  return out;
}

function telemetryOptions(t) {
  const out = {};
  for (const k of ['capacity', 'exportCapacity']) if (t[k] !== undefined && t[k] !== null) out[k] = Number(t[k]);
  for (const k of ['keepEvents', 'maskPii']) if (t[k] !== undefined && t[k] !== null) out[k] = Boolean(t[k]);
  return out;
}

const OTLP_NUMBERS = ['timeoutMs', 'maxSpans', 'maxSpansPerRequest', 'maxSeries'];
const OTLP_KEYS = new Set(['endpoint', 'headers', 'serviceName', 'metrics', 'traces', ...OTLP_NUMBERS]);

/** `otlp`: the collector's URL, or `{ endpoint, headers, serviceName, timeoutMs, … }`, normalised. */
function otlpOptions(o) {
  if (typeof o === 'string' || o instanceof URL) return { endpoint: o instanceof URL ? o.href : o };
  if (typeof o !== 'object') throw new TypeError("promptops: otlp must be the collector's URL or an options object");
  for (const k of Object.keys(o)) {
    if (!OTLP_KEYS.has(k)) {
      throw new ConfigError(`unknown otlp option \`${k}\` (${[...OTLP_KEYS].join(', ')})`, { kind: 'CONFIG_ERROR' });
    }
  }
  if (o.endpoint === undefined || o.endpoint === null) {
    throw new ConfigError("otlp needs an endpoint (the collector's base URL, e.g. http://127.0.0.1:4318)", { kind: 'CONFIG_ERROR' });
  }
  const out = { endpoint: o.endpoint instanceof URL ? o.endpoint.href : String(o.endpoint) };
  if (o.headers !== undefined && o.headers !== null) {
    if (typeof o.headers !== 'object') throw new TypeError('promptops: otlp.headers must be an object of strings');
    out.headers = {};
    for (const [h, v] of Object.entries(o.headers)) out.headers[h] = String(v);
  }
  if (o.serviceName !== undefined && o.serviceName !== null) out.serviceName = String(o.serviceName);
  for (const k of OTLP_NUMBERS) if (o[k] !== undefined && o[k] !== null) out[k] = Number(o[k]);
  for (const k of ['metrics', 'traces']) if (o[k] !== undefined && o[k] !== null) out[k] = Boolean(o[k]);
  return out;
}

const PRICE_KEYS = new Set(['provider', 'model', 'inputPerMtok', 'outputPerMtok', 'cachedInputPerMtok', 'contextWindow']);

/** `prices`: an array of `ModelPrice` objects, checked for unknown keys. */
function pricesOptions(v) {
  if (!Array.isArray(v)) throw new TypeError('promptops: prices must be an array of ModelPrice objects');
  return v.map((p, i) => {
    if (typeof p !== 'object' || p === null) throw new TypeError(`promptops: prices[${i}] must be an object`);
    const out = {};
    for (const [k, x] of Object.entries(p)) {
      if (!PRICE_KEYS.has(k)) {
        throw new ConfigError(`prices[${i}].${k}: unknown field (${[...PRICE_KEYS].join(', ')})`, { kind: 'CONFIG_ERROR' });
      }
      if (x === undefined || x === null) continue;
      out[k] = k === 'provider' || k === 'model' ? String(x) : Number(x);
    }
    for (const k of ['provider', 'model', 'inputPerMtok', 'outputPerMtok']) {
      if (out[k] === undefined) throw new ConfigError(`prices[${i}].${k} is required`, { kind: 'CONFIG_ERROR' });
    }
    return out;
  });
}

function nativeOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError('promptops: Client options must be an object');
  const out = {};
  for (const k of OPTION_KEYS) {
    const v = options[k];
    if (v === undefined || v === null) continue;
    if (k === 'telemetry') {
      if (v === false) continue;
      if (v === true) out[k] = {};
      else if (typeof v === 'object') out[k] = telemetryOptions(v);
      else throw new TypeError('promptops: telemetry must be true, false or an options object');
    } else if (k === 'providers') out[k] = providersOptions(v);
    else if (k === 'call') out[k] = callSettings(v);
    else if (k === 'otlp') out[k] = otlpOptions(v);
    else if (k === 'prices') out[k] = pricesOptions(v);
    else if (NUMBER_OPTIONS.has(k)) out[k] = Number(v);
    else if (k === 'strict' || k === 'telemetryUpload') out[k] = Boolean(v);
    else out[k] = v instanceof URL ? v.href : String(v);
  }
  return out;
}

// Prompts handed out by `get` are kept per client until what the store serves
// changes, so a repeated `get` is a map lookup. Bounded, in case names come
// from user input.
const MAX_CACHED_PROMPTS = 4096;

/**
 * The in-process promptops client. Reads prompts from a local directory
 * (`promptsDir`), a snapshot bundle (`bundle`) and/or live from a registry
 * (`server`) or Redis (`redis`), which a background sync keeps current;
 * lookups and renders never touch the network. Emits `change` with
 * `[{ prompt, label, old, new }]` whenever what a label serves changes, and
 * `status` with `{ status, lastError, dataAgeMs, sources }` when the state of
 * live delivery changes.
 */
class Client extends EventEmitter {
  #native;
  #prompts = new Map();
  // The store's change counter, shared with the addon: a lookup checks it
  // with one memory read and drops the cached prompts when it moved.
  #generation;
  #seen;
  // Routing (see `route`): the client's handle for `routeDecide`, the array
  // it writes a decision's numbers to, and what decisions share, cached.
  #routeHandle = null;
  #routeDepth = 0; // routes in progress in this client (a getter of the variables may route)
  #routeOut = new Float64Array(64);
  #bodies = new Map(); // body id of a target's prompt -> { render, config, version, variant }
  #policies = new Map(); // id of a policy key -> PolicyEntry

  /**
   * Build a client, reading its sources synchronously (fine at start-up; use
   * `await Client.create(options)` to read them, and wait `startupWait` for
   * live data, off the event loop).
   */
  constructor(options) {
    super();
    const n = options instanceof native.NativeClient ? options : native.openClient(nativeOptions(options));
    this.#native = n;
    this.#generation = new Uint32Array(n.generationBuffer());
    this.#seen = this.#generation[0];
    // The native side holds this callback (a thread-safe function that
    // never keeps the process alive); it reaches the client through a weak
    // reference so that an unused client can still be collected.
    const self = new WeakRef(this);
    n.setChangeCallback((changes) => {
      const client = self.deref();
      if (client !== undefined) client.#changed(changes);
    });
    n.setStatusCallback((status) => {
      const client = self.deref();
      if (client !== undefined && !client.#native.closed) client.emit('status', status);
    });
  }

  #changed(changes) {
    this.#prompts.clear();
    if (!this.#native.closed) this.emit('change', changes);
  }

  /**
   * Build a client on the libuv thread pool: reading and compiling its
   * sources and waiting `startupWait` for live data never hold the event loop.
   */
  static async create(options) {
    return new Client(await native.createClient(nativeOptions(options)));
  }

  /**
   * The prompt `name` under `label` (default `production`) or at a pinned
   * `version`; `fallback` (text, or `[{ role, content }]`) is served when the
   * prompt is in no source.
   */
  get(name, options) {
    let key = name;
    let label;
    let version;
    let fallback;
    if (options !== undefined && options !== null) {
      label = options.label ?? undefined;
      version = options.version ?? undefined;
      fallback = options.fallback ?? undefined;
      if (label !== undefined || version !== undefined || fallback !== undefined) {
        key = `${name}\u0000${label ?? ''}\u0000${version ?? ''}\u0000${
          fallback === undefined ? '' : typeof fallback === 'string' ? `t${fallback}` : `m${JSON.stringify(fallback)}`
        }`;
      }
    }
    if (this.#generation[0] !== this.#seen) {
      this.#prompts.clear();
      this.#seen = this.#generation[0];
    }
    let p = this.#prompts.get(key);
    if (p === undefined) {
      p = new Prompt(this.#native.get(String(name), label, version, fallback));
      if (this.#prompts.size >= MAX_CACHED_PROMPTS) this.#prompts.clear();
      this.#prompts.set(key, p);
    }
    return p;
  }

  /**
   * Live delivery: `initializing` (no live source answered yet), `valid`,
   * `interrupted` (every live source failing; last-known-good data served)
   * or `off` (closed, refused, or not configured). Without live sources:
   * `valid` when data is loaded, else `off`.
   */
  get status() {
    return this.#native.closed ? 'off' : this.#native.status;
  }

  /** `{ status, lastError, dataAgeMs, sources }`: the state of live delivery in detail. */
  syncStatus() {
    const s = this.#native.syncStatus();
    return {
      status: this.#native.closed ? 'off' : s.status,
      lastError: s.lastError ?? null,
      dataAgeMs: s.dataAgeMs ?? null,
      sources: { ...s.sources },
    };
  }

  /** The project this client serves (`null` until known). */
  get project() {
    return this.#native.project;
  }

  /** Problems found while loading: `[{ prompt, version, label, code, message, details }]`. */
  get diagnostics() {
    return this.#native.diagnostics();
  }

  /**
   * Push a snapshot (object or JSON text) into the store, the entry point
   * live sources use. Returns `{ applied, revision, hash, changes }`;
   * listeners get the changes as a `change` event.
   */
  apply(snapshot) {
    const json = typeof snapshot === 'string' ? snapshot : JSON.stringify(snapshot);
    const out = this.#native.applySnapshot(json);
    if (out.changes.length > 0) {
      const changes = out.changes.map((c) => ({ ...c }));
      process.nextTick(() => this.#changed(changes));
    }
    return out;
  }

  /**
   * `apply` on the libuv thread pool: parsing and compiling a large snapshot
   * does not hold the event loop. Resolves to `{ applied, revision, hash,
   * changes }`; listeners get the changes as a `change` event.
   */
  async applyAsync(snapshot) {
    const json = typeof snapshot === 'string' ? snapshot : JSON.stringify(snapshot);
    return this.#native.applySnapshotAsync(json);
  }

  /** Estimated cost in USD with this client's prices (`null` for an unknown model). */
  estimateCost(model, inputTokens, outputTokens = 0) {
    return this.#native.estimateCost(String(model), inputTokens, outputTokens);
  }

  /**
   * Route `name` for a caller: the routing policy stored with the prompt (or
   * a one-target policy from its config) picks the provider, model, variant
   * and version, and the prompt is rendered for that target. For callers
   * that make the provider call themselves; feed the outcome back with
   * `record(decision, outcome)`. `routeKey` is the sticky key (user id,
   * session id) of `weighted`, `canary` and `ab` policies.
   */
  route(name, vars, options) {
    let key;
    let label;
    let attributes;
    if (options !== undefined && options !== null) {
      key = options.routeKey ?? undefined;
      label = options.label ?? undefined;
      attributes = attributesOf(options.attributes);
    }
    name = String(name);
    if (key !== undefined) key = String(key);
    if (label !== undefined) label = String(label);
    // The decision is made natively without rendering and comes back as
    // numbers in `out` and one string; the target's prompt renders in JS
    // from its plan where it has one (as `Prompt.render` does), so the
    // variables never cross N-API. See "Routing from Node" in
    // BENCHMARKS-node.md.
    const client = (this.#routeHandle ??= this.#native.routeHandle());
    const depth = this.#routeDepth;
    const out = this.#routeOut;
    const reason = native.routeDecide(client, name, key, label, attributes, out, depth);
    if (reason === null) return this.#routeRendered(name, vars, key, label, attributes);
    // Everything of `out` is read before rendering: a getter of `vars` may route again.
    const pol = this.#policies.get(out[5]) ?? this.#policyOf(out[5], client, depth);
    const body = this.#bodies.get(out[2]) ?? this.#bodyOf(out[2], client, depth);
    const targets = pol.targets;
    const target = targets[out[0]];
    const bucket = out[1] < 0 ? null : out[1];
    const telemetry = out[3] !== 0;
    const n = out[6];
    const uncommon = out[4] !== 0 || n < 0; // skipped targets, or a very long failover order
    let fallbacks = NO_ITEMS;
    if (n > 1) {
      const f = new Array(n - 1);
      for (let i = 1; i < n; i++) f[i - 1] = targets[out[7 + i]];
      fallbacks = Object.freeze(f);
    }
    const js = jsRender ? body.render : null;
    // The decision as a handle where one is needed: a native render or an
    // uncommon decision (else `record` rebuilds it).
    let handle = js === null || uncommon ? native.routeTake(client, depth) : null;
    let o = plans.ABANDONED;
    if (js !== null) {
      // Routes started by getters of `vars` use the next slot.
      this.#routeDepth = depth + 1;
      try {
        if (!telemetry) o = js(vars);
        else {
          const t0 = process.hrtime.bigint();
          o = js(vars);
          if (o !== plans.ABANDONED) native.routeRecordPlan(client, depth, Number(process.hrtime.bigint() - t0));
        }
      } finally {
        this.#routeDepth = depth;
      }
    }
    // Taken before the variables are encoded: the encoder reads them again.
    if (o === plans.ABANDONED) o = routeRenderNative((handle ??= native.routeTake(client, depth)), vars);
    let text = null;
    let messages = null;
    if (typeof o === 'string') text = o;
    else messages = Object.freeze(o.map(Object.freeze));
    if (uncommon) return decisionOf(handle, JSON.parse(native.routeInfo(handle)), text, messages, body.config);
    const d = {
      target,
      reason,
      bucket,
      strategy: pol.strategy,
      policyId: pol.policyId,
      fallbacks,
      estimate: null,
      skipped: NO_ITEMS,
      prompt: pol.prompt,
      version: body.version,
      label: pol.label,
      variant: body.variant,
      text,
      messages,
      config: body.config,
    };
    // `record` needs the handle, or the policy's entry to rebuild it from.
    new Routed(d, handle ?? pol);
    return Object.freeze(d);
  }

  /** `route` for strategies that render every target to decide (`cheapest`, `best_quality`): all in the core. */
  #routeRendered(name, vars, key, label, attributes) {
    const enc = encoder.acquire();
    let handle;
    try {
      const n = enc.encode(vars);
      const text = enc.text;
      handle = this.#native.route(name, text, enc.ops, n, !NOT_LATIN1.test(text), key, label, attributes);
    } finally {
      encoder.release(enc);
    }
    const d = JSON.parse(native.routeInfo(handle));
    const messages = d.messages === null ? null : Object.freeze(d.messages.map(Object.freeze));
    return decisionOf(handle, d, d.text ?? null, messages, deepFreeze(d.config));
  }

  /** What a decision needs of its target's prompt, cached under the prompt body's id. */
  #bodyOf(id, client, depth) {
    const t = JSON.parse(native.routeTarget(client, depth));
    const body = {
      render: t.plan === null ? null : plans.renderer(t.plan),
      config: deepFreeze(t.config),
      version: t.version,
      variant: t.variant ?? null,
    };
    if (this.#bodies.size >= MAX_CACHED_PROMPTS) this.#bodies.clear();
    this.#bodies.set(id, body);
    return body;
  }

  /** The frozen parts of decisions that only change with the prompt, label and policy, cached under the id of their key. */
  #policyOf(id, client, depth) {
    const pol = new PolicyEntry(JSON.parse(native.routePolicy(client, depth)), native.routeTemplate(client, depth));
    if (this.#policies.size >= MAX_CACHED_PROMPTS) this.#policies.clear();
    this.#policies.set(id, pol);
    return pol;
  }

  /**
   * Feed the outcome of a call made for `decision` back into the routing
   * stats, the circuit breaker and telemetry: `{ ok, latencyMs, ttftMs,
   * inputTokens, outputTokens, costUsd, errorType, status, retryAfterS,
   * quality }`. A missing `costUsd` is computed from the token counts.
   */
  record(decision, outcome) {
    this.#native.record(nativeOf(decision), outcomeOf(outcome), undefined, undefined);
  }

  /**
   * `record` for any target of the decision's policy (a fallback the caller
   * tried, by target id), with an optional attempt number.
   */
  recordTarget(decision, target, outcome, attempt) {
    const id = typeof target === 'object' && target !== null ? target.id : target;
    this.#native.record(
      nativeOf(decision),
      outcomeOf(outcome),
      String(id),
      attempt === undefined || attempt === null ? undefined : Number(attempt),
    );
  }

  /** A quality score in `[0, 1]` for the decision's target (`best_quality`, adaptive `quality` reward). */
  recordQuality(decision, score) {
    this.#native.recordQuality(nativeOf(decision), Number(score));
  }

  /**
   * Render `name`, route it (`routeKey`, `label`), call the chosen provider,
   * fail over (connection errors, timeouts, 429 and 5xx, per the policy) and
   * record what happened. Resolves to the `Completion` (`text`, `usage`,
   * `costUsd`, `latencyMs`, `target`, every attempt); rejects with a
   * `ProviderError` (`code` `PROVIDER_ERROR`, with `status`, `errorType`,
   * `attempts`) when every target failed. The call runs off the event loop.
   * `onChunk(text)` streams the answer; `signal` (an `AbortSignal`) cancels.
   */
  complete(name, vars, options) {
    const onChunk = options?.onChunk ?? undefined;
    if (onChunk !== undefined && typeof onChunk !== 'function') {
      return Promise.reject(new TypeError('promptops: onChunk must be a function'));
    }
    const signal = options?.signal ?? undefined;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      let call = null;
      let failure = null; // an error of onChunk, or the abort reason
      const onAbort = () => {
        failure ??= { error: signal.reason };
        call?.cancel();
      };
      call = this.#call(name, vars, options, onChunk !== undefined, (ev) => {
        if (typeof ev === 'string') {
          if (failure !== null) return;
          try {
            onChunk(ev);
          } catch (e) {
            failure = { error: e };
            call.cancel();
          }
          return;
        }
        signal?.removeEventListener('abort', onAbort);
        if (failure !== null) reject(failure.error);
        else if (ev instanceof Error) reject(ev);
        else resolve(ev);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * `complete`, streamed: an async iterable of text chunks
   * (`for await (const chunk of client.stream(name, vars))`), whose
   * `completion` promise settles with the `Completion` (or the error) once
   * the stream ended. A stream that fails before its first token fails over
   * like `complete`; after it, the error is thrown by the iteration.
   * Leaving the loop early (`break`) or `cancel()` ends the call.
   */
  stream(name, vars, options) {
    return new CompletionStream((onEvent) => this.#call(name, vars, options, true, onEvent), options?.signal ?? undefined);
  }

  #call(name, vars, options, streaming, onEvent) {
    const settings = completeSettings(options);
    const enc = encoder.acquire();
    try {
      const n = enc.encode(vars);
      const text = enc.text;
      return this.#native.complete(String(name), text, enc.ops, n, !NOT_LATIN1.test(text), settings, streaming, onEvent);
    } finally {
      encoder.release(enc);
    }
  }

  /**
   * The telemetry metrics (GenAI semantic-convention names) in Prometheus
   * text exposition format; `null` when the client was built without
   * `telemetry`.
   */
  metricsText() {
    return this.#native.metricsText() ?? null;
  }

  /**
   * Export telemetry now (upload to the registry, OTLP) and wait at most
   * `timeoutMs` (default 5000). Resolves to `true` when the export round
   * finished in time (failed requests are counted in `telemetryStats()`),
   * `false` without an exporter or on timeout. The wait runs on the libuv
   * thread pool, never on the event loop.
   */
  flushTelemetry(options) {
    try {
      const t = options?.timeoutMs;
      return this.#native.flushTelemetry(t === undefined || t === null ? undefined : Number(t));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * `{ recorded, droppedQueueFull, droppedExportFull, droppedUploadFailed,
   * pending, otlp }`: what telemetry recorded and dropped (never silently);
   * `otlp` holds the OTLP exporter's counters, or `null`. `null` without
   * `telemetry`.
   */
  telemetryStats() {
    const s = this.#native.telemetryStats();
    if (s === undefined || s === null) return null;
    return { ...s, otlp: s.otlp ?? null };
  }

  /**
   * The project's model catalogue as the registry delivers it with the
   * snapshot (`promptops models set …`): `[{ model, provider, contextWindow,
   * maxOutputTokens, inputPerMtok, outputPerMtok, cachedInputPerMtok,
   * enabled, baseUrl, health: { status, checkedAt, error } }]`.
   */
  models() {
    return this.#native.models();
  }

  /**
   * The price this client uses for `model` (the catalogue's over the
   * built-in table): `{ provider, model, inputPerMtok, outputPerMtok,
   * cachedInputPerMtok, contextWindow }`. Throws `UnknownModelError`.
   */
  modelPrice(model) {
    return this.#native.modelPrice(String(model));
  }

  /**
   * Stop live delivery and change events, and refuse further lookups.
   * Idempotent. With telemetry export on, a last export round runs first
   * and `close()` waits for it, blocking the event loop, at most
   * `telemetryFlushTimeoutMs`: prefer `await closeAsync()` then.
   */
  close() {
    this.#native.close();
    this.#dropCaches();
  }

  /** What a closed client need not keep (the last decision in the route handle's slots holds its snapshot). */
  #dropCaches() {
    this.#prompts.clear();
    this.#bodies.clear();
    this.#policies.clear();
    this.#routeHandle = null;
  }

  /**
   * `close()` without blocking the event loop: the client refuses lookups
   * and emits no events from the call on; the last telemetry export round
   * (at most `telemetryFlushTimeoutMs`) and stopping live delivery run on
   * the libuv thread pool, and the promise resolves when they are done.
   */
  closeAsync() {
    try {
      const done = this.#native.closeAsync();
      this.#dropCaches();
      return done;
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

// ---------------------------------------------------------------------------
// Provider calls

const COMPLETE_CALL_KEYS = ['stream', 'timeoutMs', 'ttftTimeoutMs', 'failoverOn', 'maxAttempts'];

/** Caller attributes for telemetry (`{ name: value }`), as strings. */
function attributesOf(a) {
  if (a === undefined || a === null) return undefined;
  if (typeof a !== 'object') throw new TypeError('promptops: attributes must be an object of strings');
  const out = {};
  for (const [k, v] of Object.entries(a)) out[k] = String(v);
  return out;
}

function completeSettings(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object') throw new TypeError('promptops: call options must be an object');
  const out = {};
  if (options.routeKey !== undefined && options.routeKey !== null) out.routeKey = String(options.routeKey);
  if (options.label !== undefined && options.label !== null) out.label = String(options.label);
  const attributes = attributesOf(options.attributes);
  if (attributes !== undefined) out.attributes = attributes;
  if (COMPLETE_CALL_KEYS.some((k) => options[k] !== undefined && options[k] !== null)) {
    if (options.connectTimeoutMs !== undefined) {
      throw new TypeError('promptops: connectTimeoutMs is a client setting (new Client({ call: { connectTimeoutMs } }))');
    }
    out.call = callSettings(options);
  }
  return out;
}

/**
 * What `client.stream` returns: an async iterable of text chunks, and
 * `completion`, a promise of the `Completion` (or the error) once the
 * stream ended.
 */
class CompletionStream {
  #chunks = [];
  #waiting = null; // { resolve, reject } of a pending next()
  #done = false;
  #error = null;
  #call = null;
  #settle;

  constructor(start, signal) {
    let resolve;
    let reject;
    /** Settles with the `Completion` once the stream ended (or with its error). */
    this.completion = new Promise((a, b) => {
      resolve = a;
      reject = b;
    });
    // Iterating alone reports the error; an ignored `completion` is not an
    // unhandled rejection.
    this.completion.catch(() => {});
    this.#settle = { resolve, reject };
    if (signal?.aborted) {
      this.#finish(signal.reason, null);
      return;
    }
    const onAbort = () => this.#cancelWith(signal.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#call = start((ev) => {
      if (typeof ev === 'string') {
        if (this.#done) return;
        if (this.#waiting !== null) {
          const w = this.#waiting;
          this.#waiting = null;
          w.resolve({ value: ev, done: false });
        } else this.#chunks.push(ev);
        return;
      }
      signal?.removeEventListener('abort', onAbort);
      if (ev instanceof Error) this.#finish(ev, null);
      else this.#finish(null, ev);
    });
  }

  #finish(error, completion) {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    if (error !== null) this.#settle.reject(error);
    else this.#settle.resolve(completion);
    if (this.#waiting !== null && this.#chunks.length === 0) {
      const w = this.#waiting;
      this.#waiting = null;
      if (error !== null) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  #cancelWith(reason) {
    if (this.#done) return;
    this.#call?.cancel();
    this.#finish(reason, null);
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** The next chunk (`{ value, done }`); throws the call's error, if any, after the chunks before it. */
  next() {
    if (this.#chunks.length > 0) return Promise.resolve({ value: this.#chunks.shift(), done: false });
    if (this.#done) {
      if (this.#error !== null) {
        const e = this.#error;
        this.#error = null; // thrown once; later calls report the end
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiting !== null) return Promise.reject(new Error('promptops: next() called again before the previous one settled'));
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
  }

  /** Leaving a `for await` loop early: ends the call. */
  return() {
    this.cancel();
    this.#chunks.length = 0;
    this.#error = null;
    return Promise.resolve({ value: undefined, done: true });
  }

  /** End the call now: `completion` rejects with a cancellation error (`CONFIG_ERROR`). */
  cancel() {
    if (this.#done) return;
    this.#call?.cancel();
    // The native side reports the cancellation as the call's last event.
  }
}

// ---------------------------------------------------------------------------
// Routing

// What `record` needs of a decision (its route handle, or the policy entry
// to rebuild one from) sits in a private field stamped onto the decision's
// plain object: a base class whose constructor returns the object it is
// given lets a subclass add its private field to any object. The decision
// stays a frozen plain object with nothing extra to see (no symbol for
// Object.getOwnPropertySymbols, spread or deepStrictEqual), and the stamp
// costs what adding a property does (Object.defineProperty with a
// non-enumerable symbol cost ~0.15 µs per decision).
class Returning {
  constructor(o) {
    return o;
  }
}

class Routed extends Returning {
  #native;

  constructor(decision, n) {
    super(decision);
    this.#native = n;
  }

  /** What was stamped onto `decision`, or undefined. */
  static of(decision) {
    return decision !== null && typeof decision === 'object' && #native in decision ? decision.#native : undefined;
  }
}

const NO_ITEMS = Object.freeze([]);

/** Render a decision's target natively (its plan's renderer declined, or JS rendering is off). */
function routeRenderNative(handle, vars) {
  const enc = encoder.acquire();
  try {
    const n = enc.encode(vars);
    const text = enc.text;
    return native.routeRender(handle, text, enc.ops, n, !NOT_LATIN1.test(text));
  } finally {
    encoder.release(enc);
  }
}

/** The decision object `client.route` returns (a frozen plain object) from `routeInfo`'s JSON. */
function decisionOf(handle, d, text, messages, config) {
  const out = {
    target: Object.freeze(d.target),
    reason: d.reason,
    bucket: d.bucket ?? null,
    strategy: d.strategy,
    policyId: d.policyId,
    fallbacks: Object.freeze(d.fallbacks.map(Object.freeze)),
    estimate: d.estimate === null ? null : Object.freeze(d.estimate),
    skipped: Object.freeze(d.skipped.map(Object.freeze)),
    prompt: d.prompt,
    version: d.version,
    label: d.label ?? null,
    variant: d.variant ?? null,
    text,
    messages,
    config,
  };
  new Routed(out, handle);
  return Object.freeze(out);
}

/**
 * What decisions under one policy key share: the prompt, label, policy id,
 * strategy and frozen targets, and a template decision (a route handle) to
 * rebuild a decision for `record` from.
 */
class PolicyEntry {
  constructor([prompt, label, policyId, strategy, targets], template) {
    this.prompt = prompt;
    this.label = label;
    this.policyId = policyId;
    this.strategy = strategy;
    this.targets = targets.map(([id, provider, model, variant, version]) => Object.freeze({ id, provider, model, variant, version }));
    this.template = template;
  }
}

/** The route handle of a decision `client.route` returned. */
function nativeOf(decision) {
  const n = Routed.of(decision);
  if (n === undefined) throw new TypeError('promptops: expected a decision returned by client.route()');
  if (!(n instanceof PolicyEntry)) return n;
  // Decided without a handle: rebuilt from the decision's own (frozen) fields.
  const order = [n.targets.indexOf(decision.target), ...decision.fallbacks.map((t) => n.targets.indexOf(t))];
  return native.routeDecision(n.template, order, decision.bucket, decision.reason, decision.version, decision.variant);
}

const OUTCOME_NUMBERS = ['latencyMs', 'ttftMs', 'inputTokens', 'outputTokens', 'costUsd', 'status', 'retryAfterS', 'quality'];

function outcomeOf(outcome) {
  if (outcome === undefined || outcome === null) return {};
  if (typeof outcome !== 'object') throw new TypeError('promptops: an outcome must be an object');
  const out = {};
  if (outcome.ok !== undefined && outcome.ok !== null) out.ok = Boolean(outcome.ok);
  if (outcome.errorType !== undefined && outcome.errorType !== null) out.errorType = String(outcome.errorType);
  for (const k of OUTCOME_NUMBERS) if (outcome[k] !== undefined && outcome[k] !== null) out[k] = Number(outcome[k]);
  return out;
}

/**
 * Parse and check a routing policy (object or JSON text) the way the
 * registry does at publish, with the built-in price table. Throws a
 * `PolicyError` (`code` `POLICY_ERROR`, with `field`); returns `{ id,
 * strategy, targets }` (target ids) when it is valid.
 */
function validatePolicy(policy, options) {
  const json = typeof policy === 'string' ? policy : JSON.stringify(policy);
  const prompt = options !== undefined && options !== null ? (options.prompt ?? undefined) : undefined;
  return native.validatePolicy(json, prompt === undefined ? undefined : String(prompt));
}

/** The sticky bucket in `[0, 10000)` of `key` for a policy id and experiment. */
function routeBucket(policyId, experiment, key) {
  return native.routeBucket(String(policyId), String(experiment), String(key));
}

// ---------------------------------------------------------------------------
// Tokens and pricing

function tokenOptions(options) {
  if (typeof options === 'string') return [options, undefined];
  if (options === undefined || options === null) return [undefined, undefined];
  return [options.model ?? undefined, options.encoding ?? undefined];
}

/**
 * Tokens of a text, or of a chat request (`[{ role, content, name? }]`), as
 * `model` (default `gpt-4o`) counts them; `{ encoding }` counts a text in
 * `cl100k_base` or `o200k_base`. Exact for OpenAI models, a documented
 * estimate for others (see `countTokensDetailed`).
 */
function countTokens(input, options) {
  return countTokensDetailed(input, options).count;
}

/** Like `countTokens`, with the encoding and whether the count is exact. */
function countTokensDetailed(input, options) {
  const [model, encoding] = tokenOptions(options);
  return native.countTokens(input, model, encoding);
}

/** Which encoding a model is counted with, whether exactly, and the estimate factor. */
function tokenizerForModel(model) {
  return native.tokenizerForModel(String(model));
}

/** Cost in USD with the built-in price table; `null` for an unknown model. */
function estimateCost(model, inputTokens, outputTokens = 0) {
  return native.estimateCost(String(model), inputTokens, outputTokens);
}

module.exports = {
  Client,
  Prompt,
  Rendered,
  CompletionStream,
  countTokens,
  countTokensDetailed,
  tokenizerForModel,
  estimateCost,
  validatePolicy,
  routeBucket,
  setJsRender,
  ...errors,
};
