"""Options, parsing and deprecation helpers shared by the `milr` commands."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from milr.errors import MilrUserError
from milr.models.janus_prompts import STYLE_NAMES  # cheap: no torch, no transformers

#: ``--critic/-c`` (repeatable, required) into the ``critic_specs`` tuple of spec strings.
critic_specs_option = click.option(
    "--critic",
    "-c",
    "critic_specs",
    multiple=True,
    required=True,
    help="NAME or NAME:key=value,...,weight=W, or a .toml spec file; repeat for an ensemble.",
)

#: ``--metadata/-m`` (inline JSON or a JSON file; read with `parse_metadata`).
metadata_option = click.option(
    "--metadata",
    "-m",
    default=None,
    help="Metadata for the critics (e.g. GenEval clauses): inline JSON or a JSON file.",
)

#: ``--on-error``: the ensemble's policy for a failing critic (None: the spec file's).
on_error_option = click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    default=None,
    show_default="raise, or the spec file's",
    help="When a critic of the ensemble fails: stop (raise) or leave it out of the score (skip).",
)

#: ``--allow-missing``: load a checkpoint whose tensors do not all match (generate, bench).
allow_missing_option = click.option(
    "--allow-missing",
    is_flag=True,
    help="Load a checkpoint even if tensors are missing or unexpected (random weights there).",
)

#: ``--prompt-style``: the generator's prompt layout (`milr.models.janus_prompts.STYLE_NAMES`).
prompt_style_option = click.option(
    "--prompt-style",
    type=click.Choice(STYLE_NAMES),
    default=None,
    show_default="checkpoint if its milr.json sets prompts, else paper",
    help="Prompt layout: paper, hf (the checkpoint's chat template) or checkpoint (its milr.json).",
)

#: ``--kv-cache``: the generation loops' KV cache (`milr.generator.Generator.set_loop_options`).
kv_cache_option = click.option(
    "--kv-cache",
    type=click.Choice(["dynamic", "static"]),
    default=None,
    show_default="dynamic; static with --compile",
    help="KV cache of the generation loops: dynamic (grows per token) or static (preallocated).",
)

#: ``--compile``: compile the per-token steps (static cache; CUDA graphs on CUDA).
compile_option = click.option(
    "--compile",
    "compile_steps",
    is_flag=True,
    help="Compile the per-token steps with torch.compile (static KV cache, CUDA graphs on "
    "CUDA); the compile seconds are reported apart. Same results as without.",
)


def check_loop_options(kv_cache: str | None, compile_steps: bool) -> None:
    """Refuse ``--compile`` with ``--kv-cache dynamic`` (before anything loads)."""
    if compile_steps and kv_cache == "dynamic":
        raise MilrUserError(
            "--compile needs the static KV cache; drop --kv-cache dynamic (or pass static)"
        )


#: ``--prompt-file``: a prompt layout file that replaces ``--prompt-style``.
prompt_file_option = click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML/JSON file with system prompt, instruction and templates (replaces --prompt-style).",
)

#: ``--revision``: the Hub revision of ``--model`` (recorded in trajectories and run identities).
revision_option = click.option(
    "--revision",
    default=None,
    metavar="REV",
    show_default="the repo's main branch",
    help="Hub revision (branch, tag or commit) of a --model Hub id.",
)


#: ``--dry-run``: print the plan (`milr.preflight`) and exit without loading models.
dry_run_option = click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    help="Print the plan (prompts x seeds, most generations and critic calls, what would be "
    "downloaded) and exit without loading any model.",
)


#: ``--revision``: branch, tag or commit of the model's Hub repository.
revision_option = click.option(
    "--revision",
    default=None,
    show_default="the repository's main branch",
    help="Branch, tag or commit of the model's Hub repository.",
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


_warned: set[str] = set()


def warn_deprecated(message: str) -> None:
    """Print a deprecation ``warning: ...`` line on stderr, once per process per message.

    Also issues a `DeprecationWarning`, so ``python -W error`` and test suites catch it.
    """
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    if message not in _warned:
        _warned.add(message)
        click.echo(f"warning: {message}", err=True)


def deprecated_short_option(flag: str, name: str) -> Callable[[Callable[..., Any]], Any]:
    """A hidden option ``flag`` whose value arrives as parameter ``name`` (None when not given).

    The command passes it to `use_deprecated`, which warns and merges it into the new option.
    """
    return click.option(flag, name, default=None, hidden=True, show_default=False)


def use_deprecated(
    old_value: Any, flag: str, new_value: Any, new: str, why: str, new_given: bool
) -> Any:
    """The value to use when a deprecated spelling ``flag`` may have been given.

    Warns once (see `warn_deprecated`) naming the replacement ``new`` and ``why``; giving both
    spellings is a `MilrUserError` naming both values.
    """
    if old_value is None:
        return new_value
    warn_deprecated(f"{flag} is deprecated here; use {new} ({why})")
    if new_given and new_value != old_value:
        raise MilrUserError(
            f"{flag} {old_value!r} and {new} {new_value!r} disagree; pass only {new}"
        )
    return old_value
