"""Threads, asyncio and fork."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import pytest

import promptops
from conftest import EXAMPLE_PROMPTS

VARS = {"user_name": "Dana", "company": "Acme Tools", "order_id": "A-20931"}


def expected(client: promptops.Client, i: int) -> Optional[List[promptops.Message]]:
    return client.get("support/reply").render({**VARS, "order_id": f"A-{i}"}).messages


def test_many_threads_render(example_client: promptops.Client) -> None:
    n_threads, per_thread = 16, 300
    want = {i: expected(example_client, i) for i in range(per_thread)}
    rag = example_client.get("rag/answer")
    chunks = [{"id": f"kb-{i}", "text": "passage " * 50} for i in range(20)]
    rag_want = rag.render(question="q", chunks=chunks).text
    errors: List[BaseException] = []
    start = threading.Barrier(n_threads)

    def work(t: int) -> int:
        start.wait()
        done = 0
        for i in range(per_thread):
            try:
                r = example_client.get("support/reply").render({**VARS, "order_id": f"A-{i}"})
                assert r.messages == want[i]
                assert r.input_tokens > 0
                if i % 10 == t % 10:
                    assert rag.render(question="q", chunks=chunks).text == rag_want
                    assert promptops.count_tokens(rag_want or "") > 500
                done += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                raise
        return done

    with ThreadPoolExecutor(n_threads) as pool:
        done = list(pool.map(work, range(n_threads)))
    assert not errors
    assert done == [per_thread] * n_threads


def test_gil_released_while_counting() -> None:
    """While one thread counts a large text in Rust, another thread keeps
    running Python code (the count runs with the GIL released)."""
    text = "The quick brown fox jumps over the lazy dog. 1234 " * 80_000  # ~4 MB
    promptops.count_tokens("warm up the encoding")
    t0 = time.perf_counter()
    promptops.count_tokens(text)
    alone = time.perf_counter() - t0
    assert alone > 0.02, "the text must take a while to count"

    ticks: List[float] = []
    running = threading.Event()
    finished = threading.Event()

    def counter() -> None:
        running.set()
        promptops.count_tokens(text)
        finished.set()

    th = threading.Thread(target=counter)
    th.start()
    running.wait()
    while not finished.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    th.join()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    # Holding the GIL for the whole count would leave one gap as long as the
    # count itself; released, the main thread ticks on.
    assert len(ticks) > 5
    assert max(gaps) < alone / 2, (max(gaps), alone)


def test_aget_is_a_coroutine(example_client: promptops.Client) -> None:
    assert inspect.iscoroutinefunction(promptops.Client.aget)

    async def main() -> List[Optional[List[promptops.Message]]]:
        p = await example_client.aget("support/reply")
        assert p.name == "support/reply"
        assert (await example_client.aget("support/reply", label="staging")).label == "staging"
        assert (await example_client.aget("support/reply", version=1)).label is None
        fb = await example_client.aget("support/none", fallback="Hi {{ user_name }}")
        assert fb.source == "fallback"
        with pytest.raises(promptops.PromptNotFound):
            await example_client.aget("support/none")
        coros = [example_client.aget("support/reply") for _ in range(50)]
        prompts = await asyncio.gather(*coros)
        return [q.render(VARS).messages for q in prompts]

    out = asyncio.run(main())
    assert len(out) == 50 and all(m == out[0] for m in out)


def _in_child(fn: Any) -> Dict[str, Any]:
    """Run `fn` in a forked child; return what it sent back (or its error)."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            payload = json.dumps({"ok": fn()})
        except BaseException as e:  # noqa: BLE001
            payload = json.dumps({"error": repr(e)})
            code = 1
        with os.fdopen(w, "w") as f:
            f.write(payload)
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    out: Dict[str, Any] = json.loads(data) if data else {"error": "no output"}
    out["status"] = status
    return out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_fork_after_use() -> None:
    client = promptops.Client(prompts_dir=EXAMPLE_PROMPTS)
    want = client.get("support/reply").render(VARS).messages
    tokens = promptops.count_tokens("hello world, from the parent", "gpt-4")

    # Threads that used the client have finished before the fork.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.get("rag/answer").render(question="q", chunks=[]), range(8)))

    def child() -> Any:
        r = client.get("support/reply").render(VARS)
        return {
            "messages": r.messages,
            "tokens": promptops.count_tokens("hello world, from the parent", "gpt-4"),
            "input_tokens": r.input_tokens,
            "fresh": promptops.Client(prompts_dir=EXAMPLE_PROMPTS).get("rag/answer").name,
        }

    out = _in_child(child)
    assert out["status"] == 0, out
    assert out["ok"]["messages"] == want
    assert out["ok"]["tokens"] == tokens
    assert out["ok"]["fresh"] == "rag/answer"
    # The parent is unaffected.
    assert client.get("support/reply").render(VARS).messages == want


COLD_FORK = r"""
import os, sys, promptops
client = promptops.Client(prompts_dir=sys.argv[1])
pid = os.fork()  # before anything was rendered or counted in this process
if pid == 0:
    try:
        r = client.get("support/reply").render(
            user_name="Dana", company="Acme Tools", order_id="A-20931")
        print(promptops.count_tokens("fork child text", "o3"), r.input_tokens, flush=True)
    finally:
        os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_fork_before_first_use() -> None:
    # In a fresh interpreter: the child is the first to render and to load
    # the (lazily loaded) encodings.
    out = subprocess.run(
        [sys.executable, "-c", COLD_FORK, str(EXAMPLE_PROMPTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    count, input_tokens = map(int, out.stdout.split())
    assert count == promptops.count_tokens("fork child text", "o3")
    assert input_tokens == expected_input_tokens()


def expected_input_tokens() -> int:
    c = promptops.Client(prompts_dir=EXAMPLE_PROMPTS)
    return c.get("support/reply").render(VARS).input_tokens


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_forked_child_uploads_its_telemetry() -> None:
    """The telemetry exporter's thread does not exist in a forked child: the
    child restarts it (with sync), so what it records reaches the registry."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    uploads: List[Dict[str, Any]] = []

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # no snapshot: the client serves its files
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path == "/v1/telemetry":
                uploads.append(json.loads(body))
            self.send_response(202)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = promptops.Client(
            server=f"http://127.0.0.1:{server.server_address[1]}",
            api_key="sdk-key",
            project="demo",
            prompts_dir=EXAMPLE_PROMPTS,
            telemetry=True,
        )

        def child() -> Any:
            client.get("support/reply").render(VARS)
            client.close()  # a last export round
            return True

        out = _in_child(child)
        assert out["status"] == 0, out
        events = [e for u in uploads for e in u["events"]]
        assert any(
            e["kind"] == "render" and e["prompt"] == "support/reply" for e in events
        ), uploads
        client.close()
    finally:
        server.shutdown()
