"""Every exception class, raised where it should be, with its attributes."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Dict

import pytest

import promptops
from promptops import _errors
from conftest import REPO


# The engine's error kinds the Python API has a class for (issue 5).
CLASSES = {
    "PROMPT_NOT_FOUND": "PromptNotFound",
    "TEMPLATE_ERROR": "TemplateError",
    "VARIABLE_ERROR": "VariableError",
    "VALIDATION_ERROR": "ValidationError",
    "INCLUDE_CYCLE": "IncludeCycleError",
    "PARSE_ERROR": "ParseError",
    "SNAPSHOT_ERROR": "SnapshotError",
    "UNKNOWN_MODEL": "UnknownModel",
    "OUTPUT_LIMIT": "OutputLimitError",
    "FUEL_EXHAUSTED": "FuelExhausted",
    "CONFIG_ERROR": "ConfigError",
    "REGISTRY_UNAVAILABLE": "RegistryUnavailable",
    "IO_ERROR": "PromptOpsIOError",
    "POLICY_ERROR": "PolicyError",
    "NO_ROUTE": "NoRoute",
    "PROVIDER_ERROR": "ProviderError",
}


def test_every_core_kind_maps_to_its_class() -> None:
    # The kinds the engine defines, read from its source (`Error::kind`).
    src = (REPO / "promptops-core" / "src" / "error.rs").read_text(encoding="utf-8")
    kinds = set(re.findall(r'Error::\w+(?:\s*\{\s*\.\.\s*\}|\(_\))\s*=>\s*"([A-Z_]+)"', src))
    # Every kind has its class, and no class names a kind the engine lacks.
    assert set(CLASSES) == kinds, set(CLASSES) ^ kinds
    for kind, name in CLASSES.items():
        cls = _errors._BY_KIND[kind]
        assert cls.__name__ == name and cls.KIND == kind
        assert issubclass(cls, promptops.PromptOpsError) and cls is not promptops.PromptOpsError
        assert getattr(promptops, name) is cls
    assert len({_errors._BY_KIND[k] for k in CLASSES}) == len(CLASSES)


def test_hierarchy_names() -> None:
    names = [
        "PromptNotFound",
        "TemplateError",
        "VariableError",
        "ValidationError",
        "IncludeCycleError",
        "ParseError",
        "SnapshotError",
        "UnknownModel",
        "OutputLimitError",
        "FuelExhausted",
        "ConfigError",
        "RegistryUnavailable",
        "PromptOpsIOError",
        "PolicyError",
        "NoRoute",
        "ProviderError",
    ]
    for n in names:
        cls = getattr(promptops, n)
        assert issubclass(cls, promptops.PromptOpsError)
        assert issubclass(cls, Exception)


def check_common(e: promptops.PromptOpsError, kind: str) -> None:
    assert e.kind == kind
    assert isinstance(e.details, dict)
    assert e.details["kind"] == kind
    assert e.details["message"] == str(e) == e.message
    # Exceptions survive pickling (multiprocessing) with their details.
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e) and e2.kind == e.kind and e2.details == e.details


def test_prompt_not_found(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.PromptNotFound) as ei:
        vector_client.get("v/nope")
    check_common(ei.value, "PROMPT_NOT_FOUND")
    assert ei.value.prompt == "v/nope"
    assert "vectors" in (ei.value.selector or "")
    with pytest.raises(promptops.PromptNotFound):
        vector_client.get("v/labels", label="canary")
    with pytest.raises(promptops.PromptNotFound):
        vector_client.get("v/labels", version=9)
    with pytest.raises(promptops.PromptNotFound) as ei:
        vector_client.get("v/variant").variant("llama")
    assert "llama" in (ei.value.selector or "")


def test_template_error(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.TemplateError) as ei:
        vector_client.get("v/broken")
    e = ei.value
    check_common(e, "TEMPLATE_ERROR")
    assert e.line == 2
    assert isinstance(e.column, int) and e.column >= 1
    assert e.prompt == "v/broken"
    assert e.version == 1
    assert e.part == "template"


def test_template_error_at_render(example_client: promptops.Client) -> None:
    p = example_client.get("x/len", fallback="{{ n | length }}")
    with pytest.raises(promptops.TemplateError) as ei:
        p.render(n=3)
    assert ei.value.line == 1
    assert ei.value.part == "template"
    assert ei.value.prompt == "x/len"


def test_variable_error(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.VariableError) as ei:
        vector_client.get("v/nested").render({"user": {"name": "Kim"}})
    e = ei.value
    check_common(e, "VARIABLE_ERROR")
    assert e.variable == "user.city"
    assert e.line == 1
    assert e.prompt == "v/nested"
    assert e.version == 1


def test_validation_error(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.ValidationError) as ei:
        vector_client.get("v/schema").render(name="Ana", age="old")
    e = ei.value
    check_common(e, "VALIDATION_ERROR")
    assert e.field == "age"
    assert e.prompt == "v/schema"
    with pytest.raises(promptops.ValidationError) as ei:
        promptops.estimate_cost("gpt-4o", -1, 0)
    assert ei.value.field == "input_tokens"


def test_include_cycle(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.IncludeCycleError) as ei:
        vector_client.get("v/cyc_a")
    e = ei.value
    check_common(e, "INCLUDE_CYCLE")
    assert e.label == "production"
    assert e.cycle is not None and "v/cyc_a" in e.cycle and "v/cyc_b" in e.cycle


def test_parse_error_strict(tmp_path: Path) -> None:
    bad = tmp_path / "support" / "bad.prompt"
    bad.parent.mkdir()
    bad.write_text("---\nmodel: openai/gpt-4o\nconfig: [unclosed\n---\nHi\n", encoding="utf-8")
    with pytest.raises(promptops.ParseError) as ei:
        promptops.Client(prompts_dir=tmp_path, strict=True)
    e = ei.value
    check_common(e, "PARSE_ERROR")
    assert e.file is not None and e.file.endswith("bad.prompt")
    assert isinstance(e.line, int) and e.line >= 2
    # Not strict: the rest loads, the problem is a diagnostic.
    (tmp_path / "support" / "ok.prompt").write_text("Hello {{ name }}", encoding="utf-8")
    c = promptops.Client(prompts_dir=tmp_path)
    assert c.get("support/ok").render(name="A").text == "Hello A"
    diags = c.diagnostics
    assert len(diags) == 1
    d = diags[0]
    assert d["prompt"] == "support/bad"
    assert d["kind"] == "PARSE_ERROR"
    assert d["details"]["file"].endswith("bad.prompt")
    assert "bad.prompt" in d["message"]


def snapshot(prompts: Any, project: str = "p", revision: int = 1) -> Dict[str, Any]:
    return {
        "format": "promptops.snapshot/1",
        "project": project,
        "revision": revision,
        "hash": "",
        "prompts": prompts,
    }


def test_snapshot_error(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(promptops.SnapshotError) as ei:
        promptops.Client(bundle=path)
    check_common(ei.value, "SNAPSHOT_ERROR")
    assert "bundle.json" in str(ei.value)
    doc = snapshot([])
    doc["hash"] = "sha256:00"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(promptops.SnapshotError, match="hash mismatch"):
        promptops.Client(bundle=path)
    with pytest.raises(promptops.SnapshotError):
        promptops.Client().apply_snapshot("[]")


def test_unknown_model() -> None:
    with pytest.raises(promptops.UnknownModel) as ei:
        promptops.model_price("gpt-9000")
    check_common(ei.value, "UNKNOWN_MODEL")
    assert ei.value.model == "gpt-9000"
    p = promptops.model_price("openai/gpt-4o-2024-08-06")
    assert p["model"] == "gpt-4o" and p["input_per_mtok"] == 2.5
    assert p["context_window"] == 128000


def test_output_limit(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.OutputLimitError) as ei:
        vector_client.get("v/big").render(n=2_000_000)
    check_common(ei.value, "OUTPUT_LIMIT")
    assert ei.value.prompt == "v/big"
    assert ei.value.limit == 1 << 20


def test_fuel_exhausted(vector_client: promptops.Client) -> None:
    with pytest.raises(promptops.FuelExhausted) as ei:
        vector_client.get("v/fuel").render()
    check_common(ei.value, "FUEL_EXHAUSTED")
    assert ei.value.prompt == "v/fuel"
    assert ei.value.limit == 1_000_000


def test_config_error(tmp_path: Path) -> None:
    # Live sources need a project (the engine refuses, CONFIG_ERROR).
    for kwargs in ({"server": "https://promptops.example"}, {"redis": "redis://localhost:6379"}):
        with pytest.raises(promptops.ConfigError) as ei:
            promptops.Client(**kwargs)  # type: ignore[arg-type]
        check_common(ei.value, "CONFIG_ERROR")
        assert "a project is required" in str(ei.value)
    with pytest.raises(promptops.ConfigError):
        promptops.Client(startup_wait=-1)
    with pytest.raises(promptops.ConfigError):
        promptops.Client(startup_wait=float("nan"))
    with pytest.raises(promptops.ConfigError, match="startup_wait"):
        promptops.Client(startup_wait=float("inf"))
    with pytest.raises(TypeError):
        promptops.Client(startup_wait="1")  # type: ignore[arg-type]
    # From the engine: a prompt directory that is a file.
    f = tmp_path / "file.txt"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(promptops.ConfigError, match="not a directory"):
        promptops.Client(prompts_dir=f)


def test_live_parameters_without_a_live_source() -> None:
    # No server or redis: nothing syncs, nothing waits, nothing is loaded.
    c = promptops.Client(api_key="k", cache_dir="/nonexistent", startup_wait=2.5)
    assert c.status == "off"
    assert c.status_detail == {"status": "off", "last_error": None, "data_age": None, "sources": {}}
    c.start_sync()  # no-op
    c.close()
    c.close()  # idempotent


def test_registry_unavailable_class() -> None:
    # Raised by the engine (tests/test_live.py); the class carries the kind.
    e = promptops.RegistryUnavailable("registry unavailable: down")
    check_common(e, "REGISTRY_UNAVAILABLE")
    assert _errors._BY_KIND["REGISTRY_UNAVAILABLE"] is promptops.RegistryUnavailable


def test_routing_error_classes() -> None:
    # The routing and provider kinds of the engine (not reachable from the
    # Python API yet): the classes read their fields from `details`, as the
    # native module builds them (class(message, kind, details)).
    e: promptops.PromptOpsError = _errors._BY_KIND["POLICY_ERROR"](
        "invalid routing policy of a/b: field `strategy`: unknown",
        "POLICY_ERROR",
        {"prompt": "a/b", "field": "strategy"},
    )
    assert isinstance(e, promptops.PolicyError)
    check_common(e, "POLICY_ERROR")
    assert (e.prompt, e.field) == ("a/b", "strategy")
    e = _errors._BY_KIND["NO_ROUTE"]("no route for a/b: all open", "NO_ROUTE", {"prompt": "a/b"})
    assert isinstance(e, promptops.NoRoute)
    check_common(e, "NO_ROUTE")
    assert e.prompt == "a/b"
    details = {
        "provider": "openai",
        "model": "gpt-4o",
        "error_type": "rate_limited",
        "status": 429,
        "attempts": 3,
    }
    e = _errors._BY_KIND["PROVIDER_ERROR"]("openai call failed", "PROVIDER_ERROR", details)
    assert isinstance(e, promptops.ProviderError)
    check_common(e, "PROVIDER_ERROR")
    assert (e.provider, e.model, e.error_type, e.status, e.attempts) == (
        "openai",
        "gpt-4o",
        "rate_limited",
        429,
        3,
    )


def test_io_error(tmp_path: Path) -> None:
    with pytest.raises(promptops.PromptOpsIOError) as ei:
        promptops.Client(bundle=tmp_path / "missing.json")
    check_common(ei.value, "IO_ERROR")
    assert ei.value.file is not None and ei.value.file.endswith("missing.json")
    with pytest.raises(promptops.PromptOpsIOError):
        promptops.Client(prompts_dir=tmp_path / "missing")


def test_panic_becomes_promptops_error() -> None:
    from promptops import _lowlevel

    for _ in range(3):  # and the interpreter is fine afterwards
        with pytest.raises(promptops.PromptOpsError) as ei:
            _lowlevel._test_panic("deliberate")
        e = ei.value
        assert type(e) is promptops.PromptOpsError
        assert e.kind == "PANIC"
        assert "deliberate" in str(e)
        assert e.details["kind"] == "PANIC"
    assert promptops.count_tokens("still alive") > 0


def test_type_errors_for_bad_arguments(vector_client: promptops.Client) -> None:
    p = vector_client.get("v/hello")
    with pytest.raises(TypeError, match="mapping"):
        p.render(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`vars\.name`.*object"):
        p.render({"name": object()})
    with pytest.raises(TypeError, match=r"`vars\.a\[1\]\.b`"):
        p.render({"name": "x", "a": [1, {"b": {1, 2}}]})
    cyc: Dict[str, Any] = {}
    cyc["self"] = cyc
    with pytest.raises(TypeError, match="deeper"):
        p.render(name="x", c=cyc)
    with pytest.raises(TypeError):
        promptops.count_tokens(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="role"):
        promptops.count_tokens([{"content": "x"}])  # type: ignore[typeddict-item]
    with pytest.raises(TypeError):
        vector_client.get("v/x", fallback=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        promptops.estimate_cost("gpt-4o", 1.5, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        vector_client.on_change(3)
