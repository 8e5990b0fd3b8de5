"""Reward presets: TOML spec files shipped with milr, one per reward of the paper.

A preset is an ordinary critic spec file (`milr.specs.load_spec_file`) with a ``[preset]``
table that describes it and declares its parameters::

    [preset]
    description = "MixedReward: GroundingDINO detection plus a GIT-VQA colour check"
    reproduces = "MILR MixedReward (paper section 4; the authors' reward_gdino.py, score_git.py)"
    metadata = "GenEval metadata (tag, include)"

    [preset.params.gdino]
    description = "GroundingDINO Hub id or checkpoint directory"
    weights = "grounding-dino-base"      # with weights_dir=DIR: DIR/grounding-dino-base
    default = "IDEA-Research/grounding-dino-base"   # otherwise: this Hub id

    [preset.params.device]
    description = "torch device of every model"
    default = "auto"

    [[critic]]
    name = "grounding"
    weights = "${gdino}"
    device = "${device}"

A value that is exactly ``"${NAME}"`` becomes the parameter's value with its type; ``${NAME}``
inside a longer string is replaced by its text. A parameter is given by the user
(``--critic preset:mixed-reward,gdino=/models/gdino``), else, for a ``weights`` parameter, is
``weights_dir/<weights>`` when ``weights_dir=`` is given, else takes its ``default``; an
``optional = true`` parameter with none of these drops every key set to exactly ``"${NAME}"``
(the critic's own default applies). Anything else missing is a one-line `SpecError` saying how
to pass it. ``weights_dir`` is accepted by every preset.

This module reads and expands presets; `milr.specs.load_preset` turns one into critic specs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milr.errors import SpecError

#: Where the shipped presets live (package data).
PRESET_DIR = Path(__file__).resolve().parent
#: ``${name}`` placeholders in preset files.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Parameter every preset accepts: the directory holding the ``weights`` subdirectories.
WEIGHTS_DIR = "weights_dir"
_PARAM_KEYS = {"description", "default", "weights", "optional"}
_PRESET_KEYS = {"description", "reproduces", "metadata", "params"}
_DROP = object()

__all__ = [
    "PRESET_DIR",
    "PresetInfo",
    "PresetParam",
    "expand",
    "find_preset",
    "list_presets",
    "preset_info",
    "preset_names",
    "read_preset_table",
]


@dataclass(frozen=True)
class PresetParam:
    """One declared preset parameter (a ``[preset.params.NAME]`` table)."""

    name: str
    description: str
    default: Any = None
    has_default: bool = False
    weights: str | None = None
    optional: bool = False

    @property
    def required(self) -> bool:
        """True when the user must give it (``weights_dir`` may stand in for a weights path)."""
        return not (self.has_default or self.optional)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "default": self.default,
            "required": self.required,
            "weights": self.weights,
            "optional": self.optional,
        }


@dataclass(frozen=True)
class PresetInfo:
    """What ``milr critics --presets`` shows about a preset."""

    name: str
    path: Path
    description: str
    reproduces: str = ""
    metadata: str = ""
    params: tuple[PresetParam, ...] = field(default_factory=tuple)

    @property
    def weights(self) -> list[PresetParam]:
        """The parameters that are weights paths."""
        return [p for p in self.params if p.weights is not None]

    def loads(self) -> list[dict[str, Any]]:
        """What the preset loads with no arguments: per weights parameter, its default source
        (a Hub id, ``hf-hub:ID`` or ``hf://ID/FILE``; fetched on first use), the revision
        (None: the repo's default branch) and the folder name read under ``weights_dir``."""
        return [
            {
                "param": p.name,
                "source": p.default,
                "revision": None,
                "weights_dir_name": p.weights,
            }
            for p in self.weights
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "description": self.description,
            "reproduces": self.reproduces,
            "metadata": self.metadata,
            "params": [p.to_dict() for p in self.params],
            "loads": self.loads(),
        }


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _did_you_mean(name: str, known: list[str], prefix: str = "") -> str:
    """``"did you mean 'geneval'? "`` for the closest known name, or ``""``."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"{prefix}did you mean {close[0]!r}? " if close else ""


def find_preset(name: str) -> Path:
    """The spec file of preset ``name``, or a path given as ``NAME.toml``/with a ``/``."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"empty preset name; known presets: {', '.join(preset_names())}")
    name = name.strip()
    if name.endswith(".toml") or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise SpecError(f"preset file {name!r} does not exist")
        return path
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise SpecError(
            f"unknown preset {name!r}; {_did_you_mean(name, preset_names())}known presets: "
            f"{', '.join(preset_names())} (see `milr critics --presets`)"
        )
    return path


def _text(table: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise SpecError(f"{where}: key {key!r} must be a non-empty string, got {value!r}")
    return value


def read_preset_table(data: dict[str, Any], name: str, where: str) -> PresetInfo | None:
    """Pop and check the ``[preset]`` table of a parsed spec file; None when there is none."""
    table = data.pop("preset", None)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise SpecError(f"{where}: 'preset' must be a [preset] table")
    unknown = sorted(set(table) - _PRESET_KEYS)
    if unknown:
        raise SpecError(
            f"{where} [preset]: unknown keys {unknown}; allowed: {', '.join(sorted(_PRESET_KEYS))}"
        )
    params = []
    raw_params = table.get("params", {})
    if not isinstance(raw_params, dict):
        raise SpecError(f"{where} [preset]: 'params' must be tables [preset.params.NAME]")
    for pname, decl in raw_params.items():
        at = f"{where} [preset.params.{pname}]"
        if not PLACEHOLDER.fullmatch("${" + pname + "}") or pname == WEIGHTS_DIR:
            raise SpecError(f"{at}: {pname!r} cannot be a parameter name (use [A-Za-z0-9_])")
        if not isinstance(decl, dict):
            raise SpecError(f'{at}: must be a table with description = "..."')
        bad = sorted(set(decl) - _PARAM_KEYS)
        if bad:
            raise SpecError(f"{at}: unknown keys {bad}; allowed: {', '.join(sorted(_PARAM_KEYS))}")
        weights = decl.get("weights")
        if weights is not None and (not isinstance(weights, str) or not weights.strip()):
            raise SpecError(f"{at}: key 'weights' must be a subdirectory name, got {weights!r}")
        optional = decl.get("optional", False)
        if not isinstance(optional, bool):
            raise SpecError(f"{at}: key 'optional' must be true or false, got {optional!r}")
        params.append(
            PresetParam(
                pname,
                _text(decl, "description", at, required=True),
                decl.get("default"),
                "default" in decl,
                weights,
                optional,
            )
        )
    return PresetInfo(
        name,
        Path(),
        _text(table, "description", f"{where} [preset]", required=True),
        _text(table, "reproduces", f"{where} [preset]"),
        _text(table, "metadata", f"{where} [preset]"),
        tuple(params),
    )


def _resolve(info: PresetInfo | None, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Each declared parameter's value (or `_DROP`); `SpecError` for unknown or missing ones."""
    params = {p.name: p for p in (info.params if info else ())}
    known = sorted(params) + ([WEIGHTS_DIR] if info is not None else [])
    unknown = sorted(set(values) - set(known))
    if unknown:
        listing = ", ".join(known) if known else "(none: this file declares no [preset.params])"
        hints = "".join(_did_you_mean(u, known, f"{u!r}: ") for u in unknown)
        raise SpecError(f"{where}: unknown preset parameter(s) {unknown}; {hints}known: {listing}")
    weights_dir = values.get(WEIGHTS_DIR)
    if weights_dir is not None and (not isinstance(weights_dir, str) or not weights_dir.strip()):
        raise SpecError(f"{where}: weights_dir={weights_dir!r} must be a directory path")
    out: dict[str, Any] = {}
    missing: list[PresetParam] = []
    for p in params.values():
        if p.name in values:
            value = values[p.name]
            if p.weights and isinstance(value, str) and value.startswith("~"):
                value = str(Path(value).expanduser())  # Hub ids and hf:// stay as written
            out[p.name] = value
        elif p.weights and weights_dir is not None:
            out[p.name] = str(Path(weights_dir).expanduser() / p.weights)
        elif p.has_default:
            out[p.name] = p.default
        elif p.optional:
            out[p.name] = _DROP
        else:
            missing.append(p)
    if missing:
        what = " and ".join(f"{p.name} ({p.description})" for p in missing)
        how = ",".join(f"{p.name}=..." for p in missing)
        dirs = [f"{p.weights}/" for p in missing if p.weights]
        extra = f" (or weights_dir=DIR holding {' and '.join(dirs)})" if dirs else ""
        raise SpecError(f"{where} is missing {what}; pass {how}{extra}")
    return out


def _substitute(value: Any, resolved: dict[str, Any], at: str) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        names = PLACEHOLDER.findall(value)
        for n in names:
            if n not in resolved:
                raise SpecError(f"{at}: ${{{n}}} is not declared under [preset.params.{n}]")
        if whole:
            return resolved[whole.group(1)]
        for n in names:
            if resolved[n] is _DROP:
                raise SpecError(f"{at}: optional ${{{n}}} cannot be part of a longer string")
        return PLACEHOLDER.sub(lambda m: str(resolved[m.group(1)]), value)
    if isinstance(value, list):
        items = [_substitute(v, resolved, f"{at}[{k}]") for k, v in enumerate(value)]
        if any(v is _DROP for v in items):
            raise SpecError(f"{at}: an optional parameter cannot be a list item")
        return items
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            new = _substitute(v, resolved, f"{at}.{k}")
            if new is not _DROP:
                out[k] = new
        return out
    return value


def expand(
    data: dict[str, Any], name: str, where: str, values: dict[str, Any] | None = None
) -> tuple[dict[str, Any], PresetInfo | None]:
    """Expand a parsed spec file: pop ``[preset]``, resolve parameters, fill placeholders.

    ``where`` names the file in errors; ``values`` are the user's parameter values. Returns the
    data without ``[preset]`` and the preset's description (None for a plain spec file).
    """
    info = read_preset_table(data, name, where)
    resolved = _resolve(info, dict(values or {}), where)
    tables = data.get("critic")
    if isinstance(tables, list):
        expanded = []
        for i, table in enumerate(tables):
            label = table.get("name", "?") if isinstance(table, dict) else "?"
            expanded.append(_substitute(table, resolved, f"{where} [[critic]] {i + 1} ({label!r})"))
        data = {**data, "critic": expanded}
    return data, info


def preset_info(name: str) -> PresetInfo:
    """Read the description and parameters of preset ``name`` (or of a spec file path)."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = find_preset(name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"cannot read preset {name!r} ({path}): {exc}") from None
    info = read_preset_table(data, path.stem, f"preset {path.stem!r}")
    if info is None:
        raise SpecError(f"{str(path)!r} has no [preset] table with a description")
    return PresetInfo(
        info.name, path, info.description, info.reproduces, info.metadata, info.params
    )


def list_presets() -> list[PresetInfo]:
    """Every shipped preset's description, sorted by name."""
    return [preset_info(n) for n in preset_names()]
