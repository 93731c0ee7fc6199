"""A real registry for the tests: `promptops serve --demo` as a child
process (the binary scripts/test-python.sh builds; its path comes in
PROMPTOPS_BIN)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import promptops

NAME = "support/reply"


def _promptops_bin() -> Optional[str]:
    path = os.environ.get("PROMPTOPS_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/promptops-target")
        path = os.path.join(target, "debug", "promptops")
    return path if os.access(path, os.X_OK) else None


BIN = _promptops_bin()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Registry:
    """`promptops serve --demo` on a free port, its database in `workdir`."""

    def __init__(self, workdir: Path, extra: Optional[List[str]] = None) -> None:
        if BIN is None:
            raise RuntimeError(skip_reason())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTOPS_")}
        env["PROMPTOPS_LOG"] = "warn"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--demo", "--addr", "127.0.0.1:0"]
            + ["--database-url", str(workdir / "promptops.db")]
            + (extra or []),
            cwd=workdir,  # --demo writes promptops-demo.env here
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def drain() -> None:  # keeps reading, so the server never blocks on stdout
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        self.url = self.admin_key = self.sdk_key = ""
        deadline = time.monotonic() + 60
        try:
            while not self.sdk_key:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None:
                    raise RuntimeError(f"promptops serve exited ({self.proc.wait()})")
                if line.startswith("promptops registry on "):
                    self.url = line.split()[3]
                elif line.strip().startswith("admin key:"):
                    self.admin_key = line.split(":", 1)[1].strip()
                elif line.strip().startswith("SDK key:"):
                    self.sdk_key = line.split(":", 1)[1].strip()
        except BaseException:
            self.kill()
            raise
        assert self.url.startswith("http://127.0.0.1:") and self.admin_key

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the clients."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def publish(self, text: str, labels: List[str]) -> int:
        """A new version of `support/reply` with `labels`; returns its number."""
        body = {
            "type": "chat",
            "messages": [
                {"role": "system", "content": text},
                {"role": "user", "content": "Hi, I'm {{ user_name }}."},
            ],
            "labels": labels,
        }
        req = urllib.request.Request(
            f"{self.url}/v1/projects/demo/prompts/{urllib.parse.quote(NAME, safe='')}/versions",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.admin_key}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.load(r)
        return int(out["version"])

    def client(self, **kwargs: Any) -> promptops.Client:
        opts: Dict[str, Any] = {"server": self.url, "api_key": self.sdk_key, "project": "demo"}
        opts.update(kwargs)
        return promptops.Client(**opts)


def skip_reason() -> str:
    return "the promptops binary is not built: run scripts/test-python.sh (it builds it) or set PROMPTOPS_BIN"


class RedisServer:
    """A real redis-server on a free loopback port, for the tests that need
    Redis when PROMPTOPS_TEST_REDIS_URL does not name one."""

    def __init__(self, workdir: Path) -> None:
        import socket

        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server; scripts/services.sh does)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
