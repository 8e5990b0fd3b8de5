"""Load-time checks: a checkpoint milr loads is what it claims to be, or one line says why not.

transformers loads a checkpoint whose weight files lack tensors (it prints a "MISSING" table and
initialises them at random) or carry tensors the architecture does not have. milr refuses both
(`CheckpointError`, CLI exit 2) naming the first few tensors and the weight file, unless the
caller passes ``allow_missing=True`` (research checkpoints that are partial on purpose; the
tensors are then reported as a warning). Generators and critics that load transformers models
call `check_loading_info` with the ``output_loading_info`` of ``from_pretrained``; models loaded
from a plain state dict call `check_state_dict_keys`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from milr.errors import CheckpointError

#: How many tensor names an error message lists before "and N more".
SHOWN = 4
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def weight_files(source: str | Path) -> str:
    """The weight file(s) of a checkpoint directory as a short text (for messages)."""
    path = Path(str(source)).expanduser()
    if not path.is_dir():
        return str(source)
    names = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    index = [n for n in names if n.endswith(".index.json")]
    if not names:
        return str(path)
    if len(names) == 1:
        return str(path / names[0])
    return f"{path}/{{{', '.join(index or names[:3])}{', ...' if len(names) > 3 else ''}}}"


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:SHOWN])
    more = len(keys) - SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def check_state_dict_keys(
    missing: Iterable[str],
    unexpected: Iterable[str],
    source: str | Path,
    who: str,
    allow_missing: bool = False,
) -> None:
    """Refuse a load with missing or unexpected tensors (see the module docstring).

    `who` names the loader in the message (``"generator"``, ``"judge critic"``). With
    `allow_missing` the same text is a `UserWarning` instead.
    """
    missing, unexpected = sorted(set(missing)), sorted(set(unexpected))
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s) ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) ({_listing(unexpected)})")
    what = " and ".join(parts)
    where = weight_files(source)
    if allow_missing:
        warnings.warn(
            f"{who}: {where} has {what}; loading anyway (allow_missing): those weights are random",
            UserWarning,
            stacklevel=3,
        )
        return
    from milr.weight_files import redownload_hint

    raise CheckpointError(
        f"{who}: checkpoint {where} has {what}: it is incomplete or for another architecture; "
        f"{redownload_hint(where)} (a checkpoint of the architecture this loader runs), or pass "
        "allow_missing=True (--allow-missing) to load it anyway with random weights there"
    )


def check_loading_info(
    info: dict[str, Any], source: str | Path, who: str, allow_missing: bool = False
) -> None:
    """`check_state_dict_keys` over transformers' ``output_loading_info`` (mismatches count as
    missing: their weights are re-initialised)."""
    missing = list(info.get("missing_keys") or [])
    mismatched = info.get("mismatched_keys") or []
    missing += [m[0] if isinstance(m, (tuple, list)) else str(m) for m in mismatched]
    check_state_dict_keys(missing, info.get("unexpected_keys") or [], source, who, allow_missing)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and the library progress bars for the block.

    milr reports what matters itself (`check_loading_info`); the bars are switched off by
    `milr.quiet.library_progress_bars_off`, which restores the user's own settings.
    """
    from milr.quiet import library_progress_bars_off

    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with library_progress_bars_off():
            yield
    finally:
        hf_logging.set_verbosity(level)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (or its type name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


#: The spellings huggingface_hub reads as "on" (any case); anything else is off.
_HF_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def hf_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Hugging Face offline mode is on, decided as ``huggingface_hub.constants`` does.

    ``HF_HUB_OFFLINE`` is read; when it is unset or empty, ``TRANSFORMERS_OFFLINE`` instead. The
    value means "on" when it is ``1``, ``ON``, ``YES`` or ``TRUE`` in any case; ``0``, ``false``,
    ``off`` and everything else mean off (so ``HF_HUB_OFFLINE=0`` wins over
    ``TRANSFORMERS_OFFLINE=1``, as in huggingface_hub). `environ` defaults to `os.environ`, read
    at call time (huggingface_hub itself reads it once, when it is imported).
    """
    env = os.environ if environ is None else environ
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in _HF_TRUE
