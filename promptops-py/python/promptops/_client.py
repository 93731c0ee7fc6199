"""The public client: the native client plus argument checks, fork safety
for live delivery and the asyncio entry point."""

from __future__ import annotations

import atexit
import json
import os
import weakref
from typing import Any, Mapping, Optional, Sequence, Union

from . import _lowlevel
from ._errors import ConfigError
from ._lowlevel import Prompt
from ._types import ApplyResult, Message, TelemetryOptions

__all__ = ["Client"]

StrPath = Union[str, "os.PathLike[str]"]
Fallback = Union[str, Sequence[Message]]

# Every client that syncs from a registry or Redis (weakly: a client that is
# no longer used goes away as usual).
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
        )
        if server is not None or redis is not None:
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

    def apply_snapshot(self, snapshot: Union[str, bytes, Mapping[str, Any]]) -> ApplyResult:
        """Push a snapshot (JSON text, bytes, or an already parsed dict) into
        the store, as live sources do; listeners registered with
        :meth:`on_change` are called when it changes what a label serves."""
        if isinstance(snapshot, Mapping):
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

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
