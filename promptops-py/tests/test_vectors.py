"""The shared vectors in tests/vectors/*.json through the Python API, with
the same expectations as the Rust runner (tests/vectors.rs)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import pytest

import promptops
from conftest import load_vector
from tiktoken_offline import tiktoken_encoding

RENDER = load_vector("render.json")
TOKENS = load_vector("tokens.json")
PRICING = load_vector("pricing.json")


def get(client: promptops.Client, case: Dict[str, Any]) -> promptops.Prompt:
    g = case.get("get", {})
    kwargs: Dict[str, Any] = {}
    if isinstance(g.get("label"), str):
        kwargs["label"] = g["label"]
    if isinstance(g.get("version"), int):
        kwargs["version"] = g["version"]
    if isinstance(g.get("fallback"), str):
        kwargs["fallback"] = g["fallback"]
    p = client.get(case["prompt"], **kwargs)
    if isinstance(g.get("variant"), str):
        p = p.variant(g["variant"])
    if isinstance(g.get("for_model"), str):
        p = p.for_model(g["for_model"])
    return p


def test_render_vectors_count() -> None:
    assert len(RENDER["cases"]) >= 30


@pytest.mark.parametrize("case", RENDER["cases"], ids=[c["name"] for c in RENDER["cases"]])
def test_render_vector(vector_client: promptops.Client, case: Dict[str, Any]) -> None:
    name = case["name"]
    expect = case["expect"]
    vars = case.get("vars", {})
    result: Tuple[promptops.Prompt, promptops.Rendered] | None = None
    error: promptops.PromptOpsError | None = None
    try:
        p = get(vector_client, case)
        result = (p, p.render(vars))
    except promptops.PromptOpsError as e:
        error = e

    if "error" in expect:
        assert error is not None, f"{name}: expected {expect['error']}, rendered {result}"
        assert error.kind == expect["error"], f"{name}: {error}"
        # The class is the one for the kind.
        assert type(error).KIND == expect["error"]
        for k, v in expect.items():
            if k != "error":
                assert error.details.get(k) == v, f"{name}: detail {k} of {error}"
        return
    assert error is None, f"{name}: unexpected error {error!r}"
    assert result is not None
    p, r = result
    for k, v in expect.items():
        if k == "text":
            actual: Any = r.text
        elif k == "messages":
            actual = r.messages
        elif k == "version":
            actual = p.version
        elif k == "label":
            actual = p.label
        elif k == "source":
            actual = p.source
        elif k == "model":
            actual = r.model
        else:
            pytest.fail(f"{name}: unknown expectation {k}")
        assert actual == v, f"{name}: {k}"


@pytest.mark.parametrize("t", TOKENS["texts"], ids=lambda t: repr(t["text"][:30]))
def test_token_texts(t: Dict[str, Any]) -> None:
    text = t["text"]
    # gpt-4 counts with cl100k_base, gpt-4o with o200k_base (both exact).
    cl = promptops.count_tokens_detail(text, "gpt-4")
    o2 = promptops.count_tokens_detail(text, "gpt-4o")
    assert cl == {"count": t["cl100k_base"], "encoding": "cl100k_base", "exact": True}
    assert o2 == {"count": t["o200k_base"], "encoding": "o200k_base", "exact": True}
    assert promptops.count_tokens(text, "gpt-4") == t["cl100k_base"]
    assert promptops.count_tokens(text) == t["o200k_base"]
    # The counter we ship agrees with tiktoken, an independent implementation
    # (the Rust runner checks tiktoken-rs the same way).
    assert len(tiktoken_encoding("cl100k_base").encode_ordinary(text)) == t["cl100k_base"]
    assert len(tiktoken_encoding("o200k_base").encode_ordinary(text)) == t["o200k_base"]


@pytest.mark.parametrize("c", TOKENS["chat"], ids=lambda c: str(c["model"]))
def test_token_chat(c: Dict[str, Any]) -> None:
    n = promptops.count_tokens_detail(c["messages"], c["model"])
    assert n["count"] == c["count"]
    assert n["exact"] == c["exact"]
    assert n["encoding"] == c["encoding"]
    assert promptops.count_tokens(c["messages"], c["model"]) == c["count"]


@pytest.mark.parametrize("m", TOKENS["models"], ids=lambda m: str(m["model"]))
def test_token_models(m: Dict[str, Any]) -> None:
    t = promptops.tokenizer_for_model(m["model"])
    assert t["encoding"] == m["encoding"], m["model"]
    assert t["exact"] == m["exact"], m["model"]
    if "factor" in m:
        assert t["factor"] == m["factor"]


@pytest.mark.parametrize("c", TOKENS["text_model"], ids=lambda c: f"{c['model']}:{c['text'][:20]}")
def test_token_text_model(c: Dict[str, Any]) -> None:
    n = promptops.count_tokens_detail(c["text"], c["model"])
    assert n["count"] == c["count"]
    assert n["exact"] == c["exact"]
    assert promptops.count_tokens(c["text"], c["model"]) == c["count"]


@pytest.mark.parametrize("c", PRICING["cases"], ids=lambda c: repr(c["model"]))
def test_pricing(c: Dict[str, Any]) -> None:
    got = promptops.estimate_cost(c["model"], c["input_tokens"], c["output_tokens"])
    want = c["cost"]
    if want is None:
        assert got is None, f"{c['model']} should be unknown"
    else:
        assert got is not None, f"{c['model']} unpriced"
        assert abs(got - want) < 1e-9, f"{c['model']}: {got} != {want}"
