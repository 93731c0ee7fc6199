// Types of the `promptops` package (index.js / index.mjs). The native layer
// under it has its own generated declarations (binding.d.ts, written by
// `napi build` from src/lib.rs); this file describes the public surface.

import { EventEmitter } from 'node:events';

/** A chat message, as the OpenAI and Anthropic SDKs take it. */
export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/** Options of `new Client(…)` / `Client.create(…)`. */
export interface ClientOptions {
  /** Registry URL for live delivery (needs `project`). */
  server?: string | URL;
  /** API key (SDK key) for `server`. */
  apiKey?: string;
  /**
   * The project this client serves (default: the bundle's, or the prompt
   * directory's name; required for live delivery).
   */
  project?: string;
  /** Redis URL for live delivery (snapshot key + pub/sub channel; needs `project`). */
  redis?: string | URL;
  /** Key and channel prefix in Redis (default `promptops`, the registry's `--redis-prefix`). */
  redisPrefix?: string;
  /** Where live delivery keeps its last-known-good snapshot (served while the registry is down). */
  cacheDir?: string;
  /** A snapshot bundle file shipped with the app. */
  bundle?: string;
  /** A local prompt directory (`module/name.prompt`, `.prompty`). */
  promptsDir?: string;
  /**
   * Milliseconds to wait for live data at start-up (default 0: never wait).
   * `new Client` blocks for it; `Client.create` waits off the event loop.
   */
  startupWait?: number;
  /** The label `get` uses when none is given (default `production`). */
  defaultLabel?: string;
  /** Fail on any load problem instead of reporting it in `diagnostics`. */
  strict?: boolean;
  /** Most template steps one render may take (default 1,000,000; 0 = no limit). */
  fuel?: number;
  /** Largest rendered output in bytes (default 1 MiB). */
  maxOutputBytes?: number;
  /**
   * Record renders, routing decisions and recorded calls; `client.metricsText()`
   * exports them (Prometheus text, GenAI metric names). `true` = defaults.
   */
  telemetry?: boolean | TelemetryOptions;
  /**
   * Provider endpoints by the name routing policies use. `openai` and
   * `anthropic` exist by default (keys from `OPENAI_API_KEY` /
   * `ANTHROPIC_API_KEY`); entries add or replace, e.g. an OpenAI-compatible
   * server: `{ local: { baseUrl: 'http://127.0.0.1:8000/v1' } }`.
   */
  providers?: Record<string, ProviderOptions>;
  /** Default settings of `complete` and `stream`. */
  call?: CallSettings;
  /**
   * Upload telemetry batches to `server` (`POST /v1/telemetry`) in the
   * background (default `true` with `telemetry` and a `server`).
   */
  telemetryUpload?: boolean;
  /** Upload to this URL instead (a gateway; `/v1/telemetry` is appended), also without a `server`. */
  telemetryUploadUrl?: string | URL;
  /** Milliseconds between export rounds (default 10,000). */
  telemetryIntervalMs?: number;
  /** Events per upload request (default 1000). */
  telemetryMaxBatch?: number;
  /**
   * Longest `close()` waits, blocking, for the last export round, in ms
   * (default 5000). `await client.flushTelemetry()` first to wait off the
   * event loop.
   */
  telemetryFlushTimeoutMs?: number;
  /**
   * Export metrics and spans over OTLP/HTTP JSON (OpenTelemetry GenAI
   * semantic conventions): the collector's base URL, or options.
   */
  otlp?: string | URL | OtlpOptions;
  /**
   * Prices over the built-in table, for cost estimates and `cheapest`
   * routing (a registry's model catalogue, when it has prices, wins).
   */
  prices?: Array<Pick<ModelPrice, 'provider' | 'model' | 'inputPerMtok' | 'outputPerMtok'> & Partial<Pick<ModelPrice, 'cachedInputPerMtok' | 'contextWindow'>>>;
}

/** OTLP/HTTP JSON export (`/v1/metrics` and `/v1/traces` are appended to `endpoint`). */
export interface OtlpOptions {
  /** The collector's base URL, e.g. `http://127.0.0.1:4318`. */
  endpoint: string | URL;
  /** Request headers (auth); values are secrets, never shown in errors. */
  headers?: Record<string, string>;
  /** `service.name` of the resource (default `promptops-app`). */
  serviceName?: string;
  /** Request timeout in ms (default 10,000). */
  timeoutMs?: number;
  /** Spans held between exports (default 2048); more are dropped and counted. */
  maxSpans?: number;
  /** Spans per request (default 512). */
  maxSpansPerRequest?: number;
  /** Distinct metric attribute sets kept (default 2000); beyond, observations are counted in `droppedPoints`. */
  maxSeries?: number;
  /** Export metrics (default `true`). */
  metrics?: boolean;
  /** Export one span per call (default `true`). */
  traces?: boolean;
}

/** What telemetry recorded and dropped (`client.telemetryStats()`). */
export interface TelemetryStats {
  /** Events accepted into the record queue. */
  recorded: number;
  /** Dropped because the record queue was full. */
  droppedQueueFull: number;
  /** Dropped from the export buffer before they could be uploaded. */
  droppedExportFull: number;
  /** In uploads that failed. */
  droppedUploadFailed: number;
  /** Waiting for the next upload. */
  pending: number;
  /** The OTLP exporter's counters; `null` without `otlp`. */
  otlp: OtlpStats | null;
}

/** The OTLP exporter's counters. */
export interface OtlpStats {
  spansExported: number;
  /** Dropped because the span queue was full. */
  spansDropped: number;
  /** In requests that failed. */
  spansFailed: number;
  metricExports: number;
  metricExportsFailed: number;
  /** Metric observations dropped at the series limit. */
  droppedPoints: number;
}

/** One model of the project's catalogue (`client.models()`); prices in USD per million tokens. */
export interface ModelEntry {
  model: string;
  provider: string;
  contextWindow: number | null;
  maxOutputTokens: number | null;
  inputPerMtok: number;
  outputPerMtok: number;
  cachedInputPerMtok: number | null;
  /** `false`: routing never picks the model. */
  enabled: boolean;
  /** API base of an OpenAI-compatible server (`null`: the provider's). */
  baseUrl: string | null;
  health: {
    /** `unavailable`: the registry's last health check failed; routing skips the model. */
    status: 'unknown' | 'healthy' | 'unavailable';
    /** RFC 3339 time of that check. */
    checkedAt: string | null;
    error: string | null;
  };
}

/** A model's price as a client uses it (`client.modelPrice(model)`), USD per million tokens. */
export interface ModelPrice {
  provider: string;
  model: string;
  inputPerMtok: number;
  outputPerMtok: number;
  cachedInputPerMtok: number | null;
  contextWindow: number | null;
}

/** Where a provider is served. Keys are never logged nor put in errors. */
export interface ProviderOptions {
  /** Wire protocol (default: `anthropic` for the provider named `anthropic`, else `openai`). */
  protocol?: 'openai' | 'anthropic';
  /** Base URL including the API version path (`https://api.openai.com/v1`); required for new names. */
  baseUrl?: string | URL;
  /** The API key (else read from `apiKeyEnv` at call time). */
  apiKey?: string;
  /** The environment variable holding the key. */
  apiKeyEnv?: string;
  /** Extra request headers (treated as secrets). */
  headers?: Record<string, string>;
}

/** Settings of a provider call. */
export interface CallSettings {
  /** Stream the response (SSE; gives `ttftMs`). `stream()` and `onChunk` always stream. */
  stream?: boolean;
  /** Longest one attempt may take, in ms (default 60,000). */
  timeoutMs?: number;
  /** Streams: longest wait for the first token, in ms (default 20,000). */
  ttftTimeoutMs?: number;
  /** Longest a connect may take, in ms (default 5,000). Client option only. */
  connectTimeoutMs?: number;
  /** Failure classes failed over on (default: the policy's `failover.on`). */
  failoverOn?: FailureClass[];
  /** Most attempts (default: the policy's, else every target). */
  maxAttempts?: number;
}

/** Options of `client.complete(…)` and `client.stream(…)`. */
export interface CompleteOptions extends RouteOptions, Omit<CallSettings, 'connectTimeoutMs'> {
  /** Cancels the call: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** `complete` only: streams the answer, calling this with each text chunk. */
  onChunk?: (text: string) => void;
}

/** Token usage of a call, as the provider reported it (`reported`) or counted here. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cachedInputTokens: number;
  reported: boolean;
}

/** One attempt of a `complete`. */
export interface Attempt {
  /** The target id (`provider/model`, or the policy's id for it). */
  target: string;
  provider: string;
  model: string;
  ok: boolean;
  /** Not called: its circuit was open. */
  skipped: boolean;
  /** `connect`, `timeout`, `ttft_timeout`, `rate_limited`, `server_error`, … */
  errorType: string | null;
  status: number | null;
  message: string | null;
  /** A 429's `Retry-After`, in ms. */
  retryAfterMs: number | null;
  latencyMs: number;
}

/** The routing decision behind a completion. */
export type CompletionDecision = Omit<Decision, 'text' | 'messages' | 'config'>;

/** What `client.complete` resolves to (and `stream(…).completion`). */
export interface Completion {
  text: string;
  usage: Usage;
  /** From the usage and the price table; `null` for an unpriced model. */
  costUsd: number | null;
  /** Of the successful attempt, in ms. */
  latencyMs: number;
  /** Streams only: time to the first token, in ms. */
  ttftMs: number | null;
  finishReason: string | null;
  /** The model the provider says answered. */
  responseModel: string | null;
  /** The target that answered. */
  target: RouteTarget;
  /** The prompt sent (differs from the one asked for after a `fallback_prompt`), its version and variant. */
  prompt: string;
  version: number;
  variant: string | null;
  decision: CompletionDecision;
  /** Every attempt, in order. */
  attempts: Attempt[];
}

/** What `client.stream` returns: an async iterable of text chunks. */
export declare class CompletionStream implements AsyncIterableIterator<string> {
  private constructor();
  /** Settles with the `Completion` once the stream ended, or with its error. */
  readonly completion: Promise<Completion>;
  [Symbol.asyncIterator](): AsyncIterableIterator<string>;
  next(): Promise<IteratorResult<string, undefined>>;
  /** Leaving a `for await` loop early ends the call. */
  return(): Promise<IteratorResult<string, undefined>>;
  /** End the call now (`completion` rejects with a `CONFIG_ERROR`). */
  cancel(): void;
}

/** Telemetry settings. */
export interface TelemetryOptions {
  /** Events the record queue holds before dropping (default 8192). */
  capacity?: number;
  /** Events kept for upload between uploads (default 8192). */
  exportCapacity?: number;
  /** Keep events for upload at all (default true; `false`: metrics only). */
  keepEvents?: boolean;
  /**
   * Mask e-mail addresses and runs of 7+ digits (phone, card, account
   * numbers) in events. Default: masked when telemetry leaves the process
   * (upload, OTLP); `false` sends events as recorded.
   */
  maskPii?: boolean;
}

/** Options of `client.route(…)`. */
export interface RouteOptions {
  /** The sticky key (user id, session id, …) of `weighted`, `canary` and `ab` policies. */
  routeKey?: string;
  /** The label to look the prompt up under (default: the client's). */
  label?: string;
  /** Caller attributes attached to telemetry events (masked on export). */
  attributes?: Record<string, string>;
}

/** One candidate of a routing policy. */
export interface RouteTarget {
  id: string;
  provider: string;
  model: string;
  variant: string | null;
  version: number | null;
}

export type RouteStrategy =
  | 'weighted'
  | 'canary'
  | 'ab'
  | 'failover'
  | 'cheapest'
  | 'fastest'
  | 'best_quality'
  | 'adaptive'
  | (string & {});

/** The chosen target's prediction, for strategies that make one. */
export interface RouteEstimate {
  inputTokens: number;
  exact: boolean;
  outputTokens: number;
  predictedCostUsd: number;
  contextWindow: number | null;
  fits: boolean;
}

/**
 * What `client.route` returns: the decision and the prompt rendered for its
 * target, as a frozen plain object (its nested objects and arrays frozen
 * too; decisions share their `target`, `fallbacks` entries and `config`).
 */
export interface Decision {
  readonly target: Readonly<RouteTarget>;
  /** Why this target, in words. */
  readonly reason: string;
  /** The sticky bucket in `[0, 10000)` (sticky strategies), else `null`. */
  readonly bucket: number | null;
  readonly strategy: RouteStrategy;
  readonly policyId: string;
  /** Failover order after `target`. */
  readonly fallbacks: readonly Readonly<RouteTarget>[];
  readonly estimate: Readonly<RouteEstimate> | null;
  /** Targets passed over, and why. */
  readonly skipped: readonly Readonly<{ target: string; reason: string }>[];
  /** The prompt, version, label and variant served. */
  readonly prompt: string;
  readonly version: number;
  readonly label: string | null;
  readonly variant: string | null;
  /** The rendered text (text prompts), else `null`. */
  readonly text: string | null;
  /** The rendered messages (chat prompts), else `null`. */
  readonly messages: readonly Readonly<ChatMessage>[] | null;
  /** The model config of the rendered prompt (frozen). */
  readonly config: Readonly<ModelConfig>;
}

export type FailureClass =
  | 'connect'
  | 'timeout'
  | 'rate_limited'
  | 'server_error'
  | 'malformed_response'
  | 'client_error';

/** The outcome of one provider call, fed back with `client.record`. */
export interface Outcome {
  /** Default: `true` unless `errorType` is given; `false` needs `errorType` or an HTTP `status` >= 400. */
  ok?: boolean;
  latencyMs?: number;
  /** Time to first token (streaming). */
  ttftMs?: number;
  inputTokens?: number;
  outputTokens?: number;
  /** Computed from the token counts and the price table when missing. */
  costUsd?: number;
  errorType?: FailureClass;
  /** The HTTP status. */
  status?: number;
  /** A 429's `Retry-After`, in seconds. */
  retryAfterS?: number;
  /** A quality score in `[0, 1]`. */
  quality?: number;
}

/** What `validatePolicy` returns for a valid policy. */
export interface ValidatedPolicy {
  id: string;
  strategy: RouteStrategy;
  /** Target ids, in policy order. */
  targets: string[];
}

export interface GetOptions {
  /** Look up the version this label points at (default: the client's default label). */
  label?: string;
  /** Pin a version instead of following a label. */
  version?: number;
  /** Served (with `source: 'fallback'`) when the prompt is in no source. */
  fallback?: string | ChatMessage[];
}

export type PromptSource = 'memory' | 'disk' | 'bundle' | 'fallback';
export type PromptKind = 'text' | 'chat';
export type Encoding = 'cl100k_base' | 'o200k_base';

/** Model configuration: provider, model and call parameters (unknown keys pass through). */
export interface ModelConfig {
  provider?: string;
  model?: string;
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  stop?: string[];
  [key: string]: unknown;
}

/** One change of what a label serves (`old`/`new`: version, `null` = not served). */
export interface PromptChange {
  prompt: string;
  label: string;
  old: number | null;
  new: number | null;
}

/** The state of live delivery. */
export type SyncState = 'initializing' | 'valid' | 'interrupted' | 'off';

/** `client.syncStatus()`, and the argument of `'status'` listeners. */
export interface SyncStatus {
  status: SyncState;
  /** The most recent error of any live source (kept after recovery), or `null`. */
  lastError: string | null;
  /** Milliseconds since a live source last confirmed the data, or `null` if none ever did. */
  dataAgeMs: number | null;
  /** Per live source (`http`, `redis`): its own state. */
  sources: Record<string, SyncState>;
}

export interface ApplyResult {
  applied: boolean;
  revision: number;
  hash: string;
  changes: PromptChange[];
}

/** A problem found while loading. */
export interface Diagnostic {
  prompt: string;
  version: number | null;
  label: string | null;
  code: ErrorCode;
  message: string;
  details: ErrorDetails;
}

export interface TokenCount {
  count: number;
  encoding: Encoding;
  /** `false` when the count is an estimate (non-OpenAI model). */
  exact: boolean;
}

export interface TokenizerInfo {
  encoding: Encoding;
  exact: boolean;
  /** The estimate factor applied to the encoding's count (1 for exact counts). */
  factor: number;
}

/** The result of rendering. */
export declare class Rendered {
  private constructor();
  /** The rendered text (text prompts), else `null`. */
  readonly text: string | null;
  /** The rendered messages (chat prompts), else `null`. */
  readonly messages: ChatMessage[] | null;
  /** The model config (frozen). */
  readonly config: Readonly<ModelConfig>;
  /** `config.model`, or `null`. */
  readonly model: string | null;
  /** Input tokens for `model`, counted on first access. */
  readonly inputTokens: number;
  /** `false` when `inputTokens` is an estimate. */
  readonly tokensExact: boolean;
  readonly tokenEncoding: Encoding;
  /** Estimated input cost in USD; `null` when the model has no price. */
  readonly estimatedCostUsd: number | null;
  /**
   * Where it was rendered: `'js'` (from the prompt's portable plan, in JS)
   * or `'native'` (in the addon). The output is the same either way.
   */
  readonly renderPath: 'js' | 'native';
  toString(): string;
  toJSON(): {
    text: string | null;
    messages: ChatMessage[] | null;
    config: ModelConfig;
    model: string | null;
    inputTokens: number;
    tokensExact: boolean;
    estimatedCostUsd: number | null;
  };
}

/** One version of one prompt, ready to render. Immutable. */
export declare class Prompt {
  private constructor();
  /** `module/name` */
  readonly name: string;
  /** The version number (0 for an inline fallback). */
  readonly version: number;
  /** The label it was looked up by (`null` for a pinned version). */
  readonly label: string | null;
  readonly source: PromptSource;
  readonly kind: PromptKind;
  /** The selected variant, or `null`. */
  readonly variantName: string | null;
  /** The model config rendering returns (frozen). */
  readonly config: Readonly<ModelConfig>;
  /** Names of the version's variants. */
  readonly variants: readonly string[];
  readonly description: string | null;
  readonly tags: string[];
  /** The input schema (JSON Schema), or `null`. */
  readonly schema: Record<string, unknown> | null;
  /** The same prompt with variant `name` selected. */
  variant(name: string): Prompt;
  /** The variant meant for `model`, else the version itself. */
  forModel(model: string): Prompt;
  /**
   * Render with `vars` (JSON.stringify semantics). Templates in the portable
   * subset render in JS (see `setJsRender`); the output is the addon's.
   */
  render(vars?: Record<string, unknown> | null): Rendered;
}

/**
 * The in-process promptops client. Emits `'change'` with `PromptChange[]`
 * when what a label serves changes, and `'status'` with a `SyncStatus` when
 * the state of live delivery changes.
 */
export declare class Client extends EventEmitter {
  /** Build a client, reading its sources (and waiting `startupWait`) synchronously. */
  constructor(options?: ClientOptions);
  /** Build a client on the libuv thread pool (the `startupWait` included). */
  static create(options?: ClientOptions): Promise<Client>;
  /** The prompt under `label` (default `production`) or at `version`. */
  get(name: string, options?: GetOptions): Prompt;
  /**
   * Live delivery's state; without live sources `'valid'` when data is
   * loaded, `'off'` when there is none (or the client is closed).
   */
  readonly status: SyncState;
  /** The state of live delivery in detail. */
  syncStatus(): SyncStatus;
  /** The project this client serves, once known. */
  readonly project: string | null;
  /** Problems found while loading. */
  readonly diagnostics: Diagnostic[];
  /** Push a snapshot (object or JSON text) into the store. */
  apply(snapshot: string | object): ApplyResult;
  /** `apply` on the libuv thread pool (the event loop is not held while a large snapshot compiles). */
  applyAsync(snapshot: string | object): Promise<ApplyResult>;
  /** Estimated cost in USD with this client's prices (the model catalogue's over the built-in table). */
  estimateCost(model: string, inputTokens: number, outputTokens?: number): number | null;
  /** The price this client uses for `model`; throws `UnknownModelError` when it has none. */
  modelPrice(model: string): ModelPrice;
  /** The project's model catalogue, delivered with the snapshot (empty without one). */
  models(): ModelEntry[];
  /**
   * Route `name`: the prompt's routing policy (or its config's model) picks
   * provider, model, variant and version; the prompt is rendered for it.
   */
  route(name: string, vars?: Record<string, unknown> | null, options?: RouteOptions): Decision;
  /** Feed a call's outcome back (stats, circuit breaker, telemetry). */
  record(decision: Decision, outcome: Outcome): void;
  /** `record` for another target of the decision's policy (a fallback tried), by id. */
  recordTarget(decision: Decision, target: string | RouteTarget, outcome: Outcome, attempt?: number): void;
  /** A quality score in `[0, 1]` for the decision's target. */
  recordQuality(decision: Decision, score: number): void;
  /**
   * Render, route, call the chosen provider with failover, and record the
   * outcome, off the event loop. Rejects with `ProviderError`
   * (`PROVIDER_ERROR`, with `status`, `errorType`, `attempts`) when every
   * target failed.
   */
  complete(name: string, vars?: Record<string, unknown> | null, options?: CompleteOptions): Promise<Completion>;
  /**
   * `complete`, streamed: `for await (const chunk of client.stream(…))`;
   * `.completion` gives the `Completion`. A stream that fails before its
   * first token fails over; after it, the iteration throws.
   */
  stream(name: string, vars?: Record<string, unknown> | null, options?: Omit<CompleteOptions, 'onChunk' | 'stream'>): CompletionStream;
  /** Telemetry metrics in Prometheus text format; `null` without `telemetry`. */
  metricsText(): string | null;
  /**
   * Export telemetry now (upload, OTLP), waiting at most `timeoutMs`
   * (default 5000) off the event loop. `true` when the round finished in
   * time (failed requests are counted in `telemetryStats()`); `false`
   * without an exporter or on timeout.
   */
  flushTelemetry(options?: { timeoutMs?: number }): Promise<boolean>;
  /** What telemetry recorded and dropped; `null` without `telemetry`. */
  telemetryStats(): TelemetryStats | null;
  /**
   * Stop live delivery, telemetry export and change events, and refuse
   * further lookups. A last export round runs first; `close()` waits for it
   * (blocking the event loop) at most `telemetryFlushTimeoutMs`: prefer
   * `await closeAsync()` with telemetry export on.
   */
  close(): void;
  /**
   * `close()` without blocking the event loop: lookups are refused and no
   * events are emitted from the call on; the last export round (at most
   * `telemetryFlushTimeoutMs`) and stopping live delivery run on the libuv
   * thread pool. Resolves when they are done. Idempotent.
   */
  closeAsync(): Promise<void>;
  on(event: 'change', listener: (changes: PromptChange[]) => void): this;
  on(event: 'status', listener: (status: SyncStatus) => void): this;
  once(event: 'change', listener: (changes: PromptChange[]) => void): this;
  once(event: 'status', listener: (status: SyncStatus) => void): this;
  off(event: 'change', listener: (changes: PromptChange[]) => void): this;
  off(event: 'status', listener: (status: SyncStatus) => void): this;
}

export interface CountOptions {
  /** The model to count for (default `gpt-4o`). */
  model?: string;
  /** Count a text in this encoding instead. */
  encoding?: Encoding;
}

/** Tokens of a text or a chat request for a model (exact for OpenAI models). */
export declare function countTokens(input: string | ChatMessage[], options?: CountOptions | string): number;
/** Like `countTokens`, with the encoding and whether the count is exact. */
export declare function countTokensDetailed(
  input: string | ChatMessage[],
  options?: CountOptions | string,
): TokenCount;
/** Which encoding a model is counted with, whether exactly, and the estimate factor. */
export declare function tokenizerForModel(model: string): TokenizerInfo;
/** Cost in USD with the built-in price table; `null` for an unknown model. */
export declare function estimateCost(model: string, inputTokens: number, outputTokens?: number): number | null;

/**
 * Parse and check a routing policy (object or JSON text) with the built-in
 * price table; throws `PolicyError` (with `field`) when it is invalid.
 */
export declare function validatePolicy(policy: string | object, options?: { prompt?: string }): ValidatedPolicy;
/** The sticky bucket in `[0, 10000)` of `key` for a policy id and experiment. */
export declare function routeBucket(policyId: string, experiment: string, key: string): number;
/**
 * Render in JS from portable plans (on unless `PROMPTOPS_JS_RENDER=0`) or
 * always in the addon, for the whole process; returns the previous setting.
 */
export declare function setJsRender(enabled: boolean): boolean;

export type ErrorCode =
  | 'PROMPT_NOT_FOUND'
  | 'TEMPLATE_ERROR'
  | 'VARIABLE_ERROR'
  | 'VALIDATION_ERROR'
  | 'INCLUDE_CYCLE'
  | 'PARSE_ERROR'
  | 'SNAPSHOT_ERROR'
  | 'UNKNOWN_MODEL'
  | 'OUTPUT_LIMIT'
  | 'FUEL_EXHAUSTED'
  | 'CONFIG_ERROR'
  | 'REGISTRY_UNAVAILABLE'
  | 'IO_ERROR'
  | 'POLICY_ERROR'
  | 'NO_ROUTE'
  | 'PROVIDER_ERROR';

/** The core's error fields: `kind`, `message` and whichever others apply. */
export interface ErrorDetails {
  kind: ErrorCode;
  message: string;
  prompt?: string;
  version?: number;
  part?: string;
  line?: number;
  column?: number;
  variable?: string;
  field?: string;
  file?: string;
  label?: string;
  cycle?: string[];
  limit?: number;
  model?: string;
  selector?: string;
  provider?: string;
  error_type?: string;
  status?: number | null;
  attempts?: number;
  [key: string]: unknown;
}

export declare class PromptOpsError extends Error {
  constructor(message: string, details?: ErrorDetails);
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  /** The prompt concerned, when there is one. */
  readonly prompt?: string;
}
export declare class PromptNotFoundError extends PromptOpsError {
  static readonly code: 'PROMPT_NOT_FOUND';
  readonly selector: string | null;
}
export declare class TemplateError extends PromptOpsError {
  static readonly code: 'TEMPLATE_ERROR';
  readonly line: number | null;
  readonly column: number | null;
  readonly part: string | null;
}
export declare class VariableError extends PromptOpsError {
  static readonly code: 'VARIABLE_ERROR';
  readonly variable: string | null;
  readonly line: number | null;
}
export declare class ValidationError extends PromptOpsError {
  static readonly code: 'VALIDATION_ERROR';
  readonly field: string | null;
}
export declare class IncludeCycleError extends PromptOpsError {
  static readonly code: 'INCLUDE_CYCLE';
  readonly label: string | null;
  readonly cycle: string[] | null;
}
export declare class ParseError extends PromptOpsError {
  static readonly code: 'PARSE_ERROR';
  readonly file: string | null;
  readonly line: number | null;
  readonly column: number | null;
}
export declare class SnapshotError extends PromptOpsError {
  static readonly code: 'SNAPSHOT_ERROR';
}
export declare class UnknownModelError extends PromptOpsError {
  static readonly code: 'UNKNOWN_MODEL';
  readonly model: string | null;
}
export declare class OutputLimitError extends PromptOpsError {
  static readonly code: 'OUTPUT_LIMIT';
  readonly limit: number | null;
}
export declare class FuelExhaustedError extends PromptOpsError {
  static readonly code: 'FUEL_EXHAUSTED';
  readonly limit: number | null;
}
export declare class ConfigError extends PromptOpsError {
  static readonly code: 'CONFIG_ERROR';
}
export declare class RegistryUnavailableError extends PromptOpsError {
  static readonly code: 'REGISTRY_UNAVAILABLE';
}
export declare class IoError extends PromptOpsError {
  static readonly code: 'IO_ERROR';
  readonly file: string | null;
}
export declare class PolicyError extends PromptOpsError {
  static readonly code: 'POLICY_ERROR';
  readonly field: string | null;
}
export declare class NoRouteError extends PromptOpsError {
  static readonly code: 'NO_ROUTE';
}
export declare class ProviderError extends PromptOpsError {
  static readonly code: 'PROVIDER_ERROR';
  readonly provider: string | null;
  readonly model: string | null;
  /** `connect`, `timeout`, `rate_limited`, `server_error`, `auth`, … */
  readonly errorType: string | null;
  /** The HTTP status, when there was one. */
  readonly status: number | null;
  readonly attempts: number | null;
}
