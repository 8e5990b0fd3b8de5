"""`milr critics` and `milr plugins`: what is installed, where it came from, what failed."""

from __future__ import annotations

import json
from typing import Any

import click


def _critic_row(name: str, entry: Any) -> dict[str, Any]:
    from milr.params import critic_parameters

    missing = entry.cls.missing_dependencies()
    return {
        "name": name,
        "description": entry.cls.description,
        "plugin": entry.plugin,
        "distribution": entry.distribution,
        "version": entry.version,
        "builtin": entry.builtin,
        "available": not missing,
        "missing": missing,
        "install_hint": entry.cls.install_hint() if missing else None,
        "inputs": list(entry.cls.inputs),
        "declared": entry.cls.declares_params(),
        "parameters": critic_parameters(entry.cls),
    }


def _critic_rows() -> list[dict[str, Any]]:
    from milr.registry import get_registry

    return [_critic_row(name, entry) for name, entry in sorted(get_registry().critics.items())]


def _default_text(param: dict[str, Any]) -> str:
    if param["required"]:
        return "(required)"
    if param["secret"]:
        return "(secret)"
    return json.dumps(param["default"], ensure_ascii=False)


def _describe_critic(row: dict[str, Any]) -> str:
    from milr.params import format_constraints

    available = (
        "yes"
        if row["available"]
        else f"no: {row['install_hint'] or 'missing ' + ','.join(row['missing'])}"
    )
    lines = [
        _wrap(f"{row['name']}: {row['description']}"),
        _wrap(f"source: {row['plugin']} ({row['distribution']} {row['version']})"),
        _wrap(f"available: {available}"),
        _wrap(f"inputs: {', '.join(row['inputs'])}"),
        "",
    ]
    if not row["declared"]:
        lines.append(
            _wrap(
                "parameters: not declared (an old-style critic with its own __init__); "
                "see the plugin's documentation"
            )
        )
    elif not row["parameters"]:
        lines.append("parameters: none")
    else:
        table = [
            [
                p["name"],
                p["type"],
                _default_text(p),
                format_constraints(p["constraints"]),
                p["description"],
            ]
            for p in row["parameters"]
        ]
        lines.append(_table(table, ["PARAMETER", "TYPE", "DEFAULT", "ALLOWED", "DESCRIPTION"]))
        lines.append("")
        lines.append(
            _wrap(f"set them as --critic '{row['name']}:key=value,...' or in a TOML spec file")
        )
    return "\n".join(lines)


def _terminal_width() -> int | None:
    """Columns to fit: ``COLUMNS`` when set, else the terminal's; None when stdout is piped."""
    import os
    import shutil
    import sys

    if not os.environ.get("COLUMNS") and not sys.stdout.isatty():
        return None  # a pipe or a file: whole rows, one per line, for grep and scripts
    return shutil.get_terminal_size().columns


def _wrap(line: str) -> str:
    """A prose line wrapped to the terminal's width, continuation lines indented by two."""
    import textwrap

    room = _terminal_width()
    if room is None or len(line) <= room:
        return line
    return "\n".join(
        textwrap.wrap(line, room, subsequent_indent="  ", break_on_hyphens=False) or [line]
    )


def _fit(widths: list[int], minimums: list[int], room: int) -> list[int]:
    """Narrow the widest columns first, down to their minimums, until the row fits `room`."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > room:
        wide = [i for i, w in enumerate(widths) if w > minimums[i]]
        if not wide:
            break  # even the narrowest layout is wider: wrap at the minimums
        widest = max(wide, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _table(rows: list[list[str]], headers: list[str], width: int | None = None) -> str:
    """Columns padded to align; cells wrapped (continuation lines below) so that each line
    fits `width` (default: the terminal's, see `_terminal_width`)."""
    import textwrap

    natural = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    room = _terminal_width() if width is None else width
    widths = natural
    if room is not None:
        minimums = [min(n, max(len(h), 10)) for n, h in zip(natural, headers)]
        widths = _fit(natural, minimums, room)

    def lines_of(cells: list[str]) -> list[str]:
        wrapped = [
            textwrap.wrap(c, w, break_on_hyphens=False) or [""] if len(c) > w else [c]
            for c, w in zip(cells, widths)
        ]
        height = max(len(w) for w in wrapped)
        return [
            "  ".join(
                (col[k] if k < len(col) else "").ljust(w) for col, w in zip(wrapped, widths)
            ).rstrip()
            for k in range(height)
        ]

    lines = lines_of(headers)
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines += lines_of(r)
    return "\n".join(lines)


def _preset_needs(info: Any) -> str:
    weights = [p.name for p in info.params if p.weights]
    others = [p.name for p in info.params if p.required and not p.weights]
    parts = []
    if weights:
        parts.append("weights: " + ", ".join(weights))
    if others:
        parts.append("set: " + ", ".join(others))
    return "; ".join(parts) or "-"


def _describe_preset(info: Any) -> str:
    lines = [
        _wrap(f"preset:{info.name}: {info.description}"),
        _wrap(f"reproduces: {info.reproduces or '-'}"),
        _wrap(f"metadata: {info.metadata or '-'}"),
        f"spec file: {info.path}",
        "",
    ]
    if info.params:
        table = []
        for p in info.params:
            if p.weights and p.has_default:
                default = f"{p.default} (weights_dir: DIR/{p.weights})"
            elif p.weights:
                default = f"weights_dir/{p.weights}"
            elif p.required:
                default = "(required)"
            elif p.optional and p.default is None:
                default = "(unset)"
            else:
                default = json.dumps(p.default, ensure_ascii=False)
            table.append([p.name, default, p.description])
        lines.append(_table(table, ["PARAMETER", "DEFAULT", "DESCRIPTION"]))
        lines.append("")
    lines.append(
        _wrap(
            f"use: --critic 'preset:{info.name}' (Hub weights are downloaded on first use; "
            "parameters as ,key=value"
            + (", weights_dir=DIR for local folders" if info.weights else "")
            + "); copy the spec file to change weights or members"
        )
    )
    return "\n".join(lines)


def _presets(name: str | None, as_json: bool) -> None:
    from milr.presets import list_presets, preset_info

    if name is not None:
        info = preset_info(name.removeprefix("preset:"))
        click.echo(json.dumps(info.to_dict(), indent=2) if as_json else _describe_preset(info))
        return
    infos = list_presets()
    if as_json:
        click.echo(json.dumps({"presets": [i.to_dict() for i in infos]}, indent=2))
        return
    rows = [[i.name, i.description, i.reproduces, _preset_needs(i)] for i in infos]
    click.echo(_table(rows, ["PRESET", "DESCRIPTION", "REPRODUCES", "NEEDS"]))
    click.echo(
        "\n" + _wrap("use: --critic preset:NAME,weights_dir=DIR (see `milr critics preset:NAME`)")
    )


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--presets",
    "show_presets",
    is_flag=True,
    help="List the reward presets (spec files shipped with milr) instead of critics.",
)
def critics(name: str | None, as_json: bool, show_presets: bool) -> None:
    """List registered critics, their source plugin and whether their dependencies import.

    With NAME, describe that critic: its inputs and its parameters (type, default, allowed
    range, description). ``--json`` lists the parameters of every critic. ``--presets`` lists
    the reward presets (name, description, the paper reward reproduced, the weights needed);
    ``preset:NAME`` (or ``--presets NAME``) describes one preset and its parameters.
    """
    if show_presets or (name is not None and name.startswith("preset:")):
        _presets(name, as_json)
        return
    if name is not None:
        from milr.registry import get_registry

        row = _critic_row(name, get_registry().critic_entry(name))
        click.echo(json.dumps(row, indent=2) if as_json else _describe_critic(row))
        return
    rows = _critic_rows()
    if as_json:
        click.echo(json.dumps({"critics": rows}, indent=2))
        return
    table = [
        [
            r["name"],
            "yes"
            if r["available"]
            else f"no: {r['install_hint'] or 'missing ' + ','.join(r['missing'])}",
            f"{r['plugin']} ({r['distribution']} {r['version']})",
            r["description"],
        ]
        for r in rows
    ]
    click.echo(_table(table, ["NAME", "AVAILABLE", "SOURCE", "DESCRIPTION"]))
    _warn_failed_plugins()


def _warn_failed_plugins() -> None:
    from milr.plugins import get_plugin_manager

    failed = [p for p in get_plugin_manager().plugins.values() if p.error]
    for p in failed:
        click.echo(
            f"warning: plugin {p.name!r} ({p.distribution} {p.version}) failed: {p.error} "
            "- see `milr plugins`",
            err=True,
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List plugins: loaded, blocked (MILR_DISABLE_PLUGINS) and failed, with their errors."""
    from milr.plugins import get_plugin_manager
    from milr.registry import get_registry

    get_registry()  # run the register hooks so each plugin's critics are known
    infos = sorted(get_plugin_manager().plugins.values(), key=lambda p: (not p.builtin, p.name))
    if as_json:
        click.echo(json.dumps({"plugins": [p.to_dict() for p in infos]}, indent=2))
        return

    def status(p) -> str:
        if p.blocked:
            return "blocked"
        if p.error:
            return "FAILED"
        return "loaded" if p.loaded else "not loaded"

    rows = [
        [
            p.name,
            status(p),
            f"{p.distribution} {p.version}",
            ", ".join(p.critics + p.generators) or "-",
        ]
        for p in infos
    ]
    click.echo(_table(rows, ["PLUGIN", "STATUS", "DISTRIBUTION", "PROVIDES"]))
    for p in infos:
        if p.error:
            click.echo(f"error in {p.name} ({p.distribution}): {p.error}", err=True)
