"""Provider calls from Python: `Client.complete` / `stream` / `acomplete` /
`astream` against the repository's mock provider (OpenAI and Anthropic
protocols, streaming and not): failover on 5xx, 429 with Retry-After,
connection refused and streams that break before their first token; errors
after the first token surface; API keys from the environment or the caller
are sent but never shown; calls from threads, asyncio and a forked child."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest

import promptops
from mock_provider import MockProvider, malformed, ok, reset, stall, status

MINI = "gpt-4o-mini"
HAIKU = "claude-haiku-4-5"
VARS = {"company": "Acme", "order": "A-1"}


def target(model: str) -> Dict[str, str]:
    provider = "anthropic" if model == HAIKU else "openai"
    return {"provider": provider, "model": model}


def failover(first: str, second: str) -> Dict[str, Any]:
    return {"strategy": "failover", "targets": [target(first), target(second)]}


def snapshot(policy: Any) -> Dict[str, Any]:
    return {
        "format": "promptops.snapshot/1",
        "project": "p",
        "revision": 1,
        "hash": "",
        "prompts": [
            {
                "name": "support/reply",
                "versions": [
                    {
                        "version": 1,
                        "type": "chat",
                        "messages": [
                            {"role": "system", "content": "You are a support agent for {{ company }}."},
                            {"role": "user", "content": "Where is order {{ order }}?"},
                        ],
                        "config": {"provider": "openai", "model": MINI, "max_tokens": 100},
                    }
                ],
                "labels": {"production": 1},
                "policy": policy,
            },
            {
                "name": "support/basic",
                "versions": [
                    {
                        "version": 1,
                        "type": "text",
                        "template": "Order {{ order }} status?",
                        "config": {"provider": "anthropic", "model": HAIKU},
                    }
                ],
                "labels": {"production": 1},
            },
        ],
    }


@pytest.fixture
def mock() -> Iterator[MockProvider]:
    m = MockProvider()
    try:
        yield m
    finally:
        m.close()


def make_client(mock: MockProvider, policy: Any = None, **kwargs: Any) -> promptops.Client:
    c = promptops.Client(
        project="p",
        providers={
            "openai": {"base_url": mock.url, "api_key": "sk-test-openai"},
            "anthropic": {"base_url": mock.url, "api_key": "sk-test-anthropic"},
        },
        **kwargs,
    )
    out = c.apply_snapshot(snapshot(policy if policy is not None else failover(MINI, HAIKU)))
    assert out["applied"], out
    return c


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


# -- complete ---------------------------------------------------------------


def test_complete_openai_with_usage_cost_and_attempts(mock: MockProvider) -> None:
    mock.script(MINI, ok("Your order ships today"))
    c = make_client(mock)
    out = c.complete("support/reply", VARS, route_key="user-1")
    assert isinstance(out, promptops.Completion)
    assert out.text == "Your order ships today"
    assert str(out) == out.text
    assert out.target == {"id": "openai/gpt-4o-mini", "provider": "openai", "model": MINI,
                          "variant": None, "version": None}
    # The mock reports words as tokens: 11 words in, 4 out.
    assert out.usage == {"input_tokens": 11, "output_tokens": 4, "cached_input_tokens": 0,
                         "reported": True}
    assert (out.input_tokens, out.output_tokens) == (11, 4)
    assert out.cost_usd == promptops.estimate_cost(MINI, 11, 4)
    assert out.latency_ms > 0
    assert out.ttft_ms is None
    assert out.finish_reason == "stop"
    assert out.response_model == MINI
    assert (out.prompt, out.version, out.variant) == ("support/reply", 1, None)
    assert out.strategy == "failover" and out.policy_id
    assert out.reason
    assert len(out.attempts) == 1
    a = out.attempts[0]
    assert a["ok"] is True and a["target"] == "openai/gpt-4o-mini" and a["status"] is None
    # What reached the provider: the rendered messages and the config.
    req = mock.received()[-1]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["messages"] == [
        {"role": "system", "content": "You are a support agent for Acme."},
        {"role": "user", "content": "Where is order A-1?"},
    ]
    assert req["body"]["max_tokens"] == 100
    assert req["authorization"] == "Bearer sk-test-openai"
    assert "Completion support/reply v1" in repr(out)


def test_complete_anthropic_text_prompt_with_keyword_vars(mock: MockProvider) -> None:
    c = make_client(mock)
    out = c.complete("support/basic", order="B-2")
    assert out.text == f"Hello from {HAIKU}"
    req = mock.received()[-1]
    assert req["path"] == "/v1/messages"
    assert req["api_key"] == "sk-test-anthropic"
    assert req["body"]["messages"] == [{"role": "user", "content": "Order B-2 status?"}]


def test_fails_over_on_5xx_then_429_and_honours_retry_after(mock: MockProvider) -> None:
    mock.script(MINI, status(503), status(429, retry_after="30"))
    c = make_client(mock)
    out = c.complete("support/reply", VARS)
    assert out.target["model"] == HAIKU
    assert [a["status"] for a in out.attempts] == [503, None]
    assert out.attempts[0]["error_type"] == "server_error"
    assert out.attempts[1]["ok"]
    out = c.complete("support/reply", VARS)
    assert out.target["model"] == HAIKU
    assert out.attempts[0]["status"] == 429
    assert out.attempts[0]["error_type"] == "rate_limited"
    assert out.attempts[0]["retry_after_ms"] == 30_000
    # Within Retry-After the rate-limited target is not even tried.
    before = mock.count(MINI)
    out = c.complete("support/reply", VARS)
    assert out.target["model"] == HAIKU
    assert len(out.attempts) == 1
    assert mock.count(MINI) == before


def test_fails_over_on_connection_refused(mock: MockProvider) -> None:
    c = promptops.Client(
        project="p",
        providers={
            "openai": {"base_url": refused_url(), "api_key": "k"},
            "anthropic": {"base_url": mock.url, "api_key": "k"},
        },
    )
    c.apply_snapshot(snapshot(failover(MINI, HAIKU)))
    out = c.complete("support/reply", VARS)
    assert out.target["model"] == HAIKU
    assert out.attempts[0]["error_type"] == "connect"


def test_every_target_failing_raises_provider_error(mock: MockProvider) -> None:
    mock.script(MINI, status(500))
    mock.script(HAIKU, status(502))
    c = make_client(mock)
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS)
    e = ei.value
    assert e.kind == "PROVIDER_ERROR"
    assert e.status == 502
    assert e.attempts == 2
    assert e.provider == "anthropic" and e.model == HAIKU
    assert e.error_type == "server_error"
    assert isinstance(e, promptops.PromptOpsError)


def test_client_errors_are_not_failed_over_unless_asked(mock: MockProvider) -> None:
    mock.script(MINI, status(400), status(400))
    c = make_client(mock)
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS)
    assert ei.value.status == 400 and ei.value.attempts == 1
    out = c.complete("support/reply", VARS, failover_on=["client_error"])
    assert out.target["model"] == HAIKU


def test_max_attempts_and_timeouts(mock: MockProvider) -> None:
    mock.script(MINI, status(500))
    c = make_client(mock)
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS, max_attempts=1)
    assert ei.value.attempts == 1
    # A total timeout fails over.
    mock.script(MINI, ok("slow", delay_ms=2000))
    t0 = time.monotonic()
    out = c.complete("support/reply", VARS, timeout=0.2)
    assert out.target["model"] == HAIKU
    assert out.attempts[0]["error_type"] == "timeout"
    assert time.monotonic() - t0 < 1.5


def test_bad_call_arguments() -> None:
    c = promptops.Client(project="p")
    c.apply_snapshot(snapshot(failover(MINI, HAIKU)))
    with pytest.raises(promptops.ConfigError, match="timeout"):
        c.complete("support/reply", VARS, timeout=-1)
    with pytest.raises(promptops.ConfigError, match="failure class"):
        c.complete("support/reply", VARS, failover_on=["teapot"])
    with pytest.raises(TypeError, match="not a str"):
        c.complete("support/reply", VARS, failover_on="timeout")
    with pytest.raises(promptops.PromptNotFound):
        c.complete("nope", VARS)
    with pytest.raises(promptops.VariableError):
        c.complete("support/reply", {"company": "Acme"})
    with pytest.raises(promptops.ConfigError, match="base_url"):
        promptops.Client(providers={"vllm": {"api_key": "k"}})
    with pytest.raises(promptops.ConfigError, match="unknown provider setting"):
        promptops.Client(providers={"openai": {"url": "http://x"}})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(promptops.ConfigError, match="unknown call option"):
        promptops.Client(call_options={"retries": 3})  # type: ignore[arg-type]


def test_call_options_are_the_client_defaults(mock: MockProvider) -> None:
    c = make_client(mock, call_options={"stream": True, "max_attempts": 1})
    out = c.complete("support/reply", VARS)
    assert out.ttft_ms is not None  # streamed
    assert mock.received()[-1]["stream"] is True
    out = c.complete("support/reply", VARS, stream=False)
    assert out.ttft_ms is None
    assert mock.received()[-1]["stream"] is False
    mock.script(MINI, status(500))
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS)
    assert ei.value.attempts == 1


# -- keys -------------------------------------------------------------------


def test_api_keys_from_env_or_caller_sent_never_shown(
    mock: MockProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTOPS_PY_TEST_KEY", "sk-from-env-9f8e")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-7a6b")
    c = promptops.Client(
        project="p",
        providers={
            "local": {"base_url": mock.url, "api_key_env": "PROMPTOPS_PY_TEST_KEY"},
            "openai": {"base_url": mock.url},  # key from OPENAI_API_KEY
            "anthropic": {"base_url": mock.url, "api_key": "sk-secret-in-code",
                          "headers": {"x-org": "org-secret"}},
        },
    )
    policy = {
        "strategy": "failover",
        "targets": [
            {"provider": "local", "model": "llama-3.3-70b-instruct"},
            {"provider": "openai", "model": MINI},
            {"provider": "anthropic", "model": HAIKU},
        ],
    }
    c.apply_snapshot(snapshot(policy))
    mock.script("llama-3.3-70b-instruct", status(500))
    mock.script(MINI, status(503))
    out = c.complete("support/reply", VARS)
    assert out.target["model"] == HAIKU
    rec = mock.received()
    assert rec[0]["authorization"] == "Bearer sk-from-env-9f8e"
    assert rec[1]["authorization"] == "Bearer sk-openai-env-7a6b"
    assert rec[2]["api_key"] == "sk-secret-in-code"
    shown = [repr(c), str(c), repr(out), str(out), repr(out.attempts), repr(out.target)]
    mock.script("llama-3.3-70b-instruct", status(500))
    mock.script(MINI, status(401))
    mock.script(HAIKU, status(401))
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS)
    shown += [str(ei.value), repr(ei.value), repr(ei.value.details)]
    for s in shown:
        for secret in ("sk-from-env", "sk-openai-env", "sk-secret", "org-secret"):
            assert secret not in s, s


# -- streaming --------------------------------------------------------------


def test_stream_yields_deltas_then_the_completion(mock: MockProvider) -> None:
    mock.script(MINI, ok("one two three four", chunk_delay_ms=5))
    c = make_client(mock)
    with c.stream("support/reply", VARS, route_key="u") as s:
        assert isinstance(s, promptops.CompletionStream)
        chunks = list(s)
        done = s.completion()
    assert chunks == ["one", " two", " three", " four"]
    assert done.text == "one two three four"
    assert done.ttft_ms is not None and done.ttft_ms <= done.latency_ms
    assert done.usage["output_tokens"] == 4
    assert mock.received()[-1]["stream"] is True
    # Iterating a finished stream stops at once.
    assert list(s) == []


def test_stream_anthropic_and_complete_on_chunk(mock: MockProvider) -> None:
    c = make_client(mock, policy=failover(HAIKU, MINI))
    got: List[str] = []
    out = c.complete("support/reply", VARS, on_chunk=got.append)
    assert out.target["model"] == HAIKU
    assert "".join(got) == out.text == f"Hello from {HAIKU}"
    assert len(got) == 3
    assert mock.received()[-1]["path"] == "/v1/messages"


def test_stream_failing_before_first_token_fails_over(mock: MockProvider) -> None:
    mock.script(MINI, reset(0), malformed(0))
    c = make_client(mock)
    for err in ("stream_error", "malformed_response"):
        s = c.stream("support/reply", VARS)
        text = "".join(s)
        done = s.completion()
        assert text == done.text == f"Hello from {HAIKU}"
        assert done.target["model"] == HAIKU
        assert done.attempts[0]["error_type"] == err


def test_stream_ttft_timeout_fails_over(mock: MockProvider) -> None:
    mock.script(MINI, stall(1500))
    c = make_client(mock)
    t0 = time.monotonic()
    out = c.complete("support/reply", VARS, stream=True, ttft_timeout=0.15)
    assert out.target["model"] == HAIKU
    assert out.attempts[0]["error_type"] == "ttft_timeout"
    assert time.monotonic() - t0 < 1.2


def test_stream_error_after_first_token_surfaces(mock: MockProvider) -> None:
    mock.script(MINI, reset(2))
    c = make_client(mock)
    haiku_calls = mock.count(HAIKU)
    s = c.stream("support/reply", VARS)
    got: List[str] = []
    with pytest.raises(promptops.ProviderError) as ei:
        for t in s:
            got.append(t)
    assert got == [" tok0", " tok1"]
    assert ei.value.error_type == "stream_error" and ei.value.attempts == 1
    assert mock.count(HAIKU) == haiku_calls  # never failed over
    with pytest.raises(promptops.ProviderError):
        s.completion()
    assert list(s) == []  # raised once, then stopped
    # on_chunk: the same error from complete().
    mock.script(MINI, malformed(3))
    seen: List[str] = []
    with pytest.raises(promptops.ProviderError) as ei:
        c.complete("support/reply", VARS, on_chunk=seen.append)
    assert ei.value.error_type == "malformed_response"
    assert len(seen) == 3


def test_on_chunk_exception_cancels_the_call(mock: MockProvider) -> None:
    mock.script(MINI, ok("a b c d e f g h", chunk_delay_ms=200))
    c = make_client(mock)

    def boom(_: str) -> None:
        raise KeyError("stop here")

    t0 = time.monotonic()
    with pytest.raises(KeyError, match="stop here"):
        c.complete("support/reply", VARS, on_chunk=boom)
    assert time.monotonic() - t0 < 1.0  # not waiting for the whole answer


def test_closing_a_stream_cancels_it(mock: MockProvider) -> None:
    mock.script(MINI, ok("a b c d e f g h i j", chunk_delay_ms=300))
    c = make_client(mock)
    t0 = time.monotonic()
    with c.stream("support/reply", VARS) as s:
        first = next(s)
    assert first == "a"
    assert list(s) == []
    with pytest.raises(promptops.PromptOpsError):
        s.completion()
    assert time.monotonic() - t0 < 1.5


# -- threads, asyncio, fork -------------------------------------------------


def test_complete_from_many_threads(mock: MockProvider) -> None:
    mock.set_default(MINI, ok("pong", delay_ms=150))
    c = make_client(mock)
    results: List[str] = []
    errors: List[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(c.complete("support/reply", {**VARS, "order": f"T-{i}"}).text)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == ["pong"] * 16
    # 16 calls of 150 ms ran at once (the GIL is released while they wait);
    # one after the other they would take 2.4 s.
    assert time.monotonic() - t0 < 16 * 0.15 / 2


def test_acomplete_concurrently_under_asyncio(mock: MockProvider) -> None:
    mock.set_default(MINI, ok("pong", delay_ms=100))
    c = make_client(mock)

    async def main() -> List[promptops.Completion]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        outs = await asyncio.gather(
            *(c.acomplete("support/reply", {**VARS, "order": f"A-{i}"}) for i in range(20))
        )
        t.cancel()
        assert ticks >= 5, "the event loop kept running during the calls"
        return list(outs)

    t0 = time.monotonic()
    outs = asyncio.run(main())
    assert [o.text for o in outs] == ["pong"] * 20
    assert time.monotonic() - t0 < 20 * 0.1


def test_acomplete_errors_and_cancellation(mock: MockProvider) -> None:
    mock.script(MINI, status(500))
    mock.script(HAIKU, status(500))
    c = make_client(mock)

    async def main() -> None:
        with pytest.raises(promptops.ProviderError) as ei:
            await c.acomplete("support/reply", VARS)
        assert ei.value.attempts == 2
        with pytest.raises(promptops.VariableError):
            await c.acomplete("support/reply", {})
        # Cancelling the awaiting task cancels the call.
        mock.script(MINI, ok("late", delay_ms=3000))
        task = asyncio.ensure_future(c.acomplete("support/reply", VARS))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # wait_for timeouts work the same way.
        mock.script(MINI, ok("late", delay_ms=3000))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.acomplete("support/reply", VARS), 0.2)

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 2.5


def test_astream_and_acomplete_on_chunk(mock: MockProvider) -> None:
    mock.script(MINI, ok("x y z", chunk_delay_ms=10), reset(0), reset(1))
    c = make_client(mock)

    async def main() -> None:
        async with c.astream("support/reply", VARS) as s:
            assert isinstance(s, promptops.AsyncCompletionStream)
            got = [t async for t in s]
            done = await s.completion()
        assert got == ["x", " y", " z"]
        assert done.text == "x y z" and done.ttft_ms is not None
        # Broken before the first token: fails over.
        got2: List[str] = []
        out = await c.acomplete("support/reply", VARS, on_chunk=got2.append)
        assert out.target["model"] == HAIKU
        assert "".join(got2) == out.text
        # Broken after it: raised by the iteration.
        s = c.astream("support/reply", VARS)
        got3 = []
        with pytest.raises(promptops.ProviderError):
            async for t in s:
                got3.append(t)
        assert got3 == [" tok0"]

    asyncio.run(main())


def test_complete_in_a_forked_child(mock: MockProvider) -> None:
    """The module's runtime and the client's HTTP connections belong to the
    parent; a forked child (gunicorn/uvicorn workers) makes its own."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    mock.set_default(MINI, ok("from parent or child"))
    c = make_client(mock)
    assert c.complete("support/reply", VARS).text == "from parent or child"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            out = c.complete("support/reply", VARS, timeout=5)

            async def amain() -> str:
                return (await c.acomplete("support/reply", VARS, timeout=5)).text

            text = asyncio.run(amain())
            os.write(w, f"{out.text}|{text}".encode())
            code = 0
        except BaseException as e:
            os.write(w, f"error: {e!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, got
    assert got == "from parent or child|from parent or child"
    # The parent still works.
    assert c.complete("support/reply", VARS).text == "from parent or child"


def test_complete_in_a_subprocess_interpreter_exit(mock: MockProvider) -> None:
    """A call in flight at interpreter exit does not hang or crash it."""
    mock.set_default(MINI, ok("never read", delay_ms=5000))
    code = f"""
import asyncio, promptops, json, sys
c = promptops.Client(project="p", providers={{"openai": {{"base_url": {mock.url!r}, "api_key": "k"}},
    "anthropic": {{"base_url": {mock.url!r}, "api_key": "k"}}}})
c.apply_snapshot({snapshot(failover(MINI, HAIKU))!r})
s = c.stream("support/reply", {VARS!r})
async def main():
    asyncio.ensure_future(c.acomplete("support/reply", {VARS!r}))
    await asyncio.sleep(0.1)
asyncio.run(main())
print("exiting")
"""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "exiting"
    assert time.monotonic() - t0 < 4.5
