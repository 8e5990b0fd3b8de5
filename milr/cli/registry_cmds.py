"""`milr critics` and `milr plugins`: what is installed, where it came from, what failed."""

from __future__ import annotations

import json

import click


def _critic_rows() -> list[dict]:
    from milr.registry import get_registry

    rows = []
    for name, entry in sorted(get_registry().critics.items()):
        missing = entry.cls.missing_dependencies()
        rows.append(
            {
                "name": name,
                "description": entry.cls.description,
                "plugin": entry.plugin,
                "distribution": entry.distribution,
                "version": entry.version,
                "builtin": entry.builtin,
                "available": not missing,
                "missing": missing,
                "install_hint": entry.cls.install_hint() if missing else None,
            }
        )
    return rows


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def critics(as_json: bool) -> None:
    """List registered critics, their source plugin and whether their dependencies import."""
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
