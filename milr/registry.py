"""The registry of critics and generators, filled through the plugin hooks with provenance."""

from __future__ import annotations

import difflib
import threading
import warnings
from dataclasses import dataclass
from typing import Any

from milr import plugins
from milr.critic import NAME_RE, Critic
from milr.errors import DuplicateNameError, MilrUserError, UnknownCriticError
from milr.plugins import PluginInfo, PluginManager, get_plugin_manager


@dataclass(frozen=True)
class Entry:
    """A registered class and where it came from."""

    name: str
    cls: type[Any]
    plugin: str
    distribution: str
    version: str
    builtin: bool

    @property
    def source(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


class Registry:
    """Critics and generators by name. Build with `get_registry()`; plugins load on first access."""

    def __init__(self) -> None:
        self.critics: dict[str, Entry] = {}
        self.generators: dict[str, Entry] = {}
        #: The plugin manager this registry was filled from (a new one means reload).
        self.manager: PluginManager | None = None

    def _make_register(self, table: dict[str, Entry], kind: str):
        def factory(info: PluginInfo):
            def register(cls: type[Any]) -> None:
                name = getattr(cls, "name", "")
                if not isinstance(name, str) or not NAME_RE.match(name):
                    raise ValueError(
                        f"{kind} class {cls.__qualname__} has invalid name {name!r}; "
                        "names are lowercase [a-z0-9_-]+"
                    )
                if kind == "critic" and not (isinstance(cls, type) and issubclass(cls, Critic)):
                    raise TypeError(f"{cls!r} is not a subclass of milr.Critic")
                if name in table:
                    other = table[name]
                    raise DuplicateNameError(
                        f"{kind} name {name!r} is registered twice: by {other.source} "
                        f"and by {info.name} ({info.distribution} {info.version}); "
                        f"block one with MILR_DISABLE_PLUGINS={info.name} or "
                        f"MILR_DISABLE_PLUGINS={other.plugin}"
                    )
                table[name] = Entry(
                    name, cls, info.name, info.distribution, info.version, info.builtin
                )
                getattr(info, f"{kind}s").append(name)

            return register

        return factory

    def load(self) -> None:
        manager = get_plugin_manager()
        self.manager = manager
        manager.call_register_hook("register_critics", self._make_register(self.critics, "critic"))
        manager.call_register_hook(
            "register_generators", self._make_register(self.generators, "generator")
        )

    def critic_entry(self, name: str) -> Entry:
        try:
            return self.critics[name]
        except KeyError:
            known = ", ".join(sorted(self.critics)) or "(none)"
            close = difflib.get_close_matches(name, list(self.critics), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownCriticError(
                f"unknown critic {name!r}; {hint}known critics: {known} (see `milr critics`)"
            ) from None

    def create_critic(self, name: str, **params: Any) -> Critic:
        """Instantiate a registered critic; bad parameters become a user error naming them."""
        entry = self.critic_entry(name)
        try:
            critic = entry.cls(**params)
        except TypeError as exc:
            raise MilrUserError(f"bad parameters for critic {name!r}: {exc}") from exc
        if not entry.cls.declares_params():
            warnings.warn(
                f"critic {name!r} ({entry.cls.__module__}.{entry.cls.__qualname__}, from "
                f"{entry.source}) takes its parameters through its own __init__; declare them "
                "as a nested `class Params(milr.CriticParams)` instead (see docs/plugins.md). "
                "Undeclared parameters and `_config` will stop working in the next release.",
                DeprecationWarning,
                stacklevel=2,
            )
            if not hasattr(critic, "_config"):
                critic._config = dict(params)  # type: ignore[attr-defined]
        return critic

    def generator_entry(self, name: str) -> Entry:
        try:
            return self.generators[name]
        except KeyError:
            known = ", ".join(sorted(self.generators)) or "(none)"
            raise MilrUserError(f"unknown generator {name!r}; known generators: {known}") from None


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (plugins load on the first call, and again after a reset)."""
    global _registry
    with _lock:
        if _registry is None or _registry.manager is not plugins.current_manager():
            reg = Registry()
            _registry = reg
            try:
                reg.load()
            except BaseException:
                _registry = None
                raise
        return _registry


def reset() -> None:
    """Forget the registry and the discovered plugins (tests; after changing MILR_* variables)."""
    global _registry
    with _lock:
        _registry = None
        plugins.reset()
