"""Routing helpers that take Python values (the native functions take JSON)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

from . import _lowlevel

__all__ = ["validate_policy"]


def validate_policy(
    policy: Union[str, bytes, Mapping[str, Any], Any], prompt: Optional[str] = None
) -> Dict[str, Any]:
    """Check a routing policy as the registry does at publish (structure,
    weights, every model in the built-in price table) and return it
    normalised. Raises :class:`PolicyError` (``.field`` names the offending
    part) or :class:`UnknownModel`. ``prompt`` is the prompt it belongs to
    (the default policy id). ``policy`` is a dict (any JSON value) or JSON
    text."""
    if isinstance(policy, bytes):
        text = policy.decode("utf-8")
    elif isinstance(policy, str):
        text = policy
    else:
        # Any JSON value: the core reports a non-object as a PolicyError.
        import json

        text = json.dumps(policy)
    return _lowlevel.validate_policy(text, prompt)
