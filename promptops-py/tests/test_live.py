"""Live delivery against a real registry: `promptops serve --demo` started as
a child process (tests/live_registry.py), publishes through the REST API,
SIGKILL, the disk cache, a forked child, and Redis when
PROMPTOPS_TEST_REDIS_URL is set. Every wait is bounded."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import promptops
from live_registry import NAME, RedisServer, Registry, wait_for

VARS = {"user_name": "Dana", "company": "Acme", "order_id": "A-1"}
REDIS_URL = os.environ.get("PROMPTOPS_TEST_REDIS_URL")



@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    try:
        yield reg
    finally:
        reg.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def staging_version(client: promptops.Client) -> int:
    return client.get(NAME, label="staging").version


def test_registry_unavailable_until_data() -> None:
    # Nothing listens there: after startup_wait the client has no data.
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    client = promptops.Client(server=url, project="demo", startup_wait=0.3)
    assert 0.25 <= time.monotonic() - start < 10
    try:
        with pytest.raises(promptops.RegistryUnavailable) as ei:
            client.get(NAME)
        assert ei.value.kind == "REGISTRY_UNAVAILABLE"
        assert "no data for `support/reply` yet" in str(ei.value)
        fb = client.get(NAME, fallback="Hi {{ user_name }}")
        assert fb.source == "fallback" and fb.render(VARS).text == "Hi Dana"
        d = client.status_detail
        assert d["status"] in ("initializing", "interrupted")
        assert d["sources"] == {"http": d["status"]} and d["data_age"] is None
        if d["status"] == "interrupted":
            assert d["last_error"] and url in d["last_error"]
    finally:
        client.close()
    assert client.status == "off" and client.status_detail["sources"] == {"http": "off"}
    with pytest.raises(promptops.RegistryUnavailable):
        client.get(NAME)


def test_live_get_update_and_status(registry: Registry) -> None:
    client = registry.client(startup_wait=5)
    try:
        assert client.status == "valid"
        p = client.get(NAME)
        assert (p.source, p.label, p.version) == ("memory", "production", 1)
        assert p.revision > 0
        out = p.render(VARS)
        assert out.messages is not None and "Acme" in out.messages[0]["content"]
        d = client.status_detail
        assert d["status"] == "valid" and d["sources"] == {"http": "valid"}
        assert d["data_age"] is not None and 0 <= d["data_age"] < 60
        assert repr(client) == '<promptops.Client project="demo" status="valid">'

        changes: List[Any] = []
        changed = threading.Event()

        def on_change(cs: List[promptops.Change]) -> None:
            changes.extend(cs)
            changed.set()

        client.on_change(on_change)
        v = registry.publish("You are a terse agent for {{ company }}.", ["staging"])
        assert v > 1
        wait_for(lambda: staging_version(client) == v, 10, "the new staging version")
        assert changed.wait(5)
        assert {"prompt": NAME, "label": "staging", "old": 1, "new": v} in changes
        staged = client.get(NAME, label="staging")
        assert staged.source == "memory" and staged.revision > p.revision
        msgs = staged.render(VARS).messages
        assert msgs is not None and msgs[0]["content"] == "You are a terse agent for Acme."
        # Production (protected: needs a review) still serves version 1.
        assert client.get(NAME).version == 1
    finally:
        client.close()
    assert client.status == "off"
    assert client.get(NAME, label="staging").version == v  # still served after close


def test_server_killed_then_disk_cache(registry: Registry, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    client = registry.client(cache_dir=cache, startup_wait=5)
    statuses: List[str] = []
    interrupted = threading.Event()

    def on_status(s: promptops.SyncStatus) -> None:
        statuses.append(s["status"])
        if s["status"] == "interrupted":
            interrupted.set()

    client.on_status(on_status)
    try:
        assert client.status == "valid"
        before = client.get(NAME)
        assert before.source == "memory"
        # Written right after the update is applied (and reported).
        wait_for(lambda: cache.is_dir() and any(cache.iterdir()), 5, "the snapshot on disk")

        registry.kill()
        assert interrupted.wait(15), f"no 'interrupted' status, saw {statuses}"
        assert client.status == "interrupted"
        d = client.status_detail
        assert d["sources"] == {"http": "interrupted"} and d["last_error"]
        assert d["data_age"] is not None
        # Reads never depend on the network: the same data is served.
        after = client.get(NAME)
        assert (after.source, after.version, after.revision) == ("memory", 1, before.revision)
        assert after.render(VARS).messages == before.render(VARS).messages

        # A client started while the registry is down serves the disk copy.
        second = registry.client(cache_dir=cache)
        try:
            assert second.status in ("initializing", "interrupted")
            q = second.get(NAME)
            assert (q.source, q.version, q.revision) == ("disk", 1, before.revision)
            assert q.render(VARS).messages == before.render(VARS).messages
        finally:
            second.close()
    finally:
        client.close()
    assert statuses[-1] == "off"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_forked_child_keeps_syncing(registry: Registry) -> None:
    client = registry.client(startup_wait=5)
    assert client.get(NAME).source == "memory"
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a multi-threaded process may
        # deadlock; restarting sync in the child is what this tests.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            os.write(to_parent_w, b"ready\n")
            with os.fdopen(to_child_r) as f:
                want = int(f.readline())
            deadline = time.monotonic() + 10
            got = staging_version(client)
            # Wait for the version and for the restarted sync to report in
            # (on a loaded machine a first attempt may fail and be retried).
            while (got != want or client.status != "valid") and time.monotonic() < deadline:
                time.sleep(0.02)
                got = staging_version(client)
            result = {"version": got, "status": client.status,
                      "source": client.get(NAME, label="staging").source}
            code = 0
        except BaseException as e:  # noqa: BLE001
            result = {"error": repr(e)}
        try:
            os.write(to_parent_w, json.dumps(result).encode() + b"\n")
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        with os.fdopen(to_parent_r) as from_child, os.fdopen(to_child_w, "w") as to_child:
            assert select.select([from_child], [], [], 30)[0], "the child did not start"
            assert from_child.readline() == "ready\n"
            # Published after the fork: only the child's own sync can see it.
            v = registry.publish("Forked {{ company }}.", ["staging"])
            to_child.write(f"{v}\n")
            to_child.flush()
            assert select.select([from_child], [], [], 30)[0], "no answer from the child"
            result = json.loads(from_child.readline())
        assert "error" not in result, result
        assert (result["version"], result["source"]) == (v, "memory"), result
        # The parent follows too.
        wait_for(lambda: staging_version(client) == v, 10, "the parent to see the publish")
        assert client.status == "valid"
        assert result["status"] == "valid", result
    finally:
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        client.close()


def test_redis_only_client(tmp_path: Path) -> None:
    # The shared test Redis when scripts/test.sh started one, else our own.
    own = None if REDIS_URL else RedisServer(tmp_path)
    url = own.url if own is not None else str(REDIS_URL)
    try:
        _redis_only_client(tmp_path, url)
    finally:
        if own is not None:
            own.stop()


def _redis_only_client(tmp_path: Path, redis_url: str) -> None:
    prefix = f"promptops-pytest-{uuid.uuid4().hex[:12]}"
    reg = Registry(tmp_path, ["--redis-url", redis_url, "--redis-prefix", prefix])
    try:
        client = promptops.Client(
            redis=redis_url, redis_prefix=prefix, project="demo", startup_wait=5
        )
        try:
            assert client.status == "valid"
            assert client.status_detail["sources"] == {"redis": "valid"}
            p = client.get(NAME)
            assert (p.source, p.version) == ("memory", 1)
            changed = threading.Event()
            client.on_change(lambda cs: changed.set())
            v = reg.publish("Via Redis for {{ company }}.", ["staging"])
            wait_for(lambda: staging_version(client) == v, 10, "the publish over Redis")
            assert changed.wait(5)
        finally:
            client.close()
        # Another prefix does not see this registry's keys.
        other = promptops.Client(
            redis=redis_url, redis_prefix=f"{prefix}-other", project="demo", startup_wait=0.3
        )
        try:
            with pytest.raises(promptops.RegistryUnavailable):
                other.get(NAME)
        finally:
            other.close()
    finally:
        reg.kill()
        cli = shutil.which("redis-cli")
        if cli:  # tidy up this test's keys (best effort)
            for key in ("snapshot", "revision"):
                subprocess.run(
                    [cli, "-u", redis_url, "DEL", f"{prefix}:demo:{key}"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )


def test_on_status_callback_errors_stay_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    client = promptops.Client(server=f"http://127.0.0.1:{free_port()}", project="demo")
    seen: List[Any] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(u.exc_value))

    def boom(s: promptops.SyncStatus) -> None:
        raise ValueError(f"boom {s['status']}")

    with pytest.raises(TypeError):
        client.on_status(42)  # type: ignore[arg-type]
    client.on_status(boom)
    with client:  # closes on exit: the status turns "off" on this thread
        pass
    assert client.status == "off"
    assert any(isinstance(e, ValueError) and str(e) == "boom off" for e in seen), seen


def _native_threads() -> List[str]:
    """Names of this process's OS threads (Linux)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return names


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_clients_share_the_module_runtime(registry: Registry) -> None:
    # Live sync of every client runs on the one runtime the module owns:
    # more clients, no more threads.
    first = registry.client(startup_wait=5)
    clients = [first]
    try:
        before = _native_threads()
        for _ in range(4):
            clients.append(registry.client(startup_wait=5))
        for c in clients:
            assert c.status == "valid"
            assert c.get(NAME).render(VARS).messages
        after = _native_threads()
        assert "promptops-sync" not in after, after
        # (the runtime may add a blocking-pool thread, never one per client)
        assert after.count("promptops") - before.count("promptops") < 4, (before, after)
        assert len(after) - len(before) < 4, (before, after)
        # and a publish still reaches every client
        v = registry.publish("Hello from the shared runtime, {{ company }}.", ["staging"])
        for c in clients:
            wait_for(lambda: staging_version(c) == v, 10, "the publish to reach a client")
    finally:
        for c in clients:
            c.close()


def test_await_ready_keeps_the_event_loop_free(registry: Registry) -> None:
    import asyncio

    async def main() -> "tuple[bool, int, str]":
        # startup_wait=0: the constructor returns at once; the wait for the
        # registry's first answer is awaited, and the loop runs meanwhile.
        client = registry.client()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.ensure_future(ticker())
        try:
            ok = await client.await_ready(10)
            status = client.status
            assert client.get(NAME).render(VARS).messages
        finally:
            t.cancel()
            client.close()
        return ok, ticks, status

    ok, ticks, status = asyncio.run(main())
    assert ok and status == "valid"
    assert ticks >= 1


def test_wait_ready_without_live_sources_and_bad_timeouts(tmp_path: Path) -> None:
    client = promptops.Client(prompts_dir=tmp_path)
    try:
        start = time.monotonic()
        assert client.wait_ready(5) is False  # nothing live to wait for
        assert time.monotonic() - start < 1
        with pytest.raises(TypeError):
            client.wait_ready("1")  # type: ignore[arg-type]
        with pytest.raises(promptops.ConfigError):
            client.wait_ready(-1)
    finally:
        client.close()
