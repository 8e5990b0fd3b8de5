"""Plugin loading: built-in critic modules and entry points in the group ``milr``.

Loading is lazy (first registry access), isolated (a failing plugin is recorded and skipped,
unless ``MILR_STRICT_PLUGINS=1``), and controllable (``MILR_DISABLE_PLUGINS=name,...`` blocks
plugins by plugin name or distribution name, built-ins included).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
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


def disabled_names() -> set[str]:
    raw = os.environ.get("MILR_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def strict_mode() -> bool:
    return os.environ.get("MILR_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager:
    """Discovers plugins and hands each its own `register` callable (so failures stay isolated)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("milr")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}

    def _record_failure(self, info: PluginInfo, exc: BaseException, what: str) -> None:
        info.error = f"{what}: {type(exc).__name__}: {exc}"
        if strict_mode():
            raise PluginError(
                f"plugin {info.name!r} from distribution {info.distribution!r} failed to {what}: "
                f"{type(exc).__name__}: {exc} (MILR_STRICT_PLUGINS is set)"
            ) from exc
        if os.environ.get("MILR_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)

    def discover(self) -> None:
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
            except Exception as exc:
                self._record_failure(info, exc, "import")
                continue
            self._register(info, module)
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            dist_version = dist.version if dist is not None else "unknown"
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
            try:
                module = ep.load()
            except Exception as exc:
                self._record_failure(info, exc, "import")
                continue
            self._register(info, module)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if strict_mode():
                raise PluginError(str(exc)) from exc

    def _register(self, info: PluginInfo, module: Any) -> None:
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:
            self._record_failure(info, exc, "register")
            return
        info.loaded = True

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
            except Exception as exc:
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


def reset() -> None:
    """Forget loaded plugins (tests; after changing MILR_* variables)."""
    global _manager
    from milr import registry

    with _lock:
        _manager = None
    registry.reset()
