// The quick-start app in TypeScript: render prompts from the repository's
// example prompt directory, show where each came from, its tokens and cost,
// a variant, and the inline fallback for a prompt that exists nowhere.
//
// Type-checked by `npm run typecheck` (tsc --noEmit); run it with
//   node --experimental-strip-types examples/quickstart.ts   (Node >= 22.6)
// or after compiling it with tsc.
import * as path from 'node:path';
import { Client, PromptOpsError, VariableError, countTokens, estimateCost } from 'promptops';
import type { ChatMessage, Completion, Decision, ModelEntry, Outcome, PromptChange, Rendered, TelemetryStats } from 'promptops';

const dir = process.argv[2] ?? path.join(__dirname, '..', '..', 'examples', 'prompts');

async function main(): Promise<void> {
  // Client.create reads and compiles the prompt files off the event loop.
  const client = await Client.create({ promptsDir: dir, project: 'demo' });
  for (const d of client.diagnostics) console.warn(`warning: ${d.message}`);
  client.on('change', (changes: PromptChange[]) => {
    for (const c of changes) console.log(`${c.prompt}@${c.label}: ${c.old} -> ${c.new}`);
  });

  // A chat prompt with an include and a schema.
  const reply = client.get('support/reply');
  const vars = { user_name: 'Dana', company: 'Acme Tools', order_id: 'A-20931' };
  const out: Rendered = reply.render(vars);
  console.log(`== ${reply.name} v${reply.version} (label ${reply.label ?? '-'}, source ${reply.source})`);
  const messages: ChatMessage[] = out.messages ?? [];
  for (const m of messages) console.log(`[${m.role}] ${m.content}`);
  console.log(
    `model ${out.model} | ${out.inputTokens} input tokens (${out.tokenEncoding}${out.tokensExact ? '' : ', estimate'})` +
      ` | estimated input cost $${(out.estimatedCostUsd ?? 0).toFixed(6)}`,
  );

  // The same prompt tuned for Claude.
  const claude = reply.forModel('claude-haiku-4-5').render(vars);
  console.log(`variant for claude-haiku-4-5: model ${claude.model} | ~${claude.inputTokens} tokens (estimate: ${!claude.tokensExact})`);

  // A text prompt with a loop; schema defaults apply.
  const rag = client.get('rag/answer');
  const answer = rag.render({
    question: 'How long do tokens last?',
    chunks: [
      { id: 'kb-1', text: 'Exports keep attachments in a sibling folder.' },
      { id: 'kb-2', text: 'Tokens expire after 365 days.' },
    ],
  });
  console.log(`== ${rag.name} v${rag.version}\n${answer.text}`);

  // Errors carry a stable code and the core's details.
  try {
    rag.render({ chunks: [] });
  } catch (e) {
    if (e instanceof PromptOpsError) console.log(`${e.code}: ${e.details.field ?? ''}`);
    if (e instanceof VariableError) console.log(`missing ${e.variable}`);
  }

  // A prompt that is in no source: the inline fallback serves, and says so.
  const missing = client.get('support/escalate', { fallback: 'Escalating ticket for {{ user_name }}.' });
  console.log(`== support/escalate (source ${missing.source}): ${missing.render(vars).text}`);

  // Routing: the target for this caller and the prompt rendered for it; make
  // the provider call yourself, then feed the outcome back.
  const decision: Decision = client.route('support/reply', vars, { routeKey: 'user-42' });
  console.log(`== routed to ${decision.target.provider}/${decision.target.model} (${decision.reason})`);
  const outcome: Outcome = { ok: true, latencyMs: 640, inputTokens: 52, outputTokens: 180 };
  client.record(decision, outcome);

  // Or let the SDK make the call: route, call with failover, record. Needs
  // the provider's key (OPENAI_API_KEY), so it only runs when one is set.
  if (process.env.OPENAI_API_KEY) await ask(client);

  // Telemetry export to an OpenTelemetry collector, when one is named.
  const otlp = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (otlp) await exportTelemetry(otlp, vars);

  // The model catalogue comes with a registry's snapshot (none here).
  const models: ModelEntry[] = client.models();
  console.log(`${models.length} models in the catalogue`);

  const n: number = countTokens('hello world', { model: 'gpt-4o' });
  const cost: number | null = estimateCost('gpt-4o', n, 100);
  console.log(`${n} tokens; $${cost} with 100 output tokens`);
  client.close();
}

async function ask(client: Client): Promise<void> {
  const vars = { user_name: 'Dana', company: 'Acme Tools', order_id: 'A-20931' };
  const done: Completion = await client.complete('support/reply', vars, { routeKey: 'user-42', timeoutMs: 30000 });
  console.log(`${done.target.model}: ${done.text} (${done.usage.outputTokens} tokens, $${done.costUsd ?? 0}, ${done.attempts.length} attempt(s))`);
  const stream = client.stream('support/reply', vars, { routeKey: 'user-42' });
  for await (const chunk of stream) process.stdout.write(chunk);
  const streamed: Completion = await stream.completion;
  console.log(`\nfirst token after ${streamed.ttftMs ?? 0} ms`);
}

async function exportTelemetry(endpoint: string, vars: Record<string, string>): Promise<void> {
  const client = new Client({
    promptsDir: dir,
    project: 'demo',
    telemetry: true,
    otlp: { endpoint, serviceName: 'quickstart' },
  });
  const decision = client.route('support/reply', vars, { routeKey: 'user-42', attributes: { tier: 'gold' } });
  client.record(decision, { latencyMs: 640, inputTokens: 52, outputTokens: 180 });
  // Export now, off the event loop; the counters say what was sent and dropped.
  const flushed: boolean = await client.flushTelemetry({ timeoutMs: 5000 });
  const stats: TelemetryStats | null = client.telemetryStats();
  console.log(`== telemetry exported: ${flushed}; ${stats?.otlp?.spansExported ?? 0} span(s), ${stats?.recorded ?? 0} events`);
  client.close();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
