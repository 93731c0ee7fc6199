//! The quick-start app: render prompts from a local prompt directory, show
//! where each came from, its tokens and cost, a variant, and the inline
//! fallback for a prompt that exists nowhere.
//!
//! cargo run -p promptops-examples --bin quickstart -- [PROMPTS_DIR]

use promptops_core::{Client, GetOptions, context};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/prompts").to_string());
    let client = Client::builder()
        .project("demo")
        .prompts_dir(&dir)
        .build()?;
    for d in client.diagnostics() {
        eprintln!("warning: {d}");
    }

    // A chat prompt with an include and a schema (tone has no default in the
    // schema; the template's `default` filter fills it).
    let reply = client.get("support/reply")?;
    let vars = context! {
        user_name => "Dana",
        company => "Acme Tools",
        order_id => "A-20931",
    };
    let out = reply.render(&vars)?;
    println!(
        "== {} v{} (label {}, source {})",
        reply.name(),
        reply.version(),
        reply.label().unwrap_or("-"),
        reply.source().as_str()
    );
    for m in out.messages.as_deref().unwrap_or_default() {
        println!("[{}] {}", m.role, m.content);
    }
    let tokens = out.input_tokens();
    println!(
        "model {} | {} input tokens ({}{}) | estimated input cost ${:.6}",
        out.model().unwrap_or("?"),
        tokens.count,
        tokens.encoding.name(),
        if tokens.exact { "" } else { ", estimate" },
        out.estimated_cost_usd().unwrap_or(0.0)
    );

    // The same prompt tuned for Claude.
    let claude = reply.for_model("claude-haiku-4-5").render(&vars)?;
    let t = claude.input_tokens();
    println!(
        "variant for claude-haiku-4-5: model {} | ~{} input tokens (estimate: {})",
        claude.model().unwrap_or("?"),
        t.count,
        !t.exact
    );

    // A text prompt with a loop; defaults from the schema apply.
    let rag = client.get("rag/answer")?;
    let chunks = serde_json::json!([
        {"id": "kb-1", "text": "Exports keep attachments in a sibling folder."},
        {"id": "kb-2", "text": "Tokens expire after 365 days."}
    ]);
    let out = rag.render(&context! {
        question => "How long do tokens last?",
        chunks => promptops_core::to_value(&chunks),
    })?;
    println!(
        "== {} v{}\n{}",
        rag.name(),
        rag.version(),
        out.text.as_deref().unwrap_or("")
    );

    // A prompt that is in no source: the inline fallback serves, and says so.
    let missing = client.get_with(
        "support/escalate",
        &GetOptions::default().with_fallback("Escalating ticket for {{ user_name }}."),
    )?;
    let out = missing.render(&vars)?;
    println!(
        "== support/escalate (source {}): {}",
        missing.source().as_str(),
        out.text.as_deref().unwrap_or("")
    );
    Ok(())
}
