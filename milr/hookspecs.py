"""Hook specifications: the whole plugin API. Hooks only ever gain arguments, never get renamed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("milr")
hookimpl = pluggy.HookimplMarker("milr")


@hookspec
def register_critics(register: Callable[[type[Any]], None]) -> None:
    """Register critic classes (subclasses of `milr.Critic`) by calling `register(cls)`."""


@hookspec
def register_generators(register: Callable[[type[Any]], None]) -> None:
    """Register generator adapters (classes implementing `milr.Generator`) with `register(cls)`."""
