"""The public client: the native client plus the parameters of live delivery
and the asyncio entry point."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence, Union

from . import _lowlevel
from ._errors import ConfigError
from ._lowlevel import Prompt
from ._types import ApplyResult, Message

__all__ = ["Client"]

StrPath = Union[str, "os.PathLike[str]"]
Fallback = Union[str, Sequence[Message]]


class Client(_lowlevel.Client):
    """Serves prompts from a local prompt directory and/or a snapshot bundle.

    Lookups never touch the network: ``get`` reads the in-memory store, and
    rendering runs in Rust with the GIL released.

    ``server``, ``api_key``, ``redis``, ``cache_dir`` and ``startup_wait``
    belong to live delivery (syncing from the promptops registry), which is
    not available in this build yet: ``server`` or ``redis`` raise
    :class:`ConfigError`; the other three are accepted and have no effect.

    ``status`` is ``"valid"`` while prompt data is loaded and ``"off"`` when
    none is (a client built with neither ``bundle`` nor ``prompts_dir``, until
    :meth:`apply_snapshot` pushes some).

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
    ) -> Client:
        if server is not None or redis is not None:
            which = "server" if server is not None else "redis"
            raise ConfigError(
                f"live delivery (`{which}=`) is not available in this build of "
                "promptops yet; load prompts with `prompts_dir=` or `bundle=`"
            )
        if isinstance(startup_wait, bool) or not isinstance(startup_wait, (int, float)):
            raise TypeError(f"startup_wait must be a number, not {type(startup_wait).__name__}")
        if not startup_wait >= 0:
            raise ConfigError(f"startup_wait must be >= 0 seconds, got {startup_wait!r}")
        del api_key, cache_dir  # live delivery only (see the class doc)
        return super().__new__(
            cls, project=project, bundle=bundle, prompts_dir=prompts_dir, strict=strict
        )

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
