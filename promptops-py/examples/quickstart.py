"""The quick-start app in Python (the twin of examples/src/quickstart.rs):
render prompts from a local prompt directory, show where each came from, its
tokens and cost, a variant, and the inline fallback for a prompt that exists
nowhere.

    python promptops-py/examples/quickstart.py [PROMPTS_DIR]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import List

import promptops

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "examples" / "prompts"


def main(prompts_dir: Path) -> None:
    client = promptops.Client(project="demo", prompts_dir=prompts_dir)
    for d in client.diagnostics:
        print(f"warning: {d['message']}", file=sys.stderr)

    # A chat prompt with an include and a schema (tone has no default in the
    # schema; the template's `default` filter fills it).
    reply = client.get("support/reply")
    vars = {"user_name": "Dana", "company": "Acme Tools", "order_id": "A-20931"}
    out = reply.render(vars)
    print(f"== {reply.name} v{reply.version} (label {reply.label or '-'}, source {reply.source})")
    messages: List[promptops.Message] = out.messages or []
    for m in messages:
        print(f"[{m['role']}] {m['content']}")
    print(
        f"model {out.model} | {out.input_tokens} input tokens"
        f"{'' if out.tokens_exact else ' (estimate)'}"
        f" | estimated input cost ${out.estimated_cost_usd or 0.0:.6f}"
    )

    # The same prompt tuned for Claude.
    claude = reply.for_model("claude-haiku-4-5").render(vars)
    print(
        f"variant for claude-haiku-4-5: model {claude.model} | "
        f"~{claude.input_tokens} input tokens (estimate: {not claude.tokens_exact})"
    )

    # A text prompt with a loop; defaults from the schema apply.
    rag = client.get("rag/answer")
    text = rag.render(
        question="How long do tokens last?",
        chunks=[
            {"id": "kb-1", "text": "Exports keep attachments in a sibling folder."},
            {"id": "kb-2", "text": "Tokens expire after 365 days."},
        ],
    ).text
    print(f"== {rag.name} v{rag.version}\n{text}")

    # A prompt that is in no source: the inline fallback serves, and says so.
    missing = client.get("support/escalate", fallback="Escalating ticket for {{ user_name }}.")
    print(f"== support/escalate (source {missing.source}): {missing.render(vars).text}")

    # Errors carry the engine's kind and details.
    try:
        reply.render(user_name="Dana")
    except promptops.ValidationError as e:
        print(f"{e.kind}: field {e.field!r} ({e})")

    # asyncio code awaits the same lookup.
    async def lookup() -> promptops.Prompt:
        return await client.aget("support/reply", label="staging")

    staged = asyncio.run(lookup())
    print(f"staging serves {staged.name} v{staged.version}")

    cost = promptops.estimate_cost("gpt-4o-mini", 1_000, 200)
    print(f"1,000 in + 200 out on gpt-4o-mini: ${cost:.6f}" if cost is not None else "unpriced")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
