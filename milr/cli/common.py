"""Options and parsing shared by the ``score`` and ``generate`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from milr.errors import MilrUserError

#: ``--critic/-c`` (repeatable, required) into the ``critic_specs`` tuple of spec strings.
critic_specs_option = click.option(
    "--critic",
    "-c",
    "critic_specs",
    multiple=True,
    required=True,
    help="NAME or NAME:key=value,...,weight=W, or a .toml spec file; repeat for an ensemble.",
)


def parse_metadata(value: str | None) -> dict[str, Any]:
    """Metadata is inline JSON or a path to a JSON file; it must be an object."""
    if value is None:
        return {}
    text = value
    source = "--metadata"
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise MilrUserError(
                f"--metadata {value!r} is neither a JSON object nor an existing file"
            )
        text = path.read_text(encoding="utf-8")
        source = value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MilrUserError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MilrUserError(f"{source} must be a JSON object, got {type(data).__name__}")
    return data
