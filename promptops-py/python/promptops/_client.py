"""The public client: the native client plus argument checks, fork safety
for live delivery and the asyncio entry points."""

from __future__ import annotations

import atexit
import os
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Collection,
    Mapping,
    Optional,
    Sequence,
    Set,
    Union,
)

from . import _lowlevel
from ._errors import ConfigError
from ._lowlevel import Completion, CompletionStream, Prompt
from ._types import (
    ApplyResult,
    CallOptions,
    Endpoint,
    Message,
    ModelPrice,
    OtlpOptions,
    TelemetryOptions,
)

if TYPE_CHECKING:
    # asyncio is imported where it is used: importing it costs more than the
    # rest of `import promptops` (cold start), and sync apps never need it.
    import asyncio

__all__ = ["Client", "AsyncCompletionStream"]

StrPath = Union[str, "os.PathLike[str]"]
Fallback = Union[str, Sequence[Message]]

# Every client that syncs from a registry or Redis, or exports telemetry
# (weakly: a client that is no longer used goes away as usual). A forked
# child restarts their threads; at exit they stop (a last export round).
_LIVE: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _restart_sync_in_child() -> None:
    """After ``fork()``: the parent's sync threads do not exist in the child,
    so every live client starts its sources again (a gunicorn or uvicorn
    worker keeps following the registry)."""
    first: Optional[BaseException] = None
    for client in list(_LIVE):
        try:
            client.start_sync()
        except Exception as e:  # the other clients still restart
            first = first or e
    if first is not None:
        raise first  # reported by Python (sys.unraisablehook); the fork goes on


def _close_all() -> None:
    """At interpreter exit: stop the sync threads before Python goes away."""
    for client in list(_LIVE):
        try:
            client.close()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_sync_in_child)
atexit.register(_close_all)


class Client(_lowlevel.Client):
    """Serves prompts from memory: a live registry (``server``) and/or Redis
    (``redis``), the last-known-good copy in ``cache_dir``, a snapshot
    ``bundle`` and/or a local ``prompts_dir``.

    Lookups never touch the network: ``get`` reads the in-memory store, and
    rendering runs in Rust with the GIL released.

    Live delivery: with ``server`` (the promptops registry, ``http://host:8700``,
    authenticated with ``api_key``) and/or ``redis`` (``redis://host:6379``,
    keys under ``redis_prefix``), the client loads the ``project``'s snapshot
    and then follows its changes in background threads. ``project`` is then
    required. ``startup_wait`` (seconds, default 0) is how long the
    constructor may wait for the first live data; with 0 it returns at once
    and serves whatever ``cache_dir``, ``bundle`` and ``prompts_dir`` hold
    until the registry answers. Until some data is loaded, ``get`` raises
    :class:`RegistryUnavailable` (or serves its ``fallback``).

    ``status`` is ``"initializing"``, ``"valid"``, ``"interrupted"`` (every
    live source is failing; the last-known-good data is served) or ``"off"``
    (no live source, or closed). A client without live sources is
    ``"valid"`` while prompt data is loaded and ``"off"`` when none is.
    ``status_detail`` adds the last error, the data age and the per-source
    status; :meth:`on_status` and :meth:`on_change` register listeners;
    :meth:`close` stops syncing. A forked child (``os.fork``, gunicorn or
    uvicorn workers) restarts syncing by itself.

    Routing: :meth:`route` picks the target (provider, model, variant,
    version) of a prompt's routing policy and renders the prompt for it;
    make the call with your own client, then :meth:`record` its outcome.
    With ``telemetry=True`` (or a dict of :class:`TelemetryOptions`), renders,
    decisions and calls are recorded, and :meth:`metrics_text` returns them
    in the Prometheus text format (OpenTelemetry GenAI metric names).

    Telemetry export: with telemetry on and a ``server``, a background thread
    uploads batches of events to the registry (``POST /v1/telemetry``) every
    ``telemetry_interval`` seconds (default 10), ``telemetry_max_batch``
    events per request (default 1000), and once more on :meth:`close`
    (waiting at most ``telemetry_flush_timeout`` seconds, default 5).
    ``telemetry_upload=False`` turns the upload off; ``telemetry_upload_url``
    uploads to another URL (a gateway; ``/v1/telemetry`` is appended), also
    without a ``server``. ``otlp`` (the collector's URL, or a dict of
    :class:`OtlpOptions`) exports metrics and spans over OTLP/HTTP JSON with
    the OpenTelemetry GenAI names. E-mail addresses and long digit runs are
    masked before anything leaves the process, unless
    ``telemetry={"mask_pii": False}``. :meth:`flush_telemetry` (or
    :meth:`aflush_telemetry`) exports now; :meth:`telemetry_stats` counts
    what was recorded and dropped. These options need telemetry on.

    Model catalogue: :meth:`models` lists the project's models as the
    registry publishes them with the snapshot (``promptops models set``);
    :meth:`estimate_cost` and :meth:`model_price` use their prices over the
    built-in table.

    Provider calls: :meth:`complete` renders a prompt, routes it, calls the
    chosen provider (OpenAI Chat Completions and compatible servers,
    Anthropic Messages) and fails over per the routing policy, returning a
    :class:`Completion` with usage, cost, latency, the target and every
    attempt; :meth:`stream` yields the text as it arrives; :meth:`acomplete`
    and :meth:`astream` are the asyncio versions. ``providers`` maps
    provider names to :class:`Endpoint` settings (URL, key); API keys come
    from the environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``) unless
    given there, and are never logged. ``call_options`` (:class:`CallOptions`)
    sets the default timeouts, streaming and failover of every call.

    ``prices`` (a list of :class:`ModelPrice`) overrides the built-in price
    table for cost estimates and ``cheapest`` routing; a registry's model
    catalogue, when it has prices, overrides both.

    With ``strict=True`` a prompt file or bundle entry that cannot be loaded
    fails the constructor (``ParseError``, ``TemplateError``, ...); by
    default it is reported in ``diagnostics`` and the rest loads.
    """

    def __new__(
        cls,
        server: Optional[str] = None,
        api_key: Optional[str] = None,
        project: Optional[str] = None,
        redis: Optional[str] = None,
        cache_dir: Optional[StrPath] = None,
        bundle: Optional[StrPath] = None,
        prompts_dir: Optional[StrPath] = None,
        startup_wait: float = 0,
        strict: bool = False,
        redis_prefix: str = "promptops",
        telemetry: Union[bool, TelemetryOptions, None] = None,
        providers: Optional[Mapping[str, Endpoint]] = None,
        call_options: Optional[CallOptions] = None,
        telemetry_upload: Optional[bool] = None,
        telemetry_upload_url: Optional[str] = None,
        telemetry_interval: Optional[float] = None,
        telemetry_max_batch: Optional[int] = None,
        telemetry_flush_timeout: Optional[float] = None,
        otlp: Union[str, OtlpOptions, None] = None,
        prices: Optional[Sequence[ModelPrice]] = None,
    ) -> Client:
        if isinstance(startup_wait, bool) or not isinstance(startup_wait, (int, float)):
            raise TypeError(f"startup_wait must be a number, not {type(startup_wait).__name__}")
        if not startup_wait >= 0:
            raise ConfigError(f"startup_wait must be >= 0 seconds, got {startup_wait!r}")
        self = super().__new__(
            cls,
            project=project,
            bundle=bundle,
            prompts_dir=prompts_dir,
            strict=strict,
            server=server,
            api_key=api_key,
            redis=redis,
            redis_prefix=redis_prefix,
            cache_dir=cache_dir,
            startup_wait=float(startup_wait),
            telemetry=telemetry,
            providers=providers,
            call_options=call_options,
            telemetry_upload=telemetry_upload,
            telemetry_upload_url=telemetry_upload_url,
            telemetry_interval=telemetry_interval,
            telemetry_max_batch=telemetry_max_batch,
            telemetry_flush_timeout=telemetry_flush_timeout,
            otlp=otlp,
            prices=prices,
        )
        if any(x is not None for x in (server, redis, telemetry_upload_url, otlp)):
            _LIVE.add(self)
        return self

    async def aget(
        self,
        name: str,
        label: str = "production",
        version: Optional[int] = None,
        fallback: Optional[Fallback] = None,
    ) -> Prompt:
        """``get`` for asyncio code. A lookup reads memory only and never
        blocks on I/O, so it runs directly in the event loop."""
        return self.get(name, label, version, fallback)

    async def aflush_telemetry(self, timeout: float = 5.0) -> bool:
        """:meth:`flush_telemetry` for asyncio: the wait runs in the loop's
        default executor, never in the event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.flush_telemetry, timeout)

    async def await_ready(self, timeout: float) -> bool:
        """:meth:`wait_ready` for asyncio: create the client with
        ``startup_wait=0`` (the constructor then never waits for the
        network) and ``await client.await_ready(5)`` instead; the wait runs
        in the loop's default executor, never in the event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.wait_ready, timeout)

    def apply_snapshot(self, snapshot: Union[str, bytes, Mapping[str, Any]]) -> ApplyResult:
        """Push a snapshot (JSON text, bytes, or an already parsed dict) into
        the store, as live sources do; listeners registered with
        :meth:`on_change` are called when it changes what a label serves."""
        if isinstance(snapshot, Mapping):
            import json

            snapshot = json.dumps(snapshot)
        return super().apply_snapshot(snapshot)

    async def aroute(
        self,
        name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        **kwargs: Any,
    ) -> _lowlevel.Decision:
        """``route`` for asyncio code (routing reads memory only)."""
        return self.route(
            name, vars, route_key=route_key, label=label, attributes=attributes, **kwargs
        )

    def complete(
        self,
        prompt_name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        stream: Optional[bool] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        on_chunk: Optional[Callable[[str], object]] = None,
        **kwargs: Any,
    ) -> Completion:
        """Render ``prompt_name`` with ``vars`` and/or keyword arguments,
        route it (sticky by ``route_key``), call the chosen provider and fail
        over on connection errors, timeouts, 429 (honouring ``Retry-After``)
        and 5xx. Blocks with the GIL released. ``on_chunk(text)`` is called
        with each streamed delta (and implies ``stream=True``); an exception
        it raises cancels the call and propagates. Raises
        :class:`ProviderError` (``.status``, ``.attempts``) when every
        attempt failed, :class:`NoRoute` when no target could be tried."""
        if on_chunk is None:
            return super().complete(
                prompt_name,
                vars,
                route_key=route_key,
                label=label,
                attributes=attributes,
                stream=stream,
                timeout=timeout,
                ttft_timeout=ttft_timeout,
                max_attempts=max_attempts,
                failover_on=failover_on,
                **kwargs,
            )
        with self.stream(
            prompt_name,
            vars,
            route_key=route_key,
            label=label,
            attributes=attributes,
            timeout=timeout,
            ttft_timeout=ttft_timeout,
            max_attempts=max_attempts,
            failover_on=failover_on,
            **kwargs,
        ) as s:
            for text in s:
                on_chunk(text)
            return s.completion()

    async def acomplete(
        self,
        prompt_name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        stream: Optional[bool] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        on_chunk: Optional[Callable[[str], object]] = None,
        **kwargs: Any,
    ) -> Completion:
        """:meth:`complete` for asyncio: the call runs on the module's own
        runtime and the event loop is never blocked. Cancelling the awaiting
        task cancels the HTTP request. ``on_chunk(text)`` runs in the event
        loop for each streamed delta."""
        import asyncio

        if on_chunk is not None:
            async with self.astream(
                prompt_name,
                vars,
                route_key=route_key,
                label=label,
                attributes=attributes,
                timeout=timeout,
                ttft_timeout=ttft_timeout,
                max_attempts=max_attempts,
                failover_on=failover_on,
                **kwargs,
            ) as s:
                async for text in s:
                    on_chunk(text)
                return await s.completion()
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Completion]" = loop.create_future()
        call = self.spawn_complete(
            prompt_name,
            vars,
            _settler(loop, fut),
            None,
            route_key=route_key,
            label=label,
            attributes=attributes,
            stream=stream,
            timeout=timeout,
            ttft_timeout=ttft_timeout,
            max_attempts=max_attempts,
            failover_on=failover_on,
            **kwargs,
        )
        try:
            return await fut
        except asyncio.CancelledError:
            call.cancel()
            raise

    def astream(
        self,
        prompt_name: str,
        vars: Optional[Mapping[str, Any]] = None,
        /,
        *,
        route_key: Optional[str] = None,
        label: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        ttft_timeout: Optional[float] = None,
        max_attempts: Optional[int] = None,
        failover_on: Optional[Collection[str]] = None,
        **kwargs: Any,
    ) -> AsyncCompletionStream:
        """:meth:`stream` for asyncio (call it from a coroutine): ``async
        for text in client.astream(...)``, then ``await s.completion()``.
        Use it as ``async with`` to cancel the call if the block exits
        early."""
        import asyncio

        loop = asyncio.get_running_loop()
        s = AsyncCompletionStream(loop)
        s._call = self.spawn_complete(
            prompt_name,
            vars,
            s._on_done,
            s._on_chunk,
            route_key=route_key,
            label=label,
            attributes=attributes,
            timeout=timeout,
            ttft_timeout=ttft_timeout,
            max_attempts=max_attempts,
            failover_on=failover_on,
            **kwargs,
        )
        return s

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settler(
    loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[Completion]"
) -> Callable[[Optional[Completion], Optional[BaseException]], None]:
    """An ``on_done`` for ``spawn_complete`` that settles ``fut`` in its
    event loop (it is called from a runtime thread)."""

    def settle(result: Optional[Completion], error: Optional[BaseException]) -> None:
        if fut.done():  # cancelled meanwhile
            return
        if error is not None:
            fut.set_exception(error)
        elif result is not None:
            fut.set_result(result)

    def on_done(result: Optional[Completion], error: Optional[BaseException]) -> None:
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting
            pass

    return on_done


class AsyncCompletionStream:
    """A streaming call for asyncio (``Client.astream``): ``async for`` gives
    the text deltas as they arrive; :meth:`completion` waits for the end and
    returns the :class:`Completion`. A stream that fails before its first
    token fails over to the next target; after it, the error is raised by
    the iteration. :meth:`aclose` (or leaving ``async with``) cancels the
    call."""

    _call: Optional[_lowlevel.CallHandle]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        self._loop = loop
        self._queue: "asyncio.Queue[str]" = asyncio.Queue()
        self._end: "asyncio.Future[Completion]" = loop.create_future()
        self._reported = False
        self._call = None

    # Called from a runtime thread.
    def _on_chunk(self, text: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, text)
        except RuntimeError:
            pass

    def _on_done(self, result: Optional[Completion], error: Optional[BaseException]) -> None:
        _settler(self._loop, self._end)(result, error)

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def __anext__(self) -> str:
        import asyncio

        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._reported:
            raise StopAsyncIteration
        getter = asyncio.ensure_future(self._queue.get())
        waiters: "Set[asyncio.Future[Any]]" = {getter, self._end}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            getter.cancel()
            raise
        if getter.done():
            return getter.result()
        getter.cancel()
        # Chunks are queued before the end is settled (both go through
        # call_soon_threadsafe, in order): none is left behind.
        if not self._queue.empty():
            return self._queue.get_nowait()
        self._reported = True
        if self._end.cancelled():
            raise StopAsyncIteration
        error = self._end.exception()
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def completion(self) -> Completion:
        """Wait for the end of the call (remaining deltas are dropped) and
        return its :class:`Completion`, or raise its error."""
        import asyncio

        self._reported = True
        return await asyncio.shield(self._end)

    async def aclose(self) -> None:
        """Cancel the call if it is still running (idempotent)."""
        if self._call is not None:
            self._call.cancel()
        if not self._end.done():
            self._end.cancel()
        self._reported = True

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return "<promptops.AsyncCompletionStream>"
