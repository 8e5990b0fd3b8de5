"""Plugin loading: built-in critic modules and entry points in the group ``milr``.

Loading is lazy (first registry access) and isolated: a plugin whose import or registration
raises *anything* (``SystemExit`` and ``KeyboardInterrupt`` raised by plugin code included), or
whose hook implementations match no hook specification (pluggy's ``check_pending``, e.g. a
misspelled ``register_critic``), is recorded as failed with its distribution name and skipped;
every other plugin keeps working. Environment variables:

- ``MILR_STRICT_PLUGINS=1``: any plugin failure raises `PluginError` instead.
- ``MILR_DISABLE_PLUGINS=name,...``: block plugins by plugin (entry-point) name or
  distribution name; built-ins too (``milr.critics.color``, ``color`` or ``milr`` for all).
- ``MILR_LOAD_PLUGINS=name,...``: load only the named third-party plugins (entry-point or
  distribution names; empty means none). Built-ins always load unless disabled; a name that
  matches no installed plugin is reported as a failed plugin.

This module never imports `milr.registry`; the registry asks it for the manager and owns
`milr.registry.reset`.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import pluggy

from milr import hookspecs
from milr.errors import DuplicateNameError, PluginError

ENTRY_POINT_GROUP = "milr"

#: Built-in plugin modules, registered exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "milr.critics.color",
    "milr.critics.stats",
    "milr.critics.shapes",
    "milr.critics.geneval",
    "milr.critics.ocr",
    "milr.critics.clip",
    "milr.critics.hps",
    "milr.critics.judge",
    "milr.critics.self_judge",
    "milr.critics.api_judge",
    "milr.critics.grounding",
    "milr.critics.vqa",
    "milr.critics.route",
    "milr.models.janus",
    "milr.shapes.model",
)


@dataclass
class PluginInfo:
    """What is known about one plugin: where it came from and whether it loaded."""

    name: str
    module: str
    distribution: str
    version: str
    builtin: bool
    loaded: bool = False
    blocked: bool = False
    error: str | None = None
    critics: list[str] = field(default_factory=list)
    generators: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _milr_version() -> str:
    try:
        return importlib_metadata.version("milr")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _names(variable: str) -> set[str]:
    raw = os.environ.get(variable, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def disabled_names() -> set[str]:
    """Plugin or distribution names listed in ``MILR_DISABLE_PLUGINS``."""
    return _names("MILR_DISABLE_PLUGINS")


def selected_names() -> set[str] | None:
    """Names listed in ``MILR_LOAD_PLUGINS``, or None when the variable is unset (load all)."""
    if "MILR_LOAD_PLUGINS" not in os.environ:
        return None
    return _names("MILR_LOAD_PLUGINS")


def strict_mode() -> bool:
    return os.environ.get("MILR_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class PluginManager:
    """Discovers plugins and hands each its own `register` callable (so failures stay isolated)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("milr")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}

    def _record_failure(self, info: PluginInfo, exc: BaseException, what: str) -> None:
        info.error = f"{what}: {_describe(exc)}"
        info.loaded = False
        if strict_mode():
            raise PluginError(
                f"plugin {info.name!r} from distribution {info.distribution!r} failed to {what}: "
                f"{_describe(exc)} (MILR_STRICT_PLUGINS is set)"
            ) from exc
        if os.environ.get("MILR_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)

    def _guarded(self, info: PluginInfo, what: str, action: Callable[[], Any]) -> Any:
        """Run plugin code; anything it raises (even SystemExit) marks the plugin failed."""
        try:
            return action()
        except BaseException as exc:  # noqa: BLE001 - plugin code must not end the host
            self._record_failure(info, exc, what)
            return None

    def discover(self) -> None:
        self._discover_builtins()
        self._discover_entry_points()
        self._check_pending()

    def _discover_builtins(self) -> None:
        blocked = disabled_names()
        version = _milr_version()
        for module_name in DEFAULT_PLUGINS:
            info = PluginInfo(module_name, module_name, "milr", version, builtin=True)
            self.plugins[info.name] = info
            if {info.name, module_name.rsplit(".", 1)[-1], "milr"} & blocked:
                info.blocked = True
                continue
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:  # built-in not shipped in this build: not an error
                    del self.plugins[info.name]
                    continue
                self._record_failure(info, exc, "import")
                continue
            except BaseException as exc:  # noqa: BLE001 - see _guarded
                self._record_failure(info, exc, "import")
                continue
            self._register(info, module)

    def _discover_entry_points(self) -> None:
        blocked = disabled_names()
        selected = selected_names()
        matched: set[str] = set()
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            dist_version = dist.version if dist is not None else "unknown"
            if selected is not None:
                hit = {ep.name, dist_name} & selected
                if not hit:
                    continue  # not named in MILR_LOAD_PLUGINS: not loaded, not listed
                matched |= hit
            info = PluginInfo(ep.name, ep.value, dist_name, dist_version, builtin=False)
            if info.name in self.plugins:
                other = self.plugins[info.name]
                clash = PluginError(
                    f"plugin name {ep.name!r} is used by both {other.distribution} "
                    f"({other.module}) and {dist_name} ({ep.value})"
                )
                info.name = f"{ep.name}@{dist_name}"
                self.plugins[info.name] = info
                self._record_failure(info, clash, "register")
                continue
            self.plugins[info.name] = info
            if {ep.name, dist_name} & blocked:
                info.blocked = True
                continue
            module = self._guarded(info, "import", ep.load)
            if info.error is None:
                self._register(info, module)
        for name in sorted((selected or set()) - matched - {"milr"} - set(self.plugins)):
            info = PluginInfo(name, "?", "?", "?", builtin=False)
            self.plugins[name] = info
            self._record_failure(
                info,
                LookupError(
                    f"MILR_LOAD_PLUGINS names {name!r}, but no installed plugin has that "
                    "entry-point or distribution name (see `milr plugins`)"
                ),
                "load",
            )

    def _register(self, info: PluginInfo, module: Any) -> None:
        self._guarded(info, "register", lambda: self.pm.register(module, name=info.name))
        info.loaded = info.error is None

    def _check_pending(self) -> None:
        """Unregister every plugin with a hook implementation that matches no hook spec."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
                self.pm.unregister(exc.plugin)
                info = self.plugins.get(name)
                if info is None:
                    info = PluginInfo(name, name, "unknown", "unknown", builtin=False)
                    self.plugins[name] = info
                known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
                self._record_failure(
                    info, PluginError(f"{exc} (milr's hooks are: {known})"), "validate"
                )

    def call_register_hook(self, hook_name: str, make_register: Any) -> None:
        """Call one `register_*` hook on each plugin separately, with a per-plugin `register`."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = self.plugins.get(impl.plugin_name)
            if info is None:  # registered by hand (tests, notebooks)
                info = PluginInfo(impl.plugin_name, impl.plugin_name, "unknown", "unknown", False)
                info.loaded = True
                self.plugins[info.name] = info
            try:
                impl.function(register=make_register(info))
            except PluginError:
                raise
            except DuplicateNameError as exc:  # a shadowed critic corrupts results: always fatal
                info.error = f"register: {exc}"
                raise
            except BaseException as exc:  # noqa: BLE001 - see _guarded
                self._record_failure(info, exc, "register")


_lock = threading.Lock()
_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, discovering plugins on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = PluginManager()
            manager.discover()
            _manager = manager
        return _manager


def current_manager() -> PluginManager | None:
    """The manager discovered so far, or None (does not trigger discovery)."""
    return _manager


def reset() -> None:
    """Forget discovered plugins; the registry notices and reloads on its next access.

    Prefer `milr.registry.reset`, which also drops the registry at once.
    """
    global _manager
    with _lock:
        _manager = None
