"""Every ```python block of promptops-py/README.md runs, in order, in one
namespace, from the repository root; what a block prints must equal its
full-line `# ...` comments (the README's shown output). The live-delivery
block reads a real registry's URL and SDK key from the environment
(PROMPTOPS_SERVER, PROMPTOPS_SDK_KEY, as `promptops serve --demo` writes
them to promptops-demo.env); the provider-call block reads the mock
provider's URL from OPENAI_BASE_URL / ANTHROPIC_BASE_URL; the telemetry
block exports to a local OTLP receiver named by OTEL_EXPORTER_OTLP_ENDPOINT."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from conftest import PY_ROOT, REPO
from http_receiver import Receiver
from live_registry import Registry
from mock_provider import MockProvider

README = PY_ROOT / "README.md"


def python_blocks() -> List[Tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text[: m.start()].count("\n") + 2
        out.append((line, m.group(1)))
    return out


def expected_output(block: str) -> str:
    lines = [
        ln.strip()[2:] if ln.strip() != "#" else ""
        for ln in block.splitlines()
        if ln.lstrip().startswith("#")
    ]
    return "".join(f"{ln}\n" for ln in lines)


def test_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 8


def test_readme_python_blocks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    # The provider-call block talks to the repository's mock provider.
    mock = MockProvider()
    collector = Receiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("PROMPTOPS_SERVER", registry.url)
        monkeypatch.setenv("PROMPTOPS_SDK_KEY", registry.sdk_key)
        monkeypatch.setenv("PROMPTOPS_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("OPENAI_BASE_URL", mock.url)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", mock.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-test")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-readme-test")
        run_blocks(monkeypatch)
        assert [r["authorization"] for r in mock.received()] == ["Bearer sk-readme-test"] * 3
        assert sorted({p for p, _, _ in collector.requests}) == ["/v1/metrics", "/v1/traces"]
        assert all(h["authorization"] == "Bearer collector-token" for _, h, _ in collector.requests)
        assert "dana@example.com" not in collector.raw()
    finally:
        registry.kill()
        mock.close()
        collector.close()


def run_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    ns: Dict[str, Any] = {"__name__": "__readme__"}
    for line, block in python_blocks():
        buf = io.StringIO()
        code = compile(block, f"{README}:{line}", "exec")
        with contextlib.redirect_stdout(buf):
            exec(code, ns)
        assert buf.getvalue() == expected_output(block), f"README block at line {line}"
    assert os.getcwd() == str(REPO)
