"""Critic specs: ``NAME`` or ``NAME:key=value,...`` strings, TOML spec files and presets.

``weight`` is reserved for the ensemble; every other key is a constructor argument. Values
parse as JSON scalars when they can (``3``, ``0.5``, ``true``, ``null``, ``"quoted"``) and are
strings otherwise. For values containing commas use a TOML file::

    on_error = "skip"          # optional ensemble policy

    [[critic]]
    name = "color"
    weight = 2.0
    weights_by_tag = { colors = 0.5 }   # optional: weight for images of these tags
    label = "red"                        # optional: name in the per-critic breakdown
    target = "red"

Reserved keys of a ``[[critic]]`` table: ``name``, ``weight``, ``weights_by_tag`` and ``label``
(see `milr.ensemble`); a ``name = "route"`` table holds ``[[critic.member]]`` tables (the
``route`` critic). ``preset:NAME[,key=value...]`` expands a shipped preset (`milr.presets`).
"""

from __future__ import annotations

import json
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
    """A parsed spec: which critic, with what parameters, at what ensemble weight.

    ``weights_by_tag`` replaces ``weight`` for images of those tags (`milr.ensemble.Member`);
    ``label`` names the member in the breakdown; ``source`` says where the spec came from
    (``"reward.toml [[critic]] 2 ('vqa')"``) and prefixes errors raised while building it.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    weights_by_tag: dict[str, float] | None = None
    label: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": self.params, "weight": self.weight}
        if self.weights_by_tag is not None:
            out["weights_by_tag"] = self.weights_by_tag
        if self.label is not None:
            out["label"] = self.label
        return out


def _parse_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, (dict, list)):
        return raw
    return value


def _check_weight(weight: Any, where: str) -> float:
    from milr.ensemble import check_weight

    return check_weight(weight, where, SpecError)


def _raw_items(rest: str) -> list[tuple[str, bool]]:
    """``(key, has '=')`` of each comma-separated item."""
    return [
        (item.partition("=")[0].strip(), "=" in item) for item in rest.split(",") if item.strip()
    ]


def _parse_items(text: str, rest: str) -> dict[str, Any]:
    """``key=value,key=value`` -> dict (values JSON-parsed when they can be)."""
    params: dict[str, Any] = {}
    if not rest.strip():
        return params
    for item in rest.split(","):
        # The key ends at the first '='; the value may hold '=', ':' or key names.
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(
                f"malformed critic spec {text!r}: {item.strip()!r} is not key=value "
                "(a value containing ',' belongs in a TOML spec file)"
            )
        if key in params:
            raise SpecError(f"malformed critic spec {text!r}: key {key!r} given twice")
        params[key] = _parse_value(raw.strip())
    return params


def _several_critics(text: str) -> list[str] | None:
    """The specs of each critic when `text` lists several (``shapes,colorfulness``,
    ``color:target=red,colorfulness``, ``shapes;color:target=red``), else None.

    Only consulted on the error path: a part counts as a critic when the registry knows it.
    """
    import re

    from milr.registry import get_registry

    known = set(get_registry().critics)
    name, sep, rest = text.strip().partition(":")
    names = [n for n in re.split(r"[,;+\s]+", name.strip()) if n]
    if len(names) > 1 and all(n in known for n in names):
        return [*names[:-1], names[-1] + sep + rest]
    if not sep or name.strip() not in known:
        return None
    specs: list[list[str]] = [[]]
    for item in (i.strip() for i in rest.split(",")):
        key = item.partition("=")[0]
        starts = (
            item in known
            if "=" not in item
            else (":" in key and key.partition(":")[0].strip() in known)
        )
        if starts:
            specs.append([item])
        else:
            specs[-1].append(item)
    if len(specs) < 2:
        return None
    first = name.strip() + (":" + ",".join(specs[0]) if specs[0] else "")
    return [first, *(",".join(s) for s in specs[1:])]


def _several_critics_error(text: str) -> SpecError | None:
    parts = _several_critics(text)
    if parts is None:
        return None
    flags = " ".join(f"--critic {p}" for p in parts)
    return SpecError(
        f"critic spec {text!r} names {len(parts)} critics; give each its own --critic "
        f"(repeat the option): {flags}"
    )


def parse_spec(text: str) -> CriticSpec:
    """Parse ``NAME`` or ``NAME:key=value,key=value``.

    A text that names several critics (``shapes,colorfulness``) is a `SpecError` saying to
    repeat ``--critic``, one critic each.
    """
    from milr.critic import NAME_RE

    if not isinstance(text, str) or not text.strip():
        raise SpecError("empty critic spec; expected NAME or NAME:key=value,...")
    name, sep, rest = text.strip().partition(":")
    name = name.strip()
    if not NAME_RE.match(name):
        several = _several_critics_error(text)
        if several is not None:
            raise several
        head, comma, tail = name.partition(",")
        hint = (
            f"; parameters follow the name after ':', e.g. {head.strip()}:{tail.strip()}"
            if comma and NAME_RE.match(head.strip()) and "=" in tail
            else ""
        )
        raise SpecError(
            f"malformed critic spec {text!r}: critic name {name!r} must be lowercase "
            f"[a-z0-9_-]+{hint}"
        )
    if sep and not rest.strip():
        raise SpecError(
            f"malformed critic spec {text!r}: nothing after ':'; drop it or add key=value"
        )
    if sep and any(":" in key or not eq for key, eq in _raw_items(rest)):
        several = _several_critics_error(text)  # "color:target=red,colorfulness"
        if several is not None:
            raise several
    params = _parse_items(text, rest)
    weight = (
        _check_weight(params.pop("weight"), f"weight in spec {text!r}")
        if "weight" in params
        else 1.0
    )
    return CriticSpec(name, params, weight)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {what} {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def _weights_by_tag(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise SpecError(
            f"{where}: weights_by_tag must be a non-empty table such as "
            f"{{ colors = 0.5, color_attr = 0.5 }}, got {value!r}"
        )
    return {str(tag): _check_weight(w, f"{where} weights_by_tag.{tag}") for tag, w in value.items()}


def _specs_from_data(data: dict[str, Any], where: str) -> tuple[list[CriticSpec], dict[str, Any]]:
    from milr.critic import NAME_RE

    tables = data.pop("critic", None)
    if not isinstance(tables, list) or not tables:
        raise SpecError(
            f"critic spec file {where} has no [[critic]] tables; add e.g.\n"
            '[[critic]]\nname = "color"\ntarget = "red"'
        )
    specs = []
    for i, table in enumerate(tables):
        table = dict(table)
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise SpecError(f'[[critic]] number {i + 1} in {where} has no name = "..."')
        at = f"{where} [[critic]] {i + 1} ({name!r})"
        weight = _check_weight(table.pop("weight", 1.0), f"{at} weight")
        by_tag = table.pop("weights_by_tag", None)
        if by_tag is not None:
            by_tag = _weights_by_tag(by_tag, at)
        label = table.pop("label", None)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise SpecError(f"{at}: label must be a non-empty string, got {label!r}")
        several = None if NAME_RE.match(name.strip()) else _several_critics(name)
        if several is not None:
            raise SpecError(
                f"{at}: name = {name!r} names {len(several)} critics; give each its own "
                "[[critic]] table"
            )
        spec = parse_spec(name)
        specs.append(CriticSpec(spec.name, table, weight, by_tag, label, at))
    options = {k: v for k, v in data.items() if k in {"on_error"}}
    unknown = set(data) - set(options)
    if unknown:
        raise SpecError(
            f"unknown top-level keys {sorted(unknown)} in {where}; allowed: on_error, "
            "[preset], [[critic]]"
        )
    return specs, options


def load_spec_file(
    path: str | Path, values: dict[str, Any] | None = None
) -> tuple[list[CriticSpec], dict[str, Any]]:
    """Load specs from TOML: ``[[critic]]`` tables, optional ``on_error`` and ``[preset]``.

    ``values`` fill the file's declared ``[preset.params]`` (see `milr.presets`). Errors are
    one-line `SpecError` naming the file, the table and the key.
    """
    from milr.presets import expand

    p = Path(path)
    data = _read_toml(p, "critic spec file")
    data, _ = expand(data, p.stem, repr(str(p)), values)
    return _specs_from_data(data, repr(str(p)))


PRESET_PREFIX = "preset:"


def parse_preset_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``preset:NAME,key=value,...`` -> ``(NAME, {key: value})`` (values parsed as in specs)."""
    body = text.strip()[len(PRESET_PREFIX) :]
    name, _, rest = body.partition(",")
    if not name.strip():
        raise SpecError(f"malformed spec {text!r}: expected preset:NAME[,key=value,...]")
    values = _parse_items(text, rest)
    if "weight" in values:
        raise SpecError(
            f"malformed spec {text!r}: a preset has no weight; its members' weights are in "
            "its spec file (copy it and edit them)"
        )
    return name.strip(), values


def load_preset(name: str, **values: Any) -> tuple[list[CriticSpec], dict[str, Any]]:
    """The specs and options of a shipped preset (or a spec file path) with parameter ``values``.

    ``values`` fill the preset's parameters, e.g. ``weights_dir="/models"``; see
    ``milr critics --presets`` for each preset's parameters.
    """
    from milr.presets import expand, find_preset

    path = find_preset(name)
    where = f"preset {path.stem!r}" if path.parent == _preset_dir() else repr(str(path))
    data = _read_toml(path, "preset file")
    data, _ = expand(data, path.stem, where, values)
    return _specs_from_data(data, where)


def _preset_dir() -> Path:
    from milr.presets import PRESET_DIR

    return PRESET_DIR


def resolve_specs(items: list[str]) -> tuple[list[CriticSpec], dict[str, Any]]:
    """Turn CLI ``--critic`` values (spec strings, ``.toml`` paths, ``preset:NAME,...``) into specs."""
    specs: list[CriticSpec] = []
    options: dict[str, Any] = {}
    for item in items:
        if isinstance(item, str) and item.strip().startswith(PRESET_PREFIX):
            name, values = parse_preset_spec(item)
            more, opts = load_preset(name, **values)
        elif item.endswith(".toml"):
            more, opts = load_spec_file(item)
        else:
            specs.append(parse_spec(item))
            continue
        specs.extend(more)
        options.update(opts)
    if not specs:
        raise SpecError("no critic given; pass --critic NAME (see `milr critics`)")
    return specs, options


def _create(registry: Any, spec: CriticSpec) -> Any:
    """Instantiate one spec; a user error from a spec file gets the file and table in front."""
    from milr.errors import MilrUserError

    try:
        return registry.create_critic(spec.name, **spec.params)
    except MilrUserError as exc:
        if spec.source is None:
            raise
        text = f"{spec.source}: {exc}"
        try:
            new = type(exc)(text)
        except Exception:  # an exception class with another signature
            new = SpecError(text)
        raise new from exc


def build_critic(
    specs: str | CriticSpec | Sequence[str | CriticSpec], on_error: str | None = None
) -> Ensemble:
    """Build a critic from spec strings/objects: always an `Ensemble` (one member is fine).

    Strings may be ``NAME:key=value,...``, a ``.toml`` spec file or ``preset:NAME,key=value``.
    """
    from milr.ensemble import Ensemble, Member
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
    members = [
        Member(_create(registry, s), s.weight, s.weights_by_tag, label=s.label) for s in parsed
    ]
    return Ensemble(members, **options)
