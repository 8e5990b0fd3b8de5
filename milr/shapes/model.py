"""Where the shipped `shapes` model lives, and a check that its files are whole.

`model_path()` is what ``--model shapes`` resolves to: this module registers ``shapes`` as a
named checkpoint of the Janus adapter through the ``register_generators`` hook. It verifies every file listed in
``milr.json``'s sibling ``manifest.json`` (size and SHA-256) so a truncated or missing weight
file is reported by name with the fix (reinstall) instead of loading random weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from milr.errors import MilrUserError
from milr.hookspecs import hookimpl

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
#: Files a loadable checkpoint needs, whatever the manifest says.
REQUIRED = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "milr.json",
)
_REINSTALL = "reinstall milr (pip install --force-reinstall milr) to restore it"
_verified: set[Path] = set()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: str | Path) -> Path:
    """Record size and SHA-256 of every file in a model directory (run by the training script)."""
    d = Path(directory)
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(d.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    out = d / MANIFEST
    out.write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")
    return out


def verify(directory: str | Path) -> Path:
    """Check a model directory against its manifest; `MilrUserError` names a missing/corrupt file."""
    d = Path(directory)
    manifest_path = d / MANIFEST
    if not manifest_path.is_file():
        raise MilrUserError(f"shapes model file missing: {manifest_path}; {_REINSTALL}")
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MilrUserError(
            f"shapes model file corrupt: {manifest_path} ({exc}); {_REINSTALL}"
        ) from None
    for name in REQUIRED:
        if name not in files:
            raise MilrUserError(
                f"shapes model manifest {manifest_path} does not list {name}; {_REINSTALL}"
            )
    for name, info in files.items():
        path = d / name
        if not path.is_file():
            raise MilrUserError(f"shapes model file missing: {path}; {_REINSTALL}")
        size = path.stat().st_size
        if size != info.get("size"):
            raise MilrUserError(
                f"shapes model file corrupt: {path} has {size} bytes, expected {info.get('size')}; {_REINSTALL}"
            )
        if _sha256(path) != info.get("sha256"):
            raise MilrUserError(
                f"shapes model file corrupt: {path} fails its SHA-256 check; {_REINSTALL}"
            )
    return d


def model_path(directory: str | Path | None = None) -> Path:
    """The shipped `shapes` checkpoint directory, verified (once per process)."""
    d = Path(directory) if directory is not None else WEIGHTS_DIR
    d = d.resolve()
    if d not in _verified:
        verify(d)
        _verified.add(d)
    return d


def _locate() -> Path:
    path = model_path()
    if not path.is_dir():
        raise MilrUserError(f"shapes model not installed: {path} does not exist; {_REINSTALL}")
    return path


@hookimpl
def register_generators(register: Callable[[type[Any]], None]) -> None:
    """Register ``shapes`` as a named checkpoint of the Janus adapter (``--model shapes``)."""
    from milr.generator import named_checkpoint
    from milr.models.janus import JanusGenerator

    register(
        named_checkpoint(
            "shapes",
            JanusGenerator,
            _locate,
            "the tiny Janus trained on the shapes world, shipped with milr (CPU, offline)",
        )
    )
