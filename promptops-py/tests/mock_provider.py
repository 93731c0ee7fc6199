"""The repository's mock LLM provider (tests/mock_provider, the one the Rust
tests use) as a child process: the `promptops-mock-provider` binary of the
promptops-tests package (tests/mock_provider/main.rs, shared with the Node
tests), built by scripts/test-python.sh; its path comes in
PROMPTOPS_MOCK_PROVIDER.

It speaks OpenAI Chat Completions and Anthropic Messages, streaming and
not, and misbehaves on demand per model (HTTP errors with Retry-After,
resets before/after the first token, malformed chunks, stalls)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any, Dict, List, Optional


def _binary() -> Optional[str]:
    path = os.environ.get("PROMPTOPS_MOCK_PROVIDER")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/promptops-target")
        for profile in ("debug", "release"):
            cand = os.path.join(target, profile, "promptops-mock-provider")
            if os.access(cand, os.X_OK):
                path = cand
                break
    return path if path and os.access(path, os.X_OK) else None


BIN = _binary()


def ok(text: str, delay_ms: int = 0, chunk_delay_ms: int = 0) -> Dict[str, Any]:
    return {"kind": "ok", "text": text, "delay_ms": delay_ms, "chunk_delay_ms": chunk_delay_ms}


def status(code: int, retry_after: Optional[str] = None) -> Dict[str, Any]:
    b: Dict[str, Any] = {"kind": "status", "code": code}
    if retry_after is not None:
        b["retry_after"] = retry_after
    return b


def reset(tokens: int) -> Dict[str, Any]:
    """A 200, then the connection dropped after `tokens` streamed tokens."""
    return {"kind": "reset", "tokens": tokens}


def malformed(tokens: int) -> Dict[str, Any]:
    return {"kind": "malformed", "tokens": tokens}


def stall(ms: int, text: str = "late answer") -> Dict[str, Any]:
    return {"kind": "stall", "ms": ms, "text": text}


class MockProvider:
    """A running mock provider; `url` is its base URL (`.../v1`)."""

    def __init__(self) -> None:
        if BIN is None:
            raise RuntimeError(
                "the mock provider binary is missing: build it with "
                "`cargo build --workspace --bin promptops-mock-provider` or set "
                "PROMPTOPS_MOCK_PROVIDER (scripts/test-python.sh does both)"
            )
        self.proc = subprocess.Popen(
            [BIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._lock = threading.Lock()
        hello = self._read()
        self.url: str = hello["url"]
        self.root: str = hello["root"]

    def _read(self) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the mock provider exited")
        return json.loads(line)  # type: ignore[no-any-return]

    def _cmd(self, **cmd: Any) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            reply = self._read()
        if reply.get("ok") is not True:
            raise RuntimeError(f"mock provider: {reply['error']}")
        return reply

    def script(self, model: str, *behaviors: Dict[str, Any]) -> None:
        """Queue behaviours for `model`, one per request."""
        self._cmd(cmd="script", model=model, behaviors=list(behaviors))

    def set_default(self, model: str, behavior: Dict[str, Any]) -> None:
        self._cmd(cmd="default", model=model, behavior=behavior)

    def received(self) -> List[Dict[str, Any]]:
        return self._cmd(cmd="received")["received"]  # type: ignore[no-any-return]

    def count(self, model: str) -> int:
        return int(self._cmd(cmd="count", model=model)["count"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
