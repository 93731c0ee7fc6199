"""Telemetry export and the model catalogue from Python, end to end: a real
registry (`promptops serve`) receives the uploaded events of renders, routed
calls and `complete` (its `/metrics` and `GET /v1/projects/{p}/telemetry`
show them per prompt, version and model); a local HTTP receiver stands in
for a telemetry gateway (to see exactly what leaves the process: masked) and
for an OTLP collector (OTLP/HTTP JSON with the GenAI names); the catalogue
published with the CLI (`promptops models set`) reaches `client.models()`
and the client's prices. Bad option values raise ConfigError/TypeError."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import promptops
from http_receiver import Receiver
from live_registry import BIN, Registry
from mock_provider import MockProvider, ok

MINI = "gpt-4o-mini"
EMAIL = "dana.k@example.com"
PHONE = "+65 9123 4567"
VARS = {"name": "Dana", "email": EMAIL, "phone": PHONE}
ATTRS = {"user_email": EMAIL, "phone": PHONE, "tier": "gold"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def snapshot(models: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    snap: Dict[str, Any] = {
        "format": "promptops.snapshot/1",
        "project": "shop",
        "revision": 1,
        "hash": "",
        "prompts": [
            {
                "name": "support/reply",
                "versions": [
                    {
                        "version": 3,
                        "type": "text",
                        "template": "Hi {{ name }}, we will write to {{ email }} or call {{ phone }}.",
                        "config": {"provider": "openai", "model": MINI},
                    }
                ],
                "labels": {"production": 3},
            }
        ],
    }
    if models is not None:
        snap["models"] = models
    return snap


def local_client(**kwargs: Any) -> promptops.Client:
    c = promptops.Client(project="shop", **kwargs)
    assert c.apply_snapshot(snapshot())["applied"]
    return c


def routed_call(c: promptops.Client) -> None:
    """A render, then a routed call whose outcome the caller records: four
    events (render; the route's decision and render; the call)."""
    c.get("support/reply").render(VARS)
    d = c.route("support/reply", VARS, route_key="user-1", attributes=ATTRS)
    c.record(d, latency_ms=120.0, input_tokens=40, output_tokens=10)


# -- upload to a real registry ----------------------------------------------


def admin_request(reg: Registry, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        reg.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {reg.admin_key}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read().decode()}") from None


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    try:
        yield reg
    finally:
        reg.kill()


def test_upload_to_the_registry_and_catalogue_from_the_cli(registry: Registry) -> None:
    assert BIN is not None
    admin_request(
        registry,
        "POST",
        "/v1/projects/demo/prompts",
        {
            "name": "shop/answer",
            "type": "text",
            "template": "Hi {{ name }}, we will write to {{ email }} or call {{ phone }}.",
            "config": {"provider": "openai", "model": MINI},
            "labels": ["staging"],  # `production` is protected in the demo project
        },
    )
    # The catalogue, published with the CLI.
    subprocess.run(
        [BIN, "models", "set", MINI, "--provider", "openai", "--input-per-mtok", "1.5",
         "--output-per-mtok", "6", "--context-window", "64000",
         "--server", registry.url, "--api-key", registry.admin_key, "--project", "demo"],
        check=True, capture_output=True, timeout=60,
    )
    mock = MockProvider()
    try:
        mock.script(MINI, ok("It ships today"))
        c = registry.client(
            startup_wait=10,
            telemetry=True,
            telemetry_interval=3600,  # only flush_telemetry uploads here
            providers={"openai": {"base_url": mock.url, "api_key": "sk-test"}},
        )
        models = c.models()
        assert [m["model"] for m in models] == [MINI], models
        m = models[0]
        assert (m["provider"], m["input_per_mtok"], m["output_per_mtok"], m["context_window"]) == (
            "openai", 1.5, 6.0, 64000)
        assert m["enabled"] is True and m["health"]["status"] == "unknown" and m["base_url"] is None
        # The client prices with the catalogue; the module-level table is the built-in one.
        assert c.model_price(MINI)["input_per_mtok"] == 1.5
        assert c.estimate_cost(MINI, 1_000_000, 1_000_000) == pytest.approx(7.5)
        assert promptops.estimate_cost(MINI, 1_000_000, 1_000_000) != pytest.approx(7.5)

        p = c.get("shop/answer", label="staging")
        p.render(VARS)
        d = c.route("shop/answer", VARS, route_key="user-1", label="staging", attributes=ATTRS)
        c.record(d, latency_ms=120.0, input_tokens=40, output_tokens=10)
        out = c.complete("shop/answer", VARS, route_key="user-2", label="staging", attributes=ATTRS)
        assert out.text == "It ships today"
        assert c.flush_telemetry(10.0) is True
        stats = c.telemetry_stats()
        assert stats["recorded"] >= 5 and stats["pending"] == 0, stats
        assert stats["dropped_upload_failed"] == 0 and stats["otlp"] is None, stats

        q = urllib.parse.urlencode({"group_by": "prompt,version,model"})
        report = admin_request(registry, "GET", f"/v1/projects/demo/telemetry?{q}")
        groups = [g for g in report["groups"] if g["prompt"] == "shop/answer"]
        assert len(groups) == 1, report
        g = groups[0]
        assert (g["version"], g["model"], g["requests"], g["errors"]) == (p.version, MINI, 2, 0), g
        assert g["input_tokens"] >= 40 and g["cost_usd"] > 0, g

        with urllib.request.urlopen(registry.url + "/metrics", timeout=30) as r:
            metrics = r.read().decode()
        series = [
            ln for ln in metrics.splitlines()
            if ln.startswith("promptops_llm_requests_total{") and 'prompt="shop/answer"' in ln
        ]
        assert len(series) == 1, metrics
        assert f'version="{p.version}"' in series[0] and f'model="{MINI}"' in series[0]
        assert float(series[0].rsplit(" ", 1)[1]) == 2.0
        c.close()
    finally:
        mock.close()


# -- what leaves the process ------------------------------------------------


def test_events_leave_masked_by_default(receiver: Receiver) -> None:
    # A gateway URL instead of a registry: uploading needs no `server`.
    c = local_client(telemetry=True, telemetry_upload_url=receiver.url, telemetry_interval=3600)
    routed_call(c)
    assert c.flush_telemetry() is True
    batches = receiver.bodies("/v1/telemetry")
    assert batches and all(b["schema"] == "promptops.telemetry.v1" for b in batches)
    events = [e for b in batches for e in b["events"]]
    assert {b["sdk"]["name"] for b in batches} == {"promptops-python"}
    assert {e["kind"] for e in events} == {"render", "decision", "call"}, events
    raw = receiver.raw()
    # No raw variable or attribute value: e-mail and phone are masked.
    for secret in (EMAIL, PHONE, "9123"):
        assert secret not in raw, raw
    assert "<email>" in raw and "<number>" in raw and "gold" in raw
    c.close()


def test_mask_pii_false_sends_events_as_recorded(receiver: Receiver) -> None:
    c = local_client(
        telemetry={"mask_pii": False}, telemetry_upload_url=receiver.url, telemetry_interval=3600)
    routed_call(c)
    assert c.flush_telemetry() is True
    assert EMAIL in receiver.raw()
    c.close()


def test_upload_off_and_close_exports_a_last_round(receiver: Receiver) -> None:
    off = local_client(
        telemetry=True, telemetry_upload=False, telemetry_upload_url=receiver.url)
    routed_call(off)
    assert off.flush_telemetry() is False  # nothing to export to
    off.close()
    assert receiver.requests == []
    # With the upload on, close() runs the last round.
    on = local_client(telemetry=True, telemetry_upload_url=receiver.url, telemetry_interval=3600,
                      telemetry_max_batch=1, telemetry_flush_timeout=5)
    routed_call(on)
    on.close()
    batches = receiver.bodies("/v1/telemetry")
    assert len(batches) == 4 and all(len(b["events"]) == 1 for b in batches), batches


def test_failed_uploads_are_counted() -> None:
    bad = Receiver(status=503)
    try:
        c = local_client(telemetry=True, telemetry_upload_url=bad.url, telemetry_interval=3600)
        routed_call(c)
        assert c.flush_telemetry() is True  # the round finished; its upload failed
        assert c.telemetry_stats()["dropped_upload_failed"] == 4
        assert "promptops_telemetry_dropped_total{reason=\"upload_failed\"} 4" in c.metrics_text()
        c.close()
    finally:
        bad.close()


# -- OTLP -------------------------------------------------------------------


def attrs_of(point: Dict[str, Any]) -> Dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in point["attributes"]}


def test_otlp_metrics_and_spans_with_genai_names(receiver: Receiver) -> None:
    c = local_client(
        telemetry=True,
        otlp={
            "endpoint": receiver.url,
            "headers": {"Authorization": "Bearer otlp-secret"},
            "service_name": "checkout",
        },
        telemetry_interval=3600,
    )
    assert "otlp-secret" not in repr(c)
    routed_call(c)
    assert c.flush_telemetry(10) is True
    paths = {p for p, _, _ in receiver.requests}
    assert paths == {"/v1/metrics", "/v1/traces"}, paths
    assert all(h["authorization"] == "Bearer otlp-secret" and h["content-type"] == "application/json"
               for _, h, _ in receiver.requests)

    (m,) = receiver.bodies("/v1/metrics")
    rm = m["resourceMetrics"][0]
    assert attrs_of(rm["resource"])["service.name"] == "checkout"
    assert attrs_of(rm["resource"])["telemetry.sdk.language"] == "python"
    metrics = {x["name"]: x for x in rm["scopeMetrics"][0]["metrics"]}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= set(metrics)
    point = metrics["gen_ai.client.operation.duration"]["histogram"]["dataPoints"][0]
    a = attrs_of(point)
    assert a["promptops.prompt.name"] == "support/reply"
    assert a["promptops.prompt.version"] == "3"  # an intValue, as OTLP JSON writes int64
    assert (a["gen_ai.request.model"], a["gen_ai.provider.name"], a["gen_ai.operation.name"]) == (
        MINI, "openai", "chat")

    (t,) = receiver.bodies("/v1/traces")
    (span,) = t["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert span["name"] == f"chat {MINI}"
    sa = attrs_of(span)
    assert sa["promptops.prompt.name"] == "support/reply" and sa["gen_ai.usage.input_tokens"] == "40"
    assert EMAIL not in receiver.raw()

    stats = c.telemetry_stats()["otlp"]
    assert stats is not None
    assert (stats["spans_exported"], stats["metric_exports"], stats["spans_failed"]) == (1, 1, 0)
    c.close()


def test_otlp_url_shorthand_and_failed_exports_counted() -> None:
    bad = Receiver(status=500)
    try:
        c = local_client(telemetry=True, otlp=bad.url, telemetry_interval=3600)
        routed_call(c)
        assert c.flush_telemetry() is True
        stats = c.telemetry_stats()["otlp"]
        assert stats is not None
        assert (stats["metric_exports_failed"], stats["spans_failed"]) == (1, 1), stats
        c.close()
    finally:
        bad.close()


def test_aflush_telemetry_never_blocks_the_event_loop() -> None:
    slow = Receiver(delay=0.4)
    try:
        c = local_client(telemetry=True, otlp={"endpoint": slow.url, "traces": False},
                         telemetry_interval=3600)
        routed_call(c)

        async def main() -> Tuple[bool, int]:
            ticks = 0
            done = False

            async def ticker() -> None:
                nonlocal ticks
                while not done:
                    ticks += 1
                    await asyncio.sleep(0.01)

            t = asyncio.ensure_future(ticker())
            flushed = await c.aflush_telemetry(timeout=5)
            done = True
            await t
            return flushed, ticks

        flushed, ticks = asyncio.run(main())
        assert flushed is True
        assert ticks >= 10, ticks  # the loop kept running during the 0.4 s export
        assert [p for p, _, _ in slow.requests] == ["/v1/metrics"]
        c.close()
    finally:
        slow.close()


def test_flush_without_an_exporter() -> None:
    c = local_client(telemetry=True)  # no server, no upload URL, no OTLP
    routed_call(c)
    assert c.flush_telemetry() is False
    assert c.telemetry_stats()["recorded"] == 4
    with pytest.raises(promptops.ConfigError, match="telemetry is off"):
        promptops.Client().telemetry_stats()


# -- the catalogue offline ----------------------------------------------------


def test_models_from_a_snapshot_price_the_client() -> None:
    c = promptops.Client(project="shop")
    assert c.models() == []
    c.apply_snapshot(snapshot(models=[
        {"model": MINI, "provider": "openai", "input_per_mtok": 1.0, "output_per_mtok": 2.0},
        {"model": "llama-70b", "provider": "vllm", "input_per_mtok": 0.1, "output_per_mtok": 0.2,
         "context_window": 8192, "enabled": False, "base_url": "http://gpu:8000/v1",
         "health": {"status": "unavailable", "checked_at": "2026-01-01T00:00:00Z", "error": "HTTP 502"}},
    ]))
    models = {m["model"]: m for m in c.models()}
    assert models["llama-70b"] == {
        "model": "llama-70b", "provider": "vllm", "context_window": 8192, "max_output_tokens": None,
        "input_per_mtok": 0.1, "output_per_mtok": 0.2, "cached_input_per_mtok": None,
        "enabled": False, "base_url": "http://gpu:8000/v1",
        "health": {"status": "unavailable", "checked_at": "2026-01-01T00:00:00Z", "error": "HTTP 502"},
    }
    assert c.estimate_cost(MINI, 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert c.model_price("llama-70b")["context_window"] == 8192
    with pytest.raises(promptops.UnknownModel):
        c.model_price("no-such-model")
    assert c.estimate_cost("no-such-model", 1, 1) is None


# -- bad options ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"telemetry_interval": 0}, "telemetry_interval must be a finite number of seconds > 0, got 0"),
        ({"telemetry_interval": -1.5}, "telemetry_interval must be a finite number of seconds > 0"),
        ({"telemetry_interval": math.nan}, "telemetry_interval must be a finite number"),
        ({"telemetry_flush_timeout": 0}, "telemetry_flush_timeout must be"),
        ({"telemetry_max_batch": 0}, "telemetry_max_batch must be an int >= 1, got 0"),
        ({"telemetry_upload_url": "localhost:8700"}, "upload_url: `localhost:8700` must start with http://"),
        ({"telemetry_upload_url": "http://u:pw@host"}, "must not carry credentials"),
        ({"otlp": "collector:4318"}, "otlp endpoint: `collector:4318` must start with http://"),
        ({"otlp": {"headers": {"a": "b"}}}, "otlp needs an 'endpoint'"),
        ({"otlp": {"endpoint": "http://h", "bogus": 1}}, "unknown otlp option `bogus`"),
        ({"otlp": {"endpoint": "http://h", "headers": {"bad header": "v"}}}, "`bad header` is not a valid HTTP header name"),
        ({"otlp": {"endpoint": "http://h", "service_name": ""}}, "otlp service_name must not be empty"),
        ({"otlp": {"endpoint": "http://h", "max_spans": 0}}, "otlp['max_spans'] must be an int >= 1"),
        ({"otlp": {"endpoint": "http://h", "metrics": False, "traces": False}}, "exports nothing"),
    ],
)
def test_bad_values_raise_config_error(kwargs: Dict[str, Any], message: str) -> None:
    with pytest.raises(promptops.ConfigError) as e:
        promptops.Client(telemetry=True, **kwargs)
    assert message in str(e.value)
    assert e.value.kind == "CONFIG_ERROR"


def test_header_values_never_in_errors() -> None:
    with pytest.raises(promptops.ConfigError) as e:
        promptops.Client(telemetry=True, otlp={"endpoint": "http://h", "headers": {"x-key": "s3cret\n"}})
    assert "`x-key`" in str(e.value) and "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"telemetry_interval": "10"}, "telemetry_interval must be a number, not str"),
        ({"telemetry_interval": True}, "telemetry_interval must be a number, not bool"),
        ({"telemetry_max_batch": 1.5}, "telemetry_max_batch must be an int, not float"),
        ({"otlp": 4318}, "otlp must be the collector's URL (str) or a dict"),
        ({"otlp": {"endpoint": "http://h", "traces": "yes"}}, "otlp['traces'] must be a bool, not str"),
        ({"otlp": {"endpoint": "http://h", "headers": ["a"]}}, "otlp['headers'] must be a dict"),
    ],
)
def test_bad_types_raise_type_error(kwargs: Dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError) as e:
        promptops.Client(telemetry=True, **kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"otlp": "http://127.0.0.1:4318"}, {"telemetry_upload_url": "http://h"}, {"telemetry_interval": 1}],
)
def test_export_options_need_telemetry(kwargs: Dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(promptops.ConfigError, match=f"{name} needs telemetry on: pass telemetry=True"):
        promptops.Client(**kwargs)


def test_bad_flush_timeout() -> None:
    c = promptops.Client(telemetry=True)
    with pytest.raises(promptops.ConfigError, match="timeout must be a finite number of seconds > 0"):
        c.flush_telemetry(-1)
    with pytest.raises(TypeError, match="timeout must be a number"):
        c.flush_telemetry("1")  # type: ignore[arg-type]
