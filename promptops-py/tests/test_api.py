"""The Python API: client, prompts, rendering, value conversion, tokens,
cost, change listeners."""

from __future__ import annotations

import collections
import enum
import json
import re
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, List

import pytest

import promptops
from conftest import EXAMPLE_PROMPTS

VARS = {"user_name": "Dana", "company": "Acme Tools", "order_id": "A-20931"}


def test_prompt_attributes(example_client: promptops.Client) -> None:
    p = example_client.get("support/reply")
    assert p.name == "support/reply"
    assert p.version == 1
    assert p.label == "production"
    assert p.source == "disk"
    assert p.kind == "chat"
    assert p.config == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 400,
    }
    assert p.variants == ["claude"]
    assert p.variant_name is None
    assert "support/reply" in repr(p)
    assert example_client.get("rag/answer").kind == "text"
    assert example_client.get("support/reply", label="staging").label == "staging"
    pinned = example_client.get("support/reply", version=1)
    assert pinned.label is None and pinned.version == 1


def test_render_chat(example_client: promptops.Client) -> None:
    r = example_client.get("support/reply").render(VARS)
    assert r.text is None
    assert r.messages == [
        {
            "role": "system",
            "content": 'You are a friendly support agent for Acme Tools.\n'
            'Always end with: "Kind regards, the support team."\n',
        },
        {"role": "user", "content": "Hi, I'm Dana. Where is my order A-20931?"},
    ]
    assert r.model == "gpt-4o-mini"
    assert r.config["temperature"] == 0.2
    assert r.prompt == "support/reply" and r.version == 1 and r.label == "production"
    assert r.source == "disk" and r.variant is None
    # Token count: the messages as OpenAI bills them, computed once.
    assert r.input_tokens == promptops.count_tokens(r.messages or [], "gpt-4o-mini")
    assert r.tokens_exact is True and r.tokens_encoding == "o200k_base"
    assert r.input_tokens == r.input_tokens
    cost = promptops.estimate_cost("gpt-4o-mini", r.input_tokens, 0)
    assert r.estimated_cost_usd == pytest.approx(cost)
    assert str(r).startswith("system: You are a friendly")


def test_render_kwargs_and_vars(example_client: promptops.Client) -> None:
    p = example_client.get("support/reply")
    a = p.render(VARS)
    b = p.render(**VARS)
    c = p.render({**VARS, "company": "Other"}, company="Acme Tools")
    d = p.render(collections.OrderedDict(VARS))
    e = p.render(MappingProxyType(VARS))
    assert a.messages == b.messages == c.messages == d.messages == e.messages
    formal = p.render(VARS, tone="formal").messages
    assert formal is not None and formal[0]["content"].startswith("You are a formal")
    # A schema enum is enforced.
    with pytest.raises(promptops.ValidationError):
        p.render(VARS, tone="rude")


def test_variants(example_client: promptops.Client) -> None:
    p = example_client.get("support/reply")
    claude = p.for_model("claude-haiku-4-5")
    assert claude.variant_name == "claude"
    assert claude.config["model"] == "claude-haiku-4-5"
    r = claude.render(VARS)
    assert r.model == "claude-haiku-4-5" and r.variant == "claude"
    assert r.tokens_exact is False and r.tokens_encoding == "cl100k_base"
    assert r.estimated_cost_usd is not None
    assert p.variant("claude").variant_name == "claude"
    assert p.for_model("gpt-4o-mini").variant_name is None


def test_text_render_and_schema_defaults(example_client: promptops.Client) -> None:
    rag = example_client.get("rag/answer")
    chunks = [
        {"id": "kb-1", "text": "Exports keep attachments in a sibling folder."},
        {"id": "kb-2", "text": "Tokens expire after 365 days."},
    ]
    r = rag.render(question="How long do tokens last?", chunks=chunks)
    assert r.messages is None
    assert r.text is not None
    assert "[kb-2] Tokens expire after 365 days." in r.text
    assert "Cite passages as [id]." in r.text  # cite_sources defaults to true
    r2 = rag.render(question="q", chunks=chunks, cite_sources=False)
    assert r2.text is not None and "Do not cite." in r2.text
    assert r.text is r.text  # the str is made once
    assert r.model == "gpt-4.1-mini"
    assert r.input_tokens == promptops.count_tokens(r.text, "gpt-4.1-mini")


class Color(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


def test_value_conversion(example_client: promptops.Client) -> None:
    tpl = (
        "{{ s }}|{{ i }}|{{ big }}|{{ neg }}|{{ f }}|{{ t }}|{{ n is none }}|"
        "{{ l | join(',') }}|{{ tup | length }}|{{ d.x.y }}|{{ color }}|{{ size + 1 }}|"
        "{{ uni }}|{{ d | tojson }}"
    )
    p = example_client.get("t/conv", fallback=tpl)
    r = p.render(
        s="str",
        i=42,
        big=2**64 + 5,
        neg=-(2**63),
        f=1.5,
        t=True,
        n=None,
        l=[1, "a", 2.5],
        tup=(1, 2, 3),
        d={"x": {"y": "deep"}},
        color=Color.RED,
        size=Size.BIG,
        uni="Zoë 😀 中文",
    )
    assert r.text == (
        'str|42|18446744073709551621|-9223372036854775808|1.5|True|True|1,a,2.5|3|deep|red|4|'
        'Zoë 😀 中文|{"x": {"y": "deep"}}'
    )


def test_dict_order_preserved(example_client: promptops.Client) -> None:
    p = example_client.get("t/order", fallback="{% for k in d %}{{ k }},{% endfor %}|{{ d | tojson }}")
    small = {"b": 1, "a": 2, "c": 3}
    keys = [f"k{i}" for i in reversed(range(40))]  # more than the small-map size
    big = {k: i for i, k in enumerate(keys)}
    assert p.render(d=small).text == 'b,a,c,|{"b": 1, "a": 2, "c": 3}'
    text = p.render(d=big).text
    assert text is not None
    assert text.split("|")[0] == "".join(f"{k}," for k in keys)
    assert json.loads(text.split("|")[1]) == big
    lookup = example_client.get("t/lookup", fallback="{{ d.k3 }} {{ d['k39'] }} {{ d.zz is defined }}")
    assert lookup.render(d=big).text == "36 0 False"
    assert lookup.render(d={"k3": 1, "k39": 2}).text == "1 2 False"


def test_mapping_subclasses_keep_their_order(example_client: promptops.Client) -> None:
    p = example_client.get("t/keys", fallback="{% for k in d %}{{ k }}{% endfor %}|{{ d.b }}")
    od = collections.OrderedDict([("a", 1), ("b", 2), ("c", 3)])
    od.move_to_end("a")
    assert p.render(d=od).text == "bca|2"
    dd = collections.defaultdict(int, {"x": 1, "b": 7})
    assert p.render(d=dd).text == "xb|7"
    assert p.render(collections.OrderedDict(d=od)).text == "bca|2"


def test_chat_fallback_and_names(example_client: promptops.Client) -> None:
    p = example_client.get(
        "support/escalate",
        fallback=[
            {"role": "system", "content": "Escalate for {{ user_name }}."},
            {"role": "user", "content": "Ticket {{ order_id }}"},
        ],
    )
    assert p.source == "fallback" and p.version == 0 and p.kind == "chat"
    r = p.render(VARS)
    assert r.messages == [
        {"role": "system", "content": "Escalate for Dana."},
        {"role": "user", "content": "Ticket A-20931"},
    ]
    assert r.model is None and r.tokens_exact is False and r.estimated_cost_usd is None


def named_snapshot(revision: int, content: str) -> Dict[str, Any]:
    return {
        "format": "promptops.snapshot/1",
        "project": "live",
        "revision": revision,
        "hash": "",
        "prompts": [
            {
                "name": "m/named",
                "versions": [
                    {
                        "version": revision,
                        "type": "chat",
                        "messages": [
                            {"role": "system", "content": content},
                            {"role": "user", "content": "{{ q }}", "name": "dana"},
                        ],
                        "config": {"model": "gpt-4o"},
                    }
                ],
                "labels": {"production": revision},
            }
        ],
    }


def test_status_apply_snapshot_and_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    c = promptops.Client()
    assert c.status == "off"
    with pytest.raises(promptops.PromptNotFound, match="no prompts loaded"):
        c.get("m/named")
    assert c.get("m/named", fallback="fb").source == "fallback"

    seen: List[List[Dict[str, Any]]] = []
    c.on_change(seen.append)

    def boom(changes: Any) -> None:
        raise RuntimeError("listener bug")

    c.on_change(boom)
    unraisable: List[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    out = c.apply_snapshot(named_snapshot(1, "v1"))
    assert out["applied"] is True and out["revision"] == 1
    assert isinstance(out["hash"], str)
    assert c.status == "valid" and c.project == "live"
    assert out["changes"] == [
        {"prompt": "m/named", "label": "latest", "old": None, "new": 1},
        {"prompt": "m/named", "label": "production", "old": None, "new": 1},
    ]
    assert seen == [out["changes"]]
    # The failing listener reached sys.unraisablehook, not the caller.
    assert len(unraisable) == 1
    assert isinstance(unraisable[0].exc_value, RuntimeError)

    p = c.get("m/named")
    assert p.source == "memory"
    r = p.render(q="hi")
    assert r.messages == [
        {"role": "system", "content": "v1"},
        {"role": "user", "content": "hi", "name": "dana"},
    ]
    # 3 priming + (3 + role + content) per message + 1 + name.
    assert r.input_tokens == promptops.count_tokens(r.messages or [], "gpt-4o")

    # A newer snapshot as bytes; the prompt held before keeps its data.
    out2 = c.apply_snapshot(json.dumps(named_snapshot(2, "v2")).encode())
    assert {"prompt": "m/named", "label": "production", "old": 1, "new": 2} in out2["changes"]
    assert len(seen) == 2
    assert c.get("m/named").render(q="x").messages == [
        {"role": "system", "content": "v2"},
        {"role": "user", "content": "x", "name": "dana"},
    ]
    assert p.render(q="x").messages == [
        {"role": "system", "content": "v1"},
        {"role": "user", "content": "x", "name": "dana"},
    ]
    # An older one is ignored.
    assert c.apply_snapshot(named_snapshot(1, "v1"))["applied"] is False
    assert len(seen) == 2


def test_bundle_and_project(tmp_path: Path, render_doc: Dict[str, Any]) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(render_doc["snapshot"]), encoding="utf-8")
    c = promptops.Client(bundle=str(path))
    assert c.project == "vectors" and c.status == "valid" and c.diagnostics != []
    kinds = {d["kind"] for d in c.diagnostics}
    assert "TEMPLATE_ERROR" in kinds and "INCLUDE_CYCLE" in kinds
    with pytest.raises(promptops.SnapshotError, match="project"):
        promptops.Client(bundle=path, project="other")
    assert "vectors" in repr(c)


def test_count_tokens_api() -> None:
    assert promptops.count_tokens("hello world") == 2
    assert promptops.count_tokens("") == 0
    big = "The quick brown fox. " * 1000
    assert promptops.count_tokens(big) == promptops.count_tokens_detail(big)["count"]
    assert promptops.count_tokens([]) == 3
    msgs = [{"role": "user", "content": "hello world", "name": None}]
    assert promptops.count_tokens(msgs) == 3 + 3 + 1 + 2  # type: ignore[arg-type]
    assert promptops.tokenizer_for_model("claude-haiku-4-5")["factor"] == 1.2


def test_repeated_get_returns_the_same_prompt(example_client: promptops.Client) -> None:
    a = example_client.get("support/reply")
    assert example_client.get("support/reply") is a
    assert example_client.get("support/reply", label="staging") is example_client.get(
        "support/reply", label="staging"
    )
    assert example_client.get("support/reply", label="staging") is not a
    assert example_client.get("support/reply", version=1).label is None
    # Fallback lookups are not cached; a prompt that exists is still served.
    assert example_client.get("support/reply", fallback="x").source == "disk"
    assert example_client.get("nope/x", fallback="x").source == "fallback"
    with pytest.raises(promptops.PromptNotFound):
        example_client.get("nope/x")


def test_cached_prompts_follow_new_snapshots() -> None:
    c = promptops.Client()
    c.apply_snapshot(named_snapshot(1, "one"))
    p1 = c.get("m/named")
    assert c.get("m/named") is p1
    c.apply_snapshot(named_snapshot(2, "two"))
    p2 = c.get("m/named")
    assert p2 is not p1 and p2.version == 2
    assert (p2.render(q="x").messages or [])[0]["content"] == "two"
    assert (p1.render(q="x").messages or [])[0]["content"] == "one"


def test_subclass_client(tmp_path: Path) -> None:
    c = promptops.Client(prompts_dir=EXAMPLE_PROMPTS)
    assert isinstance(c, promptops.Client)
    assert c.project == "prompts"  # the directory's name
    c.extra = 1  # type: ignore[attr-defined]


def test_prices_override_the_builtin_table(tmp_path: Path) -> None:
    price: promptops.ModelPrice = {
        "provider": "acme",
        "model": "acme-small",
        "input_per_mtok": 1.0,
        "output_per_mtok": 2.0,
        "cached_input_per_mtok": None,
        "context_window": 8192,
    }
    c = promptops.Client(prompts_dir=tmp_path, prices=[price])
    try:
        assert c.model_price("acme-small")["context_window"] == 8192
        assert c.estimate_cost("acme-small", 1_000_000, 500_000) == pytest.approx(2.0)
    finally:
        c.close()
    bad = [
        ([{"model": "m", "input_per_mtok": 1, "output_per_mtok": 1}], "prices[0].provider is required"),
        ([dict(price, input_per_mtok=-1)], "prices[0].input_per_mtok must be a price >= 0"),
        ([dict(price, colour="red")], "prices[0].colour: unknown field"),
    ]
    for prices, message in bad:
        with pytest.raises(promptops.ConfigError, match=re.escape(message)):
            promptops.Client(prompts_dir=tmp_path, prices=prices)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        promptops.Client(prompts_dir=tmp_path, prices=price)  # type: ignore[arg-type]
