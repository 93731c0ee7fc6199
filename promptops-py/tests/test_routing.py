"""Routing and telemetry through the Python API: the shared vectors of
tests/vectors/routing.json with the same expectations as the Rust runner
(tests/routing.rs), then route + record, and the Prometheus metrics."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

import promptops
from conftest import load_vector

ROUTING = load_vector("routing.json")

VARIANTS = {
    "friendly": {"config": {"provider": "openai", "model": "gpt-4o-mini"}},
    "formal": {"config": {"provider": "openai", "model": "gpt-4o-mini"}},
    "claude": {"config": {"provider": "anthropic", "model": "claude-haiku-4-5"}},
}


def snapshot(prompts: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "format": "promptops.snapshot/1",
        "project": "p",
        "revision": 1,
        "hash": "",
        "prompts": prompts,
    }


def reply_prompt(name: str, policy: Any) -> Dict[str, Any]:
    """Versions 6 and 7 (production: 6), each with the variants the sticky
    vectors name (as tests/routing.rs `reply_prompt`, plus variants)."""
    return {
        "name": name,
        "versions": [
            {
                "version": v,
                "type": "text",
                "template": f"v{v}: hi {{{{ name }}}}",
                "config": {"provider": "openai", "model": "gpt-4o-mini"},
                "variants": VARIANTS,
            }
            for v in (6, 7)
        ],
        "labels": {"production": 6, "staging": 7},
        "policy": policy,
    }


def client_for(prompts: List[Dict[str, Any]], **kwargs: Any) -> promptops.Client:
    c = promptops.Client(project="p", **kwargs)
    out = c.apply_snapshot(snapshot(prompts))
    assert out["applied"] is True
    return c


# -- shared vectors ---------------------------------------------------------


def test_vector_buckets() -> None:
    assert ROUTING["hash"]["buckets"] == 10000
    for c in ROUTING["buckets"]:
        got = promptops.route_bucket(c["policy_id"], c["experiment"], c["key"])
        assert got == c["bucket"], c


@pytest.mark.parametrize("case", ROUTING["sticky"], ids=lambda c: c["name"])
def test_vector_sticky_targets(case: Dict[str, Any]) -> None:
    c = client_for([reply_prompt(case["prompt"], case["policy"])])
    assert c.diagnostics == []
    # The policy's target ids (the vector names the defaults too).
    ids = [t["id"] for t in promptops.validate_policy(case["policy"], case["prompt"])["targets"]]
    for k in case["cases"]:
        d = c.route(case["prompt"], {"name": "Dana"}, route_key=k["key"])
        assert d.bucket == k["bucket"], (case["name"], k)
        assert d.target["id"] == k["target"], (case["name"], k)
        assert d.target["id"] in ids
        # Sticky: the same key again gets the same target.
        again = c.route(case["prompt"], name="Dana", route_key=k["key"])
        assert again.target == d.target
        assert again.bucket == d.bucket


@pytest.mark.parametrize("case", ROUTING["invalid"], ids=lambda c: c["name"])
def test_vector_invalid_policies(case: Dict[str, Any]) -> None:
    with pytest.raises(promptops.PromptOpsError) as info:
        promptops.validate_policy(case["policy"], case["prompt"])
    err = info.value
    assert err.kind == case["error"], f"{case['name']}: {err}"
    assert err.details.get("field") == case["field"], f"{case['name']}: {err}"
    assert err.details.get("prompt") == case["prompt"], f"{case['name']}: {err}"
    assert case["field"] in str(err)
    if case["error"] == "POLICY_ERROR":
        assert isinstance(err, promptops.PolicyError)
        assert err.field == case["field"]
        assert err.prompt == case["prompt"]
    # JSON text is taken too.
    with pytest.raises(promptops.PromptOpsError) as again:
        promptops.validate_policy(json.dumps(case["policy"]), case["prompt"])
    assert again.value.kind == case["error"]


@pytest.mark.parametrize("case", ROUTING["snapshot"], ids=lambda c: c["name"])
def test_vector_snapshot_checks(case: Dict[str, Any]) -> None:
    c = promptops.Client(project="p")
    out = c.apply_snapshot(snapshot(case["prompts"]))
    for e in case["errors"]:
        assert any(
            d["prompt"] == e["prompt"] and d["kind"] == "POLICY_ERROR" for d in out["diagnostics"]
        ), (case["name"], out["diagnostics"])
        with pytest.raises(promptops.PolicyError) as info:
            c.route(e["prompt"], name="x")
        assert info.value.field == e["field"], case["name"]


def test_validate_policy_returns_the_normalised_policy() -> None:
    p = promptops.validate_policy(
        {
            "strategy": "weighted",
            "targets": [
                {"id": "a", "provider": "openai", "model": "gpt-4o-mini", "weight": 70},
                {"id": "b", "provider": "anthropic", "model": "claude-haiku-4-5", "weight": 30},
            ],
        },
        "support/reply",
    )
    assert p["id"] == "support/reply"
    assert p["strategy"] == "weighted"
    assert [t["id"] for t in p["targets"]] == ["a", "b"]
    with pytest.raises(TypeError):
        promptops.validate_policy(object())
    with pytest.raises(promptops.PolicyError):
        promptops.validate_policy(42)
    with pytest.raises(promptops.ConfigError, match="not valid JSON"):
        promptops.validate_policy("{")


# -- route + record ---------------------------------------------------------

CANARY = next(c for c in ROUTING["sticky"] if c["policy"]["strategy"] == "canary")


def test_route_decision_fields() -> None:
    c = client_for([reply_prompt("support/reply", CANARY["policy"])])
    k = CANARY["cases"][0]
    d = c.route("support/reply", {"name": "Dana"}, route_key=k["key"])
    assert isinstance(d, promptops.Decision)
    assert d.policy_id == "reply-canary"
    assert d.strategy == "canary"
    assert d.bucket == k["bucket"]
    assert isinstance(d.reason, str) and d.reason
    assert d.prompt == "support/reply"
    assert d.label == "production"
    version = d.target["version"]
    assert d.version == version
    assert d.target == {
        "id": k["target"],
        "provider": "openai",
        "model": "gpt-4o-mini",
        "variant": None,
        "version": version,
    }
    assert d.text == f"v{version}: hi Dana"
    assert d.messages == [{"role": "user", "content": f"v{version}: hi Dana"}]
    assert d.rendered.text == d.text and d.rendered.version == version
    assert isinstance(d.skipped, list) and isinstance(d.fallbacks, list)
    assert "reply-canary" in repr(d)
    # Staging is not under the policy: its own version and config.
    s = c.route("support/reply", name="Dana", route_key="user-1", label="staging")
    assert s.version == 7 and s.target["model"] == "gpt-4o-mini"
    assert s.bucket is None


def test_route_without_policy_uses_the_config_model() -> None:
    c = client_for(
        [
            {
                "name": "m/plain",
                "versions": [
                    {
                        "version": 1,
                        "type": "chat",
                        "messages": [{"role": "user", "content": "{{ q }}"}],
                        "config": {"model": "gpt-4o"},
                    }
                ],
                "labels": {"production": 1},
            },
            {
                "name": "m/nomodel",
                "versions": [{"version": 1, "type": "text", "template": "x"}],
                "labels": {"production": 1},
            },
        ]
    )
    d = c.route("m/plain", q="hi")
    assert d.target["provider"] == "openai" and d.target["model"] == "gpt-4o"
    assert d.messages == [{"role": "user", "content": "hi"}]
    assert d.text is None
    with pytest.raises(promptops.NoRoute):
        c.route("m/nomodel")
    with pytest.raises(promptops.PromptNotFound):
        c.route("m/missing")


def test_record_outcomes_open_the_breaker() -> None:
    policy = {
        "strategy": "failover",
        "targets": [
            {"id": "primary", "provider": "openai", "model": "gpt-4o-mini"},
            {"id": "backup", "provider": "anthropic", "model": "claude-haiku-4-5"},
        ],
    }
    c = client_for([reply_prompt("support/reply", policy)])
    d = c.route("support/reply", name="Dana")
    assert d.target["id"] == "primary"
    assert [t["id"] for t in d.fallbacks] == ["backup"]
    c.record(d, {"latency_ms": 120.0, "input_tokens": 10, "output_tokens": 5})
    c.record(d, latency_ms=80, ttft_ms=20, status=200, cost_usd=0.001, quality=0.9)
    c.record_quality(d, 0.5)
    c.record(d, target="backup", attempt=2, latency_ms=50.0)
    # Enough server errors open the primary's breaker: routing moves on.
    for _ in range(50):
        c.record(d, {"error": "server_error", "status": 503, "latency_ms": 10.0})
    after = c.route("support/reply", name="Dana")
    assert after.target["id"] == "backup", after.reason
    assert any(s["target"] == "primary" for s in after.skipped)


def test_record_rejects_bad_outcomes() -> None:
    c = client_for([reply_prompt("support/reply", CANARY["policy"])])
    d = c.route("support/reply", name="Dana", route_key="u")
    with pytest.raises(ValueError, match="error must be one of"):
        c.record(d, error="exploded")
    with pytest.raises(TypeError, match="unknown outcome field"):
        c.record(d, ok=True)
    with pytest.raises(TypeError):
        c.record(d, latency_ms=True)
    with pytest.raises(TypeError, match="input_tokens must be an int"):
        c.record(d, input_tokens=False)
    with pytest.raises(TypeError):
        c.record(d, 42)  # type: ignore[arg-type]
    with pytest.raises(promptops.ConfigError, match="no target"):
        c.record(d, target="nope", latency_ms=1.0)
    with pytest.raises(ValueError):
        c.record_quality(d, 1.5)


async def _aroute(c: promptops.Client) -> promptops.Decision:
    return await c.aroute("support/reply", {"name": "Dana"}, route_key="user-1")


def test_aroute() -> None:
    import asyncio

    c = client_for([reply_prompt("support/reply", CANARY["policy"])])
    d = asyncio.run(_aroute(c))
    assert d.target == c.route("support/reply", name="Dana", route_key="user-1").target


# -- telemetry --------------------------------------------------------------


def test_metrics_text_after_render_route_and_record() -> None:
    c = client_for([reply_prompt("support/reply", CANARY["policy"])], telemetry=True)
    c.get("support/reply").render(name="Dana")
    d = c.route("support/reply", name="Dana", route_key="user-1")
    c.record(d, latency_ms=250.0, ttft_ms=40.0, input_tokens=12, output_tokens=7)
    text = c.metrics_text()
    for metric in (
        "gen_ai_client_token_usage",
        "gen_ai_client_operation_duration_seconds",
        "promptops_renders_total",
        "promptops_route_decisions_total",
        "promptops_cost_usd_total",
    ):
        assert metric in text, metric
    assert 'gen_ai_provider_name="openai"' in text
    assert 'gen_ai_request_model="gpt-4o-mini"' in text
    assert 'promptops_prompt_name="support/reply"' in text
    assert 'gen_ai_token_type="input"' in text


def test_telemetry_options() -> None:
    c = client_for(
        [reply_prompt("support/reply", CANARY["policy"])],
        telemetry={"capacity": 16, "keep_events": False, "mask_pii": True, "project": "x"},
    )
    c.route("support/reply", name="Dana", attributes={"user": "dana@example.com"})
    assert "promptops_route_decisions_total" in c.metrics_text()
    with pytest.raises(promptops.ConfigError, match="unknown telemetry option"):
        promptops.Client(telemetry={"nope": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        promptops.Client(telemetry="yes")  # type: ignore[arg-type]
    off = promptops.Client(telemetry=False)
    with pytest.raises(promptops.ConfigError, match="telemetry is off"):
        off.metrics_text()
    with pytest.raises(promptops.ConfigError):
        promptops.Client().metrics_text()
