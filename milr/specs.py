"""Critic specs: ``NAME`` or ``NAME:key=value,...`` strings, and TOML spec files.

``weight`` is reserved for the ensemble; every other key is a constructor argument. Values
parse as JSON scalars when they can (``3``, ``0.5``, ``true``, ``null``, ``"quoted"``) and are
strings otherwise. For values containing commas use a TOML file::

    on_error = "skip"          # optional ensemble policy

    [[critic]]
    name = "color"
    weight = 2.0
    target = "red"
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.errors import SpecError

if TYPE_CHECKING:
    from milr.ensemble import Ensemble

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class CriticSpec:
    """A parsed spec: which critic, with what parameters, at what ensemble weight."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "weight": self.weight}


def _parse_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, (dict, list)):
        return raw
    return value


def _check_weight(weight: Any, where: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise SpecError(f"weight {weight!r} in {where} is not a number; use e.g. weight=0.5")
    w = float(weight)
    if math.isnan(w) or math.isinf(w) or w < 0:
        raise SpecError(f"weight {weight!r} in {where} must be a finite number >= 0")
    return w


def parse_spec(text: str) -> CriticSpec:
    """Parse ``NAME`` or ``NAME:key=value,key=value``."""
    from milr.critic import NAME_RE

    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty critic spec; expected NAME or NAME:key=value,...")
    name, sep, rest = text.strip().partition(":")
    name = name.strip()
    if not NAME_RE.match(name):
        raise SpecError(
            f"malformed critic spec {text!r}: critic name {name!r} must be lowercase [a-z0-9_-]+"
        )
    params: dict[str, Any] = {}
    weight = 1.0
    if sep and not rest.strip():
        raise SpecError(
            f"malformed critic spec {text!r}: nothing after ':'; drop it or add key=value"
        )
    if rest.strip():
        seen: set[str] = set()
        for item in rest.split(","):
            # The key ends at the first '='; the value may hold '=', ':' or key names.
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise SpecError(
                    f"malformed critic spec {text!r}: {item.strip()!r} is not key=value "
                    "(a value containing ',' belongs in a TOML spec file)"
                )
            if key in seen:
                raise SpecError(f"malformed critic spec {text!r}: key {key!r} given twice")
            seen.add(key)
            value = _parse_value(raw.strip())
            if key == "weight":
                weight = _check_weight(value, f"spec {text!r}")
            else:
                params[key] = value
    return CriticSpec(name, params, weight)


def load_spec_file(path: str | Path) -> tuple[list[CriticSpec], dict[str, Any]]:
    """Load specs from TOML: ``[[critic]]`` tables, plus optional top-level ensemble options."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"critic spec file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read critic spec file {str(p)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"critic spec file {str(p)!r} is not valid TOML: {exc}") from None
    tables = data.pop("critic", None)
    if not isinstance(tables, list) or not tables:
        raise SpecError(
            f"critic spec file {str(p)!r} has no [[critic]] tables; add e.g.\n"
            '[[critic]]\nname = "color"\ntarget = "red"'
        )
    specs = []
    for i, table in enumerate(tables):
        table = dict(table)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise SpecError(f'[[critic]] number {i + 1} in {str(p)!r} has no name = "..."')
        weight = _check_weight(table.pop("weight", 1.0), f"{str(p)!r} [[critic]] {name!r}")
        spec = parse_spec(name)
        specs.append(CriticSpec(spec.name, table, weight))
    options = {k: v for k, v in data.items() if k in {"on_error"}}
    unknown = set(data) - set(options)
    if unknown:
        raise SpecError(
            f"unknown top-level keys {sorted(unknown)} in {str(p)!r}; allowed: on_error, [[critic]]"
        )
    return specs, options


def resolve_specs(items: list[str]) -> tuple[list[CriticSpec], dict[str, Any]]:
    """Turn CLI ``--critic`` values (spec strings or ``.toml`` paths) into specs and options."""
    specs: list[CriticSpec] = []
    options: dict[str, Any] = {}
    for item in items:
        if item.endswith(".toml"):
            more, opts = load_spec_file(item)
            specs.extend(more)
            options.update(opts)
        else:
            specs.append(parse_spec(item))
    if not specs:
        raise SpecError("no critic given; pass --critic NAME (see `milr critics`)")
    return specs, options


def build_critic(
    specs: str | CriticSpec | Sequence[str | CriticSpec], on_error: str | None = None
) -> Ensemble:
    """Build a critic from spec strings/objects: always an `Ensemble` (one member is fine)."""
    from milr.ensemble import Ensemble
    from milr.registry import get_registry

    items: list[str | CriticSpec] = [specs] if isinstance(specs, (str, CriticSpec)) else list(specs)
    options: dict[str, Any] = {}
    parsed: list[CriticSpec] = []
    for item in items:
        if isinstance(item, CriticSpec):
            parsed.append(item)
        else:
            more, opts = resolve_specs([item])
            parsed.extend(more)
            options.update(opts)
    if on_error is not None:
        options["on_error"] = on_error
    registry = get_registry()
    members = [(registry.create_critic(s.name, **s.params), s.weight) for s in parsed]
    return Ensemble(members, **options)
